//! Flattening a new image, three ways: in this daemon with progress (for
//! `sync`, before the answer, and `background`, after it), each waiting for
//! one of the host's flatten slots first; or as a Ceph manager task (for
//! `cluster`), which this module queues and then follows through the
//! manager's task list. A cancel stops the flatten within about a second:
//! librbd checks our progress callback between objects, and a manager task
//! is cancelled through the manager.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::saga::Pending;
use super::{JobHooks, Phase, Progress, Settings, SnapshotError, SnapshotErrorKind as Kind};
use crate::rbd::{Image, ImageSpec, ImageStore, RbdErrorKind};

/// How often a running flatten is checked for stall, deadline and cancel.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// How often a manager task is polled.
const POLL_TASK: Duration = Duration::from_secs(1);

/// A flatten that did not complete: why, and the librbd call still running
/// (stalled: its thread is told to stop when it wakes), which must end
/// before the image can be removed.
#[derive(Debug)]
pub struct Stopped {
    /// Why.
    pub error: SnapshotError,
    /// The flatten call, when it is still running.
    pub running: Option<Pending>,
}

impl From<SnapshotError> for Stopped {
    fn from(error: SnapshotError) -> Self {
        Stopped {
            error,
            running: None,
        }
    }
}

fn cancelled(dest: &ImageSpec) -> SnapshotError {
    SnapshotError::new(
        Kind::Cancelled,
        format!("the flatten of {dest} was cancelled"),
    )
}

/// Flatten `dest` (through `image` when the job has it open) in this
/// daemon, once a slot is free, with progress in
/// bytes (librbd counts objects). No progress for `flatten_stall` (an OSD
/// gone: librbd then waits, whatever the client timeouts) or no end within
/// `flatten_deadline` fails it.
pub async fn local(
    store: &Arc<dyn ImageStore>,
    dest: &ImageSpec,
    image: Option<Arc<dyn Image>>,
    settings: &Settings,
    hooks: &JobHooks,
) -> Result<(), Stopped> {
    let sink = Arc::clone(&hooks.progress);
    let _slot = hooks
        .slots
        .acquire(&hooks.cancel, |position| {
            sink(Progress {
                position: Some(position),
                ..Progress::new(Phase::Queued, 0, 0)
            })
        })
        .await
        .ok_or_else(|| cancelled(dest))?;
    let stalled = Arc::new(AtomicBool::new(false));
    let last_progress = Arc::new(Mutex::new(Instant::now()));
    let mut handle = spawn_flatten(store, dest, image, hooks, &stalled, &last_progress);
    let started = Instant::now();
    loop {
        tokio::select! {
            joined = &mut handle => {
                return match joined {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) if e.kind == RbdErrorKind::Cancelled => Err(cancelled(dest).into()),
                    Ok(Err(e)) => Err(SnapshotError::rbd(&e).into()),
                    Err(e) => Err(SnapshotError::new(Kind::Ceph, format!("flatten task failed: {e}")).into()),
                };
            }
            _ = tokio::time::sleep(WATCH_EVERY) => {}
        }
        let quiet = last_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        let message = if quiet > settings.flatten_stall {
            format!(
                "the flatten of {dest} made no progress for {} s (is an OSD down?)",
                quiet.as_secs()
            )
        } else if started.elapsed() > settings.flatten_deadline {
            format!(
                "the flatten of {dest} did not finish within {} s",
                settings.flatten_deadline.as_secs()
            )
        } else {
            continue;
        };
        stalled.store(true, Ordering::SeqCst);
        return Err(Stopped {
            error: SnapshotError::new(Kind::CephUnavailable, message),
            running: Some(handle),
        });
    }
}

fn spawn_flatten(
    store: &Arc<dyn ImageStore>,
    dest: &ImageSpec,
    image: Option<Arc<dyn Image>>,
    hooks: &JobHooks,
    stalled: &Arc<AtomicBool>,
    last_progress: &Arc<Mutex<Instant>>,
) -> Pending {
    let (store, dest) = (Arc::clone(store), dest.clone());
    let (sink, cancel) = (Arc::clone(&hooks.progress), Arc::clone(&hooks.cancel));
    let (stop, seen) = (Arc::clone(stalled), Arc::clone(last_progress));
    let flatten = move || {
        let image = match image {
            Some(image) => image,
            None => store.open(&dest)?,
        };
        let bytes = image.size()?;
        let mut report = move |done: u64, total: u64| {
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            let done_bytes = if total == 0 {
                bytes
            } else {
                (u128::from(bytes) * u128::from(done) / u128::from(total)) as u64
            };
            sink(Progress::new(Phase::Flatten, done_bytes, bytes));
            !cancel.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst)
        };
        image.flatten(&mut report)
    };
    match crate::owners::FLATTEN.spawn(flatten) {
        Ok(handle) => handle,
        Err(full) => tokio::spawn(async move {
            Err(crate::rbd::RbdError::new(
                "flatten",
                "owner",
                RbdErrorKind::Unavailable,
                full,
            ))
        }),
    }
}

/// Queue `dest`'s flatten with the Ceph manager; the task id.
pub async fn queue_task(
    store: &Arc<dyn ImageStore>,
    dest: &ImageSpec,
    settings: &Settings,
) -> Result<String, SnapshotError> {
    let (store, dest) = (Arc::clone(store), dest.clone());
    super::blocking::on_owner(
        &crate::owners::MANAGER,
        "mgr flatten",
        settings.call_deadline,
        move || store.add_flatten_task(&dest),
    )
    .await
}

/// Follow the manager's flatten of `dest` until the task leaves the list,
/// then check the image really is flattened. A cancel cancels the task.
/// One poll at a time: a manager busy flattening can take tens of seconds
/// to answer, and is waited for rather than asked again; errors (a manager
/// fail-over) are retried until `flatten_deadline`.
pub async fn follow_task(
    store: &Arc<dyn ImageStore>,
    dest: &ImageSpec,
    task_id: &str,
    settings: &Settings,
    hooks: &JobHooks,
) -> Result<(), SnapshotError> {
    let started = Instant::now();
    let size = image_size(store, dest, settings).await.unwrap_or(0);
    let mut cancel_sent = false;
    let mut poll: Option<tokio::task::JoinHandle<_>> = None;
    loop {
        if hooks.cancel.load(Ordering::SeqCst) && !cancel_sent {
            let (s, id) = (Arc::clone(store), task_id.to_string());
            // not waited for beyond the call deadline: the polls see its effect
            let cancelling = crate::owners::MANAGER
                .call(settings.call_deadline, move || s.cancel_flatten_task(&id))
                .await;
            if let Ok(Err(e)) = cancelling {
                return Err(SnapshotError::rbd(&e));
            }
            cancel_sent = true;
        }
        let running = poll.get_or_insert_with(|| {
            let (s, id) = (Arc::clone(store), task_id.to_string());
            crate::owners::MANAGER
                .spawn(move || s.flatten_task(&id))
                .unwrap_or_else(|full| {
                    tokio::spawn(async move {
                        Err(crate::rbd::RbdError::new(
                            "task poll",
                            "manager",
                            RbdErrorKind::Unavailable,
                            full,
                        ))
                    })
                })
        });
        if let Ok(joined) = tokio::time::timeout(POLL_TASK, running).await {
            poll = None;
            match joined {
                Ok(Ok(None)) => break,
                Ok(Ok(Some(task))) => {
                    let done = (task.progress.clamp(0.0, 1.0) * size as f64) as u64;
                    let phase = if task.in_progress {
                        Phase::Flatten
                    } else {
                        Phase::Queued
                    };
                    (hooks.progress)(Progress::new(phase, done, size));
                    if let Some(why) = task.retry_message {
                        tracing::warn!(task = task_id, image = %dest, why, "the manager retries the flatten");
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(task = task_id, error = %e, "cannot read the manager's task list; retrying")
                }
                Err(e) => {
                    tracing::warn!(task = task_id, error = %e, "task list poll failed; retrying")
                }
            }
            tokio::time::sleep(POLL_TASK).await;
        }
        if started.elapsed() > settings.flatten_deadline {
            return Err(SnapshotError::new(
                Kind::Timeout,
                format!(
                    "the manager's flatten of {dest} (task {task_id}) did not finish within {} s; it goes on in the cluster",
                    settings.flatten_deadline.as_secs()
                ),
            ));
        }
    }
    if has_parent(store, dest, settings).await? {
        if cancel_sent {
            return Err(cancelled(dest));
        }
        return Err(SnapshotError::new(
            Kind::Ceph,
            format!(
                "the manager's task {task_id} ended without flattening {dest} (see the mgr log)"
            ),
        ));
    }
    (hooks.progress)(Progress::new(Phase::Flatten, size, size));
    Ok(())
}

async fn image_size(
    store: &Arc<dyn ImageStore>,
    dest: &ImageSpec,
    settings: &Settings,
) -> Result<u64, SnapshotError> {
    let (s, d) = (Arc::clone(store), dest.clone());
    super::blocking::store("size", settings.call_deadline, move || {
        s.open_read_only(&d)?.size()
    })
    .await
}

/// Whether `dest` still depends on a parent.
pub async fn has_parent(
    store: &Arc<dyn ImageStore>,
    dest: &ImageSpec,
    settings: &Settings,
) -> Result<bool, SnapshotError> {
    let (s, d) = (Arc::clone(store), dest.clone());
    super::blocking::store("parent", settings.call_deadline, move || {
        Ok(s.open_read_only(&d)?.parent()?.is_some())
    })
    .await
}

/// The flattens that follow the answer (`background`, `cluster`), image by
/// image; an image already independent (a job resumed after a restart) is
/// skipped. `tasks` are the manager tasks queued before the answer (empty
/// on resume: queueing again finds the existing task). On resume
/// (`resumed`), a flatten this daemon ran may have been killed half-way:
/// the object map is rebuilt before it goes on (see
/// [`crate::rbd::Image::rebuild_object_map`]).
pub async fn after_answer(
    store: &Arc<dyn ImageStore>,
    settings: &Settings,
    mode: super::Flatten,
    dests: &[ImageSpec],
    tasks: &[String],
    resumed: bool,
    hooks: &JobHooks,
) -> Result<(), SnapshotError> {
    for (i, dest) in dests.iter().enumerate() {
        if !has_parent(store, dest, settings).await? {
            continue;
        }
        if resumed && mode == super::Flatten::Background {
            let (s, d) = (Arc::clone(store), dest.clone());
            super::blocking::store("rebuild object map", settings.flatten_deadline, move || {
                s.open(&d)?.rebuild_object_map()
            })
            .await?;
        }
        if mode == super::Flatten::Cluster {
            let task = match tasks.get(i) {
                Some(task) => task.clone(),
                None => queue_task(store, dest, settings).await?,
            };
            follow_task(store, dest, &task, settings, hooks).await?;
        } else {
            // a stalled librbd call is told to stop and left to end alone:
            // the image stays usable either way
            local(store, dest, None, settings, hooks)
                .await
                .map_err(|stopped| stopped.error)?;
        }
    }
    Ok(())
}
