//! The job registry: what runs and what ran (for `jobs.list`/`jobs.get`),
//! one running snapshot per domain, and the cancel flags shutdown uses.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::protocol::{ErrorKind, RpcError};
use crate::snapshot::{CancelFlag, Phase, Progress};

/// Finished jobs kept for `jobs.get` after they end.
const KEEP_FINISHED: usize = crate::journal::KEEP_ENDED;

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
    /// The client's idempotency key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// What start-up recovery did for this job (a daemon died during it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recovery: Vec<String>,
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
    /// The request's params (a retry with the same request_id must match).
    #[serde(skip)]
    pub params: Value,
    /// The domain's UUID: one running job per domain.
    #[serde(skip)]
    pub domain_uuid: String,
    /// Published when the job ends, for retries that join it.
    #[serde(skip)]
    ended: Arc<watch::Sender<Option<Result<Value, RpcError>>>>,
}

/// A new request for a job, as the registry sees it.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Fresh job id.
    pub job_id: String,
    /// Domain as requested.
    pub domain: String,
    /// Its UUID (the exclusion key).
    pub domain_uuid: String,
    /// Image as requested.
    pub image: String,
    /// Idempotency key.
    pub request_id: Option<String>,
    /// Params as received.
    pub params: Value,
}

/// What `start` decided.
#[derive(Debug)]
pub enum Start {
    /// Run it: the job is registered, stop it through this flag.
    Run(CancelFlag),
    /// The same request_id is running: wait for its outcome.
    Join(watch::Receiver<Option<Result<Value, RpcError>>>),
    /// The same request_id already succeeded: its result.
    Done(Value),
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

impl JobRecord {
    fn new(new: NewJob, state: JobState) -> JobRecord {
        JobRecord {
            job_id: new.job_id,
            state,
            domain: new.domain,
            image: new.image,
            request_id: new.request_id,
            recovery: Vec::new(),
            phase: Phase::Preflight,
            done: 0,
            total: 0,
            started_unix: now_unix(),
            finished_unix: None,
            result: None,
            error: None,
            cancel: CancelFlag::default(),
            params: new.params,
            domain_uuid: new.domain_uuid,
            ended: Arc::new(watch::channel(None).0),
        }
    }
}

/// Unix seconds now.
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a job — or, for a request_id seen before, join the running
    /// job or return its result (a failed one runs again); refuse when the
    /// domain already has another job running.
    pub fn start(&self, new: NewJob) -> Result<Start, RpcError> {
        let mut inner = self.lock();
        if let Some(rid) = &new.request_id {
            let same = inner
                .jobs
                .values()
                .filter(|j| j.request_id.as_ref() == Some(rid))
                .max_by(|a, b| a.started_unix.total_cmp(&b.started_unix));
            if let Some(job) = same {
                if job.params != new.params {
                    return Err(RpcError::new(
                        ErrorKind::InvalidParams,
                        format!("request_id {rid:?} was used for a different request (job {}); use a new request_id", job.job_id),
                    ));
                }
                match job.state {
                    JobState::Running => return Ok(Start::Join(job.ended.subscribe())),
                    JobState::Succeeded => {
                        return Ok(Start::Done(job.result.clone().unwrap_or_default()))
                    }
                    JobState::Failed => {}
                }
            }
        }
        if !inner.busy_domains.insert(new.domain_uuid.clone()) {
            return Err(RpcError::new(
                ErrorKind::Busy,
                format!(
                    "domain {} already has a snapshot running; retry when it ends (see jobs.list)",
                    new.domain
                ),
            ));
        }
        let record = JobRecord::new(new, JobState::Running);
        let cancel = record.cancel.clone();
        inner.jobs.insert(record.job_id.clone(), record);
        Ok(Start::Run(cancel))
    }

    /// Jobs known from the journal's end records (finished before a
    /// restart, or recovered at start).
    pub fn load_ended(
        &self,
        new: NewJob,
        outcome: Result<Value, RpcError>,
        at: f64,
        recovery: Vec<String>,
    ) {
        let mut record = JobRecord::new(new, JobState::Running);
        record.started_unix = at;
        record.recovery = recovery;
        let job_id = record.job_id.clone();
        let mut inner = self.lock();
        inner.jobs.insert(job_id.clone(), record);
        drop(inner);
        self.finish(&job_id, &outcome);
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
        let _ = job.ended.send(Some(outcome.clone()));
        let domain = job.domain_uuid.clone();
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
