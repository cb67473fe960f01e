//! Getting updates and callbacks to the application: the callback executor (user code runs
//! there, in order, never on an async worker and never under a lock), subscription streams,
//! and the bound on what waits for a slow consumer.
//!
//! Every update waiting for the application (in a [`Subscription`] stream, or as a handler
//! call not yet run) counts against the session's [`Backlog`]. Past its limit the session stops
//! reading from its connection until the application has caught up to half of it: memory stays
//! bounded, and the pressure reaches the server, whose own bound on a client that reads too
//! slowly drops the connection; the resume then reports what was dropped (a gap report), never
//! a silent hole.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::{Notify, mpsc};
use tracing::warn;

use crate::runtime;
use crate::session::TopicUpdate;

type Job = Box<dyn FnOnce() + Send>;

/// Callbacks run per hop to the blocking pool at most: enough to amortise the hop, few enough
/// that a slow callback does not hold many others back.
const CALLBACK_BATCH: usize = 256;

/// Runs user callbacks one at a time, in order, on the blocking pool: whatever is queued
/// goes in one batch per hop (not a blocking task per callback).
#[derive(Clone)]
pub(crate) struct Callbacks {
    tx: mpsc::UnboundedSender<Job>,
}

impl Callbacks {
    pub(crate) fn new(handle: &tokio::runtime::Handle) -> Callbacks {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let h = handle.clone();
        handle.spawn(async move {
            let mut batch = Vec::with_capacity(CALLBACK_BATCH);
            while rx.recv_many(&mut batch, CALLBACK_BATCH).await > 0 {
                let jobs = std::mem::replace(&mut batch, Vec::with_capacity(CALLBACK_BATCH));
                let ran = h
                    .spawn_blocking(move || {
                        for job in jobs {
                            let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                runtime::run_callback(job)
                            }));
                            if run.is_err() {
                                warn!("a session callback panicked; the session carries on");
                            }
                        }
                    })
                    .await;
                if ran.is_err() {
                    // The runtime is shutting down: callbacks are moot then.
                    return;
                }
            }
        });
        Callbacks { tx }
    }

    pub(crate) fn post(&self, job: impl FnOnce() + Send + 'static) {
        // Fails only when the runtime is shutting down; callbacks are moot then.
        let _ = self.tx.send(Box::new(job));
    }
}

/// Updates waiting for the application, across a session's subscriptions and handlers.
#[derive(Debug)]
pub(crate) struct Backlog {
    waiting: AtomicUsize,
    limit: usize,
    caught_up: Notify,
}

impl Backlog {
    pub(crate) fn new(limit: usize) -> Backlog {
        Backlog {
            waiting: AtomicUsize::new(0),
            limit: limit.max(2),
            caught_up: Notify::new(),
        }
    }

    fn added(&self, n: usize) {
        self.waiting.fetch_add(n, Ordering::AcqRel);
    }

    fn taken(&self, n: usize) {
        let before = self.waiting.fetch_sub(n, Ordering::AcqRel);
        let resume_at = self.limit / 2;
        if before > resume_at && before - n <= resume_at {
            self.caught_up.notify_waiters();
        }
    }

    /// Whether the session should stop reading until the application catches up.
    pub(crate) fn is_over(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > self.limit
    }

    /// Waits until the application has taken enough (half the limit waits at most).
    pub(crate) async fn caught_up(&self) {
        loop {
            let notified = self.caught_up.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.waiting.load(Ordering::Acquire) <= self.limit / 2 {
                return;
            }
            notified.await;
        }
    }
}

/// Where a subscription's updates go.
pub(crate) enum Sink {
    /// A [`Subscription`] stream.
    Stream(StreamSink),
    /// A handler run on the callback thread, in order with the state callbacks.
    Handler(Arc<dyn Fn(TopicUpdate) + Send + Sync>),
}

/// The sending side of a [`Subscription`]: updates are staged while the session handles a
/// message, then go to the stream in one batch ([`Sink::flush`]): one channel operation and
/// one count per batch instead of per update.
pub(crate) struct StreamSink {
    tx: mpsc::UnboundedSender<Vec<TopicUpdate>>,
    staged: Vec<TopicUpdate>,
    /// The size of the last batch sent.
    last_batch: usize,
}

/// The most updates a batch reserves room for up front (it grows past that if needed).
const MAX_RESERVED: usize = 1024;

impl Sink {
    pub(crate) fn stream(tx: mpsc::UnboundedSender<Vec<TopicUpdate>>) -> Sink {
        Sink::Stream(StreamSink {
            tx,
            staged: Vec::new(),
            last_batch: 0,
        })
    }

    /// Hands an update to the sink, counting it against the backlog until the application
    /// takes it. A stream's update is staged: it is sent by the next [`Sink::flush`]. Returns
    /// whether the update was staged (and the sink needs a flush).
    pub(crate) fn deliver(
        &mut self,
        u: TopicUpdate,
        callbacks: &Callbacks,
        backlog: &Arc<Backlog>,
    ) -> bool {
        match self {
            Sink::Stream(sink) => {
                if sink.staged.capacity() == 0 {
                    // Sized like the last batch: growing it update by update reallocated and
                    // copied it several times per message. Taken only while updates come: an
                    // idle subscription holds no buffer.
                    sink.staged.reserve(sink.last_batch.clamp(1, MAX_RESERVED));
                }
                sink.staged.push(u);
                sink.staged.len() == 1
            }
            Sink::Handler(h) => {
                let (h, backlog) = (h.clone(), backlog.clone());
                backlog.added(1);
                callbacks.post(move || {
                    h(u);
                    backlog.taken(1);
                });
                false
            }
        }
    }

    /// Sends what is staged to the stream, as one batch.
    pub(crate) fn flush(&mut self, backlog: &Backlog) {
        let Sink::Stream(sink) = self else {
            return;
        };
        if sink.staged.is_empty() {
            return;
        }
        let n = sink.staged.len();
        sink.last_batch = n;
        // A dropped receiver just stops receiving; the subscription stays on the server.
        if sink.tx.send(std::mem::take(&mut sink.staged)).is_ok() {
            backlog.added(n);
        }
    }
}

/// The updates of one subscription, as a [`Stream`]. Ends when the session closes or the
/// selector is unsubscribed. Read it: updates waiting here count against the session's bound
/// (see [`crate::SessionBuilder::delivery_limit`]), and past it the session stops reading.
#[derive(Debug)]
pub struct Subscription {
    selector: String,
    rx: mpsc::UnboundedReceiver<Vec<TopicUpdate>>,
    /// The batch being read; it counts as waiting until its last update is taken.
    current: std::vec::IntoIter<TopicUpdate>,
    current_len: usize,
    backlog: Arc<Backlog>,
}

impl Subscription {
    pub(crate) fn new(
        selector: String,
        rx: mpsc::UnboundedReceiver<Vec<TopicUpdate>>,
        backlog: Arc<Backlog>,
    ) -> Subscription {
        Subscription {
            selector,
            rx,
            current: Vec::new().into_iter(),
            current_len: 0,
            backlog,
        }
    }

    /// The selector.
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The next update, or `None` when the subscription ended.
    pub async fn next(&mut self) -> Option<TopicUpdate> {
        std::future::poll_fn(|cx| self.poll_take(cx)).await
    }

    /// An update if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<TopicUpdate> {
        if let Some(u) = self.take_current() {
            return Some(u);
        }
        let batch = self.rx.try_recv().ok()?;
        self.start(batch);
        self.take_current()
    }

    /// Every update waiting now, at least one (it waits for the first), at most `max`; `None`
    /// when the subscription ended. For consumers that hand updates on in batches (the
    /// bindings): one call per batch instead of one per update. The session's own batches are
    /// handed over whole where they fit, not moved update by update.
    pub async fn next_batch(&mut self, max: usize) -> Option<Vec<TopicUpdate>> {
        let max = max.max(1);
        let mut batch = if self.current.len() > 0 {
            self.take_up_to(max)
        } else {
            loop {
                let first = std::future::poll_fn(|cx| self.rx.poll_recv(cx)).await?;
                if !first.is_empty() {
                    break self.take_whole_or_part(first, max);
                }
            }
        };
        // Batches waiting join while they fit; the first that does not is split.
        while batch.len() < max {
            let Ok(next) = self.rx.try_recv() else {
                break;
            };
            let part = self.take_whole_or_part(next, max - batch.len());
            batch.extend(part);
        }
        Some(batch)
    }

    /// `batch` as it is if it fits in `max` (counted as taken), else its first `max` updates
    /// (the rest is read next).
    fn take_whole_or_part(&mut self, batch: Vec<TopicUpdate>, max: usize) -> Vec<TopicUpdate> {
        if batch.len() <= max {
            self.backlog.taken(batch.len());
            return batch;
        }
        self.start(batch);
        self.take_up_to(max)
    }

    /// Up to `max` updates of the current batch.
    fn take_up_to(&mut self, max: usize) -> Vec<TopicUpdate> {
        let mut taken = Vec::with_capacity(max.min(self.current.len()));
        taken.extend(std::iter::from_fn(|| self.take_current()).take(max));
        taken
    }

    fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<Option<TopicUpdate>> {
        if let Some(u) = self.take_current() {
            return Poll::Ready(Some(u));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(batch)) => {
                self.start(batch);
                Poll::Ready(self.take_current())
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn start(&mut self, batch: Vec<TopicUpdate>) {
        self.current_len = batch.len();
        self.current = batch.into_iter();
    }

    /// The next update of the current batch; taking its last one releases the batch's count.
    fn take_current(&mut self) -> Option<TopicUpdate> {
        let u = self.current.next()?;
        if self.current.len() == 0 {
            self.backlog.taken(std::mem::take(&mut self.current_len));
        }
        Some(u)
    }
}

impl Stream for Subscription {
    type Item = TopicUpdate;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_take(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // What nobody will read no longer holds the session back.
        self.rx.close();
        let mut left = std::mem::take(&mut self.current_len);
        while let Ok(batch) = self.rx.try_recv() {
            left += batch.len();
        }
        if left > 0 {
            self.backlog.taken(left);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tether_protocol::Position;

    use super::*;

    fn updates(range: std::ops::Range<u64>) -> Vec<TopicUpdate> {
        let topic: Arc<str> = Arc::from("a/b");
        range
            .map(|offset| TopicUpdate {
                topic: topic.clone(),
                value: Bytes::from(offset.to_be_bytes().to_vec()),
                position: Position {
                    partition: 1,
                    offset,
                },
                snapshot: false,
            })
            .collect()
    }

    fn offsets(batch: &[TopicUpdate]) -> Vec<u64> {
        batch.iter().map(|u| u.position.offset).collect()
    }

    #[tokio::test]
    async fn batches_go_whole_where_they_fit_split_where_not_and_in_order() {
        let backlog = Arc::new(Backlog::new(1_000));
        let (tx, rx) = mpsc::unbounded_channel();
        let mut sub = Subscription::new("a/b".into(), rx, backlog.clone());
        let send = |batch: Vec<TopicUpdate>| {
            backlog.added(batch.len());
            tx.send(batch).expect("send");
        };

        // One batch that fits: handed over as it is, its allocation included.
        let first = updates(0..5);
        let allocation = first.as_ptr();
        send(first);
        let got = sub.next_batch(8).await.expect("open");
        assert_eq!(offsets(&got), [0, 1, 2, 3, 4]);
        assert_eq!(got.as_ptr(), allocation, "the session's batch, not a copy");
        assert_eq!(backlog.waiting.load(Ordering::SeqCst), 0);

        // Waiting batches join while they fit; the one that does not is split, its rest next.
        send(updates(5..8));
        send(updates(8..10));
        send(updates(10..16));
        send(Vec::new());
        send(updates(16..17));
        let got = sub.next_batch(8).await.expect("open");
        assert_eq!(offsets(&got), [5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(
            backlog.waiting.load(Ordering::SeqCst),
            6 + 1,
            "the split batch counts whole until its last update is taken, the next one too"
        );
        let got = sub.next_batch(2).await.expect("open");
        assert_eq!(offsets(&got), [13, 14]);
        let got = sub.next_batch(8).await.expect("open");
        assert_eq!(offsets(&got), [15, 16], "an empty batch is skipped");
        assert_eq!(backlog.waiting.load(Ordering::SeqCst), 0);

        // A batch larger than the limit, then the subscription's end.
        send(updates(17..20));
        drop(tx);
        assert_eq!(offsets(&sub.next_batch(0).await.expect("open")), [17]);
        assert_eq!(offsets(&sub.next_batch(5).await.expect("open")), [18, 19]);
        assert!(sub.next_batch(5).await.is_none(), "ended");
        assert_eq!(backlog.waiting.load(Ordering::SeqCst), 0);
    }
}
