//! Carrying out a [`Plan`](super::plan::Plan): each action a Ceph call on
//! the Ceph owner with its own deadline, so a stalled cluster costs one
//! bounded attempt (retried later), never a wedged daemon.

use std::sync::Arc;
use std::time::Duration;

use super::plan::{self, Action, Verdict};
use super::Trail;
use crate::journal::Outcome;
use crate::owners::{Late, CEPH};
use crate::protocol::{ErrorKind, RpcError};
use crate::rbd::{ImageSpec, ImageStore, RbdErrorKind};
use crate::snapshot::{saga, Flatten};

/// What recovering a job did, or why it must wait.
#[derive(Debug)]
pub enum Recovered {
    /// Done: the outcome to journal and report, and what was done.
    Ended(Outcome, Vec<String>),
    /// Not yet: why (a backend is down, a step failed); retried later.
    Pending(String),
    /// The images were complete (the requester may have its location) but
    /// their `background` or `cluster` flatten had not ended: resume it.
    Resume {
        /// The result, as a retry of the request gets it.
        result: serde_json::Value,
        /// What recovery did.
        actions: Vec<String>,
        /// The flatten mode.
        mode: Flatten,
        /// The images to flatten.
        dests: Vec<ImageSpec>,
    },
}

/// Recover the Ceph side of one job with the store, if connected; each
/// action bounded by `deadline`. The guest is not this function's: a trail
/// that may have left it frozen got a thaw guard first.
pub async fn recover(
    trail: &Trail,
    store: Option<Arc<dyn ImageStore>>,
    deadline: Duration,
) -> Recovered {
    let own = store.as_ref().and_then(|s| s.client_addr());
    let plan = plan::plan(trail, own.as_deref());
    if plan.verdict == Verdict::Untouched {
        let error = RpcError::new(
            ErrorKind::Cancelled,
            "the daemon stopped before this job touched anything",
        );
        return Recovered::Ended(Outcome::Error(error), Vec::new());
    }
    let Some(store) = store else {
        return Recovered::Pending("Ceph is down: cannot roll back yet".into());
    };
    let mut done = Vec::new();
    for action in plan.actions {
        match run(&store, action, &plan.temp, &trail.job_id, deadline).await {
            Ok(Some(what)) => done.push(what),
            Ok(None) => {}
            Err(why) => return Recovered::Pending(why),
        }
    }
    done.extend(plan.notes);
    match plan.verdict {
        Verdict::Keep {
            result,
            resume: true,
        } => Recovered::Resume {
            mode: trail.flatten_mode(),
            dests: trail.begin().map(|b| b.2.to_vec()).unwrap_or_default(),
            result,
            actions: done,
        },
        Verdict::Keep { result, .. } => Recovered::Ended(Outcome::Ok(result), done),
        Verdict::RollBack | Verdict::Untouched => {
            let error = RpcError::new(
                ErrorKind::Cancelled,
                "the daemon stopped during this job; it was rolled back at restart (retry the request)",
            );
            Recovered::Ended(Outcome::Error(error), done)
        }
    }
}

/// One action: what it did (for `jobs.get`), or why the job must wait.
async fn run(
    store: &Arc<dyn ImageStore>,
    action: Action,
    temp: &str,
    job_id: &str,
    deadline: Duration,
) -> Result<Option<String>, String> {
    let (store, temp, job_id) = (Arc::clone(store), temp.to_string(), job_id.to_string());
    let what = format!("{action:?}");
    let call = move || match action {
        Action::Fence(addr) => match store.fence(&addr) {
            Ok(()) => Ok(Some(format!("fenced the previous client {addr}"))),
            Err(e) => {
                tracing::warn!(addr, error = %e, "could not blocklist the previous client; its watches will time out");
                Ok(None)
            }
        },
        Action::RemovePartial { dest, source } => {
            match saga::remove_if_made_by(store.as_ref(), &dest, &job_id, &source, &temp) {
                Ok(true) => Ok(Some(format!("removed partial image {dest}"))),
                Ok(false) => Ok(None),
                Err(e) => Err(format!("remove {dest}: {e}")),
            }
        }
        Action::RemoveTemp { source, required } => {
            let removed = store
                .open(&source)
                .and_then(|img| img.remove_snapshot(&temp, true));
            match removed {
                Ok(()) => Ok(Some(format!("removed temporary snapshot {source}@{temp}"))),
                Err(e) if e.kind == RbdErrorKind::NotFound => Ok(None),
                Err(e) if required => Err(format!("remove {source}@{temp}: {e}")),
                Err(_) => Ok(None),
            }
        }
    };
    match CEPH.call(deadline, call).await {
        Ok(outcome) => outcome,
        Err(Late::TimedOut(_)) => Err(format!(
            "{what} did not finish within {} s (Ceph stalled); retried",
            deadline.as_secs()
        )),
        Err(Late::Saturated(msg)) => Err(msg),
        Err(Late::Panicked(msg)) => Err(format!("{what} panicked: {msg}")),
    }
}
