//! The session's writer: takes the frames its protocol state has to send, a bounded round at
//! a time under the session's lock, and writes them as WebSocket messages.

use std::sync::Arc;
use std::time::Instant;

use futures_util::SinkExt;
use tether_protocol::client::ConnectionFault;
use tether_protocol::frame::MessageBuilder;
use tether_protocol::write::WriteRound;
use tokio_tungstenite::tungstenite::Message;

use super::{SessionInner, Ws, lock};

/// Why the writer stopped.
pub(super) enum WriterEnd {
    /// The protocol found the connection dead (a timer expired without an answer).
    Fault(ConnectionFault),
    /// Writing failed.
    Io,
}

pub(super) async fn write_loop(
    inner: Arc<SessionInner>,
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
) -> WriterEnd {
    // Frames are copied into messages under the session's lock, without a reference count
    // each (see `MessageBuilder`); the messages are written after it is released.
    let mut builder = MessageBuilder::default();
    loop {
        let mut round = WriteRound::default();
        let deadline = loop {
            let mut s = lock(&inner.shared);
            let now = Instant::now();
            if round.is_start() {
                if let Err(fault) = s.proto.handle_timeout(now) {
                    return WriterEnd::Fault(fault);
                }
                let limit = s.proto.batch_limit();
                builder.set_batching(limit.is_some(), limit.unwrap_or(0));
            }
            if round.take_under_lock(|| s.proto.transmit_with(now, |f| builder.push(f))) {
                break s.proto.poll_timeout();
            }
        };
        builder.finish();
        let more = round.is_full();
        while let Some(message) = builder.pop() {
            if sink.feed(Message::Binary(message)).await.is_err() {
                return WriterEnd::Io;
            }
        }
        if sink.flush().await.is_err() {
            return WriterEnd::Io;
        }
        if more {
            continue;
        }
        builder.shrink();
        // After the close frame nothing more is written: the server answers with its final
        // ack and ends the connection, which the reader sees.
        let wake = inner.writer_wake.notified();
        match deadline {
            Some(d) => {
                let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(d), wake).await;
            }
            None => wake.await,
        }
    }
}
