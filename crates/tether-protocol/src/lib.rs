//! Tether's wire protocol and session machinery, **sans I/O**.
//!
//! This crate has no sockets, no threads and never reads the clock: time comes in as a `now`
//! argument, bytes come in through `handle_*` calls, and frames, timers and events come out of
//! `poll_*` calls. The client ([`client::ClientSession`]) and server
//! ([`server::ServerSession`]) shells are thin tokio loops around these types, so every
//! recovery path can be tested deterministically on a virtual clock.
//!
//! ```text
//!  application ──publish/subscribe──▶ ClientSession ──poll_transmit──▶ WebSocket ──▶ ServerSession
//!       ▲                              │  recovery buffer (unacked)                  │ recovery buffer
//!       └────────poll_event────────────┘  ◀──handle_frame── WebSocket ◀──poll_transmit┘
//! ```
//!
//! - [`frame`]: the binary frames and their codec. Application frames have implicit sequence
//!   numbers; acks are cumulative.
//! - [`handshake`]: session open/resume fields carried in the WebSocket upgrade, so a resume
//!   costs no extra round trip.
//! - [`reliable`]: the bounded recovery buffer with replay and gap detection.
//! - [`schedule`]: the built-in reconnection strategies' delays (backoff, jitter, hints).
//! - [`time`]: the instant type taken as `now` (`std`'s, or the shell's clock in a browser).
//! - [`topic`]: topic paths and selectors.
//! - [`SessionState`] and [`CloseReason`]: the client's states and typed close reasons.
#![warn(missing_docs)]

pub mod client;
pub mod frame;
#[doc(hidden)]
#[cfg(not(all(target_family = "wasm", target_os = "unknown")))]
pub mod fuzz;
pub mod handshake;
mod reason;
pub mod reliable;
pub mod schedule;
pub mod server;
mod state;
pub mod time;
mod timing;
pub mod topic;
pub mod write;

pub use frame::{GapReport, Position, RequestError, RequestErrorKind, Update};
pub use handshake::{ResumeToken, ResumeTokens, SessionId};
pub use reason::CloseReason;
pub use reliable::BufferLimits;
pub use state::SessionState;
pub use timing::{ACK_DELAY, ACK_EVERY, LAZY_ACK_DELAY, LAZY_ACK_EVERY};
pub use topic::{Selector, TopicError};

/// Whether the timer deadline `after` is earlier than `before` (a writer waiting for `before`
/// must be woken to re-arm its timer).
pub fn deadline_moved_earlier(before: Option<time::Instant>, after: Option<time::Instant>) -> bool {
    match (before, after) {
        (Some(b), Some(a)) => a < b,
        (None, Some(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
