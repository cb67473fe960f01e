//! `tether._tether`: the native half of the `tether` Python package (distribution
//! `tether-session`).
//!
//! This module is private. The pure-Python package `tether` re-exports it and adds the
//! asyncio-idiomatic layer (`tether.connect`, `tether.Session`, the `reconnect=` forms,
//! callbacks on the event loop) and the blocking facade `tether.sync`. All behaviour lives in
//! the Rust core (`tether`); this crate adapts it:
//!
//! ```text
//!  asyncio loop thread                  Tether's runtime (owned by the core)
//!  ───────────────────                  ────────────────────────────────────
//!  await native.publish(..)  ──queue──▶ the session's writer ──▶ server
//!        ▲                                    │ completion
//!        └──── loop.call_soon_threadsafe ◀────┘ (from the binding's results thread, with
//!                                               the GIL, a batch of results at a time)
//!
//!  strategy / listener       ◀── call_soon_threadsafe ── session callback thread (core)
//! ```
//!
//! No call ever waits while holding the GIL: awaitables resolve through the loop, and the
//! blocking forms release the GIL while they wait. No second tokio runtime is created: the
//! sessions run on `tether::runtime::handle()`, and the binding's one results thread waits
//! for the outcomes (so a `tether.shutdown()` drops none). At interpreter exit, the package's
//! `atexit` hook ([`at_exit`]) shuts Tether down and keeps its threads out of the interpreter
//! from then on (see `exit`).

mod bridge;
mod convert;
mod exit;
mod results;
mod session;
mod strategy;

use pyo3::prelude::*;

/// Closes every open session (requests queued before are sent and confirmed first), then
/// stops Tether's runtime and joins its threads, all within `timeout` seconds. Returns whether
/// everything stopped in time. A later `connect` starts the runtime again.
#[pyfunction]
#[pyo3(signature = (timeout = 5.0))]
fn shutdown(py: Python<'_>, timeout: f64) -> PyResult<bool> {
    let timeout = convert::seconds(py, "timeout", timeout)?;
    Ok(py.detach(|| tether::shutdown(timeout)))
}

/// The package's `atexit` hook: `shutdown(timeout)`, after which no thread of Tether's touches
/// the interpreter again (the interpreter finalizes after the `atexit` hooks), no awaitable
/// result is delivered, and a daemon thread's blocking call never returns. Returns whether
/// everything stopped in time.
#[pyfunction]
#[pyo3(signature = (timeout = 5.0))]
fn at_exit(py: Python<'_>, timeout: f64) -> PyResult<bool> {
    let timeout = convert::seconds(py, "timeout", timeout)?;
    Ok(exit::at_exit(py, timeout))
}

#[pymodule]
fn _tether(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(session::open, m)?)?;
    m.add_function(wrap_pyfunction!(session::open_blocking, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(at_exit, m)?)?;
    m.add_class::<session::NativeSession>()?;
    m.add_class::<session::NativeSubscription>()?;
    m.add_class::<session::NativeStateChanges>()?;
    m.add_class::<session::StateChange>()?;
    m.add_class::<session::Update>()?;
    m.add_class::<session::GapReport>()?;
    m.add_class::<strategy::Attempt>()?;
    m.add_class::<strategy::AttemptInfo>()?;
    m.add_class::<strategy::ConstantDelay>()?;
    m.add_class::<strategy::ExponentialBackoff>()?;
    m.add_class::<strategy::AbortImmediately>()?;
    m.add_class::<strategy::DefaultStrategy>()?;
    Ok(())
}
