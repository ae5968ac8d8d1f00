//! The workflow's error: what failed (a kind the wire maps to a stable code),
//! a message a person can act on, and any undo that failed on the way out.

use std::fmt;

use crate::libvirt::{LibvirtError, LibvirtErrorKind};
use crate::rbd::{RbdError, RbdErrorKind};

/// What failed, as a caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotErrorKind {
    /// The request itself is wrong (bad name, duplicate disk…).
    InvalidParams,
    /// No such domain.
    DomainNotFound,
    /// The domain is not running.
    DomainNotRunning,
    /// A requested disk does not exist (or the domain has no boot disk).
    DiskNotFound,
    /// A requested disk is not on RBD.
    DiskNotRbd,
    /// A requested disk is an image of another Ceph cluster.
    DiskOtherCluster,
    /// The destination pool does not exist.
    PoolNotFound,
    /// The caller's `[[policy]]` rules do not allow this destination pool.
    PermissionDenied,
    /// No destination pool: none requested, no parent, no default.
    NoDestinationPool,
    /// The destination image name is taken.
    ImageExists,
    /// The source image's snapshot limit is reached.
    SnapshotLimit,
    /// The cluster cannot do what was asked (e.g. a `background` flatten
    /// without clone v2, a `cluster` flatten without a manager).
    Unsupported,
    /// Quiesce required, but the guest agent is absent or not answering.
    AgentUnavailable,
    /// Quiesce required, but the freeze failed (e.g. the guest's hook).
    FreezeFailed,
    /// The freeze or the snapshots did not fit in the freeze deadline.
    FreezeTimeout,
    /// The guest could not be confirmed thawed.
    ThawFailed,
    /// The domain cannot take a snapshot now (a thaw guard is on it).
    Busy,
    /// libvirtd cannot be reached.
    LibvirtUnavailable,
    /// The Ceph cluster cannot be reached or timed out.
    CephUnavailable,
    /// A call exceeded its deadline.
    Timeout,
    /// Stopped on request.
    Cancelled,
    /// Another libvirt failure.
    Libvirt,
    /// Another Ceph failure.
    Ceph,
    /// The crash journal could not be written, so the step was not taken.
    Journal,
}

/// A failed snapshot job.
#[derive(Debug, Clone)]
pub struct SnapshotError {
    /// What failed.
    pub kind: SnapshotErrorKind,
    /// The cause, in words.
    pub message: String,
    /// Undo steps that failed while rolling back (empty: nothing left behind).
    pub rollback_failures: Vec<String>,
    /// The thaw guard left on (or found on) the domain, when the guest may
    /// still be frozen.
    pub guard: Option<Box<super::GuardInfo>>,
}

impl SnapshotError {
    /// A new error of `kind`.
    pub fn new(kind: SnapshotErrorKind, message: impl Into<String>) -> Self {
        SnapshotError {
            kind,
            message: message.into(),
            rollback_failures: Vec::new(),
            guard: None,
        }
    }

    /// A hypervisor failure, mapped to the kind a caller can act on.
    pub fn libvirt(err: &LibvirtError) -> Self {
        use SnapshotErrorKind as K;
        let kind = match err.kind {
            LibvirtErrorKind::DomainNotFound => K::DomainNotFound,
            LibvirtErrorKind::NotRunning => K::DomainNotRunning,
            LibvirtErrorKind::AgentUnavailable => K::AgentUnavailable,
            LibvirtErrorKind::AgentTimeout => K::FreezeTimeout,
            LibvirtErrorKind::Unavailable => K::LibvirtUnavailable,
            _ => K::Libvirt,
        };
        SnapshotError::new(kind, err.to_string())
    }

    /// A call to a backend that did not answer in time (the backend is
    /// `unavailable`) or panicked (a failure of that backend's call).
    pub fn late(err: crate::owners::LateError, unavailable: SnapshotErrorKind) -> Self {
        use SnapshotErrorKind as K;
        match err {
            crate::owners::LateError::Unanswered(msg) => SnapshotError::new(unavailable, msg),
            crate::owners::LateError::Panicked(msg) => {
                let failed = match unavailable {
                    K::LibvirtUnavailable => K::Libvirt,
                    _ => K::Ceph,
                };
                SnapshotError::new(failed, msg)
            }
        }
    }

    /// An image-store failure, mapped to the kind a caller can act on.
    pub fn rbd(err: &RbdError) -> Self {
        use SnapshotErrorKind as K;
        let kind = match err.kind {
            RbdErrorKind::Exists => K::ImageExists,
            RbdErrorKind::LimitReached => K::SnapshotLimit,
            RbdErrorKind::TimedOut | RbdErrorKind::Unavailable => K::CephUnavailable,
            RbdErrorKind::Cancelled => K::Cancelled,
            _ => K::Ceph,
        };
        SnapshotError::new(kind, err.to_string())
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if !self.rollback_failures.is_empty() {
            write!(
                f,
                "; rollback incomplete: {}",
                self.rollback_failures.join("; ")
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for SnapshotError {}
