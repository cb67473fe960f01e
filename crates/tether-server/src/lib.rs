//! The Tether session server, as a library that tests and the demo embed, and as the
//! `tether-server` binary.
//!
//! ```no_run
//! # async fn run() -> Result<(), tether_server::ServerError> {
//! let mut config = tether_server::ServerConfig::dev();
//! config.listen = "127.0.0.1:0".parse().expect("address");
//! let server = tether_server::Server::bind(config).await?;
//! println!("listening on {}", server.url());
//! server.publish("news/today", "hello").await.expect("valid topic");
//! # Ok(()) }
//! ```
//!
//! A session that loses its connection is kept for min(client request, server maximum)
//! (`max_reconnect_timeout_ms`, default 300 s), then freed with its subscriptions; a client that
//! asked for 0 is freed at once.
#![warn(missing_docs)]

pub mod auth;
pub mod config;
mod failpoint;
mod handshake;
mod metrics;
mod server;
mod state;
mod store;
mod tls;
pub mod topics;

pub use config::{ConfigError, ServerConfig};
pub use server::{DrainReport, PublishError, Server, ServerError, SessionInfo};
pub use state::StateError;
pub use store::StoreError;
pub use tether_protocol as protocol;

/// Fuzz targets (see `fuzz/` and `cargo xtask fuzz`); not part of the public API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::handshake::{
        fuzz_seeds as upgrade_head_seeds, fuzz_upgrade_head as upgrade_head,
    };
}
