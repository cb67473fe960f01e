//! The recovery buffer: sequenced frames kept until the peer acknowledges them, and replayed
//! from the peer's position after a resume.

use std::collections::VecDeque;

/// Bounds of a recovery buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLimits {
    /// Most unacknowledged frames kept.
    pub max_frames: usize,
    /// Most unacknowledged bytes kept (sum of encoded frame sizes).
    pub max_bytes: usize,
}

impl Default for BufferLimits {
    /// 10,000 frames or 8 MiB, whichever is reached first.
    fn default() -> Self {
        BufferLimits {
            max_frames: 10_000,
            max_bytes: 8 << 20,
        }
    }
}

/// Sequenced frames from the first unacknowledged one on, with a cursor for what has been
/// written to the current connection.
///
/// Acknowledged frames are not dropped by [`RecoveryBuffer::ack`] but by the next
/// [`RecoveryBuffer::push`] (or [`RecoveryBuffer::release`]): a shell acknowledges on its
/// reader while its publisher pushes, and a frame's reference counts (an encoding shared by
/// many frames, its topic) then stay with the thread that took them instead of moving between
/// cores on every acknowledgement.
#[derive(Debug)]
pub struct RecoveryBuffer<F> {
    /// Sequence number of the first frame held (or of the next frame pushed, when none is).
    first: u64,
    /// The first `acked` are acknowledged, waiting to be dropped; the frames held follow.
    frames: VecDeque<(F, usize)>,
    acked: usize,
    /// Bytes of the frames held.
    bytes: usize,
    /// Next sequence number to write on the current connection.
    next_unsent: u64,
    limits: BufferLimits,
}

/// The peer claims a position the buffer cannot serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewindError {
    /// The peer is behind what the buffer still holds: frames `from..=to` are gone.
    Gap {
        /// First missing sequence number.
        from: u64,
        /// Last missing sequence number.
        to: u64,
    },
    /// The peer claims frames that were never sent.
    Ahead,
}

impl<F> RecoveryBuffer<F> {
    /// An empty buffer whose first frame will be sequence number 1.
    pub fn new(limits: BufferLimits) -> Self {
        RecoveryBuffer {
            first: 1,
            frames: VecDeque::new(),
            acked: 0,
            bytes: 0,
            next_unsent: 1,
            limits,
        }
    }

    /// The limits.
    pub fn limits(&self) -> BufferLimits {
        self.limits
    }

    /// Sequence number the next pushed frame gets.
    pub fn next_seq(&self) -> u64 {
        self.first + self.len() as u64
    }

    /// Sequence number of the oldest frame held (equals `next_seq` when empty).
    pub fn first_seq(&self) -> u64 {
        self.first
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.frames.len() - self.acked
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether half the room is taken, in frames or in bytes.
    pub fn is_half_full(&self) -> bool {
        self.len() * 2 >= self.limits.max_frames || self.bytes * 2 >= self.limits.max_bytes
    }

    /// Whether one more frame of `size` bytes fits within the limits. An empty buffer always
    /// takes one frame, so that a frame larger than the byte limit is not stuck forever.
    pub fn has_room_for(&self, size: usize) -> bool {
        self.is_empty()
            || (self.len() < self.limits.max_frames && self.bytes + size <= self.limits.max_bytes)
    }

    /// Appends a frame and returns its sequence number. Limits are the caller's business
    /// (see [`RecoveryBuffer::has_room_for`] and [`RecoveryBuffer::pop_oldest`]).
    pub fn push(&mut self, frame: F, size: usize) -> u64 {
        self.release();
        let seq = self.next_seq();
        self.frames.push_back((frame, size));
        self.bytes += size;
        seq
    }

    /// Drops the oldest frame (making room at the cost of a possible gap) and returns it with
    /// its sequence number.
    pub fn pop_oldest(&mut self) -> Option<(u64, F)> {
        self.release();
        let (frame, size) = self.frames.pop_front()?;
        let seq = self.first;
        self.first += 1;
        self.bytes -= size;
        if self.next_unsent < self.first {
            self.next_unsent = self.first;
        }
        Some((seq, frame))
    }

    /// The peer has everything up to `received`: forget those frames (they are dropped by the
    /// next push or [`RecoveryBuffer::release`]). Returns `false` if the peer acknowledges
    /// frames that were never sent (a protocol violation).
    pub fn ack(&mut self, received: u64) -> bool {
        if received >= self.next_unsent {
            return false;
        }
        let newly = usize::try_from((received + 1).saturating_sub(self.first))
            .unwrap_or(usize::MAX)
            .min(self.len());
        for (_, size) in self.frames.range(self.acked..self.acked + newly) {
            self.bytes -= size;
        }
        self.acked += newly;
        self.first += newly as u64;
        true
    }

    /// Drops the acknowledged frames still kept (see [`RecoveryBuffer::ack`]).
    pub fn release(&mut self) {
        if self.acked > 0 {
            self.frames.drain(..self.acked);
            self.acked = 0;
        }
    }

    /// A new connection begins and the peer has everything up to `received`: forget those
    /// frames and write everything after them again.
    pub fn rewind(&mut self, received: u64) -> Result<(), RewindError> {
        if received >= self.next_seq() {
            return Err(RewindError::Ahead);
        }
        if received + 1 < self.first {
            return Err(RewindError::Gap {
                from: received + 1,
                to: self.first - 1,
            });
        }
        while self.first <= received {
            self.pop_oldest();
        }
        self.next_unsent = self.first;
        Ok(())
    }

    /// Forgets every frame and starts numbering again at `next` (after a gap was reported).
    pub fn reset_to(&mut self, next: u64) -> Vec<F> {
        self.release();
        let frames = self.frames.drain(..).map(|(f, _)| f).collect();
        self.bytes = 0;
        self.first = next;
        self.next_unsent = next;
        frames
    }

    /// The next frame to write on the current connection, advancing the cursor.
    pub fn next_unsent(&mut self) -> Option<(u64, &F)> {
        let index = usize::try_from(self.next_unsent - self.first).ok()?;
        let (frame, _) = self.frames.get(self.acked + index)?;
        let seq = self.next_unsent;
        self.next_unsent += 1;
        Some((seq, frame))
    }

    /// Whether frames wait to be written.
    pub fn has_unsent(&self) -> bool {
        self.next_unsent < self.next_seq()
    }

    /// Frames not written yet.
    pub fn unsent_len(&self) -> u64 {
        self.next_seq().saturating_sub(self.next_unsent)
    }

    /// Sequence number of the next frame to be written.
    pub fn unsent_seq(&self) -> u64 {
        self.next_unsent
    }

    /// Iterates the held frames with their sequence numbers.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &F)> {
        self.frames
            .iter()
            .skip(self.acked)
            .enumerate()
            .map(|(i, (f, _))| (self.first + i as u64, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(max_frames: usize) -> RecoveryBuffer<&'static str> {
        RecoveryBuffer::new(BufferLimits {
            max_frames,
            max_bytes: 1000,
        })
    }

    #[test]
    fn ack_trims_only_what_was_sent() {
        let mut b = buffer(10);
        for f in ["a", "b", "c"] {
            b.push(f, 10);
        }
        assert!(!b.ack(1), "nothing sent yet");
        assert_eq!(b.next_unsent(), Some((1, &"a")));
        assert_eq!(b.next_unsent(), Some((2, &"b")));
        assert!(b.ack(2));
        assert_eq!(b.first_seq(), 3);
        assert_eq!(b.bytes(), 10);
        assert!(!b.ack(3), "3 not sent");
        assert_eq!(b.next_unsent(), Some((3, &"c")));
        assert_eq!(b.next_unsent(), None);
    }

    #[test]
    fn acked_frames_are_dropped_by_the_next_push_or_release() {
        let frame = std::rc::Rc::new(());
        let mut b = RecoveryBuffer::new(BufferLimits {
            max_frames: 3,
            max_bytes: 1000,
        });
        for _ in 0..3 {
            b.push(frame.clone(), 10);
        }
        while b.next_unsent().is_some() {}
        assert!(b.ack(2));
        assert_eq!((b.first_seq(), b.len(), b.bytes()), (3, 1, 10));
        assert!(b.has_room_for(10), "acknowledged frames take no room");
        assert_eq!(
            std::rc::Rc::strong_count(&frame),
            4,
            "kept until the next push"
        );
        assert_eq!(b.push(frame.clone(), 10), 4);
        assert_eq!(
            std::rc::Rc::strong_count(&frame),
            3,
            "the push dropped them"
        );
        let seqs: Vec<u64> = b.iter().map(|(s, _)| s).collect();
        assert_eq!(seqs, vec![3, 4]);
        assert_eq!(b.next_unsent().map(|(s, _)| s), Some(4));
        assert!(b.ack(3));
        b.release();
        assert_eq!(std::rc::Rc::strong_count(&frame), 2);
        assert!(b.rewind(3).is_ok(), "the peer has 3");
        assert_eq!(
            b.next_unsent().map(|(s, _)| s),
            Some(4),
            "4 is written again"
        );
    }

    #[test]
    fn rewind_replays_what_the_peer_lacks() {
        let mut b = buffer(10);
        for f in ["a", "b", "c", "d"] {
            b.push(f, 1);
        }
        while b.next_unsent().is_some() {}
        b.rewind(2).expect("covered");
        let replay: Vec<_> = std::iter::from_fn(|| b.next_unsent().map(|(s, f)| (s, *f))).collect();
        assert_eq!(replay, vec![(3, "c"), (4, "d")]);
        assert_eq!(b.rewind(9), Err(RewindError::Ahead));
    }

    #[test]
    fn overflow_then_rewind_reports_the_gap() {
        let mut b = buffer(2);
        for f in ["a", "b", "c", "d"] {
            if !b.has_room_for(1) {
                b.pop_oldest();
            }
            b.push(f, 1);
        }
        assert_eq!(b.first_seq(), 3);
        assert_eq!(b.rewind(0), Err(RewindError::Gap { from: 1, to: 2 }));
        assert!(b.rewind(2).is_ok());
        assert_eq!(b.reset_to(10), vec!["c", "d"]);
        assert_eq!(b.next_seq(), 10);
    }

    #[test]
    fn byte_limit_applies_but_an_empty_buffer_takes_one_frame() {
        let b = buffer(10);
        assert!(b.has_room_for(5000));
        let mut b = buffer(10);
        b.push("x", 900);
        assert!(!b.has_room_for(200));
        assert!(b.has_room_for(100));
    }
}
