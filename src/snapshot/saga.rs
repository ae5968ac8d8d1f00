//! Compensation as data: every step that leaves something in Ceph records how
//! to undo it *before* it acts; a failure undoes the completed steps in
//! reverse. Undo steps tolerate "already gone", so recording early is safe.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::blocking;
use crate::rbd::{Image, ImageSpec, ImageStore, RbdError, RbdErrorKind};

/// A call that missed its deadline and may still land: waited for before
/// its effect is undone.
pub type Pending = JoinHandle<Result<(), RbdError>>;

/// One recorded undo.
#[derive(Debug)]
pub enum Undo {
    /// Remove a temporary snapshot from a source image (unprotecting it if
    /// clone v1 protected it).
    TempSnapshot {
        /// The open source image.
        image: Arc<dyn Image>,
        /// The temporary snapshot's name.
        snap: String,
        /// A create call still running past its deadline.
        pending: Option<Pending>,
    },
    /// Remove an image this job created: its snapshots, then the image.
    CreatedImage {
        /// The image.
        spec: ImageSpec,
        /// A clone call still running past its deadline.
        pending: Option<Pending>,
    },
}

/// The undo log of one job.
#[derive(Debug)]
pub struct Saga {
    store: Arc<dyn ImageStore>,
    /// Deadline of each undo call (and of waiting for a late call).
    deadline: Duration,
    steps: Vec<Undo>,
}

impl Saga {
    /// An empty log for a job against `store`.
    pub fn new(store: Arc<dyn ImageStore>, deadline: Duration) -> Self {
        Saga {
            store,
            deadline,
            steps: Vec::new(),
        }
    }

    /// Bound each undo call (and each wait for a late call) to `deadline`:
    /// when the cluster is known not to answer, a rollback attempt is short,
    /// and what it cannot undo is left to recovery.
    pub fn shorten(&mut self, deadline: Duration) {
        self.deadline = self.deadline.min(deadline);
    }

    /// Record an undo before the step it undoes acts.
    pub fn record(&mut self, undo: Undo) {
        self.steps.push(undo);
    }

    /// Attach a late call to the most recent undo, so rollback waits for it.
    pub fn set_pending(&mut self, late: Pending) {
        match self.steps.last_mut() {
            Some(Undo::TempSnapshot { pending, .. } | Undo::CreatedImage { pending, .. }) => {
                *pending = Some(late)
            }
            None => {}
        }
    }

    /// Attach a late call to the undo of the image `spec` (a flatten that
    /// stalled), so rollback waits for it before removing the image.
    pub fn set_pending_for(&mut self, spec: &ImageSpec, late: Pending) {
        for step in self.steps.iter_mut().rev() {
            if let Undo::CreatedImage { spec: s, pending } = step {
                if s == spec {
                    *pending = Some(late);
                    return;
                }
            }
        }
    }

    /// Undo every recorded step, newest first; the failures, in words.
    pub async fn rollback(mut self) -> Vec<String> {
        let mut failures = Vec::new();
        while let Some(step) = self.steps.pop() {
            if let Err(msg) = self.undo(step).await {
                failures.push(msg);
            }
        }
        failures
    }

    async fn undo(&self, step: Undo) -> Result<(), String> {
        match step {
            Undo::TempSnapshot {
                image,
                snap,
                pending,
            } => {
                let what = format!("remove snapshot {}@{snap}", image.spec());
                self.wait_for(pending).await;
                self.call(&what, move || image.remove_snapshot(&snap, true))
                    .await
            }
            Undo::CreatedImage { spec, pending } => {
                let what = format!("remove image {spec}");
                self.wait_for(pending).await;
                let store = Arc::clone(&self.store);
                self.call(&what, move || {
                    remove_image_and_snapshots(store.as_ref(), &spec)
                })
                .await
            }
        }
    }

    /// Let a late call land (or fail) before undoing what it may have made.
    async fn wait_for(&self, pending: Option<Pending>) {
        if let Some(handle) = pending {
            let _ = tokio::time::timeout(self.deadline, handle).await;
        }
    }

    async fn call<F>(&self, what: &str, f: F) -> Result<(), String>
    where
        F: FnOnce() -> Result<(), RbdError> + Send + 'static,
    {
        match blocking::ceph(self.deadline, f).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.kind == RbdErrorKind::NotFound => Ok(()),
            Ok(Err(e)) => Err(format!("{what}: {e}")),
            Err(_) => Err(format!(
                "{what}: no answer within {} ms",
                self.deadline.as_millis()
            )),
        }
    }
}

/// Remove an image and every snapshot on it (unprotecting them); an image
/// that does not exist is already undone.
pub fn remove_image_and_snapshots(
    store: &dyn ImageStore,
    spec: &ImageSpec,
) -> Result<(), RbdError> {
    let image = store.open(spec)?;
    for snap in image.snapshots()? {
        image.remove_snapshot(&snap, true)?;
    }
    drop(image);
    store.remove_image(spec)
}
