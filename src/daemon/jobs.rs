//! The job registry: what runs and what ran (for `jobs.list`/`jobs.get`),
//! one running snapshot per domain, and the cancel flags shutdown uses.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use crate::protocol::{ErrorKind, RpcError};
use crate::snapshot::{CancelFlag, Phase, Progress};

/// Finished jobs kept for `jobs.get` after they end.
const KEEP_FINISHED: usize = 256;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Still working.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error (and rolled back).
    Failed,
}

/// One job as `jobs.get` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    /// Id (also in temporary snapshot names and image metadata).
    pub job_id: String,
    /// State.
    pub state: JobState,
    /// Domain as requested.
    pub domain: String,
    /// Image as requested.
    pub image: String,
    /// Last phase reported.
    pub phase: Phase,
    /// Units done in that phase.
    pub done: u64,
    /// Units in that phase.
    pub total: u64,
    /// Start time, Unix seconds.
    pub started_unix: f64,
    /// End time, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_unix: Option<f64>,
    /// The result, once succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, once failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
    /// Set to stop the job at its next safe point.
    #[serde(skip)]
    pub cancel: CancelFlag,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<String, JobRecord>,
    finished: VecDeque<String>,
    busy_domains: HashSet<String>,
}

/// All jobs of this daemon run.
#[derive(Debug, Default)]
pub struct Jobs {
    inner: Mutex<Inner>,
    /// Woken when a job ends (shutdown waits on it).
    ended: tokio::sync::Notify,
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a job, refusing when the domain already has one running.
    pub fn start(&self, job_id: &str, domain: &str, image: &str) -> Result<CancelFlag, RpcError> {
        let mut inner = self.lock();
        if !inner.busy_domains.insert(domain.to_string()) {
            return Err(RpcError::new(
                ErrorKind::Busy,
                format!("domain {domain} already has a snapshot running; retry when it ends (see jobs.list)"),
            ));
        }
        let cancel = CancelFlag::default();
        inner.jobs.insert(
            job_id.to_string(),
            JobRecord {
                job_id: job_id.to_string(),
                state: JobState::Running,
                domain: domain.to_string(),
                image: image.to_string(),
                phase: Phase::Preflight,
                done: 0,
                total: 0,
                started_unix: now_unix(),
                finished_unix: None,
                result: None,
                error: None,
                cancel: cancel.clone(),
            },
        );
        Ok(cancel)
    }

    /// Record a job's progress.
    pub fn progress(&self, job_id: &str, p: Progress) {
        if let Some(job) = self.lock().jobs.get_mut(job_id) {
            (job.phase, job.done, job.total) = (p.phase, p.done, p.total);
        }
    }

    /// Record a job's end.
    pub fn finish(&self, job_id: &str, outcome: &Result<Value, RpcError>) {
        let mut inner = self.lock();
        let Some(job) = inner.jobs.get_mut(job_id) else {
            return;
        };
        job.finished_unix = Some(now_unix());
        match outcome {
            Ok(result) => (job.state, job.result) = (JobState::Succeeded, Some(result.clone())),
            Err(error) => (job.state, job.error) = (JobState::Failed, Some(error.clone())),
        }
        let domain = job.domain.clone();
        inner.busy_domains.remove(&domain);
        inner.finished.push_back(job_id.to_string());
        while inner.finished.len() > KEEP_FINISHED {
            if let Some(old) = inner.finished.pop_front() {
                inner.jobs.remove(&old);
            }
        }
        drop(inner);
        self.ended.notify_waiters();
    }

    /// Forget a job that never got past pre-flight: a refusal is not a job
    /// worth listing.
    pub fn forget(&self, job_id: &str) {
        let mut inner = self.lock();
        inner.jobs.remove(job_id);
        inner.finished.retain(|id| id != job_id);
    }

    /// Every known job, oldest first.
    pub fn list(&self) -> Vec<JobRecord> {
        let mut jobs: Vec<JobRecord> = self.lock().jobs.values().cloned().collect();
        jobs.sort_by(|a, b| a.started_unix.total_cmp(&b.started_unix));
        jobs
    }

    /// One job.
    pub fn get(&self, job_id: &str) -> Option<JobRecord> {
        self.lock().jobs.get(job_id).cloned()
    }

    /// Jobs still running.
    pub fn running(&self) -> usize {
        self.lock()
            .jobs
            .values()
            .filter(|j| j.state == JobState::Running)
            .count()
    }

    /// Ask every running job to stop at its next safe point.
    pub fn cancel_all(&self) {
        for job in self
            .lock()
            .jobs
            .values()
            .filter(|j| j.state == JobState::Running)
        {
            job.cancel.store(true, Ordering::SeqCst);
        }
    }

    /// Wait until no job runs.
    pub async fn wait_idle(&self) {
        loop {
            let ended = self.ended.notified();
            if self.running() == 0 {
                return;
            }
            ended.await;
        }
    }
}
