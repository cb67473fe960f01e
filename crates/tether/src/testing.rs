//! Test a reconnection strategy without a network, on a virtual clock.
//!
//! [`StrategyHarness`] plays the session's part: it calls the strategy with attempt 1, lets
//! virtual time pass for every [`ReconnectionAttempt::start_after`] (or any timer the strategy
//! schedules through the attempt), answers each `start()` with the next scripted
//! [`Outcome`], and stops at success, abort, or the reconnection timeout, exactly as a real
//! session would. Nothing sleeps: a 10-minute backoff runs in microseconds.
//!
//! ```
//! use std::time::Duration;
//! use tether::strategy::{ExponentialBackoff, Jitter};
//! use tether::testing::{Outcome, StrategyHarness, End};
//! use tether::CloseReason;
//!
//! let strategy = ExponentialBackoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(1))
//!     .jitter(Jitter::None)
//!     .into_strategy();
//! let report = StrategyHarness::new(strategy, Duration::from_secs(60)).run([
//!     Outcome::Fail(CloseReason::ConnectionError),
//!     Outcome::Fail(CloseReason::ConnectionError),
//!     Outcome::Succeed,
//! ]);
//! assert_eq!(report.end, End::Reconnected);
//! let delays: Vec<_> = report.attempts.iter().map(|a| a.delay).collect();
//! assert_eq!(delays, [Duration::from_millis(100), Duration::from_millis(200), Duration::from_millis(400)]);
//! ```
//!
//! Strategies that call `start()` from their own threads after real time has passed (a
//! `ScheduledExecutorService`, say) cannot be driven on a virtual clock; the harness sees them as
//! never deciding. Test those end to end against a server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_protocol::CloseReason;
use tokio::sync::oneshot;

use crate::strategy::{AttemptInfo, Decision, ReconnectionAttempt, ReconnectionStrategy, Timer};

/// What a scripted reconnection attempt does when the strategy starts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The attempt fails for this reason (the strategy is called again if time remains).
    Fail(CloseReason),
    /// The server refuses the attempt for this reason and asks to be retried after the
    /// duration (`503` with `Retry-After`).
    RetryAfter(CloseReason, Duration),
    /// The attempt succeeds.
    Succeed,
}

/// One attempt the strategy started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// Attempt number.
    pub number: u32,
    /// Virtual time from the call to the strategy until it started the attempt.
    pub delay: Duration,
    /// Virtual time since the disconnection when the attempt started.
    pub at: Duration,
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// An attempt succeeded.
    Reconnected,
    /// The strategy aborted (the session would close with `reconnect_aborted`).
    Aborted,
    /// The reconnection timeout elapsed (the session would close with `reconnect_timeout`).
    TimedOut,
    /// A scripted failure does not allow reconnection (e.g. `unknown_session`).
    Failed(CloseReason),
}

/// The result of [`StrategyHarness::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Attempts started, in order.
    pub attempts: Vec<AttemptRecord>,
    /// Number of times the strategy was called.
    pub calls: u32,
    /// `on_success` / `on_failure` calls.
    pub successes: u32,
    /// `on_failure` calls.
    pub failures: u32,
    /// How it ended.
    pub end: End,
    /// Virtual time since the disconnection at the end.
    pub elapsed: Duration,
}

type Task = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct ClockState {
    now: Duration,
    seq: u64,
    tasks: BTreeMap<(Duration, u64), Task>,
}

/// A virtual clock that implements [`Timer`].
#[derive(Default, Clone)]
pub struct VirtualClock {
    state: Arc<Mutex<ClockState>>,
}

impl VirtualClock {
    /// The current virtual time.
    pub fn now(&self) -> Duration {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).now
    }

    /// Runs the earliest pending task, advancing time to it, if it is due by `limit`.
    /// Returns `false` when nothing is due.
    pub fn run_next(&self, limit: Duration) -> bool {
        let task = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let Some((&key, _)) = s.tasks.iter().next() else {
                return false;
            };
            if key.0 > limit {
                return false;
            }
            s.now = s.now.max(key.0);
            s.tasks.remove(&key)
        };
        // Run outside the lock: the task may schedule more.
        if let Some(task) = task {
            task();
        }
        true
    }

    fn advance_to(&self, t: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.now = s.now.max(t);
    }

    fn clear(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tasks
            .clear();
    }
}

impl Timer for VirtualClock {
    fn schedule(&self, delay: Duration, f: Box<dyn FnOnce() + Send>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.seq += 1;
        let key = (s.now + delay, s.seq);
        s.tasks.insert(key, f);
    }
}

/// Drives a strategy through scripted outcomes on a virtual clock.
pub struct StrategyHarness {
    strategy: Arc<dyn ReconnectionStrategy>,
    timeout: Duration,
    clock: VirtualClock,
    first_reason: CloseReason,
    first_hint: Option<Duration>,
}

impl StrategyHarness {
    /// A harness for `strategy` with the session's reconnection timeout.
    pub fn new(strategy: Arc<dyn ReconnectionStrategy>, reconnect_timeout: Duration) -> Self {
        StrategyHarness {
            strategy,
            timeout: reconnect_timeout,
            clock: VirtualClock::default(),
            first_reason: CloseReason::TransportError,
            first_hint: None,
        }
    }

    /// The reason the (virtual) connection was lost; `transport_error` by default.
    pub fn disconnected_because(mut self, reason: CloseReason) -> Self {
        self.first_reason = reason;
        self
    }

    /// The server sent the session away (`reason`, e.g. `server_draining`) asking it to come
    /// back after `retry_after`.
    pub fn sent_away(mut self, reason: CloseReason, retry_after: Duration) -> Self {
        self.first_reason = reason;
        self.first_hint = Some(retry_after);
        self
    }

    /// The harness's clock (a strategy under test may schedule on it directly).
    pub fn clock(&self) -> VirtualClock {
        self.clock.clone()
    }

    /// Runs one recovery: attempts answer with `outcomes` in order (`Succeed` once they run
    /// out).
    pub fn run(&self, outcomes: impl IntoIterator<Item = Outcome>) -> Report {
        let mut outcomes = outcomes.into_iter();
        let mut report = Report {
            attempts: Vec::new(),
            calls: 0,
            successes: 0,
            failures: 0,
            end: End::TimedOut,
            elapsed: Duration::ZERO,
        };
        let mut number = 1;
        let mut last_reason = self.first_reason;
        let mut last_hint = self.first_hint;
        let start = self.clock.now();
        let deadline = start + self.timeout;
        loop {
            let called_at = self.clock.now();
            let info = AttemptInfo {
                number,
                elapsed: called_at - start,
                remaining: deadline.saturating_sub(called_at),
                last_reason,
                retry_after: last_hint,
            };
            let (tx, mut rx) = oneshot::channel();
            let timer: Arc<dyn Timer> = Arc::new(self.clock.clone());
            report.calls += 1;
            self.strategy
                .perform_reconnection(ReconnectionAttempt::new(info.clone(), tx, timer));
            let decision = loop {
                match rx.try_recv() {
                    Ok(d) => break Some(d),
                    Err(oneshot::error::TryRecvError::Closed) => break None,
                    Err(oneshot::error::TryRecvError::Empty) => {
                        if !self.clock.run_next(deadline) {
                            break None;
                        }
                    }
                }
            };
            match decision {
                None => {
                    self.clock.advance_to(deadline);
                    report.end = End::TimedOut;
                    break;
                }
                Some(Decision::Abort) => {
                    report.end = End::Aborted;
                    break;
                }
                Some(Decision::Start) => {
                    let now = self.clock.now();
                    report.attempts.push(AttemptRecord {
                        number,
                        delay: now - called_at,
                        at: now - start,
                    });
                    let info = AttemptInfo {
                        elapsed: now - start,
                        remaining: deadline.saturating_sub(now),
                        ..info
                    };
                    let outcome = outcomes.next().unwrap_or(Outcome::Succeed);
                    let outcome_hint = match outcome {
                        Outcome::RetryAfter(_, h) => Some(h),
                        _ => None,
                    };
                    match outcome {
                        Outcome::Succeed => {
                            report.successes += 1;
                            self.strategy.on_success(&info);
                            report.end = End::Reconnected;
                            break;
                        }
                        Outcome::Fail(reason) | Outcome::RetryAfter(reason, _) => {
                            report.failures += 1;
                            self.strategy.on_failure(&info, reason);
                            if !reason.allows_reconnect() {
                                report.end = End::Failed(reason);
                                break;
                            }
                            last_reason = reason;
                            last_hint = outcome_hint;
                            number += 1;
                        }
                    }
                }
            }
        }
        // Timers left behind would fire into a finished recovery: drop them, as a session does.
        self.clock.clear();
        report.elapsed = self.clock.now() - start;
        report
    }
}
