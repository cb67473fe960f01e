//! Hardening: slow or abusive clients get a typed refusal or close within a bounded time, and
//! every other session keeps working. Metrics and logs are checked here too.

mod common;

use common::*;

/// Sends raw bytes on a fresh TCP connection, ends its side, and returns everything the
/// server answers before it closes (bounded by `STEP`).
async fn raw(server: &Server, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = within("connect", TcpStream::connect(server.local_addr()))
        .await
        .expect("connect");
    within("write", tcp.write_all(bytes)).await.expect("write");
    // End of stream from the client: whatever is incomplete stays incomplete.
    let _ = tcp.shutdown().await;
    let mut answer = Vec::new();
    let _ = within(
        "the server to answer and close",
        tcp.read_to_end(&mut answer),
    )
    .await;
    answer
}

fn status_of(answer: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn upgrade_bytes(request: &SessionRequest) -> Vec<u8> {
    let mut text = String::from(
        "GET / HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    );
    for (name, value) in request.to_headers() {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_completes_is_dropped_and_others_keep_working() {
    let mut cfg = config();
    cfg.limits.handshake_timeout_ms = 300;
    let server = start(cfg).await;
    let mut bystander = open(&server, 60_000).await;
    bystander.subscribe("b/t").await;

    // Slowloris: a request head that trickles and never ends.
    let mut slow = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = within("the server to drop the slow client", slow.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "dropped without an answer");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before the handshake timeout"
    );
    // A client that connects and sends nothing at all.
    let mut silent = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let n = within(
        "the server to drop the silent client",
        silent.read(&mut buf),
    )
    .await
    .unwrap_or(0);
    assert_eq!(n, 0);
    assert_receives(&server, &mut bystander, "b/t", "still here").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sessions_from_one_principal_meets_its_limit() {
    let mut cfg = config();
    cfg.limits.max_sessions_per_principal = 3;
    let server = start(cfg).await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(open(&server, 60_000).await);
    }
    try_connect(&server, &open_request("control", "password", 60_000))
        .await
        .refused("a fourth session")
        .assert(429, CloseReason::LimitExceeded);
    // Freeing one makes room again; the others were never disturbed.
    let first = sessions.remove(0);
    let id = first.id();
    let mut first = first;
    first.send(ClientFrame::Close).await;
    within("freed", server.session_freed(&id)).await;
    sessions.push(open(&server, 60_000).await);
    for s in &mut sessions {
        s.subscribe("f/t").await;
    }
    server.publish("f/t", "all").await.expect("publish");
    for s in &mut sessions {
        assert_eq!(s.next_update().await.value, Bytes::from("all"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_connection_attempts_from_one_address_are_refused_typed() {
    let mut cfg = config();
    cfg.limits.connection_attempts_per_second_per_address = 2;
    let server = start(cfg).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(status_of(&raw(&server, b"GET / HTTP/1.1\r\n\r\n").await));
    }
    assert!(statuses.contains(&Some(429)), "{statuses:?}");
    let answer = raw(&server, b"GET / HTTP/1.1\r\n\r\n").await;
    if status_of(&answer) == Some(429) {
        assert!(String::from_utf8_lossy(&answer).contains("limit_exceeded"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_someone_elses_session_or_guessing_a_token_is_refused() {
    let mut cfg = config();
    cfg.principals.push(principal("mallory", &["**"], &["**"]));
    let server = start(cfg).await;
    let mut victim = open(&server, 60_000).await;
    victim.subscribe("v/t").await;
    let id = victim.id();
    // Mallory knows the session id (ids are not secrets) but not the token.
    let mallory = try_connect(&server, &open_request("mallory", "password", 60_000))
        .await
        .expect("mallory's own session");
    for guess in [
        mallory.token(),
        ResumeToken::from_bytes([0; 16]),
        ResumeToken::from_bytes([0xff; 16]),
    ] {
        try_connect(&server, &resume_request(id, &guess, 0))
            .await
            .refused("a guessed token")
            .assert(404, CloseReason::UnknownSession);
    }
    assert!(
        server.session(&id).is_some_and(|s| s.connected),
        "the victim's session is untouched"
    );
    assert_receives(&server, &mut victim, "v/t", "mine").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_loses_its_connection_not_the_servers_memory_and_resumes_with_a_gap() {
    let mut cfg = config();
    cfg.recovery.max_frames = 50;
    cfg.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    let server = start(cfg).await;
    let mut slow = open(&server, 60_000).await;
    slow.subscribe("big/t").await;
    let id = slow.id();
    let token = slow.token();
    // The client stops reading; the server keeps publishing 64 KiB values.
    let value = Bytes::from(vec![7u8; 64 * 1024]);
    let mut published = 0;
    while server.session(&id).is_some_and(|s| s.connected) {
        server
            .publish("big/t", value.clone())
            .await
            .expect("publish");
        published += 1;
        assert!(published < 100_000, "the slow consumer was never dropped");
        if published % 16 == 0 {
            tokio::task::yield_now().await;
        }
        let info = server.session(&id).expect("kept");
        assert!(
            info.buffered_frames <= 50,
            "buffer bounded: {}",
            info.buffered_frames
        );
    }
    assert!(
        server
            .metrics_text()
            .contains("tether_slow_consumers_total 1")
    );
    drop(slow);
    // The session is still there; a resume reports what was dropped. The client read none of
    // the updates: how many the server had written before the drop depends on timing, but
    // whatever it evicted (written or not) is a gap for a client that has none of them.
    let mut resumed = try_connect(&server, &resume_request(id, &token, 0))
        .await
        .expect("resumable after the slow-consumer drop");
    match resumed.next_frame().await {
        ServerFrame::Gap(report) => {
            assert_eq!(report.topics.first().map(|t| t.0.as_str()), Some("big/t"));
            assert!(report.lost_count() > 0);
        }
        other => panic!("expected a gap report first, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_on_their_own_listener() {
    let mut cfg = config();
    cfg.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    let server = start(cfg).await;
    let metrics_addr = server.metrics_addr().expect("metrics listener");
    assert_ne!(metrics_addr, server.local_addr());
    let client = open(&server, 60_000).await;
    let (id, token) = (client.id(), client.token());
    let _ = client.hang_up().await;
    let mut resumed = try_connect(&server, &resume_request(id, &token, 0))
        .await
        .expect("resume");
    resumed.subscribe("m/t").await;
    try_connect(&server, &open_request("control", "wrong", 60_000))
        .await
        .refused("wrong password")
        .assert(401, CloseReason::AuthenticationFailed);

    let mut tcp = TcpStream::connect(metrics_addr).await.expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut body = String::new();
    within("metrics", tcp.read_to_string(&mut body))
        .await
        .expect("read");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for line in [
        "tether_session_opens_total 1",
        "tether_session_resumes_total 1",
        "tether_sessions{state=\"connected\"} 1",
        "tether_sessions{state=\"disconnected\"} 0",
        "tether_refusals_total{reason=\"authentication_failed\"} 1",
        "tether_gap_reports_total 0",
    ] {
        assert!(body.contains(line), "missing {line:?} in:\n{body}");
    }
    let bytes_in = body
        .lines()
        .find_map(|l| l.strip_prefix("tether_received_bytes_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("received bytes");
    assert!(bytes_in > 0);
    let answer = {
        let mut tcp = TcpStream::connect(metrics_addr).await.expect("connect");
        tcp.write_all(b"GET /other HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut a = String::new();
        let _ = within("404", tcp.read_to_string(&mut a)).await;
        a
    };
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_and_truncated_frames_close_only_that_connection() {
    let server = start(config()).await;
    let mut bystander = open(&server, 60_000).await;
    bystander.subscribe("r/t").await;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20 {
        let junk: Vec<u8> = (0..512)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let answer = raw(&server, &junk).await;
        assert!(
            answer.is_empty() || status_of(&answer) == Some(400),
            "{answer:?}"
        );
    }
    // A valid upgrade followed by a truncated WebSocket frame, then the end of the stream.
    let mut bytes = upgrade_bytes(&open_request("control", "password", 0));
    bytes.extend_from_slice(&[0x82, 0xfe, 0x10]);
    let answer = raw(&server, &bytes).await;
    assert_eq!(status_of(&answer), Some(101));
    assert_receives(&server, &mut bystander, "r/t", "unharmed").await;
    assert_eq!(
        server.session_count(),
        1,
        "the truncated session (timeout 0) was freed"
    );
}
