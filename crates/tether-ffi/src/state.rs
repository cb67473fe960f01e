//! `SESSION_STATE_T` and the state helpers that need no session.

use std::ffi::{CStr, c_char, c_int};

use tether::{CloseReason, SessionState};

/// A session state: one of `CONNECTING`, `CONNECTED_ACTIVE`, `RECOVERING_RECONNECT`,
/// `CLOSED_BY_CLIENT`, `CLOSED_BY_SERVER`, `CLOSED_FAILED` (the three `CLOSED_*` states are
/// terminal), or `SESSION_STATE_UNKNOWN` for a NULL session.
///
/// A plain `int` (not a C `enum`) so that any value C passes back, even an invalid one, is
/// well defined: `session_state_as_string` answers `"UNKNOWN"` for it.
pub type SessionStateValue = c_int;

/// Not a state: what `session_state_get(NULL)` answers.
pub const SESSION_STATE_UNKNOWN: SessionStateValue = -1;
/// Opening the first connection.
pub const CONNECTING: SessionStateValue = 0;
/// Connected; messages flow.
pub const CONNECTED_ACTIVE: SessionStateValue = 1;
/// The connection was lost; the reconnection strategy decides when to try again.
pub const RECOVERING_RECONNECT: SessionStateValue = 2;
/// Closed by the application (`session_close`). Terminal.
pub const CLOSED_BY_CLIENT: SessionStateValue = 3;
/// Closed by the server. Terminal.
pub const CLOSED_BY_SERVER: SessionStateValue = 4;
/// Closed because something failed: reconnection aborted or timed out, authentication, ...
/// (`session_close_reason` says which). Terminal.
pub const CLOSED_FAILED: SessionStateValue = 5;

pub(crate) fn state_value(state: SessionState) -> SessionStateValue {
    match state {
        SessionState::Connecting => CONNECTING,
        SessionState::ConnectedActive => CONNECTED_ACTIVE,
        SessionState::RecoveringReconnect => RECOVERING_RECONNECT,
        SessionState::ClosedByClient => CLOSED_BY_CLIENT,
        SessionState::ClosedByServer => CLOSED_BY_SERVER,
        SessionState::ClosedFailed => CLOSED_FAILED,
    }
}

/// The core's name of a state value (`SessionState::as_str`), `"UNKNOWN"` for any other value.
fn state_name(state: SessionStateValue) -> &'static CStr {
    static NAMES: std::sync::OnceLock<Vec<(SessionStateValue, std::ffi::CString)>> =
        std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| {
            SessionState::ALL
                .iter()
                .map(|s| {
                    (
                        state_value(*s),
                        std::ffi::CString::new(s.as_str()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .iter()
        .find(|(v, _)| *v == state)
        .map_or(c"UNKNOWN", |(_, name)| name.as_c_str())
}

#[unsafe(no_mangle)]
pub extern "C" fn session_state_as_string(state: SessionStateValue) -> *const c_char {
    crate::boundary::boundary(std::ptr::null_mut(), c"UNKNOWN".as_ptr(), || {
        Ok(state_name(state).as_ptr())
    })
}

/// The stable snake_case name of a close reason, NUL-terminated: the core's
/// [`CloseReason::as_str`], made C strings once.
pub(crate) fn reason_name(reason: CloseReason) -> &'static CStr {
    static NAMES: std::sync::OnceLock<Vec<(CloseReason, std::ffi::CString)>> =
        std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| {
            CloseReason::ALL
                .iter()
                .map(|r| (*r, std::ffi::CString::new(r.as_str()).unwrap_or_default()))
                .collect()
        })
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or(c"unknown", |(_, name)| name.as_c_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_match_the_core() {
        for reason in CloseReason::ALL {
            assert_eq!(reason_name(reason).to_str(), Ok(reason.as_str()));
        }
    }

    #[test]
    fn state_names_match_the_core() {
        use SessionState::*;
        for s in [
            Connecting,
            ConnectedActive,
            RecoveringReconnect,
            ClosedByClient,
            ClosedByServer,
            ClosedFailed,
        ] {
            assert_eq!(state_name(state_value(s)).to_str(), Ok(s.as_str()));
        }
        assert_eq!(state_name(42).to_str(), Ok("UNKNOWN"));
    }
}
