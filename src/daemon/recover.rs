//! Running start-up recovery inside the daemon: the journal's finished jobs
//! become known jobs again (so `request_id` retries and `jobs.get` work
//! across restarts), unfinished ones are recovered now — guests thawed
//! first — and what needs a backend that is down is retried every few
//! seconds until it succeeds, visible in `daemon.status`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use tracing::Instrument;

use super::background::{self, AfterAnswer};
use super::jobs::{now_unix, NewJob};
use super::Daemon;
use crate::journal::{Outcome, Record};
use crate::recovery::{self, Orphan, Recovered, Trail};
use crate::snapshot::JobHooks;

/// How often pending recovery is retried.
const RETRY: Duration = Duration::from_secs(2);

/// Each recovery pass over the pending jobs gets this long before its
/// Ceph calls are abandoned (and retried in the next pass).
const PASS_DEADLINE: Duration = Duration::from_secs(120);

/// A job waiting for recovery, and why it waits.
#[derive(Debug, Clone)]
struct PendingJob {
    trail: Trail,
    reason: String,
}

/// What recovery has to do and has done.
#[derive(Debug, Default)]
struct RecoveryState {
    /// Jobs not recovered yet.
    pending: Vec<PendingJob>,
    /// Jobs recovered since start.
    recovered: usize,
}

/// Recovery's state, for `daemon.status`.
#[derive(Debug, Default)]
pub struct Recovery {
    inner: Mutex<RecoveryState>,
    /// What the start-up sweep found.
    orphans: Mutex<Vec<Orphan>>,
    /// Set while a pass runs: passes never overlap, so a stuck cluster
    /// holds one pass's calls, not one more every retry.
    running: std::sync::atomic::AtomicBool,
}

impl Recovery {
    /// `{pending: [{job_id, domain_uuid, reason}], recovered: N}`.
    pub fn status(&self) -> Value {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let pending: Vec<Value> = inner
            .pending
            .iter()
            .map(|p| json!({"job_id": p.trail.job_id, "domain_uuid": p.trail.domain_uuid, "reason": p.reason}))
            .collect();
        let orphans = self
            .orphans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        json!({"pending": pending, "recovered": inner.recovered, "orphans": orphans})
    }

    /// Jobs still waiting.
    pub fn pending(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending
            .len()
    }
}

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
        image: field("image"),
        request_id,
        params: params.clone(),
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
                ..
            } = record
            {
                self.jobs.load_ended(
                    new_job(&job_id, request_id, &params, ""),
                    outcome_of(outcome),
                    at,
                    Vec::new(),
                );
            }
        }
    }

    /// Arm a thaw guard for every trail that may have left its guest
    /// frozen (the guard thaws, whatever Ceph does).
    pub async fn guard_trails(self: &Arc<Self>, trails: &[Trail]) {
        for trail in trails.iter().filter(|t| t.maybe_frozen()) {
            let why = "the daemon stopped while the guest may have been frozen".to_string();
            self.guards
                .arm(&trail.domain_uuid, &trail.job_id, why, None, None)
                .await;
        }
    }

    /// Try to recover the Ceph side of each trail now, within one pass
    /// deadline; what cannot be done yet waits in the pending list for
    /// [`Daemon::keep_recovering`]. Returns how many wait.
    pub async fn recover(self: &Arc<Self>, trails: Vec<Trail>) -> usize {
        use std::sync::atomic::Ordering;
        if self.recovery.running.swap(true, Ordering::SeqCst) {
            return self.recovery.pending();
        }
        self.guard_trails(&trails).await;
        for trail in trails {
            let store = self.backends.store().ok();
            let job = trail.clone();
            let outcome = crate::owners::CEPH
                .call(PASS_DEADLINE, move || {
                    recovery::recover(&job, store.as_ref())
                })
                .await
                .unwrap_or_else(|late| {
                    Recovered::Pending(match late {
                        crate::owners::Late::TimedOut(_) => format!(
                            "the rollback did not finish within {} s (Ceph stalled); retried",
                            PASS_DEADLINE.as_secs()
                        ),
                        crate::owners::Late::Saturated(msg) => msg,
                        crate::owners::Late::Panicked(msg) => format!("recovery panicked: {msg}"),
                    })
                });
            self.settle(trail, outcome).await;
        }
        self.recovery.running.store(false, Ordering::SeqCst);
        self.recovery.pending()
    }

    /// Record what recovering one trail did.
    async fn settle(self: &Arc<Self>, trail: Trail, outcome: Recovered) {
        {
            let mut inner = self
                .recovery
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            inner.pending.retain(|p| p.trail.job_id != trail.job_id);
            match &outcome {
                Recovered::Pending(reason) => {
                    tracing::warn!(job_id = %trail.job_id, reason = %reason, "recovery pending");
                    inner.pending.push(PendingJob {
                        trail,
                        reason: reason.clone(),
                    });
                    return;
                }
                Recovered::Resume { .. } => inner.recovered += 1,
                Recovered::Ended(..) => {}
            }
        }
        match outcome {
            Recovered::Ended(outcome, actions) => {
                self.end_recovered(&trail, outcome, actions).await;
            }
            Recovered::Resume {
                result,
                actions,
                mode,
                dests,
            } => self.resume_flatten(
                &trail,
                result,
                actions,
                AfterAnswer {
                    mode,
                    dests,
                    tasks: Vec::new(),
                    resumed: true,
                },
            ),
            Recovered::Pending(_) => {}
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
        let mut inner = self
            .recovery
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for trail in trails {
            tracing::warn!(job_id, reason = %why, "rollback incomplete: recovery will finish it");
            inner.pending.push(PendingJob {
                trail,
                reason: why.clone(),
            });
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
        let end = Record::End {
            job_id: trail.job_id.clone(),
            request_id: trail.request_id.clone(),
            params: trail.params.clone(),
            domain: new.domain.clone(),
            image: new.image.clone(),
            at: now_unix(),
            outcome: outcome.clone(),
        };
        if let Err(e) = self.journal.append_async(end).await {
            tracing::error!(job_id = %trail.job_id, error = %e, "could not journal a recovered job's end");
        }
        self.jobs
            .load_ended(new, outcome_of(outcome), now_unix(), actions);
        self.recovery
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recovered += 1;
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
        let known: std::collections::HashSet<String> = {
            let inner = self
                .recovery
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            inner
                .pending
                .iter()
                .map(|p| p.trail.job_id.clone())
                .chain(self.jobs.list().into_iter().map(|j| j.job_id))
                .collect()
        };
        let remove = policy == "remove";
        let found = crate::owners::CEPH
            .call(PASS_DEADLINE, move || {
                recovery::sweep(hv.as_ref(), store.as_ref(), &known, remove)
            })
            .await;
        match found {
            Ok(Ok(orphans)) => {
                for orphan in &orphans {
                    tracing::warn!(image = %orphan.image, snapshot = %orphan.snapshot, action = %orphan.action, "temporary snapshot no journal knows");
                }
                *self
                    .recovery
                    .orphans
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = orphans;
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
            let trails: Vec<Trail> = {
                let inner = self
                    .recovery
                    .inner
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                inner.pending.iter().map(|p| p.trail.clone()).collect()
            };
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
