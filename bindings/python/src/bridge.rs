//! Running the core's async calls for Python, on the runtime Tether owns.
//!
//! * [`awaitable`]: an `asyncio.Future` of the caller's running loop, resolved when the Rust
//!   future completes: the future is polled on the binding's results thread
//!   ([`crate::results`], never on an async worker), where the result is converted with the
//!   GIL and handed to the loop with `loop.call_soon_threadsafe`: one call per loop for every
//!   result ready at once ([`settle_all`]). Cancelling the Python
//!   future drops the Rust future. A result for a loop that has closed is dropped
//!   quietly (nobody can await it any more), and so is every result once the interpreter is
//!   exiting (see [`crate::exit`]).
//! * [`block`]: the blocking form for `tether.sync`, which waits with the GIL released and
//!   checks for signals (Ctrl-C) every 100 ms.
//!
//! Rust futures never touch the GIL: they return the core's `Result`, which becomes a Python
//! object (or the right `tether` exception) in the delivery step, with the GIL held.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use pyo3::IntoPyObjectExt;
use pyo3::exceptions::{PyRuntimeError, PyTimeoutError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyNone;
use tokio::runtime::Handle;

use crate::results::{Canceller, Delivery, Settlement, Slot};
use crate::{convert, exit};

/// A request's "no value": Python's `None` (pyo3 would make `()` an empty tuple).
pub(crate) struct Done;

impl<'py> IntoPyObject<'py> for Done {
    type Target = PyNone;
    type Output = Borrowed<'py, 'py, PyNone>;
    type Error = std::convert::Infallible;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(PyNone::get(py))
    }
}

/// Why no new work may start: the interpreter is exiting and Tether was shut down.
fn exit_error(py: Python<'_>) -> PyErr {
    convert::tether_error(
        py,
        "TetherError",
        "Tether was shut down: the interpreter is exiting",
    )
}

/// Tether's runtime, starting it on first use (never once the interpreter is exiting: the
/// exit-time shutdown has stopped it for good).
pub(crate) fn runtime_handle(py: Python<'_>) -> PyResult<Handle> {
    if exit::exiting() {
        return Err(exit_error(py));
    }
    tether::runtime::handle().map_err(|e| {
        convert::tether_error(
            py,
            "TetherError",
            &format!("cannot start the Tether runtime: {e}"),
        )
    })
}

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `asyncio.get_running_loop()`: raises `RuntimeError` without a running loop.
pub(crate) fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    GET_RUNNING_LOOP
        .import(py, "asyncio", "get_running_loop")?
        .call0()
}

/// Called by the Python future when it is done: if it was cancelled, drops the Rust future.
#[pyclass(frozen, module = "tether._tether")]
struct CancelOnDone(Canceller);

#[pymethods]
impl CancelOnDone {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.0.cancel();
        }
        Ok(())
    }
}

/// Run on the loop: sets each future's result or exception, unless it is already done
/// (cancelled meanwhile). One call per event loop and batch of results.
#[pyclass(frozen, module = "tether._tether")]
struct ResolveAll {
    settled: Vec<Settled>,
}

/// A future, its outcome, and whether that is an exception.
type Settled = (Py<PyAny>, Py<PyAny>, bool);

#[pymethods]
impl ResolveAll {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let mut first_error = None;
        for (future, outcome, failed) in &self.settled {
            let future = future.bind(py);
            let settle = || -> PyResult<()> {
                if future.call_method0("done")?.is_truthy()? {
                    return Ok(());
                }
                let method = if *failed {
                    "set_exception"
                } else {
                    "set_result"
                };
                future.call_method1(method, (outcome.clone_ref(py),))?;
                Ok(())
            };
            // One future's trouble does not keep the others pending.
            if let Err(e) = settle() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Hands results to their loops: one `call_soon_threadsafe` per loop (on the results thread,
/// attached). Results for a loop that has closed are dropped (nobody can await them).
pub(crate) fn settle_all(py: Python<'_>, settlements: Vec<Settlement>) {
    let mut by_loop: Vec<(Py<PyAny>, Vec<Settled>)> = Vec::new();
    for s in settlements {
        let entry = (s.future, s.outcome, s.failed);
        match by_loop
            .iter_mut()
            .find(|(l, _)| l.as_ptr() == s.event_loop.as_ptr())
        {
            Some((_, list)) => list.push(entry),
            None => by_loop.push((s.event_loop, vec![entry])),
        }
    }
    for (event_loop, settled) in by_loop {
        let event_loop = event_loop.bind(py);
        let closed = event_loop
            .call_method0("is_closed")
            .and_then(|c| c.is_truthy())
            .unwrap_or(true);
        if closed {
            continue;
        }
        match event_loop.call_method1("call_soon_threadsafe", (ResolveAll { settled },)) {
            Ok(_) => {}
            // The loop closed meanwhile: nobody is waiting any more.
            Err(e) if e.is_instance_of::<PyRuntimeError>(py) => {}
            Err(e) => e.write_unraisable(py, Some(event_loop)),
        }
    }
}

/// Where a result goes: a future of an event loop.
struct Target {
    event_loop: Py<PyAny>,
    future: Py<PyAny>,
}

impl Target {
    /// Converts `result` for the loop (on the results thread, attached).
    fn deliver<T>(self, py: Python<'_>, result: Result<T, tether::Error>) -> Option<Settlement>
    where
        T: for<'a> IntoPyObject<'a>,
    {
        let (outcome, failed) = match result
            .map_err(|e| convert::error(py, &e))
            .and_then(|v| v.into_py_any(py))
        {
            Ok(value) => (value, false),
            Err(e) => (e.into_value(py).into_any(), true),
        };
        Some(Settlement {
            event_loop: self.event_loop,
            future: self.future,
            outcome,
            failed,
        })
    }
}

/// An `asyncio.Future` of the caller's running loop, not yet tied to any work: everything
/// that can fail (no running loop, the interpreter exiting) fails here, before the caller
/// starts anything (a publish is queued at once, for instance).
pub(crate) struct Pending<'py> {
    event_loop: Bound<'py, PyAny>,
    future: Bound<'py, PyAny>,
    /// `None`: a daemon thread's loop at interpreter exit, whose future never resolves (the
    /// thread is about to be stopped).
    slot: Option<Slot>,
}

impl<'py> Pending<'py> {
    /// Raises `RuntimeError` without a running event loop.
    pub(crate) fn new(py: Python<'py>) -> PyResult<Self> {
        let event_loop = running_loop(py)?;
        let future = event_loop.call_method0("create_future")?;
        let slot = if exit::exiting() && !exit::on_exit_thread() {
            None
        } else {
            // The core's calls start Tether's runtime as they need it; this one says why it
            // cannot start (and refuses at interpreter exit) before anything is queued.
            runtime_handle(py)?;
            Some(Slot::new().map_err(|e| {
                convert::tether_error(py, "TetherError", &format!("cannot start a thread: {e}"))
            })?)
        };
        Ok(Pending {
            event_loop,
            future,
            slot,
        })
    }

    /// Calls `start` and waits for the future it returns on the results thread; the Python
    /// future resolves with its output. (At interpreter exit, on a daemon thread: calls
    /// nothing.)
    pub(crate) fn run<F, T>(self, start: impl FnOnce() -> F) -> PyResult<Bound<'py, PyAny>>
    where
        F: Future<Output = Result<T, tether::Error>> + Send + 'static,
        T: for<'a> IntoPyObject<'a> + Send + 'static,
    {
        let Some(slot) = self.slot else {
            return Ok(self.future);
        };
        let fut = start();
        let target = Target {
            event_loop: self.event_loop.unbind(),
            future: self.future.clone().unbind(),
        };
        let canceller = slot.start(Box::pin(async move {
            let result = fut.await;
            Box::new(move |py: Python<'_>| target.deliver(py, result)) as Delivery
        }));
        self.future
            .call_method1("add_done_callback", (CancelOnDone(canceller),))?;
        Ok(self.future)
    }
}

/// An `asyncio.Future` of the running loop that resolves with `fut`'s output. Raises
/// `RuntimeError` when called without a running event loop.
pub(crate) fn awaitable<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, tether::Error>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    Pending::new(py)?.run(|| fut)
}

/// At interpreter exit, parks a daemon thread about to make a blocking call, until the
/// process ends (see [`exit::must_park`]).
pub(crate) fn park_if_exiting(py: Python<'_>) {
    if exit::must_park() {
        py.detach(|| exit::park_forever());
    }
}

/// How often a blocking wait wakes up to let Python handle signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Waits for `fut` (a call of the core, whose work runs on Tether's runtime) on the calling
/// thread, with the GIL released. `timeout` (seconds) raises `TimeoutError`; the future is dropped then, as it is
/// when a signal handler raises. Once the interpreter is exiting, a call from a daemon thread
/// never returns (see [`exit::must_park`]): the thread is stopped with the interpreter rather
/// than woken with the exit-time shutdown's `SessionClosedError`.
pub(crate) fn block<F, T>(py: Python<'_>, timeout: Option<f64>, fut: F) -> PyResult<T>
where
    F: Future<Output = Result<T, tether::Error>> + Send,
    T: Send,
{
    park_if_exiting(py);
    let deadline = match timeout {
        Some(t) => Some(Instant::now() + convert::seconds(py, "timeout", t)?),
        None => None,
    };
    let mut fut = pin!(fut);
    loop {
        let slice = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(SIGNAL_CHECK),
            None => SIGNAL_CHECK,
        };
        let step = py.detach(|| {
            let step = poll_for(fut.as_mut(), slice);
            if exit::must_park() {
                exit::park_forever();
            }
            step
        });
        match step {
            Some(result) => return result.map_err(|e| convert::error(py, &e)),
            None => {
                py.check_signals()?;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(PyTimeoutError::new_err("timed out"));
                }
            }
        }
    }
}

/// Wakes a thread parked in [`poll_for`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` on the calling thread for at most `slice`: its output, or `None` if it is
/// still pending. The core's futures need no runtime context (they wait on channels), so this
/// also works after `tether.shutdown()` (they then complete with an error).
fn poll_for<F: Future>(mut fut: Pin<&mut F>, slice: Duration) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let until = Instant::now() + slice;
    loop {
        if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            return Some(output);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::park_timeout(left);
    }
}
