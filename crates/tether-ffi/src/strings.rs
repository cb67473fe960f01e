//! Strings across the boundary: borrowed from C as `&str`, handed to C as `malloc`ed copies.

use std::ffi::{CStr, c_char, c_void};

use crate::error::FfiError;

/// Borrows a NUL-terminated UTF-8 string from C.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid and unchanged for `'a`.
pub(crate) unsafe fn arg_str<'a>(
    ptr: *const c_char,
    name: &'static str,
) -> Result<&'a str, FfiError> {
    if ptr.is_null() {
        return Err(FfiError::NullArgument(name));
    }
    // SAFETY: not NULL, and the caller promises a NUL-terminated string valid for 'a.
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str().map_err(|_| FfiError::InvalidUtf8(name))
}

/// Borrows `length` bytes at `value` from C (a message's value); NULL is allowed only for an
/// empty value.
///
/// # Safety
/// `value` is NULL or readable for `length` bytes, unchanged for `'a`.
pub(crate) unsafe fn arg_bytes<'a>(
    value: *const c_void,
    length: usize,
) -> Result<&'a [u8], FfiError> {
    if length == 0 {
        return Ok(&[]);
    }
    if value.is_null() {
        return Err(FfiError::NullArgument("value"));
    }
    // SAFETY: not NULL, and readable for `length` bytes for 'a, per the caller.
    Ok(unsafe { std::slice::from_raw_parts(value.cast::<u8>(), length) })
}

/// Like [`arg_str`], but NULL is allowed and gives `None`.
///
/// # Safety
/// As [`arg_str`].
pub(crate) unsafe fn opt_str<'a>(
    ptr: *const c_char,
    name: &'static str,
) -> Result<Option<&'a str>, FfiError> {
    if ptr.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { arg_str(ptr, name) }.map(Some)
    }
}

/// A `malloc`ed, NUL-terminated copy of `s` (interior NULs are replaced by U+FFFD so the text
/// is never cut short), or NULL when memory is exhausted. The caller owns it and releases it
/// with `free()` or [`tether_string_free`].
pub(crate) fn malloc_string(s: &str) -> *mut c_char {
    let cleaned;
    let s = if s.contains('\0') {
        cleaned = s.replace('\0', "\u{FFFD}");
        cleaned.as_str()
    } else {
        s
    };
    let len = s.len();
    // SAFETY: malloc has no preconditions; a NULL result is checked before use.
    let p = unsafe { libc::malloc(len + 1) }.cast::<u8>();
    if p.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: `p` has room for len + 1 bytes and does not overlap `s`.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), p, len);
        *p.add(len) = 0;
    }
    p.cast::<c_char>()
}

/// Frees a string this library returned (`session_id_to_string`, `TETHER_ERROR_T.message`).
/// Equivalent to `free()`. NULL is ignored.
///
/// # Safety
/// `s` is NULL or a string returned by this library that has not been freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_string_free(s: *mut c_char) {
    crate::boundary::boundary(std::ptr::null_mut(), (), || {
        // SAFETY: the caller passes NULL or a string we allocated with malloc and still owns
        // it; free(NULL) does nothing.
        unsafe { libc::free(s.cast()) };
        Ok(())
    })
}
