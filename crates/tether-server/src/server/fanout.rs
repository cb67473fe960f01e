//! Fan-out: a topic's new value reaches every subscribed session, in one order for all.

use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;

use tether_protocol::Position;
use tether_protocol::frame;
use tether_protocol::server::ServerFault;

use crate::topics::{NewValue, TopicValue};

use super::*;

impl Shared {
    /// Sets a topic's value and queues the update for every subscriber, in one critical
    /// section so that every subscriber sees a topic's updates in the same order. `own` is the
    /// publishing session, whose lock the caller already holds.
    pub(super) fn fan_out(
        &self,
        topics: &mut Topics,
        topic: &str,
        value: NewValue<'_>,
        own: Option<(&Arc<Slot>, &mut SlotInner)>,
    ) -> Position {
        let (store, index, arena) = topics.parts();
        let stored = store.set(topic, value);
        self.deliver(index, arena, stored, own);
        stored.position
    }

    /// Queues a stored update for every subscriber of its topic.
    pub(super) fn deliver(
        &self,
        index: &SubscriptionIndex<SlotRef>,
        arena: &mut frame::Arena,
        stored: &TopicValue,
        mut own: Option<(&Arc<Slot>, &mut SlotInner)>,
    ) {
        let mut encodings = Encodings {
            arena,
            stored,
            chunked: None,
            detached: None,
        };
        index.for_each_matching(&stored.topic, |SlotRef(target), last| {
            if !target.perms.may_read(&stored.topic) {
                return;
            }
            match own.as_mut() {
                Some((slot, inner)) if Arc::ptr_eq(slot, target) => {
                    self.queue_update(target, inner, &mut encodings, last)
                }
                _ => self.queue_update(target, &mut lock(&target.inner), &mut encodings, last),
            }
        });
    }

    /// Queues an update for one session, waking its writer if it was idle. `last`: no other
    /// session gets this update after this one.
    fn queue_update(
        &self,
        target: &Slot,
        inner: &mut SlotInner,
        encodings: &mut Encodings<'_>,
        last: bool,
    ) {
        if inner.closed {
            return;
        }
        let frame = encodings.frame(inner.proto.is_connected(), last);
        if let Some(aside) = inner.replaying.as_mut() {
            // Being rebuilt from the log: live updates follow the replay.
            aside.push(frame);
            return;
        }
        if let Err((ServerFault::SlowConsumer, _)) = inner.proto.push_encoded_update(frame) {
            warn!(session = %target.id, "slow consumer: dropping its connection; a resume reports the gap");
            self.metrics.slow_consumers.inc();
            self.drop_connection(target, inner);
            // Without a connection a push always fits (it evicts, and the resume reports it);
            // the session may keep it for long: the encoding of its own.
            let frame = encodings.frame(false, false);
            let _ = inner.proto.push_encoded_update(frame);
        }
        // A writer that is writing sees this update after its round, and one that gathers a
        // stream's updates is woken once it has enough (see `Gathering`): a wake-up per update
        // was a visible share of the cost.
        if inner.proto.wakes_writer() {
            target.notify.notify_one();
        }
    }

    /// Drops a session's current connection (a client that reads too slowly, a store that
    /// lost updates): the session stays resumable, and its resume reports what it lacks.
    pub(super) fn drop_connection(&self, slot: &Slot, inner: &mut SlotInner) {
        if inner.connected {
            self.metrics
                .session_state(Some("connected"), Some("disconnected"));
        }
        inner.generation += 1;
        inner.connected = false;
        inner.proto.disconnected();
        slot.notify.notify_waiters();
        slot.notify.notify_one();
    }
}

/// An update's encodings, each made on first need and shared by every subscriber that gets it.
/// A session with a connection gets one in the fan-out arena's chunks (one allocation per
/// chunk, not per update): its client acknowledges it within the lazy-ack delay, and the chunk
/// goes soon after. A session without one may keep the update for its whole reconnection
/// timeout, and must not keep a chunk of other updates alive with it: it gets an encoding in
/// an allocation of its own (one per update, shared by every such session).
struct Encodings<'a> {
    arena: &'a mut frame::Arena,
    stored: &'a TopicValue,
    chunked: Option<Bytes>,
    detached: Option<Bytes>,
}

impl Encodings<'_> {
    /// The frame for a session, connected or not; `last` hands over the shared encoding
    /// instead of a clone (one reference count less).
    fn frame(&mut self, connected: bool, last: bool) -> Bytes {
        let kept = if connected {
            &mut self.chunked
        } else {
            &mut self.detached
        };
        if let Some(e) = kept.take() {
            return if last { e } else { kept.insert(e).clone() };
        }
        let update = frame::UpdateRef {
            topic: &self.stored.topic,
            value: &self.stored.value,
            position: self.stored.position,
            snapshot: false,
        };
        let e = if connected {
            self.arena.encode_update(update)
        } else {
            Bytes::from(frame::encode_update(update))
        };
        if last { e } else { kept.insert(e).clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_protocol::Update;

    #[test]
    fn connected_sessions_share_the_arena_and_the_others_an_encoding_of_its_own() {
        let mut arena = frame::Arena::with_chunk_size(FANOUT_CHUNK);
        let stored = TopicValue {
            topic: Arc::from("a/b"),
            value: Bytes::from_static(b"value"),
            position: Position {
                partition: 1,
                offset: 7,
            },
        };
        let mut e = Encodings {
            arena: &mut arena,
            stored: &stored,
            chunked: None,
            detached: None,
        };
        let first = e.frame(true, false);
        let again = e.frame(true, false);
        assert_eq!(
            first.as_ptr(),
            again.as_ptr(),
            "one encoding for every connected session"
        );
        let detached = e.frame(false, false);
        assert_eq!(detached, first, "the same frame");
        let chunk = first.as_ptr()..first.as_ptr().wrapping_add(FANOUT_CHUNK);
        assert!(
            !chunk.contains(&detached.as_ptr()),
            "not in the arena's chunk"
        );
        assert_eq!(
            e.frame(false, true).as_ptr(),
            detached.as_ptr(),
            "the last takes it"
        );
        let expected = frame::encode_update(&Update {
            topic: stored.topic.clone(),
            value: stored.value.clone(),
            position: stored.position,
            snapshot: false,
        });
        assert_eq!(first, expected);
    }
}
