//! `SESSION_OPTIONS_T` (what `session_create_with_options` adds to `session_create`), the gap
//! report handed to `on_gap`, and the completion callback of `session_send`.

use std::ffi::{c_char, c_void};
use std::time::Duration;

use tether::SessionBuilder;

use crate::error::{ErrorCode, FfiError};
use crate::session::SessionHandle;
use crate::strings::opt_str;

/// How many updates of one topic an outage lost (an element of `GAP_REPORT_T.topics`).
#[repr(C)]
pub struct TopicLossC {
    /// The topic path (NUL-terminated UTF-8), valid during the `on_gap` call.
    pub topic: *const c_char,
    /// Updates of it that were lost.
    pub count: u64,
}

/// Messages the server could not replay after a resume (its recovery buffer overflowed during
/// the outage); the current values of the topics follow as snapshots.
///
/// Ownership: the library's, valid during the `on_gap` call only (copy what you keep).
#[repr(C)]
pub struct GapReportC {
    /// First lost server sequence number.
    pub lost_from: u64,
    /// Last lost server sequence number (inclusive).
    pub lost_to: u64,
    /// How many sequenced messages were lost.
    pub lost_count: u64,
    /// The topics whose updates were lost: `topic_count` elements.
    pub topics: *const TopicLossC,
    /// The number of elements at `topics`.
    pub topic_count: usize,
}

/// Called when messages were lost during an outage (see `GAP_REPORT_T`), on the session's
/// callback thread, in order with its other callbacks; `session_listener_context` gives the
/// listener's context. `session` and `report` are valid during the call.
pub type GapCb =
    Option<unsafe extern "C" fn(session: *mut SessionHandle, report: *const GapReportC)>;

/// Called once with the outcome of a `session_send`: `code` is `TETHER_ERROR_NONE` when the
/// server applied the publish, else why not (`TETHER_ERROR_ACCESS_DENIED`, `_REJECTED`,
/// `_SESSION_CLOSED`: never sent, not applied; `_OUTCOME_UNKNOWN`: sent, not confirmed, maybe
/// applied), with a description in `message` (NULL on success), valid during the call. Called
/// on a library thread (never an async worker), one at a time per session and in the order of
/// the sends; `context` is the pointer given to `session_send`.
pub type PublishDoneCb =
    Option<unsafe extern "C" fn(context: *mut c_void, code: ErrorCode, message: *const c_char)>;

/// What `session_create_with_options` adds to `session_create`. Zero means the default for
/// every field (`SESSION_OPTIONS_T options = { 0 };` is the defaults), so fields added later
/// keep old programs' behaviour. Copied by `session_create_with_options`: it may live on the
/// caller's stack, and its strings are read during the call only.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SessionOptionsC {
    /// Certificates to trust for `wss://` in addition to the system's roots (a private CA),
    /// as PEM text (NUL-terminated; several certificates may follow each other); NULL: the
    /// system's roots only.
    pub tls_root_certificates_pem: *const c_char,
    /// The ping period to ask the server for, in ms (it grants one within its bounds, by
    /// default 1 s to 60 s; `session_ping_period_ms` tells which); 0: the server's own. A
    /// connection silent for one and a half periods is taken as dead.
    pub ping_period_ms: u32,
    /// Most updates that may wait for the application's handlers, across the session's
    /// subscriptions (0: 10,000). Past it the session stops reading, so a consumer slower than
    /// the stream costs bounded memory; the server's slow-consumer handling then ends the
    /// connection and the resume reports what was dropped (`on_gap`).
    pub delivery_limit: u32,
    /// Close the session (reason `lost_messages`) rather than resume with a gap report.
    pub strict: bool,
    /// Most requests kept until the server acknowledges them, including those made while
    /// disconnected (0: 10,000); past it `session_send` fails with `TETHER_ERROR_QUEUE_FULL`.
    pub max_queued_requests: u32,
    /// Most bytes kept until the server acknowledges them (0: 8 MiB).
    pub max_queued_bytes: u64,
    /// How long `session_close` waits for the requests made before it to be sent and confirmed,
    /// in ms (0: 5 s); past it those sent fail with `TETHER_ERROR_OUTCOME_UNKNOWN`, the others
    /// with `TETHER_ERROR_SESSION_CLOSED`.
    pub close_timeout_ms: u32,
    /// Time allowed for each connection (TCP, TLS and the upgrade), in ms (0: 10 s).
    pub connect_timeout_ms: u32,
    /// Called with each gap report; NULL for none.
    pub on_gap: GapCb,
}

impl SessionOptionsC {
    /// Applies the options to a session being built.
    ///
    /// # Safety
    /// `tls_root_certificates_pem` is NULL or NUL-terminated, valid during this call.
    pub(crate) unsafe fn configure(
        &self,
        mut b: SessionBuilder,
    ) -> Result<SessionBuilder, FfiError> {
        // SAFETY: NULL or NUL-terminated and valid during this call, per this function's
        // contract.
        let pem = unsafe { opt_str(self.tls_root_certificates_pem, "tls_root_certificates_pem") }?;
        if let Some(pem) = pem {
            b = b.tls_root_certificate_pem(pem.as_bytes());
        }
        let ms = |n: u32| Duration::from_millis(n.into());
        if self.ping_period_ms > 0 {
            b = b.ping_period(ms(self.ping_period_ms));
        }
        if self.delivery_limit > 0 {
            b = b.delivery_limit(self.delivery_limit as usize);
        }
        // 0 leaves the core's default, for each bound on its own.
        if self.max_queued_requests > 0 {
            b = b.max_queued_requests(self.max_queued_requests as usize);
        }
        if self.max_queued_bytes > 0 {
            b = b.max_queued_bytes(usize::try_from(self.max_queued_bytes).unwrap_or(usize::MAX));
        }
        if self.close_timeout_ms > 0 {
            b = b.close_timeout(ms(self.close_timeout_ms));
        }
        if self.connect_timeout_ms > 0 {
            b = b.connect_timeout(ms(self.connect_timeout_ms));
        }
        Ok(b.strict(self.strict))
    }
}
