//! The job registry: what runs and what ran (for `jobs.list`/`jobs.get`),
//! one running snapshot per domain, and the cancel flags shutdown uses.

use std::collections::{HashMap, VecDeque};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
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
    /// In phase `queued`: the place in the host's flatten queue, or in the
    /// line for its busy domain (`waiting_for_domain`), 1 = next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// Queued behind another job of its domain (`on_busy: "wait"`): holds
    /// no domain yet, has not started.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub waiting_for_domain: bool,
    /// Start time, Unix seconds.
    pub started_unix: f64,
    /// End time, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_unix: Option<f64>,
    /// The result, once succeeded (for `background`/`cluster`, from the
    /// answer on).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<super::results::CreateResult>")]
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
    /// The domain's name (`[[policy]]` patterns match it).
    #[serde(skip)]
    pub domain_name: String,
    /// The caller's uid, when known.
    #[serde(skip)]
    pub caller_uid: Option<u32>,
    /// Published when the job answers, for its requester and retries that
    /// join it.
    #[serde(skip)]
    answered: Arc<watch::Sender<Option<Result<Value, RpcError>>>>,
}

/// How many `on_busy: "wait"` requests may wait.
#[derive(Debug, Clone, Copy)]
pub struct WaitLimits {
    /// For one domain.
    pub per_domain: usize,
    /// For one caller (uid), over all domains.
    pub per_caller: usize,
}

/// A finished job's times and last phase, as its journalled end says.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    /// Unix seconds it started.
    pub started: f64,
    /// Unix seconds it ended.
    pub ended: f64,
    /// Its last phase, when known.
    pub phase: Option<Phase>,
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
    /// Its name (what `[[policy]]` patterns match); as requested for a job
    /// restored from the journal.
    pub domain_name: String,
    /// Image as requested.
    pub image: String,
    /// Idempotency key.
    pub request_id: Option<String>,
    /// Params as received.
    pub params: Value,
    /// The caller's uid (its waiting requests are capped), when known.
    pub caller_uid: Option<u32>,
}

/// Where a job's answer is published: the outcome for most jobs, the
/// location (before the flatten ends) for `background` and `cluster`.
pub type Answered = watch::Receiver<Option<Result<Value, RpcError>>>;

/// What `start` decided.
#[derive(Debug)]
pub enum Start {
    /// Run it: the job is registered, stop it through the flag; its answer
    /// comes through the receiver.
    Run(CancelFlag, Answered),
    /// The same request_id is running: wait for its answer.
    Join(Answered),
    /// The same request_id already succeeded: its result.
    Done(Value),
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<String, JobRecord>,
    finished: VecDeque<String>,
    /// How many finished jobs are kept.
    kept: usize,
    /// Domain uuid → the job that holds it. Only the holder releases a
    /// domain: a job that answered long ago (its flatten still running)
    /// must not free the domain its successor now holds.
    busy_domains: HashMap<String, String>,
}

impl Inner {
    /// Take `domain` for `job_id`; `false` when another job holds it.
    fn hold(&mut self, domain: &str, job_id: &str) -> bool {
        match self.busy_domains.get(domain) {
            Some(holder) => holder == job_id,
            None => {
                self.busy_domains
                    .insert(domain.to_string(), job_id.to_string());
                true
            }
        }
    }

    /// Free `domain` if `job_id` holds it; anyone else's hold stays.
    fn release(&mut self, domain: &str, job_id: &str) {
        if self.busy_domains.get(domain).map(String::as_str) == Some(job_id) {
            self.busy_domains.remove(domain);
        }
    }
}

/// All jobs of this daemon run.
#[derive(Debug)]
pub struct Jobs {
    inner: Mutex<Inner>,
    /// Woken when a job ends (shutdown waits on it).
    ended: tokio::sync::Notify,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs::new(KEEP_FINISHED)
    }
}

impl Jobs {
    /// A registry keeping the last `kept` finished jobs.
    pub fn new(kept: usize) -> Jobs {
        Jobs {
            inner: Mutex::new(Inner {
                kept: kept.max(1),
                ..Inner::default()
            }),
            ended: tokio::sync::Notify::new(),
        }
    }
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
            position: None,
            waiting_for_domain: false,
            started_unix: now_unix(),
            finished_unix: None,
            result: None,
            error: None,
            cancel: CancelFlag::default(),
            params: new.params,
            domain_uuid: new.domain_uuid,
            domain_name: new.domain_name,
            caller_uid: new.caller_uid,
            answered: Arc::new(watch::channel(None).0),
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
                // a result means the image exists, even if its flatten failed
                if let Some(result) = &job.result {
                    return Ok(Start::Done(result.clone()));
                }
                if job.state == JobState::Running {
                    return Ok(Start::Join(job.answered.subscribe()));
                }
            }
        }
        if !inner.hold(&new.domain_uuid, &new.job_id) {
            return Err(RpcError::new(
                ErrorKind::Busy,
                format!(
                    "domain {} already has a snapshot running; retry when it ends (see jobs.list)",
                    new.domain
                ),
            ));
        }
        let record = JobRecord::new(new, JobState::Running);
        let started = Start::Run(record.cancel.clone(), record.answered.subscribe());
        inner.jobs.insert(record.job_id.clone(), record);
        Ok(started)
    }

    /// A request for a busy domain that waits (`on_busy: "wait"`): listed
    /// and cancellable at once, holding no domain until [`Jobs::start_queued`].
    /// Refused `busy` when its domain, or its caller, has `limits` waiting.
    pub fn enqueue(&self, new: NewJob, limits: WaitLimits) -> Result<CancelFlag, RpcError> {
        let mut inner = self.lock();
        let waiting = || {
            inner
                .jobs
                .values()
                .filter(|j| j.waiting_for_domain && j.state == JobState::Running)
        };
        let for_domain = waiting()
            .filter(|j| j.domain_uuid == new.domain_uuid)
            .count();
        if for_domain >= limits.per_domain {
            return Err(RpcError::new(
                ErrorKind::Busy,
                format!(
                    "domain {} has {for_domain} requests waiting already (max_waiting_per_domain): \
                     not queued; retry later",
                    new.domain
                ),
            ));
        }
        if let Some(uid) = new.caller_uid {
            let for_caller = waiting().filter(|j| j.caller_uid == Some(uid)).count();
            if for_caller >= limits.per_caller {
                return Err(RpcError::new(
                    ErrorKind::Busy,
                    format!(
                        "uid {uid} has {for_caller} requests waiting already \
                         (max_waiting_per_caller): not queued; retry later"
                    ),
                ));
            }
        }
        let mut record = JobRecord::new(new, JobState::Running);
        record.phase = Phase::Queued;
        record.waiting_for_domain = true;
        let cancel = record.cancel.clone();
        inner.jobs.insert(record.job_id.clone(), record);
        Self::renumber_queue(&mut inner);
        Ok(cancel)
    }

    /// Start a waiting job if its domain is free and it is the first in
    /// line for it; its place in line otherwise.
    pub fn start_queued(&self, job_id: &str) -> Result<Start, u64> {
        let mut inner = self.lock();
        let Some(job) = inner.jobs.get(job_id) else {
            return Err(0);
        };
        let (domain, position) = (job.domain_uuid.clone(), job.position.unwrap_or(1));
        if position != 1 || !inner.hold(&domain, job_id) {
            return Err(position);
        }
        let Some(job) = inner.jobs.get_mut(job_id) else {
            return Err(0);
        };
        (job.waiting_for_domain, job.phase, job.position) = (false, Phase::Preflight, None);
        let started = Start::Run(job.cancel.clone(), job.answered.subscribe());
        Self::renumber_queue(&mut inner);
        Ok(started)
    }

    /// Places in line per domain, oldest first.
    fn renumber_queue(inner: &mut Inner) {
        let mut waiting: Vec<(f64, String, String)> = inner
            .jobs
            .values()
            .filter(|j| j.waiting_for_domain && j.state == JobState::Running)
            .map(|j| (j.started_unix, j.domain_uuid.clone(), j.job_id.clone()))
            .collect();
        waiting.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut places: HashMap<String, u64> = HashMap::new();
        for (_, domain, job_id) in waiting {
            let place = places.entry(domain).or_insert(0);
            *place += 1;
            if let Some(job) = inner.jobs.get_mut(&job_id) {
                job.position = Some(*place);
            }
        }
    }

    /// A job a previous run left unfinished, registered at start (before
    /// READY) while recovery works on it: `jobs.get` finds it, a retry of
    /// its request_id joins it, and its domain is busy until it ends.
    pub fn recovering(&self, new: NewJob) {
        let mut record = JobRecord::new(new, JobState::Running);
        record.phase = Phase::Rollback;
        let mut inner = self.lock();
        inner.hold(&record.domain_uuid, &record.job_id);
        inner.jobs.insert(record.job_id.clone(), record);
    }

    /// Put `record` in place of a job registered as recovering, keeping
    /// the answer channel that retries joined.
    fn replace(inner: &mut Inner, mut record: JobRecord) {
        if let Some(old) = inner.jobs.remove(&record.job_id) {
            record.answered = old.answered;
            inner.release(&old.domain_uuid, &old.job_id);
        }
        inner.jobs.insert(record.job_id.clone(), record);
    }

    /// A job that answered before its end (the flatten goes on after the
    /// location was given): registered as running, with its result, and
    /// holding no domain (the guest is done with). For recovery.
    pub fn resume(&self, new: NewJob, result: Value, recovery: Vec<String>) -> CancelFlag {
        let mut record = JobRecord::new(new, JobState::Running);
        record.recovery = recovery;
        record.result = Some(result.clone());
        let (cancel, job_id) = (record.cancel.clone(), record.job_id.clone());
        let answered = {
            let mut inner = self.lock();
            Self::replace(&mut inner, record);
            inner.jobs.get(&job_id).map(|j| Arc::clone(&j.answered))
        };
        if let Some(answered) = answered {
            let _ = answered.send(Some(Ok(result)));
        }
        self.ended.notify_waiters();
        cancel
    }

    /// The job's answer, before its end: the location is given, the guest
    /// is done with, so the domain is free for its next snapshot.
    pub fn answer(&self, job_id: &str, result: Value) {
        let mut inner = self.lock();
        let Some(job) = inner.jobs.get_mut(job_id) else {
            return;
        };
        job.result = Some(result.clone());
        let _ = job.answered.send(Some(Ok(result)));
        let domain = job.domain_uuid.clone();
        inner.release(&domain, job_id);
        drop(inner);
        self.ended.notify_waiters();
    }

    /// Ask one job to stop; its state, or `None` for an unknown job.
    pub fn cancel(&self, job_id: &str) -> Option<JobState> {
        let inner = self.lock();
        let job = inner.jobs.get(job_id)?;
        if job.state == JobState::Running {
            job.cancel.store(true, Ordering::SeqCst);
        }
        let state = job.state;
        drop(inner);
        // a job waiting for its domain wakes to see it
        self.ended.notify_waiters();
        Some(state)
    }

    /// Wake when a job ends or answers (a domain may be free again).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.ended.notified()
    }

    /// Jobs known from the journal's end records (finished before a
    /// restart, or recovered at start).
    pub fn load_ended(
        &self,
        new: NewJob,
        outcome: Result<Value, RpcError>,
        timeline: Timeline,
        recovery: Vec<String>,
    ) {
        let mut record = JobRecord::new(new, JobState::Running);
        record.started_unix = timeline.started;
        if let Some(phase) = timeline.phase {
            record.phase = phase;
        }
        record.recovery = recovery;
        let job_id = record.job_id.clone();
        // a background job whose flatten failed: the image exists (its result
        // stands for retries), the job failed
        let flatten_error = outcome
            .as_ref()
            .ok()
            .and_then(|r| r.get("flatten_error"))
            .and_then(|e| serde_json::from_value::<RpcError>(e.clone()).ok());
        let outcome = match flatten_error {
            Some(error) => {
                record.result = outcome.ok();
                Err(error)
            }
            None => outcome,
        };
        let mut inner = self.lock();
        Self::replace(&mut inner, record);
        drop(inner);
        self.finish(&job_id, &outcome);
        if let Some(job) = self.lock().jobs.get_mut(&job_id) {
            job.finished_unix = Some(timeline.ended);
        }
    }

    /// When a job started and its last phase, for its journalled end.
    pub fn timeline(&self, job_id: &str) -> Option<(f64, Phase)> {
        self.lock()
            .jobs
            .get(job_id)
            .map(|job| (job.started_unix, job.phase))
    }

    /// Record a job's progress; whether its requester still waits for the
    /// answer (and so wants the progress too).
    pub fn progress(&self, job_id: &str, p: Progress) -> bool {
        match self.lock().jobs.get_mut(job_id) {
            Some(job) => {
                (job.phase, job.done, job.total, job.position) =
                    (p.phase, p.done, p.total, p.position);
                job.result.is_none()
            }
            None => false,
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
        // an answered job keeps its answer (the image exists)
        job.answered.send_if_modified(|answer| {
            answer.is_none() && {
                *answer = Some(outcome.clone());
                true
            }
        });
        let (domain, held) = (job.domain_uuid.clone(), !job.waiting_for_domain);
        job.waiting_for_domain = false;
        if held {
            inner.release(&domain, job_id);
        }
        Self::renumber_queue(&mut inner);
        inner.finished.push_back(job_id.to_string());
        while inner.finished.len() > inner.kept {
            if let Some(old) = inner.finished.pop_front() {
                inner.jobs.remove(&old);
            }
        }
        let idle = !inner.jobs.values().any(|j| j.state == JobState::Running);
        drop(inner);
        self.ended.notify_waiters();
        if idle {
            // the burst is over: hand its memory back, off the answer's path
            // (a trim holds glibc's heap locks while it walks the heap)
            crate::memory::trim_soon();
        }
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

    /// The running job that answered with `image` among its images (its
    /// flatten still runs on it), if any.
    pub fn working_on(&self, image: &crate::rbd::ImageSpec) -> Option<String> {
        let names = |result: &Value| {
            result
                .get("disks")
                .and_then(Value::as_array)
                .is_some_and(|disks| {
                    disks.iter().any(|d| {
                        d.get("pool").and_then(Value::as_str) == Some(image.pool.as_str())
                            && d.get("image").and_then(Value::as_str) == Some(image.name.as_str())
                    })
                })
        };
        self.lock()
            .jobs
            .values()
            .filter(|j| j.state == JobState::Running)
            .find(|j| j.result.as_ref().is_some_and(names))
            .map(|j| j.job_id.clone())
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

    /// Stop every running job that answered already (its flatten), e.g. to
    /// resume it after a restart.
    pub fn cancel_answered(&self) {
        for job in self
            .lock()
            .jobs
            .values()
            .filter(|j| j.state == JobState::Running && j.result.is_some())
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

#[cfg(test)]
#[path = "jobs_tests.rs"]
mod tests;
