//! Publish outcomes, indexed by sequence number: one board per session instead of a channel
//! and a table entry per publish.
//!
//! The server answers requests in order and acknowledges them cumulatively, so two facts say
//! every outcome: "every request up to N is answered" ([`Board::settle_through`]) and the few
//! refusals ([`Board::fail`]), which arrive before the ack that covers them. A [`Completion`]
//! is its publish's sequence number and the board: a publish that is settled and not refused
//! was applied. When the session ends, a publish not settled by then fails, as
//! [`Error::OutcomeUnknown`] if it was written (the server may have applied it) and as
//! [`Error::Closed`] if it never was.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tether_protocol::CloseReason;

use crate::Error;

/// The outcomes of one session's publishes. Aligned to cache lines of its own: every
/// [`Completion`] counts a reference to it on the application's thread, while the session's
/// reader writes `settled`; in one line the two would take it from each other.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Board {
    /// Every request up to this sequence number is answered.
    settled: AtomicU64,
    /// Whether `state.failures` holds anything. Set before `settled` passes the refused
    /// publish, so a poll that sees its publish settled and this clear needs no lock.
    has_failures: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Refusals not yet taken by their completion.
    failures: HashMap<u64, Error>,
    /// Completions waiting for their outcome, by sequence number.
    waiters: BTreeMap<u64, Waker>,
    /// The session ended: what a publish not settled by then gets.
    ended: Option<Ended>,
}

#[derive(Debug, Clone, Copy)]
enum Ended {
    /// Closed for this reason; publishes up to `written_through` were written on some
    /// connection.
    Closed {
        reason: CloseReason,
        written_through: u64,
    },
    /// The session was dropped unfinished (Tether's runtime shut down while requests were in
    /// flight): nobody can tell whether the server applied them.
    Lost,
}

impl Ended {
    fn error_for(self, seq: u64) -> Error {
        match self {
            Ended::Closed {
                reason,
                written_through,
            } => unanswered(reason, seq <= written_through),
            Ended::Lost => ANSWER_LOST,
        }
    }
}

/// What a request still unanswered when its session closed for `reason` gets: written on some
/// connection, the server may have applied it ([`Error::OutcomeUnknown`]); never written, it
/// certainly was not ([`Error::Closed`]). Every kind of request, publishes and subscriptions.
pub(crate) fn unanswered(reason: CloseReason, written: bool) -> Error {
    if written {
        Error::OutcomeUnknown { reason }
    } else {
        Error::Closed { reason }
    }
}

/// What a request gets whose answer was dropped unsent: Tether's runtime shut down while it was
/// in flight, so nobody can tell whether the server applied it.
pub(crate) const ANSWER_LOST: Error = Error::OutcomeUnknown {
    reason: CloseReason::ClosedByClient,
};

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Board {
    /// The completion of publish `seq`.
    pub(crate) fn completion(self: &Arc<Board>, seq: u64) -> Completion {
        Completion {
            seq,
            board: self.clone(),
            waiting: false,
            done: false,
        }
    }

    /// Every request up to `seq` is answered: wakes the completions this settles.
    pub(crate) fn settle_through(&self, seq: u64) {
        let woken = {
            let mut state = lock(&self.state);
            if seq <= self.settled.load(Ordering::Relaxed) {
                return;
            }
            // Under the lock: a poll that found its publish unsettled has registered its
            // waker before this store can happen.
            self.settled.store(seq, Ordering::Release);
            if state.waiters.is_empty() {
                return;
            }
            let later = state.waiters.split_off(&(seq + 1));
            std::mem::replace(&mut state.waiters, later)
        };
        woken.into_values().for_each(Waker::wake);
    }

    /// Publish `seq` was refused.
    pub(crate) fn fail(&self, seq: u64, error: Error) {
        let waker = {
            let mut state = lock(&self.state);
            state.failures.insert(seq, error);
            self.has_failures.store(true, Ordering::Release);
            state.waiters.remove(&seq)
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The session closed for `reason`: publishes not settled fail. Those up to
    /// `written_through` were written on some connection and may have been applied.
    pub(crate) fn close(&self, reason: CloseReason, written_through: u64) {
        self.end(Ended::Closed {
            reason,
            written_through,
        });
    }

    /// The session is gone without closing: publishes not settled have an unknown outcome.
    pub(crate) fn lose(&self) {
        self.end(Ended::Lost);
    }

    fn end(&self, ended: Ended) {
        let woken = {
            let mut state = lock(&self.state);
            state.ended.get_or_insert(ended);
            std::mem::take(&mut state.waiters)
        };
        woken.into_values().for_each(Waker::wake);
    }

    fn poll(&self, seq: u64, waiting: &mut bool, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if seq <= self.settled.load(Ordering::Acquire) && !self.has_failures.load(Ordering::Acquire)
        {
            return Poll::Ready(Ok(()));
        }
        let mut state = lock(&self.state);
        if let Some(e) = state.failures.remove(&seq) {
            if state.failures.is_empty() {
                self.has_failures.store(false, Ordering::Release);
            }
            return Poll::Ready(Err(e));
        }
        if seq <= self.settled.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        if let Some(ended) = state.ended {
            return Poll::Ready(Err(ended.error_for(seq)));
        }
        state.waiters.insert(seq, cx.waker().clone());
        *waiting = true;
        Poll::Pending
    }

    /// A completion dropped before its outcome: its waker and refusal go.
    fn forget(&self, seq: u64, waiting: bool) {
        if !waiting && !self.has_failures.load(Ordering::Acquire) {
            return;
        }
        let mut state = lock(&self.state);
        state.waiters.remove(&seq);
        if state.failures.remove(&seq).is_some() && state.failures.is_empty() {
            self.has_failures.store(false, Ordering::Release);
        }
    }
}

/// Resolves when a publish queued with [`crate::Session::send`] has been applied or refused.
/// Like Tokio's own channels, each poll counts against the task's budget: a loop that awaits
/// ready completions still yields now and then.
#[derive(Debug)]
pub struct Completion {
    seq: u64,
    board: Arc<Board>,
    /// A waker is registered on the board.
    waiting: bool,
    /// The outcome was returned.
    done: bool,
}

impl std::future::Future for Completion {
    type Output = Result<(), Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Counts against the task's budget, as Tokio's own channels do: a task that awaits
        // ready completions in a loop still yields now and then, and the tasks it woke on its
        // worker (the session's writer, most of all) get to run.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let this = &mut *self;
        let outcome = this.board.poll(this.seq, &mut this.waiting, cx);
        if outcome.is_ready() {
            coop.made_progress();
            this.done = true;
            this.waiting = false;
        }
        outcome
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.done {
            self.board.forget(self.seq, self.waiting);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::future::Future;
    use tether_protocol::{RequestError, RequestErrorKind};

    fn refusal() -> Error {
        Error::Rejected(RequestError {
            kind: RequestErrorKind::AccessDenied,
            message: "no".into(),
        })
    }

    #[test]
    fn settled_publishes_are_applied_and_refused_ones_fail() {
        let board = Arc::new(Board::default());
        let (one, two, three) = (
            board.completion(1),
            board.completion(2),
            board.completion(3),
        );
        board.fail(2, refusal());
        board.settle_through(3);
        assert_eq!(one.now_or_never(), Some(Ok(())));
        assert!(matches!(two.now_or_never(), Some(Err(Error::Rejected(_)))));
        assert_eq!(three.now_or_never(), Some(Ok(())));
        assert!(lock(&board.state).failures.is_empty());
        assert!(!board.has_failures.load(Ordering::Acquire));
    }

    /// A waker that records whether it was woken.
    #[derive(Default)]
    struct Flag(AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// Polls `c` once with a fresh [`Flag`], returning the outcome and the flag.
    fn poll_once(c: &mut Completion) -> (Poll<Result<(), Error>>, Arc<Flag>) {
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        let outcome = Pin::new(c).poll(&mut Context::from_waker(&waker));
        (outcome, flag)
    }

    fn woken(flag: &Flag) -> bool {
        flag.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_waiting_completion_is_woken_by_its_settling_only() {
        let board = Arc::new(Board::default());
        let (mut first, mut second) = (board.completion(1), board.completion(2));
        let (outcome, first_flag) = poll_once(&mut first);
        assert!(outcome.is_pending());
        let (outcome, second_flag) = poll_once(&mut second);
        assert!(outcome.is_pending());
        board.settle_through(1);
        assert!(woken(&first_flag));
        assert!(!woken(&second_flag));
        assert_eq!(poll_once(&mut first).0, Poll::Ready(Ok(())));
        let (outcome, second_flag) = poll_once(&mut second);
        assert!(outcome.is_pending());
        board.settle_through(2);
        assert!(woken(&second_flag));
        assert_eq!(poll_once(&mut second).0, Poll::Ready(Ok(())));
        assert!(lock(&board.state).waiters.is_empty());
    }

    #[test]
    fn an_end_fails_what_is_unsettled_by_whether_it_was_written() {
        let board = Arc::new(Board::default());
        let mut written = board.completion(2);
        let (outcome, flag) = poll_once(&mut written);
        assert!(outcome.is_pending());
        let unwritten = board.completion(3);
        board.settle_through(1);
        board.close(CloseReason::ClosedByServer, 2);
        assert!(woken(&flag));
        assert_eq!(
            poll_once(&mut written).0,
            Poll::Ready(Err(Error::OutcomeUnknown {
                reason: CloseReason::ClosedByServer
            }))
        );
        assert_eq!(
            unwritten.now_or_never(),
            Some(Err(Error::Closed {
                reason: CloseReason::ClosedByServer
            }))
        );
        assert_eq!(board.completion(1).now_or_never(), Some(Ok(())));
        let lost = Arc::new(Board::default());
        let pending = lost.completion(1);
        lost.lose();
        assert_eq!(
            pending.now_or_never(),
            Some(Err(Error::OutcomeUnknown {
                reason: CloseReason::ClosedByClient
            }))
        );
    }

    #[test]
    fn a_dropped_completion_leaves_nothing_behind() {
        let board = Arc::new(Board::default());
        let mut waiting = board.completion(1);
        assert!(poll_once(&mut waiting).0.is_pending());
        drop(waiting);
        let refused = board.completion(2);
        board.fail(2, refusal());
        drop(refused);
        let state = lock(&board.state);
        assert!(state.waiters.is_empty() && state.failures.is_empty());
        assert!(!board.has_failures.load(Ordering::Acquire));
    }
}
