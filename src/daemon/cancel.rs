//! `jobs.cancel`: ask a running job to stop at its next safe point. Before
//! the answer (any flatten mode) the job rolls back: nothing it made is
//! left. After the answer (`background`, `cluster`) only the flatten stops:
//! the new image stays whole and usable, not flattened. A job that already
//! ended is left alone, and the answer says so. A caller held to
//! `[[policy]]` rules cancels only jobs of the domains they allow.

use serde_json::Value;

use super::Daemon;
use crate::policy::Scope;
use crate::protocol::{ErrorKind, RpcError};

pub(super) fn jobs_cancel(daemon: &Daemon, job_id: &str, scope: &Scope) -> Result<Value, RpcError> {
    // a caller cancels only jobs of domains its rules let it snapshot
    if let Some(job) = daemon.jobs.get(job_id) {
        scope.domain(&job.domain_name).map_err(super::denied)?;
    }
    let Some(state) = daemon.jobs.cancel(job_id) else {
        return Err(RpcError::new(
            ErrorKind::JobNotFound,
            format!("no job {job_id:?} (the last 1024 finished jobs are kept, across restarts)"),
        ));
    };
    let cancelling = state == super::JobState::Running;
    if cancelling {
        tracing::info!(job_id, "cancel requested");
    }
    super::to_value(&super::results::Cancelled {
        job_id: job_id.to_string(),
        state,
        cancelling,
    })
}
