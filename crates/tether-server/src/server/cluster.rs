//! A node of a cluster: sessions and topics in a shared store (see `crate::store`).
//!
//! - Every request that changes a session is committed to the store, fenced by the session's
//!   owner generation, before the ack that completes it can go out.
//! - Every node tails the partitioned log and fans out to its own subscribers, in log order, so
//!   that a publish costs one write to the engine whatever the number of subscribers. The
//!   node's copy of each topic's current value is kept by the same tailer, so a new
//!   subscription's snapshot is exactly as of the log position it takes effect at.
//! - A resume on a node that does not hold the session claims it (compare-and-set of the owner
//!   generation), then rebuilds what the client lacks from the log, starting at the positions
//!   the client presents, and continues the client→server direction from the record's last
//!   applied request. Where the log cannot cover the client (trimmed, or the engine lost it: a
//!   new epoch), the client gets a gap report and snapshots instead.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use tether_protocol::frame::{self, ClientFrame};
use tether_protocol::handshake::SessionAccepted;
use tether_protocol::server::{ServerRequest, ServerSession};
use tether_protocol::{
    CloseReason, Position, RequestError, RequestErrorKind, ResumeToken, ResumeTokens, Selector,
    SessionId, Update,
};

use crate::store::redis::RedisStore;
use crate::store::{
    Commit, Cursor, Fence, Head, SessionRecord, SessionStore, StoreError, StoredSubscription,
    TopicLog, split_wire_partition, wire_partition,
};
use crate::topics::TopicValue;

use super::dispatch::{publish_refusal, request_error};
use super::*;

/// How long one blocking read of the log waits for news.
const TAIL_BLOCK: Duration = Duration::from_millis(500);
/// Entries read per partition and round.
const TAIL_COUNT: usize = 1024;
/// How often connected sessions' records are kept from expiring.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// How long a resume waits for this node's tailer to reach the client's positions.
const CATCH_UP: Duration = Duration::from_secs(3);

/// A record's time to live while connected: its retention, plus enough keep-alive rounds that
/// a live node never lets it lapse. If the node dies, the record outlives it by about this.
pub(super) fn connected_ttl(retention: Duration) -> Duration {
    retention + KEEP_ALIVE * 3
}

/// The cluster side of a node.
pub(super) struct Cluster {
    pub(super) store: Arc<RedisStore>,
    /// Changes after every batch the tailer applied.
    progress: watch::Sender<u64>,
    /// Set when a write saw an epoch the tailer does not know yet: check the heads at once.
    recheck: AtomicBool,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Where the tailer stands, kept with the topics (under their lock).
#[derive(Default)]
pub(super) struct LogState {
    /// The last entry applied per partition (and the partition's epoch).
    pub(super) heads: Vec<Head>,
}

impl Cluster {
    /// Connects to the store and reads every partition's head and current values.
    pub(super) async fn connect(
        config: &crate::config::StoreConfig,
    ) -> Result<(Cluster, LogState, Vec<TopicValue>), StoreError> {
        let store =
            RedisStore::connect(&config.url, config.partitions, config.max_log_entries).await?;
        let mut heads = Vec::new();
        let mut values = Vec::new();
        for p in 0..config.partitions {
            let (head, stored) = store.values(p).await?;
            for v in stored {
                values.push(TopicValue {
                    topic: Arc::from(v.topic.as_str()),
                    value: v.value,
                    position: Position {
                        partition: wire_partition(head.epoch, p),
                        offset: v.offset,
                    },
                });
            }
            heads.push(head);
        }
        info!(
            store = store.url(),
            partitions = config.partitions,
            "joined the cluster"
        );
        let (progress, _) = watch::channel(0);
        Ok((
            Cluster {
                store: Arc::new(store),
                progress,
                recheck: AtomicBool::new(false),
                tasks: Mutex::new(Vec::new()),
            },
            LogState { heads },
            values,
        ))
    }

    /// Starts the tailer and the keep-alive rounds; they end with the server.
    pub(super) fn start(&self, shared: &Arc<Shared>) {
        let weak = Arc::downgrade(shared);
        let mut tasks = lock(&self.tasks);
        tasks.push(tokio::spawn(tail_loop(weak.clone(), self.store.clone())));
        tasks.push(tokio::spawn(keep_alive_loop(weak)));
    }

    pub(super) fn stop(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }

    fn saw_epoch(&self, heads: &[Head], partition: u32, epoch: u32) {
        if heads
            .get(partition as usize)
            .is_none_or(|h| h.epoch != epoch)
        {
            self.recheck.store(true, Ordering::SeqCst);
        }
    }
}

fn unavailable(e: &StoreError) -> (CloseReason, String) {
    // A node that cannot reach its store sends the client elsewhere (or to try again later):
    // a connection error lets the reconnection strategy carry on.
    (CloseReason::ConnectionError, e.to_string())
}

async fn tail_loop(shared: Weak<Shared>, store: Arc<RedisStore>) {
    let mut conn = None;
    loop {
        let Some(sh) = shared.upgrade() else {
            return;
        };
        let Some(cluster) = sh.cluster.as_ref() else {
            return;
        };
        if conn.is_none() {
            match store.tail_connection(TAIL_BLOCK).await {
                Ok(c) => {
                    conn = Some(c);
                    // Whatever happened while disconnected: compare epochs first.
                    cluster.recheck.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the shared log; retrying");
                    drop(sh);
                    tokio::time::sleep(TAIL_BLOCK).await;
                    continue;
                }
            }
        }
        if cluster.recheck.swap(false, Ordering::SeqCst)
            && let Err(e) = sh.check_epochs(&store).await
        {
            warn!(error = %e, "cannot read the shared log's heads");
            cluster.recheck.store(true, Ordering::SeqCst);
        }
        let from: Vec<u64> = lock(&sh.topics)
            .log
            .heads
            .iter()
            .map(|h| h.offset)
            .collect();
        let Some(c) = conn.as_mut() else {
            continue;
        };
        match store.tail(c, &from, TAIL_BLOCK, TAIL_COUNT).await {
            Ok(batches) if batches.is_empty() => {
                // Quiet: a good moment to notice an engine that lost data.
                cluster.recheck.store(true, Ordering::SeqCst);
            }
            Ok(batches) => {
                sh.apply_log(batches);
                cluster.progress.send_modify(|n| *n += 1);
            }
            Err(e) => {
                warn!(error = %e, "reading the shared log failed; reconnecting");
                conn = None;
                drop(sh);
                tokio::time::sleep(TAIL_BLOCK).await;
            }
        }
    }
}

async fn keep_alive_loop(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(KEEP_ALIVE).await;
        let Some(sh) = shared.upgrade() else {
            return;
        };
        let Some(cluster) = sh.cluster.as_ref() else {
            return;
        };
        let fences: Vec<Fence> = lock(&sh.sessions)
            .values()
            .filter_map(|slot| {
                let inner = lock(&slot.inner);
                (inner.connected && !inner.closed).then_some(Fence {
                    session: slot.id,
                    generation: inner.store_gen,
                })
            })
            .collect();
        let ttl = connected_ttl(sh.config.max_reconnect_timeout());
        if let Err(e) = cluster.store.keep_alive(&fences, ttl).await {
            warn!(error = %e, "cannot keep session records alive");
        }
    }
}

/// Where the client stands on each partition: (epoch, offset).
fn client_positions(positions: &[Position]) -> HashMap<u32, (u32, u64)> {
    let mut out: HashMap<u32, (u32, u64)> = HashMap::new();
    for p in positions {
        let (epoch, partition) = split_wire_partition(p.partition);
        let entry = out.entry(partition).or_insert((epoch, p.offset));
        // Positions of an older epoch may linger next to the current one; keep the newest
        // (the larger offset of the same epoch, else the last listed).
        if entry.0 != epoch || entry.1 < p.offset {
            *entry = (epoch, p.offset);
        }
    }
    out
}

/// An update frame for a log entry.
fn encoded_update(topic: &str, value: &Bytes, position: Position, snapshot: bool) -> Bytes {
    Bytes::from(frame::encode_update(&Update {
        topic: Arc::from(topic),
        value: value.clone(),
        position,
        snapshot,
    }))
}

impl Shared {
    /// Applies log entries read by the tailer: current values, then fan-out, in log order.
    fn apply_log(&self, batches: Vec<(u32, Vec<crate::store::LogEntry>)>) {
        let mut topics = lock(&self.topics);
        for (p, entries) in batches {
            for entry in entries {
                let Some(head) = topics.log.heads.get(p as usize).copied() else {
                    continue;
                };
                if entry.offset <= head.offset {
                    continue;
                }
                let epoch = if head.epoch == 0 {
                    entry.epoch
                } else {
                    head.epoch
                };
                if entry.epoch != epoch || entry.offset != head.offset + 1 {
                    // Another epoch (the engine lost the log) or entries trimmed before this
                    // node read them: its sessions may lack updates.
                    warn!(
                        partition = p,
                        offset = entry.offset,
                        expected = head.offset + 1,
                        "the shared log moved on without this node; reporting a gap"
                    );
                    self.log_lost(&mut topics, p, head.epoch);
                }
                let position = Position {
                    partition: wire_partition(entry.epoch, p),
                    offset: entry.offset,
                };
                topics.log.heads[p as usize] = Head {
                    epoch: entry.epoch,
                    offset: entry.offset,
                };
                let (store, index, arena) = topics.parts();
                let stored = store.put(&entry.topic, entry.value, position);
                self.deliver(index, arena, stored, None);
            }
        }
    }

    /// Compares every partition's epoch and head with the engine's: a partition whose log the
    /// engine lost (its epoch changed or vanished, or its head went back) is reported lost.
    async fn check_epochs(&self, store: &RedisStore) -> Result<(), StoreError> {
        let engine = store.heads().await?;
        let mut regressed = Vec::new();
        {
            let mut topics = lock(&self.topics);
            for (p, now) in engine.0.iter().enumerate() {
                let Some(known) = topics.log.heads.get(p).copied() else {
                    continue;
                };
                if known.epoch == 0 {
                    continue;
                }
                if now.epoch != known.epoch {
                    warn!(
                        partition = p,
                        "the shared log lost this partition (new epoch); reporting a gap"
                    );
                    self.log_lost(&mut topics, p as u32, known.epoch);
                    topics.log.heads[p] = Head {
                        epoch: now.epoch,
                        offset: 0,
                    };
                } else if now.offset < known.offset {
                    regressed.push((p as u32, known.epoch));
                }
            }
        }
        for (p, epoch) in regressed {
            // Same epoch but a shorter log (a replica promoted without the last entries): new
            // entries would reuse offsets that clients have seen. A new epoch separates them.
            let renewed = store.renew_epoch(p, epoch).await?;
            warn!(
                partition = p,
                "the shared log went back; starting a new epoch"
            );
            let mut topics = lock(&self.topics);
            self.log_lost(&mut topics, p, epoch);
            topics.log.heads[p as usize] = renewed;
        }
        Ok(())
    }

    /// The engine lost (part of) partition `p` of `epoch`: every local session subscribed to
    /// one of its topics resumes with a gap report for them, and the lost values go.
    fn log_lost(&self, topics: &mut Topics, p: u32, epoch: u32) {
        let wire = wire_partition(epoch, p);
        let lost: Vec<Arc<str>> = topics.store.remove_partition(wire);
        let mut affected: HashMap<SessionId, (Arc<Slot>, Vec<Arc<str>>)> = HashMap::new();
        for topic in &lost {
            for SlotRef(slot) in topics.index.matching(topic) {
                affected
                    .entry(slot.id)
                    .or_insert_with(|| (slot.clone(), Vec::new()))
                    .1
                    .push(topic.clone());
            }
        }
        // Sessions subscribed with wildcards may have missed topics this node never saw.
        for (slot, topics_lost) in affected.into_values() {
            let mut inner = lock(&slot.inner);
            for t in topics_lost {
                inner.proto.mark_lost(t);
            }
            self.drop_connection(&slot, &mut inner);
        }
    }

    /// The request `frame` of a session in a cluster: decoded, checked, committed to the store,
    /// then answered.
    pub(super) async fn handle_frame_clustered(
        self: &Arc<Self>,
        cluster: &Cluster,
        slot: &Arc<Slot>,
        generation: u64,
        frame: ClientFrame,
    ) -> Handled {
        let now = Instant::now();
        let (request, fence) = {
            let mut inner = lock(&slot.inner);
            if inner.generation != generation {
                return Handled::Superseded;
            }
            if inner.closing && frame.is_sequenced() {
                // Sent away: left unread, unapplied (see the memory dispatch).
                return Handled::Closed;
            }
            let fence = Fence {
                session: slot.id,
                generation: inner.store_gen,
            };
            let before = inner.proto.poll_timeout();
            match inner.proto.handle_decoded(now, frame) {
                Ok(Some(r)) => (r, fence),
                Ok(None) => {
                    if tether_protocol::deadline_moved_earlier(before, inner.proto.poll_timeout()) {
                        slot.notify.notify_one();
                    }
                    return Handled::Continue;
                }
                Err(fault) => {
                    drop(inner);
                    return self.fault(slot, fault);
                }
            }
        };
        let (seq, outcome) = match request {
            ServerRequest::Close => {
                // Every request before the close is committed; the final ack is queued.
                if let Err(e) = cluster.store.close(fence, None).await {
                    debug!(session = %slot.id, error = %e, "session record left to expire");
                }
                self.free(slot, "closed by client", Release::Keep);
                return Handled::Closed;
            }
            ServerRequest::Publish { seq, topic, value } => (
                seq,
                self.publish_clustered(cluster, slot, fence, seq, &topic, value)
                    .await,
            ),
            ServerRequest::Subscribe { seq, selector } => (
                seq,
                self.subscribe_clustered(cluster, slot, generation, fence, seq, &selector)
                    .await,
            ),
            ServerRequest::Unsubscribe { seq, selector } => (
                seq,
                self.unsubscribe_clustered(cluster, slot, generation, fence, seq, &selector)
                    .await,
            ),
        };
        match outcome {
            Ok(rejection) => {
                let mut inner = lock(&slot.inner);
                if inner.generation != generation {
                    return Handled::Superseded;
                }
                let before = inner.proto.poll_timeout();
                if let Some(error) = rejection
                    && inner.proto.reject(seq, error).is_err()
                {
                    self.drop_connection(slot, &mut inner);
                    return Handled::Superseded;
                }
                inner.proto.request_applied(now, seq);
                if inner.proto.wakes_writer_after_requests(before) {
                    slot.notify.notify_one();
                }
                Handled::Continue
            }
            Err(StoreError::Fenced) => {
                // A newer owner: a resume on this node (its connection superseded this one) or
                // on another (then this node lets the session go).
                let elsewhere = {
                    let inner = lock(&slot.inner);
                    inner.generation == generation && inner.store_gen == fence.generation
                };
                if elsewhere {
                    info!(session = %slot.id, "the session was resumed on another node; letting go");
                    self.free(slot, "resumed elsewhere", Release::Keep);
                    return Handled::Closed;
                }
                Handled::Superseded
            }
            Err(e) => {
                // Unknown fate: no ack covers the request; the client resumes (here or on
                // another node) and sends it again, and the store recognises a replay.
                warn!(session = %slot.id, error = %e, "cannot commit a request; dropping the connection");
                let mut inner = lock(&slot.inner);
                if inner.generation == generation {
                    self.drop_connection(slot, &mut inner);
                }
                Handled::Superseded
            }
        }
    }

    /// Commits a refusal (so that a resume elsewhere can answer it again).
    async fn reject_clustered(
        &self,
        cluster: &Cluster,
        fence: Fence,
        seq: u64,
        error: RequestError,
    ) -> Result<Option<RequestError>, StoreError> {
        cluster
            .store
            .commit(fence, seq, Commit::Reject(&error))
            .await?;
        Ok(Some(error))
    }

    async fn publish_clustered(
        &self,
        cluster: &Cluster,
        slot: &Slot,
        fence: Fence,
        seq: u64,
        topic: &str,
        value: Bytes,
    ) -> Result<Option<RequestError>, StoreError> {
        if let Some(error) = publish_refusal(slot, topic) {
            return self.reject_clustered(cluster, fence, seq, error).await;
        }
        crate::failpoint::hit("before_append");
        let head = cluster
            .store
            .append(Some((fence, seq)), topic, &value)
            .await?;
        crate::failpoint::hit("after_append");
        if let Some(head) = head {
            let p = cluster.store.partition_of(topic);
            cluster.saw_epoch(&lock(&self.topics).log.heads, p, head.epoch);
        }
        Ok(None)
    }

    async fn subscribe_clustered(
        &self,
        cluster: &Cluster,
        slot: &Arc<Slot>,
        generation: u64,
        fence: Fence,
        seq: u64,
        text: &str,
    ) -> Result<Option<RequestError>, StoreError> {
        let selector = match Selector::parse(text) {
            Ok(s) => s,
            Err(e) => {
                let error = request_error(RequestErrorKind::InvalidSelector, e.to_string());
                return self.reject_clustered(cluster, fence, seq, error).await;
            }
        };
        if !slot.perms.may_subscribe(&selector) {
            let error = request_error(
                RequestErrorKind::AccessDenied,
                format!("may not subscribe to {selector}"),
            );
            return self.reject_clustered(cluster, fence, seq, error).await;
        }
        // Takes effect here, between two log entries: snapshots from this node's values (as of
        // its tailer's heads), live updates after them.
        let from = {
            let mut topics = lock(&self.topics);
            let mut inner = lock(&slot.inner);
            if inner.generation != generation {
                return Err(StoreError::Fenced);
            }
            if !inner.subscriptions.contains(&selector) {
                topics.index.add(&selector, SlotRef(slot.clone()));
                for value in topics.store.current(&selector) {
                    if inner.subscriptions.iter().any(|s| s.matches(&value.topic)) {
                        continue;
                    }
                    let bytes = encoded_update(&value.topic, &value.value, value.position, true);
                    if inner.proto.push_encoded_update(bytes).is_err() {
                        inner.subscriptions.push(selector.clone());
                        self.drop_connection(slot, &mut inner);
                        return Err(StoreError::Unavailable {
                            url: String::new(),
                            message: "slow consumer".into(),
                        });
                    }
                }
                inner.subscriptions.push(selector.clone());
                slot.notify.notify_one();
            }
            Cursor(topics.log.heads.clone())
        };
        let stored = StoredSubscription {
            selector: text.to_owned(),
            request: seq,
            from,
        };
        cluster
            .store
            .commit(fence, seq, Commit::Subscribe(&stored))
            .await?;
        Ok(None)
    }

    async fn unsubscribe_clustered(
        &self,
        cluster: &Cluster,
        slot: &Arc<Slot>,
        generation: u64,
        fence: Fence,
        seq: u64,
        text: &str,
    ) -> Result<Option<RequestError>, StoreError> {
        let removed = {
            let mut topics = lock(&self.topics);
            let mut inner = lock(&slot.inner);
            if inner.generation != generation {
                return Err(StoreError::Fenced);
            }
            let position = Selector::parse(text)
                .ok()
                .and_then(|s| inner.subscriptions.iter().position(|x| *x == s));
            position.map(|i| {
                let selector = inner.subscriptions.remove(i);
                topics.index.remove(&selector, &SlotRef(slot.clone()));
            })
        };
        if removed.is_none() {
            let error = request_error(
                RequestErrorKind::NotSubscribed,
                format!("not subscribed to {text}"),
            );
            return self.reject_clustered(cluster, fence, seq, error).await;
        }
        cluster
            .store
            .commit(fence, seq, Commit::Unsubscribe(text))
            .await?;
        Ok(None)
    }

    /// A new session's record.
    pub(super) async fn create_record(
        &self,
        cluster: &Cluster,
        slot: &Slot,
        token: &ResumeToken,
        reconnect_timeout: Duration,
    ) -> Result<(), (CloseReason, String)> {
        let record = SessionRecord {
            principal: slot.principal.clone(),
            tokens: ResumeTokens::new(token.clone()),
            reconnect_timeout,
            generation: 1,
            applied: 0,
            closed_by_server: false,
            subscriptions: Vec::new(),
            rejections: Vec::new(),
            grant: slot.perms.token_grant().cloned(),
        };
        cluster
            .store
            .create(slot.id, &record, connected_ttl(reconnect_timeout))
            .await
            .map_err(|e| unavailable(&e))
    }

    /// A resume in a cluster: the record decides who owns the session.
    pub(super) async fn resume_clustered(
        self: &Arc<Self>,
        cluster: &Cluster,
        id: SessionId,
        token: &ResumeToken,
        received: u64,
        positions: &[Position],
        confirmed: u64,
    ) -> Result<Admitted, (CloseReason, String)> {
        let unknown = || {
            (
                CloseReason::UnknownSession,
                format!("no session {id} to resume"),
            )
        };
        let record = cluster.store.load(id).await.map_err(|e| unavailable(&e))?;
        let local = lock(&self.sessions).get(&id).cloned();
        let Some(record) = record else {
            // Not in the store. If this node still holds the session, the engine lost its
            // record (the engine restarted empty, say): register it again and carry on here.
            if let Some(slot) = local {
                return self.register_again(cluster, &slot, token, received).await;
            }
            return Err(self.tombstone_or(id, token, unknown()));
        };
        if !record.tokens.accepts(token) {
            warn!(session = %id, "resume refused: unknown session or wrong token");
            return Err(unknown());
        }
        if record.closed_by_server {
            return Err((
                CloseReason::ClosedByServer,
                format!("session {id} was closed by the server"),
            ));
        }
        let new_token = ResumeToken::from_bytes(random_bytes());
        let generation = match cluster
            .store
            .claim(
                id,
                record.generation,
                token,
                &new_token,
                confirmed,
                connected_ttl(record.reconnect_timeout),
            )
            .await
        {
            Ok(g) => g,
            Err(StoreError::Fenced | StoreError::Missing) => {
                return Err((
                    CloseReason::ConnectionError,
                    format!("session {id} was resumed concurrently; try again"),
                ));
            }
            Err(e) => return Err(unavailable(&e)),
        };
        if let Some(slot) = local {
            let held = lock(&slot.inner).store_gen;
            if held == record.generation {
                // This node owned it last: its buffers replay exactly.
                match self.resume_local(
                    &slot,
                    token,
                    true,
                    received,
                    new_token.clone(),
                    Some((generation, record.applied)),
                ) {
                    // Let go meanwhile (an older connection learnt it was fenced): the claim
                    // holds, so the session is rebuilt from the store below.
                    Err((CloseReason::UnknownSession, _)) => {}
                    done => return done,
                }
            } else {
                // Another node had it since: what this node holds is stale.
                self.free(&slot, "resumed elsewhere since", Release::Keep);
            }
        }
        self.continue_session(
            cluster,
            id,
            record,
            generation,
            ResumeTokens::from_parts(new_token, Some(token.clone())),
            received,
            positions,
            confirmed,
        )
        .await
    }

    /// The engine lost the record of a session this node holds: write it again (the node has
    /// everything it needs) and resume locally.
    async fn register_again(
        self: &Arc<Self>,
        cluster: &Cluster,
        slot: &Arc<Slot>,
        token: &ResumeToken,
        received: u64,
    ) -> Result<Admitted, (CloseReason, String)> {
        let (record, timeout) = {
            let topics = lock(&self.topics);
            let inner = lock(&slot.inner);
            if inner.closed || !inner.tokens.accepts(token) {
                return Err((
                    CloseReason::UnknownSession,
                    format!("no session {} to resume", slot.id),
                ));
            }
            let from = Cursor(topics.log.heads.clone());
            let record = SessionRecord {
                principal: slot.principal.clone(),
                tokens: inner.tokens.clone(),
                reconnect_timeout: inner.reconnect_timeout,
                generation: inner.store_gen + 1,
                applied: inner.proto.applied(),
                closed_by_server: false,
                subscriptions: inner
                    .subscriptions
                    .iter()
                    .map(|s| StoredSubscription {
                        selector: s.to_string(),
                        request: 0,
                        from: from.clone(),
                    })
                    .collect(),
                rejections: Vec::new(),
                grant: slot.perms.token_grant().cloned(),
            };
            (record, inner.reconnect_timeout)
        };
        warn!(session = %slot.id, "the store lost this session's record; registering it again");
        let new_token = ResumeToken::from_bytes(random_bytes());
        let record = SessionRecord {
            tokens: ResumeTokens::from_parts(new_token.clone(), Some(token.clone())),
            ..record
        };
        cluster
            .store
            .create(slot.id, &record, connected_ttl(timeout))
            .await
            .map_err(|e| unavailable(&e))?;
        // The engine that lost the record lost its log too: whatever this node did not fan
        // out before is gone, and only a gap report says so.
        {
            let inner = &mut lock(&slot.inner);
            for s in inner.subscriptions.clone() {
                inner.proto.mark_lost(Arc::from(s.as_str()));
            }
        }
        self.resume_local(
            slot,
            token,
            true,
            received,
            new_token,
            Some((record.generation, record.applied)),
        )
    }

    /// Takes over a session that another node held: rebuilds what the client lacks from the
    /// log, then continues.
    #[allow(clippy::too_many_arguments)]
    async fn continue_session(
        self: &Arc<Self>,
        cluster: &Cluster,
        id: SessionId,
        record: SessionRecord,
        store_gen: u64,
        tokens: ResumeTokens,
        received: u64,
        positions: &[Position],
        confirmed: u64,
    ) -> Result<Admitted, (CloseReason, String)> {
        let perms = match (&record.grant, &record.principal) {
            (Some((subscribe, publish)), _) => Some(Arc::new(
                crate::auth::Permissions::granted_by_token(subscribe, publish),
            )),
            (None, Some(name)) => self.principals.get(name).map(|(_, p)| p.clone()),
            (None, None) => self.anonymous.clone(),
        }
        .ok_or((
            CloseReason::AuthenticationFailed,
            "the session's principal is no longer accepted".to_string(),
        ))?;
        let subs: Vec<(Selector, StoredSubscription)> = record
            .subscriptions
            .iter()
            .filter_map(|s| {
                Selector::parse(&s.selector)
                    .ok()
                    .map(|sel| (sel, s.clone()))
            })
            .collect();
        let client = client_positions(positions);
        self.catch_up(cluster, &client).await?;
        let slot = Arc::new(Slot {
            id,
            principal: record.principal.clone(),
            perms,
            inner: Mutex::new(SlotInner {
                proto: ServerSession::new(self.config.buffer_limits(), self.config.ping_period())
                    .with_gathering(self.config.gather_streams),
                tokens: tokens.clone(),
                subscriptions: subs.iter().map(|(s, _)| s.clone()).collect(),
                generation: 1,
                connected: false,
                reconnect_timeout: record.reconnect_timeout,
                closed: false,
                closing: false,
                store_gen,
                replaying: Some(Vec::new()),
            }),
            notify: Notify::new(),
        });
        // From here on live updates reach the slot (held aside until the replay is in).
        let (heads, values) = {
            let mut topics = lock(&self.topics);
            for (selector, _) in &subs {
                topics.index.add(selector, SlotRef(slot.clone()));
            }
            let mut seen = HashSet::new();
            let mut values = Vec::new();
            for (selector, _) in &subs {
                for v in topics.store.current(selector) {
                    if slot.perms.may_read(&v.topic) && seen.insert(v.topic.clone()) {
                        values.push(v);
                    }
                }
            }
            (topics.log.heads.clone(), values)
        };
        let rebuilt = self.rebuild(cluster, &slot, &subs, &heads, &client).await;
        let (replay, gaps) = match rebuilt {
            Ok(r) => r,
            Err(e) => {
                let mut topics = lock(&self.topics);
                for (selector, _) in &subs {
                    topics.index.remove(selector, &SlotRef(slot.clone()));
                }
                return Err(unavailable(&e));
            }
        };
        let now = Instant::now();
        let gap_topics: Vec<String> = values
            .iter()
            .filter(|v| gaps.contains(&split_wire_partition(v.position.partition).1))
            .map(|v| v.topic.to_string())
            .collect();
        {
            let _topics = lock(&self.topics);
            let mut inner = lock(&slot.inner);
            let mut proto = ServerSession::continued(
                self.config.buffer_limits(),
                self.config.ping_period(),
                received,
                record.applied,
                (!gap_topics.is_empty()).then(|| gap_topics.clone()),
            );
            // Answers the client may not have seen, then what it lacks, in log order per
            // partition, then snapshots where the log could not cover it, then live updates.
            for (seq, error) in &record.rejections {
                if *seq > confirmed {
                    let _ = proto.reject(*seq, error.clone());
                }
            }
            for (_, bytes) in replay {
                let _ = proto.push_encoded_update(bytes);
            }
            let unconfirmed: Vec<&Selector> = subs
                .iter()
                .filter(|(_, s)| s.request > confirmed)
                .map(|(sel, _)| sel)
                .collect();
            let confirmed_subs: Vec<&Selector> = subs
                .iter()
                .filter(|(_, s)| s.request <= confirmed)
                .map(|(sel, _)| sel)
                .collect();
            for v in &values {
                let in_gap = gaps.contains(&split_wire_partition(v.position.partition).1);
                let unanswered = unconfirmed.iter().any(|s| s.matches(&v.topic))
                    && !confirmed_subs.iter().any(|s| s.matches(&v.topic));
                if in_gap || unanswered {
                    let bytes = encoded_update(&v.topic, &v.value, v.position, true);
                    let _ = proto.push_encoded_update(bytes);
                }
            }
            for bytes in inner.replaying.take().unwrap_or_default() {
                let _ = proto.push_encoded_update(bytes);
            }
            proto.attach(now);
            inner.proto = proto;
            inner.connected = true;
        }
        if let Some(name) = &record.principal {
            *lock(&self.per_principal).entry(name.clone()).or_default() += 1;
        }
        lock(&self.sessions).insert(id, slot.clone());
        self.metrics.resumes.inc();
        self.metrics.session_state(None, Some("connected"));
        if !gap_topics.is_empty() {
            self.metrics.gap_reports.inc();
        }
        info!(session = %id, gaps = gaps.len(), "session continued from another node");
        let accepted = SessionAccepted {
            session: id,
            token: tokens.current().clone(),
            reconnect_timeout: record.reconnect_timeout,
            ping_period: self.config.ping_period(),
            received: record.applied,
            max_frame: self.config.limits.max_frame_bytes,
            batch: false,
        };
        Ok(Admitted {
            slot,
            generation: 1,
            headers: accepted.to_headers(),
        })
    }

    /// Waits until this node's tailer has reached what the client has seen (it may have been
    /// served by a node further ahead).
    async fn catch_up(
        &self,
        cluster: &Cluster,
        client: &HashMap<u32, (u32, u64)>,
    ) -> Result<(), (CloseReason, String)> {
        let mut progress = cluster.progress.subscribe();
        let caught_up = || {
            let topics = lock(&self.topics);
            client.iter().all(|(&p, &(epoch, offset))| {
                topics
                    .log
                    .heads
                    .get(p as usize)
                    .is_none_or(|h| h.epoch != epoch || h.offset >= offset)
            })
        };
        let waited = tokio::time::timeout(CATCH_UP, async {
            while !caught_up() {
                if progress.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if waited.is_err() {
            return Err((
                CloseReason::ConnectionError,
                "this node is behind the shared log; try again".to_string(),
            ));
        }
        Ok(())
    }

    /// What the client lacks, read from the log up to `heads`: the update frames in order, and
    /// the partitions the log cannot cover (they get a gap report and snapshots).
    async fn rebuild(
        &self,
        cluster: &Cluster,
        slot: &Slot,
        subs: &[(Selector, StoredSubscription)],
        heads: &[Head],
        client: &HashMap<u32, (u32, u64)>,
    ) -> Result<(Vec<(Arc<str>, Bytes)>, HashSet<u32>), StoreError> {
        let mut gaps = HashSet::new();
        let mut replay = Vec::new();
        let budget = self.config.buffer_limits().max_frames / 2;
        if subs.is_empty() {
            return Ok((replay, gaps));
        }
        for (p, head) in heads.iter().enumerate() {
            let p = p as u32;
            if head.epoch == 0 {
                continue;
            }
            let here = client
                .get(&p)
                .filter(|(e, _)| *e == head.epoch)
                .map(|(_, o)| *o);
            let elsewhere = client.get(&p).is_some_and(|(e, _)| *e != head.epoch);
            // Subscriptions made in this epoch start at their cursor; one made before it may
            // have missed what the engine lost.
            let covered = subs.iter().all(|(_, s)| {
                let h = s.from.get(p as usize);
                h.epoch == 0 || h.epoch == head.epoch
            });
            let start = match here {
                Some(o) if o <= head.offset => o,
                Some(_) => {
                    gaps.insert(p);
                    continue;
                }
                None if elsewhere || !covered => {
                    gaps.insert(p);
                    continue;
                }
                None => subs
                    .iter()
                    .map(|(_, s)| s.from.get(p as usize).offset)
                    .min()
                    .unwrap_or(0),
            };
            let mut after = start;
            let mut frames = Vec::new();
            while after < head.offset {
                let tail = cluster
                    .store
                    .read(p, after, head.offset, TAIL_COUNT)
                    .await?;
                let dense = tail.epoch == head.epoch
                    && tail
                        .entries
                        .iter()
                        .zip(after + 1..)
                        .all(|(e, want)| e.offset == want);
                if !dense || tail.entries.is_empty() {
                    // Trimmed (or lost) before the client read it.
                    gaps.insert(p);
                    frames.clear();
                    break;
                }
                for e in tail.entries {
                    after = e.offset;
                    let wanted = subs.iter().any(|(sel, s)| {
                        let from = s.from.get(p as usize);
                        sel.matches(&e.topic)
                            && (from.epoch != head.epoch || from.offset < e.offset)
                    }) && slot.perms.may_read(&e.topic);
                    if wanted {
                        let position = Position {
                            partition: wire_partition(head.epoch, p),
                            offset: e.offset,
                        };
                        let bytes = encoded_update(&e.topic, &e.value, position, false);
                        frames.push((Arc::from(e.topic.as_str()), bytes));
                    }
                }
            }
            if replay.len() + frames.len() > budget {
                // More than the session's buffer would hold: snapshots instead.
                gaps.insert(p);
                continue;
            }
            replay.extend(frames);
        }
        Ok((replay, gaps))
    }

    /// A publish by the server itself (no session): one append; the tailer fans it out.
    pub(super) async fn publish_clustered_by_server(
        &self,
        cluster: &Cluster,
        topic: &str,
        value: Bytes,
    ) -> Result<Position, StoreError> {
        let head = cluster
            .store
            .append(None, topic, &value)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a server publish counted as a replay".into()))?;
        let p = cluster.store.partition_of(topic);
        cluster.saw_epoch(&lock(&self.topics).log.heads, p, head.epoch);
        Ok(Position {
            partition: wire_partition(head.epoch, p),
            offset: head.offset,
        })
    }

    /// What a node does with the store when it lets a session go.
    pub(super) fn release_record(&self, slot: &Slot, release: Release) {
        let Some(cluster) = self.cluster.as_ref() else {
            return;
        };
        let fence = Fence {
            session: slot.id,
            generation: lock(&slot.inner).store_gen,
        };
        let tombstone = match release {
            Release::Keep => return,
            Release::Delete => None,
            Release::Tombstone => Some(self.config.max_reconnect_timeout()),
        };
        let store = cluster.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.close(fence, tombstone).await {
                debug!(session = %fence.session, error = %e, "session record left to expire");
            }
        });
    }

    /// The connection ended: the record expires after the session's retention.
    pub(super) fn detach_record(&self, slot: &Slot, retention: Duration) {
        let Some(cluster) = self.cluster.as_ref() else {
            return;
        };
        let fence = Fence {
            session: slot.id,
            generation: lock(&slot.inner).store_gen,
        };
        let store = cluster.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.detach(fence, retention).await {
                debug!(session = %fence.session, error = %e, "cannot start the record's retention");
            }
        });
    }
}

/// What happens to a session's record when this node frees the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Release {
    /// Leave it: another node owns it, or it goes by itself.
    Keep,
    /// Remove it (closed by the client, expired).
    Delete,
    /// Keep a tombstone for the retention (closed by the server).
    Tombstone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_positions_keep_the_newest_epoch_per_partition() {
        let positions = vec![
            Position {
                partition: wire_partition(5, 1),
                offset: 90,
            },
            Position {
                partition: wire_partition(5, 1),
                offset: 100,
            },
            Position {
                partition: wire_partition(7, 2),
                offset: 3,
            },
        ];
        let got = client_positions(&positions);
        assert_eq!(got.get(&1), Some(&(5, 100)));
        assert_eq!(got.get(&2), Some(&(7, 3)));
    }
}
