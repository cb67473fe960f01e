//! Fan-out: a topic's new value reaches every subscribed session, in one order for all.

use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;

use tether_protocol::frame::{self, ServerFrame};
use tether_protocol::server::ServerFault;
use tether_protocol::{Position, Update};

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
        mut own: Option<(&Arc<Slot>, &mut SlotInner)>,
    ) -> Position {
        let stored = topics.store.set(topic, value);
        let targets = topics.index.matching(topic);
        if targets.is_empty() {
            return stored.position;
        }
        // Encoded once, shared by every subscriber's buffer.
        let encoded = Bytes::from(frame::encode_to_vec(&ServerFrame::Update(Update {
            topic: String::from(&*stored.topic),
            value: stored.value.clone(),
            position: stored.position,
            snapshot: false,
        })));
        for SlotRef(target) in targets {
            if !target.perms.may_read(topic) {
                continue;
            }
            let deliver = |inner: &mut SlotInner| {
                if inner.closed {
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
                    self.kick(&target, inner);
                    let _ = inner
                        .proto
                        .push_encoded_update(stored.topic.clone(), encoded.clone());
                }
                if writer_idle {
                    target.notify.notify_one();
                }
            };
            match own.as_mut() {
                Some((slot, inner)) if Arc::ptr_eq(slot, &target) => deliver(inner),
                _ => deliver(&mut lock(&target.inner)),
            }
        }
        stored.position
    }

    /// Drops the current connection of a session whose client reads too slowly; the session
    /// stays resumable and its resume reports what had to be dropped.
    pub(super) fn kick(&self, slot: &Slot, inner: &mut SlotInner) {
        if inner.connected {
            self.metrics
                .session_state(Some("connected"), Some("disconnected"));
        }
        self.metrics.slow_consumers.inc();
        inner.generation += 1;
        inner.connected = false;
        inner.proto.disconnected();
        slot.notify.notify_waiters();
        slot.notify.notify_one();
    }
}
