//! Start-up recovery from the journal: for every job the journal shows
//! unfinished, a guest that may be frozen gets a thaw guard first (the
//! daemon arms it before READY), then this module rolls back what the job may have left in Ceph — a partial clone (only
//! an image that is provably this job's: its metadata names the job, or its
//! parent is the job's temporary snapshot) and the temporary snapshot — or,
//! when every image was finished, record the job as done. What needs a
//! backend that is down stays pending and is retried, never dropped.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use crate::journal::{Outcome, Record};
use crate::libvirt::Hypervisor;
use crate::protocol::{ErrorKind, RpcError};
use crate::rbd::{ImageSpec, ImageStore, RbdErrorKind};
use crate::snapshot::{
    saga, FlattenMode, GuardInfo, Step, FINAL_SNAPSHOT, METADATA_JOB, TEMP_SNAPSHOT_PREFIX,
};

/// One unfinished job, as the journal tells it.
#[derive(Debug, Clone, Serialize)]
pub struct Trail {
    /// The job.
    pub job_id: String,
    /// Its idempotency key.
    pub request_id: Option<String>,
    /// Its params, as received.
    pub params: Value,
    /// Its domain.
    pub domain_uuid: String,
    /// The librados address of the daemon that ran it.
    pub client_addr: Option<String>,
    /// Steps recorded, oldest first.
    pub steps: Vec<Step>,
}

impl Trail {
    /// Whether the guest may still be frozen.
    pub fn maybe_frozen(&self) -> bool {
        let last_freeze = self.steps.iter().rposition(|s| *s == Step::Freeze);
        let last_thaw = self.steps.iter().rposition(|s| *s == Step::Thawed);
        matches!((last_freeze, last_thaw), (Some(f), t) if t.is_none_or(|t| t < f))
    }

    fn begin(&self) -> Option<(&str, &[ImageSpec], &[ImageSpec], &str)> {
        self.steps.iter().find_map(|s| match s {
            Step::Begin {
                fsid,
                sources,
                dests,
                temp_snap,
                ..
            } => Some((fsid.as_str(), &sources[..], &dests[..], temp_snap.as_str())),
            _ => None,
        })
    }

    /// The flatten mode the request asked for.
    pub fn flatten_mode(&self) -> FlattenMode {
        self.params
            .get("flatten")
            .cloned()
            .and_then(|m| serde_json::from_value(m).ok())
            .unwrap_or_default()
    }

    fn cloned(&self, dest: &ImageSpec) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, Step::Clone { dest: d } if d == dest))
    }

    fn finished(&self, dest: &ImageSpec) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, Step::Finished { dest: d } if d == dest))
    }
}

/// Split the journal into unfinished jobs and the end records of finished ones.
pub fn split(records: Vec<Record>) -> (Vec<Trail>, Vec<Record>) {
    let mut trails: Vec<Trail> = Vec::new();
    let mut ended = Vec::new();
    for record in records {
        match record {
            Record::Request {
                job_id,
                request_id,
                params,
                domain_uuid,
                client_addr,
                ..
            } => trails.push(Trail {
                job_id,
                request_id,
                params,
                domain_uuid,
                client_addr,
                steps: Vec::new(),
            }),
            Record::Step { job_id, step } => {
                if let Some(trail) = trails.iter_mut().find(|t| t.job_id == job_id) {
                    trail.steps.push(step);
                }
            }
            Record::Guard { .. } | Record::Unguard { .. } => {}
            end @ Record::End { .. } => {
                trails.retain(|t| t.job_id != end.job_id());
                ended.retain(|e: &Record| e.job_id() != end.job_id());
                ended.push(end);
            }
        }
    }
    (trails, ended)
}

/// What recovering a job did, or why it must wait.
#[derive(Debug)]
pub enum Recovered {
    /// Done: the outcome to journal and report.
    Ended(Outcome, Vec<String>),
    /// Not yet: why (a backend is down, a step failed); retried later.
    Pending(String),
    /// The images were complete (the requester may have its location) but
    /// their `background` or `cluster` flatten had not ended: resume it.
    Resume {
        /// The result, as a retry of the request gets it.
        result: Value,
        /// What recovery did.
        actions: Vec<String>,
        /// The flatten mode.
        mode: FlattenMode,
        /// The images to flatten.
        dests: Vec<ImageSpec>,
    },
}

/// The thaw guards the journal shows armed and not cleared, oldest first.
pub fn guards(records: &[Record]) -> Vec<GuardInfo> {
    let mut active: Vec<GuardInfo> = Vec::new();
    for record in records {
        match record {
            Record::Guard {
                job_id,
                domain_uuid,
                since,
                reason,
            } => {
                active.retain(|g| &g.domain_uuid != domain_uuid);
                active.push(GuardInfo {
                    domain_uuid: domain_uuid.clone(),
                    job_id: job_id.clone(),
                    since_unix: *since,
                    attempts: 0,
                    last_error: format!("resumed after a restart: {reason}"),
                });
            }
            Record::Unguard { domain_uuid, .. } => active.retain(|g| &g.domain_uuid != domain_uuid),
            _ => {}
        }
    }
    active
}

/// Recover the Ceph side of one job. The guest is not this function's:
/// a trail that may have left it frozen gets a thaw guard first (see
/// [`Trail::maybe_frozen`]), which thaws independently of Ceph.
pub fn recover(trail: &Trail, store: Option<&Arc<dyn ImageStore>>) -> Recovered {
    let mut actions = Vec::new();
    let Some((fsid, sources, dests, temp)) = trail.begin() else {
        let error = RpcError::new(
            ErrorKind::Cancelled,
            "the daemon stopped before this job touched anything",
        );
        return Recovered::Ended(Outcome::Error(error), actions);
    };
    let Some(store) = store else {
        return Recovered::Pending("Ceph is down: cannot roll back yet".into());
    };
    fence(store.as_ref(), trail, &mut actions);
    if dests.iter().all(|d| trail.finished(d)) {
        // complete before the crash: keep it (retries get this result)
        for source in sources {
            let _ = store
                .open(source)
                .and_then(|img| img.remove_snapshot(temp, true));
        }
        actions.push("all images were complete: kept".into());
        let mode = trail.flatten_mode();
        let disks: Vec<Value> = dests
            .iter()
            .map(|d| json!({"pool": d.pool, "image": d.name, "snapshot": FINAL_SNAPSHOT,
                            "location": format!("rbd://{fsid}/{}/{}/{FINAL_SNAPSHOT}", d.pool, d.name)}))
            .collect();
        let result = json!({"job_id": trail.job_id, "fsid": fsid, "disks": disks, "recovered": true,
                            "flatten": mode, "flattened": mode == FlattenMode::Sync});
        if mode == FlattenMode::Background && trail.steps.last() != Some(&Step::Paused) {
            // killed inside librbd's flatten: its object map may mark objects
            // as copied that never were, and a resumed flatten would skip
            // them and detach the parent. Left a clone, the image is whole.
            actions.push("background flatten not resumed: the daemon was killed inside it".into());
            let error = RpcError::new(
                ErrorKind::Cancelled,
                "the daemon was killed during the background flatten: the new image stays whole and usable, \
                 not flattened (still a clone of its source); a flatten killed half-way is not resumed \
                 automatically — run `rbd object-map rebuild` on the image, then `rbd flatten`",
            );
            let mut result = result;
            result["flatten_error"] = serde_json::to_value(&error).unwrap_or_default();
            return Recovered::Ended(Outcome::Ok(result), actions);
        }
        if mode.after_answer() {
            actions.push(format!("{mode:?} flatten resumed").to_lowercase());
            return Recovered::Resume {
                result,
                actions,
                mode,
                dests: dests.to_vec(),
            };
        }
        return Recovered::Ended(Outcome::Ok(result), actions);
    }
    match roll_back(store.as_ref(), trail, sources, dests, temp, &mut actions) {
        Ok(()) => {
            let error = RpcError::new(
                ErrorKind::Cancelled,
                "the daemon stopped during this job; it was rolled back at restart (retry the request)",
            );
            Recovered::Ended(Outcome::Error(error), actions)
        }
        Err(e) => Recovered::Pending(e),
    }
}

/// Blocklist the dead daemon's client, so its stale watches do not stall
/// the rollback (and the retries after it). Best effort: without the
/// permission (`profile rbd` has it) the rollback still works, only slower.
fn fence(store: &dyn ImageStore, trail: &Trail, actions: &mut Vec<String>) {
    let Some(addr) = trail.client_addr.as_deref() else {
        return;
    };
    if store.client_addr().as_deref() == Some(addr) {
        return;
    }
    match store.fence(addr) {
        Ok(()) => actions.push(format!("fenced the previous client {addr}")),
        Err(e) => {
            tracing::warn!(addr, error = %e, "could not blocklist the previous client; its watches will time out")
        }
    }
}

fn roll_back(
    store: &dyn ImageStore,
    trail: &Trail,
    sources: &[ImageSpec],
    dests: &[ImageSpec],
    temp: &str,
    actions: &mut Vec<String>,
) -> Result<(), String> {
    for (source, dest) in sources.iter().zip(dests) {
        if trail.cloned(dest) && ours(store, dest, source, temp, &trail.job_id)? {
            saga::remove_image_and_snapshots(store, dest)
                .map_err(|e| format!("remove {dest}: {e}"))?;
            actions.push(format!("removed partial image {dest}"));
        }
    }
    for source in sources {
        let removed = store
            .open(source)
            .and_then(|img| img.remove_snapshot(temp, true));
        match removed {
            Ok(()) => actions.push(format!("removed temporary snapshot {source}@{temp}")),
            Err(e) if e.kind == RbdErrorKind::NotFound => {}
            Err(e) => return Err(format!("remove {source}@{temp}: {e}")),
        }
    }
    Ok(())
}

/// An image is this job's only if it says so, or hangs off its snapshot.
fn ours(
    store: &dyn ImageStore,
    dest: &ImageSpec,
    source: &ImageSpec,
    temp: &str,
    job_id: &str,
) -> Result<bool, String> {
    let image = match store.open(dest) {
        Ok(image) => image,
        Err(e) if e.kind == RbdErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("open {dest}: {e}")),
    };
    if image
        .metadata(METADATA_JOB)
        .map_err(|e| e.to_string())?
        .as_deref()
        == Some(job_id)
    {
        return Ok(true);
    }
    let parent = image.parent().map_err(|e| e.to_string())?;
    Ok(parent.is_some_and(|p| &p.image == source && p.snap == temp))
}

/// A temporary snapshot of ours that no unfinished job accounts for (the
/// state directory was lost, or another host's daemon died).
#[derive(Debug, Clone, Serialize)]
pub struct Orphan {
    /// `pool[/namespace]/image`.
    pub image: String,
    /// The snapshot's name.
    pub snapshot: String,
    /// `reported`, `removed`, or why it could not be removed.
    pub action: String,
}

/// Look for temporary snapshots on the RBD disks of every domain libvirt
/// knows (the only images rbdsnapd snapshots) that belong to no job in
/// `known_jobs`; report them, or remove them when `remove`.
pub fn sweep(
    hv: &dyn Hypervisor,
    store: &dyn ImageStore,
    known_jobs: &std::collections::HashSet<String>,
    remove: bool,
) -> Result<Vec<Orphan>, String> {
    let domains = hv.list_domains().map_err(|e| e.to_string())?;
    let mut seen = std::collections::HashSet::new();
    let mut orphans = Vec::new();
    for disk in domains.iter().flat_map(|d| d.disks.iter()) {
        let crate::libvirt::DiskSource::Rbd(rbd) = &disk.source else {
            continue;
        };
        let spec = ImageSpec {
            pool: rbd.pool.clone(),
            namespace: rbd.namespace.clone(),
            name: rbd.image.clone(),
        };
        if !seen.insert(spec.clone()) {
            continue;
        }
        // an image that cannot be opened now is not ours to judge
        let Ok(image) = store.open(&spec) else {
            continue;
        };
        let snapshots = image.snapshots().map_err(|e| e.to_string())?;
        for snap in snapshots
            .iter()
            .filter(|s| s.starts_with(TEMP_SNAPSHOT_PREFIX))
        {
            if known_jobs.contains(&snap[TEMP_SNAPSHOT_PREFIX.len()..]) {
                continue;
            }
            let action = if !remove {
                "reported".to_string()
            } else {
                match image.remove_snapshot(snap, true) {
                    Ok(()) => "removed".to_string(),
                    Err(e) => format!("not removed: {e}"),
                }
            };
            orphans.push(Orphan {
                image: spec.to_string(),
                snapshot: snap.clone(),
                action,
            });
        }
    }
    Ok(orphans)
}
