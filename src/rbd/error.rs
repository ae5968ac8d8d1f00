//! Errors of the image store: which call failed on what, and why, with the
//! errno mapped to kinds the workflow and the wire can act on.

/// What went wrong, as far as a caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RbdErrorKind {
    /// ENOENT: pool, image or snapshot does not exist.
    NotFound,
    /// EEXIST: the name is taken.
    Exists,
    /// EBUSY / ENOTEMPTY: in use (a protected snapshot with clones, an image
    /// with snapshots or watchers).
    InUse,
    /// EDQUOT: the image's snapshot limit is reached.
    LimitReached,
    /// EACCES / EPERM: the cephx user may not do this.
    PermissionDenied,
    /// ETIMEDOUT: the cluster did not answer in time (OSD or mon down).
    TimedOut,
    /// ENOTCONN / ESHUTDOWN / connection refused: no cluster connection.
    Unavailable,
    /// ECANCELED: stopped on request (flatten progress returned `false`).
    Cancelled,
    /// EINVAL / EROFS / ENOSYS and the like: the call cannot be done this way.
    Invalid,
    /// Anything else.
    Other,
}

impl RbdErrorKind {
    /// Map a librbd / librados negative errno.
    pub fn from_errno(errno: i32) -> RbdErrorKind {
        use nix::errno::Errno;
        match Errno::from_raw(errno.abs()) {
            Errno::ENOENT => RbdErrorKind::NotFound,
            Errno::EEXIST => RbdErrorKind::Exists,
            Errno::EBUSY | Errno::ENOTEMPTY => RbdErrorKind::InUse,
            Errno::EDQUOT => RbdErrorKind::LimitReached,
            Errno::EACCES | Errno::EPERM => RbdErrorKind::PermissionDenied,
            Errno::ETIMEDOUT => RbdErrorKind::TimedOut,
            Errno::ENOTCONN | Errno::ESHUTDOWN | Errno::ECONNREFUSED => RbdErrorKind::Unavailable,
            Errno::ECANCELED => RbdErrorKind::Cancelled,
            Errno::EINVAL | Errno::EROFS | Errno::ENOSYS | Errno::EOPNOTSUPP => {
                RbdErrorKind::Invalid
            }
            _ => RbdErrorKind::Other,
        }
    }
}

/// A failed image-store call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} {target}: {message}")]
pub struct RbdError {
    /// The operation, e.g. "snap create".
    pub op: &'static str,
    /// What it was done on, e.g. "vms/disk@snap".
    pub target: String,
    /// Mapped kind.
    pub kind: RbdErrorKind,
    /// The errno (positive) when the error came from Ceph, else 0.
    pub errno: i32,
    /// Human-readable cause.
    pub message: String,
}

impl RbdError {
    /// An error from a negative return code of a librbd/librados call.
    pub fn from_code(op: &'static str, target: impl Into<String>, code: i32) -> RbdError {
        let errno = code.abs();
        RbdError {
            op,
            target: target.into(),
            kind: RbdErrorKind::from_errno(errno),
            errno,
            message: nix::errno::Errno::from_raw(errno).desc().to_string(),
        }
    }

    /// An error not coming from an errno.
    pub fn new(
        op: &'static str,
        target: impl Into<String>,
        kind: RbdErrorKind,
        message: impl Into<String>,
    ) -> RbdError {
        RbdError {
            op,
            target: target.into(),
            kind,
            errno: 0,
            message: message.into(),
        }
    }

    /// `Ok(code)` for a non-negative return code, else the error; the target
    /// is only formatted on failure, which keeps the happy path cheap.
    pub(crate) fn check<T: Copy + Into<i64>>(
        op: &'static str,
        code: T,
        target: impl FnOnce() -> String,
    ) -> Result<T, RbdError> {
        let wide: i64 = code.into();
        if wide >= 0 {
            return Ok(code);
        }
        let errno = i32::try_from(wide).unwrap_or(-(nix::errno::Errno::EIO as i32));
        Err(RbdError::from_code(op, target(), errno))
    }

    /// A name that cannot cross into C (it holds a NUL byte).
    pub(crate) fn bad_name(op: &'static str, target: impl Into<String>) -> RbdError {
        RbdError::new(
            op,
            target,
            RbdErrorKind::Invalid,
            "name contains a NUL byte",
        )
    }
}
