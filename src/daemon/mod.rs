//! The daemon's state and its methods: the backends, the job registry, the
//! counters, and one handler per method. The server parses and validates a
//! request into a [`Call`]; [`Daemon::handle`] carries it out.

mod backends;
mod background;
mod cancel;
mod create;
mod delete;
mod guards;
mod jobs;
pub mod metrics;
mod queries;
mod recover;
pub mod release;
pub mod results;
mod stats;
pub mod wire;

pub use backends::Backends;
pub use jobs::{JobRecord, JobState, Jobs};
pub use stats::{Counters, Percentiles, Stats};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::config::Config;
use crate::journal::Journal;
use crate::policy::Scope;
use crate::protocol::{Call, ErrorKind, ProgressParams, RpcError};
use crate::snapshot::{FlattenSlots, GuardLog, Settings, StepLog, ThawGuards};

/// Where a request's progress notifications go (the request's connection);
/// `false` once that connection is gone.
pub type Notify = Arc<dyn Fn(ProgressParams) -> bool + Send + Sync>;

/// Everything the methods share.
#[derive(Debug)]
pub struct Daemon {
    /// The validated configuration.
    pub config: Config,
    /// Workflow settings derived from it.
    pub settings: Settings,
    /// libvirt and Ceph.
    pub backends: Arc<Backends>,
    /// Running and recent jobs.
    pub jobs: Jobs,
    /// Counters.
    pub stats: Stats,
    /// The crash journal (also the single-instance lock).
    pub journal: Arc<Journal>,
    /// Jobs a previous run left unfinished that could not be recovered yet.
    pub recovery: crate::recovery::Recovery,
    /// The host-wide flatten slots.
    pub slots: Arc<FlattenSlots>,
    /// Guests whose thaw is not confirmed, each with a guard thawing it.
    pub guards: Arc<ThawGuards>,
    /// Jobs' calls abandoned in Ceph that recovery must wait for.
    pub late: Arc<crate::snapshot::saga::LateCalls>,
    /// Woken at the end of each job (the metrics textfile is rewritten).
    pub metrics_changed: tokio::sync::Notify,
    /// Images made with `flatten: none` and the sources they depend on.
    pub dependents: release::Dependents,
    started: Instant,
    shutting_down: AtomicBool,
}

impl Daemon {
    /// A daemon for `config` (validated) with its opened journal, backends
    /// not yet connected.
    pub fn new(config: Config, journal: Journal) -> Arc<Daemon> {
        let backends = Backends::new(&config);
        Daemon::with_backends(config, journal, backends)
    }

    /// A daemon over the given backends (connected or not).
    pub fn with_backends(config: Config, journal: Journal, backends: Backends) -> Arc<Daemon> {
        let jobs_kept = config.jobs_kept;
        let dependents = release::Dependents::load(&config.state_dir);
        let journal = Arc::new(journal);
        let backends = Arc::new(backends);
        let settings = config.settings();
        let source = Arc::clone(&backends);
        let guards = ThawGuards::new(
            Arc::new(move || source.hypervisor().ok()),
            Arc::clone(&journal) as Arc<dyn GuardLog>,
            settings.agent_timeout,
        );
        Arc::new(Daemon {
            journal,
            recovery: crate::recovery::Recovery::default(),
            slots: FlattenSlots::new(config.snapshot.max_concurrent_flattens),
            settings,
            guards,
            late: Arc::default(),
            backends,
            config,
            jobs: Jobs::new(jobs_kept),
            stats: Stats::default(),
            metrics_changed: tokio::sync::Notify::new(),
            dependents,
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// The journal as the workflow's step log.
    pub fn step_log(&self) -> Arc<dyn StepLog> {
        Arc::clone(&self.journal) as Arc<dyn StepLog>
    }

    /// Refuse new work from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Seconds since start.
    pub fn uptime_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Carry out one call for a caller allowed `scope` (`caller_uid`, when
    /// known, counts its waiting requests); `request_id` and `notify` serve
    /// progress.
    pub async fn handle(
        self: &Arc<Self>,
        call: Call,
        request_id: Value,
        notify: Notify,
        scope: &Scope,
        caller_uid: Option<u32>,
    ) -> Result<Value, RpcError> {
        let outcome = match call {
            Call::SnapshotCreate(params) => {
                create::snapshot_create(self, params, request_id, notify, scope, caller_uid).await
            }
            Call::SnapshotDelete { pool, image, fsid } => {
                delete::snapshot_delete(self, pool, image, fsid, scope).await
            }
            Call::JobsList => queries::jobs_list(self, scope),
            Call::JobsGet(params) => queries::jobs_get(self, &params.job_id, scope),
            Call::JobsCancel(params) => cancel::jobs_cancel(self, &params.job_id, scope),
            Call::DomainDisks(params) => queries::domain_disks(self, params.domain, scope).await,
            Call::DaemonStatus => queries::daemon_status(self, scope),
            Call::GuardDismiss(params) => {
                guards::guard_dismiss(self, &params.domain_uuid, scope).await
            }
            Call::Metrics => Ok(Value::String(metrics::render(self))),
            // generated once, at start, by the server
            Call::Discover => Err(RpcError::new(
                ErrorKind::Internal,
                "rpc.discover is answered by the server",
            )),
        };
        self.stats.answered(outcome.is_err());
        outcome
    }

    /// A domain with a thaw guard may be frozen right now: no snapshot.
    fn refuse_if_guarded(&self, domain_uuid: &str) -> Result<(), RpcError> {
        match self.guards.get(domain_uuid) {
            None => Ok(()),
            Some(guard) => {
                let mut error = RpcError::new(
                    ErrorKind::Busy,
                    format!(
                        "domain {domain_uuid} may still be frozen: job {} could not confirm its \
                         thaw, and a thaw guard keeps thawing it (since unix {}, {} attempt(s), \
                         last: {}); retry once daemon.status shows no guest at risk",
                        guard.job_id, guard.since_unix, guard.attempts, guard.last_error
                    ),
                );
                error.data.guard = Some(Box::new(wire::guard_data(&guard)));
                Err(error)
            }
        }
    }

    fn refuse_if_shutting_down(&self) -> Result<(), RpcError> {
        if self.is_shutting_down() {
            return Err(RpcError::new(
                ErrorKind::ShuttingDown,
                "the daemon is shutting down; retry when it is back",
            ));
        }
        Ok(())
    }
}

/// Serialize a result that cannot fail to serialize (plain data).
fn to_value<T: serde::Serialize>(value: &T) -> Result<Value, RpcError> {
    serde_json::to_value(value)
        .map_err(|e| RpcError::new(ErrorKind::Internal, format!("result encoding: {e}")))
}

/// A refusal of the caller's `[[policy]]` rules, on the wire.
fn denied(why: String) -> RpcError {
    RpcError::new(ErrorKind::PermissionDenied, why)
}
