//! Closing a session never reports an applied request as failed: requests queued before
//! `close()` are written first and completed by the server's final ack; a request whose fate
//! the client cannot know fails as "outcome unknown", one never written as "closed".

mod common;

use std::time::Duration;

use common::{Env, within};
use tether::{CloseReason, Error, SessionState};
use tether_testkit::CutMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_before_close_are_applied_and_reported_applied() {
    let env = Env::start().await;
    let observer = env.builder().open().await.expect("observer");
    let mut seen = observer.subscribe("close/**").await.expect("subscribe");
    // Many rounds: the bug this guards against (the close frame overtaking queued requests)
    // showed in every run, but its timing varies.
    for round in 0..20u32 {
        let session = env.builder().open().await.expect("open");
        let topic = format!("close/{round}");
        let completions: Vec<_> = (0..5)
            .map(|i| session.send(&topic, format!("{i}")).expect("queued"))
            .collect();
        within("close", session.close()).await;
        assert_eq!(session.close_reason(), Some(CloseReason::ClosedByClient));
        for (i, c) in completions.into_iter().enumerate() {
            assert_eq!(
                within("completion", c).await,
                Ok(()),
                "round {round}: publish {i} was queued before close()"
            );
        }
        // Each reported applied was applied: the observer sees all five, in order.
        for i in 0..5 {
            let update = within("update", seen.next()).await.expect("subscribed");
            assert_eq!(*update.topic, *topic);
            assert_eq!(update.value, format!("{i}").as_bytes());
        }
        // Requests after close() are refused at the call and never sent.
        assert!(matches!(
            session.send(&topic, "late"),
            Err(Error::Closed { .. })
        ));
    }
    observer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_written_but_unconfirmed_at_close_is_outcome_unknown_not_failed() {
    let env = Env::start().await;
    let session = env
        .builder()
        .close_timeout(Duration::from_millis(300))
        .open()
        .await
        .expect("open");
    // The connection goes silent both ways: what the client writes may or may not arrive.
    assert_eq!(env.proxy.stall(), 1);
    let completion = session.send("close/stalled", "x").expect("queued");
    within("close", session.close()).await;
    match within("completion", completion).await {
        Err(Error::OutcomeUnknown { reason }) => assert_eq!(reason, CloseReason::ClosedByClient),
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_never_written_fails_as_closed_when_the_session_closes() {
    let env = Env::start().await;
    let (attempts_tx, mut attempts) = tokio::sync::mpsc::unbounded_channel();
    let session = env
        .builder()
        .reconnection_strategy(move |a: tether::strategy::ReconnectionAttempt| {
            let _ = attempts_tx.send(a);
        })
        .open()
        .await
        .expect("open");
    env.proxy.cut(CutMode::Rst);
    within(
        "recovering",
        session.wait_for_state(SessionState::RecoveringReconnect),
    )
    .await;
    let _attempt = within("strategy call", attempts.recv()).await;
    // Queued while disconnected: it cannot have reached the server.
    let completion = session.send("close/never", "x").expect("queued");
    within("close", session.close()).await;
    assert_eq!(
        within("completion", completion).await,
        Err(Error::Closed {
            reason: CloseReason::ClosedByClient
        })
    );
}
