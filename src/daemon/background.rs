//! The part of a `background` or `cluster` job that runs after its answer:
//! the flatten, in this daemon or followed in the Ceph manager. Its end is
//! journalled only when the flatten ends (done, failed or cancelled), so a
//! daemon that stops or dies before resumes it at the next start. Either
//! way the image stays whole and usable: a flatten that does not finish
//! leaves it a clone of its source, and the job's error says so.

use std::sync::Arc;

use serde_json::Value;

use super::jobs::{now_unix, NewJob};
use super::{wire, Daemon};
use crate::journal::{Outcome, Record};
use crate::protocol::RpcError;
use crate::rbd::{ImageSpec, ImageStore};
use crate::snapshot::{self, Flatten, JobHooks, SnapshotErrorKind};

/// What is left to do after the answer.
#[derive(Debug, Clone)]
pub struct AfterAnswer {
    /// `Background` or `Cluster`.
    pub mode: Flatten,
    /// The new images.
    pub dests: Vec<ImageSpec>,
    /// Manager tasks already queued, in image order (none on resume).
    pub tasks: Vec<String>,
    /// Resumed after a restart: the flatten may have been killed half-way.
    pub resumed: bool,
}

/// Flatten after the answer and record the job's end.
pub async fn flatten(
    daemon: &Arc<Daemon>,
    store: &Arc<dyn ImageStore>,
    new: NewJob,
    answer: Value,
    after: AfterAnswer,
    hooks: JobHooks,
) {
    let job_id = new.job_id.clone();
    tracing::info!(mode = ?after.mode, images = ?after.dests, "answered; flattening goes on");
    if let Err(e) = daemon
        .journal
        .record_async(&job_id, snapshot::Step::Flattening)
        .await
    {
        tracing::warn!(error = %e, "could not journal the flatten's start");
    }
    let done = snapshot::flatten::after_answer(
        store,
        &daemon.settings,
        after.mode,
        &after.dests,
        &after.tasks,
        after.resumed,
        &hooks,
    )
    .await;
    match done {
        Ok(()) => {
            tracing::info!(images = ?after.dests, "background flatten done");
            let outcome = Ok(flattened(answer));
            daemon.journal_end(&new, &outcome).await;
            daemon.jobs.finish(&job_id, &outcome);
        }
        Err(err) if err.kind == SnapshotErrorKind::Cancelled && daemon.is_shutting_down() => {
            // no end in the journal: the next start resumes the flatten
            if let Err(e) = daemon
                .journal
                .record_async(&job_id, snapshot::Step::Paused)
                .await
            {
                tracing::warn!(error = %e, "could not journal the pause: the next start will not resume the flatten");
            }
            tracing::info!("background flatten paused for shutdown; resumed at the next start");
            let mut error = wire::snapshot_error(&err, &job_id);
            error.message = format!(
                "{}; the daemon is stopping, the next start resumes it",
                error.message
            );
            daemon.jobs.finish(&job_id, &Err(error));
        }
        Err(err) => {
            tracing::warn!(error = %err, "background flatten failed; the images stay usable, not flattened");
            let mut error = wire::snapshot_error(&err, &job_id);
            error.message = format!(
                "{}; the new image stays whole and usable, but is not flattened (still a clone of its source)",
                error.message
            );
            let mut result = answer;
            result["flatten_error"] = serde_json::to_value(&error).unwrap_or_default();
            daemon.journal_end(&new, &Ok(result)).await;
            daemon.jobs.finish(&job_id, &Err(error));
        }
    }
}

/// The answer, updated for images now independent of their source.
fn flattened(mut answer: Value) -> Value {
    answer["flattened"] = Value::Bool(true);
    if let Some(disks) = answer.get_mut("disks").and_then(Value::as_array_mut) {
        // a result recovery rebuilt names no parents
        for disk in disks.iter_mut().filter(|d| d.get("parent").is_some()) {
            disk["parent"] = Value::Null;
        }
    }
    answer
}

impl Daemon {
    /// Journal a job's end (what `request_id` retries and `jobs.get` find
    /// after a restart).
    pub async fn journal_end(&self, new: &NewJob, outcome: &Result<Value, RpcError>) {
        let (started, phase) = self.jobs.timeline(&new.job_id).unzip();
        let end = Record::End {
            started,
            phase,
            job_id: new.job_id.clone(),
            request_id: new.request_id.clone(),
            params: new.params.clone(),
            domain: new.domain.clone(),
            image: new.image.clone(),
            at: now_unix(),
            outcome: match outcome {
                Ok(result) => Outcome::Ok(result.clone()),
                Err(error) => Outcome::Error(error.clone()),
            },
        };
        if let Err(e) = self.journal.append_async(end).await {
            // the work is done or undone; a restart will only redo the undo
            tracing::error!(error = %e, "could not journal the job's end");
        }
    }
}
