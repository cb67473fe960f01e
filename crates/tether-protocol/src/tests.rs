//! Deterministic client/server pair tests on a virtual clock: replay, ack trimming, overflow
//! and liveness, with no sockets and no sleeps.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::{ClientEvent, ClientSession, ClientSessionConfig, ConnectionFault};
use crate::handshake::{ResumeToken, SessionAccepted, SessionId};
use crate::server::{ResumeOutcome, ServerFault, ServerRequest, ServerSession};
use crate::write::AfterRound;
use crate::{BufferLimits, Position, RequestError, RequestErrorKind, Update};

/// Long against the lazy ack delay: `drive` lets idle time pass up to that delay, and pings a
/// half period apart must not keep it busy.
const PING: Duration = Duration::from_secs(10);

/// A tiny xorshift so that "random" cuts are reproducible.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

struct Pair {
    now: Instant,
    client: ClientSession,
    server: ServerSession,
    c2s: VecDeque<Bytes>,
    s2c: VecDeque<Bytes>,
    /// Publishes as the server applied them.
    applied: Vec<Bytes>,
    /// Client-side events.
    updates: Vec<Update>,
    completed: Vec<(u64, Result<(), RequestError>)>,
    gaps: Vec<crate::GapReport>,
    offset: u64,
    /// Server shell: echo every publish back as an update (so data flows both ways).
    echo: bool,
    /// Server shell: reject publishes to this topic.
    forbidden: &'static str,
    connected: bool,
    /// Several frames per message, both ways.
    batched: bool,
    /// The server shell's message builder for the current connection.
    server_builder: crate::frame::MessageBuilder,
}

impl Pair {
    fn new(server_buffer: BufferLimits, client: ClientSessionConfig) -> Pair {
        let now = Instant::now();
        let mut pair = Pair {
            now,
            client: ClientSession::new(client),
            server: ServerSession::new(server_buffer, PING),
            c2s: VecDeque::new(),
            s2c: VecDeque::new(),
            applied: Vec::new(),
            updates: Vec::new(),
            completed: Vec::new(),
            gaps: Vec::new(),
            offset: 0,
            echo: true,
            forbidden: "forbidden",
            connected: false,
            batched: false,
            server_builder: crate::frame::MessageBuilder::default(),
        };
        pair.server.opened(now);
        let accepted = pair.accepted();
        pair.client
            .connected(now, &accepted)
            .expect("fresh session");
        pair.connected = true;
        pair
    }

    fn accepted(&self) -> SessionAccepted {
        SessionAccepted {
            session: SessionId::from_bytes([1; 16]),
            token: ResumeToken::from_bytes([2; 16]),
            reconnect_timeout: Duration::from_secs(60),
            ping_period: PING,
            received: self.server.applied(),
            max_frame: 1 << 20,
            batch: self.batched,
        }
    }

    fn publish_update(&mut self, topic: &str, value: Bytes) {
        self.offset += 1;
        let update = Update {
            topic: topic.into(),
            value,
            position: Position {
                partition: 0,
                offset: self.offset,
            },
            snapshot: false,
        };
        match self.server.push_update(&update) {
            Ok(()) => {}
            Err(ServerFault::SlowConsumer) => {
                self.cut(0);
                self.server
                    .push_update(&update)
                    .expect("disconnected push always fits");
            }
            Err(e) => panic!("{e:?}"),
        }
    }

    /// Moves frames both ways and runs both shells until nothing is left to do.
    fn drive(&mut self) {
        if !self.connected {
            return;
        }
        for _ in 0..1_000_000 {
            let mut progress = false;
            while let Some(b) = self.client.poll_transmit_message(self.now) {
                self.c2s.push_back(b);
            }
            // As the server's shell does: frames copied from the session into messages.
            self.server_builder
                .set_batching(self.server.is_batched(), crate::frame::BATCH_BYTES);
            while self
                .server
                .transmit_with(self.now, |f| self.server_builder.push(f))
            {}
            self.server_builder.finish();
            while let Some(b) = self.server_builder.pop() {
                self.s2c.push_back(b);
            }
            while let Some(b) = self.c2s.pop_front() {
                progress = true;
                self.server_process(&b);
                if !self.connected {
                    return;
                }
            }
            while let Some(b) = self.s2c.pop_front() {
                progress = true;
                self.client_process(&b);
            }
            // Let due acks go out (the ack delay is short; advancing to it is "idle time").
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            if !progress {
                match next {
                    Some(t) if t <= self.now + crate::LAZY_ACK_DELAY => {
                        self.now = self.now.max(t);
                        self.client.handle_timeout(self.now).expect("alive");
                        self.server.handle_timeout(self.now).expect("alive");
                        if self.client.poll_timeout() == next && self.server.poll_timeout() == next
                        {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        }
        panic!("drive did not settle");
    }

    /// The server shell: carries out one client message (one frame, or a batch).
    fn server_process(&mut self, bytes: &[u8]) {
        if !self.batched {
            return self.server_process_frame(bytes);
        }
        for frame in crate::frame::batch_frames(bytes) {
            self.server_process_frame(frame.expect("valid batch"));
        }
    }

    fn server_process_frame(&mut self, bytes: &[u8]) {
        if let Some(ServerRequest::Publish { seq, topic, value }) = self
            .server
            .handle_frame(self.now, bytes)
            .expect("valid client frame")
        {
            if *topic == *self.forbidden {
                let error = RequestError {
                    kind: RequestErrorKind::AccessDenied,
                    message: "no".into(),
                };
                self.server.reject(seq, error).expect("room");
            } else {
                self.applied.push(value.clone());
                if self.echo {
                    self.publish_update(&topic, value);
                }
            }
            self.server.request_applied(self.now, seq);
        }
    }

    fn client_process(&mut self, bytes: &[u8]) {
        self.client
            .handle_message(self.now, &Bytes::copy_from_slice(bytes))
            .expect("valid server frame");
        while let Some(e) = self.client.poll_event() {
            match e {
                ClientEvent::Update(u) => self.updates.push(u),
                ClientEvent::Completed { request, result } => {
                    self.completed.push((request, result))
                }
                ClientEvent::Gap(g) => self.gaps.push(g),
                ClientEvent::ServerClosed { .. } | ClientEvent::GoAway { .. } => {
                    panic!("unexpected close")
                }
            }
        }
    }

    /// Cuts the connection after delivering `deliver` of the frames in flight each way.
    fn cut(&mut self, deliver: usize) {
        for _ in 0..deliver {
            if !self.connected {
                break;
            }
            if let Some(b) = self.c2s.pop_front() {
                self.server_process(&b);
            }
            if let Some(b) = self.s2c.pop_front() {
                self.client_process(&b);
            }
        }
        if !self.connected {
            return;
        }
        self.c2s.clear();
        self.s2c.clear();
        self.client.disconnected();
        self.server.disconnected();
        // The connection's writer goes with it, and what it had built (a replay writes it
        // again).
        self.server_builder = crate::frame::MessageBuilder::default();
        self.connected = false;
    }

    fn resume(&mut self) -> ResumeOutcome {
        let outcome = self
            .server
            .resume(self.now, self.client.received())
            .expect("resumable");
        self.server.set_batched(self.batched);
        let accepted = self.accepted();
        self.client
            .connected(self.now, &accepted)
            .expect("consistent");
        self.connected = true;
        outcome
    }
}

/// Compares long sequences, reporting the first difference instead of both sequences.
fn assert_same<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], what: &str) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: first difference at index {i}: got {:?}, want {:?}",
            got[i], want[i]
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
}

fn value(i: u64) -> Bytes {
    Bytes::from(i.to_be_bytes().to_vec())
}

#[test]
fn random_cuts_lose_and_duplicate_nothing_in_either_direction() {
    random_cuts(false);
}

#[test]
fn random_cuts_lose_and_duplicate_nothing_with_batched_messages() {
    random_cuts(true);
}

fn random_cuts(batched: bool) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut pair = Pair::new(BufferLimits::default(), ClientSessionConfig::default());
    pair.batched = batched;
    pair.server.set_batched(batched);
    let accepted = pair.accepted();
    pair.client.connected(pair.now, &accepted).expect("batched");
    let total = 5_000u64;
    let mut sent = 0u64;
    let mut requests = Vec::new();
    while sent < total {
        let burst = 1 + rng.below(50);
        for _ in 0..burst.min(total - sent) {
            sent += 1;
            requests.push(pair.client.publish("t", value(sent)).expect("room"));
        }
        // Half of the time, some frames move before the cut.
        if rng.below(2) == 0 {
            while let Some(b) = pair.client.poll_transmit_message(pair.now) {
                pair.c2s.push_back(b);
            }
        }
        let deliver = rng.below(40) as usize;
        pair.cut(deliver);
        pair.resume();
        if rng.below(3) == 0 {
            pair.drive();
        }
    }
    pair.drive();
    let expected: Vec<Bytes> = (1..=total).map(value).collect();
    assert_same(
        &pair.applied,
        &expected,
        "server applied each publish once, in order",
    );
    let echoed: Vec<Bytes> = pair.updates.iter().map(|u| u.value.clone()).collect();
    assert_same(
        &echoed,
        &expected,
        "client received each update once, in order",
    );
    let completed: Vec<u64> = pair.completed.iter().map(|(r, _)| *r).collect();
    assert_same(
        &completed,
        &requests,
        "each request completed once, in order",
    );
    assert!(pair.completed.iter().all(|(_, r)| r.is_ok()));
    assert!(pair.gaps.is_empty());
    assert_eq!(
        pair.client.unacknowledged(),
        0,
        "acks trimmed the client buffer"
    );
    assert_eq!(
        pair.server.buffered().0,
        0,
        "acks trimmed the server buffer"
    );
}

#[test]
fn a_session_that_received_nothing_recovers() {
    let mut pair = Pair::new(BufferLimits::default(), ClientSessionConfig::default());
    pair.echo = false;
    pair.cut(0);
    pair.publish_update("t", value(1));
    pair.publish_update("t", value(2));
    assert_eq!(pair.resume(), ResumeOutcome::Replay);
    pair.drive();
    let got: Vec<Bytes> = pair.updates.iter().map(|u| u.value.clone()).collect();
    assert_eq!(got, vec![value(1), value(2)]);
}

#[test]
fn rejection_replayed_after_a_cut_is_not_reported_as_success() {
    let mut pair = Pair::new(BufferLimits::default(), ClientSessionConfig::default());
    let ok = pair.client.publish("t", value(1)).expect("room");
    let denied = pair.client.publish("forbidden", value(2)).expect("room");
    while let Some(b) = pair.client.poll_transmit(pair.now) {
        pair.c2s.push_back(b);
    }
    // The server processes both requests, but its answers are lost with the connection.
    pair.cut(2);
    assert_eq!(pair.server.applied(), 2);
    pair.resume();
    pair.drive();
    assert_eq!(pair.completed.len(), 2);
    assert!(pair.completed.contains(&(ok, Ok(()))));
    assert!(pair.completed.iter().any(|(r, res)| *r == denied
        && matches!(res, Err(e) if e.kind == RequestErrorKind::AccessDenied)));
}

#[test]
fn overflow_during_an_outage_gives_a_gap_report() {
    let limits = BufferLimits {
        max_frames: 4,
        max_bytes: 1 << 20,
    };
    let mut pair = Pair::new(limits, ClientSessionConfig::default());
    pair.echo = false;
    pair.publish_update("a", value(1));
    pair.drive();
    pair.cut(0);
    for i in 2..=11 {
        pair.publish_update(if i % 2 == 0 { "a" } else { "b" }, value(i));
    }
    match pair.resume() {
        ResumeOutcome::Gap(report) => {
            assert_eq!((report.lost_from, report.lost_to), (2, 11));
            assert_eq!(
                report.topics,
                vec![("a".to_string(), 5), ("b".to_string(), 5)]
            );
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    // The shell sends snapshots after the report.
    pair.publish_update("a", value(100));
    pair.drive();
    assert_eq!(pair.gaps.len(), 1);
    assert_eq!(pair.gaps[0].lost_count(), 10);
    assert_eq!(
        pair.updates.last().map(|u| u.value.clone()),
        Some(value(100))
    );
    // Later cuts replay normally again.
    pair.cut(0);
    pair.publish_update("a", value(101));
    assert_eq!(pair.resume(), ResumeOutcome::Replay);
    pair.drive();
    assert_eq!(
        pair.updates.last().map(|u| u.value.clone()),
        Some(value(101))
    );
}

#[test]
fn strict_client_refuses_a_gap() {
    let limits = BufferLimits {
        max_frames: 2,
        max_bytes: 1 << 20,
    };
    let config = ClientSessionConfig {
        strict: true,
        ..ClientSessionConfig::default()
    };
    let mut pair = Pair::new(limits, config);
    pair.cut(0);
    for i in 1..=5 {
        pair.publish_update("a", value(i));
    }
    assert!(matches!(pair.resume(), ResumeOutcome::Gap(_)));
    let frame = pair
        .server
        .poll_transmit(pair.now)
        .expect("gap report first");
    let err = pair
        .client
        .handle_frame(pair.now, &frame)
        .expect_err("strict");
    assert!(matches!(err, ConnectionFault::LostMessages(_)));
    assert_eq!(err.reason(), crate::CloseReason::LostMessages);
}

#[test]
fn silence_is_detected_within_one_and_a_half_ping_periods_and_pings_keep_a_quiet_link_alive() {
    let mut pair = Pair::new(BufferLimits::default(), ClientSessionConfig::default());
    // A quiet but healthy link: pings flow both ways every period.
    for _ in 0..10 {
        pair.now += PING;
        pair.client.handle_timeout(pair.now).expect("alive");
        pair.server.handle_timeout(pair.now).expect("alive");
        pair.drive();
    }
    // A stalled link: nothing moves any more.
    let stalled_at = pair.now;
    let mut t;
    let detected = loop {
        t = pair
            .client
            .poll_timeout()
            .expect("connected has a deadline");
        if let Err(fault) = pair.client.handle_timeout(t) {
            break fault;
        }
        while pair.client.poll_transmit(t).is_some() {}
        assert!(t <= stalled_at + PING * 2, "not detected in time");
    };
    assert_eq!(detected, ConnectionFault::Idle);
    assert!(t - stalled_at <= PING * 3 / 2);
    assert!(
        pair.server
            .handle_timeout(stalled_at + PING * 3 / 2)
            .is_err()
    );
    // Not before: a peer's ping is due every half period, so a whole period of margin.
    assert!(
        pair.server
            .handle_timeout(stalled_at + PING * 3 / 2 - Duration::from_millis(1))
            .is_ok()
    );
}

#[test]
fn a_slow_consumer_on_a_live_connection_is_reported_not_dropped_silently() {
    let limits = BufferLimits {
        max_frames: 3,
        max_bytes: 1 << 20,
    };
    let mut server = ServerSession::new(limits, PING);
    let now = Instant::now();
    server.opened(now);
    let update = |i| Update {
        topic: "a".into(),
        value: value(i),
        position: Position::default(),
        snapshot: false,
    };
    for i in 0..3 {
        server.push_update(&update(i)).expect("room");
    }
    assert_eq!(
        server.push_update(&update(3)),
        Err(ServerFault::SlowConsumer)
    );
    // Once written (though unacked), the oldest may make room: the connection may still deliver it.
    assert!(server.poll_transmit(now).is_some());
    assert!(server.push_update(&update(3)).is_ok());
}

#[test]
fn client_queue_is_bounded() {
    let config = ClientSessionConfig {
        buffer: BufferLimits {
            max_frames: 3,
            max_bytes: 1 << 20,
        },
        strict: false,
    };
    let mut client = ClientSession::new(config);
    for i in 0..3 {
        client.publish("t", value(i)).expect("room");
    }
    let err = client.publish("t", value(9)).expect_err("full");
    assert_eq!(err.frames, 3);
}

#[test]
fn resume_claiming_unsent_frames_is_refused_and_harmless() {
    let mut pair = Pair::new(BufferLimits::default(), ClientSessionConfig::default());
    pair.publish_update("a", value(1));
    pair.drive();
    pair.cut(0);
    assert!(pair.server.resume(pair.now, 99).is_err());
    pair.resume();
    pair.publish_update("a", value(2));
    pair.drive();
    assert_eq!(pair.updates.len(), 2);
}

#[test]
fn a_resumed_client_writes_at_once_without_waiting_for_a_server_frame() {
    // Zero round trip: everything the client needs is in the upgrade response, so queued
    // requests go out before anything arrives from the server.
    let mut pair = Pair::new(BufferLimits::default(), ClientSessionConfig::default());
    pair.cut(0);
    pair.client.publish("t", value(1)).expect("room");
    pair.client.publish("t", value(2)).expect("room");
    pair.server
        .resume(pair.now, pair.client.received())
        .expect("resumable");
    let accepted = pair.accepted();
    pair.client
        .connected(pair.now, &accepted)
        .expect("consistent");
    let first = pair
        .client
        .poll_transmit(pair.now)
        .expect("a request goes out at once");
    let second = pair.client.poll_transmit(pair.now).expect("and the next");
    assert!(pair.client.poll_transmit(pair.now).is_none());
    for frame in [first, second] {
        match pair.server.handle_frame(pair.now, &frame).expect("valid") {
            Some(ServerRequest::Publish { seq, value: v, .. }) => {
                pair.applied.push(v);
                pair.server.request_applied(pair.now, seq);
            }
            other => panic!("expected a publish, got {other:?}"),
        }
    }
    assert_eq!(pair.applied, vec![value(1), value(2)]);
}

#[test]
fn a_gap_counts_only_what_the_client_really_lacks() {
    let limits = BufferLimits {
        max_frames: 3,
        max_bytes: 1 << 20,
    };
    let mut pair = Pair::new(limits, ClientSessionConfig::default());
    pair.echo = false;
    // Written and received, but not yet acknowledged when the connection drops.
    pair.publish_update("a", value(1));
    while let Some(b) = pair.server.poll_transmit(pair.now) {
        pair.client_process(&b);
    }
    assert_eq!(pair.client.received(), 1);
    pair.cut(0);
    for i in 2..=6 {
        pair.publish_update("b", value(i));
    }
    match pair.resume() {
        ResumeOutcome::Gap(report) => {
            assert_eq!((report.lost_from, report.lost_to), (2, 6));
            assert_eq!(
                report.topics,
                vec![("b".to_string(), 5)],
                "update 1 of topic a was received"
            );
        }
        other => panic!("expected a gap, got {other:?}"),
    }
}

/// Runs the server shell over every client frame in flight; returns whether the client closed.
fn serve_until_close(pair: &mut Pair) -> bool {
    while let Some(b) = pair.client.poll_transmit(pair.now) {
        pair.c2s.push_back(b);
    }
    while let Some(b) = pair.c2s.pop_front() {
        match pair.server.handle_frame(pair.now, &b).expect("valid") {
            Some(ServerRequest::Publish { seq, value, .. }) => {
                pair.applied.push(value);
                pair.server.request_applied(pair.now, seq);
            }
            Some(ServerRequest::Close) => return true,
            _ => {}
        }
    }
    false
}

#[test]
fn close_goes_out_after_the_requests_queued_before_it_and_the_final_ack_completes_them() {
    let mut pair = Pair::new(BufferLimits::default(), ClientSessionConfig::default());
    pair.echo = false;
    let seqs: Vec<u64> = (1..=5)
        .map(|i| pair.client.publish("t", value(i)).expect("room"))
        .collect();
    pair.client.close();
    assert!(pair.client.has_pending_transmit());
    assert!(serve_until_close(&mut pair), "the close frame was written");
    assert!(pair.client.is_close_sent());
    assert_eq!(
        pair.applied.len(),
        5,
        "every request was applied before the close"
    );
    assert!(
        pair.client.poll_transmit(pair.now).is_none(),
        "nothing follows the close frame"
    );
    // The server's last words: the ack that completes every request, without waiting for the
    // ack delay.
    while let Some(b) = pair.server.poll_transmit(pair.now) {
        pair.client_process(&b);
    }
    let done: Vec<u64> = pair.completed.iter().map(|(s, _)| *s).collect();
    assert_eq!(done, seqs);
    assert!(pair.completed.iter().all(|(_, r)| r.is_ok()));
}

#[test]
fn a_close_frame_lost_with_its_connection_is_written_again_after_the_requests() {
    let mut pair = Pair::new(BufferLimits::default(), ClientSessionConfig::default());
    pair.echo = false;
    pair.client.publish("t", value(1)).expect("room");
    pair.client.close();
    // Both frames are written, then the connection dies before the server reads them.
    while pair.client.poll_transmit(pair.now).is_some() {}
    assert!(pair.client.is_close_sent());
    assert!(pair.client.may_have_reached_server(1));
    pair.cut(0);
    pair.client.publish("t", value(2)).expect("room");
    assert!(!pair.client.may_have_reached_server(2), "never written");
    pair.resume();
    assert!(serve_until_close(&mut pair));
    assert_eq!(
        pair.applied,
        vec![value(1), value(2)],
        "in order, before the close"
    );
}

#[test]
fn an_owed_ack_leaves_at_once_when_the_server_has_read_everything() {
    let mut pair = Pair::new(BufferLimits::default(), ClientSessionConfig::default());
    pair.echo = false;
    pair.client.publish("t", value(1)).expect("room");
    let frame = pair.client.poll_transmit(pair.now).expect("publish");
    pair.server.handle_frame(pair.now, &frame).expect("valid");
    pair.server.request_applied(pair.now, 1);
    // Nothing is due before the ack delay...
    pair.server.handle_timeout(pair.now).expect("alive");
    assert!(pair.server.poll_transmit(pair.now).is_none());
    // ...unless the reader found no more input: then the ack is due at the same instant.
    pair.server.handle_input_drained(pair.now);
    assert_eq!(pair.server.poll_timeout(), Some(pair.now));
    pair.server.handle_timeout(pair.now).expect("alive");
    let ack = pair.server.poll_transmit(pair.now).expect("the ack");
    pair.client_process(&ack);
    assert_eq!(pair.completed, vec![(1, Ok(()))]);
    // With nothing owed, a drained reader sends nothing.
    pair.server.handle_input_drained(pair.now);
    pair.server.handle_timeout(pair.now).expect("alive");
    assert!(pair.server.poll_transmit(pair.now).is_none());
}

#[test]
fn an_ack_never_covers_a_request_the_shell_has_not_applied_yet() {
    let mut pair = Pair::new(BufferLimits::default(), ClientSessionConfig::default());
    pair.client.publish("t", value(1)).expect("room");
    let frame = pair.client.poll_transmit(pair.now).expect("publish");
    // Decoded, but its effect is still on its way to a shared store.
    assert!(matches!(
        pair.server.handle_frame(pair.now, &frame).expect("valid"),
        Some(ServerRequest::Publish { seq: 1, .. })
    ));
    pair.server.handle_input_drained(pair.now);
    pair.now += crate::ACK_DELAY * 2;
    pair.server.handle_timeout(pair.now).expect("alive");
    while let Some(b) = pair.server.poll_transmit(pair.now) {
        pair.client_process(&b);
    }
    assert!(pair.completed.is_empty(), "no ack may complete it yet");
    assert_eq!(
        pair.server.applied(),
        0,
        "a resume would not claim it either"
    );
    pair.server.request_applied(pair.now, 1);
    pair.server.handle_input_drained(pair.now);
    pair.server.handle_timeout(pair.now).expect("alive");
    while let Some(b) = pair.server.poll_transmit(pair.now) {
        pair.client_process(&b);
    }
    assert_eq!(pair.completed, vec![(1, Ok(()))]);
}

#[test]
fn a_session_continued_elsewhere_numbers_on_from_the_client_and_acks_what_was_applied() {
    let mut pair = Pair::new(BufferLimits::default(), ClientSessionConfig::default());
    pair.echo = false;
    for i in 1..=3 {
        pair.publish_update("a", value(i));
    }
    pair.drive();
    pair.client.publish("t", value(9)).expect("room");
    pair.client.publish("t", value(10)).expect("room");
    while pair.client.poll_transmit(pair.now).is_some() {}
    pair.cut(0);
    // The first server died; a store says it applied request 1 of the two.
    let mut server = ServerSession::continued(BufferLimits::default(), PING, 3, 1, None);
    let update = Update {
        topic: "a".into(),
        value: value(4),
        position: Position::default(),
        snapshot: false,
    };
    server.push_update(&update).expect("room");
    server.attach(pair.now);
    pair.server = server;
    let accepted = pair.accepted();
    assert_eq!(accepted.received, 1);
    pair.client
        .connected(pair.now, &accepted)
        .expect("consistent");
    pair.connected = true;
    pair.drive();
    assert_eq!(pair.updates.len(), 4, "the update continues the numbering");
    assert_eq!(
        pair.applied,
        vec![value(10)],
        "only the unapplied request is sent again"
    );
    assert_eq!(pair.completed.len(), 2);
}

#[test]
fn a_continued_session_with_lost_updates_reports_a_gap_first() {
    let mut pair = Pair::new(BufferLimits::default(), ClientSessionConfig::default());
    pair.publish_update("a", value(1));
    pair.drive();
    pair.cut(0);
    let mut server =
        ServerSession::continued(BufferLimits::default(), PING, 1, 0, Some(vec!["a".into()]));
    server.attach(pair.now);
    pair.server = server;
    let accepted = pair.accepted();
    pair.client
        .connected(pair.now, &accepted)
        .expect("consistent");
    pair.connected = true;
    pair.publish_update("a", value(2));
    pair.drive();
    assert_eq!(pair.gaps.len(), 1);
    assert_eq!(pair.gaps[0].topics, vec![("a".to_string(), 0)]);
    assert_eq!(pair.updates.len(), 2, "the update after the gap arrives");
}

#[test]
fn updates_marked_lost_force_a_gap_on_the_next_resume() {
    let mut pair = Pair::new(BufferLimits::default(), ClientSessionConfig::default());
    pair.publish_update("a", value(1));
    pair.drive();
    pair.cut(0);
    pair.server.mark_lost(Arc::from("b"));
    assert!(matches!(pair.resume(), ResumeOutcome::Gap(_)));
    pair.publish_update("b", value(2));
    pair.drive();
    assert_eq!(pair.gaps.len(), 1);
    assert_eq!(pair.gaps[0].topics, vec![("b".to_string(), 0)]);
    assert_eq!(pair.updates.len(), 2);
    // Only once.
    pair.cut(0);
    assert!(matches!(pair.resume(), ResumeOutcome::Replay));
}

#[test]
fn a_request_decoded_but_not_applied_keeps_its_number_when_the_client_sends_it_again() {
    let mut pair = Pair::new(BufferLimits::default(), ClientSessionConfig::default());
    pair.echo = false;
    pair.client.publish("t", value(1)).expect("room");
    let frame = pair.client.poll_transmit(pair.now).expect("publish");
    // Decoded; its commit never finished (the store was unreachable) and the connection drops.
    assert!(matches!(
        pair.server.handle_frame(pair.now, &frame).expect("valid"),
        Some(ServerRequest::Publish { seq: 1, .. })
    ));
    pair.cut(0);
    pair.resume();
    let again = pair.client.poll_transmit(pair.now).expect("sent again");
    assert!(
        matches!(
            pair.server.handle_frame(pair.now, &again).expect("valid"),
            Some(ServerRequest::Publish { seq: 1, .. })
        ),
        "the same request, the same number"
    );
}

#[test]
fn acknowledged_frames_are_freed_by_the_next_push_or_the_next_ping() {
    let mut server = ServerSession::new(BufferLimits::default(), PING);
    let now = Instant::now();
    server.opened(now);
    let encoded = crate::frame::encode_update(&Update {
        topic: "a".into(),
        value: Bytes::from_static(b"v"),
        position: Position::default(),
        snapshot: false,
    });
    let (first, second) = (Bytes::from(encoded.clone()), Bytes::from(encoded));
    let ack = |server: &mut ServerSession, received: u64| {
        let bytes = crate::frame::encode_to_vec(&crate::frame::ClientFrame::Ack { received });
        server.handle_frame(now, &bytes).expect("a valid ack")
    };
    server.push_encoded_update(first.clone()).expect("room");
    while server.poll_transmit(now).is_some() {}
    ack(&mut server, 1);
    assert_eq!(
        server.buffered().0,
        0,
        "acknowledged: off the buffer at once"
    );
    assert!(!first.is_unique(), "but kept until the next push");
    server.push_encoded_update(second.clone()).expect("room");
    assert!(first.is_unique(), "the push freed it");
    while server.poll_transmit(now).is_some() {}
    ack(&mut server, 2);
    assert!(!second.is_unique());
    // No update follows: the quiet connection's ping frees it.
    server.handle_timeout(now + PING).expect("alive");
    assert!(second.is_unique(), "freed at the ping");
}

#[test]
fn the_writer_gathers_a_stream_of_updates_but_never_holds_an_ack_back() {
    let mut server = ServerSession::new(BufferLimits::default(), PING);
    let now = Instant::now();
    server.opened(now);
    let update = Bytes::from(crate::frame::encode_update(&Update {
        topic: "a".into(),
        value: Bytes::from_static(b"v"),
        position: Position::default(),
        snapshot: false,
    }));
    // A round, then `came_in` updates queued while it was written; what the writer does next.
    let round = |server: &mut ServerSession, came_in: usize| {
        while server.poll_transmit(now).is_some() {}
        for _ in 0..came_in {
            server.push_encoded_update(update.clone()).expect("room");
        }
        server.after_round()
    };
    assert_eq!(round(&mut server, 0), AfterRound::Wait, "nothing came in");
    server.push_encoded_update(update.clone()).expect("room");
    assert!(server.wakes_writer(), "waiting: woken by the first update");
    assert_eq!(
        round(&mut server, 3),
        AfterRound::Gather,
        "updates came in meanwhile"
    );
    server.push_encoded_update(update.clone()).expect("room");
    assert!(!server.wakes_writer(), "gathering");
    // The client's lazy ack of what it got does not end the gathering.
    let before = server.poll_timeout();
    let ack = crate::frame::encode_to_vec(&crate::frame::ClientFrame::Ack { received: 1 });
    server.handle_frame(now, &ack).expect("valid");
    assert!(!server.wakes_writer_after_requests(before), "a lazy ack");

    // A request applied: the client waits on its ack, so nothing is held back.
    let publish = crate::frame::encode_to_vec(&crate::frame::ClientFrame::Publish {
        topic: "a".into(),
        value: Bytes::from_static(b"v"),
    });
    let before = server.poll_timeout();
    server.handle_frame(now, &publish).expect("valid");
    server.request_applied(now, 1);
    assert!(
        server.wakes_writer_after_requests(before),
        "an ack is owed: its timer wakes the writer"
    );
    assert_eq!(
        round(&mut server, 3),
        AfterRound::WriteNow,
        "an ack is owed"
    );
    server.handle_input_drained(now);
    server.handle_timeout(now).expect("alive");
    assert_eq!(
        server.after_round(),
        AfterRound::WriteNow,
        "the ack is queued"
    );
    assert_eq!(round(&mut server, 0), AfterRound::Wait, "the ack went");

    // A small recovery buffer: half full, the writer does not gather, and is woken.
    let mut server = ServerSession::new(
        BufferLimits {
            max_frames: 10,
            max_bytes: 1 << 20,
        },
        PING,
    );
    server.opened(now);
    assert_eq!(round(&mut server, 4), AfterRound::Gather, "4 of 10 held");
    server.push_encoded_update(update.clone()).expect("room");
    assert!(server.wakes_writer(), "5 of 10: half full");
    assert_eq!(
        server.after_round(),
        AfterRound::WriteNow,
        "half full: no gathering"
    );
}

#[test]
fn a_session_whose_gathering_is_off_writes_a_stream_at_once() {
    let now = Instant::now();
    let update = Bytes::from(crate::frame::encode_update(&Update {
        topic: "a".into(),
        value: Bytes::from_static(b"v"),
        position: Position::default(),
        snapshot: false,
    }));
    // Turned off before the connection and after it: both take.
    let mut before = ServerSession::new(BufferLimits::default(), PING).with_gathering(false);
    before.opened(now);
    let mut after = ServerSession::new(BufferLimits::default(), PING);
    after.opened(now);
    let mut after = after.with_gathering(false);
    for server in [&mut before, &mut after] {
        for _ in 0..3 {
            server.push_encoded_update(update.clone()).expect("room");
            assert_eq!(
                server.after_round(),
                AfterRound::WriteNow,
                "updates wait: write"
            );
            while server.poll_transmit(now).is_some() {}
        }
        assert_eq!(server.after_round(), AfterRound::Wait);
    }
}
