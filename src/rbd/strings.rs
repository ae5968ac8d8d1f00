//! Strings across the C boundary: Rust names as C strings, and strings of
//! unknown length read back from librbd and librados, which answer -ERANGE
//! when the buffer is too small. A leaf: every other part of `rbd` may use
//! it, it uses none of them.

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::{c_char, c_int};

use nix::errno::Errno;

use super::{RbdError, RbdErrorKind};

/// Buffers never grow past this: a bigger answer means something is wrong.
const MAX_BUFFER: usize = 1 << 20;

const ERANGE: c_int = -(Errno::ERANGE as c_int);

/// A Rust string as a C string, or an `Invalid` error naming the target.
pub(super) fn c_string(
    op: &'static str,
    target: &dyn fmt::Display,
    s: &str,
) -> Result<CString, RbdError> {
    CString::new(s).map_err(|_| RbdError::bad_name(op, target.to_string()))
}

/// Read a string through a call that fills `buf` of `len` bytes and answers
/// -ERANGE when it is too small (raising `len` to what it needs, or not:
/// then the buffer doubles).
pub(super) fn read_string(
    mut call: impl FnMut(*mut c_char, &mut usize) -> c_int,
    op: &'static str,
    target: impl Fn() -> String,
) -> Result<String, RbdError> {
    let mut size = 256;
    loop {
        let mut buf = vec![0u8; size];
        let mut len = size;
        let rc = call(buf.as_mut_ptr().cast(), &mut len);
        if rc == ERANGE && size < MAX_BUFFER {
            size = len.max(size * 2).min(MAX_BUFFER);
            continue;
        }
        RbdError::check(op, rc, &target)?;
        let text = CStr::from_bytes_until_nul(&buf).map_err(|_| {
            RbdError::new(
                op,
                target(),
                RbdErrorKind::Other,
                "librbd returned an unterminated string",
            )
        })?;
        return Ok(text.to_string_lossy().into_owned());
    }
}
