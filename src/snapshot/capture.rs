//! The freeze window: freeze → (pause the vCPUs, for several disks no
//! freeze covers: see [`super::pause`]) → temporary snapshot of every disk
//! → (resume) → thaw, and nothing else. The thaw happens on every path that attempted a freeze,
//! also when the freeze call failed or timed out (a late freeze can still
//! land in the guest), and the guest's own freeze status is checked when the
//! thaw call fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::blocking::{self, Late};
use super::guard::{self, PendingFreeze, Window};
use super::preflight::Plan;
use super::saga::{Saga, Undo};
use super::workflow::Job;
use super::Step;
use super::{Consistency, Quiesce, Settings, SnapshotError, SnapshotErrorKind as Kind};
use crate::libvirt::Hypervisor;

/// What the freeze window produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Consistency reached.
    pub consistency: Consistency,
    /// Why not filesystem-consistent, when not.
    pub reason: Option<String>,
    /// Filesystems the freeze covered.
    pub frozen: u32,
    /// Milliseconds of the freeze call.
    pub freeze_ms: u64,
    /// Milliseconds of the snapshot calls.
    pub snap_ms: u64,
    /// Milliseconds of the thaw call(s).
    pub thaw_ms: u64,
    /// Milliseconds from the freeze call to the thaw's return (0 when no
    /// freeze was attempted).
    pub window_ms: u64,
    /// Milliseconds the vCPUs were paused (0: not paused).
    pub pause_ms: u64,
    /// Whether every disk was captured at one instant.
    pub one_instant: bool,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// Take the temporary snapshot `snap` of every planned disk, frozen when the
/// plan says so. Records each snapshot's undo in `saga` before creating it.
pub(super) async fn capture(
    hv: &Arc<dyn Hypervisor>,
    plan: &Plan,
    settings: &Settings,
    policy: Quiesce,
    snap: &str,
    saga: &mut Saga,
    job: &Job<'_>,
) -> Result<Captured, SnapshotError> {
    let uuid = plan.domain.uuid.as_str();
    let mut reason = plan.freeze.as_ref().err().cloned();
    let mut frozen = 0;
    let attempt_freeze = plan.freeze.is_ok();
    if let Some(guard) = job.hooks().guards.get(uuid) {
        return Err(guarded(&guard));
    }
    if attempt_freeze {
        job.record(&Step::Freeze).await?;
    }
    // the window is the guest's: from the freeze call to the thaw's answer,
    // without our own journal writes on either side
    let window = Instant::now();
    if attempt_freeze {
        match freeze(hv, uuid, settings.freeze_deadline).await {
            Ok(0) => reason = Some("the guest agent froze no filesystem".to_string()),
            Ok(n) => frozen = n,
            Err((err, pending)) => {
                // a failed or late freeze may still have frozen something
                let uncertain = FreezeOutcome::Uncertain(pending);
                let thawed = thaw_noted(hv, uuid, settings, job, uncertain)
                    .await
                    .map(drop);
                if policy == Quiesce::Required {
                    return Err(with_thaw_outcome(err, thawed));
                }
                thawed?;
                reason = Some(format!("freeze failed: {}", err.message));
            }
        }
    }
    let freeze_ms = ms(window.elapsed());
    let pause = super::pause::needed(plan, settings, frozen);
    let paused_at = if pause {
        // the pause is held to the freeze deadline like a freeze
        let left = settings.freeze_deadline.saturating_sub(window.elapsed());
        match super::pause::pause(hv, uuid, settings, job, frozen > 0, left).await {
            Ok(at) => Some(at),
            Err(err) if err.guard.is_some() => return Err(err),
            Err(err) => {
                let thawed = if attempt_freeze {
                    thaw_noted(hv, uuid, settings, job, FreezeOutcome::Answered)
                        .await
                        .map(drop)
                } else {
                    Ok(())
                };
                return Err(with_thaw_outcome(err, thawed));
            }
        }
    } else {
        None
    };
    let snap_started = Instant::now();
    // frozen or paused: the snapshots must fit in what is left of the
    // freeze deadline
    let snap_deadline = if frozen > 0 || paused_at.is_some() {
        settings.freeze_deadline.saturating_sub(window.elapsed())
    } else {
        settings.call_deadline
    };
    job.checkpoint("frozen").await;
    let snapped = snapshot_all(plan, snap, snap_deadline, saga).await;
    job.checkpoint("snapshotted").await;
    let snap_ms = ms(snap_started.elapsed());
    let mut pause_ms = 0;
    if let Some(at) = paused_at {
        // a resume not confirmed leaves a guard that resumes, then thaws
        let resumed = super::pause::resume(hv, uuid, settings, job, frozen > 0, None).await;
        match (resumed, snapped.as_ref()) {
            (Ok(resumed), _) => pause_ms = ms(resumed.saturating_duration_since(at)),
            (Err(err), Ok(())) => return Err(err),
            (Err(err), Err(cause)) => return Err(with_thaw_outcome(cause.clone(), Err(err))),
        }
    }
    let thaw_started = Instant::now();
    let mut window_end = thaw_started;
    if attempt_freeze {
        let thawed = thaw_noted(hv, uuid, settings, job, FreezeOutcome::Answered).await;
        if let Err(err) = snapped {
            return Err(with_thaw_outcome(err, thawed.map(drop)));
        }
        window_end = thawed?;
    } else {
        snapped?;
    }
    Ok(Captured {
        consistency: if frozen > 0 {
            Consistency::Filesystem
        } else {
            Consistency::Crash
        },
        reason: if frozen > 0 { None } else { reason },
        frozen,
        freeze_ms,
        snap_ms,
        thaw_ms: ms(window_end.saturating_duration_since(thaw_started)),
        // never frozen: no window, only the snapshot calls (snap_ms)
        window_ms: if attempt_freeze {
            ms(window_end.saturating_duration_since(window))
        } else {
            0
        },
        pause_ms,
        one_instant: plan.disks.len() == 1
            || paused_at.is_some()
            || super::pause::covered_by_freeze(plan, frozen),
    })
}

/// Freeze; on failure, the error and the freeze call if it is still
/// running (it may yet land).
async fn freeze(
    hv: &Arc<dyn Hypervisor>,
    uuid: &str,
    deadline: Duration,
) -> Result<u32, (SnapshotError, Option<PendingFreeze>)> {
    let (hv, id) = (Arc::clone(hv), uuid.to_string());
    match blocking::libvirt(deadline, move || hv.freeze(&id, &[])).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => {
            let mut err = SnapshotError::libvirt(&e);
            err.kind = match err.kind {
                kind
                @ (Kind::FreezeTimeout | Kind::LibvirtUnavailable | Kind::AgentUnavailable) => kind,
                _ => Kind::FreezeFailed,
            };
            Err((err, None))
        }
        Err(late) => {
            let pending = match late {
                Late::TimedOut(handle) => Some(tokio::spawn(async move {
                    let _ = handle.await;
                })),
                _ => None,
            };
            let err = SnapshotError::new(
                Kind::FreezeTimeout,
                format!(
                    "the guest did not freeze within {} ms",
                    deadline.as_millis()
                ),
            );
            Err((err, pending))
        }
    }
}

/// A domain with a guard takes no snapshot: it may be frozen right now.
pub(super) fn guarded(guard: &guard::GuardInfo) -> SnapshotError {
    let mut err = SnapshotError::new(
        Kind::Busy,
        format!(
            "domain {} may still be frozen since a snapshot job {} could not confirm its thaw \
             (last: {}); a thaw guard keeps thawing it, and no new snapshot starts until the \
             guest is confirmed thawed",
            guard.domain_uuid, guard.job_id, guard.last_error
        ),
    );
    err.guard = Some(Box::new(guard.clone()));
    err
}

/// Snapshot every disk at once, so that the window does not grow with the
/// number of disks: every snapshot needs a snapshot id from the monitors (a
/// paxos commit, up to `paxos_propose_interval` away), and concurrent
/// requests share the next commit. Every undo is recorded before any call
/// starts; all calls are waited for (each bounded by the deadline), so a
/// failure of one never leaves another running unnoticed: a late one is
/// attached to its undo. The first failure in disk order is the error.
async fn snapshot_all(
    plan: &Plan,
    snap: &str,
    deadline: Duration,
    saga: &mut Saga,
) -> Result<(), SnapshotError> {
    for disk in &plan.disks {
        saga.record(Undo::TempSnapshot {
            image: Arc::clone(&disk.source),
            snap: snap.to_string(),
            pending: None,
        });
    }
    let calls: Vec<_> = plan
        .disks
        .iter()
        .map(|disk| {
            let (image, name) = (Arc::clone(&disk.source), snap.to_string());
            tokio::spawn(blocking::ceph(deadline, move || {
                image.create_snapshot(&name)
            }))
        })
        .collect();
    let mut first_error = None;
    for (disk, call) in plan.disks.iter().zip(calls) {
        let failed = match call.await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(SnapshotError::rbd(&e)),
            Ok(Err(Late::TimedOut(handle))) => {
                saga.set_pending_for_snapshot(disk.source.spec(), handle);
                Some(SnapshotError::new(
                    Kind::FreezeTimeout,
                    format!(
                        "snapshot of {} did not finish within the freeze deadline ({} ms)",
                        disk.source.spec(),
                        deadline.as_millis()
                    ),
                ))
            }
            Ok(Err(Late::Panicked(msg))) => Some(SnapshotError::new(Kind::Ceph, msg)),
            Ok(Err(Late::Saturated(msg))) => Some(SnapshotError::new(Kind::CephUnavailable, msg)),
            Err(join) => Some(SnapshotError::new(
                Kind::Ceph,
                format!("snapshot task: {join}"),
            )),
        };
        if first_error.is_none() {
            first_error = failed;
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Thaw within the request's budget, and journal that the guest is
/// thawed (a lost record only means a restart thaws once more, which is
/// harmless). When the thaw answered; an error names the guard left on the
/// domain when the thaw could not be confirmed in time.
async fn thaw_noted(
    hv: &Arc<dyn Hypervisor>,
    uuid: &str,
    settings: &Settings,
    job: &Job<'_>,
    freeze: FreezeOutcome,
) -> Result<Instant, SnapshotError> {
    thaw(hv, uuid, settings, job, freeze).await?;
    let thawed = Instant::now();
    if let Err(e) = job.record(&Step::Thawed).await {
        tracing::warn!(error = %e, "guest thawed, but the journal could not record it");
    }
    Ok(thawed)
}

/// How the freeze call ended, for the thaw that follows it.
pub(super) enum FreezeOutcome {
    /// It answered: one successful thaw is enough.
    Answered,
    /// It failed or missed its deadline, and may still land (the agent can
    /// be busy running its hook): thaw until the agent itself reports the
    /// guest thawed. The freeze call, when still running.
    Uncertain(Option<PendingFreeze>),
}

/// Thaw, retrying within the request's budget (the agent timeout plus a
/// second). Not confirmed by then: a guard on the domain keeps thawing
/// for as long as the domain runs, and the error names it.
pub(super) async fn thaw(
    hv: &Arc<dyn Hypervisor>,
    uuid: &str,
    settings: &Settings,
    job: &Job<'_>,
    freeze: FreezeOutcome,
) -> Result<(), SnapshotError> {
    let (confirm, pending) = match freeze {
        FreezeOutcome::Answered => (false, None),
        FreezeOutcome::Uncertain(pending) => (true, pending),
    };
    let undo = Undoing {
        attempt: Window::FREEZE,
        guard: Window::FREEZE,
        confirm,
        pending,
    };
    let Err((guard, last, budget)) = undo_window(hv, uuid, settings, job, undo).await else {
        return Ok(());
    };
    let mut err = SnapshotError::new(
        Kind::ThawFailed,
        format!(
            "the guest could not be confirmed thawed within {} ms ({last}); it may still be \
             frozen: a thaw guard keeps thawing it for as long as the domain runs \
             (daemon.status guests_at_risk), and the domain takes no new snapshot until then",
            budget.as_millis()
        ),
    );
    err.guard = Some(Box::new(guard));
    Err(err)
}

/// What [`undo_window`] undoes.
pub(super) struct Undoing {
    /// What each attempt undoes.
    pub attempt: Window,
    /// What a guard left on failure undoes (a resume's guard thaws too
    /// when the job froze).
    pub guard: Window,
    /// Ask the agent from the first attempt on (after a failed one, it is
    /// always asked).
    pub confirm: bool,
    /// A freeze or pause call of ours still running: it may still land.
    pub pending: Option<PendingFreeze>,
}

/// Undo the window, retrying every 250 ms within the request's budget (the
/// agent timeout plus a second). Not confirmed by then: a guard is armed;
/// it, the last reason and the budget are the error.
pub(super) async fn undo_window(
    hv: &Arc<dyn Hypervisor>,
    uuid: &str,
    settings: &Settings,
    job: &Job<'_>,
    undo: Undoing,
) -> Result<(), (guard::GuardInfo, String, Duration)> {
    let budget = settings.agent_timeout + Duration::from_secs(1);
    let until = Instant::now() + budget;
    let Undoing {
        attempt,
        guard: guard_window,
        mut confirm,
        mut pending,
    } = undo;
    let mut in_flight = None;
    let last = loop {
        let left = until.saturating_duration_since(Instant::now());
        let outcome = guard::attempt(hv, uuid, attempt, confirm, left, &mut in_flight).await;
        // after a failed attempt, only the agent's own word counts
        confirm = true;
        if pending
            .as_ref()
            .is_some_and(tokio::task::JoinHandle::is_finished)
        {
            pending = None;
        }
        let why = match outcome {
            guard::Thaw::Gone => return Ok(()),
            guard::Thaw::Confirmed if pending.is_none() => return Ok(()),
            guard::Thaw::Confirmed => "a call of ours is still running".to_string(),
            guard::Thaw::NotYet(why) => why,
            // out of reach: the guard reports it
            guard::Thaw::Departed(why) => break why,
        };
        if Instant::now() + Duration::from_millis(250) >= until {
            break why;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let guards = &job.hooks().guards;
    let guard = guards
        .arm(
            uuid,
            job.id(),
            last.clone(),
            guard_window,
            pending,
            in_flight,
        )
        .await;
    Err((guard, last, budget))
}

/// The cause stays the error; a failed thaw is the more urgent news.
fn with_thaw_outcome(cause: SnapshotError, thawed: Result<(), SnapshotError>) -> SnapshotError {
    match thawed {
        Ok(()) => cause,
        Err(thaw_err) => {
            let mut err = SnapshotError::new(
                Kind::ThawFailed,
                format!("{}; after: {}", thaw_err.message, cause.message),
            );
            err.guard = thaw_err.guard;
            err
        }
    }
}
