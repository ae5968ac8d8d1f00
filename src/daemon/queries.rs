//! The read-only methods: `jobs.list`, `jobs.get`, `domain.disks`,
//! `daemon.status` (`domain.disks` only for domains the caller's rules
//! allow).

use std::sync::Arc;

use std::collections::BTreeMap;

use serde_json::Value;

use super::results::{CephLink, DaemonStatus, DomainDisks, Flattens, JobList, LibvirtLink};
use crate::owners::OwnerStatus;

use super::{to_value, wire, Daemon};
use crate::policy::Scope;
use crate::protocol::{ErrorKind, RpcError};
use crate::snapshot::preflight::boot_disk;

pub(super) fn jobs_list(daemon: &Daemon) -> Result<Value, RpcError> {
    to_value(&JobList {
        jobs: daemon.jobs.list(),
    })
}

pub(super) fn jobs_get(daemon: &Daemon, job_id: &str) -> Result<Value, RpcError> {
    match daemon.jobs.get(job_id) {
        Some(job) => to_value(&job),
        None => Err(RpcError::new(
            ErrorKind::JobNotFound,
            format!("no job {job_id:?} (the last 1024 finished jobs are kept, across restarts)"),
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
        Err(late) => return Err(wire::late_libvirt(&late)),
    };
    scope.domain(&info.name).map_err(super::denied)?;
    let boot_disk = boot_disk(&info).map(|d| d.target.clone());
    to_value(&DomainDisks {
        domain: info,
        boot_disk,
    })
}

pub(super) fn daemon_status(daemon: &Daemon) -> Result<Value, RpcError> {
    let libvirt = daemon.backends.libvirt_status();
    let ceph = daemon.backends.ceph_status();
    let fsid = daemon.backends.store().ok().and_then(|s| s.fsid().ok());
    let (running, queued) = daemon.slots.usage();
    let at_risk = daemon.guards.list();
    let stuck = crate::owners::all().iter().any(|o| o.status().degraded);
    to_value(&DaemonStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: daemon.uptime_secs(),
        degraded: !(libvirt.connected && ceph.connected && at_risk.is_empty()) || stuck,
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
        recovery: daemon.recovery.status(),
        guests_at_risk: at_risk,
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
