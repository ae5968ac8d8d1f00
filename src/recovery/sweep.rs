//! The start-up sweep: temporary snapshots of ours on the RBD disks of
//! every domain libvirt knows that no journal accounts for. Whether a job
//! is known is asked when its snapshot is looked at: jobs start while the
//! sweep runs, and their snapshots are theirs.

use serde::Serialize;

use crate::libvirt::Hypervisor;
use crate::rbd::{ImageSpec, ImageStore};
use crate::snapshot::TEMP_SNAPSHOT_PREFIX;

/// A temporary snapshot of ours that no unfinished job accounts for (the
/// state directory was lost, or another host's daemon died).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
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
    known_job: &dyn Fn(&str) -> bool,
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
            if known_job(&snap[TEMP_SNAPSHOT_PREFIX.len()..]) {
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
