//! The native half of the `tether-session` npm package: a thin napi-rs layer over the Tether
//! core. Every behaviour (sessions, recovery, strategies and their built-ins, timeouts) lives
//! in the core; this crate only adapts it to Node:
//!
//! ```text
//!  JavaScript (index.js: options, EventEmitter, async iterators, TetherError)
//!      │ connect / publish / subscribe / close          ▲ JsEvents in order: updates in batches
//!      ▼ (promises settled with JsDeferred;             │ (one threadsafe function per session;
//!      │  publishes numbered, settled in batches)       │  one more for settled publishes)
//!  NativeSession ──────────────▶ tether::Session ── listener / JsStrategy / forwarders / settler
//!                                   (Tether's own runtime and callback thread)
//! ```
//!
//! The hot paths cross the boundary in batches: a subscription's forwarder passes every update
//! that is ready (within its credit) in one call, and a publish costs no promise, task or
//! threadsafe function of its own (see [`publish`]).
//!
//! Nothing here blocks the JavaScript thread: asynchronous calls run on Tether's runtime
//! (`tether::runtime::handle()`, never a runtime of our own) and settle a promise. Nothing here
//! blocks a Tether thread on JavaScript either: events are queued `NonBlocking`, and a
//! JavaScript strategy decides later through [`NativeAttempt`].
//!
//! Promises never reject from here: they resolve with `{ error }` data (see [`error`]) that the
//! JavaScript wrapper turns into a typed `TetherError`.

mod error;
mod events;
mod publish;

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use napi::bindgen_prelude::{Buffer, Either, Function, Object};
use napi::{Env, JsDeferred};
use napi_derive::napi;
use tether::strategy::{
    AbortImmediately, ConstantDelay, ExponentialBackoff, Jitter, ReconnectionStrategy,
    default_strategy,
};
use tether::{ReconnectionAttempt, Session};

use crate::error::{ErrorInfo, binding_error};
use crate::events::{EventSink, Forwarder, JsEvent, JsStrategy, forward_updates};
use crate::publish::Publisher;

/// A built-in strategy, as `exponentialBackoff({...})`, `constant(ms)`, `abortImmediately` and
/// `defaultStrategy` describe it. The behaviour is the core's.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct StrategySpec {
    /// `default`, `constant`, `exponentialBackoff` or `abortImmediately`.
    pub kind: String,
    /// `constant`: the delay before each attempt, ms.
    pub delay_ms: Option<f64>,
    /// `exponentialBackoff`: the first delay, ms.
    pub initial_ms: Option<f64>,
    /// `exponentialBackoff`: the factor between delays.
    pub multiplier: Option<f64>,
    /// `exponentialBackoff`: the largest delay, ms.
    pub max_delay_ms: Option<f64>,
    /// `exponentialBackoff`: `none`, `full`, `equal` or `decorrelated`.
    pub jitter: Option<String>,
    /// `constant`, `exponentialBackoff`: abort instead of making attempt `maxAttempts + 1`.
    pub max_attempts: Option<u32>,
    /// `exponentialBackoff`: make the first attempt after a random delay up to this, ms.
    pub quick_first_attempt_ms: Option<f64>,
}

/// The options `connect` passes down, already checked and normalised by the JavaScript side.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct NativeOptions {
    /// `ws://host:port/path`.
    pub url: String,
    /// More servers, tried in order after `url` (`connect({ url: [...] })`).
    pub fallback_urls: Option<Vec<String>>,
    /// The principal (anonymous when absent).
    pub principal: Option<String>,
    /// The principal's password.
    pub credentials: Option<String>,
    /// The reconnection timeout, ms; 0 disables reconnection.
    pub reconnect_timeout_ms: f64,
    /// A built-in strategy; ignored when `js_strategy` is set.
    pub strategy: Option<StrategySpec>,
    /// The strategy is the JavaScript function behind the session's dispatcher.
    pub js_strategy: bool,
    /// Time allowed for each connection, ms (the core's default when absent).
    pub connect_timeout_ms: Option<f64>,
    /// Time `close()` allows the requests queued before it to be sent and confirmed, ms (the
    /// core's default when absent).
    pub close_timeout_ms: Option<f64>,
    /// PEM texts of certificates (a private CA) trusted for `wss://` besides the system's roots.
    pub tls_root_certificates: Option<Vec<String>>,
    /// Close with `lost_messages` rather than resume with a gap report.
    pub strict: Option<bool>,
    /// Most requests kept until acknowledged (the core's default when absent).
    pub max_queued_requests: Option<u32>,
    /// Most bytes kept until acknowledged (the core's default when absent).
    pub max_queued_bytes: Option<f64>,
    /// The ping period to ask the server for, ms (the server's own when absent).
    pub ping_period_ms: Option<f64>,
    /// Most updates waiting for JavaScript before the session stops reading (the core's
    /// default when absent).
    pub delivery_limit: Option<u32>,
}

/// What `connect` resolves with.
#[napi(object, object_from_js = false)]
pub struct ConnectOutcome {
    /// The session, on success.
    pub session: Option<NativeSession>,
    /// Why not, on failure.
    pub error: Option<ErrorInfo>,
}

/// What the other asynchronous calls resolve with.
#[napi(object)]
pub struct Outcome {
    /// Why the call failed, if it did.
    pub error: Option<ErrorInfo>,
}

impl Outcome {
    fn of(result: Result<(), tether::Error>) -> Outcome {
        Outcome {
            error: result.err().map(|e| ErrorInfo::from(&e)),
        }
    }
}

fn millis(ms: f64) -> Duration {
    if ms.is_finite() && ms > 0.0 {
        Duration::from_secs_f64(ms / 1000.0)
    } else {
        Duration::ZERO
    }
}

fn jitter(name: Option<&str>) -> Result<Jitter, ErrorInfo> {
    let Some(name) = name else {
        return Ok(Jitter::default());
    };
    Jitter::from_name(name).ok_or_else(|| {
        binding_error(
            "invalid_argument",
            format!("unknown jitter {name:?} ({})", Jitter::names()),
        )
    })
}

/// The core strategy a built-in describes.
fn builtin(spec: &StrategySpec) -> Result<Arc<dyn ReconnectionStrategy>, ErrorInfo> {
    Ok(match spec.kind.as_str() {
        "default" => default_strategy(),
        "abortImmediately" => Arc::new(AbortImmediately),
        "constant" => {
            let mut s = ConstantDelay::new(millis(spec.delay_ms.unwrap_or(0.0)));
            if let Some(n) = spec.max_attempts {
                s = s.max_attempts(n);
            }
            s.into_strategy()
        }
        "exponentialBackoff" => {
            let mut s = ExponentialBackoff::new(
                spec.initial_ms
                    .map_or(ExponentialBackoff::DEFAULT_INITIAL, millis),
                spec.multiplier
                    .unwrap_or(ExponentialBackoff::DEFAULT_MULTIPLIER),
                spec.max_delay_ms
                    .map_or(ExponentialBackoff::DEFAULT_MAX_DELAY, millis),
            )
            .jitter(jitter(spec.jitter.as_deref())?);
            if let Some(n) = spec.max_attempts {
                s = s.max_attempts(n);
            }
            if let Some(first) = spec.quick_first_attempt_ms {
                s = s.quick_first_attempt(millis(first));
            }
            s.into_strategy()
        }
        other => {
            return Err(binding_error(
                "invalid_argument",
                format!("unknown strategy kind {other:?}"),
            ));
        }
    })
}

/// Node environments (the main thread's, each worker's) that use Tether and have not let go.
static LIVE_ENVS: AtomicUsize = AtomicUsize::new(0);

/// Whether this thread's Node environment uses Tether (one environment per JavaScript thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnvUse {
    /// It has not opened a session.
    Unused,
    /// It opened one: it is counted in [`LIVE_ENVS`].
    Live,
    /// It is going away and has let go ([`release_environment`]).
    Gone,
}

thread_local! {
    /// This thread's environment's use of Tether.
    static ENV_USE: Cell<EnvUse> = const { Cell::new(EnvUse::Unused) };
    /// The sessions this thread's environment opened and has not seen closed yet.
    static ENV_SESSIONS: RefCell<Vec<Session>> = const { RefCell::new(Vec::new()) };
}

/// Remembers a session of this thread's environment, to close it if the environment goes away
/// first (sessions closed meanwhile are forgotten here).
fn remember(session: &Session) {
    ENV_SESSIONS.with(|sessions| {
        let mut sessions = sessions.borrow_mut();
        sessions.retain(|s| !s.state().is_closed());
        sessions.push(session.clone());
    });
}

/// How long Tether gets, when the last environment goes away, to close the sessions still open
/// (sending what was queued before and waiting for the server to confirm it) and stop its
/// threads: one deadline for all of it.
const EXIT_SHUTDOWN: Duration = Duration::from_secs(1);

/// Counts this thread's environment as a Tether user, and lets go of it when the environment
/// goes away: a worker that ends or is terminated, or the main thread at the end of its event
/// loop (Node's cleanup hook). `process.exit()` and uncaught exceptions skip cleanup hooks, so
/// `index.js` also calls [`release_environment`] from `process.on('exit')`.
fn hook_shutdown(env: &Env) -> napi::Result<()> {
    if ENV_USE.with(Cell::get) != EnvUse::Unused {
        return Ok(());
    }
    env.add_env_cleanup_hook((), |()| release_environment())?;
    LIVE_ENVS.fetch_add(1, Ordering::SeqCst);
    ENV_USE.with(|u| u.set(EnvUse::Live));
    Ok(())
}

/// This thread's Node environment is going away. If it was the last one using Tether, close
/// every session still open and stop Tether's runtime, joining its threads; otherwise (a
/// worker ends, other threads go on) close the sessions this environment opened, as `close()`
/// does. Either within [`EXIT_SHUTDOWN`]. Called once per environment (later calls do
/// nothing), on its JavaScript thread, so never on a Tether callback thread: the core can join
/// every thread it started.
///
/// A `false` from `shutdown` (the server did not confirm in time, a thread was still busy at
/// the deadline), like a close that ran out of time, is not acted on: the environment is going
/// away whatever happens, the runtime is stopped either way, and the core has logged what was
/// left behind; none of it could reach JavaScript any more.
#[napi]
pub fn release_environment() {
    if ENV_USE.with(|u| u.replace(EnvUse::Gone)) != EnvUse::Live {
        return;
    }
    let sessions = ENV_SESSIONS.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if LIVE_ENVS.fetch_sub(1, Ordering::SeqCst) == 1 {
        let _stopped_everything: bool = tether::shutdown(EXIT_SHUTDOWN);
    } else if let Ok(handle) = tether::runtime::handle() {
        let closing: Vec<_> = sessions
            .into_iter()
            .map(|s| handle.spawn(async move { s.close().await }))
            .collect();
        handle.block_on(async {
            let _in_time = tokio::time::timeout(EXIT_SHUTDOWN, async {
                for c in closing {
                    let _ = c.await;
                }
            })
            .await;
        });
    }
}

/// Runs `work` and settles a promise with what `settle` makes of its output, on the JavaScript
/// thread.
///
/// The first poll happens right here, on the JavaScript thread (inside Tether's runtime
/// context, with a no-op waker): the core queues a request (subscribe, unsubscribe, close) on
/// that first poll, so requests reach the wire in the order JavaScript made them. The rest runs
/// as a task on Tether's runtime. The first poll never waits: it only takes the session's lock
/// briefly.
fn spawn_promise<'env, T, D, F, S>(env: &'env Env, work: F, settle: S) -> napi::Result<Object<'env>>
where
    T: Send + 'static,
    D: napi::bindgen_prelude::ToNapiValue + 'static,
    F: Future<Output = T> + Send + 'static,
    S: FnOnce(T) -> D + Send + 'static,
{
    let (deferred, promise): (JsDeferred<D, _>, Object<'env>) = env.create_deferred()?;
    let handle = match tether::runtime::handle() {
        Ok(handle) => handle,
        Err(e) => {
            deferred.reject(napi::Error::from_reason(format!(
                "cannot start Tether's runtime: {e}"
            )));
            return Ok(promise);
        }
    };
    let mut work = Box::pin(work);
    let first = {
        let _context = handle.enter();
        work.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    };
    let finish = move |out: T| deferred.resolve(move |_env: Env| Ok(settle(out)));
    match first {
        Poll::Ready(out) => finish(out),
        Poll::Pending => {
            handle.spawn(async move { finish(work.await) });
        }
    }
    Ok(promise)
}

/// Opens a session. `dispatch` receives every event of the session, in order, on the
/// JavaScript thread (and the strategy's attempts when `options.jsStrategy` is set). Resolves
/// with `{ session }` or `{ error }`.
#[napi(ts_return_type = "Promise<ConnectOutcome>")]
pub fn connect<'env>(
    env: &'env Env,
    options: NativeOptions,
    dispatch: Function<'_, JsEvent, ()>,
) -> napi::Result<Object<'env>> {
    hook_shutdown(env)?;
    let sink = EventSink::new(events::event_function(&dispatch)?);
    let settler = events::event_function(&dispatch)?;
    let strategy: Result<Arc<dyn ReconnectionStrategy>, ErrorInfo> = if options.js_strategy {
        Ok(Arc::new(JsStrategy { sink: sink.clone() }))
    } else {
        match &options.strategy {
            Some(spec) => builtin(spec),
            None => Ok(default_strategy()),
        }
    };
    let mut builder = Session::builder(&options.url)
        .reconnection_timeout(millis(options.reconnect_timeout_ms))
        .listener(Forwarder { sink: sink.clone() });
    for url in options.fallback_urls.iter().flatten() {
        builder = builder.fallback_url(url.clone());
    }
    if let Some(p) = &options.principal {
        builder = builder.principal(p.clone());
    }
    if let Some(c) = &options.credentials {
        builder = builder.password(c.clone());
    }
    if let Some(ms) = options.connect_timeout_ms {
        builder = builder.connect_timeout(millis(ms));
    }
    if let Some(ms) = options.close_timeout_ms {
        builder = builder.close_timeout(millis(ms));
    }
    for pem in options.tls_root_certificates.iter().flatten() {
        builder = builder.tls_root_certificate_pem(pem.as_bytes());
    }
    if let Some(strict) = options.strict {
        builder = builder.strict(strict);
    }
    // Each checked as a positive integer by the JavaScript side; one given alone leaves the
    // core's default for the other.
    if let Some(n) = options.max_queued_requests {
        builder = builder.max_queued_requests(n as usize);
    }
    if let Some(n) = options.max_queued_bytes {
        builder = builder.max_queued_bytes(n as usize);
    }
    if let Some(ms) = options.ping_period_ms {
        builder = builder.ping_period(millis(ms));
    }
    if let Some(limit) = options.delivery_limit {
        builder = builder.delivery_limit(limit as usize);
    }
    let work = async move {
        let strategy = strategy?;
        builder
            .reconnection_strategy_arc(strategy)
            .open()
            .await
            .map_err(|e| ErrorInfo::from(&e))
    };
    spawn_promise(env, work, move |result| match result {
        Ok(session) => match Publisher::start(&session, settler) {
            Ok(publisher) => {
                // On the JavaScript thread of the environment that opened it.
                remember(&session);
                ConnectOutcome {
                    session: Some(NativeSession {
                        session,
                        sink,
                        publisher,
                        next_sub: AtomicU32::new(0),
                        next_publish: AtomicU32::new(0),
                    }),
                    error: None,
                }
            }
            Err(e) => {
                let session_to_close = session.clone();
                if let Ok(handle) = tether::runtime::handle() {
                    handle.spawn(async move { session_to_close.close().await });
                }
                sink.release();
                ConnectOutcome {
                    session: None,
                    error: Some(binding_error(
                        "error",
                        format!("cannot start Tether's runtime: {e}"),
                    )),
                }
            }
        },
        Err(error) => {
            // No session: nothing more will be sent, let the process exit.
            sink.release();
            ConnectOutcome {
                session: None,
                error: Some(error),
            }
        }
    })
}

/// An open session (wrapped by the JavaScript `Session` class).
#[napi]
pub struct NativeSession {
    session: Session,
    sink: EventSink,
    /// Settles publishes in batches.
    publisher: Publisher,
    next_sub: AtomicU32,
    next_publish: AtomicU32,
}

#[napi]
impl NativeSession {
    /// The session id: 32 hex digits, the same after every resume.
    #[napi(getter)]
    pub fn session_id(&self) -> String {
        self.session.session_id().to_string()
    }

    /// The current state (`CONNECTED_ACTIVE`, ...).
    #[napi(getter)]
    pub fn state(&self) -> String {
        self.session.state().as_str().to_owned()
    }

    /// Why the session closed, once it has.
    #[napi(getter)]
    pub fn close_reason(&self) -> Option<String> {
        self.session.close_reason().map(|r| r.as_str().to_owned())
    }

    /// The reconnection timeout in force, ms (the smaller of the requested and the server's).
    #[napi(getter)]
    pub fn reconnection_timeout(&self) -> f64 {
        self.session.reconnection_timeout().as_secs_f64() * 1000.0
    }

    /// The ping period the server granted on the current connection, ms; `null` while the
    /// session is not connected.
    #[napi(getter)]
    pub fn ping_period(&self) -> Option<f64> {
        self.session.ping_period().map(|d| d.as_secs_f64() * 1000.0)
    }

    /// Lets Node's event loop end while the session is open (its events keep flowing while
    /// the loop runs for other reasons); the session is closed at exit.
    #[napi]
    pub fn unref(&self, env: Env) -> napi::Result<()> {
        self.sink.unref(&env)?;
        self.publisher.unref(&env)
    }

    /// Queues a publish of `value` on `topic` at once, in call order (`Session::send`), and
    /// returns its number: a `settled` event says, in a batch, when the server applied (or
    /// refused) it. Returns the outcome (`{ error }`) instead when it is known at once: it
    /// cannot be queued (a full send queue: `queue_full`; a closed session).
    #[napi(ts_return_type = "number | Outcome")]
    pub fn publish(&self, topic: String, value: Buffer) -> Either<u32, Outcome> {
        match self.session.send(&topic, value.to_vec()) {
            Ok(completion) => {
                let id = self.next_publish.fetch_add(1, Ordering::Relaxed);
                match self.publisher.settle(id, completion, &self.session) {
                    Ok(()) => Either::A(id),
                    Err(now) => Either::B(Outcome::of(now)),
                }
            }
            Err(e) => Either::B(Outcome::of(Err(e))),
        }
    }

    /// Subscribes; updates arrive as `update` events for subscription number `sub` (then an
    /// `end` event). Resolves when the server confirmed (or refused) the subscription.
    #[napi(ts_return_type = "Promise<Outcome>")]
    pub fn subscribe<'env>(
        &self,
        env: &'env Env,
        selector: String,
        sub: u32,
    ) -> napi::Result<Object<'env>> {
        let session = self.session.clone();
        let tsfn = self.sink.share();
        let sink = self.sink.clone();
        spawn_promise(
            env,
            async move {
                let Some(tsfn) = tsfn else {
                    // The session closed: the core says so with the right reason.
                    return session.subscribe(&selector).await.map(|_| ());
                };
                let updates = session.subscribe(&selector).await?;
                // The forwarder owns its clone of the threadsafe function until the
                // subscription's stream ends, so no update is dropped at close.
                tokio::spawn(forward_updates(sink, tsfn, sub, updates));
                Ok(())
            },
            Outcome::of,
        )
    }

    /// The application took `count` updates of local subscription `sub` (its forwarder may
    /// pass that many more on).
    #[napi]
    pub fn consumed(&self, sub: u32, count: u32) {
        self.sink.consumed(sub, count as usize);
    }

    /// A fresh local subscription number.
    #[napi]
    pub fn next_subscription(&self) -> u32 {
        self.next_sub.fetch_add(1, Ordering::Relaxed)
    }

    /// Removes the subscriptions made with this selector, on the server too.
    #[napi(ts_return_type = "Promise<Outcome>")]
    pub fn unsubscribe<'env>(
        &self,
        env: &'env Env,
        selector: String,
    ) -> napi::Result<Object<'env>> {
        let session = self.session.clone();
        spawn_promise(
            env,
            async move { session.unsubscribe(&selector).await },
            Outcome::of,
        )
    }

    /// Closes the session; resolves when it is closed.
    #[napi(ts_return_type = "Promise<Outcome>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<Object<'env>> {
        let session = self.session.clone();
        spawn_promise(
            env,
            async move {
                session.close().await;
                Ok(())
            },
            Outcome::of,
        )
    }
}

/// One reconnection attempt handed to a JavaScript strategy. `start()` and `abort()` may be
/// called at any later time; the first call wins, later ones return `false`.
#[napi]
pub struct NativeAttempt {
    attempt: ReconnectionAttempt,
}

impl NativeAttempt {
    pub(crate) fn new(attempt: ReconnectionAttempt) -> NativeAttempt {
        NativeAttempt { attempt }
    }
}

#[napi]
impl NativeAttempt {
    /// Makes the reconnection attempt now; `true` if this call decided the attempt.
    #[napi]
    pub fn start(&self) -> bool {
        self.attempt.start()
    }

    /// Gives up (the session closes with reason `reconnect_aborted`); `true` if this call
    /// decided the attempt.
    #[napi]
    pub fn abort(&self) -> bool {
        self.attempt.abort()
    }

    /// Whether the attempt is decided (or the session stopped waiting for it).
    #[napi(getter)]
    pub fn decided(&self) -> bool {
        self.attempt.is_decided()
    }

    /// 1 for the first attempt after a disconnection, then 2, 3, ...
    #[napi(getter)]
    pub fn number(&self) -> u32 {
        self.attempt.number()
    }

    /// Time since the connection was lost, ms.
    #[napi(getter)]
    pub fn elapsed(&self) -> f64 {
        self.attempt.elapsed().as_secs_f64() * 1000.0
    }

    /// Time left before the reconnection timeout closes the session, ms.
    #[napi(getter)]
    pub fn remaining(&self) -> f64 {
        self.attempt.remaining().as_secs_f64() * 1000.0
    }

    /// Why the connection was lost (first attempt) or why the previous attempt failed.
    #[napi(getter)]
    pub fn last_reason(&self) -> String {
        self.attempt.last_reason().as_str().to_owned()
    }

    /// How long the server asked the session to wait, ms (`server_draining`, `server_busy`);
    /// `null` when it did not.
    #[napi(getter)]
    pub fn retry_after(&self) -> Option<f64> {
        self.attempt.retry_after().map(|d| d.as_secs_f64() * 1000.0)
    }
}

/// A built-in strategy that a JavaScript strategy hands attempts to
/// (`builtin.decide(attempt)`): one core strategy per `BuiltinStrategy` object, so that its
/// state (a decorrelated backoff's previous delay) carries from attempt to attempt.
#[napi]
pub struct NativeStrategy {
    strategy: Arc<dyn ReconnectionStrategy>,
}

#[napi]
impl NativeStrategy {
    /// The core strategy `spec` describes (checked by the JavaScript side already).
    #[napi(constructor)]
    pub fn new(spec: StrategySpec) -> napi::Result<NativeStrategy> {
        builtin(&spec)
            .map(|strategy| NativeStrategy { strategy })
            .map_err(|e| napi::Error::from_reason(e.message))
    }

    /// Lets the built-in decide `attempt` (start now or after its delay, at least the server's
    /// hint, or abort).
    #[napi]
    pub fn perform(&self, attempt: &NativeAttempt) {
        let attempt = attempt.attempt.clone();
        if attempt.number() == 1 {
            // A new outage: the core resets a strategy after each successful reconnection,
            // which it does not tell a strategy it does not own; this is the first moment the
            // built-in hears of it.
            self.strategy.on_success(attempt.info());
        }
        self.strategy.perform_reconnection(attempt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str) -> StrategySpec {
        StrategySpec {
            kind: kind.into(),
            delay_ms: None,
            initial_ms: None,
            multiplier: None,
            max_delay_ms: None,
            jitter: None,
            max_attempts: None,
            quick_first_attempt_ms: None,
        }
    }

    #[test]
    fn every_builtin_kind_maps_to_a_core_strategy() {
        for kind in [
            "default",
            "constant",
            "exponentialBackoff",
            "abortImmediately",
        ] {
            assert!(builtin(&spec(kind)).is_ok(), "{kind}");
        }
        let err = builtin(&spec("sometimes")).err().map(|e| e.code);
        assert_eq!(err.as_deref(), Some("invalid_argument"));
    }

    #[test]
    fn unknown_jitter_is_refused() {
        let mut s = spec("exponentialBackoff");
        s.jitter = Some("lots".into());
        assert!(builtin(&s).is_err());
        s.jitter = Some("decorrelated".into());
        assert!(builtin(&s).is_ok());
    }

    #[test]
    fn durations_ignore_nonsense() {
        assert_eq!(millis(-5.0), Duration::ZERO);
        assert_eq!(millis(f64::NAN), Duration::ZERO);
        assert_eq!(millis(1500.0), Duration::from_millis(1500));
    }
}
