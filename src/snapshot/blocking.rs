//! Running the workflow's blocking libvirt and Ceph calls through their
//! backend's [`owners`](crate::owners), with a deadline. A call that misses
//! its deadline keeps running on its thread (a C call cannot be
//! interrupted); the caller gets its handle back so that the late result can
//! still be waited for and undone.

use std::time::Duration;

use tokio::task::JoinHandle;

pub use crate::owners::Late;
use crate::owners::{Owner, CEPH, LIBVIRT, THAW};

use super::{SnapshotError, SnapshotErrorKind};
use crate::libvirt::LibvirtError;
use crate::rbd::RbdError;

/// Run a libvirt call (not a thaw) on the libvirt owner.
pub async fn libvirt<T, F>(deadline: Duration, call: F) -> Result<T, Late<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    LIBVIRT.call(deadline, call).await
}

/// Run a librados/librbd call on the Ceph owner.
pub async fn ceph<T, F>(deadline: Duration, call: F) -> Result<T, Late<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    CEPH.call(deadline, call).await
}

/// Start a thaw on the reserved thaw lane; the caller bounds the wait.
pub fn spawn_thaw<T, F>(call: F) -> Result<JoinHandle<T>, String>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    THAW.spawn(call)
}

/// Write to the journal off the async runtime.
pub use crate::owners::journal_write as journal;

/// A hypervisor call with a deadline, errors mapped for the workflow.
pub async fn hv<T, F>(what: &str, deadline: Duration, call: F) -> Result<T, SnapshotError>
where
    F: FnOnce() -> Result<T, LibvirtError> + Send + 'static,
    T: Send + 'static,
{
    flatten_late(
        what,
        deadline,
        LIBVIRT.call(deadline, call).await,
        SnapshotErrorKind::LibvirtUnavailable,
    )?
    .map_err(|e| SnapshotError::libvirt(&e))
}

/// An image-store call with a deadline, errors mapped for the workflow.
pub async fn store<T, F>(what: &str, deadline: Duration, call: F) -> Result<T, SnapshotError>
where
    F: FnOnce() -> Result<T, RbdError> + Send + 'static,
    T: Send + 'static,
{
    on_owner(&CEPH, what, deadline, call).await
}

/// An image-store call on a given owner (the manager's, a flatten's).
pub async fn on_owner<T, F>(
    owner: &'static Owner,
    what: &str,
    deadline: Duration,
    call: F,
) -> Result<T, SnapshotError>
where
    F: FnOnce() -> Result<T, RbdError> + Send + 'static,
    T: Send + 'static,
{
    flatten_late(
        what,
        deadline,
        owner.call(deadline, call).await,
        SnapshotErrorKind::CephUnavailable,
    )?
    .map_err(|e| SnapshotError::rbd(&e))
}

fn flatten_late<T>(
    what: &str,
    deadline: Duration,
    outcome: Result<T, Late<T>>,
    unavailable: SnapshotErrorKind,
) -> Result<T, SnapshotError> {
    outcome.map_err(|late| SnapshotError::late(late.error(what, deadline), unavailable))
}
