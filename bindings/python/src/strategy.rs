//! Reconnection strategies from Python: the attempt object, the built-ins, and the adapter that
//! hands attempts to a Python callable.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use tether::strategy::{self, AttemptInfo as CoreAttemptInfo, Jitter};
use tether::{CloseReason, ReconnectionAttempt, ReconnectionStrategy};

use crate::convert;

/// One reconnection attempt. `start()`/`abort()` may be called from any thread, at any later
/// time; the first call decides, later ones return `False`.
#[pyclass(frozen, module = "tether._tether", name = "ReconnectionAttempt")]
pub(crate) struct Attempt(ReconnectionAttempt);

#[pymethods]
impl Attempt {
    /// Makes the reconnection attempt now; `True` if this call decided the attempt.
    fn start(&self) -> bool {
        self.0.start()
    }

    /// Gives up: the session closes with reason `reconnect_aborted`; `True` if this call
    /// decided the attempt.
    fn abort(&self) -> bool {
        self.0.abort()
    }

    /// Calls `start()` after `delay` seconds, on Tether's runtime (no event loop needed).
    fn start_after(&self, py: Python<'_>, delay: f64) -> PyResult<()> {
        let delay = convert::seconds(py, "delay", delay)?;
        self.0.start_after(delay);
        Ok(())
    }

    /// 1 for the first attempt after a disconnection, then 2, 3, ...
    #[getter]
    fn number(&self) -> u32 {
        self.0.number()
    }

    /// Seconds since the connection was lost.
    #[getter]
    fn elapsed(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }

    /// Seconds left before the reconnection timeout closes the session.
    #[getter]
    fn remaining(&self) -> f64 {
        self.0.remaining().as_secs_f64()
    }

    /// Why the connection was lost (first attempt) or why the previous attempt failed.
    #[getter]
    fn reason<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::close_reason(py, self.0.last_reason())
    }

    /// Seconds the server asked the session to wait before trying again (with
    /// `server_draining` or `server_busy`), or `None` when it did not.
    #[getter]
    fn retry_after(&self) -> Option<f64> {
        self.0.retry_after().map(|d| d.as_secs_f64())
    }

    /// Whether `start()` or `abort()` was called (or the session stopped waiting).
    #[getter]
    fn is_decided(&self) -> bool {
        self.0.is_decided()
    }

    fn __repr__(&self) -> String {
        format!(
            "ReconnectionAttempt(number={}, elapsed={:.3}, remaining={:.3}, reason='{}', retry_after={}, decided={})",
            self.0.number(),
            self.0.elapsed().as_secs_f64(),
            self.0.remaining().as_secs_f64(),
            self.0.last_reason(),
            self.0
                .retry_after()
                .map_or_else(|| "None".to_owned(), |d| format!("{:.3}", d.as_secs_f64())),
            if self.0.is_decided() { "True" } else { "False" },
        )
    }
}

/// The facts of a reconnection attempt that ended, given to a strategy's `on_success` /
/// `on_failure` hooks.
#[pyclass(frozen, module = "tether._tether")]
pub(crate) struct AttemptInfo(CoreAttemptInfo);

#[pymethods]
impl AttemptInfo {
    /// 1 for the first attempt after a disconnection, then 2, 3, ...
    #[getter]
    fn number(&self) -> u32 {
        self.0.number
    }

    /// Seconds since the connection was lost, when the attempt was decided.
    #[getter]
    fn elapsed(&self) -> f64 {
        self.0.elapsed.as_secs_f64()
    }

    /// Seconds that were left before the reconnection timeout, when the attempt was decided.
    #[getter]
    fn remaining(&self) -> f64 {
        self.0.remaining.as_secs_f64()
    }

    /// Why the connection was lost (first attempt) or why the previous attempt failed.
    #[getter]
    fn reason<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::close_reason(py, self.0.last_reason)
    }

    /// The server's retry-after hint the attempt was given, in seconds, or `None`.
    #[getter]
    fn retry_after(&self) -> Option<f64> {
        self.0.retry_after.map(|d| d.as_secs_f64())
    }

    fn __repr__(&self) -> String {
        format!(
            "AttemptInfo(number={}, elapsed={:.3}, remaining={:.3}, reason='{}')",
            self.0.number,
            self.0.elapsed.as_secs_f64(),
            self.0.remaining.as_secs_f64(),
            self.0.last_reason,
        )
    }
}

/// Hands an attempt a Python strategy was given to a built-in (`builtin(attempt)`): the core
/// strategy decides it (start after its delay, at least the server's hint, or abort).
fn hand_over(strategy: &Arc<dyn ReconnectionStrategy>, attempt: &Bound<'_, Attempt>) {
    let attempt = attempt.get().0.clone();
    if attempt.number() == 1 {
        // A new outage: the core resets a strategy after each successful reconnection, which
        // it does not tell a strategy it does not own; this is the first moment the built-in
        // hears of it.
        strategy.on_success(attempt.info());
    }
    strategy.perform_reconnection(attempt);
}

/// Hands each attempt to a Python callable, on the session's callback thread. The Python
/// package passes a callable that forwards the attempt to the event loop (asyncio) or runs the
/// user's strategy directly (`tether.sync`), and reports the strategy's exceptions itself. If
/// the callable raises anyway, the exception goes to `sys.unraisablehook`; either way, or
/// when the interpreter is exiting, the attempt is aborted rather than left undecided.
///
/// When the callable has `on_success` / `on_failure` attributes (the Python package sets them
/// when the user's strategy has such methods), they are called with an [`AttemptInfo`] (and,
/// for a failure, why it failed) after each attempt the strategy started.
pub(crate) struct PyStrategy {
    invoke: Py<PyAny>,
    on_success: Option<Py<PyAny>>,
    on_failure: Option<Py<PyAny>>,
}

impl PyStrategy {
    /// Calls a hook; an exception goes to `sys.unraisablehook` (the package's hooks report
    /// the user's exceptions themselves).
    fn hook(hook: &Option<Py<PyAny>>, info: &CoreAttemptInfo, reason: Option<CloseReason>) {
        let Some(hook) = hook else {
            return;
        };
        // `None`: the interpreter is exiting; nobody is left to tell.
        let _ = crate::exit::attach(|py| {
            let result = Bound::new(py, AttemptInfo(info.clone())).and_then(|info| match reason {
                Some(r) => hook.bind(py).call1((info, convert::close_reason(py, r)?)),
                None => hook.bind(py).call1((info,)),
            });
            if let Err(e) = result {
                e.write_unraisable(py, Some(hook.bind(py)));
            }
        });
    }
}

impl ReconnectionStrategy for PyStrategy {
    fn on_success(&self, attempt: &CoreAttemptInfo) {
        Self::hook(&self.on_success, attempt, None);
    }

    fn on_failure(&self, attempt: &CoreAttemptInfo, reason: CloseReason) {
        Self::hook(&self.on_failure, attempt, Some(reason));
    }

    fn perform_reconnection(&self, attempt: ReconnectionAttempt) {
        let handed = crate::exit::attach(|py| {
            let result = Bound::new(py, Attempt(attempt.clone()))
                .and_then(|a| self.invoke.bind(py).call1((a,)));
            match result {
                Ok(_) => true,
                Err(e) => {
                    e.write_unraisable(py, Some(self.invoke.bind(py)));
                    false
                }
            }
        });
        if handed != Some(true) {
            attempt.abort();
        }
    }
}

/// Try again after the same delay (seconds) every time; with `max_attempts`, abort instead of
/// attempt `max_attempts + 1`.
#[pyclass(frozen, module = "tether._tether")]
pub(crate) struct ConstantDelay {
    delay: Duration,
    max_attempts: Option<u32>,
    /// The core strategy that `__call__` hands attempts to (made on first use).
    delegate: OnceLock<Arc<dyn ReconnectionStrategy>>,
}

#[pymethods]
impl ConstantDelay {
    #[new]
    #[pyo3(signature = (delay, max_attempts = None))]
    fn new(py: Python<'_>, delay: f64, max_attempts: Option<u32>) -> PyResult<Self> {
        Ok(ConstantDelay {
            delay: convert::seconds(py, "delay", delay)?,
            max_attempts,
            delegate: OnceLock::new(),
        })
    }

    /// Decides an attempt that a strategy function was given, as this built-in would.
    fn __call__(&self, attempt: &Bound<'_, Attempt>) {
        hand_over(self.delegate.get_or_init(|| self.build()), attempt);
    }

    /// The delay in seconds.
    #[getter]
    fn delay(&self) -> f64 {
        self.delay.as_secs_f64()
    }

    /// The attempt limit, if any.
    #[getter]
    fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    fn __repr__(&self) -> String {
        format!(
            "ConstantDelay(delay={}, max_attempts={})",
            self.delay.as_secs_f64(),
            self.max_attempts
                .map_or_else(|| "None".to_owned(), |n| n.to_string())
        )
    }
}

impl ConstantDelay {
    fn build(&self) -> Arc<dyn ReconnectionStrategy> {
        let s = strategy::ConstantDelay::new(self.delay);
        match self.max_attempts {
            Some(n) => s.max_attempts(n).into_strategy(),
            None => s.into_strategy(),
        }
    }
}

fn parse_jitter(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Jitter> {
    let name: String = value.extract().map_err(|_| {
        convert::invalid_argument(py, "jitter must be a tether.Jitter or its name".to_owned())
    })?;
    Jitter::from_name(&name).ok_or_else(|| {
        convert::invalid_argument(py, format!("unknown jitter {name:?} ({})", Jitter::names()))
    })
}

/// Exponential backoff: `initial`, `initial × multiplier`, ... capped at `max_delay` (seconds),
/// with jitter; optionally a quick random first attempt in `[0, first_attempt]`, an attempt
/// limit, and a fixed random seed (for reproducible tests).
#[pyclass(frozen, module = "tether._tether")]
pub(crate) struct ExponentialBackoff {
    initial: Duration,
    multiplier: f64,
    max_delay: Duration,
    jitter: Jitter,
    max_attempts: Option<u32>,
    first_attempt: Option<Duration>,
    seed: Option<u64>,
    /// The core strategy that `__call__` hands attempts to (made on first use).
    delegate: OnceLock<Arc<dyn ReconnectionStrategy>>,
}

#[pymethods]
impl ExponentialBackoff {
    #[new]
    #[pyo3(signature = (initial = 0.25, multiplier = 2.0, max_delay = 10.0, *, jitter = None, max_attempts = None, first_attempt = None, seed = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        initial: f64,
        multiplier: f64,
        max_delay: f64,
        jitter: Option<&Bound<'_, PyAny>>,
        max_attempts: Option<u32>,
        first_attempt: Option<f64>,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        if !multiplier.is_finite() || multiplier < 1.0 {
            return Err(convert::invalid_argument(
                py,
                format!("multiplier must be a finite number >= 1 (got {multiplier})"),
            ));
        }
        let initial = convert::seconds(py, "initial", initial)?;
        let max_delay = convert::seconds(py, "max_delay", max_delay)?;
        if max_delay < initial {
            return Err(convert::invalid_argument(
                py,
                "max_delay must not be smaller than initial".to_owned(),
            ));
        }
        Ok(ExponentialBackoff {
            initial,
            multiplier,
            max_delay,
            jitter: match jitter {
                Some(j) => parse_jitter(py, j)?,
                None => Jitter::default(),
            },
            max_attempts,
            first_attempt: first_attempt
                .map(|f| convert::seconds(py, "first_attempt", f))
                .transpose()?,
            seed,
            delegate: OnceLock::new(),
        })
    }

    /// Decides an attempt that a strategy function was given, as this built-in would.
    fn __call__(&self, attempt: &Bound<'_, Attempt>) {
        hand_over(self.delegate.get_or_init(|| self.build()), attempt);
    }

    /// The first delay, in seconds.
    #[getter]
    fn initial(&self) -> f64 {
        self.initial.as_secs_f64()
    }

    /// The growth factor.
    #[getter]
    fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The cap, in seconds.
    #[getter]
    fn max_delay(&self) -> f64 {
        self.max_delay.as_secs_f64()
    }

    /// The jitter mode's name.
    #[getter]
    fn jitter(&self) -> &'static str {
        self.jitter.name()
    }

    /// The attempt limit, if any.
    #[getter]
    fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The bound of the quick first attempt, in seconds, if any.
    #[getter]
    fn first_attempt(&self) -> Option<f64> {
        self.first_attempt.map(|d| d.as_secs_f64())
    }

    fn __repr__(&self) -> String {
        format!(
            "ExponentialBackoff(initial={}, multiplier={}, max_delay={}, jitter='{}', max_attempts={}, first_attempt={})",
            self.initial.as_secs_f64(),
            self.multiplier,
            self.max_delay.as_secs_f64(),
            self.jitter.name(),
            self.max_attempts
                .map_or_else(|| "None".to_owned(), |n| n.to_string()),
            self.first_attempt
                .map_or_else(|| "None".to_owned(), |d| d.as_secs_f64().to_string()),
        )
    }
}

impl ExponentialBackoff {
    /// A fresh core strategy (each session gets its own backoff state).
    fn build(&self) -> Arc<dyn ReconnectionStrategy> {
        let mut s =
            strategy::ExponentialBackoff::new(self.initial, self.multiplier, self.max_delay)
                .jitter(self.jitter);
        if let Some(n) = self.max_attempts {
            s = s.max_attempts(n);
        }
        if let Some(f) = self.first_attempt {
            s = s.quick_first_attempt(f);
        }
        if let Some(seed) = self.seed {
            s = s.seed(seed);
        }
        s.into_strategy()
    }
}

/// Never reconnect: the first attempt aborts (reason `reconnect_aborted`).
#[pyclass(frozen, module = "tether._tether")]
pub(crate) struct AbortImmediately;

#[pymethods]
impl AbortImmediately {
    #[new]
    fn new() -> Self {
        AbortImmediately
    }

    /// Aborts an attempt that a strategy function was given, as this built-in would.
    fn __call__(&self, attempt: &Bound<'_, Attempt>) {
        attempt.get().0.abort();
    }

    fn __repr__(&self) -> &'static str {
        "AbortImmediately()"
    }
}

/// The default strategy: the first attempt after a random 0–100 ms, then exponential backoff
/// with full jitter from 250 ms, doubling, capped at 10 s.
#[pyclass(frozen, module = "tether._tether")]
pub(crate) struct DefaultStrategy {
    /// The core strategy that `__call__` hands attempts to (made on first use).
    delegate: OnceLock<Arc<dyn ReconnectionStrategy>>,
}

#[pymethods]
impl DefaultStrategy {
    #[new]
    fn new() -> Self {
        DefaultStrategy {
            delegate: OnceLock::new(),
        }
    }

    /// Decides an attempt that a strategy function was given, as this built-in would.
    fn __call__(&self, attempt: &Bound<'_, Attempt>) {
        hand_over(
            self.delegate.get_or_init(strategy::default_strategy),
            attempt,
        );
    }

    fn __repr__(&self) -> &'static str {
        "DefaultStrategy()"
    }
}

/// The core strategy for a built-in, or an adapter for a Python callable.
pub(crate) fn from_py(value: &Bound<'_, PyAny>) -> PyResult<Arc<dyn ReconnectionStrategy>> {
    if let Ok(s) = value.cast::<ConstantDelay>() {
        return Ok(s.get().build());
    }
    if let Ok(s) = value.cast::<ExponentialBackoff>() {
        return Ok(s.get().build());
    }
    if value.cast::<AbortImmediately>().is_ok() {
        return Ok(Arc::new(strategy::AbortImmediately));
    }
    if value.cast::<DefaultStrategy>().is_ok() {
        return Ok(strategy::default_strategy());
    }
    if value.is_callable() {
        let hook = |name: &str| -> PyResult<Option<Py<PyAny>>> {
            Ok(value
                .getattr_opt(name)?
                .filter(|h| h.is_callable())
                .map(Bound::unbind))
        };
        return Ok(Arc::new(PyStrategy {
            invoke: value.clone().unbind(),
            on_success: hook("on_success")?,
            on_failure: hook("on_failure")?,
        }));
    }
    Err(PyTypeError::new_err(format!(
        "a reconnection strategy must be callable or a built-in strategy, not {}",
        value.get_type().name()?
    )))
}
