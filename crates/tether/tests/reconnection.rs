//! End to end: the real server over real sockets, through the fault proxy.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Env, Recorder, manual, within};
use tether::strategy::{AbortImmediately, ConstantDelay};
use tether::{CloseReason, Error, Session, SessionState::*};
use tether_testkit::CutMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_attempts_retry_then_resume_with_same_id_and_subscriptions() {
    let env = Env::start().await;
    let rec = Recorder::default();
    let mut strategy = manual();
    let session = env
        .builder()
        .reconnection_strategy_arc(strategy.strategy.clone())
        .listener(rec.listener())
        .open()
        .await
        .expect("open");
    let id = session.session_id();
    let mut sub = session.subscribe("demo/**").await.expect("subscribe");
    env.server.publish("demo/a", "1").await.expect("publish");
    assert_eq!(
        within("first update", sub.next())
            .await
            .expect("update")
            .value,
        Bytes::from("1")
    );

    env.proxy.refuse(None);
    env.proxy.cut(CutMode::Rst);
    for n in 1..=3 {
        let attempt = strategy.next_attempt().await;
        assert_eq!(attempt.number(), n);
        if n == 1 {
            assert_eq!(attempt.last_reason(), CloseReason::TransportError);
        } else {
            assert_eq!(attempt.last_reason(), CloseReason::ConnectionError);
        }
        assert!(attempt.remaining() <= Duration::from_secs(60));
        assert!(attempt.start(), "the first start decides");
    }
    let fourth = strategy.next_attempt().await;
    assert_eq!(fourth.number(), 4);
    assert_eq!(
        strategy.failures(),
        3,
        "the failure hook fired after each refused attempt"
    );
    assert_eq!(session.state(), RecoveringReconnect);

    env.proxy.heal();
    assert!(fourth.start());
    within("success hook", strategy.successes.recv())
        .await
        .expect("success");
    assert_eq!(
        within("active", session.wait_for_state(ConnectedActive)).await,
        ConnectedActive
    );
    assert_eq!(session.session_id(), id, "same session after the resume");

    env.server.publish("demo/a", "2").await.expect("publish");
    let update = within("update after resume", sub.next())
        .await
        .expect("update");
    assert_eq!(
        update.value,
        Bytes::from("2"),
        "the old subscription still delivers"
    );
    assert!(!update.snapshot);

    session.close().await;
    rec.wait_len(4).await;
    assert_eq!(
        rec.transitions(),
        vec![
            (Connecting, ConnectedActive, None),
            (
                ConnectedActive,
                RecoveringReconnect,
                Some(CloseReason::TransportError)
            ),
            (RecoveringReconnect, ConnectedActive, None),
            (
                ConnectedActive,
                ClosedByClient,
                Some(CloseReason::ClosedByClient)
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_closes_with_reconnect_aborted() {
    let env = Env::start().await;
    let session = env
        .builder()
        .reconnection_strategy(AbortImmediately)
        .open()
        .await
        .expect("open");
    let mut changes = session.state_changes();
    env.proxy.cut(CutMode::Fin);
    assert_eq!(
        within("closed", session.closed()).await,
        CloseReason::ReconnectAborted
    );
    assert_eq!(session.state(), ClosedFailed);
    let seen: Vec<_> = std::iter::from_fn(|| changes.try_next()).collect();
    assert_eq!(
        seen.iter()
            .map(|c| (c.old, c.new, c.reason))
            .collect::<Vec<_>>(),
        vec![
            (
                ConnectedActive,
                RecoveringReconnect,
                Some(CloseReason::TransportError)
            ),
            (
                RecoveringReconnect,
                ClosedFailed,
                Some(CloseReason::ReconnectAborted)
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_that_never_decides_meets_the_timeout() {
    let env = Env::start().await;
    let session = env
        .builder()
        .reconnection_timeout(Duration::from_millis(800))
        .reconnection_strategy(|_attempt: tether::ReconnectionAttempt| {})
        .open()
        .await
        .expect("open");
    env.proxy.cut(CutMode::Rst);
    assert_eq!(
        within("closed", session.closed()).await,
        CloseReason::ReconnectTimeout
    );
    assert_eq!(session.state(), ClosedFailed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_wins_over_a_strategy_that_keeps_trying() {
    let env = Env::start().await;
    let session = env
        .builder()
        .reconnection_timeout(Duration::from_millis(800))
        .reconnection_strategy(ConstantDelay::new(Duration::from_millis(20)))
        .open()
        .await
        .expect("open");
    env.proxy.refuse(None);
    env.proxy.cut(CutMode::Rst);
    assert_eq!(
        within("closed", session.closed()).await,
        CloseReason::ReconnectTimeout
    );
    assert!(
        env.proxy.stats().refused_total >= 2,
        "the strategy kept trying until the timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_timeout_goes_straight_to_closed_failed_and_the_server_frees_at_once() {
    let env = Env::start().await;
    let rec = Recorder::default();
    let session = env
        .builder()
        .no_reconnection()
        .listener(rec.listener())
        .open()
        .await
        .expect("open");
    let id = session.session_id();
    assert_eq!(session.reconnection_timeout(), Duration::ZERO);
    env.proxy.cut(CutMode::Rst);
    assert_eq!(
        within("closed", session.closed()).await,
        CloseReason::TransportError
    );
    within("server frees the session", env.server.session_freed(&id)).await;
    assert!(env.server.session(&id).is_none());
    rec.wait_len(2).await;
    assert!(
        !rec.transitions().iter().any(|t| t.1 == RecoveringReconnect),
        "no RECOVERING_RECONNECT: {:?}",
        rec.transitions()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_the_server_does_not_know_closes_with_unknown_session() {
    let env = Env::start().await;
    // A second server stands for the first one restarted: it has never heard of the session.
    let restarted = tether_server::Server::bind(common::config())
        .await
        .expect("server");
    let session = env
        .builder()
        .reconnection_strategy(ConstantDelay::new(Duration::ZERO))
        .open()
        .await
        .expect("open");
    env.proxy.set_upstream(restarted.local_addr());
    env.proxy.cut(CutMode::Rst);
    assert_eq!(
        within("closed", session.closed()).await,
        CloseReason::UnknownSession
    );
    assert_eq!(session.state(), ClosedFailed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_abort_called_twice_from_another_thread_or_after_close_are_harmless() {
    let env = Env::start().await;
    let mut strategy = manual();
    let session = env
        .builder()
        .reconnection_strategy_arc(strategy.strategy.clone())
        .open()
        .await
        .expect("open");
    env.proxy.cut(CutMode::Rst);
    let attempt = strategy.next_attempt().await;
    let from_thread = {
        let attempt = attempt.clone();
        std::thread::spawn(move || (attempt.start(), attempt.start(), attempt.abort()))
            .join()
            .expect("thread")
    };
    assert_eq!(
        from_thread,
        (true, false, false),
        "only the first call decides"
    );
    assert!(attempt.is_decided());
    within("active", session.wait_for_state(ConnectedActive)).await;
    assert_eq!(
        env.proxy.stats().forwarded_total,
        2,
        "exactly one reconnection attempt"
    );

    // A second outage, then close while the strategy holds the attempt.
    env.proxy.cut(CutMode::Rst);
    let late = strategy.next_attempt().await;
    session.close().await;
    assert_eq!(session.state(), ClosedByClient);
    assert!(!late.start(), "start after close does nothing");
    assert!(!late.abort());
    late.start_after(Duration::from_millis(1));
    assert_eq!(env.proxy.stats().forwarded_total, 2);
    assert_eq!(session.close_reason(), Some(CloseReason::ClosedByClient));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_close_gives_closed_by_server_connected_or_recovering() {
    let env = Env::start().await;
    let rec = Recorder::default();
    let session = env
        .builder()
        .listener(rec.listener())
        .open()
        .await
        .expect("open");
    assert!(env.server.close_session(&session.session_id(), "operator"));
    assert_eq!(
        within("closed", session.closed()).await,
        CloseReason::ClosedByServer
    );
    assert_eq!(session.state(), ClosedByServer);

    let mut strategy = manual();
    let session = env
        .builder()
        .reconnection_strategy_arc(strategy.strategy.clone())
        .open()
        .await
        .expect("open");
    env.proxy.cut(CutMode::Rst);
    let attempt = strategy.next_attempt().await;
    // Whether or not the server has noticed the cut yet, closing tombstones the session.
    assert!(env.server.close_session(&session.session_id(), "operator"));
    attempt.start();
    assert_eq!(
        within("closed", session.closed()).await,
        CloseReason::ClosedByServer
    );
    assert_eq!(session.state(), ClosedByServer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_during_recovery_is_closed_by_client() {
    let env = Env::start().await;
    let rec = Recorder::default();
    let mut strategy = manual();
    let session = env
        .builder()
        .reconnection_strategy_arc(strategy.strategy.clone())
        .listener(rec.listener())
        .open()
        .await
        .expect("open");
    env.proxy.cut(CutMode::Rst);
    let _attempt = strategy.next_attempt().await;
    session.close().await;
    rec.wait_len(3).await;
    assert_eq!(
        rec.transitions().last().copied(),
        Some((
            RecoveringReconnect,
            ClosedByClient,
            Some(CloseReason::ClosedByClient)
        ))
    );
    let err = session.publish("a", "b").await.expect_err("closed");
    assert_eq!(
        err,
        Error::Closed {
            reason: CloseReason::ClosedByClient
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_to_open_and_listeners_see_connecting_to_closed_failed() {
    let env = Env::start().await;
    let rec = Recorder::default();
    let err = Session::builder(&env.url())
        .principal("control")
        .password("wrong")
        .listener(rec.listener())
        .open()
        .await
        .expect_err("refused");
    assert_eq!(
        err.reason(),
        Some(CloseReason::AuthenticationFailed),
        "{err}"
    );
    let err = Session::builder(&env.url())
        .principal("nobody")
        .password("x")
        .open()
        .await
        .expect_err("refused");
    assert_eq!(err.reason(), Some(CloseReason::AuthenticationFailed));
    let err = Session::builder(&env.url())
        .open()
        .await
        .expect_err("anonymous is off");
    assert_eq!(err.reason(), Some(CloseReason::AuthenticationFailed));
    rec.wait_len(1).await;
    assert_eq!(
        rec.transitions(),
        vec![(
            Connecting,
            ClosedFailed,
            Some(CloseReason::AuthenticationFailed)
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_connection_error() {
    let env = Env::start().await;
    env.proxy.refuse(None);
    let err = env.builder().open().await.expect_err("refused");
    assert_eq!(err.reason(), Some(CloseReason::ConnectionError), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_urls_selectors_topics_and_arguments_are_typed_errors() {
    for url in [
        "not a url",
        "http://127.0.0.1:1",
        "ws://",
        "ftp://example.com",
    ] {
        let err = Session::builder(url).open().await.expect_err("invalid");
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
    }
    let err = Session::builder("ws://127.0.0.1:1")
        .password("x")
        .open()
        .await
        .expect_err("invalid");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let err = Session::builder("ws://127.0.0.1:1")
        .principal("line\nbreak")
        .password("x")
        .open()
        .await
        .expect_err("invalid");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");

    let env = Env::start().await;
    let session = env.builder().open().await.expect("open");
    for selector in ["", "a//b", "a/b*", "a/**/b"] {
        let err = session.subscribe(selector).await.expect_err("invalid");
        assert!(matches!(err, Error::InvalidTopic(_)), "{selector:?}: {err}");
    }
    let err = session.publish("a/*", "x").await.expect_err("invalid");
    assert!(matches!(err, Error::InvalidTopic(_)));
    let err = session
        .unsubscribe("never/subscribed")
        .await
        .expect_err("not subscribed");
    assert_eq!(
        err.request_error_kind(),
        Some(tether::RequestErrorKind::NotSubscribed)
    );
    assert_eq!(session.state(), ConnectedActive);
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_is_typed_leaves_the_session_usable_and_leaks_nothing() {
    let env = Env::start().await;
    let session = env.open_as("reader", "secret").await;
    for selector in ["secret/**", "**", "secret/x"] {
        let err = session.subscribe(selector).await.expect_err("denied");
        assert!(err.is_access_denied(), "{selector}: {err}");
    }
    let err = session.publish("secret/x", "no").await.expect_err("denied");
    assert!(err.is_access_denied(), "{err}");
    let err = session
        .publish("public/other", "no")
        .await
        .expect_err("denied");
    assert!(err.is_access_denied(), "{err}");
    assert_eq!(session.state(), ConnectedActive);

    let mut sub = session.subscribe("public/**").await.expect("allowed");
    env.server
        .publish("secret/x", "leak?")
        .await
        .expect("publish");
    session
        .publish("public/chat", "hello")
        .await
        .expect("allowed publish");
    let first = within("update", sub.next()).await.expect("update");
    assert_eq!(
        (&*first.topic, first.value.as_ref()),
        ("public/chat", b"hello".as_ref())
    );
    assert!(
        sub.try_next().is_none(),
        "nothing from secret/ reached the reader"
    );
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscription_gets_the_current_value_first_then_updates_and_unsubscribe_ends_it() {
    let env = Env::start().await;
    let publisher = env.builder().open().await.expect("open");
    let subscriber = env.builder().open().await.expect("open");
    publisher
        .publish("prices/acme", "41")
        .await
        .expect("publish");
    let mut sub = subscriber.subscribe("prices/*").await.expect("subscribe");
    let first = within("snapshot", sub.next()).await.expect("snapshot");
    assert!(first.snapshot);
    assert_eq!(first.value, Bytes::from("41"));
    publisher
        .publish("prices/acme", "42")
        .await
        .expect("publish");
    let next = within("update", sub.next()).await.expect("update");
    assert!(!next.snapshot);
    assert_eq!(next.value, Bytes::from("42"));
    assert_eq!(next.position.partition, first.position.partition);
    assert_eq!(next.position.offset, first.position.offset + 1);
    subscriber
        .unsubscribe("prices/*")
        .await
        .expect("unsubscribe");
    assert_eq!(within("end of stream", sub.next()).await, None);
    publisher.close().await;
    subscriber.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_shutdown_closes_sessions_as_closed_by_server_without_a_reconnect_loop() {
    let env = Env::start().await;
    let rec = Recorder::default();
    let mut strategy = manual();
    let session = env
        .builder()
        .reconnection_strategy_arc(strategy.strategy.clone())
        .listener(rec.listener())
        .open()
        .await
        .expect("open");
    let Env { server, proxy } = env;
    server.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        within("closed", session.closed()).await,
        CloseReason::ClosedByServer
    );
    assert_eq!(session.state(), ClosedByServer);
    rec.wait_len(2).await;
    assert_eq!(
        rec.transitions(),
        vec![
            (Connecting, ConnectedActive, None),
            (
                ConnectedActive,
                ClosedByServer,
                Some(CloseReason::ClosedByServer)
            ),
        ]
    );
    assert!(
        strategy.attempts.try_recv().is_err(),
        "the strategy was never called"
    );
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_closes_the_session() {
    let env = Env::start().await;
    let session = env.builder().open().await.expect("open");
    let id = session.session_id();
    let clone = session.clone();
    let mut changes = session.state_changes();
    drop(session);
    assert!(env.server.session(&id).is_some(), "a clone still holds it");
    drop(clone);
    let last = within("closed", async {
        let mut last = None;
        while let Some(c) = changes.next().await {
            last = Some(c);
        }
        last
    })
    .await;
    assert_eq!(last.map(|c| c.new), Some(ClosedByClient));
    within("server frees it", env.server.session_freed(&id)).await;
}

/// Publishes queued together go out in one message and are checked one by one: refused ones
/// between allowed ones (twice in a row, too) are refused, and refusing them does not refuse
/// the allowed ones after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_queued_together_are_each_checked_against_the_permissions() {
    let env = Env::start().await;
    let session = env.open_as("reader", "secret").await;
    let topics = [
        "public/chat",
        "public/chat",
        "public/other",
        "public/chat",
        "secret/x",
        "secret/x",
        "public/other",
        "public/chat",
    ];
    let completions: Vec<_> = topics
        .iter()
        .map(|t| session.send(t, "v").expect("queued"))
        .collect();
    for (topic, completion) in topics.iter().zip(completions) {
        let outcome = within("a completion", completion).await;
        if *topic == "public/chat" {
            assert!(outcome.is_ok(), "{topic}: {outcome:?}");
        } else {
            let err = outcome.expect_err("refused");
            assert!(err.is_access_denied(), "{topic}: {err}");
        }
    }
    session.close().await;
}
