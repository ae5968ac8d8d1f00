//! The one place internal errors become wire errors: every workflow,
//! image-store and hypervisor failure maps to a stable [`ErrorKind`] here.

use crate::libvirt::{LibvirtError, LibvirtErrorKind};
use crate::protocol::{ErrorKind, RpcError};
use crate::rbd::{RbdError, RbdErrorKind};
use crate::snapshot::{SnapshotError, SnapshotErrorKind};

/// A failed snapshot job, with its id and any undo that failed.
pub fn snapshot_error(err: &SnapshotError, job_id: &str) -> RpcError {
    use SnapshotErrorKind as S;
    let kind = match err.kind {
        S::InvalidParams => ErrorKind::InvalidParams,
        S::DomainNotFound => ErrorKind::DomainNotFound,
        S::DomainNotRunning => ErrorKind::DomainNotRunning,
        S::DiskNotFound => ErrorKind::DiskNotFound,
        S::DiskNotRbd => ErrorKind::DiskNotRbd,
        S::DiskOtherCluster => ErrorKind::DiskOtherCluster,
        S::PoolNotFound => ErrorKind::PoolNotFound,
        S::PermissionDenied => ErrorKind::PermissionDenied,
        S::NoDestinationPool => ErrorKind::NoDestinationPool,
        S::ImageExists => ErrorKind::ImageExists,
        S::SnapshotLimit => ErrorKind::SnapshotLimit,
        S::Unsupported => ErrorKind::Unsupported,
        S::AgentUnavailable => ErrorKind::AgentUnavailable,
        S::FreezeFailed => ErrorKind::FreezeFailed,
        S::FreezeTimeout => ErrorKind::FreezeTimeout,
        S::ThawFailed => ErrorKind::ThawFailed,
        S::Busy => ErrorKind::Busy,
        S::LibvirtUnavailable => ErrorKind::LibvirtUnavailable,
        S::CephUnavailable => ErrorKind::CephUnavailable,
        S::Timeout => ErrorKind::Timeout,
        S::Cancelled => ErrorKind::Cancelled,
        S::Libvirt => ErrorKind::LibvirtError,
        S::Ceph => ErrorKind::CephError,
        S::Journal => ErrorKind::Internal,
    };
    let mut wire = RpcError::new(kind, err.to_string());
    wire.data.job_id = Some(job_id.to_string());
    wire.data.rollback_failures = err.rollback_failures.clone();
    wire.data.guard = err.guard.as_ref().map(|g| Box::new(guard_data(g)));
    wire
}

/// A failed image-store call outside a job (`snapshot.delete`).
pub fn rbd_error(err: &RbdError) -> RpcError {
    let kind = match err.kind {
        RbdErrorKind::NotFound => ErrorKind::ImageNotFound,
        RbdErrorKind::Exists => ErrorKind::ImageExists,
        RbdErrorKind::InUse => ErrorKind::ImageInUse,
        RbdErrorKind::LimitReached => ErrorKind::SnapshotLimit,
        RbdErrorKind::TimedOut | RbdErrorKind::Unavailable => ErrorKind::CephUnavailable,
        RbdErrorKind::Cancelled => ErrorKind::Cancelled,
        RbdErrorKind::PermissionDenied | RbdErrorKind::Invalid | RbdErrorKind::Other => {
            ErrorKind::CephError
        }
    };
    RpcError::new(kind, err.to_string())
}

/// A failed hypervisor call outside a job (`domain.disks`).
pub fn libvirt_error(err: &LibvirtError) -> RpcError {
    let kind = match err.kind {
        LibvirtErrorKind::DomainNotFound => ErrorKind::DomainNotFound,
        LibvirtErrorKind::NotRunning => ErrorKind::DomainNotRunning,
        LibvirtErrorKind::AgentUnavailable => ErrorKind::AgentUnavailable,
        LibvirtErrorKind::AgentTimeout => ErrorKind::Timeout,
        LibvirtErrorKind::Unavailable => ErrorKind::LibvirtUnavailable,
        LibvirtErrorKind::Unsupported | LibvirtErrorKind::BadXml | LibvirtErrorKind::Other => {
            ErrorKind::LibvirtError
        }
    };
    RpcError::new(kind, err.to_string())
}

/// A thaw guard as error data names it.
pub fn guard_data(guard: &crate::snapshot::GuardInfo) -> crate::protocol::GuardData {
    crate::protocol::GuardData {
        domain_uuid: guard.domain_uuid.clone(),
        job_id: guard.job_id.clone(),
        since_unix: guard.since_unix,
        last_error: guard.last_error.clone(),
    }
}

/// A call that did not return in time, was not started or panicked: the
/// backend is `unavailable`, or the daemon has a bug.
pub fn late(late: crate::owners::LateError, unavailable: ErrorKind) -> RpcError {
    match late {
        crate::owners::LateError::Unanswered(msg) => RpcError::new(unavailable, msg),
        crate::owners::LateError::Panicked(msg) => RpcError::new(ErrorKind::Internal, msg),
    }
}
