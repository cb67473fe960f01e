//! Going away without losing anything: a drain sends every session elsewhere (or to the
//! restarted server) after completing what it applied; with the memory store and a
//! `state_dir`, what the sessions need to resume is saved for the next start.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tether_protocol::server::ServerSession;
use tether_protocol::{Position, ResumeToken, ResumeTokens, Selector, SessionId};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::state::{self, SavedSession, SavedState, SavedTopic, StateError};

use super::*;

/// What a drain did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport {
    /// Sessions told to reconnect (`server_draining`, with the retry-after hint).
    pub sent_away: usize,
    /// Connections still open when the grace period ended (closed then).
    pub still_connected: usize,
    /// Sessions written to the state directory, if one is configured.
    pub saved: Option<usize>,
    /// How long it took.
    pub elapsed: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Server {
    /// Drains the server, then stops it: new opens and resumes are refused with
    /// `server_draining` and a retry-after hint (`GET /ready` answers 503); every connected
    /// session gets an ack completing every request the server applied, then a `GoAway`
    /// telling it to reconnect after the hint (spread by its strategy), and nothing more is
    /// read from it. Returns once every connection is gone or `grace` ended. With a shared
    /// store the sessions resume on other nodes; with the memory store and a `state_dir`
    /// they are saved for the next start; otherwise they end with this process.
    pub async fn drain(mut self, grace: Duration) -> Result<DrainReport, StateError> {
        let started = tokio::time::Instant::now();
        let shared = self.shared.clone();
        shared.draining.store(true, Ordering::SeqCst);
        shared.metrics.set_ready(false);
        shared.metrics.drains.inc();
        let slots: Vec<Arc<Slot>> = lock(&shared.sessions).values().cloned().collect();
        let sent_away = slots
            .iter()
            .filter(|slot| shared.send_away(slot, "server draining"))
            .count();
        info!(
            sent_away,
            grace_ms = grace.as_millis() as u64,
            "draining: sessions sent away"
        );
        // Refused connections come and go quickly; sessions leave once their go-away is out.
        let deadline = started + grace;
        let connected = || {
            lock(&shared.sessions)
                .values()
                .filter(|s| lock(&s.inner).connected)
                .count()
        };
        while connected() > 0 {
            let done = shared.connections_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if connected() == 0 {
                break;
            }
            // Sessions leave one by one; look again at least every 50 ms.
            let step = (tokio::time::Instant::now() + Duration::from_millis(50)).min(deadline);
            let _ = tokio::time::timeout_at(step, done).await;
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        let still_connected = connected();
        if still_connected > 0 {
            warn!(
                still_connected,
                "connections still open at the end of the drain"
            );
        }
        self.stop_accepting().await;
        let saved = match &shared.config.state_dir {
            Some(dir) if shared.cluster.is_none() => {
                let state = shared.saved_state();
                let n = state.sessions.len();
                let file = state::save(dir, &state)?;
                info!(sessions = n, file = %file.display(), "sessions and topics saved for the next start");
                Some(n)
            }
            _ => None,
        };
        let elapsed = started.elapsed();
        info!(
            sent_away,
            still_connected,
            elapsed_ms = elapsed.as_millis() as u64,
            "drained"
        );
        Ok(DrainReport {
            sent_away,
            still_connected,
            saved,
            elapsed,
        })
    }
}

impl Shared {
    /// Everything a restarted server needs: topics and every session still kept.
    fn saved_state(&self) -> SavedState {
        let topics = lock(&self.topics)
            .store
            .all()
            .into_iter()
            .map(|v| SavedTopic {
                topic: v.topic.to_string(),
                value: v.value.to_vec(),
                partition: v.position.partition,
                offset: v.position.offset,
            })
            .collect();
        let sessions = lock(&self.sessions)
            .values()
            .filter_map(|slot| {
                let inner = lock(&slot.inner);
                (!inner.closed).then(|| SavedSession {
                    id: *slot.id.as_bytes(),
                    principal: slot.principal.clone(),
                    token: *inner.tokens.current().as_bytes(),
                    previous_token: inner.tokens.previous().map(|t| *t.as_bytes()),
                    subscriptions: inner.subscriptions.iter().map(|s| s.to_string()).collect(),
                    reconnect_timeout_ms: u64::try_from(inner.reconnect_timeout.as_millis())
                        .unwrap_or(u64::MAX),
                    grant: slot.perms.token_grant().cloned(),
                    proto: inner.proto.save(),
                })
            })
            .collect();
        SavedState {
            saved_at_ms: now_ms(),
            topics,
            sessions,
        }
    }

    /// Restores what a drained server saved (sessions disconnected, each kept for what is
    /// left of its retention). Returns how many sessions came back.
    pub(super) fn restore(self: &Arc<Self>, saved: SavedState) -> usize {
        {
            let mut topics = lock(&self.topics);
            for t in saved.topics {
                topics.store.put(
                    &t.topic,
                    bytes::Bytes::from(t.value),
                    Position {
                        partition: t.partition,
                        offset: t.offset,
                    },
                );
            }
        }
        let away = Duration::from_millis(now_ms().saturating_sub(saved.saved_at_ms));
        let mut restored = 0;
        for s in saved.sessions {
            let retention = Duration::from_millis(s.reconnect_timeout_ms);
            let left = retention.saturating_sub(away);
            if left.is_zero() {
                continue;
            }
            let perms = match (&s.grant, &s.principal) {
                (Some((subscribe, publish)), _) => Some(Arc::new(
                    crate::auth::Permissions::granted_by_token(subscribe, publish),
                )),
                (None, Some(name)) => self.principals.get(name).map(|(_, p)| p.clone()),
                (None, None) => self.anonymous.clone(),
            };
            let Some(perms) = perms else {
                warn!(principal = ?s.principal, "a saved session's principal is no longer accepted; dropped");
                continue;
            };
            let subscriptions: Vec<Selector> = s
                .subscriptions
                .iter()
                .filter_map(|t| Selector::parse(t).ok())
                .collect();
            let slot = Arc::new(Slot {
                id: SessionId::from_bytes(s.id),
                principal: s.principal.clone(),
                perms,
                inner: std::sync::Mutex::new(SlotInner {
                    proto: ServerSession::restore(
                        s.proto,
                        self.config.buffer_limits(),
                        self.config.ping_period(),
                    )
                    .with_gathering(self.config.gather_streams),
                    tokens: ResumeTokens::from_parts(
                        ResumeToken::from_bytes(s.token),
                        s.previous_token.map(ResumeToken::from_bytes),
                    ),
                    subscriptions: subscriptions.clone(),
                    generation: 1,
                    connected: false,
                    reconnect_timeout: retention,
                    closed: false,
                    closing: false,
                    store_gen: 0,
                    replaying: None,
                }),
                notify: Notify::new(),
            });
            {
                let mut topics = lock(&self.topics);
                for sel in &subscriptions {
                    topics.index.add(sel, SlotRef(slot.clone()));
                }
            }
            if let Some(name) = &s.principal {
                *lock(&self.per_principal).entry(name.clone()).or_default() += 1;
            }
            lock(&self.sessions).insert(slot.id, slot.clone());
            self.metrics.session_state(None, Some("disconnected"));
            self.expire_after(&slot, 1, left);
            restored += 1;
        }
        restored
    }
}
