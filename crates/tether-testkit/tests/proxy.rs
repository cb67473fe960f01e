//! Library-level tests of `FaultProxy` against an echo server on loopback.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    TIMEOUT, assert_eof, assert_refused, assert_reset, assert_silent, connect_and_echo, dead_addr,
    poll_until_echo_works, roundtrip, spawn_echo,
};
use tether_testkit::{CutMode, FaultProxy, ParseCutModeError, ProxyStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

const _: () = {
    const fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<FaultProxy>();
};

async fn start(upstream: SocketAddr) -> FaultProxy {
    FaultProxy::start("127.0.0.1:0".parse().expect("addr"), upstream)
        .await
        .expect("start proxy")
}

async fn forwarded(proxy: &FaultProxy, n: u64) {
    timeout(TIMEOUT, proxy.wait_for_forwarded(n))
        .await
        .expect("connections were not forwarded in time");
}

/// Deterministic pseudo-random bytes (xorshift), so corruption or reordering shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sends `data` through `stream` while reading the echo, then checks it.
async fn transfer_and_verify(stream: TcpStream, data: Vec<u8>) {
    let (mut r, mut w) = stream.into_split();
    let expected = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.expect("write");
        w.shutdown().await.expect("shutdown write");
    });
    let mut back = Vec::with_capacity(expected.len());
    timeout(Duration::from_secs(60), r.read_to_end(&mut back))
        .await
        .expect("transfer timed out")
        .expect("read echo");
    writer.await.expect("writer task");
    assert_eq!(back.len(), expected.len(), "echo length differs");
    assert!(back == expected, "echoed bytes differ from the ones sent");
}

#[tokio::test]
async fn forwards_both_ways_and_counts() {
    let (echo, _server) = spawn_echo().await;
    let proxy = start(echo).await;
    assert_eq!(proxy.upstream(), echo);
    assert!(proxy.local_addr().ip().is_loopback());
    assert_ne!(proxy.local_addr().port(), 0);

    let mut stream = connect_and_echo(proxy.local_addr()).await;
    for msg in [&b"hello"[..], b"x", &[0u8, 255, 10, 13]] {
        let back = roundtrip(&mut stream, msg).await.expect("roundtrip");
        assert_eq!(back, msg);
    }
    forwarded(&proxy, 1).await;
    let stats = proxy.stats();
    assert_eq!(stats.accepted_total, 1);
    assert_eq!(stats.forwarded_total, 1);
    assert_eq!(stats.active, 1);
    assert_eq!(stats.stalled, 0);

    // A client half-close reaches the echo server, whose close comes back as EOF.
    stream.shutdown().await.expect("shutdown write");
    assert_eof(&mut stream).await;
}

#[tokio::test]
async fn large_transfer_is_intact() {
    let (echo, _server) = spawn_echo().await;
    let proxy = start(echo).await;
    let stream = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    transfer_and_verify(stream, pattern(8 * 1024 * 1024)).await;
}

#[tokio::test]
async fn cut_rst_resets_client_and_new_connections_work() {
    let (echo, _server) = spawn_echo().await;
    let proxy = start(echo).await;
    let mut a = connect_and_echo(proxy.local_addr()).await;
    let mut b = connect_and_echo(proxy.local_addr()).await;
    forwarded(&proxy, 2).await;

    assert_eq!(proxy.cut(CutMode::Rst), 2);
    assert_reset(&mut a).await;
    assert_reset(&mut b).await;
    let stats = proxy.stats();
    assert_eq!(stats.cuts_total, 2);
    assert_eq!(stats.active, 0);

    let _c = connect_and_echo(proxy.local_addr()).await;
    assert_eq!(proxy.stats().forwarded_total, 3);
}

#[tokio::test]
async fn cut_fin_gives_eof_and_new_connections_work() {
    let (echo, _server) = spawn_echo().await;
    let proxy = start(echo).await;
    let mut a = connect_and_echo(proxy.local_addr()).await;
    forwarded(&proxy, 1).await;

    assert_eq!(proxy.cut(CutMode::Fin), 1);
    assert_eof(&mut a).await;
    assert_eq!(proxy.cut(CutMode::Fin), 0, "nothing left to cut");
    assert_eq!(proxy.stats().cuts_total, 1);

    let _b = connect_and_echo(proxy.local_addr()).await;
}

#[tokio::test]
async fn stall_silences_current_connections_only() {
    let (echo, _server) = spawn_echo().await;
    let proxy = start(echo).await;
    let mut stalled = connect_and_echo(proxy.local_addr()).await;
    forwarded(&proxy, 1).await;

    assert_eq!(proxy.stall(), 1);
    assert_eq!(proxy.stall(), 0, "already stalled");
    let stats = proxy.stats();
    assert_eq!((stats.active, stats.stalled), (0, 1));

    // The write is accepted by the kernel, but nothing is forwarded or echoed.
    stalled
        .write_all(b"anyone there?")
        .await
        .expect("write to stalled connection");
    assert_silent(&mut stalled).await;

    // New connections are forwarded normally.
    let _fresh = connect_and_echo(proxy.local_addr()).await;
    assert_eq!(proxy.stats().active, 1);

    // Heal drops the stalled connection with a reset.
    proxy.heal();
    assert_reset(&mut stalled).await;
    let stats = proxy.stats();
    assert_eq!((stats.active, stats.stalled), (1, 0));
}

#[tokio::test]
async fn cut_fin_also_closes_stalled_connections() {
    let (echo, _server) = spawn_echo().await;
    let proxy = start(echo).await;
    let mut a = connect_and_echo(proxy.local_addr()).await;
    forwarded(&proxy, 1).await;
    assert_eq!(proxy.stall(), 1);
    // Unread input at the proxy must not turn the FIN into a reset.
    a.write_all(b"unread by the proxy").await.expect("write");

    assert_eq!(proxy.cut(CutMode::Fin), 1);
    assert_eof(&mut a).await;
    assert_eq!(proxy.stats().stalled, 0);
}

#[tokio::test]
async fn refuse_resets_until_heal() {
    let (echo, _server) = spawn_echo().await;
    let proxy = start(echo).await;
    let mut existing = connect_and_echo(proxy.local_addr()).await;
    forwarded(&proxy, 1).await;

    proxy.refuse(None);
    assert!(proxy.stats().refusing);
    assert_refused(proxy.local_addr()).await;
    assert_refused(proxy.local_addr()).await;
    timeout(TIMEOUT, proxy.wait_for_refused(2))
        .await
        .expect("refusals not counted");
    let stats = proxy.stats();
    assert_eq!(stats.refused_total, 2);
    assert_eq!(stats.accepted_total, 3);
    assert_eq!(stats.forwarded_total, 1);

    // Refusing does not touch current connections.
    let back = roundtrip(&mut existing, b"still here")
        .await
        .expect("existing connection");
    assert_eq!(back, b"still here");

    proxy.heal();
    assert!(!proxy.stats().refusing);
    let _fresh = connect_and_echo(proxy.local_addr()).await;
    assert_eq!(proxy.stats().refused_total, 2);
}

#[tokio::test]
async fn refuse_with_duration_expires_by_itself() {
    let (echo, _server) = spawn_echo().await;
    let proxy = start(echo).await;
    let window = Duration::from_millis(300);
    let started = Instant::now();
    proxy.refuse(Some(window));
    assert_refused(proxy.local_addr()).await;
    timeout(TIMEOUT, proxy.wait_for_refused(1))
        .await
        .expect("refusal not counted");

    let worked_at = poll_until_echo_works(proxy.local_addr()).await;
    assert!(
        worked_at.duration_since(started) >= window,
        "a connection got through before the refuse window ended"
    );
    assert!(!proxy.stats().refusing);
}

#[tokio::test]
async fn delay_adds_latency_and_preserves_order() {
    let (echo, _server) = spawn_echo().await;
    let proxy = start(echo).await;
    let mut existing = connect_and_echo(proxy.local_addr()).await;

    let delay = Duration::from_millis(100);
    proxy.set_delay(delay);
    assert_eq!(proxy.stats().delay_ms, 100);

    // An idle connection opened before the delay is delayed too: one way out, one way back.
    let t0 = Instant::now();
    let back = roundtrip(&mut existing, b"slow").await.expect("roundtrip");
    assert_eq!(back, b"slow");
    assert!(
        t0.elapsed() >= 2 * delay,
        "round trip faster than 2 x delay"
    );

    // And so are new connections.
    let t0 = Instant::now();
    let _fresh = connect_and_echo(proxy.local_addr()).await;
    assert!(
        t0.elapsed() >= 2 * delay,
        "round trip faster than 2 x delay"
    );

    // Many chunks in flight at once arrive intact and in order.
    let stream = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    transfer_and_verify(stream, pattern(1024 * 1024)).await;

    // Heal removes the delay; the pipelined connection keeps working.
    proxy.heal();
    assert_eq!(proxy.stats().delay_ms, 0);
    let back = roundtrip(&mut existing, b"fast again")
        .await
        .expect("roundtrip");
    assert_eq!(back, b"fast again");
}

#[tokio::test]
async fn wait_for_forwarded_resolves_once_reached() {
    let (echo, _server) = spawn_echo().await;
    let proxy = start(echo).await;
    timeout(TIMEOUT, proxy.wait_for_forwarded(0))
        .await
        .expect("n = 0 resolves at once");

    let waiter = {
        let proxy = proxy.clone();
        tokio::spawn(async move { proxy.wait_for_forwarded(2).await })
    };
    let _a = connect_and_echo(proxy.local_addr()).await;
    let _b = connect_and_echo(proxy.local_addr()).await;
    timeout(TIMEOUT, waiter)
        .await
        .expect("wait_for_forwarded(2) did not resolve")
        .expect("waiter task");
    assert!(proxy.stats().forwarded_total >= 2);
}

#[tokio::test]
async fn wait_for_forwarded_does_not_count_refused() {
    let (echo, _server) = spawn_echo().await;
    let proxy = start(echo).await;
    proxy.refuse(None);
    assert_refused(proxy.local_addr()).await;
    let early = timeout(Duration::from_millis(200), proxy.wait_for_forwarded(1)).await;
    assert!(early.is_err(), "a refused connection counted as forwarded");
}

#[tokio::test]
async fn unreachable_upstream_resets_client_until_set_upstream() {
    let (echo, _server) = spawn_echo().await;
    let (dead, _placeholder) = dead_addr();
    let proxy = start(dead).await;
    assert_refused(proxy.local_addr()).await;
    let stats = proxy.stats();
    assert_eq!(stats.upstream_failures, 1);
    assert_eq!(stats.forwarded_total, 0);
    assert_eq!(stats.active, 0);

    proxy.set_upstream(echo);
    assert_eq!(proxy.upstream(), echo);
    let _stream = connect_and_echo(proxy.local_addr()).await;
    assert_eq!(proxy.stats().forwarded_total, 1);
}

#[tokio::test]
async fn shutdown_closes_listener_and_connections() {
    let (echo, _server) = spawn_echo().await;
    let proxy = start(echo).await;
    let mut stalled = connect_and_echo(proxy.local_addr()).await;
    forwarded(&proxy, 1).await;
    assert_eq!(proxy.stall(), 1);
    let mut active = connect_and_echo(proxy.local_addr()).await;
    forwarded(&proxy, 2).await;

    timeout(TIMEOUT, proxy.shutdown())
        .await
        .expect("shutdown did not finish");
    assert_reset(&mut stalled).await;
    assert_reset(&mut active).await;
    assert!(
        TcpStream::connect(proxy.local_addr()).await.is_err(),
        "proxy still listening after shutdown"
    );
    assert_eq!(proxy.cut(CutMode::Rst), 0);
    // Idempotent.
    timeout(TIMEOUT, proxy.shutdown())
        .await
        .expect("second shutdown did not finish");
}

#[tokio::test]
async fn dropping_last_handle_stops_proxy() {
    let (echo, _server) = spawn_echo().await;
    let proxy = start(echo).await;
    let clone = proxy.clone();
    let mut stream = connect_and_echo(proxy.local_addr()).await;
    drop(proxy);
    // A remaining clone keeps it running.
    let back = roundtrip(&mut stream, b"alive").await.expect("roundtrip");
    assert_eq!(back, b"alive");
    drop(clone);
    assert_reset(&mut stream).await;
}

#[test]
fn cut_mode_parses_and_displays() {
    assert_eq!("rst".parse::<CutMode>(), Ok(CutMode::Rst));
    assert_eq!("FIN".parse::<CutMode>(), Ok(CutMode::Fin));
    assert_eq!(CutMode::Rst.to_string(), "rst");
    assert_eq!(CutMode::Fin.to_string(), "fin");
    for mode in [CutMode::Rst, CutMode::Fin] {
        assert_eq!(mode.to_string().parse::<CutMode>(), Ok(mode));
    }
    let err = "reset".parse::<CutMode>().expect_err("not a mode");
    assert_eq!(err, ParseCutModeError("reset".to_owned()));
    assert!(err.to_string().contains("\"rst\""));
}

#[test]
fn stats_serialize_to_json_object() {
    let stats = ProxyStats {
        accepted_total: 3,
        refused_total: 1,
        ..ProxyStats::default()
    };
    let json = serde_json::to_value(stats).expect("serialize");
    for key in [
        "accepted_total",
        "forwarded_total",
        "refused_total",
        "upstream_failures",
        "cuts_total",
        "active",
        "stalled",
        "delay_ms",
        "refusing",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(json["accepted_total"], 3);
    let back: ProxyStats = serde_json::from_value(json).expect("deserialize");
    assert_eq!(back, stats);
}
