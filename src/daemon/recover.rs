//! Running start-up recovery inside the daemon: the journal's finished jobs
//! become known jobs again (so `request_id` retries and `jobs.get` work
//! across restarts), unfinished ones are recovered now — guests thawed
//! first — and what needs a backend that is down is retried every few
//! seconds until it succeeds, visible in `daemon.status`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::jobs::{now_unix, NewJob};
use super::Daemon;
use crate::journal::{Outcome, Record};
use crate::recovery::{self, Recovered, Trail};

/// How often pending recovery is retried.
const RETRY: Duration = Duration::from_secs(2);

/// Recovery's state, for `daemon.status`.
#[derive(Debug, Default)]
pub struct Recovery {
    inner: Mutex<(Vec<(Trail, String)>, usize)>,
}

impl Recovery {
    /// `{pending: [{job_id, domain_uuid, reason}], recovered: N}`.
    pub fn status(&self) -> Value {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let pending: Vec<Value> = inner
            .0
            .iter()
            .map(
                |(t, why)| json!({"job_id": t.job_id, "domain_uuid": t.domain_uuid, "reason": why}),
            )
            .collect();
        json!({"pending": pending, "recovered": inner.1})
    }

    /// Jobs still waiting.
    pub fn pending(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.len()
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

    /// Recover what the journal shows unfinished; returns how many jobs wait.
    pub async fn recover(self: &Arc<Self>, trails: Vec<Trail>) -> usize {
        let mut still = Vec::new();
        for trail in trails {
            let hv = self.backends.hypervisor().ok();
            let store = self.backends.store().ok();
            let job = trail.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                recovery::recover(&job, hv.as_ref(), store.as_ref())
            })
            .await
            .unwrap_or_else(|e| Recovered::Pending(format!("recovery task failed: {e}")));
            match outcome {
                Recovered::Ended(outcome, actions) => self.end_recovered(&trail, outcome, actions),
                Recovered::Pending(why) => {
                    tracing::warn!(job_id = %trail.job_id, reason = %why, "recovery pending");
                    still.push((trail, why));
                }
            }
        }
        let waiting = still.len();
        self.recovery
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0 = still;
        waiting
    }

    fn end_recovered(&self, trail: &Trail, outcome: Outcome, actions: Vec<String>) {
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
        if let Err(e) = self.journal.append(&end) {
            tracing::error!(job_id = %trail.job_id, error = %e, "could not journal a recovered job's end");
        }
        self.jobs
            .load_ended(new, outcome_of(outcome), now_unix(), actions);
        self.recovery
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1 += 1;
    }

    /// Retry pending recovery until nothing waits or shutdown.
    pub async fn keep_recovering(self: Arc<Self>, mut stopped: tokio::sync::watch::Receiver<bool>) {
        while self.recovery.pending() > 0 {
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
                inner.0.iter().map(|(t, _)| t.clone()).collect()
            };
            self.recover(trails).await;
        }
    }
}
