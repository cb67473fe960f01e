//! A consumer slower than the stream: the session stops reading past its delivery limit
//! instead of buffering without bound, the server's slow-consumer handling drops the
//! connection, and the resume reports what was dropped with a gap report; afterwards the
//! subscription carries on.

mod common;

use common::{Env, config, within};
use tether::SessionState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_nobody_reads_costs_bounded_memory_and_ends_in_a_gap_report() {
    let mut cfg = config();
    cfg.ping_period_ms = 200;
    cfg.recovery.max_frames = 2_000;
    let env = Env::with(cfg).await;
    let session = env
        .builder()
        .delivery_limit(500)
        .open()
        .await
        .expect("open");
    let mut gaps = session.gap_reports();
    let mut changes = session.state_changes();
    let mut sub = session.subscribe("bp/t").await.expect("subscribe");
    // Far more than the client may hold and the server may keep, while nobody reads.
    for i in 0..20_000u32 {
        env.server
            .publish("bp/t", i.to_be_bytes().to_vec())
            .await
            .expect("publish");
        if i % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // The session stopped reading: its connection goes silent and is dropped as idle, with
    // what the server had written on it. Had the client buffered everything instead, nothing
    // would be lost and no gap reported: the report is the proof that the bound held.
    loop {
        let change = within("the paused connection to drop", changes.next())
            .await
            .expect("a change");
        if change.new == SessionState::RecoveringReconnect {
            assert_eq!(change.reason, Some(tether::CloseReason::IdleConnection));
            break;
        }
    }
    let reader = tokio::spawn(async move {
        let mut taken = 0u64;
        while sub.next().await.is_some() {
            taken += 1;
        }
        taken
    });
    let report = within("a gap report", gaps.next())
        .await
        .expect("gap report");
    assert!(report.lost_count() > 0);
    assert!(
        report.topics.iter().any(|(t, _)| t == "bp/t"),
        "the report names the topic: {report:?}"
    );
    within(
        "the session is active again",
        session.wait_for_state(SessionState::ConnectedActive),
    )
    .await;
    // The subscription carries on after the gap.
    env.server.publish("bp/t", "after").await.expect("publish");
    let mut again = session.subscribe("bp/after").await.expect("subscribe");
    env.server.publish("bp/after", "x").await.expect("publish");
    assert_eq!(
        within("a later update", again.next())
            .await
            .expect("update")
            .value,
        "x".as_bytes()
    );
    session.close().await;
    let taken = within("the reader", reader).await.expect("reader");
    assert!(taken < 20_000, "some were dropped (and reported): {taken}");
}
