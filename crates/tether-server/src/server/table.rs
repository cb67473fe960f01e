//! The session table: open, resume (token check, takeover), expiry, close and free.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use tether_protocol::handshake::SessionAccepted;
use tether_protocol::server::{ResumeOutcome, ServerFault, ServerSession};
use tether_protocol::{CloseReason, ResumeToken, ResumeTokens, Selector, SessionId, Update};

use crate::auth::{Permissions, unknown_principal_hash, verify_password};

use super::*;

#[derive(Clone)]
pub(super) struct SlotRef(pub(super) Arc<Slot>);

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
pub(super) struct Slot {
    pub(super) id: SessionId,
    pub(super) principal: Option<String>,
    pub(super) perms: Arc<Permissions>,
    pub(super) inner: Mutex<SlotInner>,
    /// Wakes the writer of the current connection.
    pub(super) notify: Notify,
}

/// Aligned to cache lines of its own, as the topics are: the lock's line holds nothing else
/// of [`Slot`] (its writer's `notify`, the `perms` every publish reads).
#[repr(align(128))]
pub(super) struct SlotInner {
    pub(super) proto: ServerSession,
    pub(super) tokens: ResumeTokens,
    pub(super) subscriptions: Vec<Selector>,
    /// Bumped by every new connection (and by a kick): a task whose generation is stale stops.
    pub(super) generation: u64,
    pub(super) connected: bool,
    pub(super) reconnect_timeout: Duration,
    /// Freed; a resume is refused as unknown.
    pub(super) closed: bool,
    /// A close frame is queued: the writer ends the connection once it is written.
    pub(super) closing: bool,
    /// With a shared store: the owner generation this node holds the session's record at.
    pub(super) store_gen: u64,
    /// While the session is rebuilt from a shared log: live updates, held until the replay
    /// is in.
    pub(super) replaying: Option<Vec<bytes::Bytes>>,
}

impl Shared {
    pub(super) async fn open(
        &self,
        principal: Option<String>,
        credentials: Option<String>,
        auth_token: Option<String>,
        requested_timeout: Duration,
    ) -> Result<Admitted, (CloseReason, String)> {
        self.admitting()?;
        let denied = |message: &str| (CloseReason::AuthenticationFailed, message.to_string());
        let (principal, perms) = match (auth_token, principal) {
            (Some(token), None) => {
                let verifier = self
                    .tokens
                    .as_ref()
                    .ok_or_else(|| denied("signed tokens are not accepted here"))?;
                let (name, perms) = verifier.verify(&token).map_err(|m| denied(&m))?;
                (Some(name), Arc::new(perms))
            }
            (Some(_), Some(_)) => {
                return Err(denied("give a signed token or a principal, not both"));
            }
            (None, Some(name)) => {
                let wrong = || denied("unknown principal or wrong credentials");
                let known = self.principals.get(&name).cloned();
                let password = credentials.ok_or_else(wrong)?;
                // An unknown principal costs the same check as a wrong password, so that the
                // answer's timing does not tell which names exist.
                let hash = known.as_ref().map(|(hash, _)| hash.clone());
                // argon2 is slow on purpose: off the async workers (making the random hash
                // too, the first time), one check per core.
                let ok = self
                    .password_checks
                    .run(move || {
                        let hash: &str = match &hash {
                            Some(hash) => hash,
                            None => unknown_principal_hash(),
                        };
                        verify_password(hash, &password)
                    })
                    .await;
                let Some((_, perms)) = known.filter(|_| ok) else {
                    return Err(wrong());
                };
                (Some(name), perms)
            }
            (None, None) => (
                None,
                self.anonymous
                    .clone()
                    .ok_or_else(|| denied("anonymous sessions are not accepted"))?,
            ),
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
        let mut proto = ServerSession::new(self.config.buffer_limits(), self.config.ping_period())
            .with_gathering(self.config.gather_streams);
        proto.opened(Instant::now());
        let id = SessionId::from_bytes(random_bytes());
        let token = ResumeToken::from_bytes(random_bytes());
        let token_for_store = token.clone();
        let accepted = SessionAccepted {
            session: id,
            token: token.clone(),
            reconnect_timeout,
            ping_period: self.config.ping_period(),
            received: 0,
            max_frame: self.config.limits.max_frame_bytes,
            batch: false,
        };
        let slot = Arc::new(Slot {
            id,
            principal: principal.clone(),
            perms,
            inner: Mutex::new(SlotInner {
                proto,
                tokens: ResumeTokens::new(token),
                subscriptions: Vec::new(),
                generation: 1,
                connected: true,
                reconnect_timeout,
                closed: false,
                closing: false,
                store_gen: u64::from(self.cluster.is_some()),
                replaying: None,
            }),
            notify: Notify::new(),
        });
        if let Some(cluster) = &self.cluster
            && let Err(refusal) = self
                .create_record(cluster, &slot, &token_for_store, reconnect_timeout)
                .await
        {
            self.release_principal(&slot);
            return Err(refusal);
        }
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

    /// A resume: in a cluster the store decides who owns the session; alone, this node's
    /// table does.
    pub(super) async fn resume(
        self: &Arc<Self>,
        id: SessionId,
        token: &ResumeToken,
        received: u64,
        positions: &[tether_protocol::Position],
        confirmed: u64,
    ) -> Result<Admitted, (CloseReason, String)> {
        self.admitting()?;
        if let Some(cluster) = &self.cluster {
            return self
                .resume_clustered(cluster, id, token, received, positions, confirmed)
                .await;
        }
        let unknown = || {
            (
                CloseReason::UnknownSession,
                format!("no session {id} to resume"),
            )
        };
        let Some(slot) = lock(&self.sessions).get(&id).cloned() else {
            return Err(self.tombstone_or(id, token, unknown()));
        };
        let rotated = ResumeToken::from_bytes(random_bytes());
        self.resume_local(&slot, token, false, received, rotated, None)
    }

    /// A session the server closed on purpose answers a resume with why, for its retention;
    /// any other unknown id gets `otherwise`.
    pub(super) fn tombstone_or(
        &self,
        id: SessionId,
        token: &ResumeToken,
        otherwise: (CloseReason, String),
    ) -> (CloseReason, String) {
        let tombstone = lock(&self.tombstones).get(&id).cloned();
        if let Some((known, until)) = tombstone
            && until > tokio::time::Instant::now()
            && bool::from(known.as_bytes().ct_eq(token.as_bytes()))
        {
            return (
                CloseReason::ClosedByServer,
                format!("session {id} was closed by the server"),
            );
        }
        otherwise
    }

    /// Resumes a session this node holds, replaying from its buffers. The presented `token` is
    /// checked unless the store already did (`checked`); `store` is the generation just
    /// claimed and the record's last applied request.
    pub(super) fn resume_local(
        &self,
        slot: &Arc<Slot>,
        token: &ResumeToken,
        checked: bool,
        received: u64,
        rotated: ResumeToken,
        store: Option<(u64, u64)>,
    ) -> Result<Admitted, (CloseReason, String)> {
        let id = slot.id;
        let unknown = || {
            (
                CloseReason::UnknownSession,
                format!("no session {id} to resume"),
            )
        };
        let topics = lock(&self.topics);
        let mut inner = lock(&slot.inner);
        let token_ok = checked || inner.tokens.accepts(token);
        if inner.closed || !token_ok {
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
        if let Some((store_gen, applied)) = store {
            inner.store_gen = store_gen;
            // Requests this node applied before a crash of its connection's reader, or that
            // the store recorded last: either way, not to be applied again.
            inner.proto.sync_applied(applied);
        }
        let outcome = match inner.proto.resume(now, received) {
            Ok(o) => o,
            Err(message) => {
                warn!(session = %id, %message, "resume refused: inconsistent position");
                return Err((CloseReason::HandshakeError, message));
            }
        };
        inner.generation += 1;
        inner.connected = true;
        // A connection sent away (a drain) is over; this one starts afresh.
        inner.closing = false;
        inner.tokens.rotate(token.clone(), rotated);
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
                        topic: value.topic,
                        value: value.value,
                        position: value.position,
                        snapshot: true,
                    };
                    // Just resumed: the connection has nothing unsent that could be dropped.
                    let _ = inner.proto.push_update(&update);
                }
            }
        }
        let accepted = SessionAccepted {
            session: id,
            token: inner.tokens.current().clone(),
            reconnect_timeout: inner.reconnect_timeout,
            ping_period: self.config.ping_period(),
            received: inner.proto.applied(),
            max_frame: self.config.limits.max_frame_bytes,
            batch: false,
        };
        debug!(session = %id, "session resumed");
        Ok(Admitted {
            slot: slot.clone(),
            generation: inner.generation,
            headers: accepted.to_headers(),
        })
    }

    pub(super) fn fault(&self, slot: &Arc<Slot>, fault: ServerFault) -> Handled {
        match fault {
            ServerFault::Protocol(message) => {
                self.close_slot(slot, CloseReason::TransportError, &message);
                Handled::Closed
            }
            ServerFault::Idle | ServerFault::SlowConsumer => Handled::Superseded,
        }
    }

    /// Queues a close frame and frees the session; the writer sends the frame and hangs up.
    pub(super) fn close_slot(&self, slot: &Arc<Slot>, reason: CloseReason, message: &str) {
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
                tombstones.insert(slot.id, (inner.tokens.current().clone(), expiry));
            }
        }
        info!(session = %slot.id, %reason, message, "session closed by the server");
        slot.notify.notify_one();
        let release = if reason == CloseReason::ClosedByServer {
            Release::Tombstone
        } else {
            Release::Delete
        };
        self.free(slot, message, release);
    }

    /// The connection of `generation` ended: keep the session for its reconnection timeout.
    pub(super) fn connection_lost(self: &Arc<Self>, slot: &Arc<Slot>, generation: u64) {
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
            self.free(slot, "disconnected without reconnection", Release::Delete);
            return;
        }
        self.detach_record(slot, timeout);
        debug!(session = %slot.id, timeout_ms = timeout.as_millis() as u64, "session disconnected; kept for resume");
        self.expire_after(slot, generation, timeout);
    }

    /// Frees the session after `timeout` unless a resume (a new generation) came first.
    pub(super) fn expire_after(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        generation: u64,
        timeout: Duration,
    ) {
        let shared = self.clone();
        let slot = slot.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let expired = {
                let inner = lock(&slot.inner);
                inner.generation == generation && !inner.connected && !inner.closed
            };
            if expired {
                shared.free(&slot, "reconnection timeout elapsed", Release::Delete);
            }
        });
    }

    /// Forgets a session and its subscriptions; `release` says what becomes of its record in
    /// a shared store.
    pub(super) fn free(&self, slot: &Arc<Slot>, why: &str, release: Release) {
        let removed = {
            let mut sessions = lock(&self.sessions);
            match sessions.get(&slot.id) {
                Some(kept) if Arc::ptr_eq(kept, slot) => sessions.remove(&slot.id).is_some(),
                _ => false,
            }
        };
        if !removed {
            return;
        }
        self.release_record(slot, release);
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
        self.release_principal(slot);
        slot.notify.notify_one();
        self.freed.notify_waiters();
        info!(session = %slot.id, why, "session freed");
    }

    /// Whether new sessions and resumes are taken: not while shutting down (closed), nor while
    /// draining (come back later or elsewhere).
    fn admitting(&self) -> Result<(), (CloseReason, String)> {
        if self.draining.load(Ordering::SeqCst) {
            return Err((
                CloseReason::ServerDraining,
                "server draining: reconnect after the hint, here or elsewhere".into(),
            ));
        }
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err((CloseReason::ClosedByServer, "server shutting down".into()));
        }
        Ok(())
    }

    /// Tells a connected session to reconnect after the retry-after hint (to this server once
    /// it is back, or another): after everything queued for it, an ack that completes every
    /// request it applied, then `GoAway`; nothing more is read from the connection.
    pub(super) fn send_away(&self, slot: &Arc<Slot>, message: &str) -> bool {
        let mut inner = lock(&slot.inner);
        if !inner.connected || inner.closed || inner.closing {
            return false;
        }
        inner.proto.go_away(
            CloseReason::ServerDraining,
            self.config.retry_after(),
            message,
        );
        inner.closing = true;
        self.metrics.sent_away.inc();
        slot.notify.notify_one();
        true
    }

    fn release_principal(&self, slot: &Slot) {
        if let Some(name) = &slot.principal {
            let mut counts = lock(&self.per_principal);
            if let Some(c) = counts.get_mut(name) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    counts.remove(name);
                }
            }
        }
    }
}
