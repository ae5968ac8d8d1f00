//! The pure part of recovery: from an unfinished job's trail to what must be
//! done in Ceph and how the job ends, decided without calling anything, so
//! every case is a plain unit test.

use serde::Serialize;
use serde_json::Value;

use super::Trail;
use crate::protocol::{ErrorKind, RpcError};
use crate::rbd::{ImageSpec, Location};
use crate::snapshot::{Flatten, Step, FINAL_SNAPSHOT};

/// One thing recovery does in Ceph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Blocklist the dead daemon's librados client, so its stale watches do
    /// not stall the rollback (best effort: without the permission the
    /// rollback still works, only slower).
    Fence(String),
    /// Remove `dest` and its snapshots, but only if it provably is the
    /// job's: its metadata names the job, or its parent is the job's
    /// temporary snapshot on `source`.
    RemovePartial {
        /// The destination image.
        dest: ImageSpec,
        /// Its source.
        source: ImageSpec,
    },
    /// Remove the temporary snapshot from `source` (already gone is fine);
    /// when `required`, a failure keeps the job pending.
    RemoveTemp {
        /// The source image.
        source: ImageSpec,
        /// Whether the job waits for it.
        required: bool,
    },
}

/// How the job ends once its actions are done.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The daemon stopped before the job touched anything.
    Untouched,
    /// Every image was complete: kept, and this is the job's result.
    Keep {
        /// The result, as a retry of the request gets it.
        result: Value,
        /// Resume the `background` or `cluster` flatten.
        resume: bool,
    },
    /// Rolled back: the job ends cancelled.
    RollBack,
}

/// What to do for one trail.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The job's temporary snapshot name.
    pub temp: String,
    /// In order.
    pub actions: Vec<Action>,
    /// How the job ends.
    pub verdict: Verdict,
    /// What the plan decided, in words, for `jobs.get`.
    pub notes: Vec<String>,
}

/// Plan the recovery of `trail`; `own_addr` is this daemon's librados
/// address (never fenced).
pub fn plan(trail: &Trail, own_addr: Option<&str>) -> Plan {
    let Some((fsid, sources, dests, temp)) = trail.begin() else {
        return Plan {
            temp: String::new(),
            actions: Vec::new(),
            verdict: Verdict::Untouched,
            notes: Vec::new(),
        };
    };
    let mut actions = Vec::new();
    if let Some(addr) = trail
        .client_addr
        .as_deref()
        .filter(|a| Some(*a) != own_addr)
    {
        actions.push(Action::Fence(addr.to_string()));
    }
    let mut notes = Vec::new();
    let verdict = if dests.iter().all(|d| trail.finished(d)) {
        // complete before the crash: keep it (retries get this result); a
        // temporary snapshot still there is only tidied up
        actions.extend(sources.iter().map(|s| Action::RemoveTemp {
            source: s.clone(),
            required: false,
        }));
        notes.push("all images were complete: kept".to_string());
        keep(trail, fsid, dests, &mut notes)
    } else {
        for (source, dest) in sources.iter().zip(dests) {
            if trail.cloned(dest) {
                actions.push(Action::RemovePartial {
                    dest: dest.clone(),
                    source: source.clone(),
                });
            }
        }
        actions.extend(sources.iter().map(|s| Action::RemoveTemp {
            source: s.clone(),
            required: true,
        }));
        Verdict::RollBack
    };
    Plan {
        temp: temp.to_string(),
        actions,
        verdict,
        notes,
    }
}

/// The result of a job a previous run finished (or left to finish) and
/// start-up recovery kept: what the journal knows, without the timings and
/// consistency the lost answer had.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RecoveredResult {
    /// The job.
    pub job_id: String,
    /// Cluster fsid.
    pub fsid: String,
    /// The images made, in request order.
    pub disks: Vec<RecoveredDisk>,
    /// Always true: this result was rebuilt by recovery.
    pub recovered: bool,
    /// The flatten mode requested.
    pub flatten: Flatten,
    /// Whether every image is independent of its source already.
    pub flattened: bool,
    /// Why a `background` flatten killed half-way was not resumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flatten_error: Option<RpcError>,
}

/// One image of a [`RecoveredResult`].
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RecoveredDisk {
    /// Pool.
    pub pool: String,
    /// Image.
    pub image: String,
    /// Its final snapshot.
    pub snapshot: String,
    /// `rbd://<fsid>/<pool>/<image>/<snapshot>`.
    pub location: String,
}

/// The kept job's result, and whether its flatten resumes.
fn keep(trail: &Trail, fsid: &str, dests: &[ImageSpec], notes: &mut Vec<String>) -> Verdict {
    let mode = trail.flatten_mode();
    let disks = dests
        .iter()
        .map(|d| RecoveredDisk {
            pool: d.pool.clone(),
            image: d.name.clone(),
            snapshot: FINAL_SNAPSHOT.to_string(),
            location: Location {
                fsid: fsid.to_string(),
                pool: d.pool.clone(),
                image: d.name.clone(),
                snapshot: FINAL_SNAPSHOT.to_string(),
            }
            .to_string(),
        })
        .collect();
    let mut recovered = RecoveredResult {
        job_id: trail.job_id.clone(),
        fsid: fsid.to_string(),
        disks,
        recovered: true,
        flatten: mode,
        flattened: mode == Flatten::Sync,
        flatten_error: None,
    };
    if mode == Flatten::Background && trail.steps.last() != Some(&Step::Paused) {
        // killed inside librbd's flatten: its object map may mark objects
        // as copied that never were, and a resumed flatten would skip them
        // and detach the parent. Left a clone, the image is whole.
        notes.push("background flatten not resumed: the daemon was killed inside it".into());
        let error = RpcError::new(
            ErrorKind::Cancelled,
            "the daemon was killed during the background flatten: the new image stays whole and usable, \
             not flattened (still a clone of its source); a flatten killed half-way is not resumed \
             automatically — run `rbd object-map rebuild` on the image, then `rbd flatten`",
        );
        recovered.flatten_error = Some(error);
        return Verdict::Keep {
            result: value(&recovered),
            resume: false,
        };
    }
    if mode.after_answer() {
        notes.push(format!("{mode:?} flatten resumed").to_lowercase());
    }
    Verdict::Keep {
        result: value(&recovered),
        resume: mode.after_answer(),
    }
}

fn value(result: &RecoveredResult) -> Value {
    serde_json::to_value(result).unwrap_or_default()
}
