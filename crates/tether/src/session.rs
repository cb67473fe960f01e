//! The client session: builder, handle, and the driver task that outlives connections.
//!
//! One driver task per session runs on Tether's runtime. While connected it reads frames and a
//! writer task writes what the sans-I/O [`ClientSession`] wants to send; when the connection is
//! lost it runs the reconnection strategy. User code (listeners, strategies) never runs on the
//! driver or under a lock: it is queued, in order, to the session's callback executor.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use tether_protocol::client::{ClientEvent, ClientSession, ClientSessionConfig, ConnectionFault};
use tether_protocol::handshake::{SessionAccepted, SessionRequest};
use tether_protocol::topic::validate_topic;
use tether_protocol::{
    BufferLimits, CloseReason, GapReport, Position, ResumeToken, Selector, SessionId, SessionState,
    Update,
};

use crate::Error;
use crate::completion::{self, Board, Completion};
use crate::connect::{self, Connector, Failure, TlsOptions, Ws};
use crate::delivery::{Backlog, Callbacks, Sink, Subscription};
use crate::runtime;
use crate::strategy::{
    AttemptInfo, Decision, ReconnectionAttempt, ReconnectionStrategy, Timer, default_strategy,
};

mod writer;
use writer::{WriterEnd, write_loop};

/// One state transition, reported to listeners and streams exactly once, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    /// The state left.
    pub old: SessionState,
    /// The state entered.
    pub new: SessionState,
    /// Why, for disconnections and closings.
    pub reason: Option<CloseReason>,
}

/// Receives a session's state changes and gap reports, on the session's callback thread
/// (never an async worker, never under a lock; blocking delays later callbacks only).
pub trait SessionListener: Send + Sync + 'static {
    /// A state transition.
    fn on_state_changed(&self, change: &StateChange);
    /// Messages were lost during an outage; snapshots of the current values follow.
    fn on_gap(&self, _report: &GapReport) {}
}

impl<F> SessionListener for F
where
    F: Fn(&StateChange) + Send + Sync + 'static,
{
    fn on_state_changed(&self, change: &StateChange) {
        self(change)
    }
}

/// A topic value delivered to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicUpdate {
    /// The topic path, shared by the updates of one topic (no allocation per update).
    pub topic: Arc<str>,
    /// The value. It shares the buffer of the WebSocket message it arrived in (no copy per
    /// update); to keep a small value for long after the rest is gone, copy it
    /// (`Bytes::copy_from_slice`).
    pub value: Bytes,
    /// The update's position in the topic's log.
    pub position: Position,
    /// `true` for a current value sent as a snapshot (a new subscription's first value, or the
    /// state after a gap), `false` for a live update.
    pub snapshot: bool,
}

struct RuntimeTimer(tokio::runtime::Handle);

impl Timer for RuntimeTimer {
    fn schedule(&self, delay: Duration, f: Box<dyn FnOnce() + Send>) {
        self.0.spawn(async move {
            tokio::time::sleep(delay).await;
            f();
        });
    }
}

/// Builds and opens a [`Session`].
///
/// ```no_run
/// # async fn run() -> Result<(), tether::Error> {
/// use std::time::Duration;
/// use tether::{Session, strategy::ExponentialBackoff};
///
/// let session = Session::builder("ws://127.0.0.1:8080")
///     .principal("control")
///     .password("password")
///     .reconnection_timeout(Duration::from_secs(60))
///     .reconnection_strategy(ExponentialBackoff::default())
///     .listener(|change: &tether::StateChange| println!("{:?} -> {:?}", change.old, change.new))
///     .open()
///     .await?;
/// # Ok(()) }
/// ```
pub struct SessionBuilder {
    urls: Vec<String>,
    principal: Option<String>,
    credentials: Option<String>,
    auth_token: Option<String>,
    reconnect_timeout: Duration,
    strategy: Arc<dyn ReconnectionStrategy>,
    listeners: Vec<Arc<dyn SessionListener>>,
    buffer: BufferLimits,
    strict: bool,
    connect_timeout: Duration,
    close_timeout: Duration,
    ping_period: Option<Duration>,
    delivery_limit: usize,
    tls: TlsOptions,
}

impl SessionBuilder {
    fn new(url: &str) -> Self {
        SessionBuilder {
            urls: vec![url.to_owned()],
            principal: None,
            credentials: None,
            auth_token: None,
            reconnect_timeout: Duration::from_secs(60),
            strategy: default_strategy(),
            listeners: Vec::new(),
            buffer: ClientSessionConfig::default().buffer,
            strict: false,
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            ping_period: None,
            delivery_limit: 10_000,
            tls: TlsOptions::default(),
        }
    }

    /// Trusts the certificates in this PEM (a private CA) for `wss://`, in addition to the
    /// system's roots. May be called several times.
    pub fn tls_root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.tls.extra_roots_pem.push(pem.as_ref().to_vec());
        self
    }

    /// **Development only**: accept any server certificate on `wss://`, so that anybody on
    /// the path can read and change the session. Never enable it in production.
    pub fn danger_accept_invalid_certificates(mut self, accept: bool) -> Self {
        self.tls.accept_invalid_certificates = accept;
        self
    }

    /// Another server to try when the first does not answer: `open` tries the URLs in order
    /// until one answers, and reconnection attempts rotate through them (an attempt after a
    /// server asked the session to go away starts with the next one). May be called several
    /// times; all URLs must serve the same sessions (one server restarted in place, or the
    /// nodes of one cluster).
    pub fn fallback_url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// The principal to authenticate as (anonymous when not set).
    pub fn principal(mut self, principal: impl Into<String>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// The principal's password.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.credentials = Some(password.into());
        self
    }

    /// Logs in with a signed token (a JWT the server's `[tokens]` configuration verifies)
    /// instead of a principal and a password: the token names the principal and carries its
    /// permissions.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// How long to keep trying to reconnect after a disconnection (default 60 s). The server
    /// keeps the session for at most its own maximum. Zero disables reconnection.
    pub fn reconnection_timeout(mut self, timeout: Duration) -> Self {
        self.reconnect_timeout = timeout;
        self
    }

    /// Disables reconnection: a lost connection closes the session (`CLOSED_FAILED`), and
    /// the server frees the session at once.
    pub fn no_reconnection(self) -> Self {
        self.reconnection_timeout(Duration::ZERO)
    }

    /// The reconnection strategy (default: [`crate::strategy::default_strategy`]): a
    /// built-in, your own type, or a closure `Fn(ReconnectionAttempt)`.
    pub fn reconnection_strategy(mut self, strategy: impl ReconnectionStrategy) -> Self {
        self.strategy = Arc::new(strategy);
        self
    }

    /// A shared reconnection strategy.
    pub fn reconnection_strategy_arc(mut self, strategy: Arc<dyn ReconnectionStrategy>) -> Self {
        self.strategy = strategy;
        self
    }

    /// Adds a listener for state changes and gap reports.
    pub fn listener(mut self, listener: impl SessionListener) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Adds a shared listener.
    pub fn listener_arc(mut self, listener: Arc<dyn SessionListener>) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Bounds the requests kept until the server acknowledges them, including those made while
    /// disconnected (default 10,000 or 8 MiB). Past the bound, `publish` fails with
    /// [`Error::QueueFull`] while disconnected, and waits while connected.
    ///
    /// It also bounds how many publishes are in flight, and so one session's upload rate: a
    /// publish leaves the queue when its ack comes back, a round trip through both directions'
    /// TCP buffers. For bulk uploads of small messages, a larger queue (and as many
    /// [`Session::send`]s awaiting their [`Completion`]) keeps the connection busy; see
    /// BENCHMARKS.md, measure (b).
    pub fn send_queue(self, max_requests: usize, max_bytes: usize) -> Self {
        self.max_queued_requests(max_requests)
            .max_queued_bytes(max_bytes)
    }

    /// [`SessionBuilder::send_queue`]'s bound on requests alone (at least 1), the bound on
    /// bytes left as it is.
    pub fn max_queued_requests(mut self, max_requests: usize) -> Self {
        self.buffer.max_frames = max_requests.max(1);
        self
    }

    /// [`SessionBuilder::send_queue`]'s bound on bytes alone (at least 1), the bound on
    /// requests left as it is.
    pub fn max_queued_bytes(mut self, max_bytes: usize) -> Self {
        self.buffer.max_bytes = max_bytes.max(1);
        self
    }

    /// Close the session (reason `lost_messages`) rather than resume with a gap report when
    /// the server could not keep every message during an outage.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Time allowed for each connection (TCP and upgrade), default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Updates that may wait for the application (in [`Subscription`] streams not read yet,
    /// or handler calls not run yet), across the session's subscriptions (default 10,000).
    /// Past it the session stops reading from its connection until the application has taken
    /// half of them: a consumer slower than the stream costs bounded memory, and the server's
    /// slow-consumer handling drops the connection; the resume then reports what was dropped
    /// with a gap report. While reading is paused, the server's acknowledgements wait too: a
    /// [`Completion`] awaited while a subscription goes unread past the limit waits until the
    /// application reads it, so read subscriptions concurrently with awaiting completions.
    pub fn delivery_limit(mut self, limit: usize) -> Self {
        self.delivery_limit = limit.max(2);
        self
    }

    /// How long [`Session::close`] waits for the requests queued before it to be written and
    /// confirmed by the server (default 5 s). Past it the connection is dropped: requests that
    /// were written fail with [`Error::OutcomeUnknown`], the others with [`Error::Closed`].
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Asks the server to ping this session every `period` (default: the server's own period,
    /// 10 s unless configured). The server grants it within its bounds (by default 1 s to
    /// 60 s); [`Session::ping_period`] tells what was granted. A connection silent for one and
    /// a half periods is taken as dead, so a shorter period notices a dead network sooner at
    /// the cost of more traffic; a longer one suits devices that must sleep.
    pub fn ping_period(mut self, period: Duration) -> Self {
        self.ping_period = Some(period);
        self
    }

    /// Connects and opens the session. On failure the listeners see `CONNECTING` →
    /// `CLOSED_FAILED` and the error says why (authentication failed, connection error, ...).
    pub async fn open(self) -> Result<Session, Error> {
        if self.connect_timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "connect timeout must be greater than zero".into(),
            ));
        }
        if self.ping_period.is_some_and(|p| p.is_zero()) {
            return Err(Error::InvalidArgument(
                "ping period must be greater than zero".into(),
            ));
        }
        let connector = Connector::new(
            &self.urls,
            &self.tls,
            self.connect_timeout,
            self.ping_period,
        )?;
        if self.principal.is_none() && self.credentials.is_some() {
            return Err(Error::InvalidArgument(
                "credentials given without a principal".into(),
            ));
        }
        if self.auth_token.is_some() && (self.principal.is_some() || self.credentials.is_some()) {
            return Err(Error::InvalidArgument(
                "give a signed token or a principal and password, not both".into(),
            ));
        }
        let request = SessionRequest::Open {
            principal: self.principal.clone(),
            credentials: self.credentials.clone(),
            auth_token: self.auth_token.clone(),
            reconnect_timeout: self.reconnect_timeout,
        };
        connect::check_request(&request)?;
        let handle = runtime::handle().map_err(|e| Error::Open {
            reason: CloseReason::ConnectionError,
            message: format!("cannot start the runtime: {e}"),
        })?;
        let (tx, rx) = oneshot::channel();
        let h = handle.clone();
        handle.spawn(async move {
            let _ = tx.send(open_on_runtime(self, connector, request, h).await);
        });
        rx.await.unwrap_or(Err(Error::Closed {
            reason: CloseReason::ClosedByClient,
        }))
    }
}

async fn open_on_runtime(
    b: SessionBuilder,
    connector: Connector,
    request: SessionRequest,
    handle: tokio::runtime::Handle,
) -> Result<Session, Error> {
    let callbacks = Callbacks::new(&handle);
    // The first server that answers wins.
    let mut opened = None;
    let mut failure = None;
    for target in 0..connector.targets() {
        match connector.connect(&request, target).await {
            Ok(ok) => {
                opened = Some((ok, target));
                break;
            }
            Err(f) => {
                debug!(target, reason = %f.reason, message = %f.message, "cannot open on this server");
                failure = Some(f);
            }
        }
    }
    let ((ws, accepted), target) = match opened {
        Some(ok) => ok,
        None => {
            let (reason, message) = failure.map_or(
                (CloseReason::ConnectionError, "no server URL".to_string()),
                |f| (f.reason, f.message),
            );
            let change = StateChange {
                old: SessionState::Connecting,
                new: SessionState::closed_for(reason),
                reason: Some(reason),
            };
            for l in &b.listeners {
                let l = l.clone();
                callbacks.post(move || l.on_state_changed(&change));
            }
            return Err(Error::Open { reason, message });
        }
    };
    let mut proto = ClientSession::new(ClientSessionConfig {
        buffer: b.buffer,
        strict: b.strict,
    });
    if let Err(fault) = proto.connected(Instant::now(), &accepted) {
        return Err(Error::Open {
            reason: fault.reason(),
            message: fault.to_string(),
        });
    }
    let (state_tx, _) = watch::channel(SessionState::Connecting);
    let (close_tx, _) = watch::channel(false);
    let inner = Arc::new(SessionInner {
        id: accepted.session,
        connector,
        target: std::sync::atomic::AtomicUsize::new(target),
        strategy: b.strategy,
        close_timeout: b.close_timeout,
        backlog: Arc::new(Backlog::new(b.delivery_limit)),
        handle: handle.clone(),
        callbacks,
        writer_wake: Notify::new(),
        space: Notify::new(),
        completions: Arc::default(),
        state_tx,
        close_tx,
        shared: Mutex::new(Shared {
            proto,
            state: SessionState::Connecting,
            close_reason: None,
            token: accepted.token.clone(),
            reconnect_timeout: accepted.reconnect_timeout.min(b.reconnect_timeout),
            closing: false,
            listeners: b.listeners,
            state_streams: Vec::new(),
            gap_streams: Vec::new(),
            subscriptions: Vec::new(),
            staged: Vec::new(),
            next_subscription: 0,
            pending: PendingRequests::default(),
        }),
    });
    runtime::register(Arc::downgrade(&inner));
    info!(session = %inner.id, "session open");
    inner.transition(SessionState::ConnectedActive, None);
    handle.spawn(drive(inner.clone(), ws));
    Ok(Session {
        _owner: Arc::new(CloseOnDrop(inner.clone())),
        inner,
    })
}

/// Subscribes and unsubscribes waiting for their answer, in sequence order: requests are
/// answered in order, so the answer is almost always for the first one (no hashing per
/// request). Publishes are not here: the session's [`Board`] has their outcomes.
#[derive(Default)]
struct PendingRequests(std::collections::VecDeque<(u64, Pending)>);

impl PendingRequests {
    fn insert(&mut self, seq: u64, p: Pending) {
        self.0.push_back((seq, p));
    }

    fn remove(&mut self, seq: u64) -> Option<Pending> {
        if self.0.front().is_some_and(|(s, _)| *s == seq) {
            return self.0.pop_front().map(|(_, p)| p);
        }
        let i = self.0.iter().position(|(s, _)| *s == seq)?;
        self.0.remove(i).map(|(_, p)| p)
    }
}

impl IntoIterator for PendingRequests {
    type Item = (u64, Pending);
    type IntoIter = std::collections::vec_deque::IntoIter<(u64, Pending)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A subscribe or unsubscribe waiting for its answer (publishes have the [`Board`]).
enum Pending {
    Subscribe {
        id: u64,
        done: oneshot::Sender<Result<(), Error>>,
    },
    Unsubscribe {
        selector: Selector,
        done: oneshot::Sender<Result<(), Error>>,
    },
}

struct LocalSubscription {
    id: u64,
    selector: Selector,
    /// Until the server confirms, snapshots for matching topics belong to this subscription.
    pending: bool,
    sink: Sink,
}

/// Aligned to cache lines of its own (two, as adjacent-line prefetching pairs them), so that
/// its lock's line holds nothing else of [`SessionInner`]: the reader signals `space` on every
/// acknowledgement, and in the lock's line that made every publish's unlock wait for it.
#[repr(align(128))]
struct Shared {
    proto: ClientSession,
    state: SessionState,
    close_reason: Option<CloseReason>,
    token: ResumeToken,
    reconnect_timeout: Duration,
    /// `close()` was called: requests queued before it go out, then the close frame; the
    /// server's final ack completes them and it hangs up.
    closing: bool,
    listeners: Vec<Arc<dyn SessionListener>>,
    state_streams: Vec<mpsc::UnboundedSender<StateChange>>,
    gap_streams: Vec<mpsc::UnboundedSender<GapReport>>,
    subscriptions: Vec<LocalSubscription>,
    /// Subscriptions with updates staged for their stream (see [`Shared::flush_staged`]).
    staged: Vec<u64>,
    next_subscription: u64,
    pending: PendingRequests,
}

impl Shared {
    /// Sends the updates staged for subscription streams, one batch per subscription. Runs
    /// after each message, and before a request completes (an unsubscribe removes its
    /// subscription; a subscriber woken by its completion finds its snapshots).
    fn flush_staged(&mut self, backlog: &Backlog) {
        if self.staged.is_empty() {
            return;
        }
        for id in self.staged.drain(..) {
            if let Some(l) = self.subscriptions.iter_mut().find(|l| l.id == id) {
                l.sink.flush(backlog);
            }
        }
    }
}

pub(crate) struct SessionInner {
    id: SessionId,
    connector: Connector,
    /// The server (index in the connector's URLs) of the current or last connection.
    target: std::sync::atomic::AtomicUsize,
    strategy: Arc<dyn ReconnectionStrategy>,
    close_timeout: Duration,
    /// Updates waiting for the application.
    backlog: Arc<Backlog>,
    handle: tokio::runtime::Handle,
    callbacks: Callbacks,
    writer_wake: Notify,
    /// Signalled when acknowledgements free room in the send queue.
    space: Notify,
    /// The outcomes of publishes.
    completions: Arc<Board>,
    state_tx: watch::Sender<SessionState>,
    close_tx: watch::Sender<bool>,
    shared: Mutex<Shared>,
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        // Gone without finishing (Tether's runtime shut down with the session open): the
        // publishes still in flight may or may not have been applied.
        self.completions.lose();
    }
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SessionInner {
    /// Records a transition and reports it (streams now, listeners on the callback thread).
    fn transition(&self, new: SessionState, reason: Option<CloseReason>) {
        let change = {
            let mut s = lock(&self.shared);
            let old = s.state;
            if !old.can_become(new) {
                return;
            }
            s.state = new;
            if new.is_closed() {
                s.close_reason = reason;
            }
            let change = StateChange { old, new, reason };
            // Order matters, all under the lock. Listener callbacks are queued first: whoever
            // sees the new state through `wait_for_state` (shutdown, then flushing the
            // callbacks) finds them queued. The watch is updated before any stream hears of
            // the change: `state()`, `wait_for_state` and the streams never disagree.
            for l in &s.listeners {
                let l = l.clone();
                self.callbacks.post(move || l.on_state_changed(&change));
            }
            self.state_tx.send_replace(new);
            s.state_streams.retain(|tx| tx.send(change).is_ok());
            if new.is_closed() {
                s.state_streams.clear();
            }
            change
        };
        debug!(session = %self.id, old = %change.old, new = %change.new, reason = ?change.reason, "state");
    }

    pub(crate) fn request_close(&self) {
        {
            let mut s = lock(&self.shared);
            if s.state.is_closed() || s.closing {
                return;
            }
            s.closing = true;
            s.proto.close();
        }
        self.close_tx.send_replace(true);
        self.writer_wake.notify_one();
    }

    /// Waits until every callback queued so far has run.
    pub(crate) async fn callbacks_done(&self) {
        let (tx, rx) = oneshot::channel::<()>();
        self.callbacks.post(move || {
            let _ = tx.send(());
        });
        let _ = rx.await;
    }

    pub(crate) async fn wait_closed(&self) {
        let mut rx = self.state_tx.subscribe();
        let _ = rx.wait_for(|s| s.is_closed()).await;
    }

    /// Feeds server messages, in order, taking them from the front of `messages`; `Err` ends
    /// the connection (messages after a fault are not looked at). Stops while the application
    /// is behind (see [`Backlog`]), leaving the rest for later, unless `all` (the connection is
    /// ending: what arrived before the end still counts).
    fn handle_frames(&self, messages: &mut VecDeque<Bytes>, all: bool) -> Result<(), ConnEnd> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut s = lock(&self.shared);
        let deadline_before = s.proto.poll_timeout();
        let now = Instant::now();
        let mut end = None;
        let mut freed = false;
        while let Some(bytes) = messages.pop_front() {
            if let Err(fault) = s.proto.handle_message(now, &bytes) {
                end = Some(fault_end(fault));
            }
            freed |= self.drain_events(&mut s, &mut end);
            if end.is_some() {
                messages.clear();
                break;
            }
            if !all && self.backlog.is_over() {
                break;
            }
        }
        // Wake the writer only when it has something to do: most frames just count towards
        // the next ack, whose timer the writer already waits for.
        let wake = s.proto.has_pending_transmit()
            || tether_protocol::deadline_moved_earlier(deadline_before, s.proto.poll_timeout());
        drop(s);
        if freed {
            self.space.notify_waiters();
        }
        if wake || end.is_some() {
            self.writer_wake.notify_one();
        }
        match end {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Routes what the protocol produced; returns whether a request completed (room freed).
    fn drain_events(&self, s: &mut Shared, end: &mut Option<ConnEnd>) -> bool {
        let mut freed = false;
        // Answers come in order: the last request answered settles every publish before it.
        let mut settled = None;
        while let Some(event) = s.proto.poll_event() {
            if !matches!(event, ClientEvent::Update(_)) {
                // What came before this event reaches the application before it.
                s.flush_staged(&self.backlog);
            }
            match event {
                ClientEvent::Update(update) => {
                    route_update(s, update, &self.callbacks, &self.backlog)
                }
                ClientEvent::Completed { request, result } => {
                    freed = true;
                    if result.is_ok() {
                        settled = Some(request);
                    }
                    complete(
                        s,
                        &self.completions,
                        request,
                        result.map_err(Error::Rejected),
                    );
                }
                ClientEvent::Gap(report) => {
                    warn!(session = %self.id, lost = report.lost_count(), "messages lost during the outage; snapshots follow");
                    s.gap_streams.retain(|tx| tx.send(report.clone()).is_ok());
                    for l in &s.listeners {
                        let (l, r) = (l.clone(), report.clone());
                        self.callbacks.post(move || l.on_gap(&r));
                    }
                }
                ClientEvent::ServerClosed { reason, message } => {
                    info!(session = %self.id, %reason, %message, "closed by the server");
                    end.get_or_insert(ConnEnd::Fatal(reason));
                }
                ClientEvent::GoAway {
                    reason,
                    retry_after,
                    message,
                } => {
                    info!(session = %self.id, %reason, retry_after_ms = retry_after.as_millis() as u64, %message, "the server is going away");
                    end.get_or_insert(ConnEnd::Lost(reason, Some(retry_after)));
                }
            }
        }
        s.flush_staged(&self.backlog);
        if let Some(seq) = settled {
            self.completions.settle_through(seq);
        }
        freed
    }

    /// Ends the session: final state, pending requests fail, streams end. A pending request
    /// that was written may have been applied: it fails as [`Error::OutcomeUnknown`], never as
    /// a plain failure.
    fn finish(&self, reason: CloseReason) {
        {
            let mut s = lock(&self.shared);
            s.proto.disconnected();
            // Requests up to this one were written on some connection: the server may have
            // applied them. The same fact for subscriptions here and publishes on the board.
            let written_through = s.proto.written_through();
            for (seq, p) in std::mem::take(&mut s.pending) {
                let tx = match p {
                    Pending::Subscribe { done: tx, .. } | Pending::Unsubscribe { done: tx, .. } => {
                        tx
                    }
                };
                let _ = tx.send(Err(completion::unanswered(reason, seq <= written_through)));
            }
            self.completions.close(reason, written_through);
            s.subscriptions.clear();
            s.gap_streams.clear();
        }
        self.space.notify_waiters();
        self.transition(SessionState::closed_for(reason), Some(reason));
        info!(session = %self.id, %reason, "session closed");
    }
}

fn fault_end(fault: ConnectionFault) -> ConnEnd {
    let reason = fault.reason();
    warn!(%fault, "connection fault");
    if reason.allows_reconnect() {
        ConnEnd::Lost(reason, None)
    } else {
        ConnEnd::Fatal(reason)
    }
}

fn route_update(s: &mut Shared, update: Update, callbacks: &Callbacks, backlog: &Arc<Backlog>) {
    let u = TopicUpdate {
        topic: update.topic,
        value: update.value,
        position: update.position,
        snapshot: update.snapshot,
    };
    // A snapshot answers the subscription that asked for it; if none is waiting (snapshots
    // after a gap), every matching subscription takes it.
    let for_pending = u.snapshot
        && s.subscriptions
            .iter()
            .any(|l| l.pending && l.selector.matches(&u.topic));
    let wants = |l: &LocalSubscription, u: &TopicUpdate| {
        l.selector.matches(&u.topic) && (!for_pending || l.pending)
    };
    // The last taker gets the update itself, the others a copy (usually there is one taker).
    let Some(last) = s.subscriptions.iter().rposition(|l| wants(l, &u)) else {
        return;
    };
    for i in 0..last {
        if wants(&s.subscriptions[i], &u) {
            let l = &mut s.subscriptions[i];
            if l.sink.deliver(u.clone(), callbacks, backlog) {
                s.staged.push(l.id);
            }
        }
    }
    let l = &mut s.subscriptions[last];
    if l.sink.deliver(u, callbacks, backlog) {
        s.staged.push(l.id);
    }
}

fn complete(s: &mut Shared, board: &Board, request: u64, result: Result<(), Error>) {
    match s.pending.remove(request) {
        Some(Pending::Subscribe { id, done }) => {
            if result.is_ok() {
                if let Some(l) = s.subscriptions.iter_mut().find(|l| l.id == id) {
                    l.pending = false;
                }
            } else {
                s.subscriptions.retain(|l| l.id != id);
            }
            let _ = done.send(result);
        }
        Some(Pending::Unsubscribe { selector, done }) => {
            if result.is_ok() {
                s.subscriptions.retain(|l| l.selector != selector);
            }
            let _ = done.send(result);
        }
        // A publish: settled with the others, unless refused.
        None => {
            if let Err(e) = result {
                board.fail(request, e);
            }
        }
    }
}

/// How a connection ended.
enum ConnEnd {
    /// Lost; the session may resume (after the server's hint, if it gave one).
    Lost(CloseReason, Option<Duration>),
    /// The session must close for this reason.
    Fatal(CloseReason),
    /// The application closed the session.
    ClosedByClient,
}

async fn drive(inner: Arc<SessionInner>, first: Ws) {
    let mut close_rx = inner.close_tx.subscribe();
    let mut ws = first;
    let reason = loop {
        let end = run_connection(&inner, ws, &mut close_rx).await;
        lock(&inner.shared).proto.disconnected();
        let (reason, hint) = match end {
            ConnEnd::ClosedByClient => break CloseReason::ClosedByClient,
            ConnEnd::Fatal(r) => break r,
            ConnEnd::Lost(r, hint) => (r, hint),
        };
        if *close_rx.borrow() {
            break CloseReason::ClosedByClient;
        }
        let timeout = lock(&inner.shared).reconnect_timeout;
        if timeout.is_zero() {
            info!(session = %inner.id, %reason, "connection lost; reconnection is disabled");
            break reason;
        }
        info!(session = %inner.id, %reason, "connection lost; recovering");
        inner.transition(SessionState::RecoveringReconnect, Some(reason));
        match recover(&inner, reason, hint, timeout, &mut close_rx).await {
            Ok(next) => {
                ws = next;
                inner.transition(SessionState::ConnectedActive, None);
            }
            Err(r) => break r,
        }
    };
    inner.finish(reason);
}

async fn run_connection(
    inner: &Arc<SessionInner>,
    ws: Ws,
    close_rx: &mut watch::Receiver<bool>,
) -> ConnEnd {
    let (sink, mut stream) = ws.split();
    let mut writer = inner.handle.spawn(write_loop(inner.clone(), sink));
    // Once the application closes, the connection has `close_timeout` to carry the requests
    // queued before the close and the close frame, and to bring back the server's final ack.
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let close_by = tokio::time::sleep_until(far);
    tokio::pin!(close_by);
    let mut closing = false;
    if *close_rx.borrow() {
        closing = true;
        close_by
            .as_mut()
            .reset(tokio::time::Instant::now() + inner.close_timeout);
    }
    // Messages read but not handled yet (the application was behind).
    let mut batch: VecDeque<Bytes> = VecDeque::with_capacity(READ_BATCH);
    loop {
        // The application is behind: stop reading until it catches up (the server's
        // slow-consumer handling takes it from there).
        let paused = inner.backlog.is_over() || !batch.is_empty();
        tokio::select! {
            end = &mut writer => {
                if closing {
                    return ConnEnd::ClosedByClient;
                }
                return match end {
                    Ok(WriterEnd::Fault(f)) => fault_end(f),
                    Ok(WriterEnd::Io) | Err(_) => ConnEnd::Lost(CloseReason::TransportError, None),
                };
            }
            changed = close_rx.changed(), if !closing => {
                if changed.is_err() || *close_rx.borrow() {
                    closing = true;
                    close_by
                        .as_mut()
                        .reset(tokio::time::Instant::now() + inner.close_timeout);
                }
            }
            _ = &mut close_by, if closing => {
                info!(session = %inner.id, "close timeout elapsed before the server confirmed the close");
                writer.abort();
                return ConnEnd::ClosedByClient;
            }
            _ = inner.backlog.caught_up(), if paused => {
                if let Err(end) = inner.handle_frames(&mut batch, false) {
                    writer.abort();
                    return end;
                }
            }
            message = stream.next(), if !paused => {
                // Every frame already read is handled in one go: one lock, one clock read and
                // at most one writer wake-up per batch instead of per frame.
                let mut next = Some(message);
                let mut end = None;
                while let Some(message) = next.take() {
                    match message {
                        Some(Ok(Message::Binary(b))) => batch.push_back(b),
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                        Some(Ok(Message::Text(_))) => {
                            end = Some(ConnEnd::Lost(CloseReason::TransportError, None));
                            break;
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            end = Some(if closing {
                                ConnEnd::ClosedByClient
                            } else {
                                ConnEnd::Lost(CloseReason::TransportError, None)
                            });
                            break;
                        }
                    }
                    if batch.len() < READ_BATCH {
                        next = stream.next().now_or_never();
                    }
                }
                // Frames that arrived before the end still count (acks, a close frame's reason).
                let handled = inner.handle_frames(&mut batch, end.is_some());
                if let Some(end) = handled.err().or(end) {
                    // Let the writer flush an ack or close frame it already has, briefly.
                    writer.abort();
                    return end;
                }
            }
        }
    }
}

/// Frames handled under one lock at most (enough to amortise it, few enough to stay fair to
/// the writer and the callbacks waiting for that lock).
const READ_BATCH: usize = 64;

/// Whether a failed reconnection attempt ends the recovery.
fn attempt_failure_is_final(reason: CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::UnknownSession
            | CloseReason::AuthenticationFailed
            | CloseReason::AccessDenied
            | CloseReason::ProtocolVersionMismatch
            | CloseReason::ClosedByServer
            | CloseReason::LostMessages
    )
}

async fn recover(
    inner: &Arc<SessionInner>,
    first_reason: CloseReason,
    first_hint: Option<Duration>,
    timeout: Duration,
    close_rx: &mut watch::Receiver<bool>,
) -> Result<Ws, CloseReason> {
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let mut number = 1u32;
    let mut last_reason = first_reason;
    let mut last_hint = first_hint;
    let timer: Arc<dyn Timer> = Arc::new(RuntimeTimer(inner.handle.clone()));
    // With several servers, the first attempt goes back to the last one, unless it asked the
    // session to go away; then every attempt tries the next.
    let mut target = inner.target.load(std::sync::atomic::Ordering::Relaxed);
    if going_elsewhere(first_reason) {
        target += 1;
    }
    loop {
        let now = tokio::time::Instant::now();
        let info = AttemptInfo {
            number,
            elapsed: now - started,
            remaining: deadline.saturating_duration_since(now),
            last_reason,
            retry_after: last_hint,
        };
        let (tx, rx) = oneshot::channel();
        let attempt = ReconnectionAttempt::new(info.clone(), tx, timer.clone());
        let strategy = inner.strategy.clone();
        debug!(session = %inner.id, attempt = number, "calling the reconnection strategy");
        inner
            .callbacks
            .post(move || strategy.perform_reconnection(attempt));
        let decision = async {
            match rx.await {
                Ok(d) => d,
                // Every copy of the attempt was dropped undecided: only the timeout is left.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            d = decision => {
                if d == Decision::Abort {
                    info!(session = %inner.id, attempt = number, "strategy aborted reconnection");
                    return Err(CloseReason::ReconnectAborted);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                info!(session = %inner.id, "reconnection timeout elapsed");
                return Err(CloseReason::ReconnectTimeout);
            }
            _ = close_rx.wait_for(|c| *c) => return Err(CloseReason::ClosedByClient),
        }
        let request = {
            let s = lock(&inner.shared);
            SessionRequest::Resume {
                session: inner.id,
                token: s.token.clone(),
                received: s.proto.received(),
                positions: s.proto.positions(),
                confirmed: s.proto.confirmed(),
            }
        };
        let result = tokio::select! {
            r = tokio::time::timeout_at(deadline, inner.connector.connect(&request, target)) => r,
            _ = close_rx.wait_for(|c| *c) => return Err(CloseReason::ClosedByClient),
        };
        let failure = match result {
            Err(_) => return Err(CloseReason::ReconnectTimeout),
            Ok(Ok((ws, accepted))) => match resumed(inner, &accepted) {
                Ok(()) => {
                    inner.target.store(
                        target % inner.connector.targets(),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    let strategy = inner.strategy.clone();
                    let done = AttemptInfo {
                        elapsed: started.elapsed(),
                        ..info
                    };
                    inner.callbacks.post(move || strategy.on_success(&done));
                    info!(session = %inner.id, attempt = number, "session resumed");
                    return Ok(ws);
                }
                Err(reason) => return Err(reason),
            },
            Ok(Err(failure)) => failure,
        };
        let Failure {
            reason,
            message,
            retry_after,
        } = failure;
        info!(session = %inner.id, attempt = number, %reason, %message, "reconnection attempt failed");
        if attempt_failure_is_final(reason) {
            return Err(reason);
        }
        let strategy = inner.strategy.clone();
        let failed = AttemptInfo {
            elapsed: started.elapsed(),
            ..info
        };
        inner
            .callbacks
            .post(move || strategy.on_failure(&failed, reason));
        last_reason = reason;
        last_hint = retry_after;
        target += 1;
        number += 1;
    }
}

/// Whether the server asked the session to go elsewhere (try the next URL first).
fn going_elsewhere(reason: CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::ServerDraining | CloseReason::ServerBusy
    )
}

fn resumed(inner: &SessionInner, accepted: &SessionAccepted) -> Result<(), CloseReason> {
    let mut s = lock(&inner.shared);
    if accepted.session != inner.id {
        warn!(session = %inner.id, other = %accepted.session, "server resumed another session");
        return Err(CloseReason::HandshakeError);
    }
    s.token = accepted.token.clone();
    s.proto
        .connected(Instant::now(), accepted)
        .map_err(|fault| {
            warn!(session = %inner.id, %fault, "cannot resume");
            fault.reason()
        })
}

/// A session with a Tether server. Cheap to clone; every clone is the same session. When the
/// last clone is dropped, the session closes (as [`Session::close`] would, without waiting).
///
/// The session survives lost connections: see the crate docs and [`SessionBuilder`].
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
    /// Shared by every clone: when the last one goes, the session closes.
    _owner: Arc<CloseOnDrop>,
}

/// Closes the session when the application has dropped every handle to it: nobody could use
/// or close it any more, and it would otherwise hold its connection and server state forever.
struct CloseOnDrop(Arc<SessionInner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.request_close();
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("state", &self.state())
            .finish()
    }
}

impl Session {
    /// Starts building a session for a `ws://host:port[/path]` URL.
    pub fn builder(url: &str) -> SessionBuilder {
        SessionBuilder::new(url)
    }

    /// The session id (the same after every resume).
    pub fn session_id(&self) -> SessionId {
        self.inner.id
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        lock(&self.inner.shared).state
    }

    /// The ping period the server granted on the current connection; `None` while not
    /// connected.
    pub fn ping_period(&self) -> Option<Duration> {
        lock(&self.inner.shared).proto.ping_period()
    }

    /// Why the session closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.inner.shared).close_reason
    }

    /// The reconnection timeout in force (the smaller of the requested and the server's).
    pub fn reconnection_timeout(&self) -> Duration {
        lock(&self.inner.shared).reconnect_timeout
    }

    /// State changes from now on, in order, ending after the closed state.
    pub fn state_changes(&self) -> StateChanges {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut s = lock(&self.inner.shared);
        if !s.state.is_closed() {
            s.state_streams.push(tx);
        }
        StateChanges { rx }
    }

    /// Gap reports from now on (messages lost during an outage, see [`GapReport`]).
    pub fn gap_reports(&self) -> GapReports {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut s = lock(&self.inner.shared);
        if !s.state.is_closed() {
            s.gap_streams.push(tx);
        }
        GapReports { rx }
    }

    fn closed_error(s: &Shared) -> Error {
        Error::Closed {
            reason: s.close_reason.unwrap_or(CloseReason::ClosedByClient),
        }
    }

    /// Queues a request, waiting for room while connected; fails with `QueueFull` while
    /// disconnected. `queue` returns what resolves to the answer (`None`: answered already).
    async fn request<A: Future<Output = Result<(), Error>>>(
        &self,
        mut queue: impl FnMut(&mut Shared) -> Result<Option<A>, Error>,
    ) -> Result<(), Error> {
        let answer = loop {
            let space = self.inner.space.notified();
            {
                let mut s = lock(&self.inner.shared);
                if s.state.is_closed() || s.closing {
                    return Err(Self::closed_error(&s));
                }
                match queue(&mut s) {
                    Ok(Some(answer)) => break answer,
                    Ok(None) => return Ok(()),
                    Err(Error::QueueFull(full)) => {
                        if !s.proto.is_connected() {
                            return Err(Error::QueueFull(full));
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            space.await;
        };
        self.inner.writer_wake.notify_one();
        answer.await
    }

    /// Publishes `value` on `topic` and waits until the server has applied it (or refused it:
    /// [`Error::Rejected`]). Sent exactly once, in order, across reconnections. While connected
    /// and the send queue is full, waits for room; while disconnected, a full queue fails with
    /// [`Error::QueueFull`].
    pub async fn publish(&self, topic: &str, value: impl Into<Bytes>) -> Result<(), Error> {
        validate_topic(topic)?;
        let value = value.into();
        let board = &self.inner.completions;
        self.request(|s| {
            let seq = s.proto.publish(topic, value.clone())?;
            Ok(Some(board.completion(seq)))
        })
        .await
    }

    /// Queues a publish at once, in call order, without waiting; the returned [`Completion`]
    /// resolves when the server has applied (or refused) it. Fails with [`Error::QueueFull`]
    /// when the send queue is full, connected or not.
    pub fn send(&self, topic: &str, value: impl Into<Bytes>) -> Result<Completion, Error> {
        validate_topic(topic)?;
        let (seq, writer_idle) = {
            let mut s = lock(&self.inner.shared);
            if s.state.is_closed() || s.closing {
                return Err(Self::closed_error(&s));
            }
            // With frames already waiting, the writer has been woken for them and takes this
            // one too: a wake-up per publish was a visible share of its cost.
            let writer_idle = !s.proto.has_pending_transmit();
            (s.proto.publish(topic, value.into())?, writer_idle)
        };
        if writer_idle {
            self.inner.writer_wake.notify_one();
        }
        Ok(self.inner.completions.completion(seq))
    }

    /// Subscribes to a selector (`a/b`, `a/*`, `a/**`). The current values of matching topics
    /// arrive first (as snapshots), then every update. Survives reconnections without
    /// resubscribing. Dropping the [`Subscription`] stops local delivery only; call
    /// [`Session::unsubscribe`] to remove the subscription from the server.
    pub async fn subscribe(&self, selector: &str) -> Result<Subscription, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribe_sink(selector, Sink::stream(tx)).await?;
        Ok(Subscription::new(
            selector.to_owned(),
            rx,
            self.inner.backlog.clone(),
        ))
    }

    async fn subscribe_sink(&self, selector: &str, sink: Sink) -> Result<(), Error> {
        let parsed = Selector::parse(selector)?;
        let mut sink = Some(sink);
        self.request(|s| {
            let seq = s.proto.subscribe(selector)?;
            let id = s.next_subscription;
            s.next_subscription += 1;
            let sink = sink
                .take()
                .ok_or_else(|| Error::InvalidArgument("subscription queued twice".into()))?;
            s.subscriptions.push(LocalSubscription {
                id,
                selector: parsed.clone(),
                pending: true,
                sink,
            });
            let (done, rx) = oneshot::channel();
            s.pending.insert(seq, Pending::Subscribe { id, done });
            Ok(Some(answer(rx)))
        })
        .await
    }

    /// Subscribes and calls `handler` with every update, in order, on the session's callback
    /// thread (never an async worker, never under a lock), in order with the listeners'
    /// callbacks: no update is handled after the closed state was reported. For bindings whose
    /// host language wants callbacks rather than streams. Delivery stops when the selector is
    /// unsubscribed or the session closes.
    pub async fn subscribe_with(
        &self,
        selector: &str,
        handler: impl Fn(TopicUpdate) + Send + Sync + 'static,
    ) -> Result<(), Error> {
        self.subscribe_sink(selector, Sink::Handler(Arc::new(handler)))
            .await
    }

    /// Waits until every callback queued so far (listeners, strategy calls, subscription
    /// handlers) has run. Do not call it from a callback: it would wait for itself.
    pub async fn callbacks_done(&self) {
        self.inner.callbacks_done().await;
    }

    /// Removes a subscription made with the same selector text; its streams end.
    pub async fn unsubscribe(&self, selector: &str) -> Result<(), Error> {
        let parsed = Selector::parse(selector)?;
        self.request(|s| {
            let seq = s.proto.unsubscribe(selector)?;
            let (done, rx) = oneshot::channel();
            s.pending.insert(
                seq,
                Pending::Unsubscribe {
                    selector: parsed.clone(),
                    done,
                },
            );
            Ok(Some(answer(rx)))
        })
        .await
    }

    /// Closes the session (`CLOSED_BY_CLIENT`); the server frees it at once. Returns when the
    /// session is closed. Calling it again, or on a closed session, does nothing.
    pub async fn close(&self) {
        self.inner.request_close();
        self.inner.wait_closed().await;
    }

    /// Waits until the session is closed, for whatever reason, and returns the reason.
    pub async fn closed(&self) -> CloseReason {
        self.inner.wait_closed().await;
        self.close_reason().unwrap_or(CloseReason::ClosedByClient)
    }

    /// Waits until the session is in `state` (or closed); returns the state reached.
    pub async fn wait_for_state(&self, state: SessionState) -> SessionState {
        let mut rx = self.inner.state_tx.subscribe();
        rx.wait_for(|s| *s == state || s.is_closed())
            .await
            .map(|s| *s)
            .unwrap_or(SessionState::ClosedFailed)
    }
}

/// The answer to a subscribe or unsubscribe ([`completion::ANSWER_LOST`] if dropped unsent).
async fn answer(rx: oneshot::Receiver<Result<(), Error>>) -> Result<(), Error> {
    rx.await.unwrap_or(Err(completion::ANSWER_LOST))
}

/// State changes of a session, as a [`Stream`].
pub struct StateChanges {
    rx: mpsc::UnboundedReceiver<StateChange>,
}

impl StateChanges {
    /// The next change, or `None` after the session closed.
    pub async fn next(&mut self) -> Option<StateChange> {
        self.rx.recv().await
    }

    /// A change if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<StateChange> {
        self.rx.try_recv().ok()
    }
}

impl std::fmt::Debug for StateChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateChanges")
    }
}

impl Stream for StateChanges {
    type Item = StateChange;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Gap reports of a session, as a [`Stream`].
#[derive(Debug)]
pub struct GapReports {
    rx: mpsc::UnboundedReceiver<GapReport>,
}

impl GapReports {
    /// The next report, or `None` after the session closed.
    pub async fn next(&mut self) -> Option<GapReport> {
        self.rx.recv().await
    }
}

impl Stream for GapReports {
    type Item = GapReport;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bound_of_the_send_queue_is_set_alone() {
        let defaults = ClientSessionConfig::default().buffer;
        let b = Session::builder("ws://127.0.0.1:1").max_queued_bytes(1024);
        assert_eq!(
            b.buffer,
            BufferLimits {
                max_frames: defaults.max_frames,
                max_bytes: 1024
            }
        );
        let b = Session::builder("ws://127.0.0.1:1").max_queued_requests(0);
        assert_eq!(
            b.buffer,
            BufferLimits {
                max_frames: 1,
                max_bytes: defaults.max_bytes
            }
        );
        let b = Session::builder("ws://127.0.0.1:1").send_queue(3, 0);
        assert_eq!(
            b.buffer,
            BufferLimits {
                max_frames: 3,
                max_bytes: 1
            }
        );
    }
}
