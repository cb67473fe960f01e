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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{info, warn};

use tether_protocol::topic::validate_topic;
use tether_protocol::{CloseReason, Position, ResumeToken, SessionId};

use crate::auth::Permissions;
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::store::StoreError;
use crate::topics::{MemoryTopicStore, SubscriptionIndex, TopicStore};
use tether_protocol::frame::Arena;

mod accept;
mod cluster;
mod connection;
mod dispatch;
mod drain;
mod fanout;
mod table;

pub use drain::DrainReport;

use accept::{Admitted, accept_loop};
use cluster::{Cluster, LogState, Release};
use connection::Handled;
use connection::run_connection;
use table::{Slot, SlotInner, SlotRef};

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
    /// The shared store could not be reached or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state saved by the last drain could not be loaded.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// A publish made through [`Server::publish`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The topic path is not valid.
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] tether_protocol::TopicError),
    /// The shared store did not take it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

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

/// Bytes per chunk of the fan-out arena: about 17 updates of 100 B. A frame kept for long
/// keeps its chunk alive (a client that stops reading, until the slow-consumer bound or the
/// liveness timeout ends its connection), so this bounds what such a frame costs.
const FANOUT_CHUNK: usize = 2048;

/// Aligned to its own cache lines (two, as adjacent-line prefetching pairs them): its lock and
/// the fan-out arena are written on every publish, and the neighbouring fields of [`Shared`],
/// read by every connection's tasks, made each publish wait for the line (a profile of (b)
/// server → client spent a fifth of the publisher's time releasing the lock).
#[repr(align(128))]
struct Topics {
    store: Box<dyn TopicStore>,
    index: SubscriptionIndex<SlotRef>,
    /// In a cluster: where this node's reading of the shared log stands.
    log: LogState,
    /// Where updates for connected sessions are encoded: chunks shared by many updates instead
    /// of an allocation each (see `fanout::Encodings`).
    arena: Arena,
}

impl Topics {
    /// The store, the index and the arena, borrowed apart: the store lends the value it keeps
    /// to the fan-out, which reads the index and encodes into the arena.
    fn parts(&mut self) -> (&mut dyn TopicStore, &SubscriptionIndex<SlotRef>, &mut Arena) {
        (self.store.as_mut(), &self.index, &mut self.arena)
    }
}

pub(crate) struct Shared {
    config: ServerConfig,
    metrics: Arc<Metrics>,
    /// Connection attempts per address: (tokens left, last refill).
    attempts: Mutex<HashMap<std::net::IpAddr, (f64, Instant)>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    principals: HashMap<String, (String, Arc<Permissions>)>,
    anonymous: Option<Arc<Permissions>>,
    /// Verifies signed-token logins, when configured.
    tokens: Option<crate::auth::TokenVerifier>,
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
    /// With a shared store: the cluster side of this node.
    cluster: Option<Cluster>,
    /// A drain has begun: opens and resumes are refused with `server_draining`.
    draining: AtomicBool,
    /// Opens and resumes in progress (bounded by `limits.max_pending_upgrades`).
    upgrading: AtomicUsize,
    /// Password checks, one per core at a time (a 10,000-login storm once reached 22 GB).
    password_checks: crate::auth::PasswordChecks,
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
        let tokens =
            match &config.tokens {
                Some(t) => Some(crate::auth::TokenVerifier::new(t).map_err(
                    |(field, message)| crate::config::ConfigError::Invalid {
                        field: format!("tokens.{field}"),
                        message,
                    },
                )?),
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
        let mut store = MemoryTopicStore::default();
        let (cluster, log) = if config.store.is_memory() {
            (None, LogState::default())
        } else {
            let (cluster, log, values) = Cluster::connect(&config.store).await?;
            for v in values {
                store.put(&v.topic, v.value, v.position);
            }
            (Some(cluster), log)
        };
        let shared = Arc::new(Shared {
            config,
            metrics,
            attempts: Mutex::new(HashMap::new()),
            tls,
            principals,
            anonymous,
            tokens,
            topics: Mutex::new(Topics {
                store: Box::new(store),
                index: SubscriptionIndex::default(),
                log,
                arena: tether_protocol::frame::Arena::with_chunk_size(FANOUT_CHUNK),
            }),
            sessions: Mutex::new(HashMap::new()),
            per_principal: Mutex::new(HashMap::new()),
            tombstones: Mutex::new(HashMap::new()),
            freed: Notify::new(),
            shutting_down: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            connections_done: Notify::new(),
            cluster,
            draining: AtomicBool::new(false),
            password_checks: crate::auth::PasswordChecks::per_core(),
            upgrading: AtomicUsize::new(0),
        });
        if let Some(dir) = shared.config.state_dir.clone()
            && shared.cluster.is_none()
            && let Some(saved) = crate::state::load(&dir)?
        {
            let n = shared.restore(saved);
            crate::state::remove(&dir)?;
            info!(sessions = n, dir = %dir.display(), "sessions and topics restored from the last drain");
        }
        if let Some(cluster) = &shared.cluster {
            cluster.start(&shared);
        }
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

    /// Publishes a value as the server itself (no permission check). With a shared store,
    /// resolves once the store has it (every node's subscribers get it from the store).
    pub async fn publish(
        &self,
        topic: &str,
        value: impl Into<Bytes>,
    ) -> Result<Position, PublishError> {
        validate_topic(topic)?;
        if let Some(cluster) = &self.shared.cluster {
            return Ok(self
                .shared
                .publish_clustered_by_server(cluster, topic, value.into())
                .await?);
        }
        let mut topics = lock(&self.shared.topics);
        let value = crate::topics::NewValue::Owned(value.into());
        Ok(self.shared.fan_out(&mut topics, topic, value, None))
    }

    /// Whether this node shares its sessions and topics through a store.
    pub fn is_clustered(&self) -> bool {
        self.shared.cluster.is_some()
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

    /// Stops the accept loop, the metrics listener and the cluster's tasks.
    /// Returns once the listeners are closed: the address is free for a new server at once.
    async fn stop_accepting(&mut self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        self.stop.notify_one();
        self.accept.abort();
        // The listener goes when its task ends, not when it is told to.
        let _ = (&mut self.accept).await;
        if let Some((_, task)) = &mut self.metrics_server {
            task.abort();
            let _ = task.await;
        }
        if let Some(cluster) = &self.shared.cluster {
            cluster.stop();
        }
    }

    /// Stops accepting, closes every session (reason closed by server: the sessions end) and
    /// waits up to `grace` for the connections to go. To restart without ending sessions, use
    /// [`Server::drain`].
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop_accepting().await;
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
