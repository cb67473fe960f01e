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
//!  await native.publish(..)  ──spawn──▶ Session::publish(..).await
//!        ▲                                    │ result
//!        └──── loop.call_soon_threadsafe ◀────┘ (from a blocking-pool thread, with the GIL)
//!
//!  strategy / listener       ◀── call_soon_threadsafe ── session callback thread (core)
//! ```
//!
//! No call ever waits while holding the GIL: awaitables resolve through the loop, and the
//! blocking forms release the GIL while they wait. No second tokio runtime is created: the
//! awaitables run on `tether::runtime::handle()`.

mod bridge;
mod convert;
mod session;
mod strategy;

use pyo3::prelude::*;

/// Closes every open session (requests queued before are sent and confirmed first), then
/// stops Tether's runtime and joins its threads, all within `timeout` seconds. Returns whether
/// everything stopped in time. The package registers it with `atexit`. A later `connect`
/// starts the runtime again.
#[pyfunction]
#[pyo3(signature = (timeout = 5.0))]
fn shutdown(py: Python<'_>, timeout: f64) -> PyResult<bool> {
    let timeout = convert::seconds(py, "timeout", timeout)?;
    Ok(py.detach(|| tether::shutdown(timeout)))
}

#[pymodule]
fn _tether(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(session::open, m)?)?;
    m.add_function(wrap_pyfunction!(session::open_blocking, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_class::<session::NativeSession>()?;
    m.add_class::<session::NativeSubscription>()?;
    m.add_class::<session::NativeStateChanges>()?;
    m.add_class::<session::StateChange>()?;
    m.add_class::<session::Update>()?;
    m.add_class::<session::GapReport>()?;
    m.add_class::<strategy::Attempt>()?;
    m.add_class::<strategy::ConstantDelay>()?;
    m.add_class::<strategy::ExponentialBackoff>()?;
    m.add_class::<strategy::AbortImmediately>()?;
    m.add_class::<strategy::DefaultStrategy>()?;
    Ok(())
}
