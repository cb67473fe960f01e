//! What the cluster and drain tests share: real processes, sessions through the fault proxy,
//! and numbered messages both ways checked for loss, duplication and order.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::time::Duration;

use tether::{Session, SessionState};
use tether_testkit::FaultProxy;
use tether_testkit::processes::{Node, Redis};

pub const BIN: &str = env!("CARGO_BIN_EXE_tether-server");

/// Bound on every wait, so that a failure fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(30);

pub async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(STEP, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

pub fn node(redis: &Redis, env: &[(&str, &str)]) -> Node {
    let store = redis.url();
    Node::start(Path::new(BIN), &["--dev", "--store", &store], env).expect("a node starts")
}

pub fn builder(url: &str) -> tether::SessionBuilder {
    Session::builder(url)
        .principal("control")
        .password("password")
        // Resume as soon as the connection is gone, then every 50 ms: the tests wait for
        // events, not for backoff.
        .reconnection_strategy(tether::strategy::ConstantDelay::new(Duration::from_millis(
            50,
        )))
}

/// The numbers carried by a subscription's updates until `n` arrived (or the wait failed).
pub async fn collect(sub: &mut tether::Subscription, n: u64) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < n as usize {
        let Some(update) = within("an update", sub.next()).await else {
            break;
        };
        if update.snapshot {
            continue;
        }
        let text = String::from_utf8_lossy(&update.value).into_owned();
        got.push(text.parse().expect("a number"));
    }
    got
}

pub fn assert_exactly_once_in_order(got: &[u64], n: u64, what: &str) {
    let want: Vec<u64> = (1..=n).collect();
    if got != want.as_slice() {
        let missing = want.iter().filter(|i| !got.contains(i)).count();
        let dup = got.len() - got.iter().collect::<std::collections::HashSet<_>>().len();
        panic!(
            "{what}: {} received, {missing} missing, {dup} duplicated, first difference at {:?}",
            got.len(),
            got.iter().zip(&want).position(|(a, b)| a != b)
        );
    }
}

/// A client through the proxy, an observer and a producer at the URL `other`: `n` numbered
/// messages each way while `fault` strikes once a third has gone each way. Returns the client
/// and the reasons of its disconnections.
pub async fn both_ways_through(
    proxy: &FaultProxy,
    other: &str,
    n: u64,
    fault: impl FnOnce() + Send + 'static,
) -> (Session, Vec<tether::CloseReason>) {
    let client = within(
        "open",
        builder(&format!("ws://{}", proxy.local_addr())).open(),
    )
    .await
    .expect("open through the proxy");
    let mut down = within("subscribe", client.subscribe("k/down"))
        .await
        .expect("subscribe");
    let observer = within("observer", builder(other).open())
        .await
        .expect("observer");
    let mut up = within("subscribe", observer.subscribe("k/up"))
        .await
        .expect("observer subscribes");
    let producer = within("producer", builder(other).open())
        .await
        .expect("producer");
    let id = client.session_id();
    let mut changes = client.state_changes();

    let (third_tx, third_rx) = tokio::sync::oneshot::channel::<()>();
    let faulted = tokio::spawn(async move {
        if third_rx.await.is_ok() {
            fault();
        }
    });
    let producing = tokio::spawn(async move {
        for i in 1..=n {
            producer
                .publish("k/down", i.to_string())
                .await
                .expect("the producer's node stays up");
        }
        producer
    });
    let c = client.clone();
    let sending = tokio::spawn(async move {
        let mut completions = Vec::new();
        for i in 1..=n {
            completions.push(c.send("k/up", i.to_string()).expect("queued"));
            if i % 20 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let mut results = Vec::new();
        for done in completions {
            results.push(done.await);
        }
        results
    });
    let mut got_down = collect(&mut down, n / 3).await;
    let _ = third_tx.send(());
    got_down.extend(collect(&mut down, n - got_down.len() as u64).await);
    let got_up = collect(&mut up, n).await;
    let results = within("the client's publishes", sending)
        .await
        .expect("sender");
    within("the producer", producing).await.expect("producer");
    within("the fault", faulted).await.expect("fault");

    assert_exactly_once_in_order(&got_down, n, "server → client");
    assert_exactly_once_in_order(&got_up, n, "client → server");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r, &Ok(()), "publish {} was applied and must say so", i + 1);
    }
    assert_eq!(client.session_id(), id, "the same session throughout");
    let mut reasons = Vec::new();
    let mut history = Vec::new();
    while let Some(change) = changes.try_next() {
        history.push(change);
        if change.new == SessionState::RecoveringReconnect {
            reasons.extend(change.reason);
        }
    }
    assert_eq!(
        client.state(),
        SessionState::ConnectedActive,
        "state changes: {history:?}"
    );
    observer.close().await;
    (client, reasons)
}
