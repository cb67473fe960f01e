//! Ack scheduling and liveness deadlines shared by both ends.

use std::time::Duration;

use crate::time::Instant;

/// The server acks requests after this many unacknowledged ones…
pub const ACK_EVERY: u32 = 64;
/// …or this long after the first unacknowledged one, whichever comes first (and at once when
/// it has read everything: see `ServerSession::handle_input_drained`). Its acks complete
/// requests, so they are prompt.
pub const ACK_DELAY: Duration = Duration::from_millis(20);
/// The client's acks only let the server release what it keeps for a resume: they are lazy,
/// after this many updates…
pub const LAZY_ACK_EVERY: u32 = 256;
/// …or this long after the first unacknowledged one. A second, not less: with many sessions
/// each receiving now and then (fan-out), a shorter delay made the server read about as many
/// acks as it wrote updates.
pub const LAZY_ACK_DELAY: Duration = Duration::from_secs(1);

/// When the receiving side owes the peer an ack.
#[derive(Debug)]
pub(crate) struct AckSchedule {
    unacked: u32,
    deadline: Option<Instant>,
    every: u32,
    delay: Duration,
}

impl Default for AckSchedule {
    /// The prompt schedule (the server's acks, which complete requests).
    fn default() -> Self {
        AckSchedule::new(ACK_EVERY, ACK_DELAY)
    }
}

impl AckSchedule {
    pub(crate) fn new(every: u32, delay: Duration) -> Self {
        AckSchedule {
            unacked: 0,
            deadline: None,
            every,
            delay,
        }
    }

    /// The lazy schedule (the client's acks, which only free the server's memory).
    pub(crate) fn lazy() -> Self {
        AckSchedule::new(LAZY_ACK_EVERY, LAZY_ACK_DELAY)
    }

    /// A sequenced frame arrived; returns `true` when an ack is due at once.
    pub(crate) fn on_received(&mut self, now: Instant) -> bool {
        self.unacked += 1;
        if self.deadline.is_none() {
            self.deadline = Some(now + self.delay);
        }
        self.unacked >= self.every
    }

    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// An ack (or a ping carrying one) is being sent.
    pub(crate) fn sent(&mut self) {
        self.unacked = 0;
        self.deadline = None;
    }
}

/// Keepalive and dead-connection detection: a ping after half a period without sending, and a
/// dead connection after one and a half periods without receiving (as MQTT's keepalive), so a
/// stall is found within 1.5 periods with a whole period of margin for the peer's ping.
#[derive(Debug)]
pub(crate) struct Liveness {
    period: Duration,
    last_rx: Instant,
    last_tx: Instant,
}

impl Liveness {
    pub(crate) fn new(period: Duration, now: Instant) -> Self {
        Liveness {
            period,
            last_rx: now,
            last_tx: now,
        }
    }
    pub(crate) fn received(&mut self, now: Instant) {
        self.last_rx = now;
    }
    pub(crate) fn sent(&mut self, now: Instant) {
        self.last_tx = now;
    }
    pub(crate) fn idle_deadline(&self) -> Instant {
        self.last_rx + self.period * 3 / 2
    }
    pub(crate) fn ping_deadline(&self) -> Instant {
        self.last_tx + self.period / 2
    }
    pub(crate) fn is_dead(&self, now: Instant) -> bool {
        now >= self.idle_deadline()
    }
    pub(crate) fn ping_due(&self, now: Instant) -> bool {
        now >= self.ping_deadline()
    }
}

/// The earlier of two optional instants.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl Liveness {
    pub(crate) fn period(&self) -> Duration {
        self.period
    }
}

impl AckSchedule {
    /// Makes the ack due at once (the next timeout check sends it).
    pub(crate) fn force(&mut self, now: Instant) {
        self.deadline = Some(now);
    }
}
