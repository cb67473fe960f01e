//! The results thread: one thread of the binding's own that waits for the outcomes of the
//! awaitables (the core's futures: channel receivers, cheap to poll) and hands them to Python
//! in batches, one attachment per batch.
//!
//! The waits are not tasks of Tether's runtime on purpose: `tether.shutdown()` stops that
//! runtime and drops its tasks, and a wait dropped with it would leave its Python future
//! pending forever. Here a wait outlives the runtime and ends with whatever the core reports
//! (the request's outcome, `OutcomeUnknown` when the runtime went away first, ...). The core's
//! futures need no runtime context to be polled.
//!
//! Python is only touched to deliver, through [`exit::attach`], and not at all once the
//! interpreter is exiting.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Wake, Waker};

use pyo3::prelude::*;

use crate::exit;

/// A result on its way to Python: converts it when called (attached), into what settles its
/// future (`None`: nothing to settle, its loop is gone).
pub(crate) type Delivery = Box<dyn for<'py> FnOnce(Python<'py>) -> Option<Settlement> + Send>;

/// A future to settle on its event loop, with its outcome.
pub(crate) struct Settlement {
    pub(crate) event_loop: Py<PyAny>,
    pub(crate) future: Py<PyAny>,
    pub(crate) outcome: Py<PyAny>,
    pub(crate) failed: bool,
}

/// A wait: a future whose output is the delivery of its result.
pub(crate) type Wait = Pin<Box<dyn Future<Output = Delivery> + Send>>;

enum Message {
    Start(u64, Wait),
    Wake(u64),
    /// The Python side stopped waiting: drop the wait.
    Cancel(u64),
}

/// How many messages the thread handles before it delivers what is ready.
const BATCH: usize = 256;

static QUEUE: Mutex<Option<mpsc::Sender<Message>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The results thread's queue, starting the thread on first use.
fn queue() -> std::io::Result<mpsc::Sender<Message>> {
    let mut queue = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = &*queue {
        return Ok(tx.clone());
    }
    let (tx, rx) = mpsc::channel();
    let wakers = tx.clone();
    std::thread::Builder::new()
        .name("tether-python-results".into())
        .spawn(move || run(&rx, &wakers))?;
    *queue = Some(tx.clone());
    Ok(tx)
}

/// A way to start one wait on the results thread (and to cancel it).
pub(crate) struct Slot {
    id: u64,
    tx: mpsc::Sender<Message>,
}

impl Slot {
    /// Reserves a wait, starting the thread if needed.
    pub(crate) fn new() -> std::io::Result<Slot> {
        Ok(Slot {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tx: queue()?,
        })
    }

    /// Starts waiting for `wait`; returns what cancels it.
    pub(crate) fn start(self, wait: Wait) -> Canceller {
        let _ = self.tx.send(Message::Start(self.id, wait));
        Canceller {
            id: self.id,
            tx: self.tx,
        }
    }
}

/// Drops a started wait (if it is still waiting).
pub(crate) struct Canceller {
    id: u64,
    tx: mpsc::Sender<Message>,
}

impl Canceller {
    pub(crate) fn cancel(&self) {
        let _ = self.tx.send(Message::Cancel(self.id));
    }
}

struct Wakeup {
    id: u64,
    tx: mpsc::Sender<Message>,
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self.tx.send(Message::Wake(self.id));
    }
}

fn run(rx: &mpsc::Receiver<Message>, wakers: &mpsc::Sender<Message>) {
    let mut waits: HashMap<u64, Wait> = HashMap::new();
    let mut ready: Vec<Delivery> = Vec::new();
    while let Ok(first) = rx.recv() {
        for message in std::iter::once(first).chain(rx.try_iter().take(BATCH - 1)) {
            let id = match message {
                Message::Start(id, wait) => {
                    waits.insert(id, wait);
                    id
                }
                Message::Wake(id) => id,
                Message::Cancel(id) => {
                    waits.remove(&id);
                    continue;
                }
            };
            let Some(wait) = waits.get_mut(&id) else {
                continue; // done or cancelled already
            };
            let waker = Waker::from(Arc::new(Wakeup {
                id,
                tx: wakers.clone(),
            }));
            let mut cx = Context::from_waker(&waker);
            match std::panic::catch_unwind(AssertUnwindSafe(|| wait.as_mut().poll(&mut cx))) {
                Ok(Poll::Pending) => {}
                Ok(Poll::Ready(delivery)) => {
                    waits.remove(&id);
                    ready.push(delivery);
                }
                // A bug in a wait: it ends (its future stays pending); the others go on.
                Err(_) => {
                    waits.remove(&id);
                }
            }
        }
        if ready.is_empty() {
            continue;
        }
        // Once the interpreter is exiting, results are dropped without touching Python (their
        // Python objects go to pyo3's pool of deferred releases).
        if exit::exiting() {
            ready.clear();
            continue;
        }
        let batch = std::mem::take(&mut ready);
        // One attachment per batch, and one `call_soon_threadsafe` per event loop in it.
        exit::attach(move |py| {
            let settlements: Vec<Settlement> = batch
                .into_iter()
                .filter_map(|delivery| {
                    std::panic::catch_unwind(AssertUnwindSafe(|| delivery(py)))
                        .ok()
                        .flatten()
                })
                .collect();
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                crate::bridge::settle_all(py, settlements)
            }));
        });
    }
}
