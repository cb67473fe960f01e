//! Frames: the binary WebSocket messages exchanged once a session is connected.
//!
//! Frames come in two kinds. **Sequenced** frames (subscribe, unsubscribe and publish from the
//! client; updates and rejections from the server) carry the application's data and have an
//! *implicit* sequence number: the first sequenced frame on a connection is number
//! `peer_received + 1`, where `peer_received` was exchanged in the upgrade, and each one after it
//! is the next number. Sequence numbers therefore cost no bytes, and a replay after a resume is
//! just "send the buffered frames again, in order". **Control** frames (acks, pings, gap reports,
//! close) are not counted.
//!
//! Frames are encoded with [postcard](https://docs.rs/postcard), a compact, stable, `serde`-based
//! format; decoding never panics and reports a [`DecodeError`].

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{BufMut, Bytes};
use serde::{Deserialize, Serialize};

use crate::CloseReason;

/// Where an update sits in its topic's log: enough for any node of a cluster to rebuild a
/// replay from shared logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Position {
    /// The topic log's partition.
    pub partition: u32,
    /// The update's offset in that partition (1 for the first update).
    pub offset: u64,
}

/// A frame sent by the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// Sequenced: subscribe to every topic the selector matches, now and later.
    Subscribe {
        /// A selector as accepted by [`crate::Selector::parse`].
        selector: String,
    },
    /// Sequenced: remove a subscription made with the same selector text.
    Unsubscribe {
        /// The selector text given to `Subscribe`.
        selector: String,
    },
    /// Sequenced: set a topic's value and deliver it to its subscribers.
    Publish {
        /// A topic path (shared: a connection's frames reuse one allocation per topic, see
        /// [`TopicCache`]).
        topic: Arc<str>,
        /// The new value.
        value: Bytes,
    },
    /// Control: every server frame up to and including `received` has been processed.
    Ack {
        /// The last sequence number received, in order.
        received: u64,
    },
    /// Control: keepalive, sent when nothing else was sent for a ping period. Carries an ack.
    Ping {
        /// As in [`ClientFrame::Ack`].
        received: u64,
    },
    /// Control: the application closes the session; the server frees it at once.
    Close,
}

impl ClientFrame {
    /// Whether the frame takes a sequence number.
    pub fn is_sequenced(&self) -> bool {
        matches!(
            self,
            ClientFrame::Subscribe { .. }
                | ClientFrame::Unsubscribe { .. }
                | ClientFrame::Publish { .. }
        )
    }
}

/// One topic update delivered to a subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// The topic path (shared: one allocation per topic, not per update; see [`TopicCache`]).
    pub topic: Arc<str>,
    /// The value.
    pub value: Bytes,
    /// The update's position in the topic's log.
    pub position: Position,
    /// `true` when this is the topic's current value sent as a snapshot (a new subscription's
    /// first value, or the state after a gap), not a live update.
    pub snapshot: bool,
}

/// An update's parts, borrowed: what the encoders take, so that a server encodes a stored
/// value without cloning its topic and value into an [`Update`] first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateRef<'a> {
    /// The topic path.
    pub topic: &'a str,
    /// The value.
    pub value: &'a [u8],
    /// The update's position in the topic's log.
    pub position: Position,
    /// See [`Update::snapshot`].
    pub snapshot: bool,
}

impl<'a> From<&'a Update> for UpdateRef<'a> {
    fn from(u: &'a Update) -> Self {
        UpdateRef {
            topic: &u.topic,
            value: &u.value,
            position: u.position,
            snapshot: u.snapshot,
        }
    }
}

/// Why the server refused one client request; the session stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RequestErrorKind {
    /// The principal lacks the permission for this topic or selector.
    AccessDenied,
    /// The selector could not be parsed.
    InvalidSelector,
    /// The topic path is not valid.
    InvalidTopic,
    /// `Unsubscribe` named a selector that is not subscribed.
    NotSubscribed,
    /// The value is larger than the server accepts.
    TooLarge,
}

impl RequestErrorKind {
    /// Every kind.
    pub const ALL: [RequestErrorKind; 5] = [
        RequestErrorKind::AccessDenied,
        RequestErrorKind::InvalidSelector,
        RequestErrorKind::InvalidTopic,
        RequestErrorKind::NotSubscribed,
        RequestErrorKind::TooLarge,
    ];

    /// A stable, machine-readable name (`snake_case`), as the bindings report it.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestErrorKind::AccessDenied => "access_denied",
            RequestErrorKind::InvalidSelector => "invalid_selector",
            RequestErrorKind::InvalidTopic => "invalid_topic",
            RequestErrorKind::NotSubscribed => "not_subscribed",
            RequestErrorKind::TooLarge => "too_large",
        }
    }

    /// Parses [`RequestErrorKind::as_str`]'s output.
    pub fn from_name(name: &str) -> Option<RequestErrorKind> {
        RequestErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// A refused request: what went wrong, in words for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct RequestError {
    /// The typed cause.
    pub kind: RequestErrorKind,
    /// A human-readable explanation.
    pub message: String,
}

/// Messages the server could not replay after a resume (its recovery buffer had overflowed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapReport {
    /// First lost server sequence number.
    pub lost_from: u64,
    /// Last lost server sequence number (inclusive).
    pub lost_to: u64,
    /// The sequence number of the next sequenced frame after this report.
    pub next: u64,
    /// The topics whose updates were lost, with how many were lost per topic.
    pub topics: Vec<(String, u64)>,
}

impl GapReport {
    /// How many sequenced frames were lost.
    pub fn lost_count(&self) -> u64 {
        self.lost_to + 1 - self.lost_from
    }
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// Sequenced: a topic update for one of the session's subscriptions.
    Update(Update),
    /// Sequenced: the client request with sequence number `request` was refused.
    Rejected {
        /// The client sequence number of the refused request.
        request: u64,
        /// Why.
        error: RequestError,
    },
    /// Control: client frames up to `received` are processed. Requests covered by an ack that
    /// were not rejected before it succeeded.
    Ack {
        /// The last client sequence number processed.
        received: u64,
    },
    /// Control: keepalive carrying an ack.
    Ping {
        /// As in [`ServerFrame::Ack`].
        received: u64,
    },
    /// Control, first frame after a resume that could not be fully replayed.
    Gap(GapReport),
    /// Control: the server closes the session (the connection ends after this frame).
    Close {
        /// Why.
        reason: CloseReason,
        /// Details for people.
        message: String,
    },
    /// Control: the server is going away but the session is not over: the client reconnects
    /// (to this server or another) after about `retry_after_ms`. Every request the server
    /// applied was acknowledged before this frame; the connection ends after it.
    GoAway {
        /// Why ([`CloseReason::ServerDraining`], ...; one that allows reconnection).
        reason: CloseReason,
        /// How long to wait before reconnecting, in ms (spread it: see the strategies).
        retry_after_ms: u32,
        /// Details for people.
        message: String,
    },
}

impl ServerFrame {
    /// Whether the frame takes a sequence number.
    pub fn is_sequenced(&self) -> bool {
        matches!(self, ServerFrame::Update(_) | ServerFrame::Rejected { .. })
    }
}

/// A frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed frame: {0}")]
pub struct DecodeError(String);

/// Appends the encoding of `frame` to `out`.
pub fn encode<T: Serialize>(frame: &T, out: &mut Vec<u8>) {
    // Serializing these types into a Vec cannot fail: every field is supported by postcard and
    // the output grows as needed.
    if let Ok(bytes) = postcard::to_extend(frame, std::mem::take(out)) {
        *out = bytes;
    }
}

/// Encodes `frame` into a new buffer.
pub fn encode_to_vec<T: Serialize>(frame: &T) -> Vec<u8> {
    // Sized exactly up front: growing the buffer while serialising was a visible share of the
    // per-message cost in the throughput profile, and the buffer is often kept for replay.
    let size = postcard::serialize_with_flavor(frame, postcard::ser_flavors::Size::default());
    let mut out = Vec::with_capacity(size.unwrap_or(0));
    encode(frame, &mut out);
    out
}

/// The size of `frame`'s encoding.
pub fn encoded_len<T: Serialize>(frame: &T) -> usize {
    // Serializing these types cannot fail (see `encode`).
    postcard::serialize_with_flavor(frame, postcard::ser_flavors::Size::default()).unwrap_or(0)
}

/// Frames encoded one after the other into shared chunks: one allocation per chunk instead
/// of one per frame. For frames released about in the order they were made (a client's
/// requests, acknowledged in order; a server's updates to connected clients, acknowledged
/// within the lazy-ack delay), so that a chunk is freed soon after its last frame is: a frame
/// kept for long keeps its whole chunk.
#[derive(Debug)]
pub struct Arena {
    chunk: bytes::BytesMut,
    /// Bytes per chunk.
    chunk_size: usize,
}

impl Default for Arena {
    /// Chunks of [`Arena::DEFAULT_CHUNK`].
    fn default() -> Self {
        Arena::with_chunk_size(Arena::DEFAULT_CHUNK)
    }
}

impl Arena {
    /// Room for this many bytes of frames per chunk, unless set otherwise.
    pub const DEFAULT_CHUNK: usize = 16 * 1024;

    /// An arena whose chunks hold `bytes` (a frame larger than that gets a chunk of its own
    /// size). Smaller chunks bound what a frame kept for long keeps alive with it.
    pub fn with_chunk_size(bytes: usize) -> Arena {
        Arena {
            chunk: bytes::BytesMut::new(),
            chunk_size: bytes.max(1),
        }
    }

    /// Encodes `frame`, whose encoding is `size` bytes long (see [`encoded_len`]).
    pub fn encode<T: Serialize>(&mut self, frame: &T, size: usize) -> Bytes {
        if self.chunk.capacity() < size {
            self.chunk = bytes::BytesMut::with_capacity(self.chunk_size.max(size));
        }
        // Into the chunk's room as a slice: postcard's `Extend` path would push byte by byte.
        self.chunk.resize(size, 0);
        if postcard::to_slice(frame, &mut self.chunk).is_err() {
            // Cannot happen (`size` is the encoding's size); a plain encoding if it did.
            self.chunk.clear();
            return Bytes::from(encode_to_vec(frame));
        }
        self.chunk.split().freeze()
    }

    /// [`encode_update`] into the arena.
    pub fn encode_update<'a>(&mut self, update: impl Into<UpdateRef<'a>>) -> Bytes {
        let update = update.into();
        self.make_room(update_room(&update));
        write_update(&mut self.chunk, &update);
        self.chunk.split().freeze()
    }

    /// The encoding of `ClientFrame::Publish { topic, value }`, as [`encode_to_vec`] gives
    /// it, written without serde (see [`encode_update`]); [`publish_len`] is its length.
    pub fn encode_publish(&mut self, topic: &str, value: &[u8]) -> Bytes {
        self.make_room(publish_len(topic, value));
        self.chunk.put_u8(PUBLISH_VARIANT);
        put_varint(&mut self.chunk, topic.len() as u64);
        self.chunk.put_slice(topic.as_bytes());
        put_varint(&mut self.chunk, value.len() as u64);
        self.chunk.put_slice(value);
        self.chunk.split().freeze()
    }

    /// A new chunk unless the current one has `room` bytes left.
    fn make_room(&mut self, room: usize) {
        if self.chunk.capacity() - self.chunk.len() < room {
            self.chunk = bytes::BytesMut::with_capacity(self.chunk_size.max(room));
        }
    }
}

/// The most bytes a writer puts in one batched WebSocket message (a single larger frame still
/// goes alone).
pub const BATCH_BYTES: usize = 64 * 1024;

/// Appends an encoded frame to a batched message: its length (LEB128), then its bytes.
///
/// With batching negotiated in the upgrade (`x-tether-batch`), every WebSocket message carries
/// one or more frames this way, so that a burst costs one message, one mask and one system
/// call instead of one per frame.
pub fn push_to_batch(message: &mut impl bytes::BufMut, frame: &[u8]) {
    let mut len = frame.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            message.put_u8(byte);
            break;
        }
        message.put_u8(byte | 0x80);
    }
    message.put_slice(frame);
}

/// The frames of a batched message, in order.
pub fn batch_frames(message: &[u8]) -> BatchFrames<'_> {
    BatchFrames { rest: message }
}

/// Iterator over the frames of a batched message (see [`push_to_batch`]).
#[derive(Debug, Clone)]
pub struct BatchFrames<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for BatchFrames<'a> {
    type Item = Result<&'a [u8], DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let mut len: usize = 0;
        let mut shift = 0u32;
        let mut used = 0;
        loop {
            let Some(&byte) = self.rest.get(used) else {
                self.rest = &[];
                return Some(Err(DecodeError("truncated batch length".into())));
            };
            used += 1;
            if shift > 56 {
                self.rest = &[];
                return Some(Err(DecodeError("batch length too long".into())));
            }
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let Some(frame) = self.rest.get(used..used.saturating_add(len)) else {
            self.rest = &[];
            return Some(Err(DecodeError(format!(
                "batch frame of {len} bytes overruns its message"
            ))));
        };
        self.rest = &self.rest[used + len..];
        Some(Ok(frame))
    }
}

/// Builds the WebSocket messages of one connection from its frames: on a batched connection
/// as many frames as fit in a limit per message, otherwise one frame per message.
///
/// A writer hands it frames by reference while it holds its session's lock
/// (`transmit_with`), and it copies them into the message being built: taking a reference
/// count on each frame instead (to copy it after the lock) costs more than the copy, as the
/// publisher that encoded the frame is counting on the same chunk at the same time. A frame
/// that does not fit in the message being built starts the next one.
#[derive(Debug, Default)]
pub struct MessageBuilder {
    batched: bool,
    limit: usize,
    /// The message being built. Its room is let go of by [`MessageBuilder::shrink`], when a
    /// writer's queue runs dry: an idle connection keeps nothing.
    current: bytes::BytesMut,
    ready: VecDeque<Bytes>,
}

impl MessageBuilder {
    /// Frames from now on go into batches of at most `limit` bytes (a larger frame alone), or
    /// one per message when not `batched`.
    pub fn set_batching(&mut self, batched: bool, limit: usize) {
        self.batched = batched;
        self.limit = limit;
    }

    /// Adds a frame: copied into the message being built (which is complete first if the frame
    /// does not fit), or a message of its own on a connection without batches.
    pub fn push(&mut self, frame: &Bytes) {
        if !self.batched {
            self.ready.push_back(frame.clone());
            return;
        }
        if !self.current.is_empty() && self.current.len() + frame.len() + 10 > self.limit {
            self.finish();
        }
        if self.current.is_empty() {
            // Room for a small message at first; a burst grows it.
            self.current.reserve((frame.len() + 10).max(1024));
        }
        push_to_batch(&mut self.current, frame);
        if self.current.len() >= self.limit {
            self.finish();
        }
    }

    /// The message being built is complete (no more frames for now, or the next does not fit).
    pub fn finish(&mut self) {
        if !self.current.is_empty() {
            self.ready.push_back(self.current.split().freeze());
        }
    }

    /// Lets go of the room kept for the next message: for a connection going idle.
    pub fn shrink(&mut self) {
        self.current = bytes::BytesMut::new();
    }

    /// The next complete message.
    pub fn pop(&mut self) -> Option<Bytes> {
        self.ready.pop_front()
    }

    /// Whether a complete message or a part of one waits.
    pub fn is_holding(&self) -> bool {
        !self.ready.is_empty() || !self.current.is_empty()
    }

    /// The connection ended: what was built goes with it (a replay writes it again).
    pub fn clear(&mut self) {
        self.ready.clear();
        self.current.clear();
    }
}

/// Decodes one client frame; trailing bytes are an error.
pub fn decode_client(bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
    decode(bytes)
}

/// Decodes one server frame; trailing bytes are an error.
pub fn decode_server(bytes: &[u8]) -> Result<ServerFrame, DecodeError> {
    decode(bytes)
}

/// The topic names one connection has seen lately, so that a stream of frames on the same
/// few topics shares one allocation per topic instead of making one per frame.
#[derive(Debug, Default)]
pub struct TopicCache {
    recent: [Option<Arc<str>>; TopicCache::SIZE],
    next: usize,
}

impl TopicCache {
    const SIZE: usize = 4;

    /// The shared name for the topic whose text is `bytes`: a recent one when it matches (no
    /// UTF-8 check then: it was checked when it was remembered), else a new one remembered in
    /// place of the oldest.
    pub fn intern(&mut self, bytes: &[u8]) -> Result<Arc<str>, DecodeError> {
        if let Some(t) = self.find(bytes) {
            return Ok(t);
        }
        let topic = std::str::from_utf8(bytes).map_err(|e| DecodeError(e.to_string()))?;
        Ok(self.insert(topic))
    }

    /// A recent name whose text is `bytes`.
    fn find(&self, bytes: &[u8]) -> Option<Arc<str>> {
        self.recent
            .iter()
            .flatten()
            .find(|t| t.as_bytes() == bytes)
            .cloned()
    }

    /// Remembers `topic` in place of the oldest name.
    fn insert(&mut self, topic: &str) -> Arc<str> {
        let t: Arc<str> = Arc::from(topic);
        self.recent[self.next] = Some(t.clone());
        self.next = (self.next + 1) % Self::SIZE;
        t
    }
}

/// The postcard encoding of [`ServerFrame::Update`] starts with its variant index, 0.
const UPDATE_VARIANT: u8 = 0;
/// The postcard encoding of [`ClientFrame::Publish`] starts with its variant index, 2.
const PUBLISH_VARIANT: u8 = 2;

/// The fields of an update frame (after its variant byte) in `message`, read as postcard
/// reads [`Update`]: the same frames are accepted and give the same values (the fuzz targets
/// compare the two). Written out because this runs once per update received, and postcard's
/// generic path was a third of the client's cost per update.
fn parse_update(
    message: &Bytes,
    mut input: &[u8],
    topics: &mut TopicCache,
) -> Result<Update, DecodeError> {
    let topic = take_topic(&mut input, topics)?;
    let value = share(message, take_prefixed(&mut input)?);
    let partition = take_varint(&mut input, u32::BITS)?;
    let offset = take_varint(&mut input, u64::BITS)?;
    let snapshot = match input {
        [0] => false,
        [1] => true,
        [] => return Err(DecodeError("truncated update".into())),
        [0 | 1, rest @ ..] => {
            return Err(DecodeError(format!("{} trailing bytes", rest.len())));
        }
        _ => return Err(DecodeError("bad bool".into())),
    };
    Ok(Update {
        topic,
        value,
        position: Position {
            // At most 32 bits: `take_varint` checked the width.
            partition: partition as u32,
            offset,
        },
        snapshot,
    })
}

/// The topic of an encoded update frame (as [`encode_update`] writes it), without decoding
/// the rest; `None` for any other frame.
pub fn update_topic(frame: &[u8]) -> Option<&str> {
    let Some((&UPDATE_VARIANT, mut rest)) = frame.split_first() else {
        return None;
    };
    std::str::from_utf8(take_prefixed(&mut rest).ok()?).ok()
}

/// A length-prefixed topic name, shared through `topics`.
fn take_topic(input: &mut &[u8], topics: &mut TopicCache) -> Result<Arc<str>, DecodeError> {
    topics.intern(take_prefixed(input)?)
}

/// `part` of `message` as a `Bytes` sharing its buffer (no copy); a copy if `part` is not
/// inside `message`.
fn share(message: &Bytes, part: &[u8]) -> Bytes {
    let range = message.as_ptr_range();
    let inside =
        !part.is_empty() && range.start <= part.as_ptr() && part.as_ptr_range().end <= range.end;
    if inside {
        message.slice_ref(part)
    } else {
        Bytes::copy_from_slice(part)
    }
}

/// [`decode_server`] for a frame that lies inside `message` (a received WebSocket message):
/// an update's value shares the message's buffer and its topic comes from `topics`, so that
/// the hot path copies and allocates nothing per update. The result is the same as
/// [`decode_server`]'s.
pub fn decode_server_in(
    message: &Bytes,
    frame: &[u8],
    topics: &mut TopicCache,
) -> Result<ServerFrame, DecodeError> {
    match frame.split_first() {
        Some((&UPDATE_VARIANT, rest)) => {
            Ok(ServerFrame::Update(parse_update(message, rest, topics)?))
        }
        _ => decode(frame),
    }
}

/// The encoding of `ServerFrame::Update(update)`, as [`encode_to_vec`] gives it, written
/// without serde: updates are the frames a server encodes most, and serde's generic path
/// (a sizing pass, then the encoding) cost several times the copy itself.
pub fn encode_update<'a>(update: impl Into<UpdateRef<'a>>) -> Vec<u8> {
    let update = update.into();
    let mut out = Vec::with_capacity(update_room(&update));
    write_update(&mut out, &update);
    out
}

/// The length of a publish's encoding (see [`Arena::encode_publish`]).
pub fn publish_len(topic: &str, value: &[u8]) -> usize {
    1 + varint_len(topic.len() as u64) + topic.len() + varint_len(value.len() as u64) + value.len()
}

/// Bytes of `n`'s varint.
fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

/// Room enough for an update's encoding (varints at their longest).
fn update_room(update: &UpdateRef<'_>) -> usize {
    1 + 10 + update.topic.len() + 10 + update.value.len() + 5 + 10 + 1
}

fn write_update(out: &mut impl bytes::BufMut, update: &UpdateRef<'_>) {
    let topic = update.topic.as_bytes();
    out.put_u8(UPDATE_VARIANT);
    put_varint(out, topic.len() as u64);
    out.put_slice(topic);
    put_varint(out, update.value.len() as u64);
    out.put_slice(update.value);
    put_varint(out, u64::from(update.position.partition));
    put_varint(out, update.position.offset);
    out.put_u8(u8::from(update.snapshot));
}

/// Postcard's varint (LEB128).
fn put_varint(out: &mut impl bytes::BufMut, mut n: u64) {
    while n >= 0x80 {
        out.put_u8((n as u8) | 0x80);
        n >>= 7;
    }
    out.put_u8(n as u8);
}

/// Postcard's varint of an integer of `bits` bits: at most `ceil(bits / 7)` bytes, the last of
/// which may not carry bits beyond the integer's width. Accepts exactly what postcard accepts.
#[inline]
fn take_varint(input: &mut &[u8], bits: u32) -> Result<u64, DecodeError> {
    // Most varints of a frame (lengths, a partition) are one byte: read inline, the rest in
    // the loop below. One byte below 0x80 is valid at any width of 7 bits or more.
    if let Some((&byte, rest)) = input.split_first()
        && byte < 0x80
        && bits >= 7
    {
        *input = rest;
        return Ok(u64::from(byte));
    }
    take_long_varint(input, bits)
}

/// [`take_varint`] of a varint longer than a byte (or of a width under 7 bits).
fn take_long_varint(input: &mut &[u8], bits: u32) -> Result<u64, DecodeError> {
    let max = bits.div_ceil(7) as usize;
    let last_max = (1u8 << (bits % 7)) - 1;
    let mut out = 0u64;
    for i in 0..max {
        let Some((&byte, rest)) = input.split_first() else {
            return Err(DecodeError("truncated varint".into()));
        };
        *input = rest;
        out |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i == max - 1 && byte > last_max {
                break;
            }
            return Ok(out);
        }
    }
    Err(DecodeError("bad varint".into()))
}

/// `len` bytes, with `len` a postcard length prefix.
fn take_prefixed<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = take_varint(input, usize::BITS)?;
    let len = usize::try_from(len).map_err(|_| DecodeError("length too large".into()))?;
    let Some((bytes, rest)) = input.split_at_checked(len) else {
        return Err(DecodeError(format!("{len} bytes announced, fewer left")));
    };
    *input = rest;
    Ok(bytes)
}

/// [`decode_client`] for a frame that lies inside `message`, as [`decode_server_in`] does it
/// for updates: a publish's value shares the message's buffer and its topic comes from
/// `topics`.
pub fn decode_client_in(
    message: &Bytes,
    frame: &[u8],
    topics: &mut TopicCache,
) -> Result<ClientFrame, DecodeError> {
    match frame.split_first() {
        Some((&PUBLISH_VARIANT, mut rest)) => {
            let topic = take_topic(&mut rest, topics)?;
            let value = take_prefixed(&mut rest)?;
            if !rest.is_empty() {
                return Err(DecodeError(format!("{} trailing bytes", rest.len())));
            }
            Ok(ClientFrame::Publish {
                topic,
                value: share(message, value),
            })
        }
        _ => decode(frame),
    }
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let (frame, rest) = postcard::take_from_bytes(bytes).map_err(|e| DecodeError(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError(format!("{} trailing bytes", rest.len())));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_update_codec_agrees_with_postcard() {
        let lengths = [0usize, 1, 2, 127, 128, 300, 16_383, 16_384, 20_000];
        let numbers = [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ];
        let mut cache = TopicCache::default();
        let mut arena = Arena::default();
        let mut checked = 0;
        for &topic_len in &lengths[..6] {
            for &value_len in &lengths {
                for &n in &numbers {
                    for snapshot in [false, true] {
                        let update = Update {
                            topic: "é".repeat(topic_len / 2).into(),
                            value: Bytes::from(vec![0xa5; value_len]),
                            position: Position {
                                partition: u32::try_from(n).unwrap_or(u32::MAX),
                                offset: n,
                            },
                            snapshot,
                        };
                        let frame = ServerFrame::Update(update.clone());
                        let encoded = encode_update(&update);
                        assert_eq!(encoded, encode_to_vec(&frame), "{update:?}");
                        assert_eq!(arena.encode_update(&update), encoded);
                        let message = Bytes::from(encoded);
                        let decoded = decode_server_in(&message, &message, &mut cache);
                        assert_eq!(decoded.as_ref(), Ok(&frame));
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 6 * 9 * 8 * 2);
    }

    #[test]
    fn the_publish_codec_agrees_with_postcard() {
        let lengths = [0usize, 1, 2, 127, 128, 300, 16_383, 16_384, 20_000];
        let mut arena = Arena::default();
        let mut cache = TopicCache::default();
        for &topic_len in &lengths[..6] {
            for &value_len in &lengths {
                let topic = "é".repeat(topic_len / 2);
                let value = vec![0x5a; value_len];
                let frame = ClientFrame::Publish {
                    topic: topic.as_str().into(),
                    value: Bytes::from(value.clone()),
                };
                let encoded = arena.encode_publish(&topic, &value);
                assert_eq!(encoded, encode_to_vec(&frame), "{topic_len} / {value_len}");
                assert_eq!(encoded.len(), publish_len(&topic, &value));
                let decoded = decode_client_in(&encoded, &encoded, &mut cache);
                assert_eq!(decoded.as_ref(), Ok(&frame));
            }
        }
        let good = arena.encode_publish("a/b", b"xyz");
        let mut bad: Vec<Vec<u8>> = (1..good.len()).map(|n| good[..n].to_vec()).collect();
        bad.push([&good[..], &[0]].concat());
        bad.push(vec![PUBLISH_VARIANT, 2, 0xff, 0xfe, 0]);
        for b in &bad {
            let message = Bytes::copy_from_slice(b);
            let ours = decode_client_in(&message, &message, &mut TopicCache::default());
            assert!(ours.is_err(), "accepted {b:?}: {ours:?}");
            assert!(decode_client(b).is_err(), "postcard accepted {b:?}");
        }
    }

    #[test]
    fn the_update_decoder_refuses_what_postcard_refuses() {
        let update = Update {
            topic: "a/b".into(),
            value: Bytes::from_static(b"xyz"),
            position: Position {
                partition: 3,
                offset: 9,
            },
            snapshot: true,
        };
        let good = encode_update(&update);
        let mut bad: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
        bad.push([&good[..], &[0]].concat()); // trailing byte
        let mut not_bool = good.clone();
        *not_bool.last_mut().expect("not empty") = 2;
        bad.push(not_bool);
        // A partition of 2^32 (five bytes, the last above 15) and a topic that is not UTF-8.
        bad.push([&good[..9], &[0x80, 0x80, 0x80, 0x80, 0x10, 9, 1]].concat());
        bad.push([&[0u8, 2, 0xff, 0xfe][..], &good[5..]].concat());
        // An offset whose tenth byte carries more than bit 63.
        bad.push([&good[..10], &[0xff; 9][..], &[2, 1]].concat());
        for b in &bad {
            let message = Bytes::copy_from_slice(b);
            let ours = decode_server_in(&message, &message, &mut TopicCache::default());
            assert!(ours.is_err(), "accepted {b:?}: {ours:?}");
            assert!(decode_server(b).is_err(), "postcard accepted {b:?}");
        }
        // A non-canonical but valid varint (offset 9 in two bytes) is accepted by both.
        let long = [&good[..10], &[0x89, 0x00, 1]].concat();
        let message = Bytes::copy_from_slice(&long);
        let ours = decode_server_in(&message, &message, &mut TopicCache::default());
        assert!(ours.is_ok());
        assert_eq!(ours.ok(), decode_server(&long).ok());
    }

    #[test]
    fn frames_round_trip() {
        let frames = vec![
            ClientFrame::Subscribe {
                selector: "a/**".into(),
            },
            ClientFrame::Publish {
                topic: "a/b".into(),
                value: Bytes::from_static(b"hello"),
            },
            ClientFrame::Ack { received: u64::MAX },
            ClientFrame::Close,
        ];
        for f in frames {
            assert_eq!(decode_client(&encode_to_vec(&f)), Ok(f));
        }
        let update = ServerFrame::Update(Update {
            topic: "a/b".into(),
            value: Bytes::from_static(&[0, 1, 2]),
            position: Position {
                partition: 3,
                offset: 9,
            },
            snapshot: true,
        });
        assert_eq!(decode_server(&encode_to_vec(&update)), Ok(update));
    }

    #[test]
    fn decoding_in_place_shares_the_buffer_and_agrees_with_plain_decoding() {
        let update = ServerFrame::Update(Update {
            topic: "a/b".into(),
            value: Bytes::from(vec![9u8; 100]),
            position: Position {
                partition: 1,
                offset: 7,
            },
            snapshot: false,
        });
        let publish = ClientFrame::Publish {
            topic: "a/b".into(),
            value: Bytes::from(vec![8u8; 100]),
        };
        let mut message = Vec::new();
        push_to_batch(&mut message, &encode_to_vec(&update));
        push_to_batch(&mut message, &encode_to_vec(&update));
        let message = Bytes::from(message);
        let mut topics = TopicCache::default();
        let mut decoded = Vec::new();
        for f in batch_frames(&message) {
            let f = f.expect("valid");
            let shared = decode_server_in(&message, f, &mut topics).expect("decodes");
            assert_eq!(Ok(&shared), decode_server(f).as_ref());
            decoded.push(shared);
        }
        let [ServerFrame::Update(a), ServerFrame::Update(b)] = &decoded[..] else {
            panic!("two updates expected, got {decoded:?}");
        };
        // The values point into the message, and the two topics are one allocation.
        let range = message.as_ptr_range();
        assert!(range.contains(&a.value.as_ptr()) && range.contains(&b.value.as_ptr()));
        assert!(Arc::ptr_eq(&a.topic, &b.topic));

        let message = Bytes::from(encode_to_vec(&publish));
        let shared = decode_client_in(&message, &message, &mut topics).expect("decodes");
        assert_eq!(shared, publish);
        let ClientFrame::Publish { value, .. } = shared else {
            unreachable!()
        };
        assert!(message.as_ptr_range().contains(&value.as_ptr()));
        // Other frames, and a frame outside the message (copied, not shared), decode too.
        let ack = encode_to_vec(&ClientFrame::Ack { received: 5 });
        assert_eq!(
            decode_client_in(&message, &ack, &mut topics),
            Ok(ClientFrame::Ack { received: 5 })
        );
        let outside = encode_to_vec(&update);
        assert_eq!(
            decode_server_in(&message, &outside, &mut topics),
            Ok(update)
        );
    }

    #[test]
    fn the_arena_encodes_as_encode_to_vec_does_sharing_chunks() {
        let mut arena = Arena::default();
        let frames: Vec<ClientFrame> = (0..400)
            .map(|i| ClientFrame::Publish {
                topic: "a/b".into(),
                // Some larger than a chunk.
                value: Bytes::from(vec![i as u8; if i % 100 == 7 { 40_000 } else { 100 }]),
            })
            .collect();
        let encoded: Vec<Bytes> = frames
            .iter()
            .map(|f| arena.encode(f, encoded_len(f)))
            .collect();
        for (f, e) in frames.iter().zip(&encoded) {
            assert_eq!(&e[..], &encode_to_vec(f)[..]);
            assert_eq!(e.len(), encoded_len(f));
        }
        // Consecutive small frames lie next to each other in one chunk.
        assert_eq!(encoded[0].as_ptr_range().end, encoded[1].as_ptr());
    }

    #[test]
    fn the_topic_cache_keeps_the_recent_topics() {
        let mut cache = TopicCache::default();
        let mut intern = |t: &str| cache.intern(t.as_bytes()).expect("valid UTF-8");
        let a = intern("a");
        for t in ["b", "c", "d"] {
            intern(t);
        }
        assert!(Arc::ptr_eq(&a, &intern("a")), "four topics fit");
        intern("e");
        intern("f");
        assert!(!Arc::ptr_eq(&a, &intern("a")), "the oldest made room");
        assert!(cache.intern(&[0xff, 0xfe]).is_err(), "not UTF-8");
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let bytes = encode_to_vec(&ClientFrame::Publish {
            topic: "a/b".into(),
            value: Bytes::from(vec![7u8; 100]),
        });
        for cut in 0..bytes.len() {
            assert!(
                decode_client(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_client(&longer).is_err());
        assert!(decode_server(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn an_update_frame_names_its_topic_and_no_other_frame_does() {
        let update = Update {
            topic: Arc::from("a/b"),
            value: Bytes::from_static(b"v"),
            position: Position {
                partition: 3,
                offset: 9,
            },
            snapshot: false,
        };
        let frame = encode_update(&update);
        assert_eq!(update_topic(&frame), Some("a/b"));
        assert_eq!(update_topic(&frame[..2]), None, "truncated");
        let publish = encode_to_vec(&ClientFrame::Publish {
            topic: Arc::from("a/b"),
            value: Bytes::from_static(b"v"),
        });
        assert_eq!(update_topic(&publish), None);
        assert_eq!(update_topic(&[]), None);
    }

    #[test]
    fn batches_round_trip_and_malformed_ones_are_errors() {
        let frames: Vec<Vec<u8>> = vec![vec![1], vec![0; 300], Vec::new(), vec![7; 20_000]];
        let mut message = Vec::new();
        for f in &frames {
            push_to_batch(&mut message, f);
        }
        let back: Vec<Vec<u8>> = batch_frames(&message)
            .map(|f| f.expect("valid").to_vec())
            .collect();
        assert_eq!(back, frames);
        // A length running past the end, and a length that never ends.
        for bad in [&[5u8, 1, 2][..], &[0x80, 0x80][..], &[0xff; 12][..]] {
            assert!(
                batch_frames(bad).any(|f| f.is_err()),
                "{bad:?} must not decode"
            );
        }
    }

    #[test]
    fn the_message_builder_fills_messages_up_to_the_limit_in_order() {
        let frames: Vec<Bytes> = (0..40u8)
            .map(|i| Bytes::from(vec![i; 100]))
            .chain([Bytes::from(vec![0xee; 5_000]), Bytes::from_static(b"z")])
            .collect();
        let mut b = MessageBuilder::default();
        b.set_batching(true, 1_000);
        for f in &frames {
            b.push(f);
        }
        assert!(b.is_holding());
        b.finish();
        let mut messages = Vec::new();
        while let Some(m) = b.pop() {
            messages.push(m);
        }
        assert!(!b.is_holding());
        // 9 frames of 101 B per message, then the 4 left, the large one, the last.
        assert_eq!(messages.len(), 7);
        for m in &messages[..4] {
            assert_eq!(m.len(), 9 * 101, "filled before the next");
        }
        let large = &messages[messages.len() - 2];
        assert_eq!(
            batch_frames(large).count(),
            1,
            "a frame over the limit goes alone"
        );
        let back: Vec<Bytes> = messages
            .iter()
            .flat_map(|m| batch_frames(m).map(|f| Bytes::copy_from_slice(f.expect("valid"))))
            .collect();
        assert_eq!(back, frames, "every frame once, in order");

        b.set_batching(false, 1_000);
        for f in &frames[..3] {
            b.push(f);
        }
        b.finish();
        let single: Vec<Bytes> = std::iter::from_fn(|| b.pop()).collect();
        assert_eq!(single, frames[..3], "one frame per message without batches");

        b.set_batching(true, 1_000);
        b.push(&frames[0]);
        b.clear();
        b.finish();
        assert_eq!(b.pop(), None, "a cleared builder keeps nothing");
    }

    #[test]
    fn a_100_byte_update_costs_little_overhead() {
        let f = ServerFrame::Update(Update {
            topic: "bench/t".into(),
            value: Bytes::from(vec![0u8; 100]),
            position: Position {
                partition: 1,
                offset: 1_000_000,
            },
            snapshot: false,
        });
        assert!(encode_to_vec(&f).len() < 100 + 20);
    }
}
