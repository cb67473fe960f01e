//! Conversions between the core's types and the Python package's enums and exceptions, which
//! are plain Python (`tether._types`, `tether._errors`) so they can be real `enum.Enum`s and
//! use multiple inheritance (`ConnectionFailedError` is also a builtin `ConnectionError`).

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;
use tether::{CloseReason, Error, RequestErrorKind, SessionState};

static TYPES: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn module<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyModule>>,
    name: &str,
) -> PyResult<Bound<'py, PyModule>> {
    cell.get_or_try_init(py, || py.import(name).map(Bound::unbind))
        .map(|m| m.bind(py).clone())
}

/// Every session state, for parsing names.
const STATES: [SessionState; 6] = [
    SessionState::Connecting,
    SessionState::ConnectedActive,
    SessionState::RecoveringReconnect,
    SessionState::ClosedByClient,
    SessionState::ClosedByServer,
    SessionState::ClosedFailed,
];

/// `tether.SessionState` member for `state`.
pub(crate) fn session_state(py: Python<'_>, state: SessionState) -> PyResult<Bound<'_, PyAny>> {
    module(py, &TYPES, "tether._types")?
        .getattr("SessionState")?
        .call1((state.as_str(),))
}

/// `tether.CloseReason` member for `reason`.
pub(crate) fn close_reason(py: Python<'_>, reason: CloseReason) -> PyResult<Bound<'_, PyAny>> {
    module(py, &TYPES, "tether._types")?
        .getattr("CloseReason")?
        .call1((reason.as_str(),))
}

/// Parses a `tether.SessionState` (or its name).
pub(crate) fn parse_state(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<SessionState> {
    let name: String = value.extract().map_err(|_| {
        invalid_argument(py, "expected a tether.SessionState or its name".to_owned())
    })?;
    STATES
        .into_iter()
        .find(|s| s.as_str() == name)
        .ok_or_else(|| invalid_argument(py, format!("unknown session state {name:?}")))
}

/// A non-negative, finite number of seconds.
pub(crate) fn seconds(py: Python<'_>, what: &str, value: f64) -> PyResult<Duration> {
    if !value.is_finite() || value < 0.0 {
        return Err(invalid_argument(
            py,
            format!("{what} must be a finite, non-negative number of seconds (got {value})"),
        ));
    }
    Duration::try_from_secs_f64(value)
        .map_err(|e| invalid_argument(py, format!("{what} is out of range: {e}")))
}

/// `tether.InvalidArgumentError(message)`.
pub(crate) fn invalid_argument(py: Python<'_>, message: String) -> PyErr {
    tether_error(py, "InvalidArgumentError", &message)
}

/// An instance of the `tether._errors` class `class`, without a reason.
pub(crate) fn tether_error(py: Python<'_>, class: &str, message: &str) -> PyErr {
    build(py, class, message, None, None).unwrap_or_else(|e| e)
}

/// The `tether` exception for a core error.
pub(crate) fn error(py: Python<'_>, e: &Error) -> PyErr {
    let message = e.to_string();
    let (class, kind) = match e {
        Error::InvalidUrl { .. } | Error::InvalidArgument(_) => ("InvalidArgumentError", None),
        // Checked before sending: the same kind the server would name it with.
        Error::InvalidTopic(_) => (
            "InvalidArgumentError",
            Some(RequestErrorKind::InvalidTopic.as_str()),
        ),
        Error::Open { reason, .. } => (
            match reason {
                CloseReason::AuthenticationFailed => "AuthenticationError",
                CloseReason::ConnectionError
                | CloseReason::TransportError
                | CloseReason::IdleConnection => "ConnectionFailedError",
                _ => "OpenError",
            },
            None,
        ),
        Error::Closed { .. } => ("SessionClosedError", None),
        Error::OutcomeUnknown { .. } => ("OutcomeUnknownError", None),
        Error::QueueFull(_) => ("QueueFullError", None),
        Error::Rejected(r) => (
            if r.kind == RequestErrorKind::AccessDenied {
                "AccessDeniedError"
            } else {
                "RequestRejectedError"
            },
            // The core's name, for every kind (one name table across the bindings).
            Some(r.kind.as_str()),
        ),
        _ => ("TetherError", None),
    };
    build(py, class, &message, e.reason(), kind).unwrap_or_else(|failure| failure)
}

fn build(
    py: Python<'_>,
    class: &str,
    message: &str,
    reason: Option<CloseReason>,
    kind: Option<&str>,
) -> PyResult<PyErr> {
    let reason = reason.map(|r| close_reason(py, r)).transpose()?;
    let exc = module(py, &ERRORS, "tether._errors")?
        .getattr(class)?
        .call1((message, reason, kind))?;
    Ok(PyErr::from_value(exc))
}
