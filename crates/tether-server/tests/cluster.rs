//! Sessions outlive their server: several real `tether-server` processes share a real
//! `redis-server`, and a client reaches them through the fault proxy, which a test points at
//! another node when it kills, freezes or crashes the one holding the session.
//!
//! Every test checks the two directions against what was sent: the client receives each update
//! once, in order; an observer on another node sees each of the client's publishes once, in
//! order; every publish the client was told is applied was applied, and the other way round.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tether::{CloseReason, Session, SessionState};
use tether_testkit::processes::{Node, Redis};
use tether_testkit::{CutMode, FaultProxy};

const BIN: &str = env!("CARGO_BIN_EXE_tether-server");

/// Bound on every wait, so that a failure fails instead of hanging.
const STEP: Duration = Duration::from_secs(30);

async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(STEP, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

fn node(redis: &Redis, env: &[(&str, &str)]) -> Node {
    let store = redis.url();
    Node::start(Path::new(BIN), &["--dev", "--store", &store], env).expect("a node starts")
}

fn builder(url: &str) -> tether::SessionBuilder {
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
async fn collect(sub: &mut tether::Subscription, n: u64) -> Vec<u64> {
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

fn assert_exactly_once_in_order(got: &[u64], n: u64, what: &str) {
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

/// A client through the proxy, an observer and a producer on `other`: `n` numbered messages
/// each way while `fault` strikes once a third has gone each way.
async fn both_ways_through(
    proxy: &FaultProxy,
    other: &Node,
    n: u64,
    fault: impl FnOnce() + Send + 'static,
) -> Session {
    let client = within(
        "open",
        builder(&format!("ws://{}", proxy.local_addr())).open(),
    )
    .await
    .expect("open through the proxy");
    let mut down = within("subscribe", client.subscribe("k/down"))
        .await
        .expect("subscribe");
    let observer = within("observer", builder(&other.url()).open())
        .await
        .expect("observer");
    let mut up = within("subscribe", observer.subscribe("k/up"))
        .await
        .expect("observer subscribes");
    let producer = within("producer", builder(&other.url()).open())
        .await
        .expect("producer");
    let id = client.session_id();

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
    assert_eq!(client.state(), SessionState::ConnectedActive);
    observer.close().await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_node_holding_a_session_loses_nothing_either_way() {
    let redis = Redis::start().expect("redis");
    let a = Arc::new(std::sync::Mutex::new(node(&redis, &[])));
    let b = node(&redis, &[]);
    let a_addr = a.lock().expect("node").addr();
    let proxy = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), a_addr)
        .await
        .expect("proxy");
    let (proxy_handle, b_addr) = (proxy.clone(), b.addr());
    let killed = a.clone();
    let client = both_ways_through(&proxy, &b, 300, move || {
        // The load balancer sends new connections to B; A dies with the session on it.
        proxy_handle.set_upstream(b_addr);
        killed.lock().expect("node").kill();
    })
    .await;
    client.close().await;
    assert_eq!(client.close_reason(), Some(CloseReason::ClosedByClient));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_cannot_write_for_a_session_resumed_elsewhere() {
    let redis = Redis::start().expect("redis");
    let a = Arc::new(std::sync::Mutex::new(node(&redis, &[])));
    let b = node(&redis, &[]);
    let a_addr = a.lock().expect("node").addr();
    let proxy = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), a_addr)
        .await
        .expect("proxy");
    let (proxy_handle, b_addr) = (proxy.clone(), b.addr());
    let frozen = a.clone();
    // A freezes holding requests it has read but not applied; the client moves to B and sends
    // them again; A wakes and tries to apply them: the store refuses (fenced), so each is
    // applied once, by B.
    let client = both_ways_through(&proxy, &b, 300, move || {
        frozen.lock().expect("node").freeze().expect("SIGSTOP");
        proxy_handle.set_upstream(b_addr);
        proxy_handle.cut(CutMode::Fin);
    })
    .await;
    a.lock().expect("node").thaw().expect("SIGCONT");
    // After the thaw, the session still works from B, and nothing A does reaches it.
    let mut again = within("subscribe", client.subscribe("k/after"))
        .await
        .expect("subscribe");
    client.publish("k/after", "1").await.expect("publish");
    let update = within("update", again.next()).await.expect("update");
    assert_eq!(update.value, "1".as_bytes());
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_crashing_between_an_append_and_its_ack_applies_the_publish_once() {
    for point in ["before_append", "after_append"] {
        let redis = Redis::start().expect("redis");
        let b = node(&redis, &[]);
        let mut a = node(&redis, &[("TETHER_FAILPOINT", point)]);
        let proxy = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), a.addr())
            .await
            .expect("proxy");
        let client = within(
            "open",
            builder(&format!("ws://{}", proxy.local_addr())).open(),
        )
        .await
        .expect("open");
        let observer = within("observer", builder(&b.url()).open())
            .await
            .expect("observer");
        let mut seen = within("subscribe", observer.subscribe("crash/t"))
            .await
            .expect("subscribe");
        proxy.set_upstream(b.addr());
        // A dies at the failpoint while handling this publish; the client resumes on B.
        let result = within("the publish", client.publish("crash/t", "once")).await;
        assert_eq!(result, Ok(()), "{point}: the publish is reported applied");
        assert!(
            a.try_exit_status().is_some() || a.log().contains("failpoint"),
            "{point}: node A crashed at the failpoint"
        );
        let update = within("the update", seen.next()).await.expect("update");
        assert_eq!(update.value, "once".as_bytes());
        // Exactly once: the next update is the marker, not a second copy.
        client.publish("crash/t", "marker").await.expect("marker");
        let next = within("the marker", seen.next()).await.expect("marker");
        assert_eq!(next.value, "marker".as_bytes(), "{point}: applied twice");
        client.close().await;
        observer.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_persistence_gives_a_typed_gap_never_a_silent_loss() {
    let mut redis = Redis::start().expect("redis");
    let a = node(&redis, &[]);
    let proxy = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), a.addr())
        .await
        .expect("proxy");
    let client = within(
        "open",
        builder(&format!("ws://{}", proxy.local_addr())).open(),
    )
    .await
    .expect("open");
    let mut gaps = client.gap_reports();
    let mut sub = within("subscribe", client.subscribe("g/**"))
        .await
        .expect("subscribe");
    let producer = within("producer", builder(&a.url()).open())
        .await
        .expect("producer");
    for i in 1..=5 {
        producer
            .publish("g/x", i.to_string())
            .await
            .expect("publish");
    }
    assert_eq!(collect(&mut sub, 5).await, vec![1, 2, 3, 4, 5]);
    // The engine forgets everything: the log, the current values, the session records.
    redis.restart_empty().expect("redis restarts");
    let after = tokio::time::timeout(STEP, async {
        let report = gaps.next().await.expect("the session reports the loss");
        assert!(
            report.topics.iter().any(|(t, _)| t == "g/x"),
            "the report names the topic: {report:?}"
        );
        // Publishing works again (the producer resumes too) and the client gets what follows.
        if let Err(e) = producer.publish("g/x", "6").await {
            panic!("publish after the restart: {e}; node log:\n{}", a.log());
        }
        loop {
            let update = sub.next().await.expect("update");
            if !update.snapshot {
                return update;
            }
        }
    })
    .await;
    let Ok(update) = after else {
        panic!(
            "no gap report and update after the restart; node log:\n{}",
            a.log()
        );
    };
    assert_eq!(update.value, "6".as_bytes());
    assert_eq!(client.state(), SessionState::ConnectedActive);
    client.close().await;
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_at_start_is_a_clear_error_naming_it() {
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let out = within(
        "the server to give up",
        tokio::process::Command::new(BIN)
            .args(["--dev", "--listen", "127.0.0.1:0", "--store", &url])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run tether-server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it must not start: {stderr}");
    assert!(stderr.contains(&url), "the error names the store: {stderr}");
    let bad = within(
        "the server to refuse",
        tokio::process::Command::new(BIN)
            .args(["--dev", "--store", "mongodb://x"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run tether-server");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("store.url"));
}
