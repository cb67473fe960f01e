//! The runtime Tether owns: sessions run on it whatever the caller uses (a binding's host
//! language, another executor, plain threads), and [`shutdown`] stops it cleanly.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Handle, Runtime};

use crate::session::SessionInner;

struct Global {
    runtime: Option<Runtime>,
    /// Threads of `runtime` (workers and the blocking pool) that have not ended yet.
    threads: Option<Arc<AtomicUsize>>,
    sessions: Vec<Weak<SessionInner>>,
}

static GLOBAL: Mutex<Global> = Mutex::new(Global {
    runtime: None,
    threads: None,
    sessions: Vec::new(),
});

fn global() -> std::sync::MutexGuard<'static, Global> {
    GLOBAL.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// Set while a session callback (listener, strategy, handler) runs on this thread.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` marked as a session callback, so that [`shutdown`] called from inside it knows
/// that the calling thread is one of the runtime's and cannot be joined.
pub(crate) fn run_callback(f: impl FnOnce()) {
    let previous = IN_CALLBACK.with(|c| c.replace(true));
    f();
    IN_CALLBACK.with(|c| c.set(previous));
}

/// Whether the calling thread is running a session callback.
pub fn on_callback_thread() -> bool {
    IN_CALLBACK.with(Cell::get)
}

/// The handle of Tether's runtime, starting it on first use. Bindings use it to run the
/// session API from threads of their host language (`handle.block_on(...)` from a thread that
/// is not an async worker, or `handle.spawn(...)`).
pub fn handle() -> std::io::Result<Handle> {
    let mut g = global();
    if let Some(rt) = &g.runtime {
        return Ok(rt.handle().clone());
    }
    // A fresh count: threads of a runtime stopped earlier may still be ending.
    let threads = Arc::new(AtomicUsize::new(0));
    let (started, stopped) = (threads.clone(), threads.clone());
    let rt = Builder::new_multi_thread()
        .thread_name("tether-worker")
        .worker_threads(2)
        .on_thread_start(move || {
            started.fetch_add(1, Ordering::SeqCst);
        })
        .on_thread_stop(move || {
            stopped.fetch_sub(1, Ordering::SeqCst);
        })
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    g.runtime = Some(rt);
    g.threads = Some(threads);
    Ok(handle)
}

pub(crate) fn register(session: Weak<SessionInner>) {
    let mut g = global();
    g.sessions.retain(|w| w.strong_count() > 0);
    g.sessions.push(session);
}

/// How long past its deadline [`shutdown`] waits for its stopping thread to report.
const REPORT_MARGIN: Duration = Duration::from_millis(100);

/// Closes every open session (each sends the requests queued before the close and waits for
/// the server to confirm them), lets listeners hear the closed state, then stops Tether's
/// runtime and joins its threads, all within `timeout`. Returns `true` if everything stopped
/// in time: every session closed, every callback ran, every thread ended. `false` means
/// something was left behind (a callback that still runs, a server that did not answer); the
/// runtime is stopped either way and a later `open` starts a fresh one. Call it before a host
/// runtime (JVM, Mono, Node, CPython) exits.
///
/// Called from inside a session callback (a handler that exits the process, say), it cannot
/// wait for that callback's own thread: it closes the sessions, stops the other threads
/// without joining them, and returns `false`.
pub fn shutdown(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let (runtime, threads, sessions) = {
        let mut g = global();
        (
            g.runtime.take(),
            g.threads.take().unwrap_or_default(),
            std::mem::take(&mut g.sessions),
        )
    };
    let Some(runtime) = runtime else {
        return true;
    };
    let from_callback = on_callback_thread();
    let (report, stopped) = std::sync::mpsc::channel();
    // On a thread of its own: blocking on (and dropping) a runtime is not allowed inside an
    // async context, and the caller may be in one.
    let stopper = std::thread::Builder::new()
        .name("tether-shutdown".into())
        .spawn(move || {
            let live: Vec<_> = sessions.iter().filter_map(Weak::upgrade).collect();
            let closing = async {
                for s in &live {
                    s.request_close();
                }
                for s in &live {
                    s.wait_closed().await;
                    // Listeners hear about the closed state before the runtime goes away
                    // (except from a callback: the queue waits for the caller).
                    if !from_callback {
                        s.callbacks_done().await;
                    }
                }
            };
            let closed = runtime
                .block_on(async {
                    tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), closing).await
                })
                .is_ok();
            if !closed {
                tracing::warn!("sessions or callbacks still busy at the shutdown deadline");
            }
            drop(live);
            if from_callback {
                // The calling thread belongs to the runtime and waits for this one.
                runtime.shutdown_background();
                let _ = report.send(false);
                return;
            }
            runtime.shutdown_timeout(deadline.saturating_duration_since(Instant::now()));
            let left = threads.load(Ordering::SeqCst);
            if left > 0 {
                tracing::warn!(
                    threads = left,
                    "runtime threads still running after shutdown"
                );
            }
            let _ = report.send(closed && left == 0);
        });
    let Ok(stopper) = stopper else {
        return false;
    };
    match stopped.recv_timeout(deadline.saturating_duration_since(Instant::now()) + REPORT_MARGIN) {
        Ok(all) => {
            let _ = stopper.join();
            all
        }
        Err(_) => false,
    }
}
