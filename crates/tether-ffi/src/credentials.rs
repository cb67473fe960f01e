//! `CREDENTIALS_T`.

use std::ffi::c_char;

use crate::strings::arg_str;

/// A principal's credentials (a password). Opaque.
///
/// Ownership: created by `credentials_create_password`, owned by the caller, released with
/// `credentials_free`. `session_create` copies what it needs, so the credentials may be freed
/// as soon as it returns. Immutable, so it may be shared between threads.
pub struct Credentials {
    pub(crate) password: String,
}

/// Credentials made of a password (copied).
///
/// Returns NULL when `password` is NULL or not valid UTF-8. The caller owns the result and
/// releases it with `credentials_free`.
///
/// # Safety
/// `password` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn credentials_create_password(password: *const c_char) -> *mut Credentials {
    crate::boundary::boundary(std::ptr::null_mut(), std::ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or a NUL-terminated string, read only during this call.
        let password = unsafe { arg_str(password, "password") }?;
        Ok(Box::into_raw(Box::new(Credentials {
            password: password.to_owned(),
        })))
    })
}

/// Releases credentials made by `credentials_create_password`. NULL is ignored.
///
/// # Safety
/// `credentials` is NULL or was returned by `credentials_create_password` and not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn credentials_free(credentials: *mut Credentials) {
    crate::boundary::boundary(std::ptr::null_mut(), (), || {
        if !credentials.is_null() {
            // SAFETY: the caller gives back a pointer from Box::into_raw, once.
            drop(unsafe { Box::from_raw(credentials) });
        }
        Ok(())
    })
}
