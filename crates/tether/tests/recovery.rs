//! End to end recovery: replay, liveness, gaps, bounded queues. Real server, real sockets,
//! the fault proxy in between.

mod common;

use std::time::Instant;

use bytes::Bytes;
use common::{Env, config, manual, within};
use tether::{CloseReason, Error, Session, SessionState::*};
use tether_testkit::CutMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_has_received_nothing_yet_recovers() {
    let env = Env::start().await;
    let mut strategy = manual();
    let session = env
        .builder()
        .reconnection_strategy_arc(strategy.strategy.clone())
        .open()
        .await
        .expect("open");
    let mut sub = session.subscribe("quiet/topic").await.expect("subscribe");
    assert!(sub.try_next().is_none(), "nothing published yet");
    env.proxy.cut(CutMode::Rst);
    let attempt = strategy.next_attempt().await;
    // Published while the session is away: it must be replayed on resume.
    env.server
        .publish("quiet/topic", "first")
        .await
        .expect("publish");
    attempt.start();
    let update = within("replayed update", sub.next()).await.expect("update");
    assert_eq!(update.value, Bytes::from("first"));
    assert!(!update.snapshot, "a replayed live update, not a snapshot");
    session
        .publish("quiet/topic", "second")
        .await
        .expect("publish after resume");
    assert_eq!(
        within("own update", sub.next())
            .await
            .expect("update")
            .value,
        Bytes::from("second")
    );
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_is_detected_as_an_idle_connection_and_the_session_resumes() {
    let mut cfg = config();
    cfg.ping_period_ms = 200;
    let env = Env::with(cfg).await;
    let session = env.builder().open().await.expect("open");
    let id = session.session_id();
    let mut sub = session.subscribe("s/t").await.expect("subscribe");
    let mut changes = session.state_changes();
    let stalled_at = Instant::now();
    assert_eq!(env.proxy.stall(), 1);
    let change = within("disconnect", changes.next()).await.expect("change");
    assert_eq!(
        (change.old, change.new, change.reason),
        (
            ConnectedActive,
            RecoveringReconnect,
            Some(CloseReason::IdleConnection)
        )
    );
    println!(
        "stall noticed after {:?} (ping period 200 ms)",
        stalled_at.elapsed()
    );
    let change = within("resume", changes.next()).await.expect("change");
    assert_eq!(
        (change.old, change.new),
        (RecoveringReconnect, ConnectedActive)
    );
    assert_eq!(session.session_id(), id);
    env.server
        .publish("s/t", "after the stall")
        .await
        .expect("publish");
    assert_eq!(
        within("update", sub.next()).await.expect("update").value,
        Bytes::from("after the stall")
    );
    session.close().await;
}

async fn outage_with_overflow(
    strict: bool,
) -> (Env, Session, tether::Subscription, common::ManualHandle) {
    let mut cfg = config();
    cfg.recovery.max_frames = 5;
    let env = Env::with(cfg).await;
    let strategy = manual();
    let session = env
        .builder()
        .strict(strict)
        .reconnection_strategy_arc(strategy.strategy.clone())
        .open()
        .await
        .expect("open");
    let mut sub = session.subscribe("gap/topic").await.expect("subscribe");
    env.server.publish("gap/topic", "0").await.expect("publish");
    assert_eq!(
        within("first", sub.next()).await.expect("update").value,
        Bytes::from("0")
    );
    env.proxy.cut(CutMode::Rst);
    (env, session, sub, strategy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_outage_gives_a_gap_report_then_the_snapshot() {
    let (env, session, mut sub, mut strategy) = outage_with_overflow(false).await;
    let mut gaps = session.gap_reports();
    let attempt = strategy.next_attempt().await;
    for i in 1..=20 {
        env.server
            .publish("gap/topic", i.to_string())
            .await
            .expect("publish");
    }
    attempt.start();
    let report = within("gap report", gaps.next()).await.expect("report");
    assert_eq!(
        report.topics,
        vec![("gap/topic".to_string(), 20)],
        "{report:?}"
    );
    assert_eq!(report.lost_count(), 20);
    assert_eq!(
        report.lost_from, 2,
        "the subscription's first value was number 1"
    );
    let snapshot = within("snapshot", sub.next()).await.expect("snapshot");
    assert!(snapshot.snapshot);
    assert_eq!(
        snapshot.value,
        Bytes::from("20"),
        "the current value after the gap"
    );
    env.server
        .publish("gap/topic", "21")
        .await
        .expect("publish");
    let live = within("live", sub.next()).await.expect("update");
    assert_eq!((live.value, live.snapshot), (Bytes::from("21"), false));
    assert_eq!(session.state(), ConnectedActive);
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_session_closes_with_lost_messages_instead() {
    let (env, session, _sub, mut strategy) = outage_with_overflow(true).await;
    let attempt = strategy.next_attempt().await;
    for i in 1..=20 {
        env.server
            .publish("gap/topic", i.to_string())
            .await
            .expect("publish");
    }
    attempt.start();
    assert_eq!(
        within("closed", session.closed()).await,
        CloseReason::LostMessages
    );
    assert_eq!(session.state(), ClosedFailed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_while_disconnected_queue_up_to_the_limit_then_fail_typed_and_the_queued_ones_arrive_once()
 {
    let env = Env::start().await;
    let observer = Session::builder(&env.server.url())
        .principal("control")
        .password("password")
        .open()
        .await
        .expect("observer");
    let mut seen = observer.subscribe("queue/t").await.expect("subscribe");
    let mut strategy = manual();
    let session = env
        .builder()
        .send_queue(3, 1 << 20)
        .reconnection_strategy_arc(strategy.strategy.clone())
        .open()
        .await
        .expect("open");
    env.proxy.cut(CutMode::Rst);
    let attempt = strategy.next_attempt().await;
    let queued: Vec<_> = (1..=3)
        .map(|i| {
            session
                .send("queue/t", i.to_string())
                .expect("room for three")
        })
        .collect();
    let err = session.send("queue/t", "4").expect_err("full");
    assert!(matches!(err, Error::QueueFull(_)), "{err}");
    let err = session
        .publish("queue/t", "4")
        .await
        .expect_err("full while disconnected");
    assert!(matches!(err, Error::QueueFull(_)), "{err}");
    attempt.start();
    for c in queued {
        within("completion", c).await.expect("applied");
    }
    for i in 1..=3 {
        let u = within("observer", seen.next()).await.expect("update");
        assert_eq!(u.value, Bytes::from(i.to_string()));
    }
    assert!(
        seen.try_next().is_none(),
        "each queued publish arrived exactly once"
    );
    session.close().await;
    observer.close().await;
}
