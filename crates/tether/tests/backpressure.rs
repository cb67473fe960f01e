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
    // The session stopped reading: its connection goes silent and is dropped, with what the
    // server had written on it: as idle by the client, or by the server as a slow consumer
    // (the client's next ping then fails), whichever comes first. Had the client buffered
    // everything instead, nothing would be lost and no gap reported: the report is the proof
    // that the bound held.
    loop {
        let change = within("the paused connection to drop", changes.next())
            .await
            .expect("a change");
        if change.new == SessionState::RecoveringReconnect {
            assert!(
                matches!(
                    change.reason,
                    Some(tether::CloseReason::IdleConnection | tether::CloseReason::TransportError)
                ),
                "dropped as idle or by the server, not {:?}",
                change.reason
            );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_read_one_by_one_and_in_batches_arrive_in_order_and_free_their_room() {
    let env = Env::start().await;
    // A small limit: reading must give the room back, or the second round never arrives.
    let session = env
        .builder()
        .delivery_limit(100)
        .open()
        .await
        .expect("open");
    let mut sub = session.subscribe("batch/t").await.expect("subscribe");
    for round in 0..2u32 {
        for i in 0..1_000u32 {
            env.server
                .publish("batch/t", (round * 1_000 + i).to_be_bytes().to_vec())
                .await
                .expect("publish");
        }
        let mut got = Vec::new();
        while got.len() < 1_000 {
            // Batches of at most 7, single updates waited for, and single ones taken if ready.
            match got.len() % 3 {
                0 => {
                    let batch = within("a batch", sub.next_batch(7))
                        .await
                        .expect("subscribed");
                    assert!((1..=7).contains(&batch.len()), "batch of {}", batch.len());
                    got.extend(batch);
                }
                1 => got.push(within("an update", sub.next()).await.expect("subscribed")),
                _ => match sub.try_next() {
                    Some(u) => got.push(u),
                    None => got.push(within("an update", sub.next()).await.expect("open")),
                },
            }
        }
        let values: Vec<u32> = got
            .iter()
            .map(|u| u32::from_be_bytes(u.value[..].try_into().expect("4 bytes")))
            .collect();
        let expected: Vec<u32> = (round * 1_000..round * 1_000 + 1_000).collect();
        assert_eq!(
            values, expected,
            "round {round}: in order, none lost or repeated"
        );
    }
    assert_eq!(session.state(), SessionState::ConnectedActive);
    session.close().await;
}
