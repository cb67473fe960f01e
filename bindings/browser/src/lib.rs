//! Tether in the browser: the session machinery of `tether-protocol` (sequence numbers, acks,
//! recovery buffers, replay, liveness) and the session driver ([`driver`]: opening, the
//! reconnection strategy and timeout, resuming, closing), compiled to WebAssembly.
//!
//! The TypeScript shell (`ts/index.ts`) owns the browser's `WebSocket`, the timers
//! (`setTimeout`) and the clock (`performance.now()`): it tells [`Core`] what happened, with
//! the time, and carries out the actions [`Core::poll_action`] returns. The session request
//! travels in `Sec-WebSocket-Protocol` values and the answer in the first message (see
//! `tether_protocol::handshake::to_subprotocols` and docs/protocol.md), since a page cannot
//! set or read other headers of the upgrade.

use std::time::Duration;

use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

use tether_protocol::schedule::{Backoff, Constant, Jitter};
use tether_protocol::time::Instant;

pub mod driver;

use driver::{Action, Builtin, Config, Driver, Failure, Strategy};

/// Durations from the shell, in ms: negative or not a number is zero, and absurd ones are
/// capped at a year (an instant plus a duration must not overflow).
fn duration(ms: f64) -> Duration {
    const YEAR_MS: f64 = 365.0 * 86_400_000.0;
    if ms.is_nan() || ms <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(ms.min(YEAR_MS) / 1000.0)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The shell's clock (`performance.now()`, ms) as the protocol's instants.
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
mod clock {
    use super::*;

    pub(crate) fn instant(ms: f64) -> Instant {
        Instant::from_origin(duration(ms))
    }

    pub(crate) fn ms(at: Instant) -> f64 {
        millis(at.since_origin())
    }
}

/// Elsewhere (this crate's unit tests and lints run natively) the instants are `std`'s,
/// counted from the first use.
#[cfg(not(all(target_family = "wasm", target_os = "unknown")))]
mod clock {
    use super::*;
    use std::sync::OnceLock;

    fn origin() -> Instant {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        *ORIGIN.get_or_init(Instant::now)
    }

    pub(crate) fn instant(ms: f64) -> Instant {
        origin() + duration(ms)
    }

    pub(crate) fn ms(at: Instant) -> f64 {
        millis(at.saturating_duration_since(origin()))
    }
}

use clock::instant;

fn set(object: &Object, key: &str, value: impl Into<JsValue>) {
    // Setting a property on a fresh plain object cannot fail.
    let _ = Reflect::set(object, &JsValue::from_str(key), &value.into());
}

fn string_or_null(value: Option<&str>) -> JsValue {
    value.map_or(JsValue::NULL, JsValue::from_str)
}

fn failure(f: &Failure) -> JsValue {
    let o = Object::new();
    set(&o, "code", f.code);
    set(&o, "reason", string_or_null(f.reason.map(|r| r.as_str())));
    set(&o, "message", f.message.as_str());
    o.into()
}

fn bytes(b: &[u8]) -> Uint8Array {
    Uint8Array::from(b)
}

fn action(a: Action) -> JsValue {
    let o = Object::new();
    match a {
        Action::Connect {
            conn,
            url,
            protocols,
        } => {
            set(&o, "type", "connect");
            set(&o, "conn", conn);
            set(&o, "url", url);
            let list: Array = protocols.iter().map(|p| JsValue::from_str(p)).collect();
            set(&o, "protocols", list);
        }
        Action::Send { conn, message } => {
            set(&o, "type", "send");
            set(&o, "conn", conn);
            set(&o, "bytes", bytes(&message));
        }
        Action::Disconnect { conn } => {
            set(&o, "type", "disconnect");
            set(&o, "conn", conn);
        }
        Action::State { old, new, reason } => {
            set(&o, "type", "state");
            set(&o, "old", old.as_str());
            set(&o, "new", new.as_str());
            set(&o, "reason", string_or_null(reason.map(|r| r.as_str())));
        }
        Action::Attempt { attempt, info } => {
            set(&o, "type", "attempt");
            set(&o, "attempt", attempt);
            set(&o, "number", info.number);
            set(&o, "elapsed", millis(info.elapsed).round());
            set(&o, "remaining", millis(info.remaining).round());
            set(&o, "reason", info.reason.as_str());
            set(
                &o,
                "retryAfter",
                info.retry_after
                    .map_or(JsValue::NULL, |d| JsValue::from_f64(millis(d).round())),
            );
        }
        Action::Update { subs, update } => {
            set(&o, "type", "update");
            let list: Array = subs.iter().map(|s| JsValue::from(*s)).collect();
            set(&o, "subs", list);
            set(&o, "topic", &*update.topic);
            set(&o, "value", bytes(&update.value));
            set(&o, "snapshot", update.snapshot);
            set(&o, "partition", update.position.partition);
            set(&o, "offset", update.position.offset as f64);
        }
        Action::Completed { request, result } => {
            set(&o, "type", "completed");
            set(&o, "request", request as f64);
            set(
                &o,
                "error",
                result.err().map_or(JsValue::NULL, |f| failure(&f)),
            );
        }
        Action::SubscriptionEnded { sub } => {
            set(&o, "type", "end");
            set(&o, "sub", sub);
        }
        Action::Gap(report) => {
            set(&o, "type", "gap");
            set(&o, "lostFrom", report.lost_from as f64);
            set(&o, "lostTo", report.lost_to as f64);
            set(&o, "lostCount", report.lost_count() as f64);
            let topics: Array = report
                .topics
                .iter()
                .map(|(t, _)| JsValue::from_str(t))
                .collect();
            set(&o, "topics", topics);
        }
    }
    o.into()
}

/// A built-in reconnection strategy: its schedule, for a session ([`Core::new`]) or for a
/// strategy function that hands an attempt to a built-in (`BuiltinStrategy.decide`).
#[wasm_bindgen]
pub struct Schedule {
    builtin: Builtin,
}

#[wasm_bindgen]
impl Schedule {
    /// The same delay every time; abort instead of attempt `max_attempts + 1`.
    pub fn constant(delay_ms: f64, max_attempts: Option<u32>) -> Schedule {
        let mut c = Constant::new(duration(delay_ms));
        if let Some(n) = max_attempts {
            c = c.max_attempts(n);
        }
        Schedule {
            builtin: Builtin::Constant(c),
        }
    }

    /// Exponential backoff (defaults: 250 ms, × 2, up to 10 s, full jitter).
    pub fn backoff(
        initial_ms: Option<f64>,
        multiplier: Option<f64>,
        max_delay_ms: Option<f64>,
        jitter: Option<String>,
        max_attempts: Option<u32>,
        quick_first_attempt_ms: Option<f64>,
    ) -> Result<Schedule, JsError> {
        let mut b = Backoff::new(
            initial_ms.map_or(Backoff::DEFAULT_INITIAL, duration),
            multiplier.unwrap_or(Backoff::DEFAULT_MULTIPLIER),
            max_delay_ms.map_or(Backoff::DEFAULT_MAX_DELAY, duration),
        );
        if let Some(j) = jitter {
            b = b.jitter(Jitter::from_name(&j).ok_or_else(|| {
                JsError::new(&format!("unknown jitter {j:?} ({})", Jitter::names()))
            })?);
        }
        if let Some(n) = max_attempts {
            b = b.max_attempts(n);
        }
        if let Some(ms) = quick_first_attempt_ms {
            b = b.quick_first_attempt(duration(ms));
        }
        Ok(Schedule {
            builtin: Builtin::Backoff(b),
        })
    }

    /// The default strategy: the first attempt after a random 0–100 ms, then full-jitter
    /// backoff from 250 ms, doubling, up to 10 s.
    pub fn recommended() -> Schedule {
        Schedule {
            builtin: Builtin::Backoff(Backoff::recommended()),
        }
    }

    /// Never reconnect.
    #[wasm_bindgen(js_name = abortImmediately)]
    pub fn abort_immediately() -> Schedule {
        Schedule {
            builtin: Builtin::AbortImmediately,
        }
    }

    /// The delay before attempt `number`, ms (at least the server's `retry_after_ms`, spread),
    /// or `undefined` to abort.
    #[wasm_bindgen(js_name = nextDelay)]
    pub fn next_delay(&mut self, number: u32, retry_after_ms: Option<f64>) -> Option<f64> {
        let hint = retry_after_ms.map(duration);
        self.builtin
            .next_delay(number, hint, &mut js_sys::Math::random)
            .map(millis)
    }

    /// Forgets state after a successful reconnection.
    pub fn reset(&mut self) {
        self.builtin.reset();
    }
}

/// One browser session's core (see the module docs). Every method takes the shell's clock,
/// `performance.now()`, as `now`.
#[wasm_bindgen]
pub struct Core {
    driver: Driver,
}

#[wasm_bindgen]
impl Core {
    /// Starts opening a session (the first action connects). `strategy` is a built-in, or
    /// `undefined` for a strategy function of the application's ([`Core::poll_action`] then
    /// gives `attempt` actions). Throws `{code, reason, message}` for invalid settings.
    #[wasm_bindgen(constructor)]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        urls: Vec<String>,
        principal: Option<String>,
        credentials: Option<String>,
        reconnect_timeout_ms: f64,
        connect_timeout_ms: f64,
        close_timeout_ms: f64,
        strategy: Option<Schedule>,
        now: f64,
    ) -> Result<Core, JsValue> {
        let config = Config {
            urls,
            principal,
            credentials,
            reconnect_timeout: duration(reconnect_timeout_ms),
            connect_timeout: duration(connect_timeout_ms),
            close_timeout: duration(close_timeout_ms),
            strategy: match strategy {
                Some(s) => Strategy::Builtin(s.builtin),
                None => Strategy::External,
            },
        };
        let random = Box::new(js_sys::Math::random);
        Driver::new(config, instant(now), random)
            .map(|driver| Core { driver })
            .map_err(|f| failure(&f))
    }

    /// The next action (`{type: 'connect' | 'send' | 'disconnect' | 'state' | 'attempt' |
    /// 'update' | 'completed' | 'end' | 'gap', ...}`), or `undefined`.
    #[wasm_bindgen(js_name = pollAction)]
    pub fn poll_action(&mut self) -> JsValue {
        self.driver.poll_action().map_or(JsValue::UNDEFINED, action)
    }

    /// When to call [`Core::on_timer`] next (on the `now` clock), or `undefined`.
    #[wasm_bindgen(js_name = pollTimeout)]
    pub fn poll_timeout(&self) -> Option<f64> {
        self.driver.poll_timeout().map(clock::ms)
    }

    /// The WebSocket of connection `conn` opened; `protocol` is the one the server selected.
    #[wasm_bindgen(js_name = onOpen)]
    pub fn on_open(&mut self, conn: u32, protocol: &str, now: f64) {
        self.driver.on_open(conn, protocol, instant(now));
    }

    /// A binary message arrived on connection `conn`.
    #[wasm_bindgen(js_name = onMessage)]
    pub fn on_message(&mut self, conn: u32, message: &[u8], now: f64) {
        self.driver.on_message(conn, message, instant(now));
    }

    /// A text message arrived on connection `conn` (a protocol violation).
    #[wasm_bindgen(js_name = onText)]
    pub fn on_text(&mut self, conn: u32, now: f64) {
        self.driver.on_text(conn, instant(now));
    }

    /// Connection `conn` closed or failed.
    #[wasm_bindgen(js_name = onClose)]
    pub fn on_close(&mut self, conn: u32, now: f64) {
        self.driver.on_close(conn, instant(now));
    }

    /// The timer fired.
    #[wasm_bindgen(js_name = onTimer)]
    pub fn on_timer(&mut self, now: f64) {
        self.driver.on_timer(instant(now));
    }

    /// The application's strategy starts attempt `attempt`; `true` if this call decided it.
    pub fn start(&mut self, attempt: u32, now: f64) -> bool {
        self.driver.start(attempt, instant(now))
    }

    /// The application's strategy aborts attempt `attempt`; `true` if this call decided it.
    pub fn abort(&mut self, attempt: u32, now: f64) -> bool {
        self.driver.abort(attempt, instant(now))
    }

    /// Publishes; returns the request's number (settled by a `completed` action) or throws
    /// `{code, reason, message}`.
    pub fn publish(&mut self, topic: &str, value: &[u8], now: f64) -> Result<f64, JsValue> {
        self.driver
            .publish(topic, value, instant(now))
            .map(|r| r as f64)
            .map_err(|f| failure(&f))
    }

    /// Subscribes local subscription `sub`; returns the request's number or throws.
    pub fn subscribe(&mut self, selector: &str, sub: u32, now: f64) -> Result<f64, JsValue> {
        self.driver
            .subscribe(selector, sub, instant(now))
            .map(|r| r as f64)
            .map_err(|f| failure(&f))
    }

    /// Unsubscribes a selector; returns the request's number or throws.
    pub fn unsubscribe(&mut self, selector: &str, now: f64) -> Result<f64, JsValue> {
        self.driver
            .unsubscribe(selector, instant(now))
            .map(|r| r as f64)
            .map_err(|f| failure(&f))
    }

    /// Closes the session once the requests made before are confirmed (or the close timeout).
    pub fn close(&mut self, now: f64) {
        self.driver.close(instant(now));
    }

    /// The state (`CONNECTED_ACTIVE`, ...).
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        self.driver.state().as_str().to_string()
    }

    /// The session id (32 hex digits), once open.
    #[wasm_bindgen(getter, js_name = sessionId)]
    pub fn session_id(&self) -> Option<String> {
        self.driver.session_id().map(|id| id.to_string())
    }

    /// Why the session closed, once it has.
    #[wasm_bindgen(getter, js_name = closeReason)]
    pub fn close_reason(&self) -> Option<String> {
        self.driver.close_reason().map(|r| r.as_str().to_string())
    }

    /// Why opening failed (`{code, reason, message}`), or `null`.
    #[wasm_bindgen(getter, js_name = openFailure)]
    pub fn open_failure(&self) -> JsValue {
        self.driver.open_failure().map_or(JsValue::NULL, failure)
    }

    /// The reconnection timeout in force, ms.
    #[wasm_bindgen(getter, js_name = reconnectionTimeout)]
    pub fn reconnection_timeout(&self) -> f64 {
        millis(self.driver.reconnection_timeout())
    }
}
