//! The panic boundary every `extern "C"` body runs behind.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{ErrorC, FfiError, write_error};

/// Runs `f`; an `Err` or a panic is written to `error` (when not NULL) and gives `on_error`.
///
/// `error` must be NULL or point to a writable `TETHER_ERROR_T`: every caller passes the
/// pointer it received from C under that documented contract.
pub(crate) fn boundary<T>(
    error: *mut ErrorC,
    on_error: T,
    f: impl FnOnce() -> Result<T, FfiError>,
) -> T {
    let err = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => return v,
        Ok(Err(e)) => e,
        Err(panic) => FfiError::Internal(panic_message(panic.as_ref())),
    };
    // A panic while formatting the error must not escape either.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `error` is NULL or writable, per this function's contract.
        unsafe { write_error(error, &err) }
    }));
    on_error
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}
