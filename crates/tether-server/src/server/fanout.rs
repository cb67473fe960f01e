//! Fan-out: a topic's new value reaches every subscribed session, in one order for all.

use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;

use tether_protocol::frame;
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
        // Encoded once, on the first subscriber, shared by every subscriber's buffer.
        let mut encoded: Option<Bytes> = None;
        topics.index.for_each_matching(&stored.topic, |SlotRef(target)| {
            if !target.perms.may_read(&stored.topic) {
                return;
            }
            let encoded: &Bytes = encoded.get_or_insert_with(|| {
                    Bytes::from(frame::encode_update(&Update {
                        topic: stored.topic.clone(),
                        value: stored.value.clone(),
                        position: stored.position,
                        snapshot: false,
                    }))
                });
            let deliver = |inner: &mut SlotInner| {
                if inner.closed {
                    return;
                }
                if let Some(aside) = inner.replaying.as_mut() {
                    // Being rebuilt from the log: live updates follow the replay.
                    aside.push((stored.topic.clone(), encoded.clone()));
                    return;
                }
                // With frames already waiting, the writer has been woken for them and takes
                // this one too: a wake-up per update was a visible share of its cost.
                let writer_idle = !inner.proto.has_pending_transmit();
                if let Err(ServerFault::SlowConsumer) = inner
                    .proto
                    .push_encoded_update(stored.topic.clone(), encoded.clone())
                {
                    warn!(session = %target.id, "slow consumer: dropping its connection; a resume reports the gap");
                    self.metrics.slow_consumers.inc();
                    self.drop_connection(target, inner);
                    let _ = inner
                        .proto
                        .push_encoded_update(stored.topic.clone(), encoded.clone());
                }
                if writer_idle {
                    target.notify.notify_one();
                }
            };
            match own.as_mut() {
                Some((slot, inner)) if Arc::ptr_eq(slot, target) => deliver(inner),
                _ => deliver(&mut lock(&target.inner)),
            }
        });
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
