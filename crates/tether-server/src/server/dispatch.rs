//! Carrying out a client's requests: subscribe, unsubscribe, publish, close.

use std::sync::Arc;
use std::time::Instant;

use tether_protocol::frame::ClientFrame;
use tether_protocol::server::{ServerFault, ServerRequest};
use tether_protocol::topic::validate_topic;
use tether_protocol::{RequestError, RequestErrorKind, Selector, Update};

use super::*;
use crate::topics::NewValue;

pub(super) fn request_error(kind: RequestErrorKind, message: impl Into<String>) -> RequestError {
    RequestError {
        kind,
        message: message.into(),
    }
}

/// Why a publish on `topic` by a session with `slot`'s permissions is refused, if it is.
pub(super) fn publish_refusal(slot: &Slot, topic: &str) -> Option<RequestError> {
    if let Err(e) = validate_topic(topic) {
        Some(request_error(RequestErrorKind::InvalidTopic, e.to_string()))
    } else if !slot.perms.may_publish(topic) {
        Some(request_error(
            RequestErrorKind::AccessDenied,
            format!("may not publish on {topic}"),
        ))
    } else {
        None
    }
}

impl Shared {
    /// Carries out the frames of one message (one frame, or a batch) in order, under one
    /// lock of the topics (if any frame needs them) and of the session.
    pub(super) fn handle_client_frames(
        &self,
        slot: &Arc<Slot>,
        generation: u64,
        frames: Vec<ClientFrame>,
    ) -> Handled {
        let now = Instant::now();
        let mut topics = frames
            .iter()
            .any(ClientFrame::is_sequenced)
            .then(|| lock(&self.topics));
        let mut inner = lock(&slot.inner);
        if inner.generation != generation {
            return Handled::Superseded;
        }
        let deadline_before = inner.proto.poll_timeout();
        let mut closed = false;
        for frame in frames {
            if frame.is_sequenced() && inner.closing {
                // Sent away or closing: requests from now on are left unread, unapplied;
                // the client sends them again once reconnected.
                return Handled::Closed;
            }
            let request = match inner.proto.handle_decoded(now, frame) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(fault) => {
                    drop(inner);
                    drop(topics);
                    return self.fault(slot, fault);
                }
            };
            if request == ServerRequest::Close {
                closed = true;
                break;
            }
            let Some(topics) = topics.as_mut() else {
                // Requests are sequenced: the topics' lock is held whenever one came.
                continue;
            };
            let seq = request.seq();
            let result = match request {
                ServerRequest::Subscribe { seq, selector } => {
                    self.subscribe(topics, slot, &mut inner, seq, &selector)
                }
                ServerRequest::Unsubscribe { seq, selector } => {
                    self.unsubscribe(topics, slot, &mut inner, seq, &selector)
                }
                ServerRequest::Publish { seq, topic, value } => {
                    match publish_refusal(slot, &topic) {
                        Some(error) => inner.proto.reject(seq, error),
                        None => {
                            let value = NewValue::Copied(&value);
                            self.fan_out(topics, &topic, value, Some((slot, &mut inner)));
                            Ok(())
                        }
                    }
                }
                ServerRequest::Close => Ok(()),
            };
            if let Some(seq) = seq {
                // Carried out under the session's lock: the next ack may cover it.
                inner.proto.request_applied(now, seq);
            }
            if let Err(ServerFault::SlowConsumer) = result {
                self.metrics.slow_consumers.inc();
                self.drop_connection(slot, &mut inner);
                return Handled::Superseded;
            }
        }
        if closed {
            // Freeing takes the locks in their order: release them first.
            drop(inner);
            drop(topics);
            self.free(slot, "closed by client", Release::Delete);
            return Handled::Closed;
        }
        // Fan-out already woke every subscriber's writer that needed it; this one needs waking
        // only for a rejection, a subscription's current values or an ack timer.
        if inner.proto.wakes_writer_after_requests(deadline_before) {
            slot.notify.notify_one();
        }
        Handled::Continue
    }

    pub(super) fn subscribe(
        &self,
        topics: &mut Topics,
        slot: &Arc<Slot>,
        inner: &mut SlotInner,
        seq: u64,
        text: &str,
    ) -> Result<(), ServerFault> {
        let selector = match Selector::parse(text) {
            Ok(s) => s,
            Err(e) => {
                return inner.proto.reject(
                    seq,
                    request_error(RequestErrorKind::InvalidSelector, e.to_string()),
                );
            }
        };
        if !slot.perms.may_subscribe(&selector) {
            return inner.proto.reject(
                seq,
                request_error(
                    RequestErrorKind::AccessDenied,
                    format!("may not subscribe to {selector}"),
                ),
            );
        }
        if inner.subscriptions.contains(&selector) {
            return Ok(());
        }
        topics.index.add(&selector, SlotRef(slot.clone()));
        for value in topics.store.current(&selector) {
            let already = inner.subscriptions.iter().any(|s| s.matches(&value.topic));
            if already {
                continue;
            }
            let update = Update {
                topic: value.topic,
                value: value.value,
                position: value.position,
                snapshot: true,
            };
            inner.proto.push_update(&update)?;
        }
        inner.subscriptions.push(selector);
        Ok(())
    }

    pub(super) fn unsubscribe(
        &self,
        topics: &mut Topics,
        slot: &Arc<Slot>,
        inner: &mut SlotInner,
        seq: u64,
        text: &str,
    ) -> Result<(), ServerFault> {
        let position = Selector::parse(text)
            .ok()
            .and_then(|s| inner.subscriptions.iter().position(|x| *x == s));
        match position {
            Some(i) => {
                let selector = inner.subscriptions.remove(i);
                topics.index.remove(&selector, &SlotRef(slot.clone()));
                Ok(())
            }
            None => inner.proto.reject(
                seq,
                request_error(
                    RequestErrorKind::NotSubscribed,
                    format!("not subscribed to {text}"),
                ),
            ),
        }
    }
}
