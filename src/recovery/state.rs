//! What recovery has to do and has done, for `daemon.status`: jobs waiting
//! (and why), jobs recovered, orphans the sweep found, and whether a pass
//! runs (passes never overlap, so a stuck cluster holds one pass's calls,
//! not one more every retry).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use super::{Orphan, Trail};

/// Recovery as `daemon.status` shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RecoveryStatus {
    /// Jobs a previous run left unfinished that are not recovered yet.
    pub pending: Vec<PendingStatus>,
    /// Jobs recovered since start.
    pub recovered: usize,
    /// Temporary snapshots the start-up sweep found that no journal knows.
    pub orphans: Vec<Orphan>,
}

/// A job waiting for recovery.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PendingStatus {
    /// The job.
    pub job_id: String,
    /// Its domain.
    pub domain_uuid: String,
    /// Why it waits (e.g. the cluster does not answer).
    pub reason: String,
}

/// A job waiting for recovery, and why it waits.
#[derive(Debug, Clone)]
struct PendingJob {
    trail: Trail,
    reason: String,
}

#[derive(Debug, Default)]
struct Books {
    /// Jobs not recovered yet.
    pending: Vec<PendingJob>,
    /// Jobs recovered since start.
    recovered: usize,
}

/// Recovery's state.
#[derive(Debug, Default)]
pub struct Recovery {
    books: Mutex<Books>,
    /// What the start-up sweep found.
    orphans: Mutex<Vec<Orphan>>,
    /// Set while a pass runs.
    running: AtomicBool,
}

impl Recovery {
    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is pending, recovered and orphaned.
    pub fn status(&self) -> RecoveryStatus {
        let books = self.books();
        let pending = books
            .pending
            .iter()
            .map(|p| PendingStatus {
                job_id: p.trail.job_id.clone(),
                domain_uuid: p.trail.domain_uuid.clone(),
                reason: p.reason.clone(),
            })
            .collect();
        let orphans = self
            .orphans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        RecoveryStatus {
            pending,
            recovered: books.recovered,
            orphans,
        }
    }

    /// Jobs still waiting.
    pub fn pending(&self) -> usize {
        self.books().pending.len()
    }

    /// The trails still waiting.
    pub fn pending_trails(&self) -> Vec<Trail> {
        self.books()
            .pending
            .iter()
            .map(|p| p.trail.clone())
            .collect()
    }

    /// Start a pass, unless one runs (`false` then).
    pub fn begin_pass(&self) -> bool {
        !self.running.swap(true, Ordering::SeqCst)
    }

    /// The pass is over.
    pub fn end_pass(&self) {
        self.running.store(false, Ordering::SeqCst);
    }

    /// `trail` waits, for `reason` (replacing what was known of it).
    pub fn wait(&self, trail: Trail, reason: String) {
        let mut books = self.books();
        books.pending.retain(|p| p.trail.job_id != trail.job_id);
        books.pending.push(PendingJob { trail, reason });
    }

    /// `job_id` no longer waits; with `recovered`, count it.
    pub fn done(&self, job_id: &str, recovered: bool) {
        let mut books = self.books();
        books.pending.retain(|p| p.trail.job_id != job_id);
        if recovered {
            books.recovered += 1;
        }
    }

    /// What the sweep found.
    pub fn set_orphans(&self, orphans: Vec<Orphan>) {
        *self.orphans.lock().unwrap_or_else(|p| p.into_inner()) = orphans;
    }
}
