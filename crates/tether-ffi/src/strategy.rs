//! `RECONNECTION_STRATEGY_T`: the seed's C strategy API over the core's strategies.

use std::ffi::{c_char, c_int, c_void};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tether::CloseReason;
use tether::SessionBuilder;
use tether::strategy::{
    AttemptInfo, ConstantDelay, ExponentialBackoff, Jitter, ReconnectionAttempt,
    ReconnectionStrategy,
};
use tracing::warn;

use crate::session::{SessionHandle, UserData, handle_ref};
use crate::state::reason_name;

/// What a user strategy callback decides: `RECONNECTION_ATTEMPT_ACTION_START` or
/// `RECONNECTION_ATTEMPT_ACTION_ABORT`. Any other value aborts (and logs a warning).
pub type AttemptAction = c_int;

/// Make one reconnection attempt now.
pub const RECONNECTION_ATTEMPT_ACTION_START: AttemptAction = 0;
/// Give up: the session closes (`CLOSED_FAILED`, reason `reconnect_aborted`).
pub const RECONNECTION_ATTEMPT_ACTION_ABORT: AttemptAction = 1;

/// How randomness spreads the delays of an exponential backoff (see
/// `make_reconnection_strategy_exponential_backoff`).
pub type JitterValue = c_int;

/// Exactly `min(max_delay, initial × multiplier^(n-1))`.
pub const RECONNECTION_JITTER_NONE: JitterValue = 0;
/// Uniform in `[0, d]`, `d` the delay without jitter.
pub const RECONNECTION_JITTER_FULL: JitterValue = 1;
/// `d/2` plus uniform in `[0, d/2]`.
pub const RECONNECTION_JITTER_EQUAL: JitterValue = 2;
/// Uniform in `[initial, previous × 3]`, capped at the maximum delay.
pub const RECONNECTION_JITTER_DECORRELATED: JitterValue = 3;

/// `retry_after_ms` of a `RECONNECTION_ATTEMPT_INFO_T` when the server gave no hint.
pub const RECONNECTION_NO_RETRY_AFTER: i64 = -1;

/// The facts of a reconnection attempt, filled in by `session_reconnection_attempt_get`.
///
/// Ownership: the struct belongs to the caller (usually on its stack); `last_reason` is a
/// static string owned by the library (never free it).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ReconnectionAttemptInfoC {
    /// 1 for the first attempt after a disconnection, then 2, 3, ...
    pub number: u32,
    /// Milliseconds since the connection was lost.
    pub elapsed_ms: u64,
    /// Milliseconds left before the reconnection timeout closes the session.
    pub remaining_ms: u64,
    /// Why the connection was lost (first attempt) or why the previous attempt failed, as a
    /// stable snake_case name: `"transport_error"`, `"server_draining"` (the server is going
    /// away), `"server_busy"` (it cannot take the session now), ...
    pub last_reason: *const c_char,
    /// How long the server asked the session to wait before trying again, in milliseconds
    /// (with `"server_draining"` or `"server_busy"`), or `RECONNECTION_NO_RETRY_AFTER` (-1)
    /// when it did not. The built-in strategies wait at least that long, spread over
    /// `[hint, 2 × hint)`; a user strategy should too.
    pub retry_after_ms: i64,
}

fn millis_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&AttemptInfo> for ReconnectionAttemptInfoC {
    fn from(info: &AttemptInfo) -> Self {
        ReconnectionAttemptInfoC {
            number: info.number,
            elapsed_ms: millis_u64(info.elapsed),
            remaining_ms: millis_u64(info.remaining),
            last_reason: reason_name(info.last_reason).as_ptr(),
            retry_after_ms: info.retry_after.map_or(RECONNECTION_NO_RETRY_AFTER, |d| {
                i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
            }),
        }
    }
}

/// Fills `info` with the facts of the session's reconnection attempt: inside the strategy
/// callback, the attempt it decides; inside `on_success` / `on_failure`, the attempt that
/// succeeded / failed (its `elapsed_ms` measured then); at any other time, the latest attempt.
/// The facts are recorded for every strategy, the built-in ones included, so after a
/// reconnection they tell what the strategy was given (a drain's `"server_draining"` and hint,
/// say).
///
/// Returns true and fills `info`; false (leaving `info` untouched) when the session has never
/// been handed a reconnection attempt, or `session` or `info` is NULL.
///
/// # Safety
/// `session` is NULL or a live session; `info` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_reconnection_attempt_get(
    session: *const SessionHandle,
    info: *mut ReconnectionAttemptInfoC,
) -> bool {
    crate::boundary::boundary(std::ptr::null_mut(), false, || {
        if info.is_null() {
            return Ok(false);
        }
        // SAFETY: NULL or live, per the contract.
        let h = unsafe { handle_ref(session) }?;
        let Some(latest) = h.latest_attempt() else {
            return Ok(false);
        };
        // SAFETY: not NULL and writable, per the contract; a plain-data write.
        unsafe { info.write(ReconnectionAttemptInfoC::from(&latest)) };
        Ok(true)
    })
}

/// A user strategy: decides whether to make a reconnection attempt.
///
/// Called when the session enters `RECOVERING_RECONNECT`, and again after each failed attempt
/// while the reconnection timeout has not elapsed. Runs on the session's callback thread
/// (never an async worker), so it may block, e.g. `sleep` to wait before the attempt; while it
/// runs, the session's other callbacks wait. `session` is valid during the call; `args` is the
/// pointer given to `make_reconnection_strategy_user_function`. The reconnection timeout runs
/// while the callback blocks: when it elapses the session closes whatever the callback returns.
/// `session_reconnection_attempt_get(session, &info)` tells the attempt's facts: its number, the
/// time since the disconnection and before the timeout, why the connection was lost (or why
/// the previous attempt failed), and the server's retry-after hint (a draining or busy server
/// asks the session to wait that long).
pub type PerformReconnectionCb =
    Option<unsafe extern "C" fn(session: *mut SessionHandle, args: *mut c_void) -> AttemptAction>;

/// Called after a reconnection attempt succeeded (the session is `CONNECTED_ACTIVE` again), on
/// the session's callback thread. `session` is valid during the call;
/// `session_reconnection_attempt_get` tells the facts of the attempt that succeeded.
pub type PerformReconnectionSuccessCb =
    Option<unsafe extern "C" fn(session: *mut SessionHandle, args: *mut c_void)>;

/// Called after a reconnection attempt failed, on the session's callback thread; the strategy
/// callback follows if time remains. `session` is valid during the call;
/// `session_reconnection_attempt_get` tells the facts of the attempt that failed (why it failed
/// is the `last_reason` of the next strategy call).
pub type PerformReconnectionFailureCb =
    Option<unsafe extern "C" fn(session: *mut SessionHandle, args: *mut c_void)>;

/// A reconnection strategy and timeout, to pass to `session_create`. Opaque.
///
/// Ownership: made by a `make_reconnection_strategy_*` function, owned by the caller, released
/// with `free_reconnection_strategy` (or `free()`: it is one `malloc`ed block holding no other
/// allocation). `session_create` copies it, so it may be freed as soon as `session_create`
/// returns; the `args` pointer of a user strategy is not copied and must stay valid while any
/// session made with it may call back (until `session_free` returns).
#[derive(Clone, Copy)]
pub struct ReconnectionStrategyC {
    kind: Kind,
    timeout_ms: Option<u32>,
}

// free() must be enough to release a strategy: nothing in it may need dropping.
const _: () = assert!(!std::mem::needs_drop::<ReconnectionStrategyC>());

#[derive(Clone, Copy)]
enum Kind {
    Default,
    AbortImmediately,
    User {
        perform: unsafe extern "C" fn(*mut SessionHandle, *mut c_void) -> AttemptAction,
        args: UserData,
        on_success: PerformReconnectionSuccessCb,
        on_failure: PerformReconnectionFailureCb,
    },
    Repeating {
        count: u32,
        delay_ms: u32,
    },
    Backoff {
        initial_ms: u32,
        multiplier: f64,
        max_ms: u32,
        jitter: Jitter,
        max_attempts: u32,
    },
}

/// One `malloc`ed strategy, or NULL when memory is exhausted.
fn allocate(kind: Kind) -> *mut ReconnectionStrategyC {
    // SAFETY: malloc has no preconditions; its result is checked for NULL. malloc's alignment
    // suits any fundamental type, which is all the struct contains.
    let p = unsafe { libc::malloc(std::mem::size_of::<ReconnectionStrategyC>()) }
        .cast::<ReconnectionStrategyC>();
    if !p.is_null() {
        // SAFETY: `p` is a fresh, suitably aligned block of the right size.
        unsafe {
            p.write(ReconnectionStrategyC {
                kind,
                timeout_ms: None,
            })
        };
    }
    p
}

/// A strategy that asks `callback` what to do before each attempt, as in the seed's C API.
///
/// `callback` (required) returns `RECONNECTION_ATTEMPT_ACTION_START` or `_ABORT` and may block
/// to wait before the attempt. `on_success` and `on_failure` (both optional) are called after
/// each successful or failed attempt. All three receive `args`, which the library never reads.
/// Every callback runs on the session's callback thread, one at a time: `args` needs no lock
/// unless your own threads use it too. Returns NULL when `callback` is NULL.
///
/// Ownership: the caller owns the result (see `RECONNECTION_STRATEGY_T`) and `args`.
#[unsafe(no_mangle)]
pub extern "C" fn make_reconnection_strategy_user_function(
    callback: PerformReconnectionCb,
    args: *mut c_void,
    on_success: PerformReconnectionSuccessCb,
    on_failure: PerformReconnectionFailureCb,
) -> *mut ReconnectionStrategyC {
    crate::boundary::boundary(std::ptr::null_mut(), std::ptr::null_mut(), || {
        Ok(match callback {
            Some(perform) => allocate(Kind::User {
                perform,
                args: UserData(args),
                on_success,
                on_failure,
            }),
            None => std::ptr::null_mut(),
        })
    })
}

/// The library's default strategy: the first attempt after a random 0–100 ms, then
/// exponential backoff with full jitter from 250 ms, doubling, capped at 10 s. Combine it with
/// `reconnection_strategy_set_timeout` to change only the timeout.
///
/// Ownership: the caller owns the result (see `RECONNECTION_STRATEGY_T`).
#[unsafe(no_mangle)]
pub extern "C" fn make_reconnection_strategy_default() -> *mut ReconnectionStrategyC {
    crate::boundary::boundary(std::ptr::null_mut(), std::ptr::null_mut(), || {
        Ok(allocate(Kind::Default))
    })
}

/// A strategy that never reconnects: the first attempt aborts (the session closes,
/// `CLOSED_FAILED`, reason `reconnect_aborted`).
///
/// Ownership: the caller owns the result (see `RECONNECTION_STRATEGY_T`).
#[unsafe(no_mangle)]
pub extern "C" fn make_reconnection_strategy_abort_immediately() -> *mut ReconnectionStrategyC {
    crate::boundary::boundary(std::ptr::null_mut(), std::ptr::null_mut(), || {
        Ok(allocate(Kind::AbortImmediately))
    })
}

/// A strategy that makes an attempt every `delay_ms` milliseconds (0: at once), at most `count`
/// times (0: no limit other than the reconnection timeout), then aborts.
///
/// Ownership: the caller owns the result (see `RECONNECTION_STRATEGY_T`).
#[unsafe(no_mangle)]
pub extern "C" fn make_reconnection_strategy_repeating_attempt(
    count: u32,
    delay_ms: u32,
) -> *mut ReconnectionStrategyC {
    crate::boundary::boundary(std::ptr::null_mut(), std::ptr::null_mut(), || {
        Ok(allocate(Kind::Repeating { count, delay_ms }))
    })
}

/// An exponential backoff: attempt n waits `min(max_delay_ms, initial_delay_ms ×
/// multiplier^(n-1))`, spread by `jitter` (a `RECONNECTION_JITTER_*` value); after
/// `max_attempts` attempts (0: no limit other than the reconnection timeout) it aborts.
///
/// Returns NULL when `multiplier` is not a finite number ≥ 1 or `jitter` is not a
/// `RECONNECTION_JITTER_*` value. Ownership: the caller owns the result (see
/// `RECONNECTION_STRATEGY_T`).
#[unsafe(no_mangle)]
pub extern "C" fn make_reconnection_strategy_exponential_backoff(
    initial_delay_ms: u32,
    multiplier: f64,
    max_delay_ms: u32,
    jitter: JitterValue,
    max_attempts: u32,
) -> *mut ReconnectionStrategyC {
    crate::boundary::boundary(std::ptr::null_mut(), std::ptr::null_mut(), || {
        let jitter = match jitter {
            RECONNECTION_JITTER_NONE => Jitter::None,
            RECONNECTION_JITTER_FULL => Jitter::Full,
            RECONNECTION_JITTER_EQUAL => Jitter::Equal,
            RECONNECTION_JITTER_DECORRELATED => Jitter::Decorrelated,
            _ => return Ok(std::ptr::null_mut()),
        };
        if !(multiplier.is_finite() && multiplier >= 1.0) {
            return Ok(std::ptr::null_mut());
        }
        Ok(allocate(Kind::Backoff {
            initial_ms: initial_delay_ms,
            multiplier,
            max_ms: max_delay_ms,
            jitter,
            max_attempts,
        }))
    })
}

/// Sets how long a disconnected session keeps trying to reconnect, in milliseconds (the
/// library's default, when never set, is 60 s; the server may impose a shorter maximum).
/// When it elapses the session closes (`CLOSED_FAILED`, reason `reconnect_timeout`) whatever
/// the strategy is doing. 0 disables reconnection: a lost connection closes the session.
/// NULL is ignored.
///
/// # Safety
/// `strategy` is NULL or a live strategy from a `make_reconnection_strategy_*` function, not
/// used by another thread during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reconnection_strategy_set_timeout(
    strategy: *mut ReconnectionStrategyC,
    timeout_ms: u32,
) {
    crate::boundary::boundary(std::ptr::null_mut(), (), || {
        // SAFETY: NULL or a live strategy we allocated, per the contract.
        if let Some(s) = unsafe { strategy.as_mut() } {
            s.timeout_ms = Some(timeout_ms);
        }
        Ok(())
    })
}

/// Releases a strategy (equivalent to `free()`). Sessions created with it are not affected.
/// NULL is ignored.
///
/// # Safety
/// `strategy` is NULL or was returned by a `make_reconnection_strategy_*` function and not
/// freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free_reconnection_strategy(strategy: *mut ReconnectionStrategyC) {
    crate::boundary::boundary(std::ptr::null_mut(), (), || {
        // SAFETY: NULL or our malloc'ed block, once; it holds nothing that needs dropping.
        unsafe { libc::free(strategy.cast()) };
        Ok(())
    })
}

impl ReconnectionStrategyC {
    /// Applies the strategy and timeout to a session being built for `session`.
    pub(crate) fn configure(
        &self,
        builder: SessionBuilder,
        session: Weak<SessionHandle>,
    ) -> SessionBuilder {
        let builder = match self.timeout_ms {
            Some(ms) => builder.reconnection_timeout(Duration::from_millis(ms.into())),
            None => builder,
        };
        let strategy: Arc<dyn ReconnectionStrategy> = match self.kind {
            Kind::Default => tether::strategy::default_strategy(),
            Kind::AbortImmediately => Arc::new(tether::strategy::AbortImmediately),
            Kind::User {
                perform,
                args,
                on_success,
                on_failure,
            } => Arc::new(UserStrategy {
                perform,
                args,
                on_success,
                on_failure,
                session: session.clone(),
            }),
            Kind::Repeating { count, delay_ms } => {
                let s = ConstantDelay::new(Duration::from_millis(delay_ms.into()));
                (if count > 0 { s.max_attempts(count) } else { s }).into_strategy()
            }
            Kind::Backoff {
                initial_ms,
                multiplier,
                max_ms,
                jitter,
                max_attempts,
            } => {
                let s = ExponentialBackoff::new(
                    Duration::from_millis(initial_ms.into()),
                    multiplier,
                    Duration::from_millis(max_ms.into()),
                )
                .jitter(jitter);
                (if max_attempts > 0 {
                    s.max_attempts(max_attempts)
                } else {
                    s
                })
                .into_strategy()
            }
        };
        builder.reconnection_strategy(Recorded { strategy, session })
    }
}

/// The library's default strategy and timeout, as `session_create` uses them for a NULL
/// strategy.
pub(crate) const DEFAULT_STRATEGY: ReconnectionStrategyC = ReconnectionStrategyC {
    kind: Kind::Default,
    timeout_ms: None,
};

/// Records the facts of every attempt on the session (for `session_reconnection_attempt_get`)
/// before the strategy sees it, on the session's callback thread, whatever the strategy.
struct Recorded {
    strategy: Arc<dyn ReconnectionStrategy>,
    session: Weak<SessionHandle>,
}

impl Recorded {
    fn record(&self, info: &AttemptInfo) {
        if let Some(h) = self.session.upgrade() {
            h.record_attempt(info);
        }
    }
}

impl ReconnectionStrategy for Recorded {
    fn perform_reconnection(&self, attempt: ReconnectionAttempt) {
        self.record(attempt.info());
        self.strategy.perform_reconnection(attempt);
    }

    fn on_success(&self, attempt: &AttemptInfo) {
        self.record(attempt);
        self.strategy.on_success(attempt);
    }

    fn on_failure(&self, attempt: &AttemptInfo, reason: CloseReason) {
        self.record(attempt);
        self.strategy.on_failure(attempt, reason);
    }
}

/// The core strategy behind a user function: the core calls it on the session's callback
/// thread (a blocking-pool thread), so the C callback may block; its answer decides the attempt.
struct UserStrategy {
    perform: unsafe extern "C" fn(*mut SessionHandle, *mut c_void) -> AttemptAction,
    args: UserData,
    on_success: PerformReconnectionSuccessCb,
    on_failure: PerformReconnectionFailureCb,
    session: Weak<SessionHandle>,
}

impl ReconnectionStrategy for UserStrategy {
    fn perform_reconnection(&self, attempt: ReconnectionAttempt) {
        let (perform, args) = (self.perform, self.args);
        let action = self.session.upgrade().and_then(|h| {
            h.run_callback(
                || true,
                // SAFETY: a C function pointer the user registered for exactly this call, with
                // the session (valid during the call) and the user's own `args`.
                |session| unsafe { perform(session, args.ptr()) },
            )
        });
        match action {
            Some(RECONNECTION_ATTEMPT_ACTION_START) => {
                attempt.start();
            }
            Some(RECONNECTION_ATTEMPT_ACTION_ABORT) => {
                attempt.abort();
            }
            Some(other) => {
                warn!(
                    value = other,
                    "the strategy callback returned neither START nor ABORT: aborting"
                );
                attempt.abort();
            }
            // The session is being freed (or the callback could not run): nothing to resume.
            None => {
                attempt.abort();
            }
        }
    }

    fn on_success(&self, _attempt: &AttemptInfo) {
        self.notify(self.on_success);
    }

    fn on_failure(&self, _attempt: &AttemptInfo, _reason: CloseReason) {
        self.notify(self.on_failure);
    }
}

impl UserStrategy {
    fn notify(&self, cb: PerformReconnectionSuccessCb) {
        let (Some(cb), Some(h)) = (cb, self.session.upgrade()) else {
            return;
        };
        let args = self.args;
        h.run_callback(
            || true,
            // SAFETY: the user's callback, called as documented with a session valid during the
            // call and the user's `args`.
            |session| unsafe { cb(session, args.ptr()) },
        );
    }
}
