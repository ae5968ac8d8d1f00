//! The methods' results as types: the handlers build these, and the OpenRPC
//! document (`crate::openrpc`) is generated from the same types, so the
//! published schema cannot drift from what is sent.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use super::JobRecord;
use super::JobState;
use super::{Counters, Percentiles};
use crate::libvirt::DomainInfo;
use crate::owners::OwnerStatus;
use crate::recovery::state::RecoveryStatus;
use crate::snapshot::GuardInfo;

/// `snapshot.create`'s result: the job's own, or for a retry of a job a
/// previous run left, what recovery rebuilt from the journal.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum CreateResult {
    /// Made by this run.
    Made(crate::snapshot::SnapshotResult),
    /// Kept by start-up recovery (`recovered: true`).
    Recovered(crate::recovery::plan::RecoveredResult),
}

/// `snapshot.delete`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Deleted {
    /// The image's pool.
    pub pool: String,
    /// The image removed.
    pub image: String,
    /// Always true: a delete that did not happen is an error.
    pub deleted: bool,
}

/// `jobs.list`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct JobList {
    /// Running, queued and the last 1024 finished jobs, oldest first.
    pub jobs: Vec<JobRecord>,
}

/// `guard.dismiss`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Dismissed {
    /// The guard as it was when dismissed.
    pub guard: GuardInfo,
    /// Always `true`: the daemon no longer reports or thaws this guest.
    pub dismissed: bool,
}

/// `jobs.cancel`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Cancelled {
    /// The job.
    pub job_id: String,
    /// Its state when the cancel arrived.
    pub state: JobState,
    /// Whether it was running and now stops at its next safe point (false:
    /// it had ended, nothing is done).
    pub cancelling: bool,
}

/// `domain.disks`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DomainDisks {
    /// The domain as libvirt describes it.
    #[serde(flatten)]
    pub domain: DomainInfo,
    /// The disk a request without `disks` snapshots (lowest boot order, else
    /// the first hard disk); null when the domain has none.
    pub boot_disk: Option<String>,
}

/// `daemon.status`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DaemonStatus {
    /// The daemon's version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: f64,
    /// A backend down, a guest at risk, or a backend's calls stuck.
    pub degraded: bool,
    /// A stop has begun: new work is refused.
    pub shutting_down: bool,
    /// The libvirt connection.
    pub libvirt: LibvirtLink,
    /// The Ceph connection.
    pub ceph: CephLink,
    /// Snapshot jobs running (also those flattening after their answer).
    pub jobs_in_flight: usize,
    /// This host's flatten slots.
    pub flattens: Flattens,
    /// Start-up recovery's state.
    pub recovery: RecoveryStatus,
    /// Guests whose thaw is not confirmed, each with the guard thawing it.
    pub guests_at_risk: Vec<GuardInfo>,
    /// Images made with `flatten: none` that still depend on their source
    /// disk, and what the daemon last saw of the source (see
    /// `snapshot.release_none_after_secs`).
    pub dependents: Vec<super::release::Dependent>,
    /// Each owner of blocking calls (`libvirt`, `thaw`, `ceph`, `flatten`,
    /// `manager`, `journal`, `metrics`) and its usage.
    pub blocking_calls: BTreeMap<String, OwnerStatus>,
    /// Requests and snapshots counted since start.
    pub counters: Counters,
    /// Freeze windows of the last 1024 frozen snapshots, in milliseconds.
    pub freeze_window_ms: Percentiles,
}

/// The libvirt connection in `daemon.status`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LibvirtLink {
    /// The URI.
    pub uri: String,
    /// Whether requests can use it now.
    pub connected: bool,
    /// Why not, when not.
    pub error: Option<String>,
}

/// The Ceph connection in `daemon.status`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CephLink {
    /// The ceph.conf used.
    pub conf: String,
    /// Whether requests can use it now.
    pub connected: bool,
    /// The cluster's fsid, once connected.
    pub fsid: Option<String>,
    /// Why not connected, when not.
    pub error: Option<String>,
}

/// The host's flatten slots in `daemon.status`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Flattens {
    /// Most flattens at once (0: no limit).
    pub limit: usize,
    /// Flattens running.
    pub running: usize,
    /// Flattens waiting for a slot.
    pub queued: usize,
}
