//! Client session states and the transitions between them (DESIGN §2).

use serde::{Deserialize, Serialize};

use crate::CloseReason;

/// The state of a client session. The three closed states are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionState {
    /// Opening the first connection.
    Connecting,
    /// Connected; messages flow.
    ConnectedActive,
    /// The connection was lost; the reconnection strategy decides when to try again.
    RecoveringReconnect,
    /// Closed by the application.
    ClosedByClient,
    /// Closed by the server.
    ClosedByServer,
    /// Closed because something failed (see the accompanying [`CloseReason`]).
    ClosedFailed,
}

impl SessionState {
    /// Upper-case name as in the documentation (`CONNECTED_ACTIVE`).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Connecting => "CONNECTING",
            SessionState::ConnectedActive => "CONNECTED_ACTIVE",
            SessionState::RecoveringReconnect => "RECOVERING_RECONNECT",
            SessionState::ClosedByClient => "CLOSED_BY_CLIENT",
            SessionState::ClosedByServer => "CLOSED_BY_SERVER",
            SessionState::ClosedFailed => "CLOSED_FAILED",
        }
    }

    /// Every state.
    pub const ALL: [SessionState; 6] = [
        SessionState::Connecting,
        SessionState::ConnectedActive,
        SessionState::RecoveringReconnect,
        SessionState::ClosedByClient,
        SessionState::ClosedByServer,
        SessionState::ClosedFailed,
    ];

    /// Parses [`SessionState::as_str`]'s output (`CONNECTED_ACTIVE`).
    pub fn from_name(name: &str) -> Option<SessionState> {
        SessionState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the state is terminal.
    pub fn is_closed(self) -> bool {
        matches!(
            self,
            SessionState::ClosedByClient
                | SessionState::ClosedByServer
                | SessionState::ClosedFailed
        )
    }

    /// Whether `self → next` is one of the transitions DESIGN §2 allows.
    pub fn can_become(self, next: SessionState) -> bool {
        use SessionState::*;
        match self {
            Connecting => matches!(next, ConnectedActive) || next.is_closed(),
            ConnectedActive => matches!(next, RecoveringReconnect) || next.is_closed(),
            RecoveringReconnect => matches!(next, ConnectedActive) || next.is_closed(),
            ClosedByClient | ClosedByServer | ClosedFailed => false,
        }
    }

    /// The closed state a session ends in for `reason`.
    pub fn closed_for(reason: CloseReason) -> SessionState {
        match reason {
            CloseReason::ClosedByClient => SessionState::ClosedByClient,
            CloseReason::ClosedByServer => SessionState::ClosedByServer,
            _ => SessionState::ClosedFailed,
        }
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::SessionState::*;

    #[test]
    fn names_round_trip() {
        for s in super::SessionState::ALL {
            assert_eq!(super::SessionState::from_name(s.as_str()), Some(s));
        }
        assert_eq!(super::SessionState::from_name("connected"), None);
    }

    #[test]
    fn transitions_follow_the_design() {
        assert!(Connecting.can_become(ConnectedActive));
        assert!(Connecting.can_become(ClosedFailed));
        assert!(!Connecting.can_become(RecoveringReconnect));
        assert!(ConnectedActive.can_become(RecoveringReconnect));
        assert!(!ConnectedActive.can_become(Connecting));
        assert!(RecoveringReconnect.can_become(ConnectedActive));
        assert!(RecoveringReconnect.can_become(ClosedByClient));
        for closed in [ClosedByClient, ClosedByServer, ClosedFailed] {
            for next in [
                Connecting,
                ConnectedActive,
                RecoveringReconnect,
                ClosedFailed,
            ] {
                assert!(!closed.can_become(next));
            }
        }
    }
}
