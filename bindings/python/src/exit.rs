//! Keeping Tether's threads away from an interpreter that is going away.
//!
//! CPython runs the `atexit` hooks with the interpreter intact, then starts finalizing. From
//! then on a thread that takes the GIL is killed inside `PyGILState_Ensure` (3.11–3.13: it is
//! unwound with `pthread_exit` through Rust frames; a crash, or `Fatal Python error`), or
//! blocked forever (3.14). CPython offers no check that cannot race with finalization, so
//! none of Tether's threads (the runtime's, the sessions' callback threads, the binding's
//! results thread) may get there: each of their calls into Python goes through [`attach`],
//! and the package's `atexit` hook ([`at_exit`]) shuts Tether down, then closes the gate and
//! waits for the threads inside to leave. After the hook, no Tether thread touches Python
//! again.
//!
//! The exit also decides what Python code still sees (the threads left are daemon threads,
//! which the interpreter stops abruptly anyway):
//! * results of awaitables are not delivered any more (a coroutine waiting on one just stays
//!   waiting, as it would in a stopped thread), so the exit-time closing of the sessions does
//!   not surface as `SessionClosedError` tracebacks from threads that outlived their loops;
//! * a blocking call (`tether.sync`) from another Python thread never returns: the thread is
//!   parked, with the GIL released, until the process ends;
//! * listener callbacks (state changes, gap reports) still run while the sessions close (the
//!   interpreter is intact then), so a `tether.sync` callback hears about the closed state.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

struct State {
    /// The `atexit` hook has started.
    exiting: bool,
    /// The thread running the hook (and the hooks after it, then finalization).
    exit_thread: Option<ThreadId>,
    /// No Tether thread may attach any more.
    closed: bool,
    /// Tether threads attached right now (or about to attach).
    inside: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    exiting: false,
    exit_thread: None,
    closed: false,
    inside: 0,
});
static LEFT: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Leaves the gate when dropped (even if the call into Python panicked).
struct Inside;

impl Drop for Inside {
    fn drop(&mut self) {
        let mut s = state();
        s.inside -= 1;
        if s.inside == 0 {
            LEFT.notify_all();
        }
    }
}

/// Runs `f` attached to the interpreter, from a thread of Tether's; `None` (without touching
/// Python) once the interpreter is exiting past the point where that is safe.
pub(crate) fn attach<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    {
        let mut s = state();
        if s.closed {
            return None;
        }
        s.inside += 1;
    }
    let _inside = Inside;
    Python::try_attach(f)
}

/// Whether the interpreter's exit has begun (the `atexit` hook has started).
pub(crate) fn exiting() -> bool {
    state().exiting
}

/// Whether the calling thread is the one running the exit (which never gets parked).
pub(crate) fn on_exit_thread() -> bool {
    state().exit_thread == Some(std::thread::current().id())
}

/// Whether a blocking call on this thread must park it instead of returning: the exit has
/// begun and this is another Python thread (a daemon thread, since the interpreter joined the
/// others before its `atexit` hooks). Tether's own callback threads go on: the sessions'
/// closing waits for their callbacks.
pub(crate) fn must_park() -> bool {
    let s = state();
    s.exiting
        && s.exit_thread != Some(std::thread::current().id())
        && !tether::runtime::on_callback_thread()
}

/// Parks the calling thread until the process ends. Call it with the GIL released.
pub(crate) fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

/// The package's `atexit` hook: shuts Tether down (closing every session, within `timeout`),
/// then closes the gate and waits, within the same deadline, until no Tether thread is
/// attached. Returns whether everything stopped in time.
pub(crate) fn at_exit(py: Python<'_>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    {
        let mut s = state();
        s.exiting = true;
        s.exit_thread = Some(std::thread::current().id());
    }
    py.detach(|| {
        let stopped = tether::shutdown(timeout);
        let mut s = state();
        s.closed = true;
        while s.inside > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = LEFT
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        stopped
    })
}
