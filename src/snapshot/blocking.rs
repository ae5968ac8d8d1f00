//! Running a blocking libvirt or Ceph call off the async runtime, with a
//! deadline. A call that misses its deadline keeps running on its thread (a C
//! call cannot be interrupted); the caller gets its handle back so that the
//! late result can still be waited for and undone.

use std::time::Duration;

use tokio::task::JoinHandle;

/// How a deadline-bound call ended, when it did not return in time.
#[derive(Debug)]
pub enum Late<T> {
    /// The deadline passed; the call is still running.
    TimedOut(JoinHandle<T>),
    /// The call panicked (a bug; never expected from a C binding).
    Panicked(String),
}

/// Run `call` on the blocking pool; give up waiting after `deadline`.
pub async fn with_deadline<T, F>(deadline: Duration, call: F) -> Result<T, Late<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let mut handle = tokio::task::spawn_blocking(call);
    match tokio::time::timeout(deadline, &mut handle).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(join)) => Err(Late::Panicked(join.to_string())),
        Err(_) => Err(Late::TimedOut(handle)),
    }
}

use super::{SnapshotError, SnapshotErrorKind};
use crate::libvirt::LibvirtError;
use crate::rbd::RbdError;

/// A hypervisor call with a deadline, errors mapped for the workflow.
pub async fn hv<T, F>(what: &str, deadline: Duration, call: F) -> Result<T, SnapshotError>
where
    F: FnOnce() -> Result<T, LibvirtError> + Send + 'static,
    T: Send + 'static,
{
    flatten_late(
        what,
        deadline,
        with_deadline(deadline, call).await,
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
    flatten_late(
        what,
        deadline,
        with_deadline(deadline, call).await,
        SnapshotErrorKind::CephUnavailable,
    )?
    .map_err(|e| SnapshotError::rbd(&e))
}

fn flatten_late<T>(
    what: &str,
    deadline: Duration,
    outcome: Result<T, Late<T>>,
    timeout_kind: SnapshotErrorKind,
) -> Result<T, SnapshotError> {
    outcome.map_err(|late| match late {
        Late::TimedOut(_) => SnapshotError::new(
            timeout_kind,
            format!("{what} did not answer within {} ms", deadline.as_millis()),
        ),
        Late::Panicked(msg) => SnapshotError::new(
            SnapshotErrorKind::Libvirt,
            format!("{what} panicked: {msg}"),
        ),
    })
}
