//! One connection: a reader task feeding the session and a writer task draining it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::debug;

use tether_protocol::CloseReason;
use tether_protocol::frame::{self, ClientFrame};
use tether_protocol::write::{AfterRound, WriteRound};

use crate::metrics::Metrics;

use super::*;

/// How a connection's reader ended.
pub(super) enum ReaderEnd {
    /// The transport ended; the session may be resumed.
    Lost(CloseReason),
    /// The session was closed (by the client, or for a violation); let the writer flush.
    Closed,
    /// Another connection took the session over.
    Superseded,
}

pub(super) async fn run_connection(
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
    // Boxed: pinned in place (`tokio::pin!`) it was stored twice in this future's state, and
    // this future lives as long as the connection.
    let mut reader = Box::pin(read_loop(&shared, &slot, generation, stream));
    tokio::select! {
        end = &mut reader => {
            match end {
                ReaderEnd::Closed => {
                    // Give the writer a moment to send the close (or go-away) frame.
                    slot.notify.notify_one();
                    if tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_err() {
                        writer.abort();
                    }
                    // A session sent away lives on, waiting for its resume.
                    shared.connection_lost(&slot, generation);
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

pub(super) async fn read_loop(
    shared: &Arc<Shared>,
    slot: &Arc<Slot>,
    generation: u64,
    mut stream: futures_util::stream::SplitStream<WebSocketStream<BoxIo>>,
) -> ReaderEnd {
    let batched = lock(&slot.inner).proto.is_batched();
    let max_frame = shared.config.limits.max_frame_bytes;
    let mut topics = frame::TopicCache::default();
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
        let frames = match decode_message(&bytes, batched, max_frame, &mut topics) {
            Ok(f) => f,
            Err((reason, message)) => {
                shared.close_slot(slot, reason, &message);
                return ReaderEnd::Closed;
            }
        };
        let handled = match &shared.cluster {
            Some(cluster) => {
                let mut handled = Handled::Continue;
                for frame in frames {
                    // Boxed: inline, the store's round trips would size every connection's
                    // reader, clustered or not.
                    handled =
                        Box::pin(shared.handle_frame_clustered(cluster, slot, generation, frame))
                            .await;
                    if !matches!(handled, Handled::Continue) {
                        break;
                    }
                }
                handled
            }
            None => shared.handle_client_frames(slot, generation, frames),
        };
        match handled {
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

pub(super) enum Handled {
    Continue,
    Superseded,
    Closed,
}

pub(super) async fn write_loop(
    slot: Arc<Slot>,
    generation: u64,
    metrics: Arc<Metrics>,
    mut sink: futures_util::stream::SplitSink<WebSocketStream<BoxIo>, Message>,
) {
    // Frames are copied into messages under the session's lock, without a reference count
    // each (see `MessageBuilder`): the publisher that encoded them is counting on the same
    // chunk. The messages are written after the lock is released. A fast stream's frames are
    // gathered into full rounds (see `Gathering`).
    let mut builder = frame::MessageBuilder::default();
    loop {
        let mut round = WriteRound::default();
        let closing = loop {
            let mut inner = lock(&slot.inner);
            if inner.generation != generation {
                drop(inner);
                // This writer may have taken a wake-up meant for its successor: pass it on.
                slot.notify.notify_one();
                return;
            }
            let now = Instant::now();
            if round.is_start() {
                if let Err(fault) = inner.proto.handle_timeout(now) {
                    debug!(session = %slot.id, ?fault, "connection dead");
                    return;
                }
                builder.set_batching(inner.proto.is_batched(), frame::BATCH_BYTES);
            }
            if round.take_under_lock(|| inner.proto.transmit_with(now, |f| builder.push(f))) {
                break inner.closing;
            }
        };
        builder.finish();
        while let Some(message) = builder.pop() {
            metrics.bytes_out.inc_by(message.len() as u64);
            if sink.feed(Message::Binary(message)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
        if closing {
            if round.is_full() {
                continue;
            }
            let _ = sink.close().await;
            return;
        }
        // The wake-ups left while this round was written are spent: what they were for (new
        // frames, an ack due, a close, a successor) is seen under the lock below.
        let _ = slot.notify.notified().now_or_never();
        let (next, deadline) = {
            let mut inner = lock(&slot.inner);
            if inner.generation != generation || inner.closing {
                // The next round passes the wake-up on, or writes what is left and closes.
                continue;
            }
            (inner.proto.after_round(), inner.proto.poll_timeout())
        };
        let deadline = match next {
            AfterRound::WriteNow => continue,
            AfterRound::Gather => {
                // Until the timer's next tick: tokio's timer ticks every millisecond and rounds
                // a deadline up to its next tick, so this ends within `Gathering::AT_MOST`.
                let gathered = Instant::now() + Duration::from_micros(1);
                Some(deadline.map_or(gathered, |d| d.min(gathered)))
            }
            AfterRound::Wait => {
                builder.shrink();
                deadline
            }
        };
        let notified = slot.notify.notified();
        match deadline {
            Some(d) => {
                let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(d), notified).await;
            }
            None => notified.await,
        }
    }
}

impl Shared {
    pub(super) fn input_drained(&self, slot: &Slot, generation: u64) {
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
}

/// The frames of one message: the message itself, or every frame of a batch (each within the
/// frame limit). A malformed message closes the session with the reason to report.
/// Publishes' values share the message's buffer, and their topics come from `topics`.
fn decode_message(
    bytes: &Bytes,
    batched: bool,
    max_frame: usize,
    topics: &mut frame::TopicCache,
) -> Result<Vec<ClientFrame>, (CloseReason, String)> {
    let malformed = |e: frame::DecodeError| (CloseReason::TransportError, e.to_string());
    if !batched {
        if bytes.len() > max_frame {
            return Err((
                CloseReason::LimitExceeded,
                format!(
                    "message of {} bytes (the limit is {max_frame})",
                    bytes.len()
                ),
            ));
        }
        return Ok(vec![
            frame::decode_client_in(bytes, bytes, topics).map_err(malformed)?,
        ]);
    }
    let mut frames = Vec::new();
    for f in frame::batch_frames(bytes) {
        let f = f.map_err(malformed)?;
        if f.len() > max_frame {
            return Err((
                CloseReason::LimitExceeded,
                format!("frame of {} bytes (the limit is {max_frame})", f.len()),
            ));
        }
        frames.push(frame::decode_client_in(bytes, f, topics).map_err(malformed)?);
    }
    Ok(frames)
}
