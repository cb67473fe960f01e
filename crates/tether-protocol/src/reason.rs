//! Why a connection or a session ended.

use serde::{Deserialize, Serialize};

/// The typed reason that accompanies every disconnection and every closing.
///
/// [`CloseReason::allows_reconnect`] says whether a session that lost its connection for this
/// reason may enter `RECOVERING_RECONNECT`; the others close the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CloseReason {
    /// The application closed the session.
    ClosedByClient,
    /// The server closed the session (an operator, a shutdown, or a server-side close).
    ClosedByServer,
    /// The reconnection strategy called `abort()`.
    ReconnectAborted,
    /// The client's reconnection timeout elapsed before a resume succeeded.
    ReconnectTimeout,
    /// The principal or credentials were refused.
    AuthenticationFailed,
    /// The upgrade request or response was malformed or incomplete.
    HandshakeError,
    /// The peer speaks a protocol version this side does not.
    ProtocolVersionMismatch,
    /// The connection broke (reset, unexpected end of stream, malformed frame).
    TransportError,
    /// No connection could be established (refused, unreachable, DNS).
    ConnectionError,
    /// Nothing was received for one and a half ping periods: the connection is presumed dead.
    IdleConnection,
    /// Messages could not be recovered and the session is strict about gaps.
    LostMessages,
    /// The server does not know the session (it expired, or was never there).
    UnknownSession,
    /// The principal may not do what it asked.
    AccessDenied,
    /// A configured limit was exceeded (frame size, sessions per principal, queue depth).
    LimitExceeded,
    /// The server is going away (a restart, a deploy): reconnect, to it or another server,
    /// after the hint it gave. Nothing is lost: it completed every request it applied first.
    ServerDraining,
    /// The server cannot take the session now (overloaded, starting, its store unreachable):
    /// try again after the hint it gave, possibly elsewhere.
    ServerBusy,
}

impl CloseReason {
    /// Every reason, for tables and tests.
    pub const ALL: [CloseReason; 16] = [
        CloseReason::ClosedByClient,
        CloseReason::ClosedByServer,
        CloseReason::ReconnectAborted,
        CloseReason::ReconnectTimeout,
        CloseReason::AuthenticationFailed,
        CloseReason::HandshakeError,
        CloseReason::ProtocolVersionMismatch,
        CloseReason::TransportError,
        CloseReason::ConnectionError,
        CloseReason::IdleConnection,
        CloseReason::LostMessages,
        CloseReason::UnknownSession,
        CloseReason::AccessDenied,
        CloseReason::LimitExceeded,
        CloseReason::ServerDraining,
        CloseReason::ServerBusy,
    ];

    /// Whether losing a connection for this reason lets the session try to resume.
    ///
    /// Network failures do, and a server that asks to be retried (draining, busy); everything
    /// else is a decision (by the client, the server or the strategy) or a refusal that a
    /// retry would meet again.
    pub fn allows_reconnect(self) -> bool {
        matches!(
            self,
            CloseReason::TransportError
                | CloseReason::ConnectionError
                | CloseReason::IdleConnection
                | CloseReason::ServerDraining
                | CloseReason::ServerBusy
        )
    }

    /// A stable, machine-readable name (`snake_case`), used on the wire and by the bindings.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClosedByClient => "closed_by_client",
            CloseReason::ClosedByServer => "closed_by_server",
            CloseReason::ReconnectAborted => "reconnect_aborted",
            CloseReason::ReconnectTimeout => "reconnect_timeout",
            CloseReason::AuthenticationFailed => "authentication_failed",
            CloseReason::HandshakeError => "handshake_error",
            CloseReason::ProtocolVersionMismatch => "protocol_version_mismatch",
            CloseReason::TransportError => "transport_error",
            CloseReason::ConnectionError => "connection_error",
            CloseReason::IdleConnection => "idle_connection",
            CloseReason::LostMessages => "lost_messages",
            CloseReason::UnknownSession => "unknown_session",
            CloseReason::AccessDenied => "access_denied",
            CloseReason::LimitExceeded => "limit_exceeded",
            CloseReason::ServerDraining => "server_draining",
            CloseReason::ServerBusy => "server_busy",
        }
    }

    /// Parses [`CloseReason::as_str`]'s output.
    pub fn from_name(name: &str) -> Option<CloseReason> {
        CloseReason::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for reason in CloseReason::ALL {
            assert!(seen.insert(reason.as_str()));
            assert_eq!(CloseReason::from_name(reason.as_str()), Some(reason));
        }
        assert_eq!(CloseReason::from_name("nope"), None);
    }

    #[test]
    fn only_network_failures_and_servers_asking_for_a_retry_allow_reconnect() {
        let allowed: Vec<_> = CloseReason::ALL
            .into_iter()
            .filter(|r| r.allows_reconnect())
            .collect();
        assert_eq!(
            allowed,
            [
                CloseReason::TransportError,
                CloseReason::ConnectionError,
                CloseReason::IdleConnection,
                CloseReason::ServerDraining,
                CloseReason::ServerBusy
            ]
        );
    }
}
