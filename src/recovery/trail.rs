//! The journal read back as recovery needs it: each unfinished job as a
//! [`Trail`] of the steps it recorded, the end records of finished jobs,
//! and the thaw guards still armed.

use serde::Serialize;
use serde_json::Value;

use crate::journal::Record;
use crate::rbd::ImageSpec;
use crate::snapshot::{Flatten, GuardInfo, Step, Window};

/// One unfinished job, as the journal tells it.
#[derive(Debug, Clone, Serialize)]
pub struct Trail {
    /// The job.
    pub job_id: String,
    /// Its idempotency key.
    pub request_id: Option<String>,
    /// Its params, as received.
    pub params: Value,
    /// Its domain.
    pub domain_uuid: String,
    /// The librados address of the daemon that ran it.
    pub client_addr: Option<String>,
    /// Steps recorded, oldest first.
    pub steps: Vec<Step>,
    /// Unix seconds the request was accepted.
    pub started: f64,
}

impl Trail {
    /// Whether the guest may still be frozen.
    pub fn maybe_frozen(&self) -> bool {
        self.open(&Step::Freeze, &Step::Thawed)
    }

    /// Whether the guest's vCPUs may still be paused.
    pub fn maybe_paused(&self) -> bool {
        self.open(&Step::Pause, &Step::Resumed)
    }

    /// What the journal says the job left undone in the guest.
    pub fn window(&self) -> Window {
        Window {
            thaw: self.maybe_frozen(),
            resume: self.maybe_paused(),
        }
    }

    /// Whether the last `start` has no `end` after it.
    fn open(&self, start: &Step, end: &Step) -> bool {
        let last_start = self.steps.iter().rposition(|s| s == start);
        let last_end = self.steps.iter().rposition(|s| s == end);
        matches!((last_start, last_end), (Some(s), e) if e.is_none_or(|e| e < s))
    }

    pub(super) fn begin(&self) -> Option<(&str, &[ImageSpec], &[ImageSpec], &str)> {
        self.steps.iter().find_map(|s| match s {
            Step::Begin {
                fsid,
                sources,
                dests,
                temp_snap,
                ..
            } => Some((fsid.as_str(), &sources[..], &dests[..], temp_snap.as_str())),
            _ => None,
        })
    }

    /// The flatten mode the request asked for.
    pub fn flatten_mode(&self) -> Flatten {
        self.params
            .get("flatten")
            .cloned()
            .and_then(|m| serde_json::from_value(m).ok())
            .unwrap_or_default()
    }

    pub(super) fn cloned(&self, dest: &ImageSpec) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, Step::Clone { dest: d } if d == dest))
    }

    pub(super) fn finished(&self, dest: &ImageSpec) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, Step::Finished { dest: d } if d == dest))
    }
}

/// Split the journal into unfinished jobs and the end records of finished ones.
pub fn split(records: Vec<Record>) -> (Vec<Trail>, Vec<Record>) {
    let mut trails: Vec<Trail> = Vec::new();
    let mut ended = Vec::new();
    for record in records {
        match record {
            Record::Request {
                job_id,
                request_id,
                params,
                domain_uuid,
                client_addr,
                at,
            } => trails.push(Trail {
                job_id,
                request_id,
                params,
                domain_uuid,
                client_addr,
                steps: Vec::new(),
                started: at,
            }),
            Record::Step { job_id, step } => {
                if let Some(trail) = trails.iter_mut().find(|t| t.job_id == job_id) {
                    trail.steps.push(step);
                }
            }
            Record::Guard { .. } | Record::Unguard { .. } => {}
            end @ Record::End { .. } => {
                trails.retain(|t| t.job_id != end.job_id());
                ended.retain(|e: &Record| e.job_id() != end.job_id());
                ended.push(end);
            }
        }
    }
    (trails, ended)
}

/// The thaw guards the journal shows armed and not cleared, oldest first.
pub fn guards(records: &[Record]) -> Vec<GuardInfo> {
    let mut active: Vec<GuardInfo> = Vec::new();
    for record in records {
        match record {
            Record::Guard {
                job_id,
                domain_uuid,
                since,
                reason,
                thaw,
                resume,
            } => {
                active.retain(|g| &g.domain_uuid != domain_uuid);
                active.push(GuardInfo {
                    domain_uuid: domain_uuid.clone(),
                    job_id: job_id.clone(),
                    since_unix: *since,
                    attempts: 0,
                    last_error: format!("resumed after a restart: {reason}"),
                    left_host: false,
                    window: Window {
                        thaw: *thaw,
                        resume: *resume,
                    },
                });
            }
            Record::Unguard { domain_uuid, .. } => active.retain(|g| &g.domain_uuid != domain_uuid),
            _ => {}
        }
    }
    active
}
