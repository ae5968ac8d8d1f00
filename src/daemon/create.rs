//! `snapshot.create`: the workflow as a job. The job runs in its own task,
//! so a client that disconnects does not leave a half-done snapshot: the job
//! finishes (or rolls back) and stays visible in `jobs.get`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::Instrument;

use super::{to_value, wire, Daemon, Notify};
use crate::protocol::{CreateParams, ErrorKind, ProgressParams, RpcError};
use crate::snapshot::{
    self, FlattenMode, Phase, Progress, ProgressSink, QuiescePolicy, SnapshotRequest,
};

/// Flatten progress is sent at most this often (plus at its end).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

pub(super) async fn snapshot_create(
    daemon: &Arc<Daemon>,
    params: CreateParams,
    request_id: Value,
    notify: Notify,
) -> Result<Value, RpcError> {
    daemon.refuse_if_shutting_down()?;
    let hv = daemon.backends.hypervisor()?;
    let store = daemon.backends.store()?;
    let req = request(daemon, params);
    let job_id = snapshot::workflow::new_job_id();
    let cancel = daemon.jobs.start(&job_id, &req.domain, &req.image)?;
    let span =
        tracing::info_span!("job", job_id = %job_id, domain = %req.domain, image = %req.image);
    let sink = progress_sink(daemon, &job_id, request_id, notify);
    let task = {
        let (daemon, job_id) = (Arc::clone(daemon), job_id.clone());
        async move {
            tracing::info!(quiesce = ?req.quiesce, flatten = ?req.flatten, disks = ?req.disks, "snapshot started");
            let outcome = snapshot::run(hv, store, &daemon.settings, &req, &job_id, sink, cancel).await;
            let window = outcome.as_ref().ok().filter(|r| r.frozen_filesystems > 0).map(|r| r.timings.freeze_window_ms);
            daemon.stats.snapshot(outcome.is_ok(), window);
            let wire_outcome = match &outcome {
                Ok(result) => {
                    tracing::info!(
                        locations = ?result.disks.iter().map(|d| &d.location).collect::<Vec<_>>(),
                        consistency = ?result.consistency,
                        freeze_window_ms = result.timings.freeze_window_ms,
                        total_ms = result.timings.total_ms,
                        "snapshot done"
                    );
                    to_value(result)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "snapshot failed");
                    Err(wire::snapshot_error(err, &job_id))
                }
            };
            daemon.jobs.finish(&job_id, &wire_outcome);
            let refused = daemon.jobs.get(&job_id).is_some_and(|j| j.phase == Phase::Preflight);
            match wire_outcome {
                Err(mut error) if refused => {
                    // refused before touching anything: no job to look up later
                    daemon.jobs.forget(&job_id);
                    error.data.job_id = None;
                    Err(error)
                }
                other => other,
            }
        }
        .instrument(span)
    };
    tokio::spawn(task).await.unwrap_or_else(|e| {
        Err(RpcError::new(
            ErrorKind::Internal,
            format!("job task failed: {e}"),
        ))
    })
}

fn request(daemon: &Daemon, p: CreateParams) -> SnapshotRequest {
    let quiesce = match p.quiesce.as_deref() {
        Some("required") => QuiescePolicy::Required,
        Some("off") => QuiescePolicy::Off,
        Some(_) => QuiescePolicy::Preferred,
        None => daemon.config.snapshot.quiesce,
    };
    let flatten = match p.flatten.as_deref() {
        Some("none") => FlattenMode::None,
        _ => FlattenMode::Sync,
    };
    SnapshotRequest {
        domain: p.domain,
        image: p.image,
        pool: p.pool,
        disks: p.disks,
        quiesce,
        flatten,
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
    Arc::new(move |p: Progress| {
        daemon.jobs.progress(&job_id, p);
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
            });
        }
    })
}
