//! Everything a session tells JavaScript travels through one threadsafe function per session,
//! so JavaScript sees it in the order the core produced it: state changes, strategy calls,
//! gap reports and subscription updates.
//!
//! The core calls listeners and strategies on the session's callback thread; they only queue
//! an event here (`NonBlocking`) and return, so no Tether thread ever waits for JavaScript and
//! the JavaScript thread never waits for Tether. The JavaScript side decides later, from its
//! own thread, through the [`crate::NativeAttempt`] it was handed.
//!
//! The threadsafe function keeps Node's event loop alive while the session is open. It is
//! released as soon as the session is closed (after the `close` event is queued) and when the
//! last subscription forwarder ends, so a closed session never keeps a process running.
//!
//! Updates are passed on in batches (every update ready when JavaScript has room, in columns:
//! [`JsUpdates`]) and with credit: at most [`WINDOW`] of a subscription's updates are on
//! their way to, or waiting in, JavaScript until the application took them (`consumed`). A
//! consumer slower than the stream thus leaves the rest in the core, whose delivery limit
//! makes the session stop reading: memory stays bounded, and the server's slow-consumer
//! handling ends the connection, the resume reporting the gap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use napi::Env;
use napi::Status;
use napi::bindgen_prelude::{
    Buffer, BufferSlice, Float64Array, Float64ArraySlice, Uint32Array, Uint32ArraySlice,
};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use tether::strategy::{AttemptInfo, ReconnectionStrategy};
use tether::{
    CloseReason, GapReport, ReconnectionAttempt, SessionListener, StateChange, TopicUpdate,
};

use crate::NativeAttempt;
use crate::error::{ErrorInfo, reason_name};

/// What a session reports to JavaScript.
pub(crate) enum Event {
    /// A state transition.
    State(StateChange),
    /// The strategy is asked to decide this attempt.
    Attempt(ReconnectionAttempt),
    /// An attempt the strategy started succeeded (`reason` `None`) or failed (why).
    Outcome {
        info: AttemptInfo,
        reason: Option<CloseReason>,
    },
    /// Messages were lost during an outage (snapshots follow).
    Gap(GapReport),
    /// Updates for local subscription `sub`, in order (a batch: one call into JavaScript).
    Updates { sub: u32, updates: Vec<TopicUpdate> },
    /// Publishes settled (one call into JavaScript per batch).
    Settled(Vec<(u32, Result<(), tether::Error>)>),
    /// Local subscription `sub` will receive nothing more.
    SubscriptionEnd { sub: u32 },
}

/// A batch of topic updates, in columns (`index.js` unpacks them into update objects): a
/// few allocations per batch instead of an object and a buffer per update.
///
/// The columns are copies in memory that V8 allocates, which a garbage collection frees as
/// soon as it finds them unused; the vectors they are built in go back to the allocator at
/// once, for the next batch. Handed over instead (external memory, freed by a finaliser that
/// Node.js runs later), a fast stream's batches kept taking fresh memory, a page fault every
/// 4 KiB: 40 % more page faults, and 36–45 ns more CPU per update, over a stream's first
/// 200,000 updates (BENCHMARKS.md, tenth round).
#[napi(object, object_from_js = false)]
pub struct JsUpdates {
    /// The distinct topic paths of the batch.
    pub topics: Vec<String>,
    /// Every update's value, one after the other.
    pub values: Buffer,
    /// [`META`] numbers per update: index in `topics`, end of its value in `values`,
    /// partition, offset, snapshot (1) or live update (0).
    pub meta: Float64Array,
}

/// Numbers per update in [`JsUpdates::meta`].
pub(crate) const META: usize = 5;

impl JsUpdates {
    fn of(env: &Env, updates: Vec<TopicUpdate>) -> napi::Result<JsUpdates> {
        let mut topics: Vec<String> = Vec::new();
        let mut values = Vec::with_capacity(updates.iter().map(|u| u.value.len()).sum());
        let mut meta = Vec::with_capacity(updates.len() * META);
        for update in updates {
            let index = match topics.iter().rposition(|t| **t == *update.topic) {
                Some(i) => i,
                None => {
                    topics.push(update.topic.to_string());
                    topics.len() - 1
                }
            };
            values.extend_from_slice(&update.value);
            meta.extend_from_slice(&[
                index as f64,
                values.len() as f64,
                f64::from(update.position.partition),
                update.position.offset as f64,
                if update.snapshot { 1.0 } else { 0.0 },
            ]);
        }
        Ok(JsUpdates {
            topics,
            values: BufferSlice::copy_from(env, values)?.into_buffer(env)?,
            meta: Float64ArraySlice::copy_from(env, meta)?.into_typed_array(env)?,
        })
    }
}

/// Publishes that failed, in a batch of settled ones.
#[napi(object, object_from_js = false)]
pub struct JsFailedPublish {
    /// The publish's number (what `publish` returned).
    pub id: u32,
    /// Why.
    pub error: ErrorInfo,
}

/// Publishes settled since the last call: most succeeded, a few may have failed.
#[napi(object, object_from_js = false)]
pub struct JsSettled {
    /// The publishes the server applied.
    pub ok: Uint32Array,
    /// The publishes that failed.
    pub failed: Vec<JsFailedPublish>,
}

impl JsSettled {
    fn of(env: &Env, settled: Vec<(u32, Result<(), tether::Error>)>) -> napi::Result<JsSettled> {
        let mut ok = Vec::with_capacity(settled.len());
        let mut failed = Vec::new();
        for (id, result) in settled {
            match result {
                Ok(()) => ok.push(id),
                Err(e) => failed.push(JsFailedPublish {
                    id,
                    error: ErrorInfo::from(&e),
                }),
            }
        }
        Ok(JsSettled {
            // A copy in V8's memory, as `JsUpdates` has it.
            ok: Uint32ArraySlice::copy_from(env, ok)?.into_typed_array(env)?,
            failed,
        })
    }
}

/// A gap report as JavaScript sees it.
#[napi(object)]
pub struct JsGap {
    /// First lost server sequence number.
    pub lost_from: f64,
    /// Last lost server sequence number (inclusive).
    pub lost_to: f64,
    /// How many messages were lost.
    pub lost_count: f64,
    /// The topics whose updates were lost.
    pub topics: Vec<String>,
}

/// The facts of an attempt that ended, for a strategy's `onSuccess` / `onFailure`.
#[napi(object)]
pub struct JsAttemptInfo {
    /// 1 for the first attempt after a disconnection, then 2, 3, ...
    pub number: u32,
    /// Time since the connection was lost, ms.
    pub elapsed: f64,
    /// Time left before the reconnection timeout, ms.
    pub remaining: f64,
    /// Why the connection was lost (first attempt) or why the previous attempt failed.
    pub reason: String,
    /// The server's retry-after hint, ms, when it gave one.
    pub retry_after: Option<f64>,
}

/// One event, flattened for the JavaScript dispatcher (`type` says which fields are set).
#[napi(object, object_from_js = false)]
pub struct JsEvent {
    /// `state`, `attempt`, `success`, `failure`, `gap`, `updates`, `end` or `settled`.
    pub r#type: String,
    /// `state`: the state left (`CONNECTED_ACTIVE`, ...).
    pub old: Option<String>,
    /// `state`: the state entered.
    pub new: Option<String>,
    /// `state`: why (disconnections and closings); `attempt`: the last disconnection or
    /// failure reason; `failure`: why the attempt failed.
    pub reason: Option<String>,
    /// `attempt`: the attempt to decide.
    pub attempt: Option<NativeAttempt>,
    /// `updates`, `end`: the local subscription.
    pub sub: Option<u32>,
    /// `updates`: the updates.
    pub updates: Option<JsUpdates>,
    /// `settled`: the publishes settled.
    pub settled: Option<JsSettled>,
    /// `gap`: the report.
    pub gap: Option<JsGap>,
    /// `success`, `failure`: the attempt's facts.
    pub info: Option<JsAttemptInfo>,
}

impl JsEvent {
    fn empty(kind: &str) -> JsEvent {
        JsEvent {
            r#type: kind.to_owned(),
            old: None,
            new: None,
            reason: None,
            attempt: None,
            sub: None,
            updates: None,
            settled: None,
            gap: None,
            info: None,
        }
    }

    /// The event as JavaScript gets it; runs on the JavaScript thread (`env`'s).
    fn new(env: &Env, event: Event) -> napi::Result<JsEvent> {
        Ok(match event {
            Event::State(change) => JsEvent {
                old: Some(change.old.as_str().to_owned()),
                new: Some(change.new.as_str().to_owned()),
                reason: reason_name(change.reason),
                ..JsEvent::empty("state")
            },
            Event::Attempt(attempt) => JsEvent {
                reason: Some(attempt.last_reason().as_str().to_owned()),
                attempt: Some(NativeAttempt::new(attempt)),
                ..JsEvent::empty("attempt")
            },
            Event::Outcome { info, reason } => JsEvent {
                reason: reason.map(|r| r.as_str().to_owned()),
                info: Some(JsAttemptInfo {
                    number: info.number,
                    elapsed: info.elapsed.as_secs_f64() * 1000.0,
                    remaining: info.remaining.as_secs_f64() * 1000.0,
                    reason: info.last_reason.as_str().to_owned(),
                    retry_after: info.retry_after.map(|d| d.as_secs_f64() * 1000.0),
                }),
                ..JsEvent::empty(if reason.is_some() {
                    "failure"
                } else {
                    "success"
                })
            },
            Event::Gap(report) => JsEvent {
                gap: Some(JsGap {
                    lost_from: report.lost_from as f64,
                    lost_to: report.lost_to as f64,
                    lost_count: report.lost_count() as f64,
                    topics: report.topics.into_iter().map(|(t, _)| t).collect(),
                }),
                ..JsEvent::empty("gap")
            },
            Event::Updates { sub, updates } => JsEvent {
                sub: Some(sub),
                updates: Some(JsUpdates::of(env, updates)?),
                ..JsEvent::empty("updates")
            },
            Event::Settled(settled) => JsEvent {
                settled: Some(JsSettled::of(env, settled)?),
                ..JsEvent::empty("settled")
            },
            Event::SubscriptionEnd { sub } => JsEvent {
                sub: Some(sub),
                ..JsEvent::empty("end")
            },
        })
    }
}

/// The session's threadsafe function: JavaScript receives one [`JsEvent`] per call.
pub(crate) type Tsfn = ThreadsafeFunction<Event, (), JsEvent, Status, false>;

/// The threadsafe function shared by the sink and the subscription forwarders (behind a lock:
/// `Session.unref()` needs it exclusively, for a moment).
pub(crate) type SharedTsfn = Arc<Mutex<Tsfn>>;

/// Queues `event` on a shared threadsafe function; whether JavaScript can still receive it.
pub(crate) fn call(tsfn: &SharedTsfn, event: Event) -> bool {
    tsfn.lock()
        .unwrap_or_else(|e| e.into_inner())
        .call(event, ThreadsafeFunctionCallMode::NonBlocking)
        == Status::Ok
}

/// Builds the threadsafe function that calls `dispatch` on the JavaScript thread.
pub(crate) fn event_function(
    dispatch: &napi::bindgen_prelude::Function<'_, JsEvent, ()>,
) -> napi::Result<Tsfn> {
    dispatch
        .build_threadsafe_function::<Event>()
        .callee_handled::<false>()
        .build_callback(
            |ctx: napi::threadsafe_function::ThreadsafeCallContext<Event>| {
                JsEvent::new(&ctx.env, ctx.value)
            },
        )
}

/// Most updates of one subscription passed to JavaScript and not yet taken by the application:
/// several batches, so that the next one is on its way while JavaScript handles one (with one
/// batch in flight, each side waited for the other). Milliseconds of a fast stream: on a busy
/// machine JavaScript's thread can wait that long for a core, and a smaller window (2,048)
/// left the session's threads waiting for it in turn.
pub(crate) const WINDOW: usize = 16 * 1024;

/// Most updates in one batch (one call into JavaScript): about what one WebSocket message of a
/// stream carries (64 KiB of 100-byte updates is about 500), so that a batch is seldom split.
const BATCH: usize = 2048;

/// A subscription's credit: updates in JavaScript not yet consumed, and a wake-up for its
/// forwarder.
#[derive(Default)]
pub(crate) struct Credit {
    in_flight: AtomicUsize,
    /// Set once the session closed: the forwarder stops waiting for credit and flushes.
    unlimited: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Credit {
    /// The application took `count` updates.
    pub(crate) fn consumed(&self, count: usize) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(count))
            });
        self.wake.notify_one();
    }

    fn open(&self) {
        self.unlimited.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Waits until more updates may go to JavaScript; how many (at most [`WINDOW`]).
    async fn room(&self) -> usize {
        loop {
            if self.unlimited.load(Ordering::SeqCst) {
                return WINDOW;
            }
            let in_flight = self.in_flight.load(Ordering::SeqCst);
            if in_flight < WINDOW {
                return WINDOW - in_flight;
            }
            // `notify_one` leaves a permit when nobody waits: no wake-up is lost.
            self.wake.notified().await;
        }
    }

    /// `count` more updates went to JavaScript.
    fn took(&self, count: usize) {
        self.in_flight.fetch_add(count, Ordering::SeqCst);
    }
}

/// Queues events for JavaScript until the session closes, then lets go of the threadsafe
/// function (the subscription forwarders hold clones of their own until their streams end).
#[derive(Clone)]
pub(crate) struct EventSink {
    tsfn: Arc<Mutex<Option<SharedTsfn>>>,
    /// The credit of each local subscription.
    credits: Arc<Mutex<HashMap<u32, Arc<Credit>>>>,
}

impl EventSink {
    pub(crate) fn new(tsfn: Tsfn) -> EventSink {
        EventSink {
            tsfn: Arc::new(Mutex::new(Some(Arc::new(Mutex::new(tsfn))))),
            credits: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The credit of local subscription `sub` (made on first use).
    pub(crate) fn credit(&self, sub: u32) -> Arc<Credit> {
        let mut credits = self.credits.lock().unwrap_or_else(|e| e.into_inner());
        let credit = credits.entry(sub).or_default().clone();
        if self
            .tsfn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            credit.open();
        }
        credit
    }

    /// The application took `count` updates of local subscription `sub`.
    pub(crate) fn consumed(&self, sub: u32, count: usize) {
        let credit = self
            .credits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sub)
            .cloned();
        if let Some(credit) = credit {
            credit.consumed(count);
        }
    }

    /// Local subscription `sub` ended: forget its credit.
    fn forget(&self, sub: u32) {
        self.credits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sub);
    }

    /// Queues `event`; `false` if JavaScript can no longer receive it (the session closed, or
    /// the Node environment is shutting down).
    pub(crate) fn send(&self, event: Event) -> bool {
        let guard = self.tsfn.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(tsfn) => call(tsfn, event),
            None => false,
        }
    }

    /// A clone of the threadsafe function, for a forwarder that outlives the close event.
    pub(crate) fn share(&self) -> Option<SharedTsfn> {
        self.tsfn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .cloned()
    }

    /// Stops the threadsafe function from keeping Node's event loop alive (`Session.unref()`):
    /// events are still delivered while the loop runs for other reasons.
    pub(crate) fn unref(&self, env: &napi::Env) -> napi::Result<()> {
        let guard = self.tsfn.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tsfn) = guard.as_ref() else {
            return Ok(());
        };
        // The forwarders share this very threadsafe function, so one call covers them.
        #[allow(deprecated)] // the replacement (dropping clones) does not apply: one is kept
        tsfn.lock().unwrap_or_else(|e| e.into_inner()).unref(env)
    }

    /// Lets go of the threadsafe function: events already queued are still delivered, and the
    /// forwarders flush what is left without waiting for credit (so that they end, and let go
    /// of their clones).
    pub(crate) fn release(&self) {
        let tsfn = self.tsfn.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(tsfn);
        for credit in self
            .credits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            credit.open();
        }
    }
}

/// The session listener: forwards state changes and gap reports, and releases the sink once
/// the session is closed.
pub(crate) struct Forwarder {
    pub(crate) sink: EventSink,
}

impl SessionListener for Forwarder {
    fn on_state_changed(&self, change: &StateChange) {
        self.sink.send(Event::State(*change));
        if change.new.is_closed() {
            self.sink.release();
        }
    }

    fn on_gap(&self, report: &GapReport) {
        self.sink.send(Event::Gap(report.clone()));
    }
}

/// A strategy written in JavaScript: each attempt is handed to it on the JavaScript thread,
/// and it decides through the attempt's `start()` / `abort()`, then or later.
pub(crate) struct JsStrategy {
    pub(crate) sink: EventSink,
}

impl ReconnectionStrategy for JsStrategy {
    fn on_success(&self, attempt: &AttemptInfo) {
        self.sink.send(Event::Outcome {
            info: attempt.clone(),
            reason: None,
        });
    }

    fn on_failure(&self, attempt: &AttemptInfo, reason: CloseReason) {
        self.sink.send(Event::Outcome {
            info: attempt.clone(),
            reason: Some(reason),
        });
    }

    fn perform_reconnection(&self, attempt: ReconnectionAttempt) {
        if !self.sink.send(Event::Attempt(attempt.clone())) {
            // Nobody is left to decide (Node is shutting down): give up rather than wait for
            // the reconnection timeout.
            attempt.abort();
        }
    }
}

/// Sends a subscription's updates to JavaScript in order, within its credit, then its end:
/// every update ready when JavaScript has room goes in one batch (one call into JavaScript).
pub(crate) async fn forward_updates(
    sink: EventSink,
    tsfn: SharedTsfn,
    sub: u32,
    mut updates: tether::Subscription,
) {
    let credit = sink.credit(sub);
    loop {
        let room = credit.room().await.min(BATCH);
        let Some(batch) = updates.next_batch(room).await else {
            break;
        };
        credit.took(batch.len());
        if !call(
            &tsfn,
            Event::Updates {
                sub,
                updates: batch,
            },
        ) {
            sink.forget(sub);
            return;
        }
    }
    call(&tsfn, Event::SubscriptionEnd { sub });
    sink.forget(sub);
}
