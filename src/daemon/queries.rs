//! The read-only methods: `jobs.list`, `jobs.get`, `domain.disks`,
//! `daemon.status` (`domain.disks` only for domains the caller's rules
//! allow).

use std::sync::Arc;

use serde_json::{json, Value};

use super::{to_value, wire, Daemon};
use crate::policy::Scope;
use crate::protocol::{ErrorKind, RpcError};
use crate::snapshot::preflight::boot_disk;

pub(super) fn jobs_list(daemon: &Daemon) -> Result<Value, RpcError> {
    Ok(json!({ "jobs": to_value(&daemon.jobs.list())? }))
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
    let boot = boot_disk(&info).map(|d| d.target.clone());
    let mut value = to_value(&info)?;
    value["boot_disk"] = json!(boot);
    Ok(value)
}

pub(super) fn daemon_status(daemon: &Daemon) -> Result<Value, RpcError> {
    let libvirt = daemon.backends.libvirt_status();
    let ceph = daemon.backends.ceph_status();
    let fsid = daemon.backends.store().ok().and_then(|s| s.fsid().ok());
    let (running, queued) = daemon.slots.usage();
    let at_risk = daemon.guards.list();
    let stuck = crate::owners::all().iter().any(|o| o.status().degraded);
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": daemon.uptime_secs(),
        "degraded": !(libvirt.connected && ceph.connected && at_risk.is_empty()) || stuck,
        "shutting_down": daemon.is_shutting_down(),
        "libvirt": { "uri": daemon.backends.libvirt_uri(), "connected": libvirt.connected, "error": libvirt.error },
        "ceph": {
            "conf": daemon.backends.ceph_conf(), "connected": ceph.connected, "fsid": fsid, "error": ceph.error,
        },
        "jobs_in_flight": daemon.jobs.running(),
        "flattens": { "limit": daemon.slots.limit(), "running": running, "queued": queued },
        "recovery": daemon.recovery.status(),
        "guests_at_risk": to_value(&at_risk)?,
        "blocking_calls": blocking_calls(),
        "counters": to_value(&daemon.stats.counters())?,
        "freeze_window_ms": to_value(&daemon.stats.freeze_windows())?,
    }))
}

/// Each backend owner's usage: calls running, stuck past their deadline,
/// abandoned since start, and whether that makes the backend degraded.
fn blocking_calls() -> Value {
    let mut map = serde_json::Map::new();
    for owner in crate::owners::all() {
        map.insert(
            owner.name().to_string(),
            serde_json::to_value(owner.status()).unwrap_or_default(),
        );
    }
    Value::Object(map)
}
