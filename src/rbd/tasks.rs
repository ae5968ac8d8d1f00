//! Flatten as a Ceph manager task: the `rbd task add flatten` command of the
//! mgr's rbd_support module (an always-on module since Octopus), sent through
//! librados. The manager keeps its tasks in RADOS, so a queued flatten
//! survives this host, the daemon and a manager fail-over. Adding a task for
//! an image that already has one returns the existing task, which makes
//! re-queueing after a restart safe. A finished task leaves the list.

use serde::Deserialize;
use serde_json::json;

use super::cluster::Cluster;
use super::command::Daemon;
use super::{ImageSpec, RbdError, RbdErrorKind};

/// A queued or running manager task, as `rbd task list` shows it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MgrTask {
    /// The task's id (a UUID).
    pub id: String,
    /// The manager's description ("Flattening image …").
    #[serde(default)]
    pub message: String,
    /// Running now (not only queued).
    #[serde(default)]
    pub in_progress: bool,
    /// Fraction done, 0.0 to 1.0, while running.
    #[serde(default)]
    pub progress: f64,
    /// Why the last attempt failed, when the manager is retrying.
    #[serde(default)]
    pub retry_message: Option<String>,
}

/// The part of the monitors' `status` that says whether a manager runs.
#[derive(Debug, Deserialize)]
struct Status {
    mgrmap: StatusMgr,
}

#[derive(Debug, Deserialize)]
struct StatusMgr {
    available: bool,
}

impl Cluster {
    /// Whether this client may queue flatten tasks for images in `pool`.
    ///
    /// The probe asks for no right the flatten itself does not need:
    /// - the monitors' `status` (mon `profile rbd` allows it, `mgr dump`
    ///   would need `mgr r`) says whether a manager is active at all, so a
    ///   manager command is never sent into the void (the manager connection
    ///   has no op timeout, see `Cluster::connect`);
    /// - `rbd task add flatten` for an image that does not exist in `pool`
    ///   goes through the same cap check as the real one, then fails with
    ///   ENOENT without queueing anything. ENOENT is the yes; EACCES names
    ///   the missing cap.
    pub(super) fn check_flatten_tasks(&self, pool: &str) -> Result<(), RbdError> {
        let out = self.command(
            Daemon::Mon,
            "mgr check",
            "cluster",
            &json!({"prefix": "status", "format": "json"}),
        )?;
        let status: Status = parse("mgr check", &out)?;
        if !status.mgrmap.available {
            return Err(RbdError::new(
                "mgr check",
                "cluster",
                RbdErrorKind::Invalid,
                "no Ceph manager is active",
            ));
        }
        let probe = ImageSpec::new(pool, format!("rbdsnapd-probe-{}", uuid::Uuid::new_v4()));
        let cmd = json!({"prefix": "rbd task add flatten", "image_spec": probe.to_string(), "format": "json"});
        match self.command(Daemon::Mgr, "mgr check", &probe.to_string(), &cmd) {
            Err(e) if e.kind == RbdErrorKind::NotFound => Ok(()),
            Err(e) if e.kind == RbdErrorKind::PermissionDenied => Err(RbdError::new(
                "mgr check",
                pool,
                RbdErrorKind::PermissionDenied,
                format!(
                    "this Ceph user may not queue manager tasks on pool {pool}: \
                     it needs the cap mgr 'profile rbd pool={pool}' ({})",
                    e.message
                ),
            )),
            Err(e) => Err(e),
            // a task for an image that does not exist: cancel what should
            // never have been queued
            Ok(out) => {
                if let Ok(task) = parse::<MgrTask>("mgr check", &out) {
                    let _ = self.cancel_task(&task.id);
                }
                Ok(())
            }
        }
    }

    /// Queue (or find the queued) flatten of `image`; its task id.
    pub(super) fn add_flatten_task(&self, image: &ImageSpec) -> Result<String, RbdError> {
        let cmd = json!({"prefix": "rbd task add flatten", "image_spec": image.to_string(), "format": "json"});
        let out = self.command(Daemon::Mgr, "mgr flatten", &image.to_string(), &cmd)?;
        Ok(parse::<MgrTask>("mgr flatten", &out)?.id)
    }

    /// The task, or `None` once it left the list (finished, failed for
    /// good, or cancelled): the image itself then says what happened.
    pub(super) fn task(&self, id: &str) -> Result<Option<MgrTask>, RbdError> {
        let cmd = json!({"prefix": "rbd task list", "task_id": id, "format": "json"});
        match self.command(Daemon::Mgr, "mgr task", id, &cmd) {
            Ok(out) => parse("mgr task", &out).map(Some),
            Err(e) if e.kind == RbdErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Cancel a task; one already gone is not an error.
    pub(super) fn cancel_task(&self, id: &str) -> Result<(), RbdError> {
        let cmd = json!({"prefix": "rbd task cancel", "task_id": id});
        match self.command(Daemon::Mgr, "mgr task cancel", id, &cmd) {
            Err(e) if e.kind != RbdErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn parse<T: for<'de> Deserialize<'de>>(op: &'static str, out: &[u8]) -> Result<T, RbdError> {
    serde_json::from_slice(out).map_err(|e| {
        RbdError::new(
            op,
            "cluster",
            RbdErrorKind::Other,
            format!("unexpected answer from Ceph: {e}"),
        )
    })
}
