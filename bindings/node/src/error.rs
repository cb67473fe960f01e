//! Errors as plain data for the JavaScript wrapper, which turns them into `TetherError`s.
//!
//! Promises made here never reject with a bare napi error: they resolve with an [`Outcome`]
//! whose `error` field, when set, carries a stable machine-readable `code` (and the close
//! `reason`, the refusal `kind`), so that JavaScript code branches on `err.code`, never on text.

use napi_derive::napi;
use tether::{CloseReason, RequestErrorKind};

/// A failed operation, as the JavaScript wrapper receives it.
#[napi(object)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// Stable code: a close reason (`authentication_failed`, `connection_error`, ...) for a
    /// session that could not open, `session_closed` (the request was certainly not applied),
    /// `outcome_unknown` (the session closed after the request was sent, before the server
    /// confirmed it: it may have been applied), a refusal kind (`access_denied`,
    /// `invalid_selector`, ...), `invalid_url`, `invalid_argument`, `invalid_topic`,
    /// `queue_full`.
    pub code: String,
    /// The close reason, for errors that carry one.
    pub reason: Option<String>,
    /// The human-readable message.
    pub message: String,
}

/// The stable `snake_case` name of a refusal kind.
pub(crate) fn kind_name(kind: RequestErrorKind) -> &'static str {
    // The core's name for every kind: one name table across the bindings.
    kind.as_str()
}

impl From<&tether::Error> for ErrorInfo {
    fn from(e: &tether::Error) -> Self {
        let reason = e.reason().map(|r| r.as_str().to_owned());
        let code = match e {
            tether::Error::Open { reason, .. } => reason.as_str(),
            tether::Error::Closed { .. } => "session_closed",
            tether::Error::OutcomeUnknown { .. } => "outcome_unknown",
            tether::Error::InvalidUrl { .. } => "invalid_url",
            tether::Error::InvalidArgument(_) => "invalid_argument",
            tether::Error::InvalidTopic(_) => "invalid_topic",
            tether::Error::QueueFull(_) => "queue_full",
            tether::Error::Rejected(r) => kind_name(r.kind),
            _ => "error",
        };
        ErrorInfo {
            code: code.to_owned(),
            reason,
            message: e.to_string(),
        }
    }
}

/// An error of this binding itself (never of the session): the addon could not reach the
/// runtime, or got an argument the JavaScript wrapper should have refused.
pub(crate) fn binding_error(code: &str, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo {
        code: code.to_owned(),
        reason: None,
        message: message.into(),
    }
}

/// The name of a close reason, for events.
pub(crate) fn reason_name(reason: Option<CloseReason>) -> Option<String> {
    reason.map(|r| r.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_carry_the_close_reason_as_code() {
        let e = tether::Error::Open {
            reason: CloseReason::AuthenticationFailed,
            message: "no".into(),
        };
        let info = ErrorInfo::from(&e);
        assert_eq!(info.code, "authentication_failed");
        assert_eq!(info.reason.as_deref(), Some("authentication_failed"));
    }

    #[test]
    fn refusals_carry_their_kind() {
        let e = tether::Error::Rejected(tether::RequestError {
            kind: RequestErrorKind::AccessDenied,
            message: "not for you".into(),
        });
        let info = ErrorInfo::from(&e);
        assert_eq!(info.code, "access_denied");
        assert_eq!(info.reason, None);
        assert!(info.message.contains("not for you"));
    }

    #[test]
    fn closed_sessions_say_why() {
        let e = tether::Error::Closed {
            reason: CloseReason::ReconnectAborted,
        };
        let info = ErrorInfo::from(&e);
        assert_eq!(info.code, "session_closed");
        assert_eq!(info.reason.as_deref(), Some("reconnect_aborted"));
    }

    #[test]
    fn unconfirmed_requests_say_their_outcome_is_unknown() {
        let e = tether::Error::OutcomeUnknown {
            reason: CloseReason::TransportError,
        };
        let info = ErrorInfo::from(&e);
        assert_eq!(info.code, "outcome_unknown");
        assert_eq!(info.reason.as_deref(), Some("transport_error"));
        assert!(info.message.contains("may have been applied"));
    }
}
