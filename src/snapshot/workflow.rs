//! The whole job: pre-flight, the freeze window, then clone → flatten →
//! final snapshot inside Ceph, with every completed step undone on failure.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::blocking::{self, Late};
use super::capture::{self, Captured};
use super::flatten;
use super::preflight::{self, Plan, PlannedDisk};
use super::saga::{Saga, Undo};
use super::{
    ownership, DiskResult, Flatten, JobHooks, Phase, Progress, Settings, SnapshotError,
    SnapshotErrorKind as Kind, SnapshotRequest, SnapshotResult, Step, Timings, FINAL_SNAPSHOT,
    TEMP_SNAPSHOT_PREFIX,
};
use crate::libvirt::Hypervisor;
use crate::rbd::{CloneFormat, Image, ImageStore, Location, RbdErrorKind};

/// Each undo step's deadline when the job failed because the cluster does
/// not answer: one short try, then recovery takes over.
const CEPH_DOWN_UNDO: Duration = Duration::from_secs(5);

/// A fresh job id: unique, and safe inside snapshot and image names.
pub fn new_job_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Everything a job needs, shared by its steps.
pub(super) struct Job<'a> {
    hv: Arc<dyn Hypervisor>,
    store: Arc<dyn ImageStore>,
    settings: &'a Settings,
    req: &'a SnapshotRequest,
    job_id: &'a str,
    hooks: JobHooks,
}

/// Run one snapshot job to completion, or roll it back.
pub async fn run(
    hv: Arc<dyn Hypervisor>,
    store: Arc<dyn ImageStore>,
    settings: &Settings,
    req: &SnapshotRequest,
    job_id: &str,
    hooks: JobHooks,
) -> Result<SnapshotResult, SnapshotError> {
    let started = Instant::now();
    let job = Job {
        hv,
        store,
        settings,
        req,
        job_id,
        hooks,
    };
    job.report(Phase::Preflight, 0, 0);
    let plan = preflight::plan(&job.hv, &job.store, settings, req).await?;
    let preflight_ms = ms(started);
    job.check_cancelled()?;
    job.record(&Step::Begin {
        domain_uuid: plan.domain.uuid.clone(),
        fsid: plan.fsid.clone(),
        sources: plan.disks.iter().map(|d| d.source.spec().clone()).collect(),
        dests: plan.disks.iter().map(|d| d.dest.clone()).collect(),
        temp_snap: format!("{TEMP_SNAPSHOT_PREFIX}{job_id}"),
    })
    .await?;
    let mut saga = Saga::new(
        Arc::clone(&job.store),
        settings.call_deadline,
        job_id,
        Arc::clone(&job.hooks.late),
    );
    let outcome = match job.execute(&plan, &mut saga, started, preflight_ms).await {
        Ok(result) => Ok(result),
        Err(mut err) => {
            job.report(Phase::Rollback, 0, 0);
            if err.kind == Kind::CephUnavailable {
                saga.shorten(CEPH_DOWN_UNDO);
            }
            err.rollback_failures = saga.rollback().await;
            Err(err)
        }
    };
    job.give_agent_timeout_back(&plan).await;
    outcome
}

impl Job<'_> {
    /// Journal `step` before acting on it; no journal, no action. The
    /// write and its fsync run on the journal's owner, off the runtime.
    pub(super) async fn record(&self, step: &Step) -> Result<(), SnapshotError> {
        let (log, job_id, owned) = (
            Arc::clone(&self.hooks.log),
            self.job_id.to_string(),
            step.clone(),
        );
        blocking::journal(move || log.record(&job_id, &owned))
            .await
            .map_err(|e| {
                SnapshotError::new(
                    Kind::Journal,
                    format!(
                        "cannot journal the {} step, so not taking it: {e}",
                        step.name()
                    ),
                )
            })
    }

    /// A named point between steps, where a test build may pause (off the
    /// runtime: the pause blocks its thread).
    pub(super) async fn checkpoint(&self, name: &str) {
        if !self.hooks.log.pauses_at(name) {
            return;
        }
        let (log, job_id, name) = (
            Arc::clone(&self.hooks.log),
            self.job_id.to_string(),
            name.to_string(),
        );
        let _ = blocking::journal(move || {
            log.checkpoint(&job_id, &name);
            Ok(())
        })
        .await;
    }

    /// The job's hooks.
    pub(super) fn hooks(&self) -> &JobHooks {
        &self.hooks
    }

    /// The job's id.
    pub(super) fn id(&self) -> &str {
        self.job_id
    }

    /// Leave the domain as found: its agent response timeout back to what
    /// it was — now, or, while a guard still thaws through the agent (and
    /// needs the bound), when the guard clears.
    async fn give_agent_timeout_back(&self, plan: &Plan) {
        let Some(seconds) = plan.agent_timeout_restore else {
            return;
        };
        let uuid = &plan.domain.uuid;
        if self
            .hooks
            .guards
            .restore_agent_timeout_on_clear(uuid, seconds)
        {
            return;
        }
        preflight::restore_agent_timeout(&self.hv, self.settings, uuid, seconds).await;
    }

    fn check_cancelled(&self) -> Result<(), SnapshotError> {
        if self.hooks.cancel.load(Ordering::SeqCst) {
            return Err(SnapshotError::new(
                Kind::Cancelled,
                "the job was cancelled (daemon shutting down or jobs.cancel)",
            ));
        }
        Ok(())
    }

    fn report(&self, phase: Phase, done: u64, total: u64) {
        (self.hooks.progress)(Progress::new(phase, done, total));
    }

    async fn execute(
        &self,
        plan: &Plan,
        saga: &mut Saga,
        started: Instant,
        preflight_ms: u64,
    ) -> Result<SnapshotResult, SnapshotError> {
        let temp = format!("{TEMP_SNAPSHOT_PREFIX}{}", self.job_id);
        self.report(Phase::Freeze, 0, plan.disks.len() as u64);
        let captured = capture::capture(
            &self.hv,
            plan,
            self.settings,
            self.req.quiesce,
            &temp,
            saga,
            self,
        )
        .await?;
        self.check_cancelled()?;
        let clone_started = Instant::now();
        self.report(Phase::Clone, 0, plan.disks.len() as u64);
        let mut opened = Vec::with_capacity(plan.disks.len());
        let labels = super::labels::of(&captured);
        for (i, disk) in plan.disks.iter().enumerate() {
            self.record(&Step::Clone {
                dest: disk.dest.clone(),
            })
            .await?;
            opened.push(
                self.clone_disk(plan.clone_format, disk, &temp, &labels, saga)
                    .await?,
            );
            self.checkpoint("cloned").await;
            self.report(Phase::Clone, i as u64 + 1, plan.disks.len() as u64);
        }
        let clone_ms = ms(clone_started);
        let flatten_started = Instant::now();
        if self.req.flatten == Flatten::Sync {
            for (disk, image) in plan.disks.iter().zip(&opened) {
                let image = Some(Arc::clone(image));
                flatten::local(&self.store, &disk.dest, image, self.settings, &self.hooks)
                    .await
                    .map_err(|stopped| {
                        if let Some(running) = stopped.running {
                            saga.set_pending_for(&disk.dest, running);
                        }
                        stopped.error
                    })?;
            }
            self.checkpoint("flattened").await;
        }
        let flatten_ms = ms(flatten_started);
        self.check_cancelled()?;
        let finish_started = Instant::now();
        self.report(Phase::Finish, 0, plan.disks.len() as u64);
        let keeps_parent =
            self.req.flatten == Flatten::None && plan.clone_format == CloneFormat::V1;
        for (disk, image) in plan.disks.iter().zip(&opened) {
            self.finish_disk(disk, image, &temp, keeps_parent).await?;
            self.record(&Step::Finished {
                dest: disk.dest.clone(),
            })
            .await?;
        }
        let mut tasks = Vec::new();
        if self.req.flatten == Flatten::Cluster {
            for disk in &plan.disks {
                tasks.push(flatten::queue_task(&self.store, &disk.dest, self.settings).await?);
            }
        }
        let timings = Timings {
            preflight_ms,
            freeze_ms: captured.freeze_ms,
            snap_ms: captured.snap_ms,
            thaw_ms: captured.thaw_ms,
            freeze_window_ms: captured.window_ms,
            pause_ms: captured.pause_ms,
            clone_ms,
            flatten_ms,
            finish_ms: ms(finish_started),
            total_ms: ms(started),
        };
        Ok(self.result(plan, captured, &temp, timings, tasks))
    }

    /// Clone the temporary snapshot into the destination (v1 protects
    /// first); the new image stays open for the job's next steps, which then
    /// find its lock already held.
    async fn clone_disk(
        &self,
        format: CloneFormat,
        disk: &PlannedDisk,
        temp: &str,
        labels: &[(&'static str, String)],
        saga: &mut Saga,
    ) -> Result<Arc<dyn Image>, SnapshotError> {
        let deadline = self.settings.call_deadline;
        if format == CloneFormat::V1 {
            let (image, snap) = (Arc::clone(&disk.source), temp.to_string());
            blocking::store("protect", deadline, move || image.protect_snapshot(&snap)).await?;
        }
        let (store, parent, snap, child) = (
            Arc::clone(&self.store),
            disk.source.spec().clone(),
            temp.to_string(),
            disk.dest.clone(),
        );
        let job_id = self.job_id.to_string();
        let source = format!("{parent}@{snap} disk {}", disk.target);
        let host = self.settings.host.clone();
        let labels = labels.to_vec();
        // mark the clone as this job's at once: recovery removes only images
        // that provably are
        let outcome = blocking::ceph(deadline, move || {
            store.clone_image(&parent, &snap, &child, format)?;
            let image = store.open(&child)?;
            ownership::stamp(image.as_ref(), &job_id, &source, &host)?;
            super::labels::write(image.as_ref(), &labels)?;
            Ok::<_, crate::rbd::RbdError>(image)
        })
        .await;
        // the undo removes only what provably is this job's (a name taken
        // by someone else since pre-flight is theirs)
        let undo = || Undo::CreatedImage {
            spec: disk.dest.clone(),
            source: disk.source.spec().clone(),
            temp: temp.to_string(),
            pending: None,
        };
        match outcome {
            Ok(Ok(image)) => {
                saga.record(undo());
                Ok(image)
            }
            Ok(Err(e)) if e.kind == RbdErrorKind::Exists => Err(SnapshotError::rbd(&e)),
            Ok(Err(e)) => {
                saga.record(undo());
                Err(SnapshotError::rbd(&e))
            }
            Err(late) => {
                saga.record(undo());
                if let Late::TimedOut(handle) = late {
                    // the rollback waits for the late clone, not its handle
                    saga.set_pending(tokio::spawn(async move {
                        match handle.await {
                            Ok(outcome) => outcome.map(drop),
                            Err(e) => Err(crate::rbd::RbdError::new(
                                "clone",
                                "late clone",
                                RbdErrorKind::Other,
                                e.to_string(),
                            )),
                        }
                    }));
                }
                Err(SnapshotError::new(
                    Kind::CephUnavailable,
                    format!(
                        "clone into {} did not finish within {} ms",
                        disk.dest,
                        deadline.as_millis()
                    ),
                ))
            }
        }
    }

    /// Drop the temporary snapshot (unless a v1 clone still needs it) and,
    /// at the same time — they are different images, each a round trip to
    /// its own lock holder — `snap` + protect on the new image.
    async fn finish_disk(
        &self,
        disk: &PlannedDisk,
        image: &Arc<dyn Image>,
        temp: &str,
        keeps_parent: bool,
    ) -> Result<(), SnapshotError> {
        let deadline = self.settings.call_deadline;
        let (source, temp) = (Arc::clone(&disk.source), temp.to_string());
        let drop_temp = async move {
            if keeps_parent {
                return Ok(());
            }
            blocking::store("remove temporary snapshot", deadline, move || {
                source.remove_snapshot(&temp, true)
            })
            .await
        };
        let image = Arc::clone(image);
        let mark_dest = blocking::store("final snapshot", deadline, move || {
            image.create_snapshot(FINAL_SNAPSHOT)?;
            image.protect_snapshot(FINAL_SNAPSHOT)
        });
        let (dropped, marked) = tokio::join!(drop_temp, mark_dest);
        dropped.and(marked)
    }

    fn result(
        &self,
        plan: &Plan,
        captured: Captured,
        temp: &str,
        timings: Timings,
        tasks: Vec<String>,
    ) -> SnapshotResult {
        let flattened = self.req.flatten == Flatten::Sync;
        let disks = plan
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| DiskResult {
                disk: d.target.clone(),
                source: d.source.spec().to_string(),
                pool: d.dest.pool.clone(),
                image: d.dest.name.clone(),
                snapshot: FINAL_SNAPSHOT.to_string(),
                location: Location {
                    fsid: plan.fsid.clone(),
                    pool: d.dest.pool.clone(),
                    image: d.dest.name.clone(),
                    snapshot: FINAL_SNAPSHOT.to_string(),
                }
                .to_string(),
                parent: (!flattened).then(|| format!("{}@{temp}", d.source.spec())),
                flatten_task: tasks.get(i).cloned(),
            })
            .collect();
        SnapshotResult {
            job_id: self.job_id.to_string(),
            domain: plan.domain.name.clone(),
            domain_uuid: plan.domain.uuid.clone(),
            fsid: plan.fsid.clone(),
            disks,
            consistency: captured.consistency,
            consistency_reason: captured.reason,
            frozen_filesystems: captured.frozen,
            clone_format: plan.clone_format,
            flatten: self.req.flatten,
            flattened,
            one_instant: captured.one_instant,
            timings,
            flatten_error: None,
        }
    }
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}
