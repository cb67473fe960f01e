//! `tether::shutdown(t)` keeps its deadline and says whether everything stopped, even when a
//! callback blocks. A test binary of its own: shutdown stops the process-wide runtime.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_blocked_callback_returns_false_without_waiting_for_it() {
    let env = Env::start().await;
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    let session = env.builder().open().await.expect("open");
    session
        .subscribe_with("block/**", move |_| {
            let _ = entered_tx.send(());
            // Blocks until the test lets it go, after shutdown returned.
            let _ = released.lock().map(|r| r.recv());
        })
        .await
        .expect("subscribe");
    session.publish("block/a", "x").await.expect("publish");
    tokio::task::spawn_blocking(move || {
        entered
            .recv_timeout(common::BOUND)
            .expect("the handler runs");
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(tether::shutdown(Duration::from_millis(300)));
        });
        // Shutdown must come back while the callback still blocks (if it waited for the
        // callback, this would never return: the callback waits for the release below).
        let all = done
            .recv_timeout(common::BOUND)
            .expect("shutdown returned while the callback still blocked");
        assert!(!all, "a callback was still running: shutdown must say so");
        let _ = release.send(());
    })
    .await
    .expect("test thread");
    drop(session);
    // A quiet runtime stops completely, and says so.
    let again = env.builder().open().await.expect("open after shutdown");
    again.close().await;
    let all = tokio::task::spawn_blocking(|| tether::shutdown(Duration::from_secs(5)))
        .await
        .expect("shutdown");
    assert!(all, "nothing was busy: everything stopped");
}
