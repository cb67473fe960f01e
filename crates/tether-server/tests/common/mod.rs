//! Raw-protocol test client shared by the server's integration tests.
#![allow(dead_code, unused_imports, unreachable_pub)]

pub use std::collections::VecDeque;
pub use std::sync::OnceLock;
pub use std::time::{Duration, Instant};

pub use bytes::Bytes;
pub use futures_util::{SinkExt, StreamExt};
pub use tokio::io::{AsyncReadExt, AsyncWriteExt};
pub use tokio::net::TcpStream;
pub use tokio_tungstenite::WebSocketStream;
pub use tokio_tungstenite::tungstenite::client::IntoClientRequest;
pub use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
pub use tokio_tungstenite::tungstenite::{Error as WsError, Message};

pub use tether_protocol::frame::{self, ClientFrame, ServerFrame};
pub use tether_protocol::handshake::{
    HEADER_CREDENTIALS, HEADER_PRINCIPAL, HEADER_REASON, HEADER_RECONNECT_TIMEOUT, HEADER_SESSION,
    HEADER_VERSION, SessionAccepted, SessionRequest,
};
pub use tether_protocol::{CloseReason, RequestErrorKind, ResumeToken, SessionId, Update};
pub use tether_server::config::PrincipalConfig;
pub use tether_server::{Server, ServerConfig};

/// Bound on every single wait, so that a failure fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<TcpStream>;

/// The argon2 hash of "password", computed once (hashing is slow on purpose).
pub fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| tether_server::auth::hash_password("password"))
        .clone()
}

pub fn principal(name: &str, subscribe: &[&str], publish: &[&str]) -> PrincipalConfig {
    PrincipalConfig {
        name: name.into(),
        password_hash: password_hash(),
        subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        publish: publish.iter().map(|s| s.to_string()).collect(),
    }
}

/// Loopback, any free port, principal `control` / `password` with every permission.
pub fn config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        principals: vec![principal("control", &["**"], &["**"])],
        ..ServerConfig::default()
    }
}

pub async fn start(config: ServerConfig) -> Server {
    Server::bind(config).await.expect("server starts")
}

pub async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(STEP, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// An upgrade the server refused: the HTTP status and the `x-tether-reason` header.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub reason: Option<String>,
}

/// The refusal an upgrade was expected to meet.
pub trait ExpectRefused {
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
    pub fn assert(&self, status: u16, reason: CloseReason) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.reason.as_deref(), Some(reason.as_str()), "{self:?}");
    }
}

/// Sends a WebSocket upgrade carrying `headers`; 101 gives the socket and the response headers.
pub async fn upgrade(
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
pub struct Client {
    pub ws: Ws,
    pub accepted: SessionAccepted,
    /// Sequence number of the last sequenced frame sent (implicit on the wire).
    pub sent: u64,
    /// Sequenced server frames received, in order.
    pub received: u64,
    /// Frames read while waiting for an ack, not yet handed out.
    pub pending: VecDeque<ServerFrame>,
}

pub async fn try_connect(server: &Server, request: &SessionRequest) -> Result<Client, Refused> {
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

pub fn open_request(name: &str, password: &str, timeout_ms: u64) -> SessionRequest {
    SessionRequest::Open {
        principal: Some(name.into()),
        credentials: Some(password.into()),
        auth_token: None,
        reconnect_timeout: Duration::from_millis(timeout_ms),
    }
}

pub fn resume_request(id: SessionId, token: &ResumeToken, received: u64) -> SessionRequest {
    SessionRequest::Resume {
        session: id,
        token: token.clone(),
        received,
        positions: Vec::new(),
        confirmed: 0,
    }
}

pub async fn open(server: &Server, timeout_ms: u64) -> Client {
    try_connect(server, &open_request("control", "password", timeout_ms))
        .await
        .expect("open accepted")
}

impl Client {
    pub fn id(&self) -> SessionId {
        self.accepted.session
    }

    pub fn token(&self) -> ResumeToken {
        self.accepted.token.clone()
    }

    /// Sends a frame; returns the implicit sequence number of a sequenced one.
    pub async fn send(&mut self, frame: ClientFrame) -> u64 {
        if frame.is_sequenced() {
            self.sent += 1;
        }
        let bytes = frame::encode_to_vec(&frame);
        within("send", self.ws.send(Message::Binary(bytes.into())))
            .await
            .expect("send");
        self.sent
    }

    pub async fn send_raw(&mut self, message: Message) {
        within("send", self.ws.send(message)).await.expect("send");
    }

    /// The next server frame; panics if the connection ends.
    pub async fn next_frame(&mut self) -> ServerFrame {
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
    pub async fn next_sequenced(&mut self) -> ServerFrame {
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

    pub async fn next_update(&mut self) -> Update {
        match self.next_sequenced().await {
            ServerFrame::Update(u) => u,
            other => panic!("expected an update, got {other:?}"),
        }
    }

    /// Waits for an ack covering `seq` (every request up to it has been carried out); frames
    /// read meanwhile are kept for [`Client::next_sequenced`].
    pub async fn acked(&mut self, seq: u64) {
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
    pub async fn subscribe(&mut self, selector: &str) {
        let seq = self
            .send(ClientFrame::Subscribe {
                selector: selector.into(),
            })
            .await;
        self.acked(seq).await;
    }

    /// Reads until the server ends the connection; returns the frames received meanwhile.
    pub async fn until_closed(&mut self) -> Vec<ServerFrame> {
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
    pub async fn hang_up(mut self) -> Vec<ServerFrame> {
        within("shutdown", self.ws.get_mut().shutdown())
            .await
            .expect("shutdown");
        self.until_closed().await
    }
}

pub fn assert_no_close(frames: &[ServerFrame]) {
    assert!(
        !frames
            .iter()
            .any(|f| matches!(f, ServerFrame::Close { .. })),
        "the server closed the session on a dropped connection: {frames:?}"
    );
}

/// Reads frames until a close frame; returns its reason.
pub async fn close_reason(client: &mut Client) -> CloseReason {
    for f in client.until_closed().await {
        if let ServerFrame::Close { reason, .. } = f {
            return reason;
        }
    }
    panic!("the connection ended without a close frame");
}

/// Publishes from the server and checks that `client` (subscribed to `topic`) receives it.
pub async fn assert_receives(
    server: &Server,
    client: &mut Client,
    topic: &str,
    value: &'static str,
) {
    server.publish(topic, value).await.expect("valid topic");
    let update = client.next_update().await;
    assert_eq!(&*update.topic, topic);
    assert_eq!(update.value, Bytes::from_static(value.as_bytes()));
    assert!(!update.snapshot);
}

// 1. Retention.
