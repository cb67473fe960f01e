//! The server over real loopback sockets, driven by a raw client written here with
//! tokio-tungstenite and the protocol crate (no Tether client library): retention, resume,
//! takeover, refusals, malformed frames and access control.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use tether_protocol::frame::{self, ClientFrame, ServerFrame};
use tether_protocol::handshake::{
    HEADER_CREDENTIALS, HEADER_PRINCIPAL, HEADER_REASON, HEADER_RECONNECT_TIMEOUT, HEADER_SESSION,
    HEADER_VERSION, SessionAccepted, SessionRequest,
};
use tether_protocol::{CloseReason, RequestErrorKind, ResumeToken, SessionId, Update};
use tether_server::config::PrincipalConfig;
use tether_server::{Server, ServerConfig};

/// Bound on every single wait, so that a failure fails instead of hanging.
const STEP: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TcpStream>;

/// The argon2 hash of "password", computed once (hashing is slow on purpose).
fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| tether_server::auth::hash_password("password"))
        .clone()
}

fn principal(name: &str, subscribe: &[&str], publish: &[&str]) -> PrincipalConfig {
    PrincipalConfig {
        name: name.into(),
        password_hash: password_hash(),
        subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        publish: publish.iter().map(|s| s.to_string()).collect(),
    }
}

/// Loopback, any free port, principal `control` / `password` with every permission.
fn config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        principals: vec![principal("control", &["**"], &["**"])],
        ..ServerConfig::default()
    }
}

async fn start(config: ServerConfig) -> Server {
    Server::bind(config).await.expect("server starts")
}

async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(STEP, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// An upgrade the server refused: the HTTP status and the `x-tether-reason` header.
#[derive(Debug)]
struct Refused {
    status: u16,
    reason: Option<String>,
}

/// The refusal an upgrade was expected to meet.
trait ExpectRefused {
    fn refused(self, what: &str) -> Refused;
}

impl<T> ExpectRefused for Result<T, Refused> {
    fn refused(self, what: &str) -> Refused {
        match self {
            Ok(_) => panic!("accepted, expected a refusal: {what}"),
            Err(refused) => refused,
        }
    }
}

impl Refused {
    fn assert(&self, status: u16, reason: CloseReason) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.reason.as_deref(), Some(reason.as_str()), "{self:?}");
    }
}

/// Sends a WebSocket upgrade carrying `headers`; 101 gives the socket and the response headers.
async fn upgrade(
    server: &Server,
    headers: &[(&str, String)],
) -> Result<(Ws, tokio_tungstenite::tungstenite::http::HeaderMap), Refused> {
    let mut request = server.url().into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    let tcp = within("TCP connect", TcpStream::connect(server.local_addr()))
        .await
        .expect("TCP connect");
    match within("upgrade", tokio_tungstenite::client_async(request, tcp)).await {
        Ok((ws, response)) => Ok((ws, response.headers().clone())),
        Err(WsError::Http(response)) => Err(Refused {
            status: response.status().as_u16(),
            reason: response
                .headers()
                .get(HEADER_REASON)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }),
        Err(e) => panic!("upgrade failed without an HTTP answer: {e}"),
    }
}

/// A connected session, seen from a minimal client.
struct Client {
    ws: Ws,
    accepted: SessionAccepted,
    /// Sequence number of the last sequenced frame sent (implicit on the wire).
    sent: u64,
    /// Sequenced server frames received, in order.
    received: u64,
    /// Frames read while waiting for an ack, not yet handed out.
    pending: VecDeque<ServerFrame>,
}

async fn try_connect(server: &Server, request: &SessionRequest) -> Result<Client, Refused> {
    let (ws, headers) = upgrade(server, &request.to_headers()).await?;
    let accepted =
        SessionAccepted::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
            .expect("the 101 response carries the session fields");
    let received = match request {
        SessionRequest::Resume { received, .. } => *received,
        SessionRequest::Open { .. } => 0,
    };
    Ok(Client {
        ws,
        sent: accepted.received,
        received,
        accepted,
        pending: VecDeque::new(),
    })
}

fn open_request(name: &str, password: &str, timeout_ms: u64) -> SessionRequest {
    SessionRequest::Open {
        principal: Some(name.into()),
        credentials: Some(password.into()),
        reconnect_timeout: Duration::from_millis(timeout_ms),
    }
}

fn resume_request(id: SessionId, token: &ResumeToken, received: u64) -> SessionRequest {
    SessionRequest::Resume {
        session: id,
        token: token.clone(),
        received,
        positions: Vec::new(),
    }
}

async fn open(server: &Server, timeout_ms: u64) -> Client {
    try_connect(server, &open_request("control", "password", timeout_ms))
        .await
        .expect("open accepted")
}

impl Client {
    fn id(&self) -> SessionId {
        self.accepted.session
    }

    fn token(&self) -> ResumeToken {
        self.accepted.token.clone()
    }

    /// Sends a frame; returns the implicit sequence number of a sequenced one.
    async fn send(&mut self, frame: ClientFrame) -> u64 {
        if frame.is_sequenced() {
            self.sent += 1;
        }
        let bytes = frame::encode_to_vec(&frame);
        within("send", self.ws.send(Message::Binary(bytes.into())))
            .await
            .expect("send");
        self.sent
    }

    async fn send_raw(&mut self, message: Message) {
        within("send", self.ws.send(message)).await.expect("send");
    }

    /// The next server frame; panics if the connection ends.
    async fn next_frame(&mut self) -> ServerFrame {
        loop {
            match within("a server frame", self.ws.next()).await {
                Some(Ok(Message::Binary(b))) => {
                    let f = frame::decode_server(&b).expect("server frames decode");
                    if f.is_sequenced() {
                        self.received += 1;
                    }
                    return f;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                other => panic!("connection ended while a frame was expected: {other:?}"),
            }
        }
    }

    /// The next sequenced frame (acks and pings skipped).
    async fn next_sequenced(&mut self) -> ServerFrame {
        if let Some(f) = self.pending.pop_front() {
            return f;
        }
        loop {
            match self.next_frame().await {
                ServerFrame::Ack { .. } | ServerFrame::Ping { .. } => {}
                f => return f,
            }
        }
    }

    async fn next_update(&mut self) -> Update {
        match self.next_sequenced().await {
            ServerFrame::Update(u) => u,
            other => panic!("expected an update, got {other:?}"),
        }
    }

    /// Waits for an ack covering `seq` (every request up to it has been carried out); frames
    /// read meanwhile are kept for [`Client::next_sequenced`].
    async fn acked(&mut self, seq: u64) {
        loop {
            match self.next_frame().await {
                ServerFrame::Ack { received } | ServerFrame::Ping { received }
                    if received >= seq =>
                {
                    return;
                }
                ServerFrame::Ack { .. } | ServerFrame::Ping { .. } => {}
                f @ (ServerFrame::Update(_) | ServerFrame::Rejected { .. }) => {
                    self.pending.push_back(f);
                }
                other => panic!("expected an ack of {seq}, got {other:?}"),
            }
        }
    }

    /// Subscribes and waits until the server has carried the subscription out.
    async fn subscribe(&mut self, selector: &str) {
        let seq = self
            .send(ClientFrame::Subscribe {
                selector: selector.into(),
            })
            .await;
        self.acked(seq).await;
    }

    /// Reads until the server ends the connection; returns the frames received meanwhile.
    async fn until_closed(&mut self) -> Vec<ServerFrame> {
        let mut frames = Vec::new();
        loop {
            match within("the server to end the connection", self.ws.next()).await {
                Some(Ok(Message::Binary(b))) => {
                    frames.push(frame::decode_server(&b).expect("server frames decode"));
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return frames,
                Some(Ok(_)) => {}
            }
        }
    }

    /// The network goes away under the session: the TCP connection is half-closed without a
    /// WebSocket close handshake (what a dying process or a proxy produces), then the client
    /// reads until the server drops its side. Returns what the server sent meanwhile.
    async fn hang_up(mut self) -> Vec<ServerFrame> {
        within("shutdown", self.ws.get_mut().shutdown())
            .await
            .expect("shutdown");
        self.until_closed().await
    }
}

fn assert_no_close(frames: &[ServerFrame]) {
    assert!(
        !frames
            .iter()
            .any(|f| matches!(f, ServerFrame::Close { .. })),
        "the server closed the session on a dropped connection: {frames:?}"
    );
}

/// Reads frames until a close frame; returns its reason.
async fn close_reason(client: &mut Client) -> CloseReason {
    for f in client.until_closed().await {
        if let ServerFrame::Close { reason, .. } = f {
            return reason;
        }
    }
    panic!("the connection ended without a close frame");
}

/// Publishes from the server and checks that `client` (subscribed to `topic`) receives it.
async fn assert_receives(server: &Server, client: &mut Client, topic: &str, value: &'static str) {
    server.publish(topic, value).expect("valid topic");
    let update = client.next_update().await;
    assert_eq!(update.topic, topic);
    assert_eq!(update.value, Bytes::from_static(value.as_bytes()));
    assert!(!update.snapshot);
}

// 1. Retention.

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

    // The pre-rotation token no longer works, even while the session is connected…
    let refused = try_connect(&server, &resume_request(id, &token, 0))
        .await
        .refused("old token refused");
    refused.assert(404, CloseReason::UnknownSession);
    // …and the refusal did not disturb the current connection.
    resumed.subscribe("t/x").await;
    assert_receives(&server, &mut resumed, "t/x", "still here").await;

    // Nor once it is disconnected again; the rotated token does.
    let current = resumed.token();
    let got = resumed.received;
    assert_eq!(got, 1);
    assert_no_close(&resumed.hang_up().await);
    let refused = try_connect(&server, &resume_request(id, &token, 0))
        .await
        .refused("old token refused");
    refused.assert(404, CloseReason::UnknownSession);
    let again = try_connect(&server, &resume_request(id, &current, got))
        .await
        .expect("current token resumes");
    assert_eq!(again.id(), id);
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
    assert_eq!(update.topic, "zrt/a");
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
    server.publish("secret/x", "hidden").expect("valid topic");
    assert_receives(&server, &mut client, "public/a", "visible").await;
}
