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

/// The manager module that runs `rbd task` commands.
const MODULE: &str = "rbd_support";

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

#[derive(Debug, Deserialize)]
struct MgrMap {
    available: bool,
    #[serde(default)]
    modules: Vec<String>,
    #[serde(default)]
    always_on_modules: std::collections::HashMap<String, Vec<String>>,
}

impl Cluster {
    /// Whether an active manager with rbd_support can take flatten tasks.
    pub(super) fn check_flatten_tasks(&self) -> Result<(), RbdError> {
        let out = self.command(
            Daemon::Mon,
            "mgr dump",
            "cluster",
            &json!({"prefix": "mgr dump", "format": "json"}),
        )?;
        let map: MgrMap = parse("mgr dump", &out)?;
        let enabled = map.modules.iter().any(|m| m == MODULE)
            || map
                .always_on_modules
                .values()
                .flatten()
                .any(|m| m == MODULE);
        let missing = if !map.available {
            "no Ceph manager is active"
        } else if !enabled {
            "the Ceph manager's rbd_support module is not enabled"
        } else {
            return Ok(());
        };
        Err(RbdError::new(
            "mgr flatten",
            "cluster",
            RbdErrorKind::Invalid,
            missing,
        ))
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
