//! `snapshot.delete`: remove an image this daemon made — and only such an
//! image, only when nothing depends on it or has it open. Every check
//! happens before the first change, on a read-only handle that nobody
//! notices, so a refusal changes nothing. A caller held to `[[policy]]`
//! rules needs one with `delete = true` for the image's pool.
//!
//! Ours means proven ours ([`ownership::claim`]): the image's own RBD id
//! is the one its job recorded. A consumer's clone or copy of our image
//! carries our metadata (librbd copies it) but not our id.

use std::sync::Arc;

use serde_json::Value;

use super::{wire, Daemon};
use crate::policy::Scope;
use crate::protocol::{ErrorKind, RpcError};
use crate::rbd::{ImageSpec, ImageStore, RbdError, RbdErrorKind};
use crate::snapshot::ownership::{self, Claim};
use crate::snapshot::FINAL_SNAPSHOT;

/// Why a delete did not happen.
#[derive(Debug, thiserror::Error)]
enum Refused {
    /// The image is not provably one this host's daemon made.
    #[error("{0}")]
    NotOurs(String),
    /// Something depends on it or has it open.
    #[error("{0}")]
    InUse(String),
    /// A Ceph call failed.
    #[error(transparent)]
    Rbd(#[from] RbdError),
}

impl Refused {
    fn into_rpc(self) -> RpcError {
        match self {
            Refused::NotOurs(msg) => RpcError::new(ErrorKind::NotOurs, msg),
            Refused::InUse(msg) => RpcError::new(ErrorKind::ImageInUse, msg),
            Refused::Rbd(e) => wire::rbd_error(&e),
        }
    }
}

pub(super) async fn snapshot_delete(
    daemon: &Arc<Daemon>,
    pool: String,
    image: String,
    fsid: Option<String>,
    scope: &Scope,
) -> Result<Value, RpcError> {
    daemon.refuse_if_shutting_down()?;
    let any_host = scope
        .delete(&pool)
        .map_err(super::denied)?
        .unwrap_or(daemon.config.delete_any_host);
    let store = daemon.backends.store()?;
    if let Some(named) = fsid {
        let ours = store.fsid().map_err(|e| wire::rbd_error(&e))?;
        if !named.eq_ignore_ascii_case(&ours) {
            return Err(RpcError::new(
                ErrorKind::InvalidParams,
                format!(
                    "the location is in cluster {named}, and this daemon's cluster is {ours}: \
                     not deleting {pool}/{image} here"
                ),
            ));
        }
    }
    let spec = ImageSpec::new(pool.clone(), image.clone());
    // our own job still works on it: a second handle of ours would race
    // the job's (and the job's result would name a snapshot gone)
    if let Some(job_id) = daemon.jobs.working_on(&spec) {
        return Err(RpcError::new(
            ErrorKind::ImageInUse,
            format!(
                "{spec} is still being flattened by job {job_id}: delete it after that job \
                 ends (jobs.get {job_id})"
            ),
        ));
    }
    let deadline = daemon.settings.call_deadline;
    let this_host = (!any_host).then(|| daemon.settings.host.clone());
    let call = move || delete_if_ours(store.as_ref(), &spec, this_host.as_deref());
    match crate::owners::CEPH.call(deadline, call).await {
        Ok(Ok(())) => {
            tracing::info!(pool = %pool, image = %image, "image deleted");
            super::to_value(&super::results::Deleted {
                pool,
                image,
                deleted: true,
            })
        }
        Ok(Err(refused)) => Err(refused.into_rpc()),
        Err(late) => Err(wire::late(
            late.error(&format!("delete of {pool}/{image}"), deadline),
            ErrorKind::CephUnavailable,
        )),
    }
}

/// Check everything on a read-only handle, then unprotect and remove
/// `snap` and the image. `this_host`: only images this host made.
fn delete_if_ours(
    store: &dyn ImageStore,
    spec: &ImageSpec,
    this_host: Option<&str>,
) -> Result<(), Refused> {
    let look = store.open_read_only(spec)?;
    check_ours(spec, ownership::claim(look.as_ref())?, this_host)?;
    let snaps = look.snapshots()?;
    if let Some(other) = snaps.iter().find(|s| *s != FINAL_SNAPSHOT) {
        return Err(Refused::InUse(format!(
            "{spec} has a snapshot {other:?} besides {FINAL_SNAPSHOT:?}: remove it first"
        )));
    }
    let open_by = look.watchers()?;
    if !open_by.is_empty() {
        return Err(Refused::InUse(format!(
            "{spec} is open by {} client(s) ({}): a guest, a flatten or another tool uses \
             it; delete it once they closed it",
            open_by.len(),
            open_by.join(", ")
        )));
    }
    let has_final = snaps.iter().any(|s| s == FINAL_SNAPSHOT);
    if has_final {
        let clones = look.children(FINAL_SNAPSHOT)?;
        if !clones.is_empty() {
            return Err(Refused::InUse(format!(
                "{spec}@{FINAL_SNAPSHOT} has {} clone(s) (instances or volumes made from it: \
                 {}): flatten or remove them first",
                clones.len(),
                clones.join(", ")
            )));
        }
    }
    let protected = has_final && look.is_protected(FINAL_SNAPSHOT)?;
    drop(look);
    if protected {
        let image = store.open(spec)?;
        // fails with EBUSY, changing nothing, while clones depend on it
        image.unprotect_snapshot(FINAL_SNAPSHOT).map_err(|e| {
            if e.kind == RbdErrorKind::InUse {
                Refused::InUse(format!(
                    "{spec}@{FINAL_SNAPSHOT} has clones (instances or volumes made from it): \
                     flatten or remove them first"
                ))
            } else {
                Refused::Rbd(e)
            }
        })?;
        image.remove_snapshot(FINAL_SNAPSHOT, false)?;
    }
    store.remove_image(spec)?;
    Ok(())
}

fn check_ours(spec: &ImageSpec, claim: Claim, this_host: Option<&str>) -> Result<(), Refused> {
    match claim {
        Claim::Ours { host, .. } => match (host, this_host) {
            (Some(maker), Some(this_host)) if maker != this_host => Err(Refused::NotOurs(format!(
                "{spec} was made by host {maker:?}, and this is {this_host:?}: only its host \
                 deletes it (delete_any_host = true, in the configuration or the caller's \
                 [[policy]] rule, allows more)"
            ))),
            _ => Ok(()),
        },
        Claim::Copy { recorded, actual } => Err(Refused::NotOurs(format!(
            "{spec} carries rbdsnapd's metadata copied from image id {recorded}, but its own \
             id is {actual}: it is a clone or copy of one of our images (an instance disk \
             booted from it, say), not made by rbdsnapd: not deleting it"
        ))),
        Claim::Unproven { job } => Err(Refused::NotOurs(format!(
            "{spec} carries the mark of job {job} but no image id record: made by an \
             rbdsnapd that did not record image ids yet, or a clone of such an image, and the \
             two cannot be told apart: not deleting it (README: \"Which images are ours\")"
        ))),
        Claim::Foreign => Err(Refused::NotOurs(format!(
            "{spec} was not made by rbdsnapd (no {} metadata): not deleting it",
            crate::snapshot::METADATA_JOB
        ))),
    }
}
