//! Tether's C ABI.
//!
//! The C header `include/tether.h` is generated from this crate by cbindgen (see
//! `cbindgen.toml`) and checked in; `tests/header.rs` fails when it is stale. Every function is a
//! thin adapter over the `tether` core: behaviour lives there. Conventions (see README.md):
//!
//! - every `extern "C"` body runs behind a panic boundary ([`boundary`]); a panic becomes
//!   `TETHER_ERROR_INTERNAL`, never an unwind into C;
//! - NULL pointers and invalid UTF-8 from C become a `TETHER_ERROR_T`, never undefined
//!   behaviour (functions without an error parameter return NULL / false, or do nothing);
//! - strings handed to C are allocated with `malloc`, so `free()` releases them as well as
//!   `tether_string_free()`;
//! - callbacks run on the session's callback thread (Tether's blocking pool, one at a time, in
//!   order), never on an async worker, so they may block.

mod boundary;
mod credentials;
mod error;
mod options;
mod session;
mod state;
mod strategy;
mod strings;

pub use credentials::*;
pub use error::*;
pub use options::*;
pub use session::*;
pub use state::*;
pub use strategy::*;
pub use strings::tether_string_free;
