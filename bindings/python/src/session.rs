//! The session and its streams. Every operation comes in two forms: one returning an
//! awaitable (for the asyncio API) and a `*_blocking` one (for `tether.sync`), both over the
//! same core call.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tether::{
    CloseReason, Error, GapReport as CoreGapReport, Session, SessionBuilder, SessionListener,
    SessionState, StateChange as CoreStateChange, StateChanges, Subscription as CoreSubscription,
    TopicUpdate,
};
use tokio::sync::Mutex;

use crate::bridge::{self, Done, Pending, awaitable, block};
use crate::{convert, exit, strategy};

/// A state, converted to `tether.SessionState` when delivered.
pub(crate) struct State(SessionState);

impl<'py> IntoPyObject<'py> for State {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::session_state(py, self.0)
    }
}

/// A close reason, converted to `tether.CloseReason` when delivered.
pub(crate) struct Reason(CloseReason);

impl<'py> IntoPyObject<'py> for Reason {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::close_reason(py, self.0)
    }
}

/// One state transition: `old` → `new`, with the `reason` for disconnections and closings.
#[pyclass(frozen, eq, module = "tether._tether")]
#[derive(PartialEq)]
pub(crate) struct StateChange(CoreStateChange);

#[pymethods]
impl StateChange {
    /// The state left.
    #[getter]
    fn old<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::session_state(py, self.0.old)
    }

    /// The state entered.
    #[getter(new)]
    fn new_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::session_state(py, self.0.new)
    }

    /// Why, for disconnections and closings.
    #[getter]
    fn reason<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.0
            .reason
            .map(|r| convert::close_reason(py, r))
            .transpose()
    }

    fn __repr__(&self) -> String {
        match self.0.reason {
            Some(r) => format!(
                "StateChange({} -> {}, reason='{r}')",
                self.0.old, self.0.new
            ),
            None => format!("StateChange({} -> {})", self.0.old, self.0.new),
        }
    }
}

/// A topic value delivered to a subscription.
#[pyclass(frozen, eq, module = "tether._tether")]
#[derive(PartialEq)]
pub(crate) struct Update(TopicUpdate);

impl Update {
    /// Wraps a core update for Python. The core's value shares the buffer of the message it
    /// arrived in (up to a whole batch); Python code may keep an update for long, so the value
    /// gets an allocation of its own.
    fn of(mut u: TopicUpdate) -> Update {
        u.value = bytes::Bytes::copy_from_slice(&u.value);
        Update(u)
    }
}

#[pymethods]
impl Update {
    /// The topic path.
    #[getter]
    fn topic(&self) -> &str {
        &self.0.topic
    }

    /// The value.
    #[getter]
    fn value<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.value)
    }

    /// The value decoded as UTF-8 (raises `UnicodeDecodeError` if it is not).
    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PyBytes::new(py, &self.0.value).call_method0("decode")
    }

    /// `True` for a current value sent as a snapshot (a new subscription's first value, or
    /// the state after a gap), `False` for a live update.
    #[getter]
    fn snapshot(&self) -> bool {
        self.0.snapshot
    }

    /// The topic log's partition.
    #[getter]
    fn partition(&self) -> u32 {
        self.0.position.partition
    }

    /// The update's offset in that partition.
    #[getter]
    fn offset(&self) -> u64 {
        self.0.position.offset
    }

    fn __repr__(&self) -> String {
        format!(
            "Update(topic={:?}, value={}, snapshot={}, offset={})",
            self.0.topic,
            bytes_repr(&self.0.value),
            if self.0.snapshot { "True" } else { "False" },
            self.0.position.offset
        )
    }
}

fn bytes_repr(value: &[u8]) -> String {
    let mut s = String::from("b'");
    for &b in value.iter().take(64) {
        match b {
            b'\'' => s.push_str("\\'"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('\'');
    if value.len() > 64 {
        s.push_str("...");
    }
    s
}

/// Messages the server could not replay after a resume; snapshots of the current values
/// follow.
#[pyclass(frozen, module = "tether._tether")]
pub(crate) struct GapReport(CoreGapReport);

#[pymethods]
impl GapReport {
    /// First lost server sequence number.
    #[getter]
    fn lost_from(&self) -> u64 {
        self.0.lost_from
    }

    /// Last lost server sequence number (inclusive).
    #[getter]
    fn lost_to(&self) -> u64 {
        self.0.lost_to
    }

    /// How many messages were lost.
    #[getter]
    fn lost_count(&self) -> u64 {
        self.0.lost_count()
    }

    /// The topics whose updates were lost, with how many per topic.
    #[getter]
    fn topics(&self) -> Vec<(String, u64)> {
        self.0.topics.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "GapReport(lost_from={}, lost_to={}, topics={:?})",
            self.0.lost_from, self.0.lost_to, self.0.topics
        )
    }
}

/// Forwards state changes and gap reports to Python callables, on the session's callback
/// thread (the Python package forwards them on to the event loop, or calls the user directly
/// in `tether.sync`). An exception goes to `sys.unraisablehook`.
struct PyListener {
    on_state: Option<Py<PyAny>>,
    on_gap: Option<Py<PyAny>>,
}

fn deliver<T: pyo3::PyClass + Into<pyo3::PyClassInitializer<T>>>(
    callback: &Option<Py<PyAny>>,
    value: T,
) {
    let Some(callback) = callback else {
        return;
    };
    // `None`: the interpreter is exiting; nobody is left to tell.
    let _ = exit::attach(|py| {
        if let Err(e) = Bound::new(py, value).and_then(|v| callback.bind(py).call1((v,))) {
            e.write_unraisable(py, Some(callback.bind(py)));
        }
    });
}

impl SessionListener for PyListener {
    fn on_state_changed(&self, change: &CoreStateChange) {
        deliver(&self.on_state, StateChange(*change));
    }

    fn on_gap(&self, report: &CoreGapReport) {
        deliver(&self.on_gap, GapReport(report.clone()));
    }
}

/// Owns the core session for Python: when the Python object goes away while the session is
/// still open, the session is closed (as a file object closes on garbage collection).
struct Owner(Session);

impl Drop for Owner {
    fn drop(&mut self) {
        // At interpreter exit the exit-time shutdown closes it; no runtime may start then.
        if self.0.state().is_closed() || exit::exiting() {
            return;
        }
        if let Ok(handle) = tether::runtime::handle() {
            let session = self.0.clone();
            handle.spawn(async move { session.close().await });
        }
    }
}

/// A session with a Tether server (the native half of `tether.Session`).
#[pyclass(frozen, module = "tether._tether")]
pub(crate) struct NativeSession(Owner);

impl NativeSession {
    fn session(&self) -> Session {
        self.0.0.clone()
    }
}

#[pymethods]
impl NativeSession {
    /// The session id: 32 hex digits, the same after every resume.
    #[getter]
    fn session_id(&self) -> String {
        self.0.0.session_id().to_string()
    }

    /// The current state.
    #[getter]
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::session_state(py, self.0.0.state())
    }

    /// Why the session closed, once it has.
    #[getter]
    fn close_reason<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.0
            .0
            .close_reason()
            .map(|r| convert::close_reason(py, r))
            .transpose()
    }

    /// The reconnection timeout in force, in seconds.
    #[getter]
    fn reconnection_timeout(&self) -> f64 {
        self.0.0.reconnection_timeout().as_secs_f64()
    }

    /// The ping period the server granted on the current connection, in seconds; `None`
    /// while the session is not connected.
    #[getter]
    fn ping_period(&self) -> Option<f64> {
        self.0.0.ping_period().map(|d| d.as_secs_f64())
    }

    /// Queues the publish now, in call order, and returns a future of its completion
    /// (`None` once the server applied it). Raises, with nothing queued, without a running
    /// event loop.
    fn publish<'py>(
        &self,
        py: Python<'py>,
        topic: String,
        value: &[u8],
    ) -> PyResult<Bound<'py, PyAny>> {
        // Everything that can fail, before queueing.
        let value = Bytes::copy_from_slice(value);
        Pending::new(py)?.run(|| {
            let completion = publish(self.session(), topic, value);
            async move { completion.await.map(|()| Done) }
        })
    }

    #[pyo3(signature = (topic, value, timeout = None))]
    fn publish_blocking(
        &self,
        py: Python<'_>,
        topic: String,
        value: &[u8],
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let completion = publish(self.session(), topic, Bytes::copy_from_slice(value));
        block(py, timeout, completion)
    }

    fn subscribe<'py>(&self, py: Python<'py>, selector: String) -> PyResult<Bound<'py, PyAny>> {
        let session = self.session();
        awaitable(py, async move {
            session
                .subscribe(&selector)
                .await
                .map(NativeSubscription::new)
        })
    }

    #[pyo3(signature = (selector, timeout = None))]
    fn subscribe_blocking(
        &self,
        py: Python<'_>,
        selector: String,
        timeout: Option<f64>,
    ) -> PyResult<NativeSubscription> {
        let session = self.session();
        block(py, timeout, async move {
            session
                .subscribe(&selector)
                .await
                .map(NativeSubscription::new)
        })
    }

    fn unsubscribe<'py>(&self, py: Python<'py>, selector: String) -> PyResult<Bound<'py, PyAny>> {
        let session = self.session();
        awaitable(py, async move {
            session.unsubscribe(&selector).await.map(|()| Done)
        })
    }

    #[pyo3(signature = (selector, timeout = None))]
    fn unsubscribe_blocking(
        &self,
        py: Python<'_>,
        selector: String,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let session = self.session();
        block(
            py,
            timeout,
            async move { session.unsubscribe(&selector).await },
        )
    }

    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let session = self.session();
        awaitable(py, async move {
            session.close().await;
            Ok(Done)
        })
    }

    #[pyo3(signature = (timeout = None))]
    fn close_blocking(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let session = self.session();
        block(py, timeout, async move {
            session.close().await;
            Ok(())
        })
    }

    fn closed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let session = self.session();
        awaitable(py, async move { Ok(Reason(session.closed().await)) })
    }

    #[pyo3(signature = (timeout = None))]
    fn closed_blocking<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let session = self.session();
        let reason = block(py, timeout, async move { Ok(session.closed().await) })?;
        convert::close_reason(py, reason)
    }

    fn wait_for_state<'py>(
        &self,
        py: Python<'py>,
        state: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let state = convert::parse_state(py, state)?;
        let session = self.session();
        awaitable(
            py,
            async move { Ok(State(session.wait_for_state(state).await)) },
        )
    }

    #[pyo3(signature = (state, timeout = None))]
    fn wait_for_state_blocking<'py>(
        &self,
        py: Python<'py>,
        state: &Bound<'py, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let state = convert::parse_state(py, state)?;
        let session = self.session();
        let reached = block(py, timeout, async move {
            Ok(session.wait_for_state(state).await)
        })?;
        convert::session_state(py, reached)
    }

    /// State changes from now on, in order, ending after the closed state.
    fn state_changes(&self) -> NativeStateChanges {
        NativeStateChanges(Arc::new(Mutex::new(self.0.0.state_changes())))
    }
}

/// The updates of one subscription, in order; ends when the session closes or the selector
/// is unsubscribed. Waiting for the next update is cancel-safe: an update is either returned
/// or left for the next call.
#[pyclass(frozen, module = "tether._tether")]
pub(crate) struct NativeSubscription {
    selector: String,
    inner: Arc<Mutex<CoreSubscription>>,
}

impl NativeSubscription {
    fn new(sub: CoreSubscription) -> Self {
        NativeSubscription {
            selector: sub.selector().to_owned(),
            inner: Arc::new(Mutex::new(sub)),
        }
    }
}

#[pymethods]
impl NativeSubscription {
    /// The selector.
    #[getter]
    fn selector(&self) -> &str {
        &self.selector
    }

    /// The next update, or `None` once the subscription ended.
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        awaitable(py, async move {
            let mut sub = inner.lock().await;
            Ok(sub.next().await.map(Update::of))
        })
    }

    #[pyo3(signature = (timeout = None))]
    fn next_blocking(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Update>> {
        let inner = self.inner.clone();
        block(py, timeout, async move {
            let mut sub = inner.lock().await;
            Ok(sub.next().await.map(Update::of))
        })
    }

    /// The next updates: the first one to arrive and every one waiting after it, at most
    /// `limit` (one result for the lot), or `None` once the subscription ended.
    #[pyo3(signature = (limit = 256))]
    fn next_batch<'py>(&self, py: Python<'py>, limit: usize) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        let limit = limit.max(1);
        awaitable(py, async move {
            let mut sub = inner.lock().await;
            Ok(sub
                .next_batch(limit)
                .await
                .map(|batch| batch.into_iter().map(Update::of).collect::<Vec<_>>()))
        })
    }

    /// An update if one is waiting (and no other call is waiting for one), without waiting.
    fn try_next(&self) -> Option<Update> {
        self.inner
            .try_lock()
            .ok()
            .and_then(|mut sub| sub.try_next())
            .map(Update::of)
    }
}

/// A session's state changes, in order, ending after the closed state.
#[pyclass(frozen, module = "tether._tether")]
pub(crate) struct NativeStateChanges(Arc<Mutex<StateChanges>>);

#[pymethods]
impl NativeStateChanges {
    /// The next change, or `None` after the closed state.
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.0.clone();
        awaitable(py, async move {
            let mut changes = inner.lock().await;
            Ok(changes.next().await.map(StateChange))
        })
    }

    #[pyo3(signature = (timeout = None))]
    fn next_blocking(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<StateChange>> {
        let inner = self.0.clone();
        block(py, timeout, async move {
            let mut changes = inner.lock().await;
            Ok(changes.next().await.map(StateChange))
        })
    }
}

/// Queues a publish at once (so publishes are sent in the order of the calls, whoever awaits
/// them) and returns its completion. When the send queue is full, falls back to the core's
/// `publish`, which waits for room while connected and fails with `QueueFull` while not.
fn publish(
    session: Session,
    topic: String,
    value: Bytes,
) -> impl Future<Output = Result<(), Error>> + Send + 'static {
    let queued = session.send(&topic, value.clone());
    async move {
        match queued {
            Ok(completion) => completion.await,
            Err(Error::QueueFull(_)) => session.publish(&topic, value).await,
            Err(e) => Err(e),
        }
    }
}

/// The session settings `open` takes besides the URLs, credentials, strategy and callbacks: a
/// dict with every one of these keys (the Python package builds it), each `None` for the core's
/// default.
#[derive(FromPyObject, Default)]
#[pyo3(from_item_all)]
pub(crate) struct Options {
    /// PEM text of certificates to trust for `wss://` besides the system's roots.
    tls_root_certificates: Option<String>,
    /// The ping period to ask the server for, in seconds.
    ping_period: Option<f64>,
    /// Most updates waiting for the application before the session stops reading.
    delivery_limit: Option<usize>,
    /// Most requests kept until acknowledged.
    max_queued_requests: Option<usize>,
    /// Most bytes kept until acknowledged.
    max_queued_bytes: Option<usize>,
    /// How long `close` waits for the requests made before it, in seconds.
    close_timeout: Option<f64>,
}

impl Options {
    fn configure(self, py: Python<'_>, mut b: SessionBuilder) -> PyResult<SessionBuilder> {
        if let Some(pem) = self.tls_root_certificates {
            b = b.tls_root_certificate_pem(pem);
        }
        if let Some(period) = self.ping_period {
            b = b.ping_period(convert::seconds(py, "ping_period", period)?);
        }
        if let Some(limit) = self.delivery_limit {
            b = b.delivery_limit(limit);
        }
        // One given alone leaves the core's default for the other.
        if let Some(n) = self.max_queued_requests {
            b = b.max_queued_requests(n);
        }
        if let Some(n) = self.max_queued_bytes {
            b = b.max_queued_bytes(n);
        }
        if let Some(timeout) = self.close_timeout {
            b = b.close_timeout(convert::seconds(py, "close_timeout", timeout)?);
        }
        Ok(b)
    }
}

/// Everything `open` needs, checked while the caller still holds the GIL.
#[allow(clippy::too_many_arguments)]
fn builder(
    py: Python<'_>,
    url: &str,
    fallback_urls: Vec<String>,
    principal: Option<String>,
    credentials: Option<String>,
    reconnect_timeout: f64,
    strategy: Option<&Bound<'_, PyAny>>,
    on_state: Option<Py<PyAny>>,
    on_gap: Option<Py<PyAny>>,
    connect_timeout: f64,
    strict: bool,
    options: Option<Options>,
) -> PyResult<SessionBuilder> {
    let mut b = Session::builder(url)
        .reconnection_timeout(convert::seconds(
            py,
            "reconnect timeout",
            reconnect_timeout,
        )?)
        .connect_timeout(convert::seconds(py, "connect_timeout", connect_timeout)?)
        .strict(strict);
    for fallback in fallback_urls {
        b = b.fallback_url(fallback);
    }
    if let Some(p) = principal {
        b = b.principal(p);
    }
    if let Some(c) = credentials {
        b = b.password(c);
    }
    if let Some(s) = strategy {
        b = b.reconnection_strategy_arc(strategy::from_py(s)?);
    }
    if on_state.is_some() || on_gap.is_some() {
        b = b.listener(PyListener { on_state, on_gap });
    }
    options.unwrap_or_default().configure(py, b)
}

/// Opens the session. A caller that stops waiting (a cancelled `await`, Ctrl-C) never leaves an
/// open session behind: that guarantee lives in the core.
async fn open_detached(b: SessionBuilder) -> Result<NativeSession, Error> {
    // Cancel-safe as it is: the core opens on its own runtime, and a session opened after
    // nobody waits for it any more is dropped, which closes it.
    b.open().await.map(|s| NativeSession(Owner(s)))
}

/// Opens a session; returns an awaitable of a `NativeSession`.
#[pyfunction]
#[pyo3(signature = (url, *, fallback_urls = Vec::new(), principal = None, credentials = None, reconnect_timeout = 60.0, strategy = None, on_state = None, on_gap = None, connect_timeout = 10.0, strict = false, options = None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn open<'py>(
    py: Python<'py>,
    url: &str,
    fallback_urls: Vec<String>,
    principal: Option<String>,
    credentials: Option<String>,
    reconnect_timeout: f64,
    strategy: Option<&Bound<'py, PyAny>>,
    on_state: Option<Py<PyAny>>,
    on_gap: Option<Py<PyAny>>,
    connect_timeout: f64,
    strict: bool,
    options: Option<Options>,
) -> PyResult<Bound<'py, PyAny>> {
    let b = builder(
        py,
        url,
        fallback_urls,
        principal,
        credentials,
        reconnect_timeout,
        strategy,
        on_state,
        on_gap,
        connect_timeout,
        strict,
        options,
    )?;
    awaitable(py, open_detached(b))
}

/// Opens a session, blocking (with the GIL released) until it is open.
#[pyfunction]
#[pyo3(signature = (url, *, fallback_urls = Vec::new(), principal = None, credentials = None, reconnect_timeout = 60.0, strategy = None, on_state = None, on_gap = None, connect_timeout = 10.0, strict = false, options = None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn open_blocking(
    py: Python<'_>,
    url: &str,
    fallback_urls: Vec<String>,
    principal: Option<String>,
    credentials: Option<String>,
    reconnect_timeout: f64,
    strategy: Option<&Bound<'_, PyAny>>,
    on_state: Option<Py<PyAny>>,
    on_gap: Option<Py<PyAny>>,
    connect_timeout: f64,
    strict: bool,
    options: Option<Options>,
) -> PyResult<NativeSession> {
    let b = builder(
        py,
        url,
        fallback_urls,
        principal,
        credentials,
        reconnect_timeout,
        strategy,
        on_state,
        on_gap,
        connect_timeout,
        strict,
        options,
    )?;
    // Says why Tether cannot start (or that the interpreter is exiting) before connecting.
    bridge::park_if_exiting(py);
    bridge::runtime_handle(py)?;
    block(py, None, open_detached(b))
}
