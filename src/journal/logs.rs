//! The journal as the workflow's step log and as the thaw guards' log.

use super::{Journal, Record};
use crate::snapshot::{Step, StepLog};

impl StepLog for Journal {
    fn record(&self, job_id: &str, step: &Step) -> Result<(), String> {
        self.append(&Record::Step {
            job_id: job_id.to_string(),
            step: step.clone(),
        })
        .map_err(|e| e.to_string())?;
        self.pause_if_asked(job_id, step.name());
        Ok(())
    }

    fn checkpoint(&self, job_id: &str, name: &str) {
        self.pause_if_asked(job_id, name);
    }

    fn pauses_at(&self, name: &str) -> bool {
        self.pause_at.as_deref() == Some(name)
    }
}

impl crate::snapshot::GuardLog for Journal {
    fn armed(&self, guard: &crate::snapshot::GuardInfo) -> Result<(), String> {
        self.append(&Record::Guard {
            job_id: guard.job_id.clone(),
            domain_uuid: guard.domain_uuid.clone(),
            since: guard.since_unix,
            reason: guard.last_error.clone(),
            thaw: guard.window.thaw,
            resume: guard.window.resume,
        })
        .map_err(|e| e.to_string())
    }

    fn cleared(&self, guard: &crate::snapshot::GuardInfo) -> Result<(), String> {
        self.append(&Record::Unguard {
            job_id: guard.job_id.clone(),
            domain_uuid: guard.domain_uuid.clone(),
        })
        .map_err(|e| e.to_string())
    }
}
