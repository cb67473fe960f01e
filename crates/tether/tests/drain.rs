//! A draining server: the session goes to `RECOVERING_RECONNECT` with reason
//! `server_draining` and the server's hint, every request the server applied is reported
//! applied; and a session with several URLs rotates through them.

mod common;

use std::time::Duration;

use common::{Env, config, manual, within};
use tether::{CloseReason, SessionState};
use tether_testkit::{CutMode, FaultProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_sends_sessions_away_with_its_hint_and_a_restart_loses_nothing() {
    let dir = std::env::temp_dir().join(format!("tether-drain-client-{}", std::process::id()));
    let mut cfg = config();
    cfg.drain.retry_after_ms = 250;
    cfg.state_dir = Some(dir.clone());
    let Env { server, proxy } = Env::with(cfg.clone()).await;
    let env = common::Url(format!("ws://{}", proxy.local_addr()));
    let observer = env.builder().open().await.expect("observer");
    let mut seen = observer.subscribe("drain/**").await.expect("subscribe");
    let mut m = manual();
    let session = env
        .builder()
        .reconnection_strategy_arc(m.strategy.clone())
        .open()
        .await
        .expect("open");
    const N: usize = 2000;
    let completions: Vec<_> = (0..N)
        .map(|i| session.send("drain/t", i.to_string()).expect("queued"))
        .collect();
    // Drain while the publishes are being applied.
    let mut got = Vec::new();
    while got.len() < 10 {
        let update = within("an update", seen.next()).await.expect("update");
        got.push(String::from_utf8_lossy(&update.value).into_owned());
    }
    let addr = server.local_addr();
    let report = within("the drain", server.drain(Duration::from_secs(5)))
        .await
        .expect("drained");
    assert_eq!(report.sent_away, 2, "both sessions were sent away");
    assert_eq!(report.still_connected, 0);
    assert_eq!(report.saved, Some(2));
    // The session is recovering, not closed, and its strategy hears why and for how long.
    let attempt = m.next_attempt().await;
    assert_eq!(attempt.last_reason(), CloseReason::ServerDraining);
    assert_eq!(attempt.retry_after(), Some(Duration::from_millis(250)));
    assert_eq!(session.state(), SessionState::RecoveringReconnect);
    // The same server starts again where it was, from what the drain saved.
    cfg.listen = addr;
    let again = tether_server::Server::bind(cfg).await.expect("restart");
    assert_eq!(again.session_count(), 2, "both sessions came back");
    attempt.start();
    // Every publish is reported applied, and applied exactly once, in order.
    for (i, c) in completions.into_iter().enumerate() {
        assert_eq!(within("a completion", c).await, Ok(()), "publish {i}");
    }
    while got.len() < N {
        let update = within("an update", seen.next()).await.expect("update");
        got.push(String::from_utf8_lossy(&update.value).into_owned());
    }
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "each once, in order");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), seen.next())
            .await
            .is_err(),
        "nothing applied twice"
    );
    session.close().await;
    observer.close().await;
    again.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnection_attempts_rotate_through_the_fallback_urls() {
    let env = Env::start().await;
    let second = FaultProxy::start(
        "127.0.0.1:0".parse().expect("addr"),
        env.server.local_addr(),
    )
    .await
    .expect("second proxy");
    let mut m = manual();
    let session = env
        .builder()
        .fallback_url(format!("ws://{}", second.local_addr()))
        .reconnection_strategy_arc(m.strategy.clone())
        .open()
        .await
        .expect("open on the first URL");
    // The first URL stops answering.
    env.proxy.refuse(None);
    env.proxy.cut(CutMode::Rst);
    let first = m.next_attempt().await;
    first.start();
    // Attempt 1 goes back to the first URL (refused); attempt 2 tries the next one.
    let second_attempt = m.next_attempt().await;
    assert_eq!(second_attempt.number(), 2);
    second_attempt.start();
    within(
        "the resume on the fallback URL",
        session.wait_for_state(SessionState::ConnectedActive),
    )
    .await;
    assert_eq!(
        second.stats().forwarded_total,
        1,
        "resumed through the fallback"
    );
    session.publish("f/t", "after").await.expect("publish");
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_uses_the_first_url_that_answers() {
    let env = Env::start().await;
    // Nothing listens on a port just freed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let session = tether::Session::builder(&format!("ws://{dead}"))
        .fallback_url(env.url())
        .principal("control")
        .password("password")
        .open()
        .await
        .expect("opened on the second URL");
    assert_eq!(session.state(), SessionState::ConnectedActive);
    session.close().await;
}
