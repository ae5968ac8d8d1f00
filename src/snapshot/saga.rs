//! Compensation as data: every step that leaves something in Ceph records how
//! to undo it *before* it acts; a failure undoes the completed steps in
//! reverse. Undo steps tolerate "already gone", so recording early is safe.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{blocking, ownership};
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
    /// Remove an image this job created: its snapshots, then the image —
    /// once it is proven this job's ([`ownership::made_by_job`]).
    CreatedImage {
        /// The image.
        spec: ImageSpec,
        /// The source it was cloned from.
        source: ImageSpec,
        /// The job's temporary snapshot on the source.
        temp: String,
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
    /// The job, and where its late calls go when the rollback cannot wait
    /// for them: recovery waits for them before it removes anything.
    job_id: String,
    late: Arc<LateCalls>,
}

/// The longest a rollback waits for a late call before it leaves the undo
/// to recovery (which waits for the call as long as it runs): the answer
/// is not held by a stalled cluster.
const LATE_WAIT: Duration = Duration::from_secs(3);

/// Calls abandoned at their deadline that may still create something in
/// Ceph, by job: recovery must not conclude a job while one of them runs,
/// or what it makes when it lands would be left behind.
#[derive(Debug, Default)]
pub struct LateCalls(std::sync::Mutex<Vec<(String, Pending)>>);

impl LateCalls {
    fn add(&self, job_id: &str, call: Pending) {
        let mut calls = self.0.lock().unwrap_or_else(|p| p.into_inner());
        calls.retain(|(_, c)| !c.is_finished());
        calls.push((job_id.to_string(), call));
    }

    /// Whether a late call of `job_id` still runs.
    pub fn running(&self, job_id: &str) -> bool {
        let mut calls = self.0.lock().unwrap_or_else(|p| p.into_inner());
        calls.retain(|(_, c)| !c.is_finished());
        calls.iter().any(|(id, _)| id == job_id)
    }
}

impl Saga {
    /// An empty log for job `job_id` against `store`; late calls the
    /// rollback cannot wait for go to `late`.
    pub fn new(
        store: Arc<dyn ImageStore>,
        deadline: Duration,
        job_id: &str,
        late: Arc<LateCalls>,
    ) -> Self {
        Saga {
            store,
            deadline,
            steps: Vec::new(),
            job_id: job_id.to_string(),
            late,
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

    /// Attach a late snapshot call to the undo of the temporary snapshot on
    /// the source `spec` (its snapshots are taken concurrently).
    pub fn set_pending_for_snapshot(&mut self, spec: &ImageSpec, late: Pending) {
        for step in self.steps.iter_mut().rev() {
            if let Undo::TempSnapshot { image, pending, .. } = step {
                if image.spec() == spec {
                    *pending = Some(late);
                    return;
                }
            }
        }
    }

    /// Attach a late call to the undo of the image `spec` (a flatten that
    /// stalled), so rollback waits for it before removing the image.
    pub fn set_pending_for(&mut self, spec: &ImageSpec, late: Pending) {
        for step in self.steps.iter_mut().rev() {
            if let Undo::CreatedImage {
                spec: s, pending, ..
            } = step
            {
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
                self.wait_for(&what, pending).await?;
                self.call(&what, move || image.remove_snapshot(&snap, true))
                    .await
            }
            Undo::CreatedImage {
                spec,
                source,
                temp,
                pending,
            } => {
                let what = format!("remove image {spec}");
                self.wait_for(&what, pending).await?;
                let (store, job_id) = (Arc::clone(&self.store), self.job_id.clone());
                self.call(&what, move || {
                    remove_if_made_by(store.as_ref(), &spec, &job_id, &source, &temp).map(drop)
                })
                .await
            }
        }
    }

    /// Let a late call land (or fail) before undoing what it may have
    /// made. Still running after a short wait: the undo is left to
    /// recovery, which waits for the call (it is registered in `late`).
    async fn wait_for(&self, what: &str, pending: Option<Pending>) -> Result<(), String> {
        let Some(mut handle) = pending else {
            return Ok(());
        };
        let wait = self.deadline.min(LATE_WAIT);
        if tokio::time::timeout(wait, &mut handle).await.is_ok() {
            return Ok(());
        }
        self.late.add(&self.job_id, handle);
        Err(format!(
            "{what}: the call it undoes is still running in Ceph after {} ms; recovery \
             undoes it once that call ends",
            wait.as_millis()
        ))
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

/// Remove `spec` with its snapshots if job `job_id` provably made it (a
/// clone of `source@temp`, or marked by the job); whether it did. An image
/// someone else made under that name meanwhile stays, as does a missing one.
pub fn remove_if_made_by(
    store: &dyn ImageStore,
    spec: &ImageSpec,
    job_id: &str,
    source: &ImageSpec,
    temp: &str,
) -> Result<bool, RbdError> {
    let image = match store.open(spec) {
        Ok(image) => image,
        Err(e) if e.kind == RbdErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !ownership::made_by_job(image.as_ref(), job_id, source, temp)? {
        tracing::warn!(image = %spec, job_id,
            "not removing: the image under that name is not this job's");
        return Ok(false);
    }
    drop(image);
    remove_image_and_snapshots(store, spec)?;
    Ok(true)
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
