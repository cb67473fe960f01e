//! Fan-out: a topic's new value reaches every subscribed session, in one order for all.

use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;

use tether_protocol::server::ServerFault;
use tether_protocol::{Position, Update};

use crate::topics::TopicValue;

use super::*;

impl Shared {
    /// Sets a topic's value and queues the update for every subscriber, in one critical
    /// section so that every subscriber sees a topic's updates in the same order. `own` is the
    /// publishing session, whose lock the caller already holds.
    pub(super) fn fan_out(
        &self,
        topics: &mut Topics,
        topic: &str,
        value: Bytes,
        own: Option<(&Arc<Slot>, &mut SlotInner)>,
    ) -> Position {
        let stored = topics.store.set(topic, value);
        let position = stored.position;
        self.deliver(topics, stored, own);
        position
    }

    /// Queues a stored update for every subscriber of its topic.
    pub(super) fn deliver(
        &self,
        topics: &mut Topics,
        stored: TopicValue,
        mut own: Option<(&Arc<Slot>, &mut SlotInner)>,
    ) {
        // Encoded once, on the first subscriber, shared by every subscriber's buffer; the last
        // subscriber takes it rather than a clone (one reference count less per update).
        let mut encoded: Option<Bytes> = None;
        let arena = &mut topics.arena;
        let mut encode = || {
            arena.encode_update(&Update {
                topic: stored.topic.clone(),
                value: stored.value.clone(),
                position: stored.position,
                snapshot: false,
            })
        };
        topics
            .index
            .for_each_matching(&stored.topic, |SlotRef(target), last| {
                if !target.perms.may_read(&stored.topic) {
                    return;
                }
                let frame = match encoded.take() {
                    Some(e) if last => e,
                    Some(e) => encoded.insert(e).clone(),
                    None if last => encode(),
                    None => encoded.insert(encode()).clone(),
                };
                match own.as_mut() {
                    Some((slot, inner)) if Arc::ptr_eq(slot, target) => {
                        self.queue_update(target, inner, &stored.topic, frame)
                    }
                    _ => self.queue_update(target, &mut lock(&target.inner), &stored.topic, frame),
                }
            });
    }

    /// Queues an encoded update for one session, waking its writer if it was idle.
    fn queue_update(&self, target: &Slot, inner: &mut SlotInner, topic: &Arc<str>, frame: Bytes) {
        if inner.closed {
            return;
        }
        if let Some(aside) = inner.replaying.as_mut() {
            // Being rebuilt from the log: live updates follow the replay.
            aside.push((topic.clone(), frame));
            return;
        }
        // With frames already waiting, the writer has been woken for them and takes this one
        // too: a wake-up per update was a visible share of its cost.
        let writer_idle = !inner.proto.has_pending_transmit();
        if let Err((ServerFault::SlowConsumer, frame)) =
            inner.proto.push_encoded_update(topic.clone(), frame)
        {
            warn!(session = %target.id, "slow consumer: dropping its connection; a resume reports the gap");
            self.metrics.slow_consumers.inc();
            self.drop_connection(target, inner);
            // Without a connection a push always fits (it evicts, and the resume reports it).
            let _ = inner.proto.push_encoded_update(topic.clone(), frame);
        }
        if writer_idle {
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
