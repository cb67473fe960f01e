//! How a connection's writer takes its frames: a bounded [`WriteRound`] of copying per hold of
//! the session's lock, for both writers (the server's and the client's), and when the server's
//! gathers a stream's frames before writing them.

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

    /// The round ended full: more frames may be waiting, so the writer goes on at once.
    pub fn is_full(&self) -> bool {
        self.taken >= Self::PER_ROUND
    }
}

/// What a writer does once a round is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRound {
    /// Write the next round at once: a full round waits, or a frame the peer waits on (an ack,
    /// a pong), or the writer must hurry (see [`Gathering::after_round`]).
    WriteNow,
    /// Gather a stream's frames: wait, [`Gathering::AT_MOST`] at most, until
    /// [`Gathering::ENOUGH`] frames wait or anything else wakes the writer (an ack due, a
    /// close).
    Gather,
    /// Nothing waits: sleep until woken (by the next frame) or until the session's next
    /// deadline.
    Wait,
}

/// A connection's writer as the code that queues frames sees it: whether a new frame must
/// wake it, and when it gathers a stream's frames before writing them instead of writing
/// whatever waits at once.
///
/// Frames that came in while a round was being written come faster than the writer writes
/// them a round at a time, and a system call (and a wake-up of the reader at the other end)
/// per few frames costs more than the frames themselves: a fast stream's rounds were a few
/// dozen frames each. So after such a round the writer gathers: it waits, at most
/// [`Gathering::AT_MOST`], for [`Gathering::ENOUGH`] frames, and new frames do not wake it
/// before that. When the stream runs dry it gathers once more (a stream's next frames come
/// right after the writer caught up), then waits as usual.
///
/// A session that receives now and then finds nothing waiting after a round, and so does a
/// burst that the round it woke the writer for takes whole (the writer usually runs after a
/// short burst was queued): both are written at once. A burst still being queued while its
/// first frames are written has its tail gathered. A peer waiting on an ack or another
/// control frame is never kept waiting for it, and a writer whose session's recovery buffer is
/// half full writes what waits at once (gathering must not fill it).
#[derive(Debug)]
pub struct Gathering {
    /// Off: the writer writes whatever waits at once, as it did before gathering.
    enabled: bool,
    /// The last round found frames waiting.
    streaming: bool,
    /// The stream ran dry and the writer gathered once more; the next dry round ends it.
    lingered: bool,
    state: WriterState,
}

/// What a writer is doing, as far as waking it goes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum WriterState {
    /// Writing, or woken and about to: queued frames are seen after its round.
    #[default]
    Writing,
    /// Gathering: woken only once enough frames wait.
    Gathering,
    /// Waiting with nothing to write: the next frame wakes it.
    Waiting,
}

impl Default for Gathering {
    /// Gathering on.
    fn default() -> Self {
        Gathering::new(true)
    }
}

impl Gathering {
    /// A writer that gathers fast streams, or (`enabled` false) writes whatever waits at once.
    pub fn new(enabled: bool) -> Self {
        Gathering {
            enabled,
            streaming: false,
            lingered: false,
            state: WriterState::default(),
        }
    }

    /// The longest a writer gathers. The server's writer waits until its runtime's next timer
    /// tick, which comes within a millisecond (half of one on average).
    pub const AT_MOST: Duration = Duration::from_millis(1);

    /// Frames waiting that end a gathering: a few full rounds, written back to back.
    pub const ENOUGH: u64 = 4 * WriteRound::PER_ROUND as u64;

    /// Decides, after a round, from what waits now: `waiting` sequenced frames (updates),
    /// `control` frames queued (acks, pongs: the peer waits on them), and whether to `hurry`
    /// (an ack is owed, so the peer waits on its requests' completion; or the session's
    /// recovery buffer is half full).
    pub fn after_round(&mut self, waiting: u64, control: bool, hurry: bool) -> AfterRound {
        let next = self.decide(waiting, control, hurry);
        self.state = match next {
            AfterRound::WriteNow => WriterState::Writing,
            AfterRound::Gather => WriterState::Gathering,
            AfterRound::Wait => WriterState::Waiting,
        };
        next
    }

    fn decide(&mut self, waiting: u64, control: bool, hurry: bool) -> AfterRound {
        if control || waiting >= WriteRound::PER_ROUND as u64 {
            return AfterRound::WriteNow;
        }
        if !self.enabled {
            return if waiting == 0 {
                AfterRound::Wait
            } else {
                AfterRound::WriteNow
            };
        }
        if waiting == 0 {
            if self.streaming && !self.lingered && !hurry {
                self.lingered = true;
                return AfterRound::Gather;
            }
            self.streaming = false;
            self.lingered = false;
            return AfterRound::Wait;
        }
        self.lingered = false;
        self.streaming = !hurry;
        if hurry {
            AfterRound::WriteNow
        } else {
            AfterRound::Gather
        }
    }

    /// A frame was queued, and `waiting` frames wait now (`full`: the session's recovery
    /// buffer is half full): whether to wake the writer for it. A writer woken is counted as
    /// writing until its next round ends, so that the frames queued meanwhile do not wake it
    /// again.
    pub fn wakes(&mut self, waiting: u64, full: bool) -> bool {
        let wake = match self.state {
            WriterState::Waiting => true,
            WriterState::Gathering => waiting >= Self::ENOUGH || full,
            WriterState::Writing => false,
        };
        if wake {
            self.state = WriterState::Writing;
        }
        wake
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
    fn a_writer_gathers_a_stream_but_not_a_burst_nor_what_the_peer_waits_on() {
        let full = WriteRound::PER_ROUND as u64;
        let mut g = Gathering::default();
        // A burst that its round took whole.
        assert_eq!(g.after_round(0, false, false), AfterRound::Wait);
        // A stream: frames came in while each round was written.
        assert_eq!(g.after_round(30, false, false), AfterRound::Gather);
        assert_eq!(g.after_round(25, false, false), AfterRound::Gather);
        // A full round waits: write it at once, and gather again after it.
        assert_eq!(g.after_round(full, false, false), AfterRound::WriteNow);
        assert_eq!(g.after_round(3, false, false), AfterRound::Gather);
        // Dry: gather once more, then wait.
        assert_eq!(g.after_round(0, false, false), AfterRound::Gather);
        assert_eq!(g.after_round(0, false, false), AfterRound::Wait);
        // The peer waits on a control frame or an ack, or the buffer is half full: never held.
        assert_eq!(g.after_round(3, true, false), AfterRound::WriteNow);
        assert_eq!(g.after_round(3, false, true), AfterRound::WriteNow);
        assert_eq!(
            g.after_round(0, false, false),
            AfterRound::Wait,
            "no lingering after a hurry"
        );
        assert_eq!(
            g.after_round(0, false, true),
            AfterRound::Wait,
            "nothing to write"
        );
    }

    #[test]
    fn a_writer_with_gathering_off_writes_whatever_waits_at_once() {
        let mut g = Gathering::new(false);
        for waiting in [30, 25, 3, 1] {
            assert_eq!(g.after_round(waiting, false, false), AfterRound::WriteNow);
            assert!(
                !g.wakes(waiting + 1, false),
                "writing: seen after its round"
            );
        }
        assert_eq!(g.after_round(0, false, false), AfterRound::Wait);
        assert!(g.wakes(1, false), "waiting: the first frame wakes it");
    }

    #[test]
    fn a_new_frame_wakes_a_waiting_writer_once_and_a_gathering_one_when_it_has_enough() {
        let mut g = Gathering::default();
        assert!(
            !g.wakes(1, false),
            "a new writer writes its first round anyway"
        );
        assert_eq!(g.after_round(0, false, false), AfterRound::Wait);
        assert!(g.wakes(1, false), "waiting: the first frame wakes it");
        assert!(!g.wakes(2, false), "woken already");
        // Gathering: only enough frames, or a half-full buffer, wake it.
        assert_eq!(g.after_round(10, false, false), AfterRound::Gather);
        assert!(!g.wakes(11, false));
        assert!(!g.wakes(Gathering::ENOUGH - 1, false));
        assert!(g.wakes(Gathering::ENOUGH, false));
        assert!(!g.wakes(Gathering::ENOUGH + 1, false), "woken already");
        assert_eq!(g.after_round(10, false, false), AfterRound::Gather);
        assert!(g.wakes(12, true), "half full");
    }
}
