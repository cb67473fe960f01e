//! Fault-injecting TCP proxy for end-to-end tests of Tether sessions.
//!
//! [`FaultProxy`] listens on a local address and forwards every accepted TCP
//! connection to an upstream address. While it runs, a test can inject the
//! network faults that Tether sessions must survive:
//!
//! * [`FaultProxy::cut`] — close every current connection with a TCP reset
//!   ([`CutMode::Rst`]) or an orderly shutdown ([`CutMode::Fin`]);
//! * [`FaultProxy::stall`] — stop forwarding on every current connection
//!   without closing it (a half-open connection as seen by both peers);
//! * [`FaultProxy::refuse`] — reset new connections as soon as they arrive;
//! * [`FaultProxy::set_delay`] — add one-way latency in both directions;
//! * [`FaultProxy::heal`] — undo refuse and delay, and drop stalled connections.
//!
//! The same features are available to tests written in other languages through
//! the `tether-faultproxy` binary and its HTTP control API (see
//! [`serve_control`] and the crate README).
//!
//! ```no_run
//! # async fn demo(upstream: std::net::SocketAddr) -> std::io::Result<()> {
//! use tether_testkit::{CutMode, FaultProxy};
//!
//! let proxy = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), upstream).await?;
//! let client = tokio::net::TcpStream::connect(proxy.local_addr()).await?;
//! proxy.wait_for_forwarded(1).await;
//! assert_eq!(proxy.cut(CutMode::Rst), 1);
//! # drop(client);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod control;
mod forward;
pub mod processes;
mod proxy;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use control::serve_control;
pub use proxy::FaultProxy;

/// How [`FaultProxy::cut`] closes connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CutMode {
    /// Abortive close: both sockets are closed with `SO_LINGER` 0, so both
    /// peers receive a TCP reset (`ECONNRESET`).
    Rst,
    /// Orderly close: both sockets are shut down for writing (both peers read
    /// end-of-file), remaining input is drained for a short while, then the
    /// sockets are closed.
    Fin,
}

impl CutMode {
    /// The lowercase name used by [`FromStr`], [`fmt::Display`] and the control API.
    pub fn as_str(self) -> &'static str {
        match self {
            CutMode::Rst => "rst",
            CutMode::Fin => "fin",
        }
    }
}

impl fmt::Display for CutMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when parsing a [`CutMode`] from a string that is neither
/// `"rst"` nor `"fin"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cut mode {0:?}: expected \"rst\" or \"fin\"")]
pub struct ParseCutModeError(pub String);

impl FromStr for CutMode {
    type Err = ParseCutModeError;

    /// Parses `"rst"` or `"fin"` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("rst") {
            Ok(CutMode::Rst)
        } else if s.eq_ignore_ascii_case("fin") {
            Ok(CutMode::Fin)
        } else {
            Err(ParseCutModeError(s.to_owned()))
        }
    }
}

/// Counters and current state of a [`FaultProxy`], as returned by
/// [`FaultProxy::stats`] and by the control API's `GET /status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStats {
    /// TCP connections accepted on the listening socket since start,
    /// including the ones that were then refused or failed to reach upstream.
    pub accepted_total: u64,
    /// Connections that were connected to the upstream (and so forwarded) since start.
    pub forwarded_total: u64,
    /// Connections reset on arrival because the proxy was refusing.
    pub refused_total: u64,
    /// Connections reset because the upstream could not be reached.
    pub upstream_failures: u64,
    /// Connections closed by [`FaultProxy::cut`] since start (summed over all calls).
    pub cuts_total: u64,
    /// Connections currently open and not stalled (forwarding, or connecting upstream).
    pub active: u64,
    /// Connections currently stalled.
    pub stalled: u64,
    /// Current one-way delay in milliseconds (0 = none).
    pub delay_ms: u64,
    /// Whether new connections are currently being refused.
    pub refusing: bool,
}
