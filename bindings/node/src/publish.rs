//! Publishes settled in batches: one threadsafe function and one task per session, made when
//! the session opens, instead of a promise, a threadsafe function and a task per publish.
//!
//! `publish` queues the message with the core (`Session::send`, on the JavaScript thread, so
//! messages go out in call order) and hands its completion, numbered, to the session's
//! settler task; `index.js` keeps the promise under that number. The task waits for every
//! completion at once and passes those that are ready, in one call, to JavaScript
//! (`settled` event), which settles their promises.
//!
//! The threadsafe function keeps Node's event loop alive while the session is open (as the
//! session's event function does; `Session.unref()` unrefs both) and, after it closed, until
//! every publish made before is settled; then the task ends and lets go of it.

use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use napi::Status;
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use tether::{Completion, Session};
use tokio::sync::mpsc;

use crate::events::{Event, Tsfn};

/// The threadsafe function that delivers `settled` events (behind a lock: `Session.unref()`
/// needs it exclusively, for a moment; `None` once the settler ended).
type SharedSettle = Arc<Mutex<Option<Tsfn>>>;

/// A session's publishes on their way to being settled.
pub(crate) struct Publisher {
    tx: mpsc::UnboundedSender<(u32, Completion)>,
    tsfn: SharedSettle,
}

impl Publisher {
    /// Starts the settler task of `session` on Tether's runtime.
    pub(crate) fn start(session: &Session, tsfn: Tsfn) -> Result<Publisher, std::io::Error> {
        let handle = tether::runtime::handle()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let tsfn = Arc::new(Mutex::new(Some(tsfn)));
        handle.spawn(settle(session.clone(), rx, tsfn.clone()));
        Ok(Publisher { tx, tsfn })
    }

    /// Hands publish `id`'s completion to the settler (`Ok`). If the settler has ended (the
    /// session closed and everything before was settled, a moment ago), the outcome now
    /// (`Err`): the completion's own if it is known already, else `outcome_unknown` (the
    /// publish was queued as the session closed: it may have been applied).
    pub(crate) fn settle(
        &self,
        id: u32,
        completion: Completion,
        session: &Session,
    ) -> Result<(), Result<(), tether::Error>> {
        match self.tx.send((id, completion)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError((_, completion))) => {
                Err(completion.now_or_never().unwrap_or_else(|| {
                    Err(tether::Error::OutcomeUnknown {
                        reason: session
                            .close_reason()
                            .unwrap_or(tether::CloseReason::ClosedByClient),
                    })
                }))
            }
        }
    }

    /// `Session.unref()`: the settler's threadsafe function no longer keeps the loop alive.
    pub(crate) fn unref(&self, env: &napi::Env) -> napi::Result<()> {
        let mut guard = self.tsfn.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            #[allow(deprecated)] // the replacement (dropping clones) does not apply: one is kept
            Some(tsfn) => tsfn.unref(env),
            None => Ok(()),
        }
    }
}

/// A publish's number and outcome.
async fn outcome(id: u32, completion: Completion) -> (u32, Result<(), tether::Error>) {
    (id, completion.await)
}

/// Settles publishes until the session is closed and every publish handed over is settled.
async fn settle(
    session: Session,
    mut rx: mpsc::UnboundedReceiver<(u32, Completion)>,
    tsfn: SharedSettle,
) {
    let mut pending = FuturesUnordered::new();
    let mut closed = false;
    let mut rx_open = true;
    let closing = session.closed();
    tokio::pin!(closing);
    loop {
        if closed && pending.is_empty() {
            // Whatever was handed over before the close is in `pending` or the channel.
            rx.close();
            match rx.try_recv() {
                Ok((id, completion)) => {
                    pending.push(outcome(id, completion));
                    continue;
                }
                Err(_) => break,
            }
        }
        tokio::select! {
            received = rx.recv(), if rx_open => match received {
                Some((id, completion)) => pending.push(outcome(id, completion)),
                None => rx_open = false,
            },
            Some(first) = pending.next(), if !pending.is_empty() => {
                let mut batch = vec![first];
                while let Some(Some(more)) = pending.next().now_or_never() {
                    batch.push(more);
                }
                let guard = tsfn.lock().unwrap_or_else(|e| e.into_inner());
                let delivered = guard.as_ref().is_some_and(|t| {
                    t.call(Event::Settled(batch), ThreadsafeFunctionCallMode::NonBlocking)
                        == Status::Ok
                });
                if !delivered {
                    // Node is shutting down: nobody is left to settle for.
                    break;
                }
            },
            _ = &mut closing, if !closed => closed = true,
        }
        if !rx_open && pending.is_empty() {
            break; // the session object is gone
        }
    }
    drop(tsfn.lock().unwrap_or_else(|e| e.into_inner()).take());
}
