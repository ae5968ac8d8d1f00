//! Recovery's glue inside the daemon (the planning and executing are
//! [`crate::recovery`]'s): the journal's finished jobs become known jobs
//! again (so `request_id` retries and `jobs.get` work across restarts),
//! guests that may be frozen get thaw guards, unfinished jobs are recovered
//! and journalled as ended (or their flatten resumed), and what needs a
//! backend that is down is retried every few seconds, visible in
//! `daemon.status`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use tracing::Instrument;

use super::background::{self, AfterAnswer};
use super::jobs::{now_unix, NewJob, Timeline};
use super::Daemon;
use crate::journal::{Outcome, Record};
use crate::recovery::{self, Recovered, Trail};
use crate::snapshot::{JobHooks, Phase};

/// How often pending recovery is retried.
const RETRY: Duration = Duration::from_secs(2);

/// Each recovery action (one Ceph call) gets this long before it is
/// abandoned and the job retried in the next pass.
const ACTION_DEADLINE: Duration = Duration::from_secs(60);

/// The sweep's deadline.
const SWEEP_DEADLINE: Duration = Duration::from_secs(120);

fn new_job(job_id: &str, request_id: Option<String>, params: &Value, domain_uuid: &str) -> NewJob {
    let field = |k: &str| {
        params
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    NewJob {
        job_id: job_id.to_string(),
        domain: field("domain"),
        domain_uuid: domain_uuid.to_string(),
        domain_name: field("domain"),
        image: field("image"),
        request_id,
        params: params.clone(),
        caller_uid: None,
    }
}

fn outcome_of(outcome: Outcome) -> Result<Value, crate::protocol::RpcError> {
    match outcome {
        Outcome::Ok(result) => Ok(result),
        Outcome::Error(error) => Err(error),
    }
}

impl Daemon {
    /// Make the journal's finished jobs known again.
    pub fn load_ended(&self, ended: Vec<Record>) {
        for record in ended {
            if let Record::End {
                job_id,
                request_id,
                params,
                at,
                outcome,
                started,
                phase,
                ..
            } = record
            {
                self.jobs.load_ended(
                    new_job(&job_id, request_id, &params, ""),
                    outcome_of(outcome),
                    Timeline {
                        started: started.unwrap_or(at),
                        ended: at,
                        phase,
                    },
                    Vec::new(),
                );
            }
        }
    }

    /// Register every unfinished job as recovering (so `jobs.get` finds it
    /// and a retry of its request joins it), and arm a thaw guard for every
    /// one that may have left its guest frozen (the guard thaws, whatever
    /// Ceph does).
    pub async fn guard_trails(self: &Arc<Self>, trails: &[Trail]) {
        for trail in trails {
            self.jobs.recovering(new_job(
                &trail.job_id,
                trail.request_id.clone(),
                &trail.params,
                &trail.domain_uuid,
            ));
        }
        for trail in trails.iter() {
            let window = trail.window();
            let why = match (window.thaw, window.resume) {
                (false, false) => continue,
                (true, false) => "the daemon stopped while the guest may have been frozen",
                (false, true) => "the daemon stopped while the guest's vCPUs may have been paused",
                (true, true) => {
                    "the daemon stopped while the guest may have been frozen and paused"
                }
            };
            self.guards
                .arm(
                    &trail.domain_uuid,
                    &trail.job_id,
                    why.into(),
                    window,
                    None,
                    None,
                )
                .await;
        }
    }

    /// Try to recover the Ceph side of each trail now, each action within
    /// its deadline; what cannot be done yet waits in the pending list for
    /// [`Daemon::keep_recovering`]. Returns how many wait.
    pub async fn recover(self: &Arc<Self>, trails: Vec<Trail>) -> usize {
        if !self.recovery.begin_pass() {
            return self.recovery.pending();
        }
        for trail in trails {
            if self.late.running(&trail.job_id) {
                let why = "a call of this job abandoned at its deadline still runs in Ceph: \
                           waiting for it to end before undoing what it makes";
                self.settle(trail, Recovered::Pending(why.into())).await;
                continue;
            }
            let store = self.backends.store().ok();
            let outcome = recovery::recover(&trail, store, ACTION_DEADLINE).await;
            self.settle(trail, outcome).await;
        }
        self.recovery.end_pass();
        self.recovery.pending()
    }

    /// Record what recovering one trail did.
    async fn settle(self: &Arc<Self>, trail: Trail, outcome: Recovered) {
        match outcome {
            Recovered::Pending(reason) => {
                tracing::warn!(job_id = %trail.job_id, reason = %reason, "recovery pending");
                self.recovery.wait(trail, reason);
            }
            Recovered::Ended(outcome, actions) => {
                // pending until counted: one step, so that nobody sees it
                // neither pending nor recovered (passes never overlap)
                self.end_recovered(&trail, outcome, actions).await;
            }
            Recovered::Resume {
                result,
                actions,
                mode,
                dests,
            } => {
                self.recovery.done(&trail.job_id, true);
                self.resume_flatten(
                    &trail,
                    result,
                    actions,
                    AfterAnswer {
                        mode,
                        dests,
                        tasks: Vec::new(),
                        resumed: true,
                    },
                );
            }
        }
    }

    /// Register an answered job whose flatten had not ended, and finish it
    /// in the background.
    fn resume_flatten(
        self: &Arc<Self>,
        trail: &Trail,
        result: Value,
        actions: Vec<String>,
        after: AfterAnswer,
    ) {
        tracing::warn!(job_id = %trail.job_id, actions = ?actions, "resuming the flatten of a job a previous run left unfinished");
        let new = new_job(
            &trail.job_id,
            trail.request_id.clone(),
            &trail.params,
            &trail.domain_uuid,
        );
        let cancel = self.jobs.resume(new.clone(), result.clone(), actions);
        let store = match self.backends.store() {
            Ok(store) => store,
            Err(error) => {
                // journal untouched: the next start tries again
                self.jobs.finish(&new.job_id, &Err(error));
                return;
            }
        };
        let (daemon, job_id) = (Arc::clone(self), trail.job_id.clone());
        let hooks = JobHooks {
            progress: Arc::new(move |p| {
                daemon.jobs.progress(&job_id, p);
            }),
            cancel,
            log: self.step_log(),
            slots: Arc::clone(&self.slots),
            guards: Arc::clone(&self.guards),
            late: Arc::clone(&self.late),
        };
        let daemon = Arc::clone(self);
        let span = tracing::info_span!("job", job_id = %trail.job_id);
        tokio::spawn(
            async move { background::flatten(&daemon, &store, new, result, after, hooks).await }
                .instrument(span),
        );
    }

    /// A job whose own rollback failed (Ceph went away mid-job): its
    /// journal records become a recovery trail, retried until Ceph is back.
    pub fn hand_to_recovery(&self, job_id: &str, why: String) {
        let (trails, _) = recovery::split(self.journal.live_records(job_id));
        for trail in trails {
            tracing::warn!(job_id, reason = %why, "rollback incomplete: recovery will finish it");
            self.recovery.wait(trail, why.clone());
        }
    }

    async fn end_recovered(
        self: &Arc<Self>,
        trail: &Trail,
        outcome: Outcome,
        actions: Vec<String>,
    ) {
        tracing::warn!(job_id = %trail.job_id, actions = ?actions, "recovered a job a previous run left unfinished");
        let new = new_job(
            &trail.job_id,
            trail.request_id.clone(),
            &trail.params,
            &trail.domain_uuid,
        );
        let phase = match outcome {
            Outcome::Ok(_) => Phase::Finish,
            Outcome::Error(_) => Phase::Rollback,
        };
        let now = now_unix();
        let end = Record::End {
            started: Some(trail.started),
            phase: Some(phase),
            job_id: trail.job_id.clone(),
            request_id: trail.request_id.clone(),
            params: trail.params.clone(),
            domain: new.domain.clone(),
            image: new.image.clone(),
            at: now,
            outcome: outcome.clone(),
        };
        if let Err(e) = self.journal.append_async(end).await {
            tracing::error!(job_id = %trail.job_id, error = %e, "could not journal a recovered job's end");
        }
        let timeline = Timeline {
            started: trail.started,
            ended: now,
            phase: Some(phase),
        };
        self.jobs
            .load_ended(new, outcome_of(outcome), timeline, actions);
        self.recovery.done(&trail.job_id, true);
    }

    /// Look for temporary snapshots no journal knows, per `sweep_orphans`.
    pub async fn sweep(self: &Arc<Self>) {
        let policy = self.config.sweep_orphans.clone();
        if policy == "off" {
            return;
        }
        let (Ok(hv), Ok(store)) = (self.backends.hypervisor(), self.backends.store()) else {
            tracing::warn!("orphan sweep skipped: libvirt or Ceph is down");
            return;
        };
        // asked of each snapshot when it is looked at, not once before a
        // sweep that can take minutes while new jobs start and snapshot
        let daemon = Arc::clone(self);
        let known = move |job_id: &str| {
            daemon.jobs.get(job_id).is_some()
                || daemon
                    .recovery
                    .pending_trails()
                    .iter()
                    .any(|t| t.job_id == job_id)
        };
        let remove = policy == "remove";
        let found = crate::owners::CEPH
            .call(SWEEP_DEADLINE, move || {
                recovery::sweep(hv.as_ref(), store.as_ref(), &known, remove)
            })
            .await;
        match found {
            Ok(Ok(orphans)) => {
                for orphan in &orphans {
                    tracing::warn!(image = %orphan.image, snapshot = %orphan.snapshot, action = %orphan.action, "temporary snapshot no journal knows");
                }
                self.recovery.set_orphans(orphans);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "orphan sweep failed"),
            Err(_) => tracing::warn!("orphan sweep did not finish in time, or Ceph is saturated"),
        }
    }

    /// Retry pending recovery every few seconds until shutdown.
    pub async fn keep_recovering(self: Arc<Self>, mut stopped: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = stopped.changed() => return,
            }
            let trails = self.recovery.pending_trails();
            if trails.is_empty() {
                continue;
            }
            // a job of this very incarnation: its stuck handles hold locks
            // under our own address; take a new one so they can be fenced
            let own = self.backends.store().ok().and_then(|s| s.client_addr());
            if own.is_some()
                && trails.iter().any(|t| t.client_addr == own)
                && self.jobs.running() == 0
            {
                if let Err(e) = self.backends.reincarnate_ceph().await {
                    tracing::warn!(error = %e, "could not reconnect to Ceph for recovery");
                    continue;
                }
            }
            self.recover(trails).await;
        }
    }
}
