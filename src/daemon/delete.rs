//! `snapshot.delete`: remove an image this daemon made — and only such an
//! image, only when nothing depends on it. Every check happens before the
//! first change, so a refusal changes nothing. A caller held to
//! `[[policy]]` rules needs one with `delete = true` for the image's pool.

use std::sync::Arc;

use serde_json::Value;

use super::{wire, Daemon};
use crate::policy::Scope;
use crate::protocol::{ErrorKind, RpcError};
use crate::rbd::ImageSpec;
use crate::snapshot::{FINAL_SNAPSHOT, METADATA_HOST, METADATA_JOB};

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
    let deadline = daemon.settings.call_deadline;
    let this_host = (!any_host).then(|| daemon.settings.host.clone());
    let call = move || -> Result<(), RpcError> {
        let img = store.open(&spec).map_err(|e| wire::rbd_error(&e))?;
        if img
            .metadata(METADATA_JOB)
            .map_err(|e| wire::rbd_error(&e))?
            .is_none()
        {
            return Err(RpcError::new(
                ErrorKind::NotOurs,
                format!(
                    "{spec} was not made by rbdsnapd (no {METADATA_JOB} metadata): not deleting it"
                ),
            ));
        }
        // images made before hosts were recorded carry none: deletable
        let maker = img
            .metadata(METADATA_HOST)
            .map_err(|e| wire::rbd_error(&e))?;
        if let (Some(maker), Some(this_host)) = (maker, &this_host) {
            if &maker != this_host {
                return Err(RpcError::new(
                    ErrorKind::NotOurs,
                    format!(
                        "{spec} was made by host {maker:?}, and this is {this_host:?}: only its \
                         host deletes it (delete_any_host = true, in the configuration or \
                         the caller's [[policy]] rule, allows more)"
                    ),
                ));
            }
        }
        let snaps = img.snapshots().map_err(|e| wire::rbd_error(&e))?;
        if let Some(other) = snaps.iter().find(|s| *s != FINAL_SNAPSHOT) {
            return Err(RpcError::new(
                ErrorKind::ImageInUse,
                format!(
                    "{spec} has a snapshot {other:?} besides {FINAL_SNAPSHOT:?}: remove it first"
                ),
            ));
        }
        if snaps.iter().any(|s| s == FINAL_SNAPSHOT)
            && img
                .is_protected(FINAL_SNAPSHOT)
                .map_err(|e| wire::rbd_error(&e))?
        {
            // fails with EBUSY, changing nothing, while clones depend on it
            img.unprotect_snapshot(FINAL_SNAPSHOT).map_err(|e| {
                let mut err = wire::rbd_error(&e);
                if err.kind() == ErrorKind::ImageInUse {
                    err.message =
                        format!("{spec}@{FINAL_SNAPSHOT} has clones: flatten or remove them first");
                }
                err
            })?;
            img.remove_snapshot(FINAL_SNAPSHOT, false)
                .map_err(|e| wire::rbd_error(&e))?;
        }
        drop(img);
        store.remove_image(&spec).map_err(|e| wire::rbd_error(&e))
    };
    match crate::owners::CEPH.call(deadline, call).await {
        Ok(Ok(())) => {
            tracing::info!(pool = %pool, image = %image, "image deleted");
            super::to_value(&super::results::Deleted {
                pool,
                image,
                deleted: true,
            })
        }
        Ok(Err(e)) => Err(e),
        Err(crate::owners::Late::Panicked(msg)) => Err(RpcError::new(
            ErrorKind::Internal,
            format!("delete task failed: {msg}"),
        )),
        Err(crate::owners::Late::Saturated(msg)) => {
            Err(RpcError::new(ErrorKind::CephUnavailable, msg))
        }
        Err(crate::owners::Late::TimedOut(_)) => Err(RpcError::new(
            ErrorKind::CephUnavailable,
            format!(
                "delete of {pool}/{image} did not finish within {} s",
                deadline.as_secs()
            ),
        )),
    }
}
