//! The server shell: accepts connections, opens and resumes sessions, and runs one reader and
//! one writer task per connection around the sans-I/O [`ServerSession`].
//!
//! Locks, always taken in this order: `Shared::topics` (topics and the subscription index),
//! then a session's `inner`. The sessions map is never held while taking either. Requests that
//! touch topics (subscribe, unsubscribe, publish) and resumes hold both, so that a request is
//! answered before the ack that completes it can be queued, and a resume sees a consistent
//! session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{Instrument, debug, info, warn};

use tether_protocol::frame::{self, ClientFrame, ServerFrame};
use tether_protocol::handshake::{SessionAccepted, SessionRequest};
use tether_protocol::server::{ResumeOutcome, ServerFault, ServerRequest, ServerSession};
use tether_protocol::topic::validate_topic;
use tether_protocol::{
    CloseReason, Position, RequestError, RequestErrorKind, ResumeToken, Selector, SessionId, Update,
};

use crate::auth::{Permissions, verify_password};
use crate::config::ServerConfig;
use crate::handshake::{RequestError as UpgradeError, read_request, write_accept, write_refusal};
use crate::metrics::Metrics;
use crate::topics::{MemoryTopicStore, SubscriptionIndex, TopicStore};

/// A connection's byte stream: plain TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type BoxIo = Box<dyn Io>;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A publish made through [`Server::publish`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic: {0}")]
pub struct PublishError(#[from] tether_protocol::TopicError);

/// A snapshot of one session, for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The id.
    pub id: SessionId,
    /// The principal, if any.
    pub principal: Option<String>,
    /// Whether a connection is current.
    pub connected: bool,
    /// The subscriptions' selectors.
    pub subscriptions: Vec<String>,
    /// The granted reconnection timeout.
    pub reconnect_timeout: Duration,
    /// Frames held for the client (unacknowledged).
    pub buffered_frames: usize,
}

#[derive(Clone)]
struct SlotRef(Arc<Slot>);

impl PartialEq for SlotRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SlotRef {}

impl std::hash::Hash for SlotRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state);
    }
}

impl std::fmt::Debug for SlotRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slot({})", self.0.id)
    }
}

/// One session as the server keeps it.
struct Slot {
    id: SessionId,
    principal: Option<String>,
    perms: Arc<Permissions>,
    inner: Mutex<SlotInner>,
    /// Wakes the writer of the current connection.
    notify: Notify,
}

struct SlotInner {
    proto: ServerSession,
    token: ResumeToken,
    subscriptions: Vec<Selector>,
    /// Bumped by every new connection (and by a kick): a task whose generation is stale stops.
    generation: u64,
    connected: bool,
    reconnect_timeout: Duration,
    /// Freed; a resume is refused as unknown.
    closed: bool,
    /// A close frame is queued: the writer ends the connection once it is written.
    closing: bool,
}

struct Topics {
    store: Box<dyn TopicStore>,
    index: SubscriptionIndex<SlotRef>,
}

pub(crate) struct Shared {
    config: ServerConfig,
    metrics: Arc<Metrics>,
    /// Connection attempts per address: (tokens left, last refill).
    attempts: Mutex<HashMap<std::net::IpAddr, (f64, Instant)>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    principals: HashMap<String, (String, Arc<Permissions>)>,
    anonymous: Option<Arc<Permissions>>,
    topics: Mutex<Topics>,
    sessions: Mutex<HashMap<SessionId, Arc<Slot>>>,
    per_principal: Mutex<HashMap<String, usize>>,
    /// Sessions the server closed on purpose, kept for their retention so that a resume learns
    /// why instead of seeing an unknown session.
    tombstones: Mutex<HashMap<SessionId, (ResumeToken, tokio::time::Instant)>>,
    /// Signalled whenever a session is freed.
    freed: Notify,
    shutting_down: AtomicBool,
    connections: AtomicUsize,
    connections_done: Notify,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical
/// section here leaves the data consistent before anything that could panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn random_bytes() -> [u8; 16] {
    rand::random()
}

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    metrics_server: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
    stop: Arc<Notify>,
    accept: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Validates the configuration, binds its listen address and starts accepting.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let principals = config
            .principals
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    (
                        p.password_hash.clone(),
                        Arc::new(Permissions::new(&p.subscribe, &p.publish)),
                    ),
                )
            })
            .collect();
        let anonymous = config.anonymous.enabled.then(|| {
            Arc::new(Permissions::new(
                &config.anonymous.subscribe,
                &config.anonymous.publish,
            ))
        });
        let tls = match &config.tls {
            Some(t) => Some(crate::tls::acceptor(t).map_err(|(field, message)| {
                crate::config::ConfigError::Invalid {
                    field: field.into(),
                    message,
                }
            })?),
            None => None,
        };
        let metrics = Arc::new(Metrics::new());
        let metrics_server = match config.metrics_listen {
            Some(addr) => Some(
                crate::metrics::serve(metrics.clone(), addr)
                    .await
                    .map_err(|source| ServerError::Bind { addr, source })?,
            ),
            None => None,
        };
        let shared = Arc::new(Shared {
            config,
            metrics,
            attempts: Mutex::new(HashMap::new()),
            tls,
            principals,
            anonymous,
            topics: Mutex::new(Topics {
                store: Box::new(MemoryTopicStore::default()),
                index: SubscriptionIndex::default(),
            }),
            sessions: Mutex::new(HashMap::new()),
            per_principal: Mutex::new(HashMap::new()),
            tombstones: Mutex::new(HashMap::new()),
            freed: Notify::new(),
            shutting_down: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            connections_done: Notify::new(),
        });
        let stop = Arc::new(Notify::new());
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        info!(%local_addr, "tether server listening");
        Ok(Server {
            shared,
            local_addr,
            metrics_server,
            stop,
            accept,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where Prometheus metrics are served, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|(a, _)| *a)
    }

    /// The metrics in Prometheus text format (what `GET /metrics` returns).
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render()
    }

    /// The WebSocket URL of the server (`ws://addr`).
    pub fn url(&self) -> String {
        format!("ws://{}", self.local_addr)
    }

    /// Sessions currently kept (connected or waiting for a resume).
    pub fn session_count(&self) -> usize {
        lock(&self.shared.sessions).len()
    }

    /// Details of one session, or `None` once it has been freed.
    pub fn session(&self, id: &SessionId) -> Option<SessionInfo> {
        let slot = lock(&self.shared.sessions).get(id).cloned()?;
        let inner = lock(&slot.inner);
        Some(SessionInfo {
            id: slot.id,
            principal: slot.principal.clone(),
            connected: inner.connected,
            subscriptions: inner.subscriptions.iter().map(|s| s.to_string()).collect(),
            reconnect_timeout: inner.reconnect_timeout,
            buffered_frames: inner.proto.buffered().0,
        })
    }

    /// Waits until the session is freed (closed, or its reconnection timeout elapsed). Returns
    /// at once if it is not kept.
    pub async fn session_freed(&self, id: &SessionId) {
        loop {
            let freed = self.shared.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if !lock(&self.shared.sessions).contains_key(id) {
                return;
            }
            freed.await;
        }
    }

    /// Publishes a value as the server itself (no permission check).
    pub fn publish(&self, topic: &str, value: impl Into<Bytes>) -> Result<Position, PublishError> {
        validate_topic(topic)?;
        let mut topics = lock(&self.shared.topics);
        Ok(self.shared.fan_out(&mut topics, topic, value.into(), None))
    }

    /// Closes a session from the server side: its client sees `CLOSED_BY_SERVER`.
    pub fn close_session(&self, id: &SessionId, message: &str) -> bool {
        let slot = lock(&self.shared.sessions).get(id).cloned();
        match slot {
            Some(slot) => {
                self.shared
                    .close_slot(&slot, CloseReason::ClosedByServer, message);
                true
            }
            None => false,
        }
    }

    /// Stops accepting, closes every session (reason closed by server) and waits up to
    /// `grace` for the connections to drain.
    pub async fn shutdown(self, grace: Duration) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        self.stop.notify_one();
        let _ = self.accept.await;
        if let Some((_, task)) = &self.metrics_server {
            task.abort();
        }
        let slots: Vec<Arc<Slot>> = lock(&self.shared.sessions).values().cloned().collect();
        for slot in slots {
            self.shared
                .close_slot(&slot, CloseReason::ClosedByServer, "server shutting down");
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.shared.connections.load(Ordering::SeqCst) > 0 {
            let done = self.shared.connections_done.notified();
            if self.shared.connections.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                warn!("connections still open after the shutdown grace period");
                break;
            }
        }
        info!("tether server stopped");
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<Notify>) {
    loop {
        tokio::select! {
            _ = stop.notified() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        handle_connection(&shared, stream, peer).await;
                        if shared.connections.fetch_sub(1, Ordering::SeqCst) == 1 {
                            shared.connections_done.notify_waiters();
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// What a successful open/resume hands to the connection tasks.
struct Admitted {
    slot: Arc<Slot>,
    generation: u64,
    headers: Vec<(&'static str, String)>,
}

async fn handle_connection(shared: &Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    // The upgrade's state (TLS, reading the head, authentication) is boxed: it is needed for
    // a moment, and inline it would size every connection's task for the connection's life.
    let Some((stream, admitted, rest)) = Box::pin(upgrade(shared, tcp, peer)).await else {
        return;
    };
    let id = admitted.slot.id;
    let max = shared.config.limits.max_frame_bytes;
    // tungstenite's default 128 KiB read buffer, zero-filled per connection, would dominate an
    // idle session's memory; 4 KiB holds dozens of typical frames per read.
    const READ_BUFFER: usize = 4 * 1024;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let rest = tether_protocol::handshake::read_buffer_after_upgrade(&rest, READ_BUFFER);
    let ws =
        WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(ws_config)).await;
    let span = tracing::info_span!("session", session = %id);
    run_connection(shared.clone(), admitted.slot, admitted.generation, ws)
        .instrument(span)
        .await;
}

/// TLS, the upgrade head, admission and the accept: the connection's stream, its session and
/// the bytes read past the head.
async fn upgrade(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(BoxIo, Admitted, Vec<u8>)> {
    let timeout = Duration::from_millis(shared.config.limits.handshake_timeout_ms);
    let over_rate = !shared.admit_attempt(peer.ip());
    let mut stream: BoxIo = match &shared.tls {
        Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Box::new(tls),
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                debug!(%peer, "TLS handshake too slow");
                return None;
            }
        },
        None => Box::new(tcp),
    };
    if over_rate {
        info!(%peer, "too many connection attempts from this address");
        shared.metrics.refused(CloseReason::LimitExceeded);
        write_refusal(
            &mut stream,
            CloseReason::LimitExceeded,
            "too many connection attempts from this address",
        )
        .await;
        return None;
    }
    let request = match read_request(&mut stream, timeout).await {
        Ok(r) => r,
        Err(UpgradeError::Gone) => {
            debug!(%peer, "connection closed or too slow before the upgrade");
            return None;
        }
        Err(UpgradeError::Refuse(reason, message)) => {
            debug!(%peer, %reason, %message, "upgrade refused");
            shared.metrics.refused(reason);
            write_refusal(&mut stream, reason, &message).await;
            return None;
        }
    };
    let parsed = SessionRequest::from_headers(|name| request.headers.get(name).map(String::as_str));
    let admitted = match parsed {
        Err(e) => Err((e.reason(), e.to_string())),
        Ok(SessionRequest::Open {
            principal,
            credentials,
            reconnect_timeout,
        }) => shared.open(principal, credentials, reconnect_timeout).await,
        Ok(SessionRequest::Resume {
            session,
            token,
            received,
            ..
        }) => shared.resume(session, &token, received),
    };
    let admitted = match admitted {
        Ok(a) => a,
        Err((reason, message)) => {
            info!(%peer, %reason, %message, "session refused");
            shared.metrics.refused(reason);
            write_refusal(&mut stream, reason, &message).await;
            return None;
        }
    };
    if let Err(e) = write_accept(&mut stream, &request.key, &admitted.headers).await {
        debug!(session = %admitted.slot.id, error = %e, "peer left during the upgrade");
        shared.connection_lost(&admitted.slot, admitted.generation);
        return None;
    }
    Some((stream, admitted, request.rest))
}

/// How a connection's reader ended.
enum ReaderEnd {
    /// The transport ended; the session may be resumed.
    Lost(CloseReason),
    /// The session was closed (by the client, or for a violation); let the writer flush.
    Closed,
    /// Another connection took the session over.
    Superseded,
}

async fn run_connection(
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    generation: u64,
    ws: WebSocketStream<BoxIo>,
) {
    let (sink, stream) = ws.split();
    let mut writer = tokio::spawn(write_loop(
        slot.clone(),
        generation,
        shared.metrics.clone(),
        sink,
    ));
    let reader = read_loop(&shared, &slot, generation, stream);
    tokio::pin!(reader);
    tokio::select! {
        end = &mut reader => {
            match end {
                ReaderEnd::Closed => {
                    // Give the writer a moment to send the close frame.
                    slot.notify.notify_one();
                    if tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_err() {
                        writer.abort();
                    }
                }
                ReaderEnd::Lost(reason) => {
                    writer.abort();
                    debug!(session = %slot.id, %reason, "connection lost");
                    shared.connection_lost(&slot, generation);
                }
                ReaderEnd::Superseded => {
                    writer.abort();
                    shared.connection_lost(&slot, generation);
                }
            }
        }
        _ = &mut writer => {
            // The writer ends when the connection is superseded, closed, dead or unwritable.
            shared.connection_lost(&slot, generation);
        }
    }
}

async fn read_loop(
    shared: &Arc<Shared>,
    slot: &Arc<Slot>,
    generation: u64,
    mut stream: futures_util::stream::SplitStream<WebSocketStream<BoxIo>>,
) -> ReaderEnd {
    let mut ready = None;
    loop {
        let message = match ready.take() {
            Some(m) => m,
            None => stream.next().await,
        };
        let message = match message {
            Some(Ok(m)) => m,
            Some(Err(WsError::Capacity(e))) => {
                shared.close_slot(
                    slot,
                    CloseReason::LimitExceeded,
                    &format!("message too large: {e}"),
                );
                return ReaderEnd::Closed;
            }
            // A WebSocket-level protocol error is most often a stream cut mid-frame or without a
            // closing handshake: the network's fault, so the session stays resumable.
            Some(Err(_)) | None => return ReaderEnd::Lost(CloseReason::TransportError),
        };
        let bytes = match message {
            Message::Binary(b) => {
                shared.metrics.bytes_in.inc_by(b.len() as u64);
                b
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Close(_) => return ReaderEnd::Lost(CloseReason::TransportError),
            Message::Text(_) => {
                shared.close_slot(
                    slot,
                    CloseReason::TransportError,
                    "text messages are not part of the protocol",
                );
                return ReaderEnd::Closed;
            }
        };
        let frame = match frame::decode_client(&bytes) {
            Ok(f) => f,
            Err(e) => {
                shared.close_slot(slot, CloseReason::TransportError, &e.to_string());
                return ReaderEnd::Closed;
            }
        };
        match shared.handle_client_frame(slot, generation, frame) {
            Handled::Continue => {}
            Handled::Superseded => return ReaderEnd::Superseded,
            Handled::Closed => return ReaderEnd::Closed,
        }
        // Nothing more to read for now: an owed ack leaves at once (a client waiting for its
        // request's completion is answered without the ack delay).
        match stream.next().now_or_never() {
            Some(m) => ready = Some(m),
            None => shared.input_drained(slot, generation),
        }
    }
}

enum Handled {
    Continue,
    Superseded,
    Closed,
}

async fn write_loop(
    slot: Arc<Slot>,
    generation: u64,
    metrics: Arc<Metrics>,
    mut sink: futures_util::stream::SplitSink<WebSocketStream<BoxIo>, Message>,
) {
    let mut batch: Vec<Bytes> = Vec::with_capacity(64);
    loop {
        let (deadline, closing, more) = {
            let mut inner = lock(&slot.inner);
            if inner.generation != generation {
                drop(inner);
                // This writer may have taken a wake-up meant for its successor: pass it on.
                slot.notify.notify_one();
                return;
            }
            let now = Instant::now();
            if let Err(fault) = inner.proto.handle_timeout(now) {
                debug!(session = %slot.id, ?fault, "connection dead");
                return;
            }
            while batch.len() < 256 {
                match inner.proto.poll_transmit(now) {
                    Some(b) => batch.push(b),
                    None => break,
                }
            }
            let more = batch.len() == 256;
            (inner.proto.poll_timeout(), inner.closing, more)
        };
        metrics
            .bytes_out
            .inc_by(batch.iter().map(|b| b.len() as u64).sum());
        for bytes in batch.drain(..) {
            if sink.feed(Message::Binary(bytes)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
        if more {
            continue;
        }
        if closing {
            let _ = sink.close().await;
            return;
        }
        let notified = slot.notify.notified();
        match deadline {
            Some(d) => {
                let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(d), notified).await;
            }
            None => notified.await,
        }
    }
}

fn request_error(kind: RequestErrorKind, message: impl Into<String>) -> RequestError {
    RequestError {
        kind,
        message: message.into(),
    }
}

impl Shared {
    async fn open(
        &self,
        principal: Option<String>,
        credentials: Option<String>,
        requested_timeout: Duration,
    ) -> Result<Admitted, (CloseReason, String)> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err((CloseReason::ClosedByServer, "server shutting down".into()));
        }
        let perms = match &principal {
            Some(name) => {
                let denied = || {
                    (
                        CloseReason::AuthenticationFailed,
                        "unknown principal or wrong credentials".to_string(),
                    )
                };
                let (hash, perms) = self.principals.get(name).cloned().ok_or_else(denied)?;
                let password = credentials.ok_or_else(denied)?;
                // argon2 is slow on purpose: keep it off the async workers.
                let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
                    .await
                    .unwrap_or(false);
                if !ok {
                    return Err(denied());
                }
                perms
            }
            None => self.anonymous.clone().ok_or((
                CloseReason::AuthenticationFailed,
                "anonymous sessions are not accepted".to_string(),
            ))?,
        };
        if let Some(name) = &principal {
            let mut counts = lock(&self.per_principal);
            let count = counts.entry(name.clone()).or_default();
            if *count >= self.config.limits.max_sessions_per_principal {
                return Err((
                    CloseReason::LimitExceeded,
                    format!("principal {name} already has {count} sessions"),
                ));
            }
            *count += 1;
        }
        let reconnect_timeout = requested_timeout.min(self.config.max_reconnect_timeout());
        let mut proto = ServerSession::new(self.config.buffer_limits(), self.config.ping_period());
        proto.opened(Instant::now());
        let id = SessionId::from_bytes(random_bytes());
        let token = ResumeToken::from_bytes(random_bytes());
        let accepted = SessionAccepted {
            session: id,
            token: token.clone(),
            reconnect_timeout,
            ping_period: self.config.ping_period(),
            received: 0,
            max_frame: self.config.limits.max_frame_bytes,
        };
        let slot = Arc::new(Slot {
            id,
            principal: principal.clone(),
            perms,
            inner: Mutex::new(SlotInner {
                proto,
                token,
                subscriptions: Vec::new(),
                generation: 1,
                connected: true,
                reconnect_timeout,
                closed: false,
                closing: false,
            }),
            notify: Notify::new(),
        });
        lock(&self.sessions).insert(id, slot.clone());
        self.metrics.opens.inc();
        self.metrics.session_state(None, Some("connected"));
        info!(session = %id, principal = ?principal, timeout_ms = reconnect_timeout.as_millis() as u64, "session opened");
        Ok(Admitted {
            slot,
            generation: 1,
            headers: accepted.to_headers(),
        })
    }

    fn resume(
        &self,
        id: SessionId,
        token: &ResumeToken,
        received: u64,
    ) -> Result<Admitted, (CloseReason, String)> {
        let unknown = || {
            (
                CloseReason::UnknownSession,
                format!("no session {id} to resume"),
            )
        };
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err((CloseReason::ClosedByServer, "server shutting down".into()));
        }
        let Some(slot) = lock(&self.sessions).get(&id).cloned() else {
            let tombstone = lock(&self.tombstones).get(&id).cloned();
            if let Some((known, until)) = tombstone
                && until > tokio::time::Instant::now()
                && bool::from(known.as_bytes().ct_eq(token.as_bytes()))
            {
                return Err((
                    CloseReason::ClosedByServer,
                    format!("session {id} was closed by the server"),
                ));
            }
            return Err(unknown());
        };
        let topics = lock(&self.topics);
        let mut inner = lock(&slot.inner);
        if inner.closed || !bool::from(inner.token.as_bytes().ct_eq(token.as_bytes())) {
            // A wrong token says nothing about whether the session exists.
            warn!(session = %id, "resume refused: unknown session or wrong token");
            return Err(unknown());
        }
        let now = Instant::now();
        if inner.connected {
            // A valid resume while the old connection looks alive: the old one is half-open.
            info!(session = %id, "resume takes over a live connection");
            inner.proto.disconnected();
        }
        let was_connected = inner.connected;
        let outcome = match inner.proto.resume(now, received) {
            Ok(o) => o,
            Err(message) => {
                warn!(session = %id, %message, "resume refused: inconsistent position");
                return Err((CloseReason::HandshakeError, message));
            }
        };
        inner.generation += 1;
        inner.connected = true;
        inner.token = ResumeToken::from_bytes(random_bytes());
        self.metrics.resumes.inc();
        self.metrics
            .replayed_frames
            .inc_by(inner.proto.buffered().0 as u64);
        if !was_connected {
            self.metrics
                .session_state(Some("disconnected"), Some("connected"));
        }
        if matches!(outcome, ResumeOutcome::Gap(_)) {
            self.metrics.gap_reports.inc();
        }
        // Wake the old connection's writer, if any, so that it sees it was superseded.
        slot.notify.notify_waiters();
        if let ResumeOutcome::Gap(report) = &outcome {
            info!(session = %id, lost = report.lost_count(), "resume with a gap; sending snapshots");
            let subscriptions = inner.subscriptions.clone();
            let mut sent = std::collections::HashSet::new();
            for selector in &subscriptions {
                for value in topics.store.current(selector) {
                    if !slot.perms.may_read(&value.topic) || !sent.insert(value.topic.clone()) {
                        continue;
                    }
                    let update = Update {
                        topic: value.topic.to_string(),
                        value: value.value,
                        position: value.position,
                        snapshot: true,
                    };
                    // Just resumed: the connection has nothing unsent that could be dropped.
                    let _ = inner.proto.push_update(value.topic, &update);
                }
            }
        }
        let accepted = SessionAccepted {
            session: id,
            token: inner.token.clone(),
            reconnect_timeout: inner.reconnect_timeout,
            ping_period: self.config.ping_period(),
            received: inner.proto.received(),
            max_frame: self.config.limits.max_frame_bytes,
        };
        debug!(session = %id, "session resumed");
        Ok(Admitted {
            slot: slot.clone(),
            generation: inner.generation,
            headers: accepted.to_headers(),
        })
    }

    fn input_drained(&self, slot: &Slot, generation: u64) {
        let mut inner = lock(&slot.inner);
        if inner.generation != generation {
            return;
        }
        let before = inner.proto.poll_timeout();
        inner.proto.handle_input_drained(Instant::now());
        if tether_protocol::deadline_moved_earlier(before, inner.proto.poll_timeout()) {
            slot.notify.notify_one();
        }
    }

    fn handle_client_frame(
        &self,
        slot: &Arc<Slot>,
        generation: u64,
        frame: ClientFrame,
    ) -> Handled {
        let now = Instant::now();
        if !frame.is_sequenced() {
            let mut inner = lock(&slot.inner);
            if inner.generation != generation {
                return Handled::Superseded;
            }
            return match inner.proto.handle_decoded(now, frame) {
                Ok(Some(ServerRequest::Close)) => {
                    drop(inner);
                    self.free(slot, "closed by client");
                    Handled::Closed
                }
                Ok(_) => Handled::Continue,
                Err(fault) => {
                    drop(inner);
                    self.fault(slot, fault)
                }
            };
        }
        let mut topics = lock(&self.topics);
        let mut inner = lock(&slot.inner);
        if inner.generation != generation {
            return Handled::Superseded;
        }
        let deadline_before = inner.proto.poll_timeout();
        let request = match inner.proto.handle_decoded(now, frame) {
            Ok(Some(r)) => r,
            Ok(None) => return Handled::Continue,
            Err(fault) => {
                drop(inner);
                drop(topics);
                return self.fault(slot, fault);
            }
        };
        let result = match request {
            ServerRequest::Subscribe { seq, selector } => {
                self.subscribe(&mut topics, slot, &mut inner, seq, &selector)
            }
            ServerRequest::Unsubscribe { seq, selector } => {
                self.unsubscribe(&mut topics, slot, &mut inner, seq, &selector)
            }
            ServerRequest::Publish { seq, topic, value } => {
                let refusal = if let Err(e) = validate_topic(&topic) {
                    Some(request_error(RequestErrorKind::InvalidTopic, e.to_string()))
                } else if !slot.perms.may_publish(&topic) {
                    Some(request_error(
                        RequestErrorKind::AccessDenied,
                        format!("may not publish on {topic}"),
                    ))
                } else {
                    None
                };
                match refusal {
                    Some(error) => inner.proto.reject(seq, error),
                    None => {
                        self.fan_out(&mut topics, &topic, value, Some((slot, &mut inner)));
                        Ok(())
                    }
                }
            }
            ServerRequest::Close => Ok(()),
        };
        if let Err(ServerFault::SlowConsumer) = result {
            self.kick(slot, &mut inner);
            return Handled::Superseded;
        }
        // Fan-out already woke every subscriber's writer; this one needs waking only for a
        // rejection to write or an ack timer that moved earlier.
        if inner.proto.has_pending_transmit()
            || tether_protocol::deadline_moved_earlier(deadline_before, inner.proto.poll_timeout())
        {
            slot.notify.notify_one();
        }
        Handled::Continue
    }

    fn subscribe(
        &self,
        topics: &mut Topics,
        slot: &Arc<Slot>,
        inner: &mut SlotInner,
        seq: u64,
        text: &str,
    ) -> Result<(), ServerFault> {
        let selector = match Selector::parse(text) {
            Ok(s) => s,
            Err(e) => {
                return inner.proto.reject(
                    seq,
                    request_error(RequestErrorKind::InvalidSelector, e.to_string()),
                );
            }
        };
        if !slot.perms.may_subscribe(&selector) {
            return inner.proto.reject(
                seq,
                request_error(
                    RequestErrorKind::AccessDenied,
                    format!("may not subscribe to {selector}"),
                ),
            );
        }
        if inner.subscriptions.contains(&selector) {
            return Ok(());
        }
        topics.index.add(&selector, SlotRef(slot.clone()));
        for value in topics.store.current(&selector) {
            let already = inner.subscriptions.iter().any(|s| s.matches(&value.topic));
            if already {
                continue;
            }
            let update = Update {
                topic: value.topic.to_string(),
                value: value.value,
                position: value.position,
                snapshot: true,
            };
            inner.proto.push_update(value.topic, &update)?;
        }
        inner.subscriptions.push(selector);
        Ok(())
    }

    fn unsubscribe(
        &self,
        topics: &mut Topics,
        slot: &Arc<Slot>,
        inner: &mut SlotInner,
        seq: u64,
        text: &str,
    ) -> Result<(), ServerFault> {
        let position = Selector::parse(text)
            .ok()
            .and_then(|s| inner.subscriptions.iter().position(|x| *x == s));
        match position {
            Some(i) => {
                let selector = inner.subscriptions.remove(i);
                topics.index.remove(&selector, &SlotRef(slot.clone()));
                Ok(())
            }
            None => inner.proto.reject(
                seq,
                request_error(
                    RequestErrorKind::NotSubscribed,
                    format!("not subscribed to {text}"),
                ),
            ),
        }
    }

    /// Sets a topic's value and queues the update for every subscriber, in one critical
    /// section so that every subscriber sees a topic's updates in the same order. `own` is the
    /// publishing session, whose lock the caller already holds.
    fn fan_out(
        &self,
        topics: &mut Topics,
        topic: &str,
        value: Bytes,
        mut own: Option<(&Arc<Slot>, &mut SlotInner)>,
    ) -> Position {
        let stored = topics.store.set(topic, value);
        let targets = topics.index.matching(topic);
        if targets.is_empty() {
            return stored.position;
        }
        // Encoded once, shared by every subscriber's buffer.
        let encoded = Bytes::from(frame::encode_to_vec(&ServerFrame::Update(Update {
            topic: String::from(&*stored.topic),
            value: stored.value.clone(),
            position: stored.position,
            snapshot: false,
        })));
        for SlotRef(target) in targets {
            if !target.perms.may_read(topic) {
                continue;
            }
            let deliver = |inner: &mut SlotInner| {
                if inner.closed {
                    return;
                }
                // With frames already waiting, the writer has been woken for them and takes
                // this one too: a wake-up per update was a visible share of its cost.
                let writer_idle = !inner.proto.has_pending_transmit();
                if let Err(ServerFault::SlowConsumer) = inner
                    .proto
                    .push_encoded_update(stored.topic.clone(), encoded.clone())
                {
                    warn!(session = %target.id, "slow consumer: dropping its connection; a resume reports the gap");
                    self.kick(&target, inner);
                    let _ = inner
                        .proto
                        .push_encoded_update(stored.topic.clone(), encoded.clone());
                }
                if writer_idle {
                    target.notify.notify_one();
                }
            };
            match own.as_mut() {
                Some((slot, inner)) if Arc::ptr_eq(slot, &target) => deliver(inner),
                _ => deliver(&mut lock(&target.inner)),
            }
        }
        stored.position
    }

    /// Drops the current connection of a session whose client reads too slowly; the session
    /// stays resumable and its resume reports what had to be dropped.
    fn kick(&self, slot: &Slot, inner: &mut SlotInner) {
        if inner.connected {
            self.metrics
                .session_state(Some("connected"), Some("disconnected"));
        }
        self.metrics.slow_consumers.inc();
        inner.generation += 1;
        inner.connected = false;
        inner.proto.disconnected();
        slot.notify.notify_waiters();
        slot.notify.notify_one();
    }

    /// Token bucket per address: `false` when `ip` has used up its connection attempts.
    fn admit_attempt(&self, ip: std::net::IpAddr) -> bool {
        let rate = self
            .config
            .limits
            .connection_attempts_per_second_per_address;
        if rate == 0 {
            return true;
        }
        let rate = f64::from(rate);
        let now = Instant::now();
        let mut attempts = lock(&self.attempts);
        if attempts.len() > 100_000 {
            // Forget addresses whose bucket has refilled: they are indistinguishable from new.
            attempts.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < rate
            });
        }
        let (tokens, at) = attempts.entry(ip).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn fault(&self, slot: &Arc<Slot>, fault: ServerFault) -> Handled {
        match fault {
            ServerFault::Protocol(message) => {
                self.close_slot(slot, CloseReason::TransportError, &message);
                Handled::Closed
            }
            ServerFault::Idle | ServerFault::SlowConsumer => Handled::Superseded,
        }
    }

    /// Queues a close frame and frees the session; the writer sends the frame and hangs up.
    fn close_slot(&self, slot: &Arc<Slot>, reason: CloseReason, message: &str) {
        {
            let mut inner = lock(&slot.inner);
            if inner.closed {
                return;
            }
            inner.proto.close(reason, message);
            inner.closing = true;
            if reason == CloseReason::ClosedByServer {
                let expiry = tokio::time::Instant::now() + self.config.max_reconnect_timeout();
                let mut tombstones = lock(&self.tombstones);
                let now = tokio::time::Instant::now();
                tombstones.retain(|_, (_, until)| *until > now);
                tombstones.insert(slot.id, (inner.token.clone(), expiry));
            }
        }
        info!(session = %slot.id, %reason, message, "session closed by the server");
        slot.notify.notify_one();
        self.free(slot, message);
    }

    /// The connection of `generation` ended: keep the session for its reconnection timeout.
    fn connection_lost(self: &Arc<Self>, slot: &Arc<Slot>, generation: u64) {
        let (timeout, generation) = {
            let mut inner = lock(&slot.inner);
            if inner.closed {
                return;
            }
            if inner.generation == generation {
                if inner.connected {
                    self.metrics
                        .session_state(Some("connected"), Some("disconnected"));
                }
                inner.connected = false;
                inner.proto.disconnected();
            } else if inner.connected {
                // Another connection took over.
                return;
            }
            // Else the connection was kicked (slow consumer): the session waits for a resume.
            (inner.reconnect_timeout, inner.generation)
        };
        if timeout.is_zero() {
            self.free(slot, "disconnected without reconnection");
            return;
        }
        debug!(session = %slot.id, timeout_ms = timeout.as_millis() as u64, "session disconnected; kept for resume");
        let shared = self.clone();
        let slot = slot.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let expired = {
                let inner = lock(&slot.inner);
                inner.generation == generation && !inner.connected && !inner.closed
            };
            if expired {
                shared.free(&slot, "reconnection timeout elapsed");
            }
        });
    }

    /// Forgets a session and its subscriptions.
    fn free(&self, slot: &Arc<Slot>, why: &str) {
        if lock(&self.sessions).remove(&slot.id).is_none() {
            return;
        }
        {
            let mut topics = lock(&self.topics);
            let mut inner = lock(&slot.inner);
            let state = if inner.connected {
                "connected"
            } else {
                "disconnected"
            };
            self.metrics.session_state(Some(state), None);
            inner.connected = false;
            inner.closed = true;
            // The writer flushes what is queued (a close frame, say) and hangs up.
            inner.closing = true;
            for selector in inner.subscriptions.drain(..) {
                topics.index.remove(&selector, &SlotRef(slot.clone()));
            }
        }
        if let Some(name) = &slot.principal {
            let mut counts = lock(&self.per_principal);
            if let Some(c) = counts.get_mut(name) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    counts.remove(name);
                }
            }
        }
        slot.notify.notify_one();
        self.freed.notify_waiters();
        info!(session = %slot.id, why, "session freed");
    }
}
