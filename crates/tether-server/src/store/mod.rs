//! The storage seam of a cluster: session records and the shared topic log.
//!
//! One node keeps everything in memory (the default: no store at all, see `server`). Several
//! nodes given the same engine form a cluster: each session has a small record in the engine
//! ([`SessionStore`]) and every topic update goes to one of a fixed number of partitioned logs
//! ([`TopicLog`]). A resume on any node rebuilds what the client lacks from the logs, starting
//! at the positions the client presents, and continues the client→server direction from the
//! record's last applied request. Every write that belongs to a session is fenced by the
//! session's owner generation, which each resume bumps: a node that lost its session (frozen,
//! cut off) has its later writes refused.
//!
//! [`redis`] is the implementation (Redis 7).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tether_protocol::{RequestError, ResumeToken, ResumeTokens, SessionId};

pub(crate) mod redis;

/// A boxed future, so that the traits stay object-safe.
pub(crate) type StoreFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What went wrong talking to the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The engine cannot be reached (or did not answer in time); nothing is known of the
    /// request's fate until a resume reads the record again.
    #[error("the store at {url} is unavailable: {message}")]
    Unavailable {
        /// The engine's URL.
        url: String,
        /// What the client library said.
        message: String,
    },
    /// The session was resumed elsewhere since this node took it: the write was refused.
    #[error("the session belongs to a newer connection (fenced)")]
    Fenced,
    /// The session's record is not in the store (expired, closed, or lost by the engine).
    #[error("the session is not in the store")]
    Missing,
    /// The request does not follow the last one applied (one before it failed): requests are
    /// applied strictly in order, so it was not applied.
    #[error("the request does not follow the last one applied")]
    OutOfOrder,
    /// The engine answered something this version cannot read.
    #[error("unexpected answer from the store: {0}")]
    Corrupt(String),
}

/// Identifies the writer of a session's record: the session and the owner generation the
/// writer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fence {
    pub(crate) session: SessionId,
    pub(crate) generation: u64,
}

/// Where a partition's log stands: its epoch (which changes when the engine lost the log) and
/// its last offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Head {
    /// 0 when the partition has no log yet.
    pub(crate) epoch: u32,
    pub(crate) offset: u64,
}

/// One head per partition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Cursor(pub(crate) Vec<Head>);

impl Cursor {
    /// `epoch.offset` per partition, comma-separated.
    pub(crate) fn encode(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|h| format!("{}.{}", h.epoch, h.offset))
            .collect();
        parts.join(",")
    }

    pub(crate) fn decode(text: &str) -> Option<Cursor> {
        if text.is_empty() {
            return Some(Cursor::default());
        }
        text.split(',')
            .map(|part| {
                let (e, o) = part.split_once('.')?;
                Some(Head {
                    epoch: e.parse().ok()?,
                    offset: o.parse().ok()?,
                })
            })
            .collect::<Option<Vec<_>>>()
            .map(Cursor)
    }

    pub(crate) fn get(&self, partition: usize) -> Head {
        self.0.get(partition).copied().unwrap_or_default()
    }
}

/// A session as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionRecord {
    pub(crate) principal: Option<String>,
    pub(crate) tokens: ResumeTokens,
    pub(crate) reconnect_timeout: Duration,
    pub(crate) generation: u64,
    /// Last client request carried out.
    pub(crate) applied: u64,
    /// Closed by the server: a resume learns why, instead of an unknown session.
    pub(crate) closed_by_server: bool,
    /// Each subscription: its selector text, the request that made it, and the log heads at
    /// the moment it took effect (updates after them belong to it).
    pub(crate) subscriptions: Vec<StoredSubscription>,
    /// Refusals the client may not have seen yet, by request.
    pub(crate) rejections: Vec<(u64, RequestError)>,
    /// Permissions a signed token granted (subscribe, publish selectors): no configuration
    /// names them, so they travel with the session.
    pub(crate) grant: Option<(Vec<String>, Vec<String>)>,
}

/// One subscription in a [`SessionRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredSubscription {
    pub(crate) selector: String,
    pub(crate) request: u64,
    pub(crate) from: Cursor,
}

/// A request's effect on the session record, committed together with the request's sequence
/// number (so that a replayed request is recognised and not applied twice).
#[derive(Debug, Clone)]
pub(crate) enum Commit<'a> {
    Subscribe(&'a StoredSubscription),
    Unsubscribe(&'a str),
    Reject(&'a RequestError),
}

/// Whether a fenced write changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Done now.
    Now,
    /// The record says this request was already carried out (a replay after a crash).
    Before,
}

/// One update in a partition's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogEntry {
    pub(crate) offset: u64,
    /// The partition's epoch when the entry was written.
    pub(crate) epoch: u32,
    pub(crate) topic: String,
    pub(crate) value: Bytes,
}

/// A topic's current value as the log's partition keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredValue {
    pub(crate) topic: String,
    pub(crate) value: Bytes,
    pub(crate) offset: u64,
}

/// A partition's log read from a position: what follows, and where the read stopped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Tail {
    /// The partition's epoch as the engine has it now (0: no log).
    pub(crate) epoch: u32,
    pub(crate) entries: Vec<LogEntry>,
}

/// Session records: create, claim with compare-and-set on the owner generation, commit a
/// request's effect with its sequence number, detach (start the retention clock), close.
pub(crate) trait SessionStore: Send + Sync {
    /// Stores a new session's record (generation 1); it expires after `ttl` unless kept alive.
    fn create<'a>(
        &'a self,
        id: SessionId,
        record: &'a SessionRecord,
        ttl: Duration,
    ) -> StoreFuture<'a, ()>;
    /// The record, if the store has it.
    fn load(&self, id: SessionId) -> StoreFuture<'_, Option<SessionRecord>>;
    /// Takes the session over: succeeds only if its generation is still `expected`; the new
    /// generation (returned) fences every older writer. `presented` stays valid next to the
    /// new `token` (see [`ResumeTokens`]). Rejections the client has seen (requests up to
    /// `confirmed`) are forgotten.
    fn claim<'a>(
        &'a self,
        id: SessionId,
        expected: u64,
        presented: &'a ResumeToken,
        token: &'a ResumeToken,
        confirmed: u64,
        ttl: Duration,
    ) -> StoreFuture<'a, u64>;
    /// Commits request `seq`'s effect.
    fn commit<'a>(&'a self, fence: Fence, seq: u64, commit: Commit<'a>)
    -> StoreFuture<'a, Applied>;
    /// Keeps connected sessions' records from expiring.
    fn keep_alive<'a>(&'a self, fences: &'a [Fence], ttl: Duration) -> StoreFuture<'a, ()>;
    /// The connection ended: the record expires after `ttl` (the retention) unless resumed.
    fn detach(&self, fence: Fence, ttl: Duration) -> StoreFuture<'_, ()>;
    /// Removes the record (closed by the client, expired), or keeps a tombstone for `ttl`
    /// (closed by the server), if `fence` still owns it.
    fn close(&self, fence: Fence, tombstone: Option<Duration>) -> StoreFuture<'_, ()>;
}

/// The shared topic log: partitions, each an ordered log with dense offsets and an epoch.
pub(crate) trait TopicLog: Send + Sync {
    /// Partitions (fixed for the cluster's life).
    fn partitions(&self) -> u32;
    /// The partition a topic's updates go to.
    fn partition_of(&self, topic: &str) -> u32 {
        partition_of(topic, self.partitions())
    }
    /// Appends an update; when `session` is given, only if its fence holds and request `seq`
    /// was not applied before, and the record's applied sequence moves to `seq` in the same
    /// step. Returns the partition's epoch and the update's offset (`None` for a request
    /// applied before).
    fn append<'a>(
        &'a self,
        session: Option<(Fence, u64)>,
        topic: &'a str,
        value: &'a Bytes,
    ) -> StoreFuture<'a, Option<Head>>;
    /// Entries after `after` up to `upto` (inclusive), at most `limit`.
    fn read(&self, partition: u32, after: u64, upto: u64, limit: usize) -> StoreFuture<'_, Tail>;
    /// Each partition's head.
    fn heads(&self) -> StoreFuture<'_, Cursor>;
    /// A partition's head and current values, read together.
    fn values(&self, partition: u32) -> StoreFuture<'_, (Head, Vec<StoredValue>)>;
}

/// FNV-1a of the topic, modulo the partitions: stable across nodes, versions and platforms.
pub(crate) fn partition_of(topic: &str, partitions: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in topic.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions.max(1)
}

/// The partition number clients see: the epoch in the high 24 bits, so that positions from
/// before an engine lost its data never match those after.
pub(crate) fn wire_partition(epoch: u32, partition: u32) -> u32 {
    (epoch << 8) | (partition & 0xff)
}

/// The inverse of [`wire_partition`]: (epoch, partition).
pub(crate) fn split_wire_partition(wire: u32) -> (u32, u32) {
    (wire >> 8, wire & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let c = Cursor(vec![
            Head {
                epoch: 7,
                offset: 0,
            },
            Head {
                epoch: 16_000_000,
                offset: u64::MAX,
            },
        ]);
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode(""), Some(Cursor::default()));
        assert_eq!(Cursor::decode("1.x"), None);
        assert_eq!(Cursor::decode("1"), None);
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition_of("a/b", 16), partition_of("a/b", 16));
        let used: std::collections::HashSet<u32> = (0..200)
            .map(|i| partition_of(&format!("t/{i}"), 16))
            .collect();
        assert_eq!(used.len(), 16);
        assert_eq!(
            split_wire_partition(wire_partition(123_456, 9)),
            (123_456, 9)
        );
    }
}
