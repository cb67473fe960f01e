//! Errors of the client API.

use tether_protocol::client::QueueFull;
use tether_protocol::{CloseReason, RequestError, RequestErrorKind, TopicError};

/// What went wrong with a session operation.
///
/// Branch on [`Error::reason`] and [`Error::request_error_kind`] rather than on the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL could not be used.
    #[error("invalid URL {url:?}: {message}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why.
        message: String,
    },
    /// An argument was out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The session could not be opened: authentication failed, the server could not be
    /// reached, the handshake failed, ...
    #[error("cannot open session ({reason}): {message}")]
    Open {
        /// The typed cause.
        reason: CloseReason,
        /// Details.
        message: String,
    },
    /// The session is closed (or closed while the operation waited).
    #[error("session closed ({reason})")]
    Closed {
        /// Why the session closed.
        reason: CloseReason,
    },
    /// The session closed after this request was written and before the server confirmed
    /// it: the server may or may not have applied it (a request that was never written fails
    /// with [`Error::Closed`] instead, and was certainly not applied). Check the application's
    /// state before retrying it.
    #[error(
        "session closed ({reason}) before the server confirmed the request; it may have been applied"
    )]
    OutcomeUnknown {
        /// Why the session closed.
        reason: CloseReason,
    },
    /// The send queue is full while disconnected; nothing was queued.
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
    /// The server refused the request; the session stays open.
    #[error("request refused: {0}")]
    Rejected(#[from] RequestError),
    /// A topic path or selector is malformed (checked before anything is sent).
    #[error(transparent)]
    InvalidTopic(#[from] TopicError),
}

impl Error {
    /// The close reason, for errors that carry one.
    pub fn reason(&self) -> Option<CloseReason> {
        match self {
            Error::Open { reason, .. }
            | Error::Closed { reason }
            | Error::OutcomeUnknown { reason } => Some(*reason),
            _ => None,
        }
    }

    /// The refusal kind, for [`Error::Rejected`].
    pub fn request_error_kind(&self) -> Option<RequestErrorKind> {
        match self {
            Error::Rejected(e) => Some(e.kind),
            _ => None,
        }
    }

    /// Whether the server refused the request for lack of permission.
    pub fn is_access_denied(&self) -> bool {
        self.request_error_kind() == Some(RequestErrorKind::AccessDenied)
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::InvalidUrl { .. } | Error::InvalidArgument(_) | Error::InvalidTopic(_) => {
                std::io::ErrorKind::InvalidInput
            }
            Error::Open { reason, .. } if *reason == CloseReason::ConnectionError => {
                std::io::ErrorKind::ConnectionRefused
            }
            Error::Closed { .. } | Error::OutcomeUnknown { .. } => std::io::ErrorKind::NotConnected,
            Error::QueueFull(_) => std::io::ErrorKind::WouldBlock,
            Error::Rejected(r) if r.kind == RequestErrorKind::AccessDenied => {
                std::io::ErrorKind::PermissionDenied
            }
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}
