//! `SESSION_T`: create, close, free, state, id, subscribe, publish; and `tether_shutdown`.

use std::cell::Cell;
use std::ffi::{CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tether::strategy::AttemptInfo;
use tether::{
    CloseReason, Completion, GapReport, Session, SessionId, SessionListener, StateChange,
    TopicUpdate,
};
use tether_protocol::Selector;
use tracing::warn;

use crate::boundary::{boundary, panic_message};
use crate::credentials::Credentials;
use crate::error::{ErrorC, FfiError, TETHER_ERROR_NONE};
use crate::options::{GapCb, GapReportC, PublishDoneCb, SessionOptionsC, TopicLossC};
use crate::state::{SESSION_STATE_UNKNOWN, SessionStateValue, reason_name, state_value};
use crate::strategy::{DEFAULT_STRATEGY, ReconnectionStrategyC};
use crate::strings::{arg_bytes, arg_str, malloc_string, opt_str};

/// A user pointer (`args`, `context`) handed back to C callbacks.
///
/// The library never dereferences it; it only passes it back to the user's own callbacks, on
/// the session's callback thread. The C API documents that such pointers must be usable from
/// that thread, which is what makes moving the address between threads sound.
#[derive(Clone, Copy)]
pub(crate) struct UserData(pub(crate) *mut c_void);

// SAFETY: see the type's documentation: an address passed through, never dereferenced here.
unsafe impl Send for UserData {}
// SAFETY: as above; sharing the address is no more than copying it.
unsafe impl Sync for UserData {}

impl UserData {
    /// The address (a method, so closures capture the whole `Send` wrapper, not the field).
    pub(crate) fn ptr(self) -> *mut c_void {
        self.0
    }
}

/// Called on every state change of a session, with the state left and the state entered, on
/// the session's callback thread (one callback at a time, in order, never an async worker).
/// `session` is valid during the call. The first call (`CONNECTING` → `CONNECTED_ACTIVE`)
/// comes after `session_create` has returned.
pub type StateChangedCb = Option<
    unsafe extern "C" fn(
        session: *mut SessionHandle,
        old_state: SessionStateValue,
        new_state: SessionStateValue,
    ),
>;

/// Receives a session's state changes. Passed by pointer to `session_create`, which copies it:
/// the struct itself may live on the caller's stack.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SessionListenerC {
    /// Called on every state change; may be NULL.
    pub on_state_changed: StateChangedCb,
    /// Your pointer, returned by `session_listener_context`; never read by the library. May be
    /// NULL. Must stay valid until `session_free` returns if your callbacks use it.
    pub context: *mut c_void,
}

/// Called with every update of a subscription: the topic path (NUL-terminated UTF-8), the
/// value's bytes and length, and the `context` given to `session_subscribe`. On the session's
/// callback thread, in order. `topic` and `value` belong to the library and are valid only
/// during the call (copy what you keep); `value` may contain any bytes, NULs included.
pub type TopicHandler = Option<
    unsafe extern "C" fn(
        topic: *const c_char,
        value: *const c_void,
        length: usize,
        context: *mut c_void,
    ),
>;

/// A session's id: 16 bytes, the same across every reconnection. Opaque.
///
/// Ownership: the session owns it; the pointer from `session_id_get` is valid until
/// `session_free` returns. Do not free it.
pub struct SessionIdC(SessionId);

/// A session with a Tether server. Opaque: use the `session_*` functions.
///
/// Ownership: returned by `session_create`, owned by the caller, released with `session_free`
/// (which closes it first if needed). Every `session_*` function may be called from any thread,
/// but not concurrently with `session_free` of the same session. Callbacks receive this same
/// pointer, valid during the callback.
pub struct SessionHandle {
    /// This handle, for callbacks that must not keep it alive.
    me: Weak<SessionHandle>,
    session: Mutex<Option<Session>>,
    id: OnceLock<SessionIdC>,
    on_state_changed: StateChangedCb,
    context: UserData,
    /// `session_create` has finished (callbacks wait for it, so they always see a complete
    /// handle), and whether it succeeded.
    created: Mutex<Created>,
    created_cv: Condvar,
    /// Held while a C callback of this session runs: `session_free` and `session_unsubscribe`
    /// take it to wait for a callback in flight.
    gate: Mutex<()>,
    freed: AtomicBool,
    /// The listener has been told of the closed state (or never will be: see
    /// [`tether_shutdown`]).
    closed_seen: Mutex<bool>,
    closed_cv: Condvar,
    subscriptions: Mutex<Vec<Arc<CSubscription>>>,
    /// The facts of the latest reconnection attempt handed to the strategy (see
    /// `session_reconnection_attempt_get`).
    attempt: Mutex<Option<AttemptInfo>>,
    /// The runtime generation the session runs on (see [`SHUTDOWNS`]).
    generation: u64,
    /// `SESSION_OPTIONS_T.on_gap`.
    on_gap: GapCb,
    /// The reason of the latest state change given to the listener (see
    /// `session_state_change_reason`).
    change_reason: Mutex<Option<CloseReason>>,
    /// The sends whose completion callbacks are still to run, in order (see `session_send`);
    /// `None` until the first send, and again once the session is freed.
    sends: Mutex<Option<tokio::sync::mpsc::UnboundedSender<PendingSend>>>,
    /// Whether the task running the completion callbacks has finished (or never started).
    sends_done: Arc<(Mutex<bool>, Condvar)>,
}

/// A queued publish and the callback that wants its outcome.
struct PendingSend {
    completion: Completion,
    on_done: PublishDoneCb,
    context: UserData,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Created {
    Pending,
    Ready,
    Failed,
}

struct CSubscription {
    selector: Selector,
    active: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// The session whose C callback this thread is running (0: none).
    static IN_CALLBACK: Cell<usize> = const { Cell::new(0) };
}

fn in_any_callback() -> bool {
    IN_CALLBACK.with(|c| c.get() != 0)
}

/// How many times `tether_shutdown` stopped the runtime: a session of an older generation has
/// lost its runtime and is closed.
static SHUTDOWNS: AtomicU64 = AtomicU64::new(0);

/// Live sessions, so `tether_shutdown` can release anyone waiting on one.
static HANDLES: Mutex<Vec<Weak<SessionHandle>>> = Mutex::new(Vec::new());

impl SessionHandle {
    fn addr(&self) -> usize {
        self as *const SessionHandle as usize
    }

    fn in_own_callback(&self) -> bool {
        IN_CALLBACK.with(|c| c.get() == self.addr())
    }

    fn session(&self) -> Option<Session> {
        lock(&self.session).clone()
    }

    /// Remembers the facts of the attempt the strategy is being handed (or that just ended).
    pub(crate) fn record_attempt(&self, info: &AttemptInfo) {
        *lock(&self.attempt) = Some(info.clone());
    }

    /// The facts of the latest reconnection attempt, if there was one.
    pub(crate) fn latest_attempt(&self) -> Option<AttemptInfo> {
        lock(&self.attempt).clone()
    }

    fn set_created(&self, state: Created) {
        *lock(&self.created) = state;
        self.created_cv.notify_all();
    }

    fn wait_created(&self) -> bool {
        let mut created = lock(&self.created);
        while *created == Created::Pending {
            created = self
                .created_cv
                .wait(created)
                .unwrap_or_else(|e| e.into_inner());
        }
        *created == Created::Ready
    }

    fn set_closed_seen(&self) {
        *lock(&self.closed_seen) = true;
        self.closed_cv.notify_all();
    }

    /// Waits until the listener has been told of the closed state, unless this thread is
    /// running one of the session's callbacks (the notification is queued behind it).
    fn wait_closed_seen(&self) {
        if self.in_own_callback() {
            return;
        }
        let mut seen = lock(&self.closed_seen);
        while !*seen {
            seen = self.closed_cv.wait(seen).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits for a C callback of this session in flight, unless it is the caller's own.
    fn wait_callback_in_flight(&self) {
        if !self.in_own_callback() {
            drop(lock(&self.gate));
        }
    }

    /// Runs a C callback of this session (`f` gets the `SESSION_T *`), unless the session is
    /// being freed or `allowed` says no. Waits until `session_create` has returned.
    pub(crate) fn run_callback<R>(
        &self,
        allowed: impl Fn() -> bool,
        f: impl FnOnce(*mut SessionHandle) -> R,
    ) -> Option<R> {
        if !self.wait_created() {
            return None;
        }
        let _gate = lock(&self.gate);
        if self.freed.load(Ordering::SeqCst) || !allowed() {
            return None;
        }
        let me = self.addr();
        let previous = IN_CALLBACK.with(|c| c.replace(me));
        let result = catch_unwind(AssertUnwindSafe(|| f(me as *mut SessionHandle)));
        IN_CALLBACK.with(|c| c.set(previous));
        match result {
            Ok(r) => Some(r),
            Err(panic) => {
                warn!(panic = %panic_message(panic.as_ref()), "a callback wrapper panicked");
                None
            }
        }
    }

    /// Closes the session (if its runtime still runs) and waits until the listener has been
    /// told.
    fn close(&self) -> Result<(), FfiError> {
        let Some(session) = self.session() else {
            return Ok(());
        };
        if !session.state().is_closed() && self.generation == SHUTDOWNS.load(Ordering::SeqCst) {
            block_on(session.close())?;
        }
        if session.state().is_closed() {
            self.wait_closed_seen();
        }
        Ok(())
    }
}

impl SessionHandle {
    /// The queue of the completion callbacks of `session_send`, started at the first send: one
    /// task awaits the completions in order and runs each callback on a blocking-pool thread.
    fn sends(&self) -> Result<tokio::sync::mpsc::UnboundedSender<PendingSend>, FfiError> {
        let mut sends = lock(&self.sends);
        if let Some(tx) = sends.as_ref() {
            return Ok(tx.clone());
        }
        let runtime = tether::runtime::handle()?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PendingSend>();
        *lock(&self.sends_done.0) = false;
        /// Says the task is over, however it ends (a runtime shut down drops it).
        struct Done(Arc<(Mutex<bool>, Condvar)>);
        impl Drop for Done {
            fn drop(&mut self) {
                *lock(&self.0.0) = true;
                self.0.1.notify_all();
            }
        }
        let done = Done(self.sends_done.clone());
        let me = self.addr();
        runtime.spawn(async move {
            let _done = done;
            while let Some(pending) = rx.recv().await {
                let outcome = pending.completion.await;
                let Some(cb) = pending.on_done else {
                    continue;
                };
                let context = pending.context;
                let (code, message) = match outcome {
                    Ok(()) => (TETHER_ERROR_NONE, None),
                    Err(e) => {
                        let e = FfiError::from(e);
                        (e.code(), CString::new(e.to_string()).ok())
                    }
                };
                let call = move || {
                    let previous = IN_CALLBACK.with(|c| c.replace(me));
                    let message = message.as_ref().map_or(std::ptr::null(), |m| m.as_ptr());
                    // SAFETY: the user's callback with its own context, as documented; the
                    // message lives across the call.
                    let result =
                        catch_unwind(AssertUnwindSafe(|| unsafe { cb(context.ptr(), code, message) }));
                    IN_CALLBACK.with(|c| c.set(previous));
                    if let Err(panic) = result {
                        warn!(panic = %panic_message(panic.as_ref()), "a send callback wrapper panicked");
                    }
                };
                let _ = tokio::task::spawn_blocking(call).await;
            }
        });
        *sends = Some(tx.clone());
        Ok(tx)
    }

    /// Ends the queue of send callbacks and waits until every one has run (not from one of
    /// them, and not once `tether_shutdown` stopped the runtime that runs them).
    fn finish_sends(&self) {
        let had = lock(&self.sends).take().is_some();
        if !had || self.in_own_callback() || self.generation != SHUTDOWNS.load(Ordering::SeqCst) {
            return;
        }
        let (flag, cv) = &*self.sends_done;
        let mut done = lock(flag);
        while !*done {
            done = cv.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Runs a future of the core from this (non-async) thread on Tether's runtime.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, FfiError> {
    let handle = tether::runtime::handle()?;
    Ok(handle.block_on(f))
}

impl SessionHandle {
    /// Runs a request of this session (`block_on`). The session of a runtime that
    /// `tether_shutdown` stopped is closed, so its requests fail at their first poll: they
    /// are answered without starting a fresh runtime just for that (threads nobody would
    /// shut down, a process exiting from a handler while other threads publish, say).
    fn run<F: std::future::Future>(&self, f: F) -> Result<F::Output, FfiError> {
        let mut f = std::pin::pin!(f);
        if self.generation != SHUTDOWNS.load(Ordering::SeqCst) {
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                return Ok(out);
            }
        }
        block_on(f)
    }
}

/// The session behind a pointer from C.
///
/// # Safety
/// `session` is NULL or a live pointer from `session_create`, not freed during `'a`.
pub(crate) unsafe fn handle_ref<'a>(
    session: *const SessionHandle,
) -> Result<&'a SessionHandle, FfiError> {
    // SAFETY: per the contract, NULL or a live handle.
    unsafe { session.as_ref() }.ok_or(FfiError::NullArgument("session"))
}

/// The core listener of a C session: tells the C listener, then records closed states.
struct FfiListener {
    session: Weak<SessionHandle>,
}

impl SessionListener for FfiListener {
    fn on_state_changed(&self, change: &StateChange) {
        let Some(h) = self.session.upgrade() else {
            return;
        };
        *lock(&h.change_reason) = change.reason;
        if let Some(cb) = h.on_state_changed {
            let (old, new) = (state_value(change.old), state_value(change.new));
            // SAFETY: the user's callback, called as documented with a session valid during
            // the call.
            h.run_callback(|| true, |session| unsafe { cb(session, old, new) });
        }
        if change.new.is_closed() {
            h.set_closed_seen();
        }
    }

    fn on_gap(&self, report: &GapReport) {
        let Some(h) = self.session.upgrade() else {
            return;
        };
        let Some(cb) = h.on_gap else {
            return;
        };
        let names: Vec<CString> = report
            .topics
            .iter()
            .filter_map(|(t, _)| CString::new(t.as_str()).ok())
            .collect();
        let topics: Vec<TopicLossC> = report
            .topics
            .iter()
            .filter(|(t, _)| !t.contains('\0'))
            .zip(&names)
            .map(|((_, count), name)| TopicLossC {
                topic: name.as_ptr(),
                count: *count,
            })
            .collect();
        let c_report = GapReportC {
            lost_from: report.lost_from,
            lost_to: report.lost_to,
            lost_count: report.lost_count(),
            topics: topics.as_ptr(),
            topic_count: topics.len(),
        };
        // SAFETY: the user's callback, called as documented: the session and the report (with
        // the names it points to, alive in this frame) are valid during the call.
        h.run_callback(|| true, |session| unsafe { cb(session, &c_report) });
    }
}

fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if let Ok(filter) = std::env::var("TETHER_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .try_init();
        }
    });
}

/// Opens a session, synchronously: connects to `url` (`ws://host:port[/path]`, or `wss://` for
/// TLS), authenticates and returns once the session is `CONNECTED_ACTIVE`, or returns NULL and
/// fills `error`.
///
/// - `url`: required. `principal`: NULL for anonymous. `credentials`: NULL for none (a
///   password needs a principal).
/// - `listener`: NULL for none; copied (its `context` pointer is not: see
///   `SESSION_LISTENER_T`). Its first call (`CONNECTING` → `CONNECTED_ACTIVE`) comes after
///   `session_create` returns; a failed `session_create` makes no callback at all.
/// - `strategy`: NULL for the default strategy (first attempt within 100 ms, then exponential
///   backoff with full jitter from 250 ms to 10 s) and timeout (60 s); copied.
///
/// Every string argument is read during the call only; `credentials` and `strategy` may be
/// freed as soon as it returns. The caller owns the returned session and releases it with
/// `session_free`. `session_create_with_urls` takes several servers.
///
/// Errors: `TETHER_ERROR_NULL_ARGUMENT` / `_INVALID_UTF8` (naming the argument),
/// `_INVALID_URL`, `_INVALID_ARGUMENT`, `_CONNECTION_FAILED`, `_AUTHENTICATION_FAILED`,
/// `_RUNTIME`.
///
/// # Safety
/// String arguments are NULL or NUL-terminated; the other pointers are NULL or point to live
/// objects of their type; `error` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_create(
    url: *const c_char,
    principal: *const c_char,
    credentials: *const Credentials,
    listener: *const SessionListenerC,
    strategy: *const ReconnectionStrategyC,
    error: *mut ErrorC,
) -> *mut SessionHandle {
    boundary(error, std::ptr::null_mut(), || {
        // SAFETY: NULL or NUL-terminated, valid during this call, per the contract.
        let url = unsafe { arg_str(url, "url") }?;
        // SAFETY: forwarded from this function's own contract.
        unsafe { create(&[url], principal, credentials, listener, strategy, None) }
    })
}

/// As `session_create`, with several server URLs: `urls` points to `url_count` (at least one)
/// NUL-terminated URLs, all serving the same sessions (one server restarted in place, or the
/// nodes of a cluster). Opening tries them in order until one answers; reconnection attempts
/// rotate through them: an attempt goes back to the server the session was on, then tries the
/// next; after a server asked the session to go away (`"server_draining"`), the first attempt
/// tries the next. The array and its strings are read during the call only.
///
/// Errors: as `session_create`; `TETHER_ERROR_NULL_ARGUMENT` for a NULL `urls` or URL,
/// `_INVALID_ARGUMENT` for a `url_count` of 0, `_INVALID_URL` when any URL is not usable.
///
/// # Safety
/// `urls` is NULL or points to `url_count` pointers, each NULL or NUL-terminated; the other
/// arguments as `session_create`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_create_with_urls(
    urls: *const *const c_char,
    url_count: usize,
    principal: *const c_char,
    credentials: *const Credentials,
    listener: *const SessionListenerC,
    strategy: *const ReconnectionStrategyC,
    error: *mut ErrorC,
) -> *mut SessionHandle {
    // SAFETY: the same contract, with the default options.
    unsafe {
        session_create_with_options(
            urls,
            url_count,
            principal,
            credentials,
            listener,
            strategy,
            std::ptr::null(),
            error,
        )
    }
}

/// As `session_create_with_urls`, with `options` (NULL: the defaults; see `SESSION_OPTIONS_T`):
/// TLS roots, the ping period, the delivery limit, strict mode, the send queue, the close and
/// connect timeouts, and a gap report callback. `options` is copied; its strings are read
/// during the call only.
///
/// Errors: as `session_create_with_urls`; `TETHER_ERROR_INVALID_UTF8` for a PEM that is not
/// UTF-8, `_INVALID_ARGUMENT` for one without a certificate.
///
/// # Safety
/// As `session_create_with_urls`; `options` is NULL or points to a `SESSION_OPTIONS_T` whose
/// string is NULL or NUL-terminated.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn session_create_with_options(
    urls: *const *const c_char,
    url_count: usize,
    principal: *const c_char,
    credentials: *const Credentials,
    listener: *const SessionListenerC,
    strategy: *const ReconnectionStrategyC,
    options: *const SessionOptionsC,
    error: *mut ErrorC,
) -> *mut SessionHandle {
    boundary(error, std::ptr::null_mut(), || {
        if urls.is_null() {
            return Err(FfiError::NullArgument("urls"));
        }
        if url_count == 0 {
            return Err(
                tether::Error::InvalidArgument("url_count must be at least 1".into()).into(),
            );
        }
        // SAFETY: not NULL, and `url_count` readable pointers per the contract.
        let pointers = unsafe { std::slice::from_raw_parts(urls, url_count) };
        let list = pointers
            .iter()
            // SAFETY: each NULL or NUL-terminated, valid during this call, per the contract.
            .map(|&p| unsafe { arg_str(p, "urls") })
            .collect::<Result<Vec<&str>, FfiError>>()?;
        // SAFETY: NULL or a live options struct, per the contract; copied here.
        let options = unsafe { options.as_ref() }.copied();
        // SAFETY: forwarded from this function's own contract.
        unsafe { create(&list, principal, credentials, listener, strategy, options) }
    })
}

/// The body of the `session_create*` functions (`urls` not empty).
///
/// # Safety
/// As `session_create`; the string in `options` is NULL or NUL-terminated.
unsafe fn create(
    urls: &[&str],
    principal: *const c_char,
    credentials: *const Credentials,
    listener: *const SessionListenerC,
    strategy: *const ReconnectionStrategyC,
    options: Option<SessionOptionsC>,
) -> Result<*mut SessionHandle, FfiError> {
    init_logging();
    let (first, fallbacks) = urls.split_first().ok_or(FfiError::NullArgument("urls"))?;
    // SAFETY: NULL or NUL-terminated, valid during this call, per the contract.
    let principal = unsafe { opt_str(principal, "principal") }?;
    // SAFETY: NULL or live credentials, per the contract; only read during this call.
    let credentials = unsafe { credentials.as_ref() };
    // SAFETY: NULL or a live listener struct, per the contract; copied here.
    let listener = unsafe { listener.as_ref() }.copied();
    // SAFETY: NULL or a live strategy; it is plain data, copied here.
    let strategy = unsafe { strategy.as_ref() }.copied();

    let handle = Arc::new_cyclic(|me| SessionHandle {
        me: me.clone(),
        session: Mutex::new(None),
        id: OnceLock::new(),
        on_state_changed: listener.and_then(|l| l.on_state_changed),
        context: UserData(listener.map_or(std::ptr::null_mut(), |l| l.context)),
        created: Mutex::new(Created::Pending),
        created_cv: Condvar::new(),
        gate: Mutex::new(()),
        freed: AtomicBool::new(false),
        closed_seen: Mutex::new(false),
        closed_cv: Condvar::new(),
        subscriptions: Mutex::new(Vec::new()),
        attempt: Mutex::new(None),
        generation: SHUTDOWNS.load(Ordering::SeqCst),
        on_gap: options.and_then(|o| o.on_gap),
        change_reason: Mutex::new(None),
        sends: Mutex::new(None),
        sends_done: Arc::new((Mutex::new(true), Condvar::new())),
    });
    // Whatever happens below (an error, a panic), callbacks waiting for the outcome must
    // not wait forever.
    struct Outcome<'a>(&'a SessionHandle, Created);
    impl Drop for Outcome<'_> {
        fn drop(&mut self) {
            self.0.set_created(self.1);
        }
    }
    let mut outcome = Outcome(&handle, Created::Failed);

    let mut builder = Session::builder(first).listener(FfiListener {
        session: Arc::downgrade(&handle),
    });
    for url in fallbacks {
        builder = builder.fallback_url(*url);
    }
    if let Some(p) = principal {
        builder = builder.principal(p);
    }
    if let Some(c) = credentials {
        builder = builder.password(c.password.clone());
    }
    builder = strategy
        .unwrap_or(DEFAULT_STRATEGY)
        .configure(builder, Arc::downgrade(&handle));
    if let Some(options) = options {
        // SAFETY: the caller's strings, per this function's contract.
        builder = unsafe { options.configure(builder) }?;
    }
    let session = block_on(builder.open())??;
    let _ = handle.id.set(SessionIdC(session.session_id()));
    *lock(&handle.session) = Some(session);
    {
        let mut all = lock(&HANDLES);
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&handle));
    }
    outcome.1 = Created::Ready;
    drop(outcome);
    Ok(Arc::into_raw(handle).cast_mut())
}

/// Closes the session (`CLOSED_BY_CLIENT`; the server frees it at once) and returns when it is
/// closed and the listener has been told (unless called from one of this session's own
/// callbacks, where it cannot wait for the notification queued behind it). Requests already
/// under way on other threads (a `session_publish` waiting for its confirmation) are sent and
/// confirmed first, within 5 s (one still unconfirmed then fails with
/// `TETHER_ERROR_OUTCOME_UNKNOWN`); calls made after it fail with `TETHER_ERROR_SESSION_CLOSED`.
/// Closing a closed session does nothing. Returns true on success; false with
/// `TETHER_ERROR_NULL_ARGUMENT` for a NULL session. Blocks while one of the session's callbacks
/// runs.
///
/// # Safety
/// `session` is NULL or a live session; `error` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_close(session: *mut SessionHandle, error: *mut ErrorC) -> bool {
    boundary(error, false, || {
        // SAFETY: NULL or live, per the contract.
        let h = unsafe { handle_ref(session) }?;
        h.close()?;
        Ok(true)
    })
}

/// Releases a session: closes it first if needed (as `session_close`), waits for a callback
/// of the session in flight, then frees it. After it returns no callback of this session runs
/// and `session`, its `SESSION_ID_T`, and the pointers its callbacks use (`args`, `context`)
/// are no longer used by the library. May be called from the session's own callback (the
/// memory is then released when that callback returns). NULL is ignored.
///
/// # Safety
/// `session` is NULL or a live session, freed once, and not used by another thread during or
/// after the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_free(session: *mut SessionHandle) {
    boundary(std::ptr::null_mut(), (), || {
        if session.is_null() {
            return Ok(());
        }
        // SAFETY: a pointer from Arc::into_raw in session_create, given back once.
        let h = unsafe { Arc::from_raw(session.cast_const()) };
        let closed = h.close();
        h.finish_sends();
        h.freed.store(true, Ordering::SeqCst);
        h.wait_callback_in_flight();
        lock(&h.subscriptions).clear();
        lock(&h.session).take();
        drop(h);
        closed
    })
}

/// The session's current state (`SESSION_STATE_UNKNOWN` for NULL). It may already be ahead of
/// what the listener has been told.
///
/// # Safety
/// `session` is NULL or a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_state_get(session: *const SessionHandle) -> SessionStateValue {
    boundary(std::ptr::null_mut(), SESSION_STATE_UNKNOWN, || {
        // SAFETY: NULL or live, per the contract.
        let h = unsafe { handle_ref(session) }?;
        Ok(h.session()
            .map_or(SESSION_STATE_UNKNOWN, |s| state_value(s.state())))
    })
}

fn with_state(session: *const SessionHandle, f: impl FnOnce(tether::SessionState) -> bool) -> bool {
    boundary(std::ptr::null_mut(), false, || {
        // SAFETY: the exported callers pass on their own contract: NULL or live.
        let h = unsafe { handle_ref(session) }?;
        Ok(h.session().is_some_and(|s| f(s.state())))
    })
}

/// Whether the session is `CONNECTED_ACTIVE` (false for NULL).
///
/// # Safety
/// `session` is NULL or a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_is_connected(session: *const SessionHandle) -> bool {
    with_state(session, |s| s == tether::SessionState::ConnectedActive)
}

/// Whether the session is `RECOVERING_RECONNECT` (false for NULL).
///
/// # Safety
/// `session` is NULL or a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_is_recovering(session: *const SessionHandle) -> bool {
    with_state(session, |s| s == tether::SessionState::RecoveringReconnect)
}

/// Whether the session is closed: `CLOSED_BY_CLIENT`, `CLOSED_BY_SERVER` or `CLOSED_FAILED`
/// (false for NULL).
///
/// # Safety
/// `session` is NULL or a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_is_closed(session: *const SessionHandle) -> bool {
    with_state(session, |s| s.is_closed())
}

/// Why a closed session closed, as a stable snake_case name (`"closed_by_client"`,
/// `"reconnect_aborted"`, `"reconnect_timeout"`, `"authentication_failed"`, ...); NULL while
/// it is open, or for a NULL session.
///
/// Ownership: a static string owned by the library; do not free it.
///
/// # Safety
/// `session` is NULL or a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_close_reason(session: *const SessionHandle) -> *const c_char {
    boundary(std::ptr::null_mut(), std::ptr::null(), || {
        // SAFETY: NULL or live, per the contract.
        let h = unsafe { handle_ref(session) }?;
        Ok(h.session()
            .and_then(|s| s.close_reason())
            .map_or(std::ptr::null(), |r| reason_name(r).as_ptr()))
    })
}

/// The session's id (NULL for a NULL session). Owned by the session: valid until
/// `session_free` returns; do not free it.
///
/// # Safety
/// `session` is NULL or a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_id_get(session: *const SessionHandle) -> *const SessionIdC {
    boundary(std::ptr::null_mut(), std::ptr::null(), || {
        // SAFETY: NULL or live, per the contract.
        let h = unsafe { handle_ref(session) }?;
        Ok(h.id
            .get()
            .map_or(std::ptr::null(), |id| id as *const SessionIdC))
    })
}

/// The session id as 32 lowercase hex digits, in a new `malloc`ed string that the caller owns
/// and releases with `tether_string_free` (or `free()`). NULL for a NULL id (or when memory is
/// exhausted).
///
/// # Safety
/// `session_id` is NULL or from `session_id_get` of a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_id_to_string(session_id: *const SessionIdC) -> *mut c_char {
    boundary(std::ptr::null_mut(), std::ptr::null_mut(), || {
        // SAFETY: NULL or owned by a live session, per the contract.
        Ok(match unsafe { session_id.as_ref() } {
            Some(id) => malloc_string(&id.0.to_string()),
            None => std::ptr::null_mut(),
        })
    })
}

/// The `context` of the listener given to `session_create` (NULL if none), for use in the
/// listener callback.
///
/// # Safety
/// `session` is NULL or a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_listener_context(session: *const SessionHandle) -> *mut c_void {
    boundary(std::ptr::null_mut(), std::ptr::null_mut(), || {
        // SAFETY: NULL or live, per the contract.
        let h = unsafe { handle_ref(session) }?;
        Ok(h.context.ptr())
    })
}

/// Subscribes to `selector` and returns once the server has accepted it. A selector is a topic
/// path (`a/b`) in which a whole segment `*` matches one level and a last segment `**` any
/// depth. `handler` is then called with the current value of every matching topic, then with
/// every update, in order, exactly once each, across reconnections. Returns
/// true on success; false and fills `error` otherwise (`TETHER_ERROR_INVALID_TOPIC`,
/// `_ACCESS_DENIED`, `_SESSION_CLOSED`, `_NULL_ARGUMENT`, `_INVALID_UTF8`, ...).
///
/// `handler` runs on the session's callback thread (see `TOPIC_HANDLER_T`); `context` is
/// passed to it and never read by the library: it must stay valid until `session_unsubscribe`
/// of this selector or `session_free` returns, after which `handler` is no longer called.
///
/// # Safety
/// `session` is NULL or live; `selector` NULL or NUL-terminated; `error` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_subscribe(
    session: *mut SessionHandle,
    selector: *const c_char,
    handler: TopicHandler,
    context: *mut c_void,
    error: *mut ErrorC,
) -> bool {
    boundary(error, false, || {
        // SAFETY: NULL or live / NUL-terminated, per the contract.
        let h = unsafe { handle_ref(session) }?;
        // SAFETY: NULL or NUL-terminated, valid during this call, per the contract.
        let text = unsafe { arg_str(selector, "selector") }?;
        let handler = handler.ok_or(FfiError::NullArgument("handler"))?;
        let parsed = Selector::parse(text).map_err(tether::Error::from)?;
        let s = h.session().ok_or(FfiError::NullArgument("session"))?;
        let sub = Arc::new(CSubscription {
            selector: parsed,
            active: AtomicBool::new(true),
        });
        lock(&h.subscriptions).push(sub.clone());
        let weak = h.me.clone();
        let context = UserData(context);
        let delivery = {
            let sub = sub.clone();
            move |update: TopicUpdate| {
                let Some(h) = weak.upgrade() else {
                    return;
                };
                let topic = match CString::new(&*update.topic) {
                    Ok(t) => t,
                    Err(e) => {
                        warn!(error = %e, "topic with a NUL byte not delivered to C");
                        return;
                    }
                };
                let value = update.value;
                h.run_callback(
                    || sub.active.load(Ordering::SeqCst),
                    // SAFETY: the user's handler, called as documented: `topic` and `value`
                    // live across the call, `context` is the user's.
                    |_| unsafe {
                        handler(
                            topic.as_ptr(),
                            value.as_ptr().cast(),
                            value.len(),
                            context.ptr(),
                        )
                    },
                );
            }
        };
        if let Err(e) = h.run(s.subscribe_with(text, delivery))? {
            sub.active.store(false, Ordering::SeqCst);
            lock(&h.subscriptions).retain(|x| !Arc::ptr_eq(x, &sub));
            return Err(e.into());
        }
        Ok(true)
    })
}

/// Removes the subscriptions to `selector` (the same selector text as subscribed) and returns
/// once the server has confirmed; after it returns their handlers are no longer called (it
/// waits for one in flight, unless called from a callback of this session). Returns true on
/// success; false and fills `error` otherwise.
///
/// # Safety
/// `session` is NULL or live; `selector` NULL or NUL-terminated; `error` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_unsubscribe(
    session: *mut SessionHandle,
    selector: *const c_char,
    error: *mut ErrorC,
) -> bool {
    boundary(error, false, || {
        // SAFETY: NULL or live / NUL-terminated, per the contract.
        let h = unsafe { handle_ref(session) }?;
        // SAFETY: NULL or NUL-terminated, valid during this call, per the contract.
        let text = unsafe { arg_str(selector, "selector") }?;
        let parsed = Selector::parse(text).map_err(tether::Error::from)?;
        let s = h.session().ok_or(FfiError::NullArgument("session"))?;
        h.run(s.unsubscribe(text))??;
        lock(&h.subscriptions).retain(|sub| {
            if sub.selector == parsed {
                sub.active.store(false, Ordering::SeqCst);
                false
            } else {
                true
            }
        });
        h.wait_callback_in_flight();
        Ok(true)
    })
}

/// Publishes `length` bytes at `value` on `topic` and returns once the server has applied it.
/// The bytes are copied. Sent exactly once, in order, across reconnections: while the session
/// is `RECOVERING_RECONNECT` the call waits for the reconnection (or fails with
/// `TETHER_ERROR_QUEUE_FULL` when the send queue is full). Returns true on success; false and
/// fills `error` otherwise (`TETHER_ERROR_INVALID_TOPIC`, `_ACCESS_DENIED`, `_REJECTED`,
/// `_QUEUE_FULL`, `_NULL_ARGUMENT` for a NULL `value` with a non-zero `length`, ...). If the
/// session closes first: `_SESSION_CLOSED` when the publish was never sent (it was not
/// applied), `_OUTCOME_UNKNOWN` when it was sent and not yet confirmed (the server may have
/// applied it: check before publishing it again).
///
/// # Safety
/// `session` is NULL or live; `topic` NULL or NUL-terminated; `value` NULL or readable for
/// `length` bytes during the call; `error` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_publish(
    session: *mut SessionHandle,
    topic: *const c_char,
    value: *const c_void,
    length: usize,
    error: *mut ErrorC,
) -> bool {
    boundary(error, false, || {
        // SAFETY: NULL or live / NUL-terminated, per the contract.
        let h = unsafe { handle_ref(session) }?;
        // SAFETY: NULL or NUL-terminated, valid during this call, per the contract.
        let topic = unsafe { arg_str(topic, "topic") }?;
        // SAFETY: NULL or readable for `length` bytes during the call, per the contract.
        let bytes = unsafe { arg_bytes(value, length) }?;
        let s = h.session().ok_or(FfiError::NullArgument("session"))?;
        h.run(s.publish(topic, bytes.to_vec()))??;
        Ok(true)
    })
}

/// Queues a publish of `length` bytes at `value` on `topic` at once, in call order, without
/// waiting: the bytes are copied and the call returns. `on_done` (may be NULL) is then called
/// once with the outcome (see `PUBLISH_DONE_CB_T`), in the order of the sends, at the latest
/// before `session_free` returns (unless `tether_shutdown` stopped the runtime first). Sent
/// exactly once, in order, across reconnections; a send made before `session_close` is sent
/// and confirmed before the session closes.
///
/// Returns true when queued; false and fills `error` when nothing was queued (and `on_done`
/// is not called): `TETHER_ERROR_QUEUE_FULL` (the send queue is full, connected or not),
/// `_SESSION_CLOSED`, `_INVALID_TOPIC`, `_NULL_ARGUMENT`, ...
///
/// # Safety
/// `session` is NULL or live; `topic` NULL or NUL-terminated; `value` NULL or readable for
/// `length` bytes during the call; `context` is the user's (it must stay valid until `on_done`
/// was called); `error` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_send(
    session: *mut SessionHandle,
    topic: *const c_char,
    value: *const c_void,
    length: usize,
    on_done: PublishDoneCb,
    context: *mut c_void,
    error: *mut ErrorC,
) -> bool {
    boundary(error, false, || {
        // SAFETY: NULL or live, per the contract.
        let h = unsafe { handle_ref(session) }?;
        // SAFETY: NULL or NUL-terminated, valid during this call, per the contract.
        let topic = unsafe { arg_str(topic, "topic") }?;
        // SAFETY: NULL or readable for `length` bytes during the call, per the contract.
        let bytes = unsafe { arg_bytes(value, length) }?;
        let s = h.session().ok_or(FfiError::NullArgument("session"))?;
        let sends = h.sends()?;
        let completion = s.send(topic, bytes.to_vec())?;
        sends
            .send(PendingSend {
                completion,
                on_done,
                context: UserData(context),
            })
            .map_err(|_| FfiError::Internal("the send queue of a freed session".into()))?;
        Ok(true)
    })
}

/// The ping period the server granted on the session's current connection, in ms; 0 while it
/// is not connected (or for a NULL session).
///
/// # Safety
/// `session` is NULL or a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_ping_period_ms(session: *const SessionHandle) -> u32 {
    boundary(std::ptr::null_mut(), 0, || {
        // SAFETY: NULL or live, per the contract.
        let h = unsafe { handle_ref(session) }?;
        Ok(h.session()
            .and_then(|s| s.ping_period())
            .map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)))
    })
}

/// Why the session changed state, as a stable snake_case name: inside the listener's
/// `on_state_changed`, the reason of the change it is told of (`"transport_error"` on entering
/// `RECOVERING_RECONNECT` after a cut, `"server_draining"`, `"reconnect_aborted"` on closing,
/// ...); elsewhere, that of the latest change told. NULL when the change had none (`CONNECTING`
/// → `CONNECTED_ACTIVE`, a resume), before any, or for a NULL session.
///
/// Ownership: a static string owned by the library; do not free it.
///
/// # Safety
/// `session` is NULL or a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn session_state_change_reason(
    session: *const SessionHandle,
) -> *const c_char {
    boundary(std::ptr::null_mut(), std::ptr::null(), || {
        // SAFETY: NULL or live, per the contract.
        let h = unsafe { handle_ref(session) }?;
        Ok((*lock(&h.change_reason)).map_or(std::ptr::null(), |r| reason_name(r).as_ptr()))
    })
}

/// Closes every open session (requests queued before are sent and confirmed first) and stops
/// Tether's runtime, joining its threads, all within `timeout_ms`. Call it before the process
/// exits (or before unloading the library). Sessions are not freed: `session_free` them
/// afterwards (or before). A later `session_create` starts a fresh runtime.
///
/// Returns true when everything stopped in time. Returns false, with the runtime stopped all
/// the same, when something was left behind: `TETHER_ERROR_TIMED_OUT` if a callback or a
/// session was still busy at the deadline; `TETHER_ERROR_WRONG_THREAD` when called from a
/// callback (a handler that exits the process, say), whose own thread cannot be joined.
///
/// # Safety
/// `error` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_shutdown(timeout_ms: u32, error: *mut ErrorC) -> bool {
    boundary(error, false, || {
        let from_callback = in_any_callback();
        SHUTDOWNS.fetch_add(1, Ordering::SeqCst);
        let all = tether::shutdown(Duration::from_millis(timeout_ms.into()));
        // Notifications still queued died with the runtime: nobody may wait for them.
        // Take the whole vector (not drain): no stale copy of a pointer may stay behind in its
        // buffer, so that a session the application forgot to free shows up as leaked.
        let registered = std::mem::take(&mut *lock(&HANDLES));
        let live: Vec<_> = registered.into_iter().filter_map(|w| w.upgrade()).collect();
        for h in live {
            h.set_closed_seen();
        }
        if from_callback {
            return Err(FfiError::WrongThread(
                "tether_shutdown was called from a callback: every session is closed and the \
                 runtime stopped, but the calling thread cannot be joined",
            ));
        }
        if !all {
            return Err(FfiError::TimedOut(
                "tether_shutdown: a callback or a session was still busy at the deadline; \
                 the runtime is stopped without them",
            ));
        }
        Ok(true)
    })
}
