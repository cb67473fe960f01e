//! `tether::shutdown` closes every session and listeners hear it before the runtime stops.
//! A test binary of its own: shutdown stops the process-wide runtime.

mod common;

use std::time::Duration;

use common::{Env, Recorder};
use tether::{CloseReason, SessionState::*};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_and_delivers_the_last_callbacks_then_a_new_open_works() {
    let env = Env::start().await;
    let rec = Recorder::default();
    let session = env
        .builder()
        .listener(rec.listener())
        .open()
        .await
        .expect("open");
    let id = session.session_id();
    tokio::task::spawn_blocking(|| tether::shutdown(Duration::from_secs(5)))
        .await
        .expect("shutdown");
    // No waiting: the closed transition was delivered before shutdown returned.
    assert_eq!(
        rec.transitions(),
        vec![
            (Connecting, ConnectedActive, None),
            (
                ConnectedActive,
                ClosedByClient,
                Some(CloseReason::ClosedByClient)
            ),
        ]
    );
    assert_eq!(session.state(), ClosedByClient);
    common::within("server frees it", env.server.session_freed(&id)).await;
    // Tether's runtime starts again on the next open.
    let again = env.builder().open().await.expect("open after shutdown");
    assert_eq!(again.state(), ConnectedActive);
    again.close().await;
}
