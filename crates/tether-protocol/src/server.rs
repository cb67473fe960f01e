//! The server end of a session, sans I/O.
//!
//! [`ServerSession`] holds what a server keeps for one session across connections: the
//! recovery buffer of sequenced frames for the client, the client's position, and the ack and
//! liveness bookkeeping of the current connection. Subscriptions, permissions and topics belong
//! to the server shell, which turns each [`ServerRequest`] into pushed updates or a rejection.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::CloseReason;
use crate::frame::{self, ClientFrame, GapReport, RequestError, ServerFrame, Update};
use crate::reliable::{BufferLimits, RecoveryBuffer, RewindError};
use crate::time::Instant;
use crate::timing::{AckSchedule, Liveness, earliest};
use crate::write::{AfterRound, Gathering};

/// A sequenced request from the client, to be carried out by the server shell in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerRequest {
    /// Subscribe to a selector.
    Subscribe {
        /// The request's sequence number.
        seq: u64,
        /// The selector text (not yet validated).
        selector: String,
    },
    /// Remove a subscription.
    Unsubscribe {
        /// The request's sequence number.
        seq: u64,
        /// The selector text.
        selector: String,
    },
    /// Publish a value.
    Publish {
        /// The request's sequence number.
        seq: u64,
        /// The topic path (not yet validated).
        topic: Arc<str>,
        /// The value.
        value: Bytes,
    },
    /// The client closes the session.
    Close,
}

impl ServerRequest {
    /// The request's sequence number (`None` for a close).
    pub fn seq(&self) -> Option<u64> {
        match self {
            ServerRequest::Subscribe { seq, .. }
            | ServerRequest::Unsubscribe { seq, .. }
            | ServerRequest::Publish { seq, .. } => Some(*seq),
            ServerRequest::Close => None,
        }
    }
}

/// The connection must end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFault {
    /// Nothing received for 1.5 ping periods.
    Idle,
    /// The client broke the protocol.
    Protocol(String),
    /// Unsent frames would have to be dropped: the client reads too slowly. The session stays
    /// resumable; a resume reports the gap.
    SlowConsumer,
}

impl ServerFault {
    /// The close reason.
    pub fn reason(&self) -> CloseReason {
        match self {
            ServerFault::Idle => CloseReason::IdleConnection,
            ServerFault::Protocol(_) => CloseReason::TransportError,
            ServerFault::SlowConsumer => CloseReason::LimitExceeded,
        }
    }
}

/// What a [`ServerSession`] holds across connections, to keep it across a server restart
/// ([`ServerSession::save`], [`ServerSession::restore`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerSessionState {
    /// Sequence number of the first frame held.
    pub first: u64,
    /// Frames held for the client, in order: the encoded frame and, for an update, its topic
    /// (`None` for a rejection).
    pub frames: Vec<(Bytes, Option<String>)>,
    /// Updates dropped before they were written, per topic.
    pub evicted_unsent: Vec<(String, u64)>,
    /// Updates dropped after they were written but before they were acknowledged.
    pub evicted_sent: Vec<(u64, String)>,
    /// Rejections dropped from the buffer.
    pub evicted_rejections: Vec<Bytes>,
    /// Last client request carried out.
    pub applied: u64,
    /// Topics whose updates were lost before reaching the buffer.
    pub lost: Vec<(String, u64)>,
    /// Whether the next resume must report a gap.
    pub forced_gap: bool,
}

/// The outcome of a resume request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// Everything the client lacks will be replayed.
    Replay,
    /// Some frames are gone: the report is sent first; the shell should now push snapshots of
    /// the session's subscribed topics.
    Gap(GapReport),
}

#[derive(Debug)]
enum Kind {
    /// An update; its topic is read back from the frame when it is needed (an eviction, a
    /// gap report, a save), so that queueing an update counts no reference to its topic.
    Update,
    Rejected,
}

#[derive(Debug)]
struct Buffered {
    bytes: Bytes,
    kind: Kind,
}

impl Buffered {
    /// An update's topic, read from its frame (which this session's shell encoded).
    fn topic(&self) -> &str {
        frame::update_topic(&self.bytes).unwrap_or_default()
    }
}

/// One more update lost on `topic`.
fn count_topic(counts: &mut BTreeMap<Arc<str>, u64>, topic: &str) {
    match counts.get_mut(topic) {
        Some(n) => *n += 1,
        None => {
            counts.insert(Arc::from(topic), 1);
        }
    }
}

struct Connection {
    liveness: Liveness,
    acks: AckSchedule,
    writer: Gathering,
}

/// A control frame that may only go out once every sequenced frame before `after` was written
/// (an ack must not overtake the rejection it completes).
struct Control {
    bytes: Bytes,
    after: u64,
    is_ack: bool,
}

/// The server end of one session.
pub struct ServerSession {
    out: RecoveryBuffer<Buffered>,
    ping_period: Duration,
    /// Updates dropped from the buffer before they were ever written, per topic: lost for
    /// sure once the client resumes.
    evicted_unsent: BTreeMap<Arc<str>, u64>,
    /// Updates dropped after they were written but before they were acknowledged: the client
    /// may have them; its resume position decides. Bounded by what one connection had in
    /// flight, since nothing is written while disconnected.
    evicted_sent: VecDeque<(u64, Arc<str>)>,
    /// Rejections dropped from the buffer; they are sent again after a gap report.
    evicted_rejections: Vec<Bytes>,
    /// Last client sequence number decoded, in order.
    received: u64,
    /// Last client request carried out (`received` once the shell has applied it): what acks
    /// and resume answers report. A shell whose requests take time (a shared store) applies
    /// them after decoding; an ack never covers a request that is not applied yet.
    applied: u64,
    /// The next resume must report a gap even if the buffer could replay everything: the
    /// shell learnt that updates for these topics were lost before reaching the buffer (an
    /// engine that lost data).
    lost: BTreeMap<Arc<str>, u64>,
    forced_gap: bool,
    control: VecDeque<Control>,
    conn: Option<Connection>,
    /// Several frames per WebSocket message on the current connection.
    batched: bool,
    /// Whether each connection's writer gathers fast streams (see [`Gathering`]).
    gathers: bool,
}

impl ServerSession {
    /// A new session.
    pub fn new(buffer: BufferLimits, ping_period: Duration) -> Self {
        ServerSession {
            out: RecoveryBuffer::new(buffer),
            ping_period,
            evicted_unsent: BTreeMap::new(),
            evicted_sent: VecDeque::new(),
            evicted_rejections: Vec::new(),
            received: 0,
            applied: 0,
            lost: BTreeMap::new(),
            forced_gap: false,
            control: VecDeque::new(),
            conn: None,
            batched: false,
            gathers: true,
        }
    }

    /// Whether the writers of this session's connections gather fast streams (see
    /// [`Gathering`]; on unless turned off here).
    pub fn with_gathering(mut self, gathers: bool) -> Self {
        self.gathers = gathers;
        if let Some(conn) = self.conn.as_mut() {
            conn.writer = Gathering::new(gathers);
        }
        self
    }

    /// Whether the current connection batches frames (negotiated in its upgrade); set it
    /// after each open, resume or attach.
    pub fn set_batched(&mut self, batched: bool) {
        self.batched = batched;
    }

    /// Whether the current connection batches frames.
    pub fn is_batched(&self) -> bool {
        self.batched
    }

    /// The ping period granted to this session (its client may ask for one): used from now
    /// on, the current connection included.
    pub fn set_ping_period(&mut self, period: Duration, now: Instant) {
        self.ping_period = period;
        if let Some(conn) = self.conn.as_mut() {
            conn.liveness = Liveness::new(period, now);
        }
    }

    /// A session carried on from another server, which is gone: the client has received
    /// server frames up to `client_received`, and requests up to `applied` were carried out
    /// (as a shared store recorded them). Frames pushed next are numbered from
    /// `client_received + 1`; when `gap` lists topics, a gap report covering one number comes
    /// first (the client may lack updates of those topics: how many is unknown, so each count
    /// is 0), then snapshots are the shell's to push. Call [`ServerSession::attach`] when the
    /// buffer holds what the client lacks.
    pub fn continued(
        buffer: BufferLimits,
        ping_period: Duration,
        client_received: u64,
        applied: u64,
        gap: Option<Vec<String>>,
    ) -> ServerSession {
        let mut session = ServerSession::new(buffer, ping_period);
        session.received = applied;
        session.applied = applied;
        let next = client_received + 1;
        match gap {
            None => {
                session.out.reset_to(next);
            }
            Some(topics) => {
                session.out.reset_to(next + 1);
                let report = GapReport {
                    lost_from: next,
                    lost_to: next,
                    next: next + 1,
                    topics: topics.into_iter().map(|t| (t, 0)).collect(),
                };
                session.control.push_back(Control {
                    bytes: Bytes::from(frame::encode_to_vec(&ServerFrame::Gap(report))),
                    after: next + 1,
                    is_ack: false,
                });
            }
        }
        session
    }

    /// The first connection of a session built with [`ServerSession::continued`]: what was
    /// pushed is written after the gap report (if any), then an ack completes the client's
    /// requests up to `applied`.
    pub fn attach(&mut self, now: Instant) {
        let control = std::mem::take(&mut self.control);
        self.start_connection(now);
        self.control = control;
        self.queue_ack();
    }

    /// What the session holds, to restore it in another process (the connection, if any, is
    /// not part of it: the restored session waits for a resume).
    pub fn save(&self) -> ServerSessionState {
        ServerSessionState {
            first: self.out.first_seq(),
            frames: self
                .out
                .iter()
                .map(|(_, b)| {
                    let topic = match b.kind {
                        Kind::Update => Some(b.topic().to_string()),
                        Kind::Rejected => None,
                    };
                    (b.bytes.clone(), topic)
                })
                .collect(),
            evicted_unsent: self
                .evicted_unsent
                .iter()
                .map(|(t, n)| (t.to_string(), *n))
                .collect(),
            evicted_sent: self
                .evicted_sent
                .iter()
                .map(|(s, t)| (*s, t.to_string()))
                .collect(),
            evicted_rejections: self.evicted_rejections.clone(),
            applied: self.applied,
            lost: self.lost.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            forced_gap: self.forced_gap,
        }
    }

    /// A session saved with [`ServerSession::save`], disconnected, waiting for a resume.
    pub fn restore(
        state: ServerSessionState,
        buffer: BufferLimits,
        ping_period: Duration,
    ) -> ServerSession {
        let mut session = ServerSession::new(buffer, ping_period);
        session.out.reset_to(state.first);
        for (bytes, topic) in state.frames {
            let size = bytes.len();
            let kind = match topic {
                Some(_) => Kind::Update,
                None => Kind::Rejected,
            };
            session.out.push(Buffered { bytes, kind }, size);
        }
        // Everything held counts as written: the resume's position decides what is replayed.
        while session.out.next_unsent().is_some() {}
        session.evicted_unsent = state
            .evicted_unsent
            .into_iter()
            .map(|(t, n)| (Arc::from(t.as_str()), n))
            .collect();
        session.evicted_sent = state
            .evicted_sent
            .into_iter()
            .map(|(s, t)| (s, Arc::from(t.as_str())))
            .collect();
        session.evicted_rejections = state.evicted_rejections;
        session.received = state.applied;
        session.applied = state.applied;
        session.lost = state
            .lost
            .into_iter()
            .map(|(t, n)| (Arc::from(t.as_str()), n))
            .collect();
        session.forced_gap = state.forced_gap;
        session
    }

    /// Last client request carried out (for the resume answer).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The shell carried out request `seq` (the next one in order): acks may cover it now.
    pub fn request_applied(&mut self, now: Instant, seq: u64) {
        debug_assert!(
            seq <= self.received,
            "request {seq} applied before it was decoded"
        );
        self.applied = self.applied.max(seq);
        if let Some(conn) = self.conn.as_mut()
            && conn.acks.on_received(now)
        {
            // Due now, but sent after this request's answer is queued: see poll_transmit.
            conn.acks.force(now);
        }
    }

    /// A shared store says requests up to `applied` were carried out (by this server before it
    /// lost track, or by another): decoding and acks continue from there.
    pub fn sync_applied(&mut self, applied: u64) {
        if applied > self.applied {
            self.applied = applied;
            self.received = self.received.max(applied);
        }
    }

    /// Updates of `topic` were lost before they reached this session's buffer (the shared
    /// store lost them): the next resume reports a gap naming it, whatever the buffer holds.
    pub fn mark_lost(&mut self, topic: Arc<str>) {
        self.forced_gap = true;
        self.lost.entry(topic).or_insert(0);
    }

    /// Frames and bytes held for the client.
    pub fn buffered(&self) -> (usize, usize) {
        (self.out.len(), self.out.bytes())
    }

    /// Whether a connection is current.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// A new session's first connection.
    pub fn opened(&mut self, now: Instant) {
        self.start_connection(now);
    }

    fn start_connection(&mut self, now: Instant) {
        // Requests decoded but not applied on the last connection are sent again by the
        // client, with the same numbers.
        self.received = self.applied;
        self.control.clear();
        self.conn = Some(Connection {
            liveness: Liveness::new(self.ping_period, now),
            acks: AckSchedule::default(),
            writer: Gathering::new(self.gathers),
        });
    }

    /// A resume presents the client's last received sequence number. `Err` means the client
    /// claims frames that were never sent: refuse the resume and keep the session as it is.
    pub fn resume(&mut self, now: Instant, client_received: u64) -> Result<ResumeOutcome, String> {
        let rewound = match self.out.rewind(client_received) {
            Ok(()) if self.forced_gap => {
                // Everything buffered could be replayed, but updates were lost before they
                // reached the buffer: report a gap of one number (at least) all the same.
                let last = (self.out.next_seq() - 1).max(client_received + 1);
                Err(RewindError::Gap {
                    from: client_received + 1,
                    to: last,
                })
            }
            other => other,
        };
        let outcome = match rewound {
            Ok(()) => {
                // The client caught up past everything that was dropped.
                self.evicted_unsent.clear();
                self.evicted_sent.clear();
                self.evicted_rejections.clear();
                ResumeOutcome::Replay
            }
            Err(RewindError::Ahead) => {
                return Err(format!(
                    "client claims server frame {client_received}, only {} were sent",
                    self.out.next_seq() - 1
                ));
            }
            Err(RewindError::Gap { from, to }) => {
                let lost_to = (self.out.next_seq() - 1).max(to);
                let next = lost_to + 1;
                self.forced_gap = false;
                let mut topics = std::mem::take(&mut self.evicted_unsent);
                for (topic, n) in std::mem::take(&mut self.lost) {
                    *topics.entry(topic).or_default() += n;
                }
                for (seq, topic) in std::mem::take(&mut self.evicted_sent) {
                    if seq > client_received {
                        *topics.entry(topic).or_default() += 1;
                    }
                }
                let mut rejections = std::mem::take(&mut self.evicted_rejections);
                for held in self.out.reset_to(next) {
                    match held.kind {
                        Kind::Update => count_topic(&mut topics, held.topic()),
                        Kind::Rejected => rejections.push(held.bytes),
                    }
                }
                let report = GapReport {
                    lost_from: from,
                    lost_to,
                    next,
                    topics: topics
                        .into_iter()
                        .map(|(t, n)| (t.to_string(), n))
                        .collect(),
                };
                self.start_connection(now);
                self.control.push_back(Control {
                    bytes: Bytes::from(frame::encode_to_vec(&ServerFrame::Gap(report.clone()))),
                    after: next,
                    is_ack: false,
                });
                // Rejections are answers to requests: they survive a gap.
                for bytes in rejections {
                    let size = bytes.len();
                    self.out.push(
                        Buffered {
                            bytes,
                            kind: Kind::Rejected,
                        },
                        size,
                    );
                }
                self.queue_ack();
                return Ok(ResumeOutcome::Gap(report));
            }
        };
        self.start_connection(now);
        // Completes the client's requests that the upgrade's `received` covered, after the
        // replayed rejections.
        self.queue_ack();
        Ok(outcome)
    }

    /// The connection ended; the session is kept for the reconnection timeout.
    pub fn disconnected(&mut self) {
        self.conn = None;
        self.control.clear();
    }

    /// Queues a frame; on [`ServerFault::SlowConsumer`] the frame comes back, unqueued.
    fn push(&mut self, buffered: Buffered) -> Result<(), (ServerFault, Buffered)> {
        let size = buffered.bytes.len();
        while !self.out.has_room_for(size) {
            let connected = self.conn.is_some();
            // On a live connection only frames already written may go: the client probably
            // has them, and if the connection fails the resume reports the gap.
            if connected && self.out.first_seq() >= self.out.unsent_seq() {
                return Err((ServerFault::SlowConsumer, buffered));
            }
            let unsent = self.out.unsent_seq();
            match self.out.pop_oldest() {
                Some((
                    seq,
                    held @ Buffered {
                        kind: Kind::Update, ..
                    },
                )) => {
                    if seq < unsent {
                        self.evicted_sent.push_back((seq, Arc::from(held.topic())));
                    } else {
                        count_topic(&mut self.evicted_unsent, held.topic());
                    }
                }
                Some((
                    _,
                    Buffered {
                        bytes,
                        kind: Kind::Rejected,
                    },
                )) => {
                    self.evicted_rejections.push(bytes);
                }
                None => break,
            }
        }
        self.out.push(buffered, size);
        Ok(())
    }

    /// Queues an update for the client. On a live connection whose client reads too slowly
    /// this fails with [`ServerFault::SlowConsumer`]: end the connection, then push again.
    pub fn push_update(&mut self, update: &Update) -> Result<(), ServerFault> {
        let bytes = Bytes::from(frame::encode_update(update));
        self.push_encoded_update(bytes).map_err(|(fault, _)| fault)
    }

    /// As [`ServerSession::push_update`], with the frame already encoded (fan-out encodes once
    /// for every subscriber).
    ///
    /// On [`ServerFault::SlowConsumer`] the frame comes back with the fault, so that the
    /// caller can push it again once it has ended the connection.
    pub fn push_encoded_update(&mut self, bytes: Bytes) -> Result<(), (ServerFault, Bytes)> {
        self.push(Buffered {
            bytes,
            kind: Kind::Update,
        })
        .map_err(|(fault, refused)| (fault, refused.bytes))
    }

    /// Refuses the request `request`.
    pub fn reject(&mut self, request: u64, error: RequestError) -> Result<(), ServerFault> {
        let bytes = Bytes::from(frame::encode_to_vec(&ServerFrame::Rejected {
            request,
            error,
        }));
        self.push(Buffered {
            bytes,
            kind: Kind::Rejected,
        })
        .map_err(|(fault, _)| fault)
    }

    /// Closes the session: a close frame after everything queued.
    pub fn close(&mut self, reason: CloseReason, message: &str) {
        self.control.push_back(Control {
            bytes: Bytes::from(frame::encode_to_vec(&ServerFrame::Close {
                reason,
                message: message.to_owned(),
            })),
            after: self.out.next_seq(),
            is_ack: false,
        });
    }

    /// The server is going away but the session goes on: after every frame queued so far, an
    /// ack that completes every request applied, then a [`ServerFrame::GoAway`] telling the
    /// client to reconnect after `retry_after`. The shell ends the connection once it is
    /// written, and reads nothing more from it (unread requests are sent again after the
    /// reconnection).
    pub fn go_away(&mut self, reason: CloseReason, retry_after: Duration, message: &str) {
        self.queue_ack();
        self.control.push_back(Control {
            bytes: Bytes::from(frame::encode_to_vec(&ServerFrame::GoAway {
                reason,
                retry_after_ms: u32::try_from(retry_after.as_millis()).unwrap_or(u32::MAX),
                message: message.to_owned(),
            })),
            after: self.out.next_seq(),
            is_ack: false,
        });
    }

    fn queue_ack(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            conn.acks.sent();
        }
        let after = self.out.next_seq();
        let bytes = Bytes::from(frame::encode_to_vec(&ServerFrame::Ack {
            received: self.applied,
        }));
        // An ack waiting behind the same frames can simply be replaced by the newer one.
        if let Some(last) = self.control.back_mut()
            && last.is_ack
            && last.after == after
        {
            last.bytes = bytes;
            return;
        }
        self.control.push_back(Control {
            bytes,
            after,
            is_ack: true,
        });
    }

    /// Feeds one binary message from the client. A sequenced request comes back for the shell
    /// to carry out before the next message is fed.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        bytes: &[u8],
    ) -> Result<Option<ServerRequest>, ServerFault> {
        let frame =
            frame::decode_client(bytes).map_err(|e| ServerFault::Protocol(e.to_string()))?;
        self.handle_decoded(now, frame)
    }

    /// As [`ServerSession::handle_frame`], for a frame the shell decoded itself (to decide
    /// which locks the request needs).
    pub fn handle_decoded(
        &mut self,
        now: Instant,
        frame: ClientFrame,
    ) -> Result<Option<ServerRequest>, ServerFault> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        conn.liveness.received(now);
        if frame.is_sequenced() {
            self.received += 1;
        }
        let seq = self.received;
        Ok(match frame {
            ClientFrame::Subscribe { selector } => Some(ServerRequest::Subscribe { seq, selector }),
            ClientFrame::Unsubscribe { selector } => {
                Some(ServerRequest::Unsubscribe { seq, selector })
            }
            ClientFrame::Publish { topic, value } => {
                Some(ServerRequest::Publish { seq, topic, value })
            }
            ClientFrame::Ack { received } | ClientFrame::Ping { received } => {
                if received >= self.out.first_seq() && !self.out.ack(received) {
                    return Err(ServerFault::Protocol(format!(
                        "ack {received} covers frames never sent"
                    )));
                }
                None
            }
            ClientFrame::Close => {
                // Every request before the close frame has been carried out (the shell handles
                // them in order): the final ack completes them all, and goes out before the
                // connection ends.
                self.queue_ack();
                Some(ServerRequest::Close)
            }
        })
    }

    /// The shell has handled every client message that was ready: if an ack is owed, it is
    /// due now rather than after the ack delay. A client waiting for its requests' completion
    /// (and sending nothing more until then) is answered at once, as TCP's quick ack does,
    /// while a client that keeps sending still gets one ack per batch of input.
    pub fn handle_input_drained(&mut self, now: Instant) {
        if let Some(conn) = self.conn.as_mut()
            && conn.acks.deadline().is_some()
        {
            conn.acks.force(now);
        }
    }

    /// Time passed: sends due acks and pings; reports a dead connection.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ServerFault> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        if conn.liveness.is_dead(now) {
            return Err(ServerFault::Idle);
        }
        if conn.acks.is_due(now) {
            self.queue_ack();
        } else if conn.liveness.ping_due(now) {
            conn.liveness.sent(now);
            conn.acks.sent();
            // A quiet connection: what its client acknowledged goes now, not at the next push.
            self.out.release();
            self.control.push_back(Control {
                bytes: Bytes::from(frame::encode_to_vec(&ServerFrame::Ping {
                    received: self.applied,
                })),
                after: 0,
                is_ack: false,
            });
        }
        Ok(())
    }

    /// Whether [`ServerSession::poll_transmit`] has something to write now.
    pub fn has_pending_transmit(&self) -> bool {
        self.conn.is_some() && (!self.control.is_empty() || self.out.has_unsent())
    }

    /// What the writer does once a round is written (see [`Gathering`]).
    pub fn after_round(&mut self) -> AfterRound {
        let Some(conn) = self.conn.as_mut() else {
            return AfterRound::Wait;
        };
        let hurry = conn.acks.deadline().is_some() || self.out.is_half_full();
        conn.writer
            .after_round(self.out.unsent_len(), !self.control.is_empty(), hurry)
    }

    /// Whether the update just queued must wake the writer (see [`Gathering::wakes`]).
    pub fn wakes_writer(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        conn.writer
            .wakes(self.out.unsent_len(), self.out.is_half_full())
    }

    /// Whether the writer must be woken once the shell has handled the client's requests
    /// (`deadline_before`: [`ServerSession::poll_timeout`] before it did): a control frame to
    /// write (a rejection), updates queued that wake it ([`ServerSession::wakes_writer`]: a
    /// subscription's current values), or an ack timer that moved earlier. A client's lazy
    /// ack alone does not end a writer's gathering.
    pub fn wakes_writer_after_requests(&mut self, deadline_before: Option<Instant>) -> bool {
        !self.control.is_empty()
            || self.wakes_writer()
            || crate::deadline_moved_earlier(deadline_before, self.poll_timeout())
    }

    /// When [`ServerSession::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conn = self.conn.as_ref()?;
        earliest(
            conn.acks.deadline(),
            Some(
                conn.liveness
                    .idle_deadline()
                    .min(conn.liveness.ping_deadline()),
            ),
        )
    }

    /// The next frame to write: a control frame once the frames it must follow are written,
    /// otherwise the next sequenced frame. A shell puts frames into WebSocket messages with a
    /// [`frame::MessageBuilder`] (several per message when [`Self::is_batched`]); see
    /// [`ServerSession::transmit_with`].
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        let mut out = None;
        self.transmit_with(now, |b| out = Some(b.clone()));
        out
    }

    /// [`ServerSession::poll_transmit`] by reference: `write` sees the next frame (and copies
    /// it, into a [`frame::MessageBuilder`]) without taking a reference count on it. Whether
    /// there was one.
    pub fn transmit_with(&mut self, now: Instant, write: impl FnOnce(&Bytes)) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let ready = self
            .control
            .front()
            .is_some_and(|c| c.after <= self.out.unsent_seq());
        if ready {
            let Some(c) = self.control.pop_front() else {
                return false;
            };
            write(&c.bytes);
        } else {
            let Some((_, b)) = self.out.next_unsent() else {
                return false;
            };
            write(&b.bytes);
        }
        conn.liveness.sent(now);
        true
    }
}
