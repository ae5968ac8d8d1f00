//! The workflow's inputs and outputs.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::rbd::CloneFormat;

pub use crate::protocol::{Flatten, Quiesce};

/// One snapshot request, already validated at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// Domain name or UUID.
    pub domain: String,
    /// Name of the new image (e.g. a Glance image UUID). With several disks,
    /// each gets `<image>-<target>`.
    pub image: String,
    /// Destination pool; `None` applies Nova's rule, then the default.
    pub pool: Option<String>,
    /// Target devs to snapshot; empty means the boot disk.
    pub disks: Vec<String>,
    /// Freeze policy.
    pub quiesce: Quiesce,
    /// Flatten mode.
    pub flatten: Flatten,
}

/// Daemon-wide settings the workflow obeys.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Destination pool when the request names none and the disk has no parent.
    pub default_pool: Option<String>,
    /// Longest the guest may stay frozen: freeze + snapshots must fit in it.
    pub freeze_deadline: Duration,
    /// The guest agent's response timeout (libvirt's default is forever).
    pub agent_timeout: Duration,
    /// Deadline of every other hypervisor or image-store call.
    pub call_deadline: Duration,
    /// Deadline of a whole flatten.
    pub flatten_deadline: Duration,
    /// A flatten without progress for this long fails (an OSD gone).
    pub flatten_stall: Duration,
    /// Clone format to use; `None` picks the newest the cluster allows.
    pub clone_format: Option<CloneFormat>,
    /// This host's name, recorded on every image made (`rbdsnapd.host`).
    pub host: String,
    /// The destination pools the caller may write into (its `[[policy]]`
    /// rules); `None`: any.
    pub allowed_pools: Option<Vec<String>>,
    /// Pause the vCPUs around the snapshots of several disks that no
    /// freeze covers, so that the set is one instant.
    pub pause_vcpus: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_pool: None,
            freeze_deadline: Duration::from_secs(5),
            agent_timeout: Duration::from_secs(5),
            call_deadline: Duration::from_secs(30),
            flatten_deadline: Duration::from_secs(3600),
            flatten_stall: Duration::from_secs(60),
            clone_format: None,
            host: String::new(),
            allowed_pools: None,
            pause_vcpus: true,
        }
    }
}

/// How consistent the snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Taken while the guest's filesystems were frozen.
    Filesystem,
    /// Taken without a freeze: what a power cut would leave.
    Crash,
}

/// Workflow phases, as progress reports name them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Checking before touching the guest.
    Preflight,
    /// Guest frozen, temporary snapshots being taken.
    Freeze,
    /// Cloning the temporary snapshots.
    Clone,
    /// Waiting for one of the host's flatten slots.
    Queued,
    /// Copying parent data into the new images.
    Flatten,
    /// Final snapshot and clean-up.
    Finish,
    /// Undoing after a failure.
    Rollback,
}

/// A progress report: phase, and bytes (or units) done of total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Current phase.
    pub phase: Phase,
    /// Units done in this phase.
    pub done: u64,
    /// Units in this phase (0 when unknown).
    pub total: u64,
    /// In phase `queued`: the place in the host's flatten queue, 1 = next.
    pub position: Option<u64>,
}

impl Progress {
    /// A report of `done` of `total` in `phase`.
    pub fn new(phase: Phase, done: u64, total: u64) -> Progress {
        Progress {
            phase,
            done,
            total,
            position: None,
        }
    }
}

/// Where progress reports go.
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// What a running job reports to, and is steered by.
#[derive(Clone)]
pub struct JobHooks {
    /// Progress reports.
    pub progress: ProgressSink,
    /// Set to stop the job at its next safe point.
    pub cancel: CancelFlag,
    /// The crash journal.
    pub log: Arc<dyn super::StepLog>,
    /// The host-wide flatten slots this job's flattens queue for.
    pub slots: Arc<super::FlattenSlots>,
    /// The thaw guards: where a freeze not confirmed undone is handed.
    pub guards: Arc<super::ThawGuards>,
    /// Calls abandoned at their deadline that the rollback could not wait
    /// for: recovery waits for them.
    pub late: Arc<super::saga::LateCalls>,
}

impl Default for JobHooks {
    fn default() -> Self {
        JobHooks {
            progress: Arc::new(|_| {}),
            cancel: CancelFlag::default(),
            log: Arc::new(super::NoLog),
            slots: super::FlattenSlots::new(0),
            guards: super::ThawGuards::inert(),
            late: Arc::default(),
        }
    }
}

impl std::fmt::Debug for JobHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHooks")
            .field("cancel", &self.cancel)
            .field("log", &self.log)
            .finish()
    }
}

/// Set to ask a running job to stop at its next safe point: before the
/// freeze, between steps, or inside a flatten — never inside the freeze
/// window. A stopped job rolls back and fails as `Cancelled`.
pub type CancelFlag = Arc<std::sync::atomic::AtomicBool>;

/// Wall-clock times of the steps, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Timings {
    /// The checks before the guest is touched (and opening the sources).
    pub preflight_ms: u64,
    /// The freeze call.
    pub freeze_ms: u64,
    /// The temporary snapshots, all disks.
    pub snap_ms: u64,
    /// The thaw call.
    pub thaw_ms: u64,
    /// Guest frozen → thawed, as measured around freeze, snapshots and thaw.
    pub freeze_window_ms: u64,
    /// vCPUs paused → resumed (several disks no freeze covers; 0: no pause).
    pub pause_ms: u64,
    /// The clones.
    pub clone_ms: u64,
    /// The flattens.
    pub flatten_ms: u64,
    /// The final snapshots, the temporary ones removed (and with flatten
    /// `cluster`, the manager's tasks queued).
    pub finish_ms: u64,
    /// Request → result.
    pub total_ms: u64,
}

/// One disk's new image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DiskResult {
    /// The disk's target dev.
    pub disk: String,
    /// The source image, `pool[/namespace]/image`.
    pub source: String,
    /// Destination pool.
    pub pool: String,
    /// New image name.
    pub image: String,
    /// The snapshot on the new image (`snap`).
    pub snapshot: String,
    /// `rbd://<fsid>/<pool>/<image>/snap`.
    pub location: String,
    /// The source snapshot the new image still depends on: with flatten
    /// `none` for good, with `background`/`cluster` until the flatten ends.
    pub parent: Option<String>,
    /// With flatten `cluster`: the Ceph manager task flattening the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flatten_task: Option<String>,
}

/// The outcome of a snapshot job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SnapshotResult {
    /// The job's id (in temporary snapshot names and image metadata).
    pub job_id: String,
    /// Domain name.
    pub domain: String,
    /// Domain UUID.
    pub domain_uuid: String,
    /// Cluster fsid.
    pub fsid: String,
    /// One entry per disk, in request order.
    pub disks: Vec<DiskResult>,
    /// Consistency reached.
    pub consistency: Consistency,
    /// Why the snapshot is not filesystem-consistent, when it is not.
    pub consistency_reason: Option<String>,
    /// Filesystems the freeze covered.
    pub frozen_filesystems: u32,
    /// Clone format used.
    pub clone_format: CloneFormat,
    /// How the images are (being) flattened.
    pub flatten: Flatten,
    /// Whether every image is independent of its source already.
    pub flattened: bool,
    /// Whether every disk was captured at one instant: a single disk, all
    /// under frozen filesystems, or the vCPUs paused around the snapshots.
    /// False: each disk is consistent on its own only.
    pub one_instant: bool,
    /// Step times.
    pub timings: Timings,
    /// Set on the job's record when a `background` or `cluster` flatten
    /// failed after the answer: why (the images stay usable, not flattened).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<crate::protocol::RpcError>")]
    pub flatten_error: Option<serde_json::Value>,
}
