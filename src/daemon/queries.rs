//! The read-only methods: `jobs.list`, `jobs.get`, `domain.disks`,
//! `daemon.status`. A caller held to `[[policy]]` rules sees only the
//! domains those rules name: their disks, their jobs (with their images,
//! request ids and locations), their guests at risk and their jobs waiting
//! for recovery; the counts (jobs in flight, degraded) stay the host's.

use std::sync::Arc;

use std::collections::BTreeMap;

use serde_json::Value;

use super::results::{CephLink, DaemonStatus, DomainDisks, Flattens, JobList, LibvirtLink};
use crate::owners::OwnerStatus;

use super::{to_value, wire, Daemon};
use crate::policy::Scope;
use crate::protocol::{ErrorKind, RpcError};
use crate::snapshot::preflight::boot_disk;

pub(super) fn jobs_list(daemon: &Daemon, scope: &Scope) -> Result<Value, RpcError> {
    let mut jobs = daemon.jobs.list();
    jobs.retain(|job| scope.sees(&job.domain_name));
    to_value(&JobList { jobs })
}

/// A job of a domain the caller's rules do not name is, to that caller,
/// no job at all (the same answer as an id never used).
pub(super) fn jobs_get(daemon: &Daemon, job_id: &str, scope: &Scope) -> Result<Value, RpcError> {
    match daemon.jobs.get(job_id) {
        Some(job) if scope.sees(&job.domain_name) => to_value(&job),
        _ => Err(RpcError::new(
            ErrorKind::JobNotFound,
            format!(
                "no job {job_id:?} (the last {} finished jobs are kept, across restarts)",
                daemon.config.jobs_kept
            ),
        )),
    }
}

pub(super) async fn domain_disks(
    daemon: &Arc<Daemon>,
    domain: String,
    scope: &Scope,
) -> Result<Value, RpcError> {
    let hv = daemon.backends.hypervisor()?;
    let deadline = daemon.settings.call_deadline;
    let info = match crate::owners::LIBVIRT
        .call(deadline, move || hv.domain(&domain))
        .await
    {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => return Err(wire::libvirt_error(&e)),
        Err(late) => {
            return Err(wire::late(
                late.error("the domain lookup", deadline),
                ErrorKind::LibvirtUnavailable,
            ))
        }
    };
    scope.domain(&info.name).map_err(super::denied)?;
    let boot_disk = boot_disk(&info).map(|d| d.target.clone());
    to_value(&DomainDisks {
        domain: info,
        boot_disk,
    })
}

/// Whether the caller sees the domain of job `job_id`: an unrestricted
/// caller everything, one held to rules only jobs of the domains they name
/// (a job no longer kept, by its journalled domain name).
fn sees_job(daemon: &Daemon, scope: &Scope, job_id: &str) -> bool {
    match scope {
        Scope::Unrestricted => true,
        Scope::Rules { .. } => daemon
            .jobs
            .get(job_id)
            .is_some_and(|job| scope.sees(&job.domain_name)),
    }
}

pub(super) fn daemon_status(daemon: &Daemon, scope: &Scope) -> Result<Value, RpcError> {
    let libvirt = daemon.backends.libvirt_status();
    let ceph = daemon.backends.ceph_status();
    let fsid = daemon.backends.store().ok().and_then(|s| s.fsid().ok());
    let (running, queued) = daemon.slots.usage();
    let mut at_risk = daemon.guards.list();
    let stuck = crate::owners::all().iter().any(|o| o.status().degraded);
    // degraded counts every guest; the list names only the caller's
    let degraded = !(libvirt.connected && ceph.connected && at_risk.is_empty()) || stuck;
    at_risk.retain(|g| sees_job(daemon, scope, &g.job_id));
    let mut recovery = daemon.recovery.status();
    recovery
        .pending
        .retain(|p| sees_job(daemon, scope, &p.job_id));
    if !matches!(scope, Scope::Unrestricted) {
        // orphans are named by image, not by a domain the rules could match
        recovery.orphans.clear();
    }
    let mut dependents = daemon.dependents.list();
    dependents.retain(|d| sees_job(daemon, scope, &d.job_id));
    to_value(&DaemonStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: daemon.uptime_secs(),
        degraded,
        shutting_down: daemon.is_shutting_down(),
        libvirt: LibvirtLink {
            uri: daemon.backends.libvirt_uri().to_string(),
            connected: libvirt.connected,
            error: libvirt.error,
        },
        ceph: CephLink {
            conf: daemon.backends.ceph_conf().display().to_string(),
            connected: ceph.connected,
            fsid,
            error: ceph.error,
        },
        jobs_in_flight: daemon.jobs.running(),
        flattens: Flattens {
            limit: daemon.slots.limit(),
            running,
            queued,
        },
        recovery,
        guests_at_risk: at_risk,
        dependents,
        blocking_calls: blocking_calls(),
        counters: daemon.stats.counters(),
        freeze_window_ms: daemon.stats.freeze_windows(),
    })
}

/// Each backend owner's usage: calls running, stuck past their deadline,
/// abandoned since start, and whether that makes the backend degraded.
fn blocking_calls() -> BTreeMap<String, OwnerStatus> {
    crate::owners::all()
        .iter()
        .map(|owner| (owner.name().to_string(), owner.status()))
        .collect()
}
