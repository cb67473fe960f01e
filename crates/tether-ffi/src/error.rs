//! `TETHER_ERROR_T`: how a failing call tells C what went wrong.

use std::ffi::{c_char, c_int};

use tether::{CloseReason, RequestErrorKind};

use crate::strings::malloc_string;

/// An error code, the `code` field of `TETHER_ERROR_T` (one of the `TETHER_ERROR_*` values).
pub type ErrorCode = c_int;

/// No error (the value of a zero-initialised `TETHER_ERROR_T`).
pub const TETHER_ERROR_NONE: ErrorCode = 0;
/// A required pointer argument was NULL. The message names the argument.
pub const TETHER_ERROR_NULL_ARGUMENT: ErrorCode = 1;
/// A string argument was not valid UTF-8. The message names the argument.
pub const TETHER_ERROR_INVALID_UTF8: ErrorCode = 2;
/// An argument was out of range or malformed.
pub const TETHER_ERROR_INVALID_ARGUMENT: ErrorCode = 3;
/// The URL could not be used (Tether speaks `ws://host:port[/path]` and `wss://`).
pub const TETHER_ERROR_INVALID_URL: ErrorCode = 4;
/// A topic path or selector is malformed (checked before anything is sent).
pub const TETHER_ERROR_INVALID_TOPIC: ErrorCode = 5;
/// The session could not be opened: the server could not be reached, the handshake failed, ...
pub const TETHER_ERROR_CONNECTION_FAILED: ErrorCode = 6;
/// The server refused the principal or its credentials.
pub const TETHER_ERROR_AUTHENTICATION_FAILED: ErrorCode = 7;
/// The principal may not do this (subscribe or publish outside its permissions).
pub const TETHER_ERROR_ACCESS_DENIED: ErrorCode = 8;
/// The server refused the request for another reason; the session stays open.
pub const TETHER_ERROR_REJECTED: ErrorCode = 9;
/// The session is closed (or closed while the call waited).
pub const TETHER_ERROR_SESSION_CLOSED: ErrorCode = 10;
/// The send queue is full while disconnected; nothing was queued.
pub const TETHER_ERROR_QUEUE_FULL: ErrorCode = 11;
/// Tether's runtime could not be started.
pub const TETHER_ERROR_RUNTIME: ErrorCode = 12;
/// A bug in Tether (a Rust panic, stopped at the boundary). Please report it.
pub const TETHER_ERROR_INTERNAL: ErrorCode = 13;
/// The function may not be called from where it was (e.g. `session_free` from the session's
/// own callback), or could not do all of its work from there (`tether_shutdown` from a
/// callback cannot join the calling thread).
pub const TETHER_ERROR_WRONG_THREAD: ErrorCode = 14;
/// The session closed after the request was written and before the server confirmed it: the
/// server may or may not have applied it. (A request never written fails with
/// `TETHER_ERROR_SESSION_CLOSED` and was certainly not applied.)
pub const TETHER_ERROR_OUTCOME_UNKNOWN: ErrorCode = 15;
/// The call's time ran out before all of its work was done (`tether_shutdown`: a callback or a
/// session was still busy at the deadline).
pub const TETHER_ERROR_TIMED_OUT: ErrorCode = 16;

/// What went wrong, filled in by functions that take a `TETHER_ERROR_T *error` argument (which
/// may be NULL when the caller does not want details).
///
/// Ownership: the struct itself belongs to the caller (usually on its stack, initialised with
/// `TETHER_ERROR_T error = { 0 };`). On failure the library sets `code` and stores in `message`
/// a new `malloc`ed string that the caller owns: release it with `tether_error_free(&error)`
/// (or `free(error.message)`). The library never reads or frees a previous `message`, so free
/// it before reusing the struct. On success the struct is left untouched.
#[repr(C)]
pub struct ErrorC {
    /// One of the `TETHER_ERROR_*` codes.
    pub code: ErrorCode,
    /// A human-readable description (UTF-8, NUL-terminated), or NULL.
    pub message: *mut c_char,
}

/// A failure inside the boundary, before it is written to a `TETHER_ERROR_T`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FfiError {
    #[error("argument `{0}` is NULL")]
    NullArgument(&'static str),
    #[error("argument `{0}` is not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error(transparent)]
    Core(#[from] tether::Error),
    #[error("cannot start Tether's runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("internal error (please report it): {0}")]
    Internal(String),
    #[error("{0}")]
    WrongThread(&'static str),
    #[error("{0}")]
    TimedOut(&'static str),
}

impl FfiError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            FfiError::NullArgument(_) => TETHER_ERROR_NULL_ARGUMENT,
            FfiError::InvalidUtf8(_) => TETHER_ERROR_INVALID_UTF8,
            FfiError::Runtime(_) => TETHER_ERROR_RUNTIME,
            FfiError::Internal(_) => TETHER_ERROR_INTERNAL,
            FfiError::WrongThread(_) => TETHER_ERROR_WRONG_THREAD,
            FfiError::TimedOut(_) => TETHER_ERROR_TIMED_OUT,
            FfiError::Core(e) => core_code(e),
        }
    }
}

fn core_code(e: &tether::Error) -> ErrorCode {
    match e {
        tether::Error::InvalidUrl { .. } => TETHER_ERROR_INVALID_URL,
        tether::Error::InvalidArgument(_) => TETHER_ERROR_INVALID_ARGUMENT,
        tether::Error::InvalidTopic(_) => TETHER_ERROR_INVALID_TOPIC,
        tether::Error::Open { reason, .. } => match reason {
            CloseReason::AuthenticationFailed => TETHER_ERROR_AUTHENTICATION_FAILED,
            CloseReason::AccessDenied => TETHER_ERROR_ACCESS_DENIED,
            _ => TETHER_ERROR_CONNECTION_FAILED,
        },
        tether::Error::Closed { .. } => TETHER_ERROR_SESSION_CLOSED,
        tether::Error::OutcomeUnknown { .. } => TETHER_ERROR_OUTCOME_UNKNOWN,
        tether::Error::QueueFull(_) => TETHER_ERROR_QUEUE_FULL,
        tether::Error::Rejected(r) if r.kind == RequestErrorKind::AccessDenied => {
            TETHER_ERROR_ACCESS_DENIED
        }
        tether::Error::Rejected(_) => TETHER_ERROR_REJECTED,
        _ => TETHER_ERROR_INTERNAL,
    }
}

/// Writes `err` into the caller's `TETHER_ERROR_T`, if it gave one.
///
/// # Safety
/// `error` is NULL or points to a writable `TETHER_ERROR_T`.
pub(crate) unsafe fn write_error(error: *mut ErrorC, err: &FfiError) {
    if error.is_null() {
        return;
    }
    let message = malloc_string(&err.to_string());
    // SAFETY: `error` is not NULL and the caller promises it is writable. Raw field writes: no
    // reference to possibly uninitialised caller memory is made, and the old message is not
    // read (it may be garbage).
    unsafe {
        std::ptr::addr_of_mut!((*error).code).write(err.code());
        std::ptr::addr_of_mut!((*error).message).write(message);
    }
}

/// Releases the message of a `TETHER_ERROR_T` filled in by this library and resets it to
/// `{ TETHER_ERROR_NONE, NULL }`, ready for reuse. The struct itself is not freed (it belongs
/// to the caller). NULL is ignored; calling it twice is harmless.
///
/// # Safety
/// `error` is NULL or points to a `TETHER_ERROR_T` whose `message` is NULL or a string this
/// library stored there and that has not been freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_error_free(error: *mut ErrorC) {
    crate::boundary::boundary(std::ptr::null_mut(), (), || {
        if error.is_null() {
            return Ok(());
        }
        // SAFETY: `error` is not NULL; the caller promises `message` is NULL or ours.
        unsafe {
            let message = std::ptr::addr_of_mut!((*error).message);
            libc::free(message.read().cast());
            message.write(std::ptr::null_mut());
            std::ptr::addr_of_mut!((*error).code).write(TETHER_ERROR_NONE);
        }
        Ok(())
    })
}
