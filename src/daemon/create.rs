//! `snapshot.create`: the workflow as a job. The job runs in its own task,
//! so a client that disconnects does not leave a half-done snapshot: the job
//! finishes (or rolls back) and stays visible in `jobs.get`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::Instrument;

use super::background::{self, AfterAnswer};
use super::jobs::{now_unix, Answered, NewJob, Start};
use super::{to_value, wire, Daemon, Notify};
use crate::journal::Record;
use crate::libvirt::Hypervisor;
use crate::policy::Scope;
use crate::protocol::{CreateParams, ErrorKind, OnBusy, ProgressParams, RpcError};
use crate::rbd::{ImageSpec, ImageStore};
use crate::snapshot::{
    self, Flatten, JobHooks, Phase, Progress, ProgressSink, Settings, SnapshotRequest,
};

/// Flatten progress is sent at most this often (plus at its end).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

pub(super) async fn snapshot_create(
    daemon: &Arc<Daemon>,
    params: CreateParams,
    request_id: Value,
    notify: Notify,
    scope: &Scope,
    caller_uid: Option<u32>,
) -> Result<Value, RpcError> {
    daemon.refuse_if_shutting_down()?;
    let hv = daemon.backends.hypervisor()?;
    let store = daemon.backends.store()?;
    let (domain_uuid, domain_name) = lookup(daemon, &hv, &params.domain).await?;
    // the caller's rules: the domain now, the pools once pre-flight has
    // resolved them (the parent's pool when the request names none)
    let mut settings = daemon.settings.clone();
    settings.allowed_pools = scope.domain(&domain_name).map_err(super::denied)?;
    daemon.refuse_if_guarded(&domain_uuid)?;
    let new = NewJob {
        job_id: snapshot::workflow::new_job_id(),
        domain: params.domain.clone(),
        domain_uuid: domain_uuid.clone(),
        domain_name,
        image: params.image.clone(),
        request_id: params.request_id.clone(),
        params: serde_json::to_value(&params).unwrap_or_default(),
        caller_uid,
    };
    let wait = params.on_busy.unwrap_or(daemon.config.snapshot.on_busy) == OnBusy::Wait;
    let (cancel, answered) = match start_or_wait(daemon, &new, wait, &request_id, &notify).await? {
        Start::Run(cancel, answered) => (cancel, answered),
        // a retry of an earlier request: its images must be in pools this
        // caller may write into, as if it had made them
        Start::Done(result) => return within_pools(&settings, result),
        Start::Join(answered) => return within_pools(&settings, join(answered).await?),
    };
    let job_id = new.job_id.clone();
    let accepted = Record::Request {
        job_id: job_id.clone(),
        request_id: new.request_id.clone(),
        params: new.params.clone(),
        domain_uuid,
        client_addr: store.client_addr(),
        at: now_unix(),
    };
    if let Err(e) = daemon.journal.append_async(accepted).await {
        let error = RpcError::new(
            ErrorKind::Internal,
            format!("cannot write the journal, so not starting: {e}"),
        );
        daemon.jobs.finish(&job_id, &Err(error.clone()));
        daemon.jobs.forget(&job_id);
        return Err(error);
    }
    let req = request(daemon, params);
    let span =
        tracing::info_span!("job", job_id = %job_id, domain = %req.domain, image = %req.image);
    let hooks = JobHooks {
        progress: progress_sink(daemon, &job_id, request_id, notify),
        cancel,
        log: daemon.step_log(),
        slots: Arc::clone(&daemon.slots),
        guards: Arc::clone(&daemon.guards),
        late: Arc::clone(&daemon.late),
    };
    // the job answers through `answered`; with a background flatten it
    // goes on after that, in its own task
    let job = run_job(Arc::clone(daemon), hv, store, settings, req, new, hooks);
    tokio::spawn(job.instrument(span));
    join(answered).await
}

/// Register the job; with `wait`, a busy domain is waited for instead of
/// refused: the job is listed at once (phase `queued`, its place in line in
/// `position`, a progress note gives its id) and can be cancelled; it
/// starts when the domain is free and it is first in line, and never once
/// its client has gone or the daemon is stopping.
async fn start_or_wait(
    daemon: &Daemon,
    new: &NewJob,
    wait: bool,
    request_id: &Value,
    notify: &Notify,
) -> Result<Start, RpcError> {
    match daemon.jobs.start(new.clone()) {
        Err(e) if wait && e.kind() == ErrorKind::Busy => {}
        other => return other,
    }
    let limits = super::jobs::WaitLimits {
        per_domain: daemon.config.max_waiting_per_domain,
        per_caller: daemon.config.max_waiting_per_caller,
    };
    let cancel = daemon.jobs.enqueue(new.clone(), limits)?;
    loop {
        let changed = daemon.jobs.changed();
        let position = daemon
            .jobs
            .get(&new.job_id)
            .and_then(|job| job.position)
            .unwrap_or(1);
        // also how a client that went away is noticed (before each start
        // attempt): the note finds the connection hung up
        let here = notify(ProgressParams {
            id: request_id.clone(),
            job_id: new.job_id.clone(),
            phase: "queued".into(),
            done: 0,
            total: 0,
            position: Some(position),
        });
        let why = if cancel.load(std::sync::atomic::Ordering::SeqCst) {
            Some(RpcError::new(
                ErrorKind::Cancelled,
                "cancelled while waiting for the domain; nothing was done",
            ))
        } else if daemon.is_shutting_down() {
            Some(RpcError::new(
                ErrorKind::ShuttingDown,
                "the daemon is stopping; the queued request was not started",
            ))
        } else if !here {
            Some(RpcError::new(
                ErrorKind::Cancelled,
                "the client went away while the request waited for its domain; not started",
            ))
        } else {
            None
        };
        if let Some(error) = why {
            daemon.jobs.finish(&new.job_id, &Err(error.clone()));
            return Err(error);
        }
        if let Ok(start) = daemon.jobs.start_queued(&new.job_id) {
            return Ok(start);
        }
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(QUEUED_CHECK) => {}
        }
    }
}

/// How often a queued request checks its client and the daemon's stop.
const QUEUED_CHECK: Duration = Duration::from_secs(1);

/// The domain's UUID (one job per domain, whatever name the caller used)
/// and its name (what `[[policy]]` patterns match).
async fn lookup(
    daemon: &Daemon,
    hv: &Arc<dyn Hypervisor>,
    domain: &str,
) -> Result<(String, String), RpcError> {
    let (hv, name) = (Arc::clone(hv), domain.to_string());
    let deadline = daemon.settings.call_deadline;
    match crate::owners::LIBVIRT
        .call(deadline, move || hv.domain(&name))
        .await
    {
        Ok(Ok(info)) => Ok((info.uuid, info.name)),
        Ok(Err(e)) => Err(wire::libvirt_error(&e)),
        Err(late) => Err(wire::late(
            late.error("the domain lookup", deadline),
            ErrorKind::LibvirtUnavailable,
        )),
    }
}

/// `result` if every image it names is in a pool the caller may write
/// into (its `[[policy]]` rules), else `permission_denied`.
fn within_pools(settings: &Settings, result: Value) -> Result<Value, RpcError> {
    let Some(allowed) = &settings.allowed_pools else {
        return Ok(result);
    };
    let disks = result.get("disks").and_then(Value::as_array);
    let outside = disks
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("pool").and_then(Value::as_str))
        .find(|pool| !allowed.iter().any(|a| a == pool));
    match outside {
        None => Ok(result),
        Some(pool) => Err(super::denied(format!(
            "the request_id names a job whose image is in pool {pool}, which this caller may \
             not write into (its [[policy]] rules allow: {})",
            allowed.join(", ")
        ))),
    }
}

/// The job's answer, when it comes (also for a retry of a running request).
async fn join(mut answered: Answered) -> Result<Value, RpcError> {
    match answered.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().unwrap_or_else(|| {
            Err(RpcError::new(
                ErrorKind::Internal,
                "job ended without outcome",
            ))
        }),
        Err(_) => Err(RpcError::new(
            ErrorKind::Internal,
            "the joined job vanished",
        )),
    }
}

async fn run_job(
    daemon: Arc<Daemon>,
    hv: Arc<dyn Hypervisor>,
    store: Arc<dyn ImageStore>,
    settings: Settings,
    req: SnapshotRequest,
    new: NewJob,
    hooks: JobHooks,
) {
    let job_id = new.job_id.clone();
    tracing::info!(quiesce = ?req.quiesce, flatten = ?req.flatten, disks = ?req.disks, request_id = ?new.request_id, "snapshot started");
    let outcome = snapshot::run(
        hv,
        Arc::clone(&store),
        &settings,
        &req,
        &job_id,
        hooks.clone(),
    )
    .await;
    let window = outcome
        .as_ref()
        .ok()
        .filter(|r| r.frozen_filesystems > 0)
        .map(|r| r.timings.freeze_window_ms);
    let wire_outcome = match &outcome {
        Ok(result) => {
            tracing::info!(
                locations = ?result.disks.iter().map(|d| &d.location).collect::<Vec<_>>(),
                consistency = ?result.consistency,
                freeze_window_ms = result.timings.freeze_window_ms,
                total_ms = result.timings.total_ms,
                flattened = result.flattened,
                "snapshot done"
            );
            to_value(result)
        }
        Err(err) => {
            tracing::warn!(error = %err, "snapshot failed");
            Err(wire::snapshot_error(err, &job_id))
        }
    };
    if let Ok(result) = &outcome {
        if result.flatten == Flatten::None {
            let images = result
                .disks
                .iter()
                .map(|d| ImageSpec::new(&d.pool, &d.image))
                .collect();
            super::release::register(&daemon, &store, &job_id, images).await;
        }
    }
    let failed = wire_outcome.as_ref().err().map(|e| e.kind().as_str());
    daemon.stats.snapshot(failed, window);
    daemon.metrics_changed.notify_one();
    if let (Ok(result), Ok(answer)) = (&outcome, &wire_outcome) {
        if result.flatten.after_answer() {
            daemon.jobs.answer(&job_id, answer.clone());
            let after = AfterAnswer {
                mode: result.flatten,
                dests: result
                    .disks
                    .iter()
                    .map(|d| ImageSpec::new(&d.pool, &d.image))
                    .collect(),
                tasks: result
                    .disks
                    .iter()
                    .filter_map(|d| d.flatten_task.clone())
                    .collect(),
                resumed: false,
            };
            background::flatten(&daemon, &store, new, answer.clone(), after, hooks).await;
            return;
        }
    }
    let undone = match &outcome {
        Err(err) if !err.rollback_failures.is_empty() => Some(err.rollback_failures.join("; ")),
        _ => None,
    };
    // not over: what the rollback could not undo is recovery's to finish
    let recovering = undone.map(|why| daemon.hand_to_recovery(&job_id, why));
    let refused = daemon
        .jobs
        .get(&job_id)
        .is_some_and(|j| j.phase == Phase::Preflight);
    match wire_outcome.clone() {
        Err(mut error) if refused => {
            // refused before touching anything: no job to look up later
            error.data.job_id = None;
            daemon.jobs.finish(&job_id, &Err(error));
            daemon.jobs.forget(&job_id);
        }
        other => daemon.jobs.finish(&job_id, &other),
    }
    // answered first: a crash before this record only makes recovery find
    // the finished (or rolled-back) steps and record the same end
    if recovering.is_none() {
        daemon.journal_end(&new, &wire_outcome).await;
    }
}

fn request(daemon: &Daemon, p: CreateParams) -> SnapshotRequest {
    SnapshotRequest {
        domain: p.domain,
        image: p.image,
        pool: p.pool,
        disks: p.disks,
        quiesce: p.quiesce.unwrap_or(daemon.config.snapshot.quiesce),
        flatten: p.flatten.unwrap_or_default(),
    }
}

/// Progress goes to the job registry always, and to the requester as
/// notifications: every phase change, flatten throttled.
fn progress_sink(
    daemon: &Arc<Daemon>,
    job_id: &str,
    request_id: Value,
    notify: Notify,
) -> ProgressSink {
    let (daemon, job_id) = (Arc::clone(daemon), job_id.to_string());
    let last: Mutex<Option<(Phase, Instant)>> = Mutex::new(None);
    let copied = Mutex::new(0u64);
    Arc::new(move |p: Progress| {
        if p.phase == Phase::Flatten {
            // per disk, done climbs to total; a smaller value is the next disk
            let mut copied = copied.lock().unwrap_or_else(|e| e.into_inner());
            daemon
                .stats
                .flattened(p.done.checked_sub(*copied).unwrap_or(p.done));
            *copied = p.done;
        }
        if !daemon.jobs.progress(&job_id, p) {
            // answered: the requester has its result, the rest is for jobs.get
            return;
        }
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        let due = match *last {
            Some((phase, at)) => {
                phase != p.phase || p.done >= p.total || at.elapsed() >= PROGRESS_INTERVAL
            }
            None => true,
        };
        if due {
            *last = Some((p.phase, Instant::now()));
            let phase = serde_json::to_value(p.phase)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string));
            notify(ProgressParams {
                id: request_id.clone(),
                job_id: job_id.clone(),
                phase: phase.unwrap_or_default(),
                done: p.done,
                total: p.total,
                position: p.position,
            });
        }
    })
}
