//! How a connection's writer takes its frames and when it writes them: a bounded
//! [`WriteRound`] of copying per hold of the session's lock (both writers, the server's and the
//! client's), and a [`WritePacer`] that lets a sustained stream of small rounds gather into
//! larger writes (the server's).

use std::time::Duration;

/// A writer's round of copying frames into messages: at most [`WriteRound::PER_LOCK`] frames
/// per hold of its session's lock (a publisher or `send()` waiting for the lock waits for that
/// many copies, not for a round), at most [`WriteRound::PER_ROUND`] per round of writing.
/// Both writers (the server's, the client's) take their frames this way.
#[derive(Debug, Default)]
pub struct WriteRound {
    taken: usize,
}

impl WriteRound {
    /// Frames copied per hold of the session's lock at most.
    pub const PER_LOCK: usize = 64;
    /// Frames taken per round of writing at most.
    pub const PER_ROUND: usize = 1024;

    /// Nothing taken yet: the writer checks its timers and its batching now.
    pub fn is_start(&self) -> bool {
        self.taken == 0
    }

    /// Takes frames while `take` gives one (returns `true`), up to the bound per lock. Returns
    /// whether the round is over (the session ran dry, or the round is full): release the
    /// lock and write. Otherwise release it, take it again, and call this again.
    pub fn take_under_lock(&mut self, mut take: impl FnMut() -> bool) -> bool {
        let mut copied = 0;
        while copied < Self::PER_LOCK && take() {
            copied += 1;
        }
        self.taken += copied;
        copied < Self::PER_LOCK || self.is_full()
    }

    /// Frames taken so far.
    pub fn taken(&self) -> usize {
        self.taken
    }

    /// The round ended full: more frames may be waiting, so the writer goes on at once.
    pub fn is_full(&self) -> bool {
        self.taken >= Self::PER_ROUND
    }
}

/// Decides when a writer waits a moment before its next round, so that a sustained stream is
/// written in large batches rather than a few frames per write.
///
/// A writer that is woken for every few frames spends most of its time on the system call and
/// the wake-ups around each write (on loopback, a `sendto` of a few frames costs as much as
/// copying a few hundred). When rounds keep coming back to back ([`WritePacer::STREAK`] in a
/// row, each under [`WritePacer::SMALL_ROUND`] frames, with more frames already waiting after
/// each), the frames arrive faster than one at a time but slower than the writer: it then
/// lingers for the configured time before its next round, and the frames queued meanwhile go
/// out together. Anything else (an idle connection, a round of many frames, a single reply)
/// is written at once, so a lone message never waits. The shell ends a linger early for what
/// must not wait (an acknowledgement that completes requests, a close): those wake the writer
/// as before, while queued updates and the client's lazy acks do not wake a writer that has
/// frames waiting.
#[derive(Debug, Clone)]
pub struct WritePacer {
    linger: Duration,
    streak: u32,
}

impl WritePacer {
    /// A round of fewer frames than this is small.
    pub const SMALL_ROUND: usize = 128;
    /// Small rounds back to back before the writer lingers.
    pub const STREAK: u32 = 4;

    /// A pacer that lingers for `linger` (zero: never; every round is written at once).
    pub fn new(linger: Duration) -> WritePacer {
        WritePacer { linger, streak: 0 }
    }

    /// Called after each round with the frames it wrote and whether more were already waiting
    /// when it was done. Returns how long to wait before the next round, if at all.
    pub fn after_round(&mut self, written: usize, more_waiting: bool) -> Option<Duration> {
        if self.linger.is_zero() || written >= Self::SMALL_ROUND || !more_waiting {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak < Self::STREAK {
            return None;
        }
        self.streak = 0;
        Some(self.linger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_round_takes_a_bounded_number_per_lock_and_per_round() {
        let mut round = WriteRound::default();
        assert!(round.is_start());
        let mut left = 100;
        let mut take = || {
            if left == 0 {
                return false;
            }
            left -= 1;
            true
        };
        assert!(!round.take_under_lock(&mut take), "64 taken: lock again");
        assert!(!round.is_start());
        assert!(round.take_under_lock(&mut take), "dry after 36 more");
        assert!(!round.is_full());
        let mut full = WriteRound::default();
        let mut always = || true;
        let mut holds = 1;
        while !full.take_under_lock(&mut always) {
            holds += 1;
        }
        assert!(full.is_full());
        assert_eq!(holds, WriteRound::PER_ROUND / WriteRound::PER_LOCK);
    }

    #[test]
    fn the_pacer_lingers_only_after_a_streak_of_small_rounds_with_more_waiting() {
        let linger = Duration::from_millis(1);
        let mut pacer = WritePacer::new(linger);
        for _ in 1..WritePacer::STREAK {
            assert_eq!(pacer.after_round(20, true), None);
        }
        assert_eq!(
            pacer.after_round(20, true),
            Some(linger),
            "the streak's last round"
        );
        assert_eq!(pacer.after_round(20, true), None, "the streak starts over");

        // A round with nothing waiting after it, or a large one, breaks the streak.
        for breaker in [(20, false), (WritePacer::SMALL_ROUND, true)] {
            let mut pacer = WritePacer::new(linger);
            for _ in 1..WritePacer::STREAK {
                assert_eq!(pacer.after_round(20, true), None);
            }
            assert_eq!(pacer.after_round(breaker.0, breaker.1), None);
            assert_eq!(pacer.after_round(20, true), None, "counted from zero again");
        }

        // A lone frame at a time (an idle connection) never waits.
        let mut pacer = WritePacer::new(linger);
        for _ in 0..100 {
            assert_eq!(pacer.after_round(1, false), None);
        }

        // Zero turns it off.
        let mut off = WritePacer::new(Duration::ZERO);
        for _ in 0..100 {
            assert_eq!(off.after_round(1, true), None);
        }
    }
}
