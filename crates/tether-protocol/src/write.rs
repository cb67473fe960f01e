//! How a connection's writer takes its frames: a bounded [`WriteRound`] of copying per hold of
//! the session's lock, for both writers (the server's and the client's).

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

    /// The round ended full: more frames may be waiting, so the writer goes on at once.
    pub fn is_full(&self) -> bool {
        self.taken >= Self::PER_ROUND
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
}
