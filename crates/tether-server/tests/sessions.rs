//! The server over real loopback sockets, driven by a raw client written here with
//! tokio-tungstenite and the protocol crate (no Tether client library): retention, resume,
//! takeover, refusals, malformed frames and access control.

mod common;

use common::*;

#[tokio::test]
async fn granted_timeout_is_the_smaller_of_request_and_server_maximum() {
    let server = start(config()).await;
    let client = open(&server, 2000).await;
    assert_eq!(
        client.accepted.reconnect_timeout,
        Duration::from_millis(2000)
    );
    let info = server.session(&client.id()).expect("session kept");
    assert_eq!(info.reconnect_timeout, Duration::from_millis(2000));

    let server = start(ServerConfig {
        max_reconnect_timeout_ms: 1000,
        ..config()
    })
    .await;
    let client = open(&server, 10_000_000).await;
    assert_eq!(
        client.accepted.reconnect_timeout,
        Duration::from_millis(1000)
    );
    let info = server.session(&client.id()).expect("session kept");
    assert_eq!(info.reconnect_timeout, Duration::from_millis(1000));
}

#[tokio::test]
async fn disconnected_session_is_kept_for_its_timeout_then_freed() {
    let server = start(config()).await;
    let client = open(&server, 2000).await;
    let (id, token) = (client.id(), client.token());

    let dropped = Instant::now();
    let frames = client.hang_up().await;
    assert_no_close(&frames);
    // The server ends its side only after it has marked the session disconnected.
    let info = server
        .session(&id)
        .expect("session kept after the connection dropped");
    assert!(!info.connected, "{info:?}");
    assert_eq!(server.session_count(), 1);

    within("the session to be freed", server.session_freed(&id)).await;
    let kept = dropped.elapsed();
    assert!(
        kept >= Duration::from_millis(1900),
        "freed after {kept:?}, before its 2 s reconnection timeout"
    );
    assert!(server.session(&id).is_none());
    assert_eq!(server.session_count(), 0);

    let refused = try_connect(&server, &resume_request(id, &token, 0))
        .await
        .refused("resume of a freed session refused");
    refused.assert(404, CloseReason::UnknownSession);
}

#[tokio::test]
async fn session_with_zero_timeout_is_freed_when_its_connection_drops() {
    let server = start(config()).await;
    let client = open(&server, 0).await;
    assert_eq!(client.accepted.reconnect_timeout, Duration::ZERO);
    let (id, token) = (client.id(), client.token());
    assert!(server.session(&id).is_some());
    drop(client);
    within("the session to be freed", server.session_freed(&id)).await;
    assert!(server.session(&id).is_none());
    let refused = try_connect(&server, &resume_request(id, &token, 0))
        .await
        .refused("resume refused");
    refused.assert(404, CloseReason::UnknownSession);
}

// 2. Resume tokens.

#[tokio::test]
async fn wrong_token_is_refused_and_leaves_the_session_intact_and_tokens_rotate() {
    let server = start(config()).await;
    let client = open(&server, 60_000).await;
    let (id, token) = (client.id(), client.token());
    assert_no_close(&client.hang_up().await);

    let mut wrong = *token.as_bytes();
    wrong[0] ^= 1;
    let refused = try_connect(
        &server,
        &resume_request(id, &ResumeToken::from_bytes(wrong), 0),
    )
    .await
    .refused("wrong token refused");
    refused.assert(404, CloseReason::UnknownSession);
    let info = server.session(&id).expect("session untouched");
    assert!(!info.connected);

    let mut resumed = try_connect(&server, &resume_request(id, &token, 0))
        .await
        .expect("the real token still resumes");
    assert_eq!(resumed.id(), id);
    assert_ne!(
        resumed.token().as_bytes(),
        token.as_bytes(),
        "the token must rotate on resume"
    );
    assert!(server.session(&id).expect("kept").connected);

    // The refusal of a wrong token did not disturb the current connection.
    resumed.subscribe("t/x").await;
    assert_receives(&server, &mut resumed, "t/x", "still here").await;

    // Once the rotated token has been used, the pre-rotation one no longer works.
    let current = resumed.token();
    let got = resumed.received;
    assert_eq!(got, 1);
    assert_no_close(&resumed.hang_up().await);
    let again = try_connect(&server, &resume_request(id, &current, got))
        .await
        .expect("current token resumes");
    assert_eq!(again.id(), id);
    let refused = try_connect(&server, &resume_request(id, &token, 0))
        .await
        .refused("old token refused");
    refused.assert(404, CloseReason::UnknownSession);
}

#[tokio::test]
async fn a_resume_whose_answer_was_lost_can_be_retried_with_the_same_token() {
    let server = start(config()).await;
    let client = open(&server, 60_000).await;
    let (id, token) = (client.id(), client.token());
    assert_no_close(&client.hang_up().await);
    // The server rotated the token, but its answer never reached the client (a cut during
    // the upgrade, a node killed right after): the client still holds the old token.
    let lost = try_connect(&server, &resume_request(id, &token, 0))
        .await
        .expect("first resume");
    let never_seen = lost.token();
    assert_no_close(&lost.hang_up().await);
    let retried = try_connect(&server, &resume_request(id, &token, 0))
        .await
        .expect("the same token resumes again");
    assert_eq!(retried.id(), id);
    // Only the last two tokens work: the one lost in the cut is gone now.
    assert_no_close(&retried.hang_up().await);
    let refused = try_connect(&server, &resume_request(id, &never_seen, 0))
        .await
        .refused("a token that was skipped");
    refused.assert(404, CloseReason::UnknownSession);
}

// 3. Zero round trip.

#[tokio::test]
async fn open_and_resume_answers_ride_in_the_upgrade_and_frames_may_follow_at_once() {
    let server = start(ServerConfig {
        ping_period_ms: 7000,
        ..config()
    })
    .await;
    let mut watcher = open(&server, 0).await;
    watcher.subscribe("zrt/**").await;

    // The open's 101 carries everything.
    let (_, headers) = upgrade(
        &server,
        &open_request("control", "password", 2000).to_headers(),
    )
    .await
    .expect("open accepted");
    for name in [
        "x-tether-session",
        "x-tether-token",
        "x-tether-reconnect-timeout-ms",
        "x-tether-ping-ms",
        "x-tether-received",
    ] {
        assert!(headers.contains_key(name), "101 lacks {name}: {headers:?}");
    }

    let mut client = open(&server, 2000).await;
    let id = client.id();
    assert!(server.session(&id).is_some());
    assert_eq!(
        client.accepted.reconnect_timeout,
        Duration::from_millis(2000)
    );
    assert_eq!(client.accepted.ping_period, Duration::from_millis(7000));
    assert_eq!(client.accepted.received, 0);

    // Publish right away, without waiting for anything from the server.
    for value in ["one", "two"] {
        client
            .send(ClientFrame::Publish {
                topic: "zrt/a".into(),
                value: Bytes::from_static(value.as_bytes()),
            })
            .await;
    }
    client.acked(2).await;
    for value in ["one", "two"] {
        assert_eq!(watcher.next_update().await.value, value.as_bytes());
    }
    let token = client.token();
    assert_no_close(&client.hang_up().await);

    let mut resumed = try_connect(&server, &resume_request(id, &token, 0))
        .await
        .expect("resume accepted");
    assert_eq!(resumed.id(), id);
    assert_ne!(resumed.token().as_bytes(), token.as_bytes());
    assert_eq!(
        resumed.accepted.reconnect_timeout,
        Duration::from_millis(2000)
    );
    assert_eq!(resumed.accepted.ping_period, Duration::from_millis(7000));
    assert_eq!(
        resumed.accepted.received, 2,
        "the resume answer carries how many client frames the server got"
    );
    // Nothing read from the server before this publish: its implicit sequence number is 3.
    let seq = resumed
        .send(ClientFrame::Publish {
            topic: "zrt/a".into(),
            value: Bytes::from_static(b"three"),
        })
        .await;
    assert_eq!(seq, 3);
    let update = watcher.next_update().await;
    assert_eq!(&*update.topic, "zrt/a");
    assert_eq!(update.value, Bytes::from_static(b"three"));
    resumed.acked(3).await;
}

// 4. Takeover.

#[tokio::test]
async fn resume_while_the_old_connection_is_alive_takes_over() {
    let server = start(config()).await;
    let mut a = open(&server, 60_000).await;
    let id = a.id();
    a.subscribe("old/x").await;

    let mut b = try_connect(&server, &resume_request(id, &a.token(), a.received))
        .await
        .expect("a valid resume takes over");
    assert_eq!(b.id(), id);
    assert_eq!(b.accepted.received, 1);

    // A's connection is ended by the server.
    let frames = a.until_closed().await;
    assert!(
        frames.iter().all(|f| !f.is_sequenced()),
        "A got application frames after the takeover: {frames:?}"
    );
    let info = server.session(&id).expect("session kept");
    assert!(info.connected);
    assert_eq!(info.subscriptions, vec!["old/x".to_string()]);

    // B works, and carries the session's subscriptions.
    b.subscribe("new/y").await;
    assert_receives(&server, &mut b, "new/y", "for b").await;
    assert_receives(&server, &mut b, "old/x", "also for b").await;
}

#[tokio::test]
async fn a_session_closed_by_the_server_is_told_so_and_cannot_resume() {
    let server = start(config()).await;
    let mut client = open(&server, 60_000).await;
    let id = client.id();
    assert!(server.close_session(&id, "operator says bye"));
    assert_eq!(close_reason(&mut client).await, CloseReason::ClosedByServer);
    within("the session to be freed", server.session_freed(&id)).await;
    assert!(!server.close_session(&id, "again"));

    let refused = try_connect(&server, &resume_request(id, &client.token(), 0))
        .await
        .refused("resume refused");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.reason.as_deref(), Some("closed_by_server"));
    // Without the token, nothing is revealed about the session.
    refused_as_unknown(&server, id).await;
}

async fn refused_as_unknown(server: &Server, id: SessionId) {
    try_connect(
        server,
        &resume_request(id, &ResumeToken::from_bytes([0; 16]), 0),
    )
    .await
    .refused("resume refused")
    .assert(404, CloseReason::UnknownSession);
}

// 5. Bad upgrade input.

/// Writes raw bytes, half-closes, and reads the answer until the server ends the connection.
async fn raw_exchange(server: &Server, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = within("TCP connect", TcpStream::connect(server.local_addr()))
        .await
        .expect("TCP connect");
    within("write", tcp.write_all(bytes)).await.expect("write");
    within("shutdown", tcp.shutdown()).await.expect("shutdown");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match within("the server to end the connection", tcp.read(&mut chunk)).await {
            Ok(0) | Err(_) => return answer,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn parse_response(answer: &[u8]) -> Refused {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(answer) {
        Ok(httparse::Status::Complete(_)) => {}
        other => panic!(
            "not an HTTP response ({other:?}): {:?}",
            String::from_utf8_lossy(answer)
        ),
    }
    Refused {
        status: response.code.expect("status"),
        reason: response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(HEADER_REASON))
            .map(|h| String::from_utf8_lossy(h.value).into_owned()),
    }
}

fn without(request: &SessionRequest, name: &str) -> Vec<(&'static str, String)> {
    request
        .to_headers()
        .into_iter()
        .filter(|(n, _)| *n != name)
        .collect()
}

fn with(request: &SessionRequest, name: &'static str, value: &str) -> Vec<(&'static str, String)> {
    let mut headers = without(request, name);
    headers.push((name, value.into()));
    headers
}

#[tokio::test]
async fn bad_upgrades_are_refused_clearly_and_others_keep_working() {
    let server = start(config()).await;
    let mut bystander = open(&server, 60_000).await;
    bystander.subscribe("news/**").await;
    let good = open_request("control", "password", 1000);

    // A plain HTTP GET, no upgrade.
    let answer = raw_exchange(
        &server,
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n",
    )
    .await;
    parse_response(&answer).assert(400, CloseReason::HandshakeError);

    // Not a GET.
    let answer = raw_exchange(
        &server,
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    parse_response(&answer).assert(400, CloseReason::HandshakeError);

    // Protocol version missing, another version, garbage.
    upgrade(&server, &without(&good, HEADER_VERSION))
        .await
        .refused("refused")
        .assert(400, CloseReason::HandshakeError);
    upgrade(&server, &with(&good, HEADER_VERSION, "2"))
        .await
        .refused("refused")
        .assert(426, CloseReason::ProtocolVersionMismatch);
    let garbage = upgrade(&server, &with(&good, HEADER_VERSION, "banana"))
        .await
        .refused("refused");
    assert!(
        matches!(
            (garbage.status, garbage.reason.as_deref()),
            (400, Some("handshake_error")) | (426, Some("protocol_version_mismatch"))
        ),
        "{garbage:?}"
    );
    // Other malformed session fields.
    upgrade(&server, &with(&good, HEADER_RECONNECT_TIMEOUT, "soon"))
        .await
        .refused("refused")
        .assert(400, CloseReason::HandshakeError);
    upgrade(&server, &with(&good, HEADER_SESSION, "not-hex"))
        .await
        .refused("refused")
        .assert(400, CloseReason::HandshakeError);

    // Credentials.
    try_connect(&server, &open_request("control", "wrong", 1000))
        .await
        .refused("wrong password refused")
        .assert(401, CloseReason::AuthenticationFailed);
    try_connect(&server, &open_request("mallory", "password", 1000))
        .await
        .refused("unknown principal refused")
        .assert(401, CloseReason::AuthenticationFailed);
    upgrade(&server, &without(&good, HEADER_CREDENTIALS))
        .await
        .refused("missing password refused")
        .assert(401, CloseReason::AuthenticationFailed);
    upgrade(&server, &without(&good, HEADER_PRINCIPAL))
        .await
        .refused("anonymous refused (not enabled)")
        .assert(401, CloseReason::AuthenticationFailed);

    // Bytes that are not HTTP at all: the start of a TLS ClientHello, and random bytes.
    let answer = raw_exchange(
        &server,
        &[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ],
    )
    .await;
    if !answer.is_empty() {
        assert_eq!(parse_response(&answer).status, 400);
    }
    let noise: [u8; 256] = rand::random();
    let answer = raw_exchange(&server, &noise).await;
    if !answer.is_empty() {
        assert_eq!(parse_response(&answer).status, 400);
    }
    // A connection that says nothing and leaves.
    assert!(raw_exchange(&server, b"").await.is_empty());

    // None of it created a session, and the existing one still works.
    assert_eq!(server.session_count(), 1);
    assert_receives(&server, &mut bystander, "news/today", "still up").await;
    // New sessions are still accepted.
    let mut late = open(&server, 0).await;
    late.subscribe("news/**").await;
    let snapshot = late.next_update().await;
    assert!(snapshot.snapshot);
    assert_eq!(snapshot.value, Bytes::from_static(b"still up"));
}

// 6. Malformed frames.

#[tokio::test]
async fn malformed_frames_close_only_their_session_with_a_typed_reason() {
    let server = start(ServerConfig {
        limits: tether_server::config::LimitsConfig {
            max_frame_bytes: 1024,
            ..Default::default()
        },
        ..config()
    })
    .await;
    let mut bystander = open(&server, 60_000).await;
    bystander.subscribe("b/**").await;

    let cases: [(&str, Message, CloseReason); 3] = [
        (
            "text",
            Message::Text("subscribe a/b".into()),
            CloseReason::TransportError,
        ),
        (
            "garbage",
            Message::Binary(Bytes::from_static(&[0xff; 16])),
            CloseReason::TransportError,
        ),
        (
            "oversize",
            Message::Binary(Bytes::from(vec![0u8; 4096])),
            CloseReason::LimitExceeded,
        ),
    ];
    for (what, message, expected) in cases {
        let mut victim = open(&server, 60_000).await;
        let id = victim.id();
        victim.subscribe("b/**").await;
        victim.send_raw(message).await;
        let reason = close_reason(&mut victim).await;
        assert_eq!(reason, expected, "{what}");
        within("the session to be freed", server.session_freed(&id)).await;
        assert!(server.session(&id).is_none(), "{what}");
        // Closed, not merely disconnected: it cannot be resumed.
        let refused = try_connect(&server, &resume_request(id, &victim.token(), 0))
            .await
            .refused("resume of a closed session refused");
        refused.assert(404, CloseReason::UnknownSession);
    }

    assert_eq!(server.session_count(), 1);
    assert_receives(&server, &mut bystander, "b/c", "unharmed").await;
    // A frame just under the limit is fine.
    let seq = bystander
        .send(ClientFrame::Publish {
            topic: "b/big".into(),
            value: Bytes::from(vec![7u8; 900]),
        })
        .await;
    let update = bystander.next_update().await;
    assert_eq!(update.value.len(), 900);
    bystander.acked(seq).await;
}

// 7. Access control.

#[tokio::test]
async fn subscribing_outside_the_permissions_is_rejected_and_the_session_stays_open() {
    let mut config = config();
    config
        .principals
        .push(principal("reader", &["public/**"], &[]));
    let server = start(config).await;
    let mut client = try_connect(&server, &open_request("reader", "password", 60_000))
        .await
        .expect("reader opens");
    let id = client.id();

    client.subscribe("public/a").await;
    let denied = client
        .send(ClientFrame::Subscribe {
            selector: "secret/x".into(),
        })
        .await;
    assert_eq!(denied, 2);
    match client.next_sequenced().await {
        ServerFrame::Rejected { request, error } => {
            assert_eq!(request, denied);
            assert_eq!(error.kind, RequestErrorKind::AccessDenied);
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // A selector wider than the permission is refused too.
    let wide = client
        .send(ClientFrame::Subscribe {
            selector: "**".into(),
        })
        .await;
    match client.next_sequenced().await {
        ServerFrame::Rejected { request, error } => {
            assert_eq!(request, wide);
            assert_eq!(error.kind, RequestErrorKind::AccessDenied);
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // Publishing without permission is rejected as well.
    let publish = client
        .send(ClientFrame::Publish {
            topic: "public/a".into(),
            value: Bytes::from_static(b"nope"),
        })
        .await;
    match client.next_sequenced().await {
        ServerFrame::Rejected { request, error } => {
            assert_eq!(request, publish);
            assert_eq!(error.kind, RequestErrorKind::AccessDenied);
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    client.acked(publish).await;

    let info = server.session(&id).expect("session stays");
    assert!(info.connected);
    assert_eq!(info.subscriptions, vec!["public/a".to_string()]);
    server
        .publish("secret/x", "hidden")
        .await
        .expect("valid topic");
    assert_receives(&server, &mut client, "public/a", "visible").await;
}
