//! The browser session's driver, sans I/O: what the tokio shell of the Rust client does around
//! [`ClientSession`] (opening, the reconnection strategy and timeout, resuming, closing,
//! requests and subscriptions), with the WebSocket, the timers and the clock left to the
//! TypeScript shell.
//!
//! The shell calls in with what happened (`on_open`, `on_message`, `on_close`, `on_timer`,
//! the application's requests), each time with the current time, then takes the resulting
//! [`Action`]s in order with [`Driver::poll_action`] (open a WebSocket, send a message, close
//! one, report a state change, ask a strategy, deliver an update, settle a request) and arms
//! one timer for [`Driver::poll_timeout`]. Nothing here reads a clock or calls back into the
//! shell, so the shell never re-enters the driver.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tether_protocol::client::{ClientEvent, ClientSession, ClientSessionConfig, ConnectionFault};
use tether_protocol::handshake::{self, Answer, SessionAccepted, SessionRequest};
use tether_protocol::schedule::{self, Backoff, Constant};
use tether_protocol::time::Instant;
use tether_protocol::topic::validate_topic;
use tether_protocol::{
    CloseReason, GapReport, RequestError, ResumeToken, Selector, SessionId, SessionState, Update,
};

/// Uniform random numbers in `[0, 1)` (the page's `Math.random`).
pub type RandomFraction = Box<dyn FnMut() -> f64>;

/// A uniform integer in `low..=high` from a fraction in `[0, 1)`.
fn scale(fraction: f64, low: u64, high: u64) -> u64 {
    let span = (high - low) as f64 + 1.0;
    low.saturating_add((fraction.clamp(0.0, 1.0) * span) as u64)
        .min(high)
}

/// A built-in strategy: its schedule, computed by `tether_protocol::schedule` as in every
/// other client.
#[derive(Debug, Clone)]
pub enum Builtin {
    /// The same delay every time.
    Constant(Constant),
    /// Exponential backoff (the default strategy is [`Backoff::recommended`]).
    Backoff(Backoff),
    /// Never reconnect.
    AbortImmediately,
}

impl Builtin {
    /// The delay before attempt `number` (respecting the server's hint), or `None` to abort.
    pub fn next_delay(
        &mut self,
        number: u32,
        retry_after: Option<Duration>,
        random: &mut dyn FnMut() -> f64,
    ) -> Option<Duration> {
        let delay = match self {
            Builtin::Constant(c) => c.next_delay(number),
            Builtin::Backoff(b) => {
                let mut uniform = |low: u64, high: u64| scale(random(), low, high);
                b.next_delay(number, &mut uniform)
            }
            Builtin::AbortImmediately => None,
        }?;
        Some(schedule::honour_retry_after(delay, retry_after, random))
    }

    /// Forget state after a successful reconnection.
    pub fn reset(&mut self) {
        if let Builtin::Backoff(b) = self {
            b.reset();
        }
    }
}

/// Who decides reconnection attempts.
#[derive(Debug, Clone)]
pub enum Strategy {
    /// A built-in, carried out here.
    Builtin(Builtin),
    /// A function of the application's: the shell calls it for every [`Action::Attempt`] and
    /// reports its decision with [`Driver::start`] or [`Driver::abort`].
    External,
}

/// A session's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Servers to try, in order (one server, or the nodes of a cluster).
    pub urls: Vec<String>,
    /// The principal (anonymous when absent).
    pub principal: Option<String>,
    /// Its password.
    pub credentials: Option<String>,
    /// How long to keep trying to reconnect; zero disables reconnection.
    pub reconnect_timeout: Duration,
    /// Time allowed for each connection (the WebSocket and the server's answer).
    pub connect_timeout: Duration,
    /// Time `close()` allows the requests made before it.
    pub close_timeout: Duration,
    /// The reconnection strategy.
    pub strategy: Strategy,
}

/// Why a request or the session's opening failed, as the shell reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A stable code (the Node package's `TetherError.code`).
    pub code: &'static str,
    /// The close reason, for errors that carry one.
    pub reason: Option<CloseReason>,
    /// A human-readable message.
    pub message: String,
}

impl Failure {
    fn new(code: &'static str, reason: Option<CloseReason>, message: impl Into<String>) -> Self {
        Failure {
            code,
            reason,
            message: message.into(),
        }
    }

    fn rejected(e: RequestError) -> Self {
        Failure::new(e.kind.as_str(), None, e.message)
    }
}

/// Facts about a reconnection attempt, for a strategy of the application's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptInfo {
    /// 1, 2, 3, ...
    pub number: u32,
    /// Time since the connection was lost.
    pub elapsed: Duration,
    /// Time left before the reconnection timeout.
    pub remaining: Duration,
    /// Why the connection was lost, or why the previous attempt failed.
    pub reason: CloseReason,
    /// The server's hint of when to try again, when it gave one.
    pub retry_after: Option<Duration>,
}

/// What the shell must do or report, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open `new WebSocket(url, protocols)` as connection `conn`.
    Connect {
        /// The connection's number (events of older connections are ignored).
        conn: u32,
        /// The server.
        url: String,
        /// The request, as `Sec-WebSocket-Protocol` values.
        protocols: Vec<String>,
    },
    /// Send one binary message on connection `conn`.
    Send {
        /// The connection.
        conn: u32,
        /// The message.
        message: Bytes,
    },
    /// Close connection `conn` (nothing more is expected from it).
    Disconnect {
        /// The connection.
        conn: u32,
    },
    /// A state transition.
    State {
        /// The state left.
        old: SessionState,
        /// The state entered.
        new: SessionState,
        /// Why, for disconnections and closings.
        reason: Option<CloseReason>,
    },
    /// Call the application's strategy for attempt `attempt`.
    Attempt {
        /// The attempt's handle for [`Driver::start`] and [`Driver::abort`].
        attempt: u32,
        /// Its facts.
        info: AttemptInfo,
    },
    /// An update for the local subscriptions `subs`.
    Update {
        /// Local subscription numbers (as given to [`Driver::subscribe`]).
        subs: Vec<u32>,
        /// The update.
        update: Update,
    },
    /// Request `request` is settled.
    Completed {
        /// Its number, as returned when it was made.
        request: u64,
        /// The outcome.
        result: Result<(), Failure>,
    },
    /// Local subscription `sub` will receive nothing more.
    SubscriptionEnded {
        /// The subscription.
        sub: u32,
    },
    /// Messages were lost during an outage; snapshots follow.
    Gap(GapReport),
}

enum Pending {
    Publish,
    Subscribe { sub: u32 },
    Unsubscribe { selector: Selector },
}

struct LocalSubscription {
    id: u32,
    selector: Selector,
    /// Until the server confirms, snapshots for matching topics belong to this subscription.
    pending: bool,
}

/// The current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    None,
    /// The WebSocket is opening (`opened` once it is), then waits for the server's answer.
    Upgrading {
        id: u32,
        deadline: Instant,
        opened: bool,
    },
    Active {
        id: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// The application's strategy has attempt `attempt`.
    Strategy { attempt: u32 },
    /// A built-in starts the attempt at `until`.
    Delay { until: Instant },
    /// The attempt is connecting.
    Connecting,
}

#[derive(Debug, Clone)]
struct Recovery {
    started: Instant,
    deadline: Instant,
    number: u32,
    last_reason: CloseReason,
    last_hint: Option<Duration>,
    target: usize,
    waiting: Waiting,
}

#[derive(Debug, Clone)]
enum Phase {
    /// Opening: trying the servers in order.
    Opening {
        target: usize,
    },
    Connected,
    Recovering(Recovery),
    Closed,
}

/// How a connection ended.
enum End {
    Lost(CloseReason, Option<Duration>),
    Fatal(CloseReason),
}

fn fault_end(fault: &ConnectionFault) -> End {
    let reason = fault.reason();
    if reason.allows_reconnect() {
        End::Lost(reason, None)
    } else {
        End::Fatal(reason)
    }
}

/// Whether a failed reconnection attempt ends the recovery (as in the Rust client).
fn attempt_failure_is_final(reason: CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::UnknownSession
            | CloseReason::AuthenticationFailed
            | CloseReason::AccessDenied
            | CloseReason::ProtocolVersionMismatch
            | CloseReason::ClosedByServer
            | CloseReason::LostMessages
    )
}

/// Whether the server asked the session to go elsewhere (try the next URL first).
fn going_elsewhere(reason: CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::ServerDraining | CloseReason::ServerBusy
    )
}

/// One browser session, from its opening to its close.
pub struct Driver {
    config: Config,
    random: RandomFraction,
    proto: ClientSession,
    state: SessionState,
    phase: Phase,
    conn: Conn,
    next_conn: u32,
    next_attempt: u32,
    /// The server of the current or last connection (index in `config.urls`).
    target: usize,
    session: Option<SessionId>,
    token: Option<ResumeToken>,
    granted_timeout: Duration,
    close_reason: Option<CloseReason>,
    /// Why opening failed.
    open_failure: Option<Failure>,
    /// `close()` was called.
    close_requested: bool,
    /// The connection must have carried the close by then.
    close_by: Option<Instant>,
    pending: VecDeque<(u64, Pending)>,
    subscriptions: Vec<LocalSubscription>,
    actions: VecDeque<Action>,
}

impl Driver {
    /// Checks the settings and starts opening the session (the first action connects).
    pub fn new(config: Config, now: Instant, random: RandomFraction) -> Result<Driver, Failure> {
        if config.urls.is_empty() {
            return Err(Failure::new(
                "invalid_argument",
                None,
                "no server URL given",
            ));
        }
        if config.principal.is_none() && config.credentials.is_some() {
            return Err(Failure::new(
                "invalid_argument",
                None,
                "credentials given without a principal",
            ));
        }
        if config.connect_timeout.is_zero() {
            return Err(Failure::new(
                "invalid_argument",
                None,
                "connect timeout must be greater than zero",
            ));
        }
        let mut driver = Driver {
            config,
            random,
            proto: ClientSession::new(ClientSessionConfig::default()),
            state: SessionState::Connecting,
            phase: Phase::Opening { target: 0 },
            conn: Conn::None,
            next_conn: 0,
            next_attempt: 0,
            target: 0,
            session: None,
            token: None,
            granted_timeout: Duration::ZERO,
            close_reason: None,
            open_failure: None,
            close_requested: false,
            close_by: None,
            pending: VecDeque::new(),
            subscriptions: Vec::new(),
            actions: VecDeque::new(),
        };
        // The same rule as the Rust client's headers: printable ASCII, so that a session
        // behaves alike whichever client opened it.
        for (name, value) in driver.request().to_headers() {
            if !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
                return Err(Failure::new(
                    "invalid_argument",
                    None,
                    format!("{name} may only contain printable ASCII characters"),
                ));
            }
        }
        driver.connect(now, 0, None);
        Ok(driver)
    }

    /// The next thing for the shell to do or report.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Driver::on_timer`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        match self.conn {
            Conn::Upgrading { deadline, .. } => consider(Some(deadline)),
            Conn::Active { .. } => consider(self.proto.poll_timeout()),
            Conn::None => {}
        }
        if let Phase::Recovering(r) = &self.phase {
            consider(Some(r.deadline));
            if let Waiting::Delay { until } = r.waiting {
                consider(Some(until));
            }
        }
        consider(self.close_by);
        next
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The session id, once open.
    pub fn session_id(&self) -> Option<SessionId> {
        self.session
    }

    /// Why the session closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
    }

    /// Why opening failed, if it did.
    pub fn open_failure(&self) -> Option<&Failure> {
        self.open_failure.as_ref()
    }

    /// The reconnection timeout in force (the smaller of the requested and the server's).
    pub fn reconnection_timeout(&self) -> Duration {
        self.granted_timeout
    }

    fn request(&self) -> SessionRequest {
        match (self.session, &self.token) {
            (Some(session), Some(token)) => SessionRequest::Resume {
                session,
                token: token.clone(),
                received: self.proto.received(),
                positions: self.proto.positions(),
                confirmed: self.proto.confirmed(),
            },
            _ => SessionRequest::Open {
                principal: self.config.principal.clone(),
                credentials: self.config.credentials.clone(),
                auth_token: None,
                reconnect_timeout: self.config.reconnect_timeout,
            },
        }
    }

    /// Opens a connection to server `target`, to answer by `deadline` at the latest.
    fn connect(&mut self, now: Instant, target: usize, deadline: Option<Instant>) {
        self.next_conn += 1;
        let id = self.next_conn;
        let url = self.config.urls[target % self.config.urls.len()].clone();
        let protocols = handshake::to_subprotocols(&self.request(), true, None);
        let mut by = now + self.config.connect_timeout;
        if let Some(d) = deadline {
            by = by.min(d);
        }
        self.conn = Conn::Upgrading {
            id,
            deadline: by,
            opened: false,
        };
        self.actions.push_back(Action::Connect {
            conn: id,
            url,
            protocols,
        });
    }

    /// Drops the current connection, if any.
    fn drop_connection(&mut self) {
        match self.conn {
            Conn::Upgrading { id, .. } => self.actions.push_back(Action::Disconnect { conn: id }),
            Conn::Active { id } => {
                self.actions.push_back(Action::Disconnect { conn: id });
                self.proto.disconnected();
            }
            Conn::None => {}
        }
        self.conn = Conn::None;
    }

    fn is_current(&self, conn: u32) -> bool {
        match self.conn {
            Conn::Upgrading { id, .. } | Conn::Active { id } => id == conn,
            Conn::None => false,
        }
    }

    fn transition(&mut self, new: SessionState, reason: Option<CloseReason>) {
        let old = self.state;
        if !old.can_become(new) {
            return;
        }
        self.state = new;
        self.actions.push_back(Action::State { old, new, reason });
    }

    /// The WebSocket of connection `conn` opened with the `protocol` the server selected.
    pub fn on_open(&mut self, conn: u32, protocol: &str, now: Instant) {
        if !self.is_current(conn) {
            return;
        }
        if let Conn::Upgrading { opened, .. } = &mut self.conn {
            if protocol != handshake::SUBPROTOCOL {
                let message = format!(
                    "the server selected the subprotocol {protocol:?}, not {:?} (not a Tether server, or one without the browser carrier)",
                    handshake::SUBPROTOCOL
                );
                self.attempt_failed(now, CloseReason::HandshakeError, message, None);
            } else {
                *opened = true;
            }
        }
        self.flush(now);
    }

    /// A binary message arrived on connection `conn`.
    pub fn on_message(&mut self, conn: u32, bytes: &[u8], now: Instant) {
        if !self.is_current(conn) {
            return;
        }
        match self.conn {
            Conn::Upgrading { opened: true, .. } => match handshake::read_answer(bytes) {
                Ok(Answer::Accepted(accepted)) => self.accepted(now, accepted),
                Ok(Answer::Refused(refusal)) => {
                    self.attempt_failed(now, refusal.reason, refusal.message, refusal.retry_after)
                }
                Err(e) => self.attempt_failed(now, e.reason(), e.to_string(), None),
            },
            Conn::Upgrading { opened: false, .. } | Conn::None => {}
            Conn::Active { .. } => {
                let mut end = match self
                    .proto
                    .handle_message(now, &bytes::Bytes::copy_from_slice(bytes))
                {
                    Ok(()) => None,
                    Err(fault) => Some(fault_end(&fault)),
                };
                self.drain_events(&mut end);
                if let Some(end) = end {
                    self.connection_ended(now, end);
                }
            }
        }
        self.flush(now);
    }

    /// A text message arrived on connection `conn`: a protocol violation.
    pub fn on_text(&mut self, conn: u32, now: Instant) {
        if !self.is_current(conn) {
            return;
        }
        match self.conn {
            Conn::Active { .. } => {
                self.connection_ended(now, End::Lost(CloseReason::TransportError, None))
            }
            _ => self.attempt_failed(
                now,
                CloseReason::HandshakeError,
                "the server answered with a text message".into(),
                None,
            ),
        }
        self.flush(now);
    }

    /// Connection `conn` closed or failed.
    pub fn on_close(&mut self, conn: u32, now: Instant) {
        if !self.is_current(conn) {
            return;
        }
        match self.conn {
            Conn::Active { .. } => {
                self.proto.disconnected();
                self.conn = Conn::None;
                let end = End::Lost(CloseReason::TransportError, None);
                self.connection_ended(now, end);
            }
            _ => {
                self.conn = Conn::None;
                self.attempt_failed(
                    now,
                    CloseReason::ConnectionError,
                    "the connection closed before the server answered (refused, unreachable, or not a Tether server)".into(),
                    None,
                );
            }
        }
        self.flush(now);
    }

    /// The time of [`Driver::poll_timeout`] has come (or any time: nothing happens early).
    pub fn on_timer(&mut self, now: Instant) {
        if let Conn::Upgrading { deadline, .. } = self.conn
            && deadline <= now
        {
            self.attempt_failed(
                now,
                CloseReason::ConnectionError,
                "the server did not answer in time".into(),
                None,
            );
        }
        if let Phase::Recovering(r) = &self.phase {
            if r.deadline <= now {
                self.finish(CloseReason::ReconnectTimeout);
            } else if let Waiting::Delay { until } = r.waiting
                && until <= now
            {
                self.start_attempt(now);
            }
        }
        if self.close_by.is_some_and(|by| by <= now) {
            self.finish(CloseReason::ClosedByClient);
        }
        self.flush(now);
    }

    /// Writes what the protocol wants written, after checking its deadlines.
    fn flush(&mut self, now: Instant) {
        let Conn::Active { id } = self.conn else {
            return;
        };
        if let Err(fault) = self.proto.handle_timeout(now) {
            self.connection_ended(now, fault_end(&fault));
            return;
        }
        while let Some(message) = self.proto.poll_transmit_message(now) {
            self.actions.push_back(Action::Send { conn: id, message });
        }
    }

    fn accepted(&mut self, now: Instant, accepted: SessionAccepted) {
        let Conn::Upgrading { id, .. } = self.conn else {
            return;
        };
        match &self.phase {
            Phase::Opening { target } => {
                let target = *target;
                if let Err(fault) = self.proto.connected(now, &accepted) {
                    self.drop_connection();
                    self.open_failed(fault.reason(), fault.to_string());
                    return;
                }
                self.target = target;
                self.session = Some(accepted.session);
                self.token = Some(accepted.token);
                self.granted_timeout = accepted
                    .reconnect_timeout
                    .min(self.config.reconnect_timeout);
                self.conn = Conn::Active { id };
                self.phase = Phase::Connected;
                self.transition(SessionState::ConnectedActive, None);
            }
            Phase::Recovering(r) => {
                let target = r.target;
                if Some(accepted.session) != self.session {
                    self.drop_connection();
                    self.finish(CloseReason::HandshakeError);
                    return;
                }
                self.token = Some(accepted.token.clone());
                if let Err(fault) = self.proto.connected(now, &accepted) {
                    self.drop_connection();
                    self.finish(fault.reason());
                    return;
                }
                self.target = target % self.config.urls.len();
                self.conn = Conn::Active { id };
                self.phase = Phase::Connected;
                if let Strategy::Builtin(b) = &mut self.config.strategy {
                    b.reset();
                }
                self.transition(SessionState::ConnectedActive, None);
            }
            Phase::Connected | Phase::Closed => self.drop_connection(),
        }
        // A close asked for while recovering has closed the session already; one asked for
        // before the open completed goes out now.
        if self.close_requested && self.close_by.is_none() && matches!(self.phase, Phase::Connected)
        {
            self.close_by = Some(now + self.config.close_timeout);
        }
    }

    /// The current connection attempt failed (before the session was active on it).
    fn attempt_failed(
        &mut self,
        now: Instant,
        reason: CloseReason,
        message: String,
        hint: Option<Duration>,
    ) {
        self.drop_connection();
        match &mut self.phase {
            Phase::Opening { target } => {
                let next = *target + 1;
                if next < self.config.urls.len() {
                    self.phase = Phase::Opening { target: next };
                    self.connect(now, next, None);
                } else {
                    self.open_failed(reason, message);
                }
            }
            Phase::Recovering(_) if attempt_failure_is_final(reason) => self.finish(reason),
            Phase::Recovering(r) => {
                r.last_reason = reason;
                r.last_hint = hint;
                r.target += 1;
                r.number += 1;
                self.call_strategy(now);
            }
            Phase::Connected | Phase::Closed => {}
        }
    }

    fn open_failed(&mut self, reason: CloseReason, message: String) {
        self.phase = Phase::Closed;
        self.close_reason = Some(reason);
        self.open_failure = Some(Failure::new(reason.as_str(), Some(reason), message));
        self.transition(SessionState::closed_for(reason), Some(reason));
    }

    /// An active connection ended.
    fn connection_ended(&mut self, now: Instant, end: End) {
        self.drop_connection();
        if !matches!(self.phase, Phase::Connected) {
            return;
        }
        let (reason, hint) = match end {
            End::Fatal(reason) => return self.finish(reason),
            End::Lost(reason, hint) => (reason, hint),
        };
        if self.close_requested {
            return self.finish(CloseReason::ClosedByClient);
        }
        if self.granted_timeout.is_zero() {
            return self.finish(reason);
        }
        self.transition(SessionState::RecoveringReconnect, Some(reason));
        let target = self.target + usize::from(going_elsewhere(reason));
        self.phase = Phase::Recovering(Recovery {
            started: now,
            deadline: now + self.granted_timeout,
            number: 1,
            last_reason: reason,
            last_hint: hint,
            target,
            waiting: Waiting::Connecting,
        });
        self.call_strategy(now);
    }

    /// Asks the strategy about the next attempt.
    fn call_strategy(&mut self, now: Instant) {
        let Phase::Recovering(r) = &mut self.phase else {
            return;
        };
        let info = AttemptInfo {
            number: r.number,
            elapsed: now.saturating_duration_since(r.started),
            remaining: r.deadline.saturating_duration_since(now),
            reason: r.last_reason,
            retry_after: r.last_hint,
        };
        match &mut self.config.strategy {
            Strategy::External => {
                self.next_attempt += 1;
                let attempt = self.next_attempt;
                r.waiting = Waiting::Strategy { attempt };
                self.actions.push_back(Action::Attempt { attempt, info });
            }
            Strategy::Builtin(b) => {
                match b.next_delay(info.number, info.retry_after, &mut self.random) {
                    None => self.finish(CloseReason::ReconnectAborted),
                    Some(d) if d.is_zero() => self.start_attempt(now),
                    Some(d) => {
                        r.waiting = Waiting::Delay { until: now + d };
                    }
                }
            }
        }
    }

    fn start_attempt(&mut self, now: Instant) {
        let Phase::Recovering(r) = &mut self.phase else {
            return;
        };
        r.waiting = Waiting::Connecting;
        let (target, deadline) = (r.target, r.deadline);
        self.connect(now, target, Some(deadline));
    }

    /// The application's strategy starts attempt `attempt`: `true` if this decided it.
    pub fn start(&mut self, attempt: u32, now: Instant) -> bool {
        let decided = matches!(&self.phase, Phase::Recovering(r) if r.waiting == Waiting::Strategy { attempt });
        if decided {
            self.start_attempt(now);
            self.flush(now);
        }
        decided
    }

    /// The application's strategy aborts attempt `attempt` (the session closes, reason
    /// `reconnect_aborted`): `true` if this decided it.
    pub fn abort(&mut self, attempt: u32, now: Instant) -> bool {
        let decided = matches!(&self.phase, Phase::Recovering(r) if r.waiting == Waiting::Strategy { attempt });
        if decided {
            self.finish(CloseReason::ReconnectAborted);
            self.flush(now);
        }
        decided
    }

    /// Ends the session: pending requests fail, subscriptions end, the closed state.
    fn finish(&mut self, reason: CloseReason) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.drop_connection();
        self.proto.disconnected();
        self.phase = Phase::Closed;
        self.close_by = None;
        self.close_reason = Some(reason);
        for (request, _) in std::mem::take(&mut self.pending) {
            let failure = if self.proto.may_have_reached_server(request) {
                Failure::new(
                    "outcome_unknown",
                    Some(reason),
                    format!(
                        "the session closed ({reason}) before the server confirmed the request; it may have been applied"
                    ),
                )
            } else {
                Failure::new(
                    "session_closed",
                    Some(reason),
                    format!("the session is closed ({reason})"),
                )
            };
            self.actions.push_back(Action::Completed {
                request,
                result: Err(failure),
            });
        }
        for sub in std::mem::take(&mut self.subscriptions) {
            self.actions
                .push_back(Action::SubscriptionEnded { sub: sub.id });
        }
        self.transition(SessionState::closed_for(reason), Some(reason));
    }

    /// Closes the session: requests made before go out and are confirmed first (within the
    /// close timeout), then the session is `CLOSED_BY_CLIENT`.
    pub fn close(&mut self, now: Instant) {
        if self.state.is_closed() || self.close_requested {
            return;
        }
        self.close_requested = true;
        self.proto.close();
        match self.phase {
            Phase::Connected => self.close_by = Some(now + self.config.close_timeout),
            Phase::Recovering(_) => self.finish(CloseReason::ClosedByClient),
            Phase::Opening { .. } | Phase::Closed => {}
        }
        self.flush(now);
    }

    fn closed_failure(&self) -> Option<Failure> {
        if !self.state.is_closed() && !self.close_requested {
            return None;
        }
        let reason = self.close_reason.unwrap_or(CloseReason::ClosedByClient);
        Some(Failure::new(
            "session_closed",
            Some(reason),
            format!("the session is closed ({reason})"),
        ))
    }

    fn queued(&mut self, request: u64, pending: Pending, now: Instant) -> u64 {
        self.pending.push_back((request, pending));
        self.flush(now);
        request
    }

    fn queue_full(e: impl std::fmt::Display) -> Failure {
        Failure::new("queue_full", None, e.to_string())
    }

    /// Publishes `value` on `topic`; the request's number settles in an [`Action::Completed`].
    pub fn publish(&mut self, topic: &str, value: &[u8], now: Instant) -> Result<u64, Failure> {
        if let Some(f) = self.closed_failure() {
            return Err(f);
        }
        validate_topic(topic).map_err(|e| Failure::new("invalid_topic", None, e.to_string()))?;
        let request = self
            .proto
            .publish(topic, Bytes::copy_from_slice(value))
            .map_err(Self::queue_full)?;
        Ok(self.queued(request, Pending::Publish, now))
    }

    /// Subscribes local subscription `sub` to `selector`.
    pub fn subscribe(&mut self, selector: &str, sub: u32, now: Instant) -> Result<u64, Failure> {
        if let Some(f) = self.closed_failure() {
            return Err(f);
        }
        let parsed = Selector::parse(selector)
            .map_err(|e| Failure::new("invalid_selector", None, e.to_string()))?;
        let request = self.proto.subscribe(selector).map_err(Self::queue_full)?;
        self.subscriptions.push(LocalSubscription {
            id: sub,
            selector: parsed,
            pending: true,
        });
        Ok(self.queued(request, Pending::Subscribe { sub }, now))
    }

    /// Removes `selector` from the server; every local subscription with it ends.
    pub fn unsubscribe(&mut self, selector: &str, now: Instant) -> Result<u64, Failure> {
        if let Some(f) = self.closed_failure() {
            return Err(f);
        }
        let parsed = Selector::parse(selector)
            .map_err(|e| Failure::new("invalid_selector", None, e.to_string()))?;
        let request = self.proto.unsubscribe(selector).map_err(Self::queue_full)?;
        Ok(self.queued(request, Pending::Unsubscribe { selector: parsed }, now))
    }

    /// Routes what the protocol produced; sets `end` when the connection must end.
    fn drain_events(&mut self, end: &mut Option<End>) {
        while let Some(event) = self.proto.poll_event() {
            match event {
                ClientEvent::Update(update) => self.route_update(update),
                ClientEvent::Completed { request, result } => {
                    self.complete(request, result.map_err(Failure::rejected))
                }
                ClientEvent::Gap(report) => self.actions.push_back(Action::Gap(report)),
                ClientEvent::ServerClosed { reason, .. } => {
                    end.get_or_insert(End::Fatal(reason));
                }
                ClientEvent::GoAway {
                    reason,
                    retry_after,
                    ..
                } => {
                    end.get_or_insert(End::Lost(reason, Some(retry_after)));
                }
            }
        }
    }

    fn route_update(&mut self, update: Update) {
        // A snapshot answers the subscription that asked for it; if none is waiting
        // (snapshots after a gap), every matching subscription takes it.
        let for_pending = update.snapshot
            && self
                .subscriptions
                .iter()
                .any(|l| l.pending && l.selector.matches(&update.topic));
        let subs: Vec<u32> = self
            .subscriptions
            .iter()
            .filter(|l| l.selector.matches(&update.topic) && (!for_pending || l.pending))
            .map(|l| l.id)
            .collect();
        if !subs.is_empty() {
            self.actions.push_back(Action::Update { subs, update });
        }
    }

    fn complete(&mut self, request: u64, result: Result<(), Failure>) {
        let Some(i) = self.pending.iter().position(|(r, _)| *r == request) else {
            return;
        };
        let Some((_, pending)) = self.pending.remove(i) else {
            return;
        };
        match pending {
            Pending::Publish => {}
            Pending::Subscribe { sub } => {
                if result.is_ok() {
                    if let Some(l) = self.subscriptions.iter_mut().find(|l| l.id == sub) {
                        l.pending = false;
                    }
                } else {
                    self.subscriptions.retain(|l| l.id != sub);
                }
            }
            Pending::Unsubscribe { selector } => {
                if result.is_ok() {
                    let (ended, kept) = std::mem::take(&mut self.subscriptions)
                        .into_iter()
                        .partition(|l| l.selector == selector);
                    self.subscriptions = kept;
                    for l in ended {
                        self.actions
                            .push_back(Action::SubscriptionEnded { sub: l.id });
                    }
                }
            }
        }
        self.actions
            .push_back(Action::Completed { request, result });
    }
}

#[cfg(test)]
mod tests;
