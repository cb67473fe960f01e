//! The runtime Tether owns: sessions run on it whatever the caller uses (a binding's host
//! language, another executor, plain threads), and [`shutdown`] stops it cleanly.

use std::sync::{Mutex, Weak};
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};

use crate::session::SessionInner;

struct Global {
    runtime: Option<Runtime>,
    sessions: Vec<Weak<SessionInner>>,
}

static GLOBAL: Mutex<Global> = Mutex::new(Global {
    runtime: None,
    sessions: Vec::new(),
});

fn global() -> std::sync::MutexGuard<'static, Global> {
    GLOBAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The handle of Tether's runtime, starting it on first use. Bindings use it to run the
/// session API from threads of their host language (`handle.block_on(...)` from a thread that
/// is not an async worker, or `handle.spawn(...)`).
pub fn handle() -> std::io::Result<Handle> {
    let mut g = global();
    if let Some(rt) = &g.runtime {
        return Ok(rt.handle().clone());
    }
    let rt = Builder::new_multi_thread()
        .thread_name("tether-worker")
        .worker_threads(2)
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    g.runtime = Some(rt);
    Ok(handle)
}

pub(crate) fn register(session: Weak<SessionInner>) {
    let mut g = global();
    g.sessions.retain(|w| w.strong_count() > 0);
    g.sessions.push(session);
}

/// Closes every open session, lets their listeners hear the closed state, then stops Tether's
/// runtime and joins its threads, waiting at most `timeout` in all. Call it before a host runtime (JVM, Mono, Node) exits. A later
/// `open` starts a fresh runtime.
///
/// Do not call it from inside a session callback or a Tether task.
pub fn shutdown(timeout: Duration) {
    let (runtime, sessions) = {
        let mut g = global();
        (g.runtime.take(), std::mem::take(&mut g.sessions))
    };
    let Some(runtime) = runtime else {
        return;
    };
    // On a thread of its own: blocking on (and dropping) a runtime is not allowed inside an
    // async context, and the caller may be in one.
    let stopper = std::thread::spawn(move || {
        let live: Vec<_> = sessions.iter().filter_map(Weak::upgrade).collect();
        let closing = async {
            for s in &live {
                s.request_close();
            }
            for s in &live {
                s.wait_closed().await;
                // Listeners hear about the closed state before the runtime goes away.
                s.callbacks_done().await;
            }
        };
        if runtime
            .block_on(async { tokio::time::timeout(timeout, closing).await })
            .is_err()
        {
            tracing::warn!("sessions still closing at shutdown");
        }
        drop(live);
        runtime.shutdown_timeout(timeout);
    });
    let _ = stopper.join();
}
