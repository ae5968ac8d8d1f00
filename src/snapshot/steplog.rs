//! What the workflow tells the crash journal, and when: a record is made
//! durable *before* the side effect it announces, so that a daemon killed at
//! any point can tell on restart what may exist out there (a frozen guest, a
//! temporary snapshot, a partial clone). No record is written inside the
//! freeze window: everything it needs is announced before the freeze.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::rbd::ImageSpec;

/// One journalled step of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Pre-flight passed: what the job is about to touch. Written before the
    /// freeze and the temporary snapshots (named `temp_snap` on every
    /// source).
    Begin {
        /// Domain UUID (what a thaw on restart addresses).
        domain_uuid: String,
        /// Cluster fsid (to rebuild locations on restart).
        fsid: String,
        /// Source images, in disk order.
        sources: Vec<ImageSpec>,
        /// Destination images, in the same order.
        dests: Vec<ImageSpec>,
        /// The temporary snapshot's name.
        temp_snap: String,
    },
    /// The guest is about to be frozen: until [`Step::Thawed`], it may be.
    Freeze,
    /// The guest is thawed again.
    Thawed,
    /// The guest's vCPUs are about to be paused: until [`Step::Resumed`],
    /// they may be.
    Pause,
    /// The vCPUs run again.
    Resumed,
    /// A clone into `dest` is about to be made.
    Clone {
        /// The destination image.
        dest: ImageSpec,
    },
    /// `dest` is complete: flattened (or not, as asked), temporary snapshot
    /// dropped, `snap` created and protected.
    Finished {
        /// The destination image.
        dest: ImageSpec,
    },
    /// A background flatten (re)starts after the answer: until [`Step::Paused`],
    /// it may be killed inside librbd.
    Flattening,
    /// A background flatten stopped cleanly for a shutdown (librbd finished
    /// its copies in flight): the next start may resume it.
    Paused,
}

impl Step {
    /// A short name for logs and test pause points.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Begin { .. } => "begin",
            Step::Freeze => "freeze",
            Step::Thawed => "thawed",
            Step::Pause => "pause",
            Step::Resumed => "resumed",
            Step::Clone { .. } => "clone",
            Step::Finished { .. } => "finished",
            Step::Flattening => "flattening",
            Step::Paused => "paused",
        }
    }
}

/// Where the workflow records its steps.
pub trait StepLog: Send + Sync + fmt::Debug {
    /// Make `step` durable; the workflow acts only after this returned Ok.
    fn record(&self, job_id: &str, step: &Step) -> Result<(), String>;

    /// A named point between steps (`frozen`, `snapshotted`, `cloned`,
    /// `flattened`…). Nothing is written; a test build may pause here to be
    /// killed at an exact place.
    fn checkpoint(&self, _job_id: &str, _name: &str) {}

    /// Whether a test build pauses at step or checkpoint `name` (only then
    /// is [`StepLog::checkpoint`] worth a call off the runtime).
    fn pauses_at(&self, _name: &str) -> bool {
        false
    }
}

/// No journal (unit tests, library use without crash safety).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLog;

impl StepLog for NoLog {
    fn record(&self, _job_id: &str, _step: &Step) -> Result<(), String> {
        Ok(())
    }
}
