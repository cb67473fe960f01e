//! Running the core's async calls for Python, on the runtime Tether owns.
//!
//! * [`awaitable`]: an `asyncio.Future` on the caller's running loop, resolved (thread-safely,
//!   through `loop.call_soon_threadsafe`) when the Rust future completes. Cancelling the
//!   Python future drops the Rust future. Built on `pyo3_async_runtimes::generic` with
//!   [`TetherRuntime`], so no second tokio runtime ever exists.
//! * [`block`]: the blocking form for `tether.sync`, which waits with the GIL released and
//!   checks for signals (Ctrl-C) every 100 ms.
//!
//! Rust futures never touch the GIL: they return [`Out`], whose conversion to a Python object
//! (or to the right `tether` exception) happens in the delivery step, with the GIL held, off
//! the async workers.

use std::any::Any;
use std::cell::OnceCell;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pyo3::IntoPyObjectExt;
use pyo3::exceptions::PyTimeoutError;
use pyo3::prelude::*;
use pyo3_async_runtimes::TaskLocals;
use pyo3_async_runtimes::generic::{self, ContextExt, Runtime};
use tokio::runtime::Handle;

use crate::convert;

/// The result of a core call, converted to Python once the GIL is held.
pub(crate) struct Out<T>(pub(crate) Result<T, tether::Error>);

impl<'py, T> IntoPyObject<'py> for Out<T>
where
    T: IntoPyObject<'py>,
{
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.0 {
            Ok(value) => value.into_bound_py_any(py),
            Err(e) => Err(convert::error(py, &e)),
        }
    }
}

/// Tether's runtime, starting it on first use.
pub(crate) fn runtime_handle(py: Python<'_>) -> PyResult<Handle> {
    tether::runtime::handle().map_err(|e| {
        convert::tether_error(
            py,
            "TetherError",
            &format!("cannot start the Tether runtime: {e}"),
        )
    })
}

/// `pyo3_async_runtimes`' view of Tether's runtime.
pub(crate) struct TetherRuntime;

tokio::task_local! {
    static TASK_LOCALS: OnceCell<TaskLocals>;
}

/// A task spawned on Tether's runtime, or the note that there was no runtime to spawn on.
pub(crate) enum Join {
    Spawned(tokio::task::JoinHandle<()>),
    NoRuntime,
}

/// Why a [`Join`] ended without completing.
pub(crate) struct JoinFailure(Option<tokio::task::JoinError>);

impl generic::JoinError for JoinFailure {
    fn is_panic(&self) -> bool {
        self.0.as_ref().is_some_and(|e| e.is_panic())
    }

    fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        match self.0 {
            Some(e) if e.is_panic() => e.into_panic(),
            _ => Box::new("the task did not run"),
        }
    }
}

impl Future for Join {
    type Output = Result<(), JoinFailure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Join::Spawned(handle) => Pin::new(handle)
                .poll(cx)
                .map(|r| r.map_err(|e| JoinFailure(Some(e)))),
            Join::NoRuntime => Poll::Ready(Err(JoinFailure(None))),
        }
    }
}

fn current_handle() -> Option<Handle> {
    tether::runtime::handle()
        .ok()
        .or_else(|| Handle::try_current().ok())
}

impl Runtime for TetherRuntime {
    type JoinError = JoinFailure;
    type JoinHandle = Join;

    fn spawn<F>(fut: F) -> Join
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // `awaitable` started the runtime just before; only a concurrent `tether.shutdown()`
        // followed by a failure to start threads again could leave none.
        match current_handle() {
            Some(handle) => Join::Spawned(handle.spawn(fut)),
            None => Join::NoRuntime,
        }
    }

    fn spawn_blocking<F>(f: F) -> Join
    where
        F: FnOnce() + Send + 'static,
    {
        match current_handle() {
            Some(handle) => Join::Spawned(handle.spawn_blocking(f)),
            None => Join::NoRuntime,
        }
    }
}

impl ContextExt for TetherRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS
            .try_with(|c| c.get().cloned())
            .unwrap_or_default()
    }
}

/// An `asyncio.Future` of the running loop that resolves with `fut`'s output. Raises
/// `RuntimeError` when called without a running event loop.
pub(crate) fn awaitable<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Out<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    runtime_handle(py)?;
    generic::future_into_py::<TetherRuntime, _, _>(py, async move { Ok(fut.await) })
}

/// How often a blocking wait wakes up to let Python handle signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Runs `fut` to completion on Tether's runtime, blocking the calling thread with the GIL
/// released. `timeout` (seconds) raises `TimeoutError`; the future is dropped then, as it is
/// when a signal handler raises.
pub(crate) fn block<F, T>(py: Python<'_>, timeout: Option<f64>, fut: F) -> PyResult<T>
where
    F: Future<Output = Result<T, tether::Error>> + Send,
    T: Send,
{
    let handle = runtime_handle(py)?;
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
        let step = py
            .detach(|| handle.block_on(async { tokio::time::timeout(slice, fut.as_mut()).await }));
        match step {
            Ok(result) => return result.map_err(|e| convert::error(py, &e)),
            Err(_elapsed) => {
                py.check_signals()?;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(PyTimeoutError::new_err("timed out"));
                }
            }
        }
    }
}
