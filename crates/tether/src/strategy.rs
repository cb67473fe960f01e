//! Reconnection strategies: who decides when a lost session tries again.
//!
//! When a session loses its connection (and reconnection is enabled), it enters
//! `RECOVERING_RECONNECT` and hands its strategy a [`ReconnectionAttempt`]. The strategy calls
//! [`ReconnectionAttempt::start`] (try now), [`ReconnectionAttempt::start_after`] (try after a
//! delay) or [`ReconnectionAttempt::abort`] (give up: the session closes with reason
//! `reconnect_aborted`). The first call wins; later calls, calls from other threads and calls
//! after the session closed are harmless. After each failed attempt the strategy is called again
//! with the next attempt, until the session's reconnection timeout elapses, whatever the
//! strategy is doing.
//!
//! Strategies run on a thread of the session's callback executor, never on an async worker,
//! so a strategy may block (a C strategy often does). Built-ins: [`ConstantDelay`],
//! [`ExponentialBackoff`] (with [`Jitter`] and optional attempt limit), [`AbortImmediately`],
//! and [`default_strategy`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tether_protocol::CloseReason;
use tether_protocol::schedule::{self, Backoff, Constant};
use tokio::sync::oneshot;

/// Read-only facts about one reconnection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptInfo {
    /// 1 for the first attempt after a disconnection, then 2, 3, ...
    pub number: u32,
    /// Time since the connection was lost.
    pub elapsed: Duration,
    /// Time left before the reconnection timeout closes the session.
    pub remaining: Duration,
    /// Why the connection was lost (first attempt) or why the previous attempt failed.
    pub last_reason: CloseReason,
    /// How long the server asked the session to wait before trying again, when it did (it is
    /// going away: `server_draining`; or it is busy: `server_busy`). The built-in strategies
    /// wait at least this long, spread with jitter (see [`honour_retry_after`]).
    pub retry_after: Option<Duration>,
}

/// What the strategy decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Make one reconnection attempt now.
    Start,
    /// Close the session (reason `reconnect_aborted`).
    Abort,
}

/// Runs a closure after a delay: the session's runtime in production, a virtual clock in
/// [`crate::testing`].
pub trait Timer: Send + Sync {
    /// Calls `f` once `delay` has passed.
    fn schedule(&self, delay: Duration, f: Box<dyn FnOnce() + Send>);
}

struct AttemptInner {
    info: AttemptInfo,
    decision: Mutex<Option<oneshot::Sender<Decision>>>,
    timer: Arc<dyn Timer>,
}

/// One reconnection attempt, handed to a strategy. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct ReconnectionAttempt {
    inner: Arc<AttemptInner>,
}

impl std::fmt::Debug for ReconnectionAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectionAttempt")
            .field("info", &self.inner.info)
            .field("decided", &self.is_decided())
            .finish()
    }
}

impl ReconnectionAttempt {
    /// An attempt whose decision goes to `decision`.
    pub fn new(
        info: AttemptInfo,
        decision: oneshot::Sender<Decision>,
        timer: Arc<dyn Timer>,
    ) -> Self {
        ReconnectionAttempt {
            inner: Arc::new(AttemptInner {
                info,
                decision: Mutex::new(Some(decision)),
                timer,
            }),
        }
    }

    fn decide(&self, d: Decision) -> bool {
        let sender = self
            .inner
            .decision
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match sender {
            // The session may have closed meanwhile: then nobody listens, and that is fine.
            Some(tx) => tx.send(d).is_ok(),
            None => false,
        }
    }

    /// Makes the reconnection attempt now. Returns `true` if this call decided the attempt.
    pub fn start(&self) -> bool {
        self.decide(Decision::Start)
    }

    /// Gives up: the session closes with reason `reconnect_aborted`. Returns `true` if this
    /// call decided the attempt.
    pub fn abort(&self) -> bool {
        self.decide(Decision::Abort)
    }

    /// Calls [`ReconnectionAttempt::start`] after `delay`, without blocking the caller.
    pub fn start_after(&self, delay: Duration) {
        let attempt = self.clone();
        self.inner.timer.schedule(
            delay,
            Box::new(move || {
                attempt.start();
            }),
        );
    }

    /// Whether `start` or `abort` has been called (or the session stopped waiting).
    pub fn is_decided(&self) -> bool {
        self.inner
            .decision
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|tx| tx.is_closed())
    }

    /// The attempt's facts.
    pub fn info(&self) -> &AttemptInfo {
        &self.inner.info
    }
    /// Attempt number (1, 2, 3, ...).
    pub fn number(&self) -> u32 {
        self.inner.info.number
    }
    /// Time since the connection was lost.
    pub fn elapsed(&self) -> Duration {
        self.inner.info.elapsed
    }
    /// Time before the reconnection timeout.
    pub fn remaining(&self) -> Duration {
        self.inner.info.remaining
    }
    /// The last disconnection or failure reason.
    pub fn last_reason(&self) -> CloseReason {
        self.inner.info.last_reason
    }
    /// The server's hint of how long to wait (with `server_draining` or `server_busy`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.info.retry_after
    }
}

/// Decides when a session in `RECOVERING_RECONNECT` tries again.
///
/// Closures `Fn(ReconnectionAttempt)` are strategies too.
pub trait ReconnectionStrategy: Send + Sync + 'static {
    /// Called on entering `RECOVERING_RECONNECT` and after each failed attempt while time
    /// remains. Decide now or later, from any thread.
    fn perform_reconnection(&self, attempt: ReconnectionAttempt);
    /// Called after an attempt succeeded (the session is `CONNECTED_ACTIVE` again).
    fn on_success(&self, _attempt: &AttemptInfo) {}
    /// Called after an attempt failed; `perform_reconnection` follows if time remains.
    fn on_failure(&self, _attempt: &AttemptInfo, _reason: CloseReason) {}
}

impl<F> ReconnectionStrategy for F
where
    F: Fn(ReconnectionAttempt) + Send + Sync + 'static,
{
    fn perform_reconnection(&self, attempt: ReconnectionAttempt) {
        self(attempt)
    }
}

/// A strategy that waits a computed delay and then starts, or aborts when the delay function
/// says `None`. The built-ins are all of this kind.
pub trait DelayStrategy: Send + Sync + 'static {
    /// The delay before attempt `info.number`, or `None` to abort.
    fn next_delay(&self, info: &AttemptInfo) -> Option<Duration>;
    /// Forget state after a successful reconnection.
    fn reset(&self) {}
}

/// The delay a strategy chose, made to respect the server's retry-after hint: at least the
/// hint, plus a uniform random share of it, so that the thousands of sessions a draining
/// server sends away come back spread over `[hint, 2 × hint)` rather than in one millisecond.
pub fn honour_retry_after(delay: Duration, info: &AttemptInfo) -> Duration {
    schedule::honour_retry_after(delay, info.retry_after, || rand::rng().random::<f64>())
}

/// Carries out a [`DelayStrategy`]'s decision for one attempt (respecting the server's
/// retry-after hint: see [`honour_retry_after`]).
pub fn apply_delay(strategy: &dyn DelayStrategy, attempt: ReconnectionAttempt) {
    match strategy
        .next_delay(attempt.info())
        .map(|d| honour_retry_after(d, attempt.info()))
    {
        Some(d) if d.is_zero() => {
            attempt.start();
        }
        Some(d) => attempt.start_after(d),
        None => {
            attempt.abort();
        }
    }
}

/// Adapts any [`DelayStrategy`] to [`ReconnectionStrategy`].
pub struct Delayed<D>(pub D);

impl<D: DelayStrategy> ReconnectionStrategy for Delayed<D> {
    fn perform_reconnection(&self, attempt: ReconnectionAttempt) {
        apply_delay(&self.0, attempt);
    }
    fn on_success(&self, _attempt: &AttemptInfo) {
        self.0.reset();
    }
}

macro_rules! delay_strategy {
    ($t:ty) => {
        impl ReconnectionStrategy for $t {
            fn perform_reconnection(&self, attempt: ReconnectionAttempt) {
                apply_delay(self, attempt);
            }
            fn on_success(&self, _attempt: &AttemptInfo) {
                self.reset();
            }
        }
    };
}

delay_strategy!(ConstantDelay);
delay_strategy!(ExponentialBackoff);

/// Try again after the same delay every time, optionally at most `max_attempts` times.
#[derive(Debug, Clone)]
pub struct ConstantDelay(Constant);

impl ConstantDelay {
    /// A constant delay (zero is allowed: retry at once).
    pub fn new(delay: Duration) -> Self {
        ConstantDelay(Constant::new(delay))
    }
    /// Abort instead of making attempt number `n + 1`.
    pub fn max_attempts(self, n: u32) -> Self {
        ConstantDelay(self.0.max_attempts(n))
    }
    /// As a shared [`ReconnectionStrategy`].
    pub fn into_strategy(self) -> Arc<dyn ReconnectionStrategy> {
        Arc::new(self)
    }
}

impl DelayStrategy for ConstantDelay {
    fn next_delay(&self, info: &AttemptInfo) -> Option<Duration> {
        self.0.next_delay(info.number)
    }
}

pub use tether_protocol::schedule::Jitter;

/// Exponential backoff with jitter and an optional attempt limit (the schedule is
/// [`tether_protocol::schedule::Backoff`], shared with the browser client).
#[derive(Debug)]
pub struct ExponentialBackoff {
    state: Mutex<BackoffState>,
}

#[derive(Debug)]
struct BackoffState {
    rng: StdRng,
    schedule: Backoff,
}

impl Default for ExponentialBackoff {
    /// 250 ms, × 2, up to 10 s, full jitter ([`Backoff::default`]).
    fn default() -> Self {
        ExponentialBackoff::from_schedule(Backoff::default())
    }
}

impl ExponentialBackoff {
    /// The first delay when none is given (250 ms): what the bindings fill in.
    pub const DEFAULT_INITIAL: Duration = Backoff::DEFAULT_INITIAL;
    /// The factor between delays when none is given (2).
    pub const DEFAULT_MULTIPLIER: f64 = Backoff::DEFAULT_MULTIPLIER;
    /// The largest delay when none is given (10 s).
    pub const DEFAULT_MAX_DELAY: Duration = Backoff::DEFAULT_MAX_DELAY;

    /// Delays `initial`, `initial × multiplier`, ... capped at `max_delay`; full jitter.
    pub fn new(initial: Duration, multiplier: f64, max_delay: Duration) -> Self {
        ExponentialBackoff::from_schedule(Backoff::new(initial, multiplier, max_delay))
    }
    fn from_schedule(schedule: Backoff) -> Self {
        ExponentialBackoff {
            state: Mutex::new(BackoffState {
                rng: StdRng::from_os_rng(),
                schedule,
            }),
        }
    }
    /// Changes the schedule (the builder methods below).
    fn with(mut self, change: impl FnOnce(Backoff) -> Backoff) -> Self {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        state.schedule = change(state.schedule.clone());
        self
    }
    /// The jitter mode.
    pub fn jitter(self, jitter: Jitter) -> Self {
        self.with(|s| s.jitter(jitter))
    }
    /// Abort instead of making attempt number `n + 1`.
    pub fn max_attempts(self, n: u32) -> Self {
        self.with(|s| s.max_attempts(n))
    }
    /// Make the first attempt after a uniform random delay in `[0, max]` (a blip usually heals
    /// at once), and back off from the second attempt on.
    pub fn quick_first_attempt(self, max: Duration) -> Self {
        self.with(|s| s.quick_first_attempt(max))
    }
    /// A fixed random seed, for reproducible tests.
    pub fn seed(self, seed: u64) -> Self {
        if let Ok(mut s) = self.state.lock() {
            s.rng = StdRng::seed_from_u64(seed);
        }
        self
    }
    /// As a shared [`ReconnectionStrategy`].
    pub fn into_strategy(self) -> Arc<dyn ReconnectionStrategy> {
        Arc::new(self)
    }
}

impl DelayStrategy for ExponentialBackoff {
    fn next_delay(&self, info: &AttemptInfo) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let BackoffState { rng, schedule } = &mut *state;
        schedule.next_delay(info.number, &mut |low, high| rng.random_range(low..=high))
    }

    fn reset(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.schedule.reset();
    }
}

/// Never reconnect: the first attempt aborts.
#[derive(Debug, Clone, Copy, Default)]
pub struct AbortImmediately;

impl ReconnectionStrategy for AbortImmediately {
    fn perform_reconnection(&self, attempt: ReconnectionAttempt) {
        attempt.abort();
    }
}

/// The default strategy: the first attempt after a random 0–100 ms (fast when the network
/// blips), then exponential backoff with full jitter from 250 ms, doubling, capped at 10 s
/// (gentle on a restarting server).
pub fn default_backoff() -> ExponentialBackoff {
    ExponentialBackoff::from_schedule(Backoff::recommended())
}

/// [`default_backoff`] as a strategy.
pub fn default_strategy() -> Arc<dyn ReconnectionStrategy> {
    default_backoff().into_strategy()
}
