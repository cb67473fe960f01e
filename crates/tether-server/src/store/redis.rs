//! The Redis 7 store, with [redis-rs](https://docs.rs/redis) (`redis` crate): a well-kept,
//! widely used client with tokio support, a reconnecting multiplexed connection
//! (`ConnectionManager`) and script handling (`EVALSHA` with a fallback to `EVAL`).
//!
//! Keys (the prefix is `tether:`):
//! - `p:<n>:log`: partition n's log, a stream whose entry IDs are `<offset>-0`, with fields
//!   `t` (topic), `v` (value) and `e` (the partition's epoch); trimmed approximately to the
//!   configured length;
//! - `p:<n>:meta`: a hash with the partition's `epoch` (random, drawn when the partition is
//!   created, so a partition that the engine lost comes back with another) and `seq` (its last
//!   offset);
//! - `p:<n>:values`: a hash of each topic's current value, `<offset>:<bytes>`;
//! - `s:<session id>`: the session record, a hash: `gen`, `token`, `principal`, `timeout`,
//!   `applied`, `closed`, `sub:<selector>` = `<request>|<cursor>`, `rej:<request>` =
//!   `<kind>\n<message>`.
//!
//! Every write that carries a request runs in one Lua script (atomic in Redis): the fence
//! check, the duplicate check (`applied`), the effect and the new `applied`. A publish appends
//! to its partition's stream and records the request in the same step.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Client, Script, Value};
use tether_protocol::{RequestError, RequestErrorKind, ResumeToken, ResumeTokens, SessionId};

use super::{
    Applied, Commit, Cursor, Fence, Head, LogEntry, SessionRecord, SessionStore, StoreError,
    StoreFuture, StoredSubscription, StoredValue, Tail, TopicLog,
};

const PREFIX: &str = "tether:";

/// Fence check, duplicate check, append, current value, applied: one step.
const APPEND: &str = r#"
if ARGV[1] ~= '' then
  local g = redis.call('HGET', KEYS[1], 'gen')
  if not g then return {-1} end
  if g ~= ARGV[1] then return {-2} end
  local applied = tonumber(redis.call('HGET', KEYS[1], 'applied') or '0')
  if tonumber(ARGV[2]) <= applied then return {0} end
  if tonumber(ARGV[2]) ~= applied + 1 then return {-3} end
end
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'seq', 0)
end
local off = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], off .. '-0', 't', ARGV[3], 'v', ARGV[4], 'e', epoch)
redis.call('HSET', KEYS[4], ARGV[3], off .. ':' .. ARGV[4])
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'applied', ARGV[2]) end
return {1, tonumber(epoch), off}
"#;

/// A request's effect on the record, with the fence and duplicate checks.
const COMMIT: &str = r#"
local g = redis.call('HGET', KEYS[1], 'gen')
if not g then return -1 end
if g ~= ARGV[1] then return -2 end
local applied = tonumber(redis.call('HGET', KEYS[1], 'applied') or '0')
if tonumber(ARGV[2]) <= applied then return 0 end
if tonumber(ARGV[2]) ~= applied + 1 then return -3 end
if ARGV[3] == 'set' then
  redis.call('HSET', KEYS[1], ARGV[4], ARGV[5])
elseif ARGV[3] == 'del' then
  redis.call('HDEL', KEYS[1], ARGV[4])
end
redis.call('HSET', KEYS[1], 'applied', ARGV[2])
return 1
"#;

/// Compare-and-set of the owner generation; forgets the rejections the client has seen.
const CLAIM: &str = r#"
local g = redis.call('HGET', KEYS[1], 'gen')
if not g then return -1 end
if g ~= ARGV[1] then return -2 end
if redis.call('HGET', KEYS[1], 'closed') == '1' then return -3 end
local ng = tonumber(g) + 1
redis.call('HSET', KEYS[1], 'gen', ng, 'token', ARGV[2], 'prev', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local confirmed = tonumber(ARGV[4])
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 4) == 'rej:' and tonumber(string.sub(f, 5)) <= confirmed then
    redis.call('HDEL', KEYS[1], f)
  end
end
return ng
"#;

/// Expiry, removal or tombstone, if the fence still holds.
const RELEASE: &str = r#"
local g = redis.call('HGET', KEYS[1], 'gen')
if g ~= ARGV[1] then return 0 end
if ARGV[2] == 'del' then
  redis.call('DEL', KEYS[1])
elseif ARGV[2] == 'tomb' then
  redis.call('HSET', KEYS[1], 'closed', '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"#;

/// A new epoch for a partition whose log went back (if nobody renewed it meanwhile).
const RENEW: &str = r#"
local e = redis.call('HGET', KEYS[1], 'epoch')
if e == ARGV[1] then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2])
  e = ARGV[2]
end
return {tonumber(e), tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')}
"#;

/// A partition's head and values, read together.
const VALUES: &str = r#"
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
return {m[1] or '0', m[2] or '0', redis.call('HGETALL', KEYS[2])}
"#;

/// The Redis store: session records and the partitioned log.
pub(crate) struct RedisStore {
    /// The URL without credentials, for messages.
    shown: String,
    client: Client,
    conn: ConnectionManager,
    partitions: u32,
    max_log_entries: u64,
    append: Script,
    commit: Script,
    claim: Script,
    release: Script,
    renew: Script,
    values: Script,
}

/// How long a command may take before the store counts as unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

fn shown_url(url: &str) -> String {
    // redis://user:password@host:port/db: never print the credentials.
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn session_key(id: SessionId) -> String {
    format!("{PREFIX}s:{id}")
}

fn partition_key(partition: u32, what: &str) -> String {
    format!("{PREFIX}p:{partition}:{what}")
}

impl RedisStore {
    /// Connects (and checks the connection with a `PING`); the error names the URL.
    pub(crate) async fn connect(
        url: &str,
        partitions: u32,
        max_log_entries: u64,
    ) -> Result<RedisStore, StoreError> {
        let shown = shown_url(url);
        let unavailable = |e: redis::RedisError| StoreError::Unavailable {
            url: shown.clone(),
            message: e.to_string(),
        };
        let client = Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let mut conn = tokio::time::timeout(
            RESPONSE_TIMEOUT * 2,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| StoreError::Unavailable {
            url: shown.clone(),
            message: "no answer".into(),
        })?
        .map_err(unavailable)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(RedisStore {
            shown,
            client,
            conn,
            partitions,
            max_log_entries,
            append: Script::new(APPEND),
            commit: Script::new(COMMIT),
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
            renew: Script::new(RENEW),
            values: Script::new(VALUES),
        })
    }

    /// The URL, without credentials.
    pub(crate) fn url(&self) -> &str {
        &self.shown
    }

    fn unavailable(&self, e: redis::RedisError) -> StoreError {
        StoreError::Unavailable {
            url: self.shown.clone(),
            message: e.to_string(),
        }
    }

    /// Gives partition `partition` a new epoch if it still has `old`; returns its head.
    pub(crate) async fn renew_epoch(&self, partition: u32, old: u32) -> Result<Head, StoreError> {
        let fresh = rand::random_range(1..(1u32 << 24));
        let mut conn = self.conn.clone();
        let (epoch, offset): (u32, u64) = self
            .renew
            .key(partition_key(partition, "meta"))
            .arg(old)
            .arg(fresh)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(Head { epoch, offset })
    }

    /// A connection of its own for blocking reads of the log (they would hold up every other
    /// command on a shared connection).
    pub(crate) async fn tail_connection(
        &self,
        block: Duration,
    ) -> Result<MultiplexedConnection, StoreError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(block + RESPONSE_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.unavailable(e))
    }

    /// Waits up to `block` for entries after each partition's `from` offset; returns them by
    /// partition, in order.
    pub(crate) async fn tail(
        &self,
        conn: &mut MultiplexedConnection,
        from: &[u64],
        block: Duration,
        count: usize,
    ) -> Result<Vec<(u32, Vec<LogEntry>)>, StoreError> {
        let keys: Vec<String> = (0..self.partitions)
            .map(|p| partition_key(p, "log"))
            .collect();
        let ids: Vec<String> = from.iter().map(|o| format!("{o}-0")).collect();
        let options = StreamReadOptions::default()
            .block(usize::try_from(block.as_millis()).unwrap_or(usize::MAX))
            .count(count);
        let reply: Option<StreamReadReply> = conn
            .xread_options(&keys, &ids, &options)
            .await
            .map_err(|e| self.unavailable(e))?;
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(partition) = keys.iter().position(|k| *k == key.key) else {
                continue;
            };
            let entries = key
                .ids
                .into_iter()
                .map(entry)
                .collect::<Result<Vec<_>, _>>()?;
            out.push((partition as u32, entries));
        }
        Ok(out)
    }
}

fn entry(id: redis::streams::StreamId) -> Result<LogEntry, StoreError> {
    let offset = id
        .id
        .split_once('-')
        .and_then(|(ms, _)| ms.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("log entry id {}", id.id)))?;
    let field = |name: &str| match id.map.get(name) {
        Some(Value::BulkString(b)) => Some(b.clone()),
        Some(Value::SimpleString(s)) => Some(s.clone().into_bytes()),
        _ => None,
    };
    let topic = field("t")
        .and_then(|t| String::from_utf8(t).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("log entry {} has no topic", id.id)))?;
    let value = field("v")
        .ok_or_else(|| StoreError::Corrupt(format!("log entry {} has no value", id.id)))?;
    let epoch = field("e")
        .and_then(|e| String::from_utf8(e).ok()?.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("log entry {} has no epoch", id.id)))?;
    Ok(LogEntry {
        offset,
        epoch,
        topic,
        value: Bytes::from(value),
    })
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn encode_rejection(error: &RequestError) -> String {
    format!("{}\n{}", error.kind.as_str(), error.message)
}

fn decode_rejection(text: &str) -> Option<RequestError> {
    let (kind, message) = text.split_once('\n')?;
    Some(RequestError {
        kind: RequestErrorKind::from_name(kind)?,
        message: message.to_owned(),
    })
}

fn parse_record(fields: HashMap<String, String>) -> Result<SessionRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("session record: {what}"));
    let number = |name: &str| -> Result<u64, StoreError> {
        fields
            .get(name)
            .map(|v| v.parse().map_err(|_| corrupt(name)))
            .unwrap_or(Ok(0))
    };
    let token = fields
        .get("token")
        .and_then(|t| ResumeToken::parse(t))
        .ok_or_else(|| corrupt("token"))?;
    let previous = match fields.get("prev") {
        Some(p) => Some(ResumeToken::parse(p).ok_or_else(|| corrupt("prev"))?),
        None => None,
    };
    let mut subscriptions = Vec::new();
    let mut rejections = Vec::new();
    for (name, value) in &fields {
        if let Some(selector) = name.strip_prefix("sub:") {
            let (request, from) = value.split_once('|').ok_or_else(|| corrupt(name))?;
            subscriptions.push(StoredSubscription {
                selector: selector.to_owned(),
                request: request.parse().map_err(|_| corrupt(name))?,
                from: Cursor::decode(from).ok_or_else(|| corrupt(name))?,
            });
        } else if let Some(seq) = name.strip_prefix("rej:") {
            let seq = seq.parse().map_err(|_| corrupt(name))?;
            rejections.push((seq, decode_rejection(value).ok_or_else(|| corrupt(name))?));
        }
    }
    subscriptions.sort_by_key(|s| s.request);
    rejections.sort_by_key(|(seq, _)| *seq);
    Ok(SessionRecord {
        principal: fields.get("principal").cloned(),
        tokens: ResumeTokens::from_parts(token, previous),
        reconnect_timeout: Duration::from_millis(number("timeout")?),
        generation: number("gen")?,
        applied: number("applied")?,
        closed_by_server: fields.get("closed").is_some_and(|c| c == "1"),
        grant: match fields.get("grant") {
            Some(json) => Some(serde_json::from_str(json).map_err(|_| corrupt("grant"))?),
            None => None,
        },
        subscriptions,
        rejections,
    })
}

/// Maps a fenced script's status: -1 missing, -2 fenced, -3 out of order, 0 applied before,
/// 1 now.
fn fenced_status(status: i64) -> Result<Applied, StoreError> {
    match status {
        1 => Ok(Applied::Now),
        0 => Ok(Applied::Before),
        -1 => Err(StoreError::Missing),
        -2 => Err(StoreError::Fenced),
        -3 => Err(StoreError::OutOfOrder),
        other => Err(StoreError::Corrupt(format!("script status {other}"))),
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

impl SessionStore for RedisStore {
    fn create<'a>(
        &'a self,
        id: SessionId,
        record: &'a SessionRecord,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let key = session_key(id);
            let mut fields: Vec<(String, String)> = vec![
                ("gen".into(), record.generation.to_string()),
                ("token".into(), record.tokens.current().to_header_value()),
                ("timeout".into(), ms(record.reconnect_timeout).to_string()),
                ("applied".into(), record.applied.to_string()),
            ];
            if let Some(p) = &record.principal {
                fields.push(("principal".into(), p.clone()));
            }
            if let Some(grant) = &record.grant
                && let Ok(json) = serde_json::to_string(grant)
            {
                fields.push(("grant".into(), json));
            }
            if let Some(prev) = record.tokens.previous() {
                fields.push(("prev".into(), prev.to_header_value()));
            }
            for s in &record.subscriptions {
                fields.push((
                    format!("sub:{}", s.selector),
                    format!("{}|{}", s.request, s.from.encode()),
                ));
            }
            let mut conn = self.conn.clone();
            redis::pipe()
                .atomic()
                .del(&key)
                .hset_multiple(&key, &fields)
                .pexpire(&key, ms(ttl) as i64)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| self.unavailable(e))
        })
    }

    fn load(&self, id: SessionId) -> StoreFuture<'_, Option<SessionRecord>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let fields: HashMap<String, String> = conn
                .hgetall(session_key(id))
                .await
                .map_err(|e| self.unavailable(e))?;
            if fields.is_empty() {
                return Ok(None);
            }
            parse_record(fields).map(Some)
        })
    }

    fn claim<'a>(
        &'a self,
        id: SessionId,
        expected: u64,
        presented: &'a ResumeToken,
        token: &'a ResumeToken,
        confirmed: u64,
        ttl: Duration,
    ) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let status: i64 = self
                .claim
                .key(session_key(id))
                .arg(expected)
                .arg(token.to_header_value())
                .arg(ms(ttl))
                .arg(confirmed)
                .arg(presented.to_header_value())
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.unavailable(e))?;
            match status {
                -1 => Err(StoreError::Missing),
                -2 | -3 => Err(StoreError::Fenced),
                g if g > 0 => Ok(g as u64),
                other => Err(StoreError::Corrupt(format!("claim status {other}"))),
            }
        })
    }

    fn commit<'a>(
        &'a self,
        fence: Fence,
        seq: u64,
        commit: Commit<'a>,
    ) -> StoreFuture<'a, Applied> {
        Box::pin(async move {
            let (op, field, value) = match commit {
                Commit::Subscribe(s) => (
                    "set",
                    format!("sub:{}", s.selector),
                    format!("{}|{}", s.request, s.from.encode()),
                ),
                Commit::Unsubscribe(selector) => ("del", format!("sub:{selector}"), String::new()),
                Commit::Reject(error) => ("set", format!("rej:{seq}"), encode_rejection(error)),
            };
            let mut conn = self.conn.clone();
            let status: i64 = self
                .commit
                .key(session_key(fence.session))
                .arg(fence.generation)
                .arg(seq)
                .arg(op)
                .arg(field)
                .arg(value)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.unavailable(e))?;
            fenced_status(status)
        })
    }

    fn keep_alive<'a>(&'a self, fences: &'a [Fence], ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if fences.is_empty() {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            for f in fences {
                pipe.pexpire(session_key(f.session), ms(ttl) as i64)
                    .ignore();
            }
            let mut conn = self.conn.clone();
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| self.unavailable(e))
        })
    }

    fn detach(&self, fence: Fence, ttl: Duration) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.release(fence, "expire", ttl).await })
    }

    fn close(&self, fence: Fence, tombstone: Option<Duration>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            match tombstone {
                Some(ttl) => self.release(fence, "tomb", ttl).await,
                None => self.release(fence, "del", Duration::ZERO).await,
            }
        })
    }
}

impl RedisStore {
    async fn release(&self, fence: Fence, how: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .release
            .key(session_key(fence.session))
            .arg(fence.generation)
            .arg(how)
            .arg(ms(ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(())
    }
}

impl TopicLog for RedisStore {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn append<'a>(
        &'a self,
        session: Option<(Fence, u64)>,
        topic: &'a str,
        value: &'a Bytes,
    ) -> StoreFuture<'a, Option<Head>> {
        Box::pin(async move {
            let partition = self.partition_of(topic);
            let (key, generation, seq) = match session {
                Some((fence, seq)) => (
                    session_key(fence.session),
                    fence.generation.to_string(),
                    seq,
                ),
                // The script still names a key for the session (unused), so that it declares
                // every key it may touch.
                None => (format!("{PREFIX}s:-"), String::new(), 0),
            };
            // A fresh epoch, used only if the partition has none yet (24 bits, never 0).
            let epoch = rand::random_range(1..(1u32 << 24));
            let mut conn = self.conn.clone();
            let reply: Vec<i64> = self
                .append
                .key(key)
                .key(partition_key(partition, "meta"))
                .key(partition_key(partition, "log"))
                .key(partition_key(partition, "values"))
                .arg(generation)
                .arg(seq)
                .arg(topic)
                .arg(value.as_ref())
                .arg(epoch)
                .arg(self.max_log_entries)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.unavailable(e))?;
            match reply.as_slice() {
                [1, epoch, offset] => Ok(Some(Head {
                    epoch: u32::try_from(*epoch)
                        .map_err(|_| StoreError::Corrupt(format!("epoch {epoch}")))?,
                    offset: *offset as u64,
                })),
                [status] => fenced_status(*status).map(|_| None),
                other => Err(StoreError::Corrupt(format!("append answered {other:?}"))),
            }
        })
    }

    fn read(&self, partition: u32, after: u64, upto: u64, limit: usize) -> StoreFuture<'_, Tail> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let (epoch, entries): (Option<u32>, StreamRangeReply) = redis::pipe()
                .hget(partition_key(partition, "meta"), "epoch")
                .xrange_count(
                    partition_key(partition, "log"),
                    format!("{}-0", after + 1),
                    format!("{upto}-0"),
                    limit,
                )
                .query_async(&mut conn)
                .await
                .map_err(|e| self.unavailable(e))?;
            Ok(Tail {
                epoch: epoch.unwrap_or(0),
                entries: entries
                    .ids
                    .into_iter()
                    .map(entry)
                    .collect::<Result<_, _>>()?,
            })
        })
    }

    fn heads(&self) -> StoreFuture<'_, Cursor> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for p in 0..self.partitions {
                pipe.cmd("HMGET")
                    .arg(partition_key(p, "meta"))
                    .arg("epoch")
                    .arg("seq");
            }
            let mut conn = self.conn.clone();
            let heads: Vec<(Option<u32>, Option<u64>)> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.unavailable(e))?;
            Ok(Cursor(
                heads
                    .into_iter()
                    .map(|(epoch, offset)| Head {
                        epoch: epoch.unwrap_or(0),
                        offset: offset.unwrap_or(0),
                    })
                    .collect(),
            ))
        })
    }

    fn values(&self, partition: u32) -> StoreFuture<'_, (Head, Vec<StoredValue>)> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let reply: Vec<Value> = self
                .values
                .key(partition_key(partition, "meta"))
                .key(partition_key(partition, "values"))
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.unavailable(e))?;
            let corrupt = || StoreError::Corrupt(format!("values of partition {partition}"));
            let [epoch, offset, values] = reply.as_slice() else {
                return Err(corrupt());
            };
            let head = Head {
                epoch: int(epoch)
                    .and_then(|e| u32::try_from(e).ok())
                    .ok_or_else(corrupt)?,
                offset: int(offset)
                    .and_then(|o| u64::try_from(o).ok())
                    .ok_or_else(corrupt)?,
            };
            let flat: Vec<Vec<u8>> = match values {
                Value::Array(items) => items
                    .iter()
                    .map(|v| match v {
                        Value::BulkString(b) => Ok(b.clone()),
                        _ => Err(corrupt()),
                    })
                    .collect::<Result<_, _>>()?,
                Value::Map(pairs) => pairs
                    .iter()
                    .flat_map(|(k, v)| [k, v])
                    .map(|v| match v {
                        Value::BulkString(b) => Ok(b.clone()),
                        _ => Err(corrupt()),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(corrupt()),
            };
            let mut out = Vec::with_capacity(flat.len() / 2);
            for pair in flat.chunks_exact(2) {
                let topic = String::from_utf8(pair[0].clone()).map_err(|_| corrupt())?;
                let colon = pair[1]
                    .iter()
                    .position(|&b| b == b':')
                    .ok_or_else(corrupt)?;
                let offset = std::str::from_utf8(&pair[1][..colon])
                    .ok()
                    .and_then(|o| o.parse().ok())
                    .ok_or_else(corrupt)?;
                out.push(StoredValue {
                    topic,
                    value: Bytes::copy_from_slice(&pair[1][colon + 1..]),
                    offset,
                });
            }
            Ok((head, out))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(
            shown_url("redis://user:secret@127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            shown_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn rejections_round_trip() {
        let e = RequestError {
            kind: RequestErrorKind::AccessDenied,
            message: "may not\npublish".into(),
        };
        assert_eq!(decode_rejection(&encode_rejection(&e)), Some(e));
        assert_eq!(decode_rejection("nonsense"), None);
    }
}
