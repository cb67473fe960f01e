//! The client end of a session, sans I/O.
//!
//! [`ClientSession`] outlives connections. The shell calls [`ClientSession::connected`] when an
//! upgrade succeeds, feeds every binary message to [`ClientSession::handle_frame`], calls
//! [`ClientSession::handle_timeout`] at [`ClientSession::poll_timeout`], writes what
//! [`ClientSession::poll_transmit`] returns, and reads [`ClientSession::poll_event`]. When the
//! connection ends it calls [`ClientSession::disconnected`]; commands (publish, subscribe) keep
//! working meanwhile and are replayed on the next connection.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use crate::frame::{self, ClientFrame, GapReport, RequestError, ServerFrame, Update};
use crate::handshake::SessionAccepted;
use crate::reliable::{BufferLimits, RecoveryBuffer, RewindError};
use crate::time::Instant;
use crate::timing::{AckSchedule, Liveness, earliest};
use crate::{CloseReason, Position};

/// Client-side session settings.
#[derive(Debug, Clone, Default)]
pub struct ClientSessionConfig {
    /// Bounds of the client's recovery buffer: unacknowledged requests, including those made
    /// while disconnected (by default [`BufferLimits::default`]: 10,000 or 8 MiB). A request
    /// past the limit fails with [`QueueFull`].
    pub buffer: BufferLimits,
    /// Close the session (reason lost messages) instead of accepting a gap report.
    pub strict: bool,
}

/// A request could not be queued: the recovery buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the send queue is full ({frames} requests, {bytes} bytes unacknowledged)")]
pub struct QueueFull {
    /// Unacknowledged requests held.
    pub frames: usize,
    /// Their size in bytes.
    pub bytes: usize,
}

/// What the session reports to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A topic update for a subscription.
    Update(Update),
    /// The request with this sequence number was processed (`Ok`) or refused.
    Completed {
        /// The request's sequence number, as returned when it was queued.
        request: u64,
        /// The outcome.
        result: Result<(), RequestError>,
    },
    /// Messages were lost; snapshots of the current values follow.
    Gap(GapReport),
    /// The server closed the session.
    ServerClosed {
        /// Why.
        reason: CloseReason,
        /// Details.
        message: String,
    },
    /// The server is going away; the session reconnects after about `retry_after` (the
    /// connection ends after this).
    GoAway {
        /// Why (one that allows reconnection).
        reason: CloseReason,
        /// The server's hint.
        retry_after: Duration,
        /// Details.
        message: String,
    },
}

/// The connection must end; [`ConnectionFault::reason`] says whether the session may resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionFault {
    /// Nothing was received for 1.5 ping periods.
    Idle,
    /// The server broke the protocol (undecodable frame, impossible ack).
    Protocol(String),
    /// A gap was reported and the session is strict.
    LostMessages(GapReport),
    /// The server's resume answer does not match what the client holds.
    ResumeMismatch(String),
}

impl ConnectionFault {
    /// The close reason: idle connections may resume, the rest close the session.
    pub fn reason(&self) -> CloseReason {
        match self {
            ConnectionFault::Idle => CloseReason::IdleConnection,
            ConnectionFault::Protocol(_) => CloseReason::TransportError,
            ConnectionFault::LostMessages(_) | ConnectionFault::ResumeMismatch(_) => {
                CloseReason::LostMessages
            }
        }
    }
}

impl std::fmt::Display for ConnectionFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectionFault::Idle => f.write_str("nothing received for 1.5 ping periods"),
            ConnectionFault::Protocol(m) => write!(f, "protocol violation: {m}"),
            ConnectionFault::LostMessages(g) => write!(
                f,
                "{} messages lost ({}..={}) and the session is strict",
                g.lost_count(),
                g.lost_from,
                g.lost_to
            ),
            ConnectionFault::ResumeMismatch(m) => write!(f, "resume mismatch: {m}"),
        }
    }
}

struct Connection {
    liveness: Liveness,
    acks: AckSchedule,
    /// Several frames per WebSocket message (negotiated in the upgrade).
    batched: bool,
    /// The largest message the server accepts.
    max_message: usize,
}

/// The client end of a session, independent of any connection.
pub struct ClientSession {
    config: ClientSessionConfig,
    out: RecoveryBuffer<Bytes>,
    /// Requests confirmed by an in-band server ack (or rejected) up to here.
    confirmed: u64,
    rejected: BTreeSet<u64>,
    /// Last server sequence number received in order.
    received: u64,
    positions: BTreeMap<u32, u64>,
    control: VecDeque<Bytes>,
    events: VecDeque<ClientEvent>,
    conn: Option<Connection>,
    builder: frame::MessageBuilder,
    /// Highest request sequence number written on any connection: a request at or below it
    /// may have reached the server, one above it certainly did not.
    sent_through: u64,
    close: CloseProgress,
    /// Topic names shared across frames, both ways.
    topics: frame::TopicCache,
    /// Where requests are encoded (one allocation per chunk of requests, not per request).
    arena: frame::Arena,
}

/// Where the application's close stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseProgress {
    /// Not asked for.
    Open,
    /// Asked for: the close frame goes out after every request queued before it.
    Requested,
    /// The close frame was written on the current connection; the server answers with a final
    /// ack and hangs up.
    Sent,
}

impl ClientSession {
    /// A session that has not connected yet.
    pub fn new(config: ClientSessionConfig) -> Self {
        ClientSession {
            out: RecoveryBuffer::new(config.buffer),
            config,
            confirmed: 0,
            rejected: BTreeSet::new(),
            received: 0,
            positions: BTreeMap::new(),
            topics: frame::TopicCache::default(),
            arena: frame::Arena::default(),
            control: VecDeque::new(),
            events: VecDeque::new(),
            conn: None,
            builder: frame::MessageBuilder::default(),
            sent_through: 0,
            close: CloseProgress::Open,
        }
    }

    /// Last server sequence number received in order (for the resume request).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The requests up to here are completed: their answers (ack or rejection) arrived.
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// Last position seen per partition (for the resume request).
    pub fn positions(&self) -> Vec<Position> {
        self.positions
            .iter()
            .map(|(&partition, &offset)| Position { partition, offset })
            .collect()
    }

    /// Whether a connection is current.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Requests not yet acknowledged by the server.
    pub fn unacknowledged(&self) -> usize {
        self.out.len()
    }

    /// Whether request `seq` (not yet confirmed) may have reached the server: it was written
    /// on some connection. A request that never was is certainly not applied.
    pub fn may_have_reached_server(&self, seq: u64) -> bool {
        seq <= self.sent_through
    }

    /// The last request written on some connection: requests up to it may have reached the
    /// server (see [`ClientSession::may_have_reached_server`]).
    pub fn written_through(&self) -> u64 {
        self.sent_through
    }

    /// Whether the close frame has been written on the current connection (the server now
    /// answers with its final ack and ends the connection).
    pub fn is_close_sent(&self) -> bool {
        self.close == CloseProgress::Sent
    }

    /// An upgrade succeeded: replay what the server lacks and start the liveness clock.
    pub fn connected(
        &mut self,
        now: Instant,
        accepted: &SessionAccepted,
    ) -> Result<(), ConnectionFault> {
        match self.out.rewind(accepted.received) {
            Ok(()) => {}
            Err(RewindError::Ahead) => {
                return Err(ConnectionFault::ResumeMismatch(format!(
                    "server claims request {} but only {} were sent",
                    accepted.received,
                    self.out.next_seq() - 1
                )));
            }
            Err(RewindError::Gap { from, to }) => {
                return Err(ConnectionFault::ResumeMismatch(format!(
                    "server lost client requests {from}..={to}"
                )));
            }
        }
        self.control.clear();
        self.conn = Some(Connection {
            liveness: Liveness::new(accepted.ping_period, now),
            acks: AckSchedule::lazy(),
            batched: accepted.batch,
            max_message: accepted.max_frame.min(frame::BATCH_BYTES),
        });
        self.builder.clear();
        self.reset_close();
        Ok(())
    }

    /// The connection ended; the session waits for the next one.
    pub fn disconnected(&mut self) {
        self.conn = None;
        self.control.clear();
        self.builder.clear();
        self.reset_close();
    }

    /// A close frame written on a connection that ended must be written again on the next.
    fn reset_close(&mut self) {
        if self.close == CloseProgress::Sent {
            self.close = CloseProgress::Requested;
        }
    }

    fn push_request(&mut self, frame: &ClientFrame) -> Result<u64, QueueFull> {
        let size = frame::encoded_len(frame);
        self.check_room(size)?;
        let bytes = self.arena.encode(frame, size);
        Ok(self.out.push(bytes, size))
    }

    fn check_room(&self, size: usize) -> Result<(), QueueFull> {
        if self.out.has_room_for(size) {
            Ok(())
        } else {
            Err(QueueFull {
                frames: self.out.len(),
                bytes: self.out.bytes(),
            })
        }
    }

    /// Queues a subscription; returns its request sequence number.
    pub fn subscribe(&mut self, selector: &str) -> Result<u64, QueueFull> {
        self.push_request(&ClientFrame::Subscribe {
            selector: selector.to_owned(),
        })
    }

    /// Queues an unsubscription.
    pub fn unsubscribe(&mut self, selector: &str) -> Result<u64, QueueFull> {
        self.push_request(&ClientFrame::Unsubscribe {
            selector: selector.to_owned(),
        })
    }

    /// Queues a publish.
    pub fn publish(&mut self, topic: &str, value: Bytes) -> Result<u64, QueueFull> {
        // The most frequent request: encoded by hand, straight from the arguments.
        let size = frame::publish_len(topic, &value);
        self.check_room(size)?;
        let bytes = self.arena.encode_publish(topic, &value);
        Ok(self.out.push(bytes, size))
    }

    /// The application closes the session. Requests queued before are written first, in
    /// order, then the close frame; the server applies them, answers with a final ack that
    /// completes them, and ends the connection. Requests queued after this call are the
    /// shell's to refuse.
    pub fn close(&mut self) {
        if self.close == CloseProgress::Open {
            self.close = CloseProgress::Requested;
        }
    }

    /// Feeds one WebSocket binary message from the server: one frame, or on a batched
    /// connection every frame of the batch, in order.
    ///
    /// Updates' values share `message`'s buffer (no copy per update).
    pub fn handle_message(&mut self, now: Instant, message: &Bytes) -> Result<(), ConnectionFault> {
        let malformed = |e: frame::DecodeError| ConnectionFault::Protocol(e.to_string());
        if !self.conn.as_ref().is_some_and(|c| c.batched) {
            let frame = frame::decode_server_in(message, message, &mut self.topics);
            return self.handle_server_frame(now, frame.map_err(malformed)?);
        }
        for part in frame::batch_frames(message) {
            let part = part.map_err(malformed)?;
            let frame = frame::decode_server_in(message, part, &mut self.topics);
            self.handle_server_frame(now, frame.map_err(malformed)?)?;
        }
        Ok(())
    }

    /// Feeds one frame from the server.
    pub fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ConnectionFault> {
        let frame =
            frame::decode_server(bytes).map_err(|e| ConnectionFault::Protocol(e.to_string()))?;
        self.handle_server_frame(now, frame)
    }

    /// Handles one decoded frame from the server.
    fn handle_server_frame(
        &mut self,
        now: Instant,
        frame: ServerFrame,
    ) -> Result<(), ConnectionFault> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        conn.liveness.received(now);
        if frame.is_sequenced() {
            self.received += 1;
            if conn.acks.on_received(now) {
                self.queue_ack();
            }
        }
        match frame {
            ServerFrame::Update(update) => {
                let entry = self.positions.entry(update.position.partition).or_default();
                *entry = (*entry).max(update.position.offset);
                self.events.push_back(ClientEvent::Update(update));
            }
            ServerFrame::Rejected { request, error } => {
                if request <= self.confirmed
                    || request >= self.out.next_seq()
                    || !self.rejected.insert(request)
                {
                    return Err(ConnectionFault::Protocol(format!(
                        "rejection of request {request}, which is not pending"
                    )));
                }
                self.events.push_back(ClientEvent::Completed {
                    request,
                    result: Err(error),
                });
            }
            ServerFrame::Ack { received } | ServerFrame::Ping { received } => {
                self.handle_ack(received)?;
            }
            ServerFrame::Gap(report) => {
                if report.lost_from != self.received + 1 || report.next <= report.lost_to {
                    return Err(ConnectionFault::Protocol(format!(
                        "gap report {}..={} does not follow {}",
                        report.lost_from, report.lost_to, self.received
                    )));
                }
                if self.config.strict {
                    return Err(ConnectionFault::LostMessages(report));
                }
                self.received = report.next - 1;
                self.events.push_back(ClientEvent::Gap(report));
            }
            ServerFrame::Close { reason, message } => {
                self.events
                    .push_back(ClientEvent::ServerClosed { reason, message });
            }
            ServerFrame::GoAway {
                reason,
                retry_after_ms,
                message,
            } => {
                // A going-away reason that does not allow reconnection would be a server bug;
                // treat it as the generic "try again".
                let reason = if reason.allows_reconnect() {
                    reason
                } else {
                    CloseReason::ServerDraining
                };
                self.events.push_back(ClientEvent::GoAway {
                    reason,
                    retry_after: Duration::from_millis(retry_after_ms.into()),
                    message,
                });
            }
        }
        Ok(())
    }

    fn handle_ack(&mut self, received: u64) -> Result<(), ConnectionFault> {
        if received < self.confirmed {
            return Err(ConnectionFault::Protocol(format!(
                "ack {received} goes back before {}",
                self.confirmed
            )));
        }
        if received >= self.out.first_seq() && !self.out.ack(received) {
            return Err(ConnectionFault::Protocol(format!(
                "ack {received} covers requests never sent"
            )));
        }
        for request in self.confirmed + 1..=received {
            if !self.rejected.remove(&request) {
                self.events.push_back(ClientEvent::Completed {
                    request,
                    result: Ok(()),
                });
            }
        }
        self.confirmed = received;
        Ok(())
    }

    fn queue_ack(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            conn.acks.sent();
        }
        self.control
            .push_back(Bytes::from(frame::encode_to_vec(&ClientFrame::Ack {
                received: self.received,
            })));
    }

    /// Time passed: sends due acks and pings; reports a dead connection.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnectionFault> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        if conn.liveness.is_dead(now) {
            return Err(ConnectionFault::Idle);
        }
        if conn.acks.is_due(now) {
            self.queue_ack();
        } else if conn.liveness.ping_due(now) {
            conn.acks.sent();
            conn.liveness.sent(now);
            // A quiet session: what the server acknowledged goes now, not at the next send.
            self.out.release();
            self.control
                .push_back(Bytes::from(frame::encode_to_vec(&ClientFrame::Ping {
                    received: self.received,
                })));
        }
        Ok(())
    }

    /// Whether [`ClientSession::poll_transmit`] has something to write now.
    pub fn has_pending_transmit(&self) -> bool {
        self.conn.is_some()
            && (!self.control.is_empty()
                || self.out.has_unsent()
                || self.builder.is_holding()
                || self.close == CloseProgress::Requested)
    }

    /// On a batched connection, the most bytes one message may carry (see
    /// [`frame::MessageBuilder`]); `None` when each frame goes alone (or there is no connection).
    pub fn batch_limit(&self) -> Option<usize> {
        self.conn
            .as_ref()
            .filter(|c| c.batched)
            .map(|c| c.max_message)
    }

    /// The next WebSocket message to write: on a batched connection every frame ready (up to
    /// the server's message limit) in one message, otherwise one frame; in the order of
    /// [`ClientSession::poll_transmit`].
    pub fn poll_transmit_message(&mut self, now: Instant) -> Option<Bytes> {
        let (batched, limit) = self.conn.as_ref().map(|c| (c.batched, c.max_message))?;
        let mut builder = std::mem::take(&mut self.builder);
        builder.set_batching(batched, limit);
        let message = loop {
            if let Some(m) = builder.pop() {
                break Some(m);
            }
            if !self.transmit_with(now, |f| builder.push(f)) {
                builder.finish();
                builder.shrink();
                break builder.pop();
            }
        };
        self.builder = builder;
        message
    }

    /// When [`ClientSession::handle_timeout`] wants to be called next.
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

    /// The next message to write on the current connection: control frames first, then
    /// requests (new or replayed) in sequence order, then the close frame once every request
    /// queued before it is written. Nothing follows the close frame.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        let mut out = None;
        self.transmit_with(now, |b| out = Some(b.clone()));
        out
    }

    /// [`ClientSession::poll_transmit`] by reference: `write` sees the next frame (and copies
    /// it, into a [`frame::MessageBuilder`]) without taking a reference count on it. Whether
    /// there was one.
    pub fn transmit_with(&mut self, now: Instant, write: impl FnOnce(&Bytes)) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        if self.close == CloseProgress::Sent {
            return false;
        }
        if let Some(b) = self.control.pop_front() {
            write(&b);
        } else if let Some((seq, b)) = self.out.next_unsent() {
            self.sent_through = self.sent_through.max(seq);
            write(b);
        } else if self.close == CloseProgress::Requested {
            self.close = CloseProgress::Sent;
            write(&Bytes::from(frame::encode_to_vec(&ClientFrame::Close)));
        } else {
            return false;
        }
        conn.liveness.sent(now);
        true
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// How long the ping period of the current connection is.
    pub fn ping_period(&self) -> Option<Duration> {
        self.conn.as_ref().map(|c| c.liveness.period())
    }
}
