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

use std::sync::{Arc, Mutex};

use napi::Status;
use napi::bindgen_prelude::Buffer;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use tether::strategy::ReconnectionStrategy;
use tether::{GapReport, ReconnectionAttempt, SessionListener, StateChange, TopicUpdate};

use crate::NativeAttempt;
use crate::error::reason_name;

/// What a session reports to JavaScript.
pub(crate) enum Event {
    /// A state transition.
    State(StateChange),
    /// The strategy is asked to decide this attempt.
    Attempt(ReconnectionAttempt),
    /// Messages were lost during an outage (snapshots follow).
    Gap(GapReport),
    /// An update for local subscription `sub`.
    Update { sub: u32, update: TopicUpdate },
    /// Local subscription `sub` will receive nothing more.
    SubscriptionEnd { sub: u32 },
}

/// A topic update as JavaScript sees it.
#[napi(object)]
pub struct JsUpdate {
    /// The topic path.
    pub topic: String,
    /// The value's bytes.
    pub value: Buffer,
    /// `true` for a current value sent as a snapshot, `false` for a live update.
    pub snapshot: bool,
    /// The update's partition in the topic log.
    pub partition: u32,
    /// The update's offset in that partition.
    pub offset: f64,
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

/// One event, flattened for the JavaScript dispatcher (`type` says which fields are set).
#[napi(object, object_from_js = false)]
pub struct JsEvent {
    /// `state`, `attempt`, `gap`, `update` or `end`.
    pub r#type: String,
    /// `state`: the state left (`CONNECTED_ACTIVE`, ...).
    pub old: Option<String>,
    /// `state`: the state entered.
    pub new: Option<String>,
    /// `state`: why (disconnections and closings); `attempt`: the last disconnection or
    /// failure reason.
    pub reason: Option<String>,
    /// `attempt`: the attempt to decide.
    pub attempt: Option<NativeAttempt>,
    /// `update`, `end`: the local subscription.
    pub sub: Option<u32>,
    /// `update`: the update.
    pub update: Option<JsUpdate>,
    /// `gap`: the report.
    pub gap: Option<JsGap>,
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
            update: None,
            gap: None,
        }
    }
}

impl From<Event> for JsEvent {
    fn from(event: Event) -> JsEvent {
        match event {
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
            Event::Gap(report) => JsEvent {
                gap: Some(JsGap {
                    lost_from: report.lost_from as f64,
                    lost_to: report.lost_to as f64,
                    lost_count: report.lost_count() as f64,
                    topics: report.topics.into_iter().map(|(t, _)| t).collect(),
                }),
                ..JsEvent::empty("gap")
            },
            Event::Update { sub, update } => JsEvent {
                sub: Some(sub),
                update: Some(JsUpdate {
                    topic: update.topic,
                    value: Buffer::from(update.value.to_vec()),
                    snapshot: update.snapshot,
                    partition: update.position.partition,
                    offset: update.position.offset as f64,
                }),
                ..JsEvent::empty("update")
            },
            Event::SubscriptionEnd { sub } => JsEvent {
                sub: Some(sub),
                ..JsEvent::empty("end")
            },
        }
    }
}

/// The session's threadsafe function: JavaScript receives one [`JsEvent`] per call.
pub(crate) type Tsfn = ThreadsafeFunction<Event, (), JsEvent, Status, false>;

/// Builds the threadsafe function that calls `dispatch` on the JavaScript thread.
pub(crate) fn event_function(
    dispatch: napi::bindgen_prelude::Function<'_, JsEvent, ()>,
) -> napi::Result<Tsfn> {
    dispatch
        .build_threadsafe_function::<Event>()
        .callee_handled::<false>()
        .build_callback(
            |ctx: napi::threadsafe_function::ThreadsafeCallContext<Event>| {
                Ok(JsEvent::from(ctx.value))
            },
        )
}

/// Queues events for JavaScript until the session closes, then lets go of the threadsafe
/// function (the subscription forwarders hold clones of their own until their streams end).
#[derive(Clone)]
pub(crate) struct EventSink {
    tsfn: Arc<Mutex<Option<Arc<Tsfn>>>>,
}

impl EventSink {
    pub(crate) fn new(tsfn: Tsfn) -> EventSink {
        EventSink {
            tsfn: Arc::new(Mutex::new(Some(Arc::new(tsfn)))),
        }
    }

    /// Queues `event`; `false` if JavaScript can no longer receive it (the session closed, or
    /// the Node environment is shutting down).
    pub(crate) fn send(&self, event: Event) -> bool {
        let guard = self.tsfn.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(tsfn) => tsfn.call(event, ThreadsafeFunctionCallMode::NonBlocking) == Status::Ok,
            None => false,
        }
    }

    /// A clone of the threadsafe function, for a forwarder that outlives the close event.
    pub(crate) fn share(&self) -> Option<Arc<Tsfn>> {
        self.tsfn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .cloned()
    }

    /// Lets go of the threadsafe function: events already queued are still delivered.
    pub(crate) fn release(&self) {
        let tsfn = self.tsfn.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(tsfn);
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
    fn perform_reconnection(&self, attempt: ReconnectionAttempt) {
        if !self.sink.send(Event::Attempt(attempt.clone())) {
            // Nobody is left to decide (Node is shutting down): give up rather than wait for
            // the reconnection timeout.
            attempt.abort();
        }
    }
}

/// Sends a subscription's updates to JavaScript in order, then its end.
pub(crate) async fn forward_updates(tsfn: Arc<Tsfn>, sub: u32, mut updates: tether::Subscription) {
    while let Some(update) = updates.next().await {
        if tsfn.call(
            Event::Update { sub, update },
            ThreadsafeFunctionCallMode::NonBlocking,
        ) != Status::Ok
        {
            return;
        }
    }
    tsfn.call(
        Event::SubscriptionEnd { sub },
        ThreadsafeFunctionCallMode::NonBlocking,
    );
}
