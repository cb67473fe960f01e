//! Tether: real-time client sessions that survive bad networks.
//!
//! A [`Session`] connects to a Tether server over WebSocket. When the connection drops, the
//! session enters `RECOVERING_RECONNECT` and a [`strategy::ReconnectionStrategy`] decides when to
//! try again (`start`) or give up (`abort`). On success the session resumes where it was: same
//! session id, same subscriptions, and every message in both directions delivered once, in
//! order. If something cannot be recovered, the session says so (a gap report, or a closed state
//! with a typed [`CloseReason`]); it never resumes with a silent gap.
//!
//! ```text
//!   CONNECTING ──▶ CONNECTED_ACTIVE ──(lost)──▶ RECOVERING_RECONNECT ──(resumed)──▶ CONNECTED_ACTIVE
//!        │               │                             │
//!        └───────────────┴──────────▶ CLOSED_BY_CLIENT | CLOSED_BY_SERVER | CLOSED_FAILED
//! ```
//!
//! ```no_run
//! # async fn run() -> Result<(), tether::Error> {
//! use std::time::Duration;
//! use tether::Session;
//!
//! let session = Session::builder("ws://127.0.0.1:8080")
//!     .principal("control")
//!     .password("password")
//!     .reconnection_timeout(Duration::from_secs(30))
//!     .open()
//!     .await?;
//! let mut prices = session.subscribe("prices/**").await?;
//! session.publish("prices/acme", "42.0").await?;
//! while let Some(update) = prices.next().await {
//!     println!("{} = {:?}", update.topic, update.value);
//! }
//! session.close().await;
//! # Ok(()) }
//! ```
//!
//! Sessions run on a runtime Tether owns, so they work from any executor or thread;
//! [`shutdown`] closes every session and stops it. Strategies and listeners run on a
//! per-session callback thread, never on an async worker and never under a lock.
//!
//! To test your own strategy without a network, see [`testing`].
#![warn(missing_docs)]

mod completion;
mod connect;
mod delivery;
mod error;
pub mod runtime;
mod session;
pub mod strategy;
pub mod testing;

pub use completion::Completion;
pub use delivery::Subscription;
pub use error::Error;
pub use runtime::shutdown;
pub use session::{
    GapReports, Session, SessionBuilder, SessionListener, StateChange, StateChanges, TopicUpdate,
};
pub use strategy::{AttemptInfo, ReconnectionAttempt, ReconnectionStrategy};
pub use tether_protocol::{
    CloseReason, GapReport, Position, RequestError, RequestErrorKind, SessionId, SessionState,
};
