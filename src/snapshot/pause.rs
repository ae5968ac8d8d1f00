//! One instant across several disks: when no freeze covers every disk of
//! the request (quiesce off, no agent, a failed freeze, a raw disk), the
//! disks' snapshots would each be taken at their own instant, and a write
//! acknowledged on one disk after its snapshot could be followed by a
//! dependent write that reaches another disk before its snapshot — a set no
//! crash could leave. Pausing the vCPUs (`virDomainSuspend`) around the
//! snapshots makes the set one instant: the guest issues nothing new, and
//! what it was told is written is in every snapshot.
//!
//! A pause gets the freeze's guarantees: journalled before it is asked for
//! ([`Step::Pause`], closed by [`Step::Resumed`]), bounded by the freeze
//! deadline, undone on every path, and when the resume cannot be confirmed
//! in time a guard keeps resuming (and thawing, if the job froze) for as long
//! as the domain runs; after a crash, the next start arms that guard from
//! the journal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::blocking::{self, Late};
use super::capture::{undo_window, Undoing};
use super::guard::{PendingFreeze, Window};
use super::preflight::Plan;
use super::workflow::Job;
use super::{Settings, SnapshotError, SnapshotErrorKind as Kind, Step};
use crate::libvirt::Hypervisor;

/// Whether every disk of the plan lives under a filesystem the freeze
/// covered (`frozen` filesystems froze): then the freeze alone holds
/// every disk still.
pub(super) fn covered_by_freeze(plan: &Plan, frozen: u32) -> bool {
    let Ok(filesystems) = &plan.freeze else {
        return false;
    };
    frozen > 0
        && plan.disks.iter().all(|disk| {
            filesystems
                .iter()
                .any(|fs| fs.disks.iter().any(|d| d == &disk.target))
        })
}

/// Whether to pause: several disks, not all held still by the freeze, and
/// the configuration allows it.
pub(super) fn needed(plan: &Plan, settings: &Settings, frozen: u32) -> bool {
    settings.pause_vcpus && plan.disks.len() > 1 && !covered_by_freeze(plan, frozen)
}

/// Pause the vCPUs within `deadline`; when they paused. On failure nothing
/// is left paused: a refused pause changed nothing, and a pause that missed
/// its deadline (it may still land) is resumed once it lands, by the request
/// or by a guard.
pub(super) async fn pause(
    hv: &Arc<dyn Hypervisor>,
    uuid: &str,
    settings: &Settings,
    job: &Job<'_>,
    frozen: bool,
    deadline: Duration,
) -> Result<Instant, SnapshotError> {
    job.record(&Step::Pause).await?;
    let (call_hv, id) = (Arc::clone(hv), uuid.to_string());
    let late = match blocking::libvirt(deadline, move || call_hv.suspend(&id)).await {
        Ok(Ok(())) => return Ok(Instant::now()),
        Ok(Err(e)) => {
            // refused: not paused; close the journal's pause
            if let Err(note) = job.record(&Step::Resumed).await {
                tracing::warn!(error = %note, "pause refused, and the journal could not record it");
            }
            let mut err = SnapshotError::libvirt(&e);
            err.message = format!(
                "could not pause the vCPUs for one instant across the disks: {}",
                err.message
            );
            return Err(err);
        }
        Err(Late::TimedOut(handle)) => Some(tokio::spawn(async move {
            let _ = handle.await;
        })),
        Err(Late::Panicked(msg) | Late::Saturated(msg)) => {
            tracing::warn!(reason = %msg, "pause not started");
            None
        }
    };
    let err = SnapshotError::new(
        Kind::Timeout,
        format!(
            "the vCPUs did not pause within {} ms; nothing was snapshotted",
            deadline.as_millis()
        ),
    );
    match resume(hv, uuid, settings, job, frozen, late).await {
        Ok(_) => Err(err),
        Err(resume_err) => Err(resume_err),
    }
}

/// Resume the vCPUs, retrying within the request's budget (the agent
/// timeout plus a second, as for a thaw); when they run again. `pending` is
/// a pause call still running (it may still land: resumed only once it has).
/// Not confirmed in time: a guard on the domain keeps resuming (and, with
/// `frozen`, thawing after), and the error names it.
pub(super) async fn resume(
    hv: &Arc<dyn Hypervisor>,
    uuid: &str,
    settings: &Settings,
    job: &Job<'_>,
    frozen: bool,
    pending: Option<PendingFreeze>,
) -> Result<Instant, SnapshotError> {
    let undo = Undoing {
        attempt: Window {
            thaw: false,
            resume: true,
        },
        guard: Window {
            thaw: frozen,
            resume: true,
        },
        confirm: false,
        pending,
    };
    let Err((guard, last, budget)) = undo_window(hv, uuid, settings, job, undo).await else {
        let resumed = Instant::now();
        if let Err(e) = job.record(&Step::Resumed).await {
            tracing::warn!(error = %e, "vCPUs resumed, but the journal could not record it");
        }
        return Ok(resumed);
    };
    let mut err = SnapshotError::new(
        Kind::ThawFailed,
        format!(
            "the guest's vCPUs could not be confirmed resumed within {} ms ({last}); it may \
             still be paused{}: a guard keeps resuming it for as long as the domain runs \
             (daemon.status guests_at_risk), and the domain takes no new snapshot until then",
            budget.as_millis(),
            if frozen { " and frozen" } else { "" }
        ),
    );
    err.guard = Some(Box::new(guard));
    Err(err)
}
