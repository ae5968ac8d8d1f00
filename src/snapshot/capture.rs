//! The freeze window: freeze → temporary snapshot of every disk → thaw, and
//! nothing else. The thaw happens on every path that attempted a freeze,
//! also when the freeze call failed or timed out (a late freeze can still
//! land in the guest), and the guest's own freeze status is checked when the
//! thaw call fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::blocking::{with_deadline, Late};
use super::preflight::Plan;
use super::saga::{Saga, Undo};
use super::workflow::Job;
use super::Step;
use super::{Consistency, QuiescePolicy, Settings, SnapshotError, SnapshotErrorKind as Kind};
use crate::libvirt::{FreezeStatus, Hypervisor, LibvirtErrorKind};

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
    policy: QuiescePolicy,
    snap: &str,
    saga: &mut Saga,
    job: &Job<'_>,
) -> Result<Captured, SnapshotError> {
    let uuid = plan.domain.uuid.as_str();
    let mut reason = plan.freeze.as_ref().err().cloned();
    let mut frozen = 0;
    let attempt_freeze = plan.freeze.is_ok();
    if attempt_freeze {
        job.record(&Step::Freeze)?;
    }
    // the window is the guest's: from the freeze call to the thaw's answer,
    // without our own journal writes on either side
    let window = Instant::now();
    if attempt_freeze {
        match freeze(hv, uuid, settings.freeze_deadline).await {
            Ok(0) => reason = Some("the guest agent froze no filesystem".to_string()),
            Ok(n) => frozen = n,
            Err(err) => {
                // a failed or late freeze may still have frozen something
                let thawed = thaw_noted(hv, uuid, settings, job, true).await.map(drop);
                if policy == QuiescePolicy::Required {
                    return Err(with_thaw_outcome(err, thawed));
                }
                thawed?;
                reason = Some(format!("freeze failed: {}", err.message));
            }
        }
    }
    let freeze_ms = ms(window.elapsed());
    let snap_started = Instant::now();
    // frozen: the snapshots must fit in what is left of the freeze deadline
    let snap_deadline = if frozen > 0 {
        settings.freeze_deadline.saturating_sub(window.elapsed())
    } else {
        settings.call_deadline
    };
    job.checkpoint("frozen");
    let snapped = snapshot_all(plan, snap, snap_deadline, saga).await;
    job.checkpoint("snapshotted");
    let snap_ms = ms(snap_started.elapsed());
    let thaw_started = Instant::now();
    let mut window_end = thaw_started;
    if attempt_freeze {
        let thawed = thaw_noted(hv, uuid, settings, job, false).await;
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
    })
}

async fn freeze(
    hv: &Arc<dyn Hypervisor>,
    uuid: &str,
    deadline: Duration,
) -> Result<u32, SnapshotError> {
    let (hv, id) = (Arc::clone(hv), uuid.to_string());
    match with_deadline(deadline, move || hv.freeze(&id, &[])).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => {
            let mut err = SnapshotError::libvirt(&e);
            err.kind = match err.kind {
                kind
                @ (Kind::FreezeTimeout | Kind::LibvirtUnavailable | Kind::AgentUnavailable) => kind,
                _ => Kind::FreezeFailed,
            };
            Err(err)
        }
        Err(_) => Err(SnapshotError::new(
            Kind::FreezeTimeout,
            format!(
                "the guest did not freeze within {} ms",
                deadline.as_millis()
            ),
        )),
    }
}

/// Snapshot every disk; stop at the first failure (the saga undoes the rest).
async fn snapshot_all(
    plan: &Plan,
    snap: &str,
    deadline: Duration,
    saga: &mut Saga,
) -> Result<(), SnapshotError> {
    let started = Instant::now();
    for disk in &plan.disks {
        saga.record(Undo::TempSnapshot {
            image: Arc::clone(&disk.source),
            snap: snap.to_string(),
            pending: None,
        });
        let (image, name) = (Arc::clone(&disk.source), snap.to_string());
        let left = deadline.saturating_sub(started.elapsed());
        match with_deadline(left, move || image.create_snapshot(&name)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(SnapshotError::rbd(&e)),
            Err(Late::TimedOut(handle)) => {
                saga.set_pending(handle);
                return Err(SnapshotError::new(
                    Kind::FreezeTimeout,
                    format!(
                        "snapshot of {} did not finish within the freeze deadline ({} ms)",
                        disk.source.spec(),
                        deadline.as_millis()
                    ),
                ));
            }
            Err(Late::Panicked(msg)) => return Err(SnapshotError::new(Kind::Ceph, msg)),
        }
    }
    Ok(())
}

/// Thaw, and journal that the guest is thawed (a lost record only means a
/// restart thaws once more, which is harmless). When the thaw answered.
async fn thaw_noted(
    hv: &Arc<dyn Hypervisor>,
    uuid: &str,
    settings: &Settings,
    job: &Job<'_>,
    confirm: bool,
) -> Result<Instant, SnapshotError> {
    thaw(hv, uuid, settings, confirm).await?;
    let thawed = Instant::now();
    if let Err(e) = job.record(&Step::Thawed) {
        tracing::warn!(error = %e, "guest thawed, but the journal could not record it");
    }
    Ok(thawed)
}

/// Thaw. When the freeze did not cleanly succeed (`confirm`), or the thaw
/// call fails, a freeze may still land (the agent can be busy running its
/// hook past our deadline): thaw again until the agent itself reports the
/// guest thawed, for at most `settings.thaw_confirm`. An error here means
/// the guest may still be frozen.
pub async fn thaw(
    hv: &Arc<dyn Hypervisor>,
    uuid: &str,
    settings: &Settings,
    confirm: bool,
) -> Result<(), SnapshotError> {
    let call = settings.agent_timeout + Duration::from_secs(1);
    let until = Instant::now() + settings.thaw_confirm;
    let mut last = String::new();
    loop {
        let (hv1, id) = (Arc::clone(hv), uuid.to_string());
        let thawed = match with_deadline(call, move || hv1.thaw(&id, &[])).await {
            Ok(Ok(_)) if !confirm => return Ok(()),
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                last = e.to_string();
                false
            }
            Err(_) => {
                last = format!("thaw did not answer within {} ms", call.as_millis());
                false
            }
        };
        let (hv2, id) = (Arc::clone(hv), uuid.to_string());
        match with_deadline(call, move || hv2.freeze_status(&id)).await {
            Ok(Ok(FreezeStatus::Thawed)) => return Ok(()),
            Ok(Ok(FreezeStatus::Frozen)) => last = format!("the guest reports frozen ({last})"),
            // a driver without a real agent: the thaw's own answer is all there is
            Ok(Err(e)) if e.kind == LibvirtErrorKind::Unsupported && thawed => return Ok(()),
            // busy finishing a late freeze, or restarting: ask again
            Ok(Err(e)) => last = format!("{last}; status: {e}"),
            Err(_) => last = format!("{last}; status did not answer"),
        }
        if Instant::now() >= until {
            return Err(SnapshotError::new(
                Kind::ThawFailed,
                format!(
                    "the guest could not be confirmed thawed within {} s: {last}",
                    settings.thaw_confirm.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The cause stays the error; a failed thaw is the more urgent news.
fn with_thaw_outcome(cause: SnapshotError, thawed: Result<(), SnapshotError>) -> SnapshotError {
    match thawed {
        Ok(()) => cause,
        Err(thaw_err) => SnapshotError::new(
            Kind::ThawFailed,
            format!("{}; after: {}", thaw_err.message, cause.message),
        ),
    }
}
