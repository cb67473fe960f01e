//! Sessions outlive their server: several real `tether-server` processes share a real
//! `redis-server`, and a client reaches them through the fault proxy, which a test points at
//! another node when it kills, freezes or crashes the one holding the session.
//!
//! Every test checks the two directions against what was sent: the client receives each update
//! once, in order; an observer on another node sees each of the client's publishes once, in
//! order; every publish the client was told is applied was applied, and the other way round.

mod support;

use std::sync::Arc;

use tether::{CloseReason, SessionState};
use tether_testkit::processes::Redis;
use tether_testkit::{CutMode, FaultProxy};

use support::{BIN, STEP, both_ways_through, builder, collect, node, within};

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
    let (client, _) = both_ways_through(&proxy, &b.url(), 300, move || {
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
    let (client, _) = both_ways_through(&proxy, &b.url(), 300, move || {
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
