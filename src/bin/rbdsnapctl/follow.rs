//! `snapshot --follow`: after a `background` or `cluster` answer, watch the
//! job (`jobs.get`) until its flatten ends, with the same progress line.

use std::time::Duration;

use rbdsnapd::client::{Client, ClientError};
use rbdsnapd::protocol::{ErrorKind, ProgressParams, RpcError};
use serde_json::{json, Value};

use crate::progress::ProgressLine;
use crate::report::Failure;

/// How often the job is asked for.
const POLL: Duration = Duration::from_millis(500);

/// Wait until the job of `answer` is no longer running; an error if its
/// flatten failed or was cancelled. A job whose image is independent
/// already (`sync`, `none`) returns at once.
pub fn flatten(client: &mut Client, answer: &Value, show: bool) -> Result<(), Box<Failure>> {
    let Some(job_id) = answer.get("job_id").and_then(Value::as_str) else {
        return Ok(());
    };
    let fail = |error| {
        Box::new(Failure {
            error,
            job_id: Some(job_id.to_string()),
        })
    };
    let mut line = ProgressLine::new();
    let job = loop {
        let job = client
            .call("jobs.get", json!({ "job_id": job_id }), |_| {})
            .map_err(fail)?;
        if job.get("state").and_then(Value::as_str) != Some("running") {
            break job;
        }
        if show {
            line.update(&progress_of(job_id, &job));
        }
        std::thread::sleep(POLL);
    };
    line.clear();
    match job.get("error") {
        Some(error) if job.get("state").and_then(Value::as_str) == Some("failed") => {
            let error: RpcError = serde_json::from_value(error.clone()).unwrap_or_else(|_| {
                RpcError::new(ErrorKind::Internal, format!("the job failed: {error}"))
            });
            Err(fail(ClientError::Rpc(error)))
        }
        _ => Ok(()),
    }
}

/// A job record as a progress notification, for the progress line.
fn progress_of(job_id: &str, job: &Value) -> ProgressParams {
    let number = |key: &str| job.get(key).and_then(Value::as_u64).unwrap_or(0);
    ProgressParams {
        id: Value::Null,
        job_id: job_id.to_string(),
        phase: job
            .get("phase")
            .and_then(Value::as_str)
            .unwrap_or("flatten")
            .to_string(),
        done: number("done"),
        total: number("total"),
        position: job.get("position").and_then(Value::as_u64),
    }
}
