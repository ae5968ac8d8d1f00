//! The crash journal: an append-only file in the state directory where every
//! job announces, before it acts, what it is about to do (accepted, about to
//! freeze, about to clone…) and, at the end, how it ended. Each record is
//! fsync'd before the step runs (the directory too when the file is new), so
//! a daemon killed at any point finds on restart every guest that may be
//! frozen and every trace a job may have left ([`crate::recovery`]).
//!
//! Records are checksummed lines; a torn last record (a crash mid-write) is
//! dropped, anything else unreadable stops the start, because guessing could
//! leave a guest frozen. Compaction rewrites the file with the end records
//! of recent jobs only (kept for `request_id` retries), when no job runs.
//! A lock on the state directory keeps a second daemon out.

mod disk;
mod logs;
mod record;

pub use record::{crc32, Outcome, Record};

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::snapshot::{Step, StepLog};

/// End records kept by compaction (and so retries answered across restarts).
pub const KEEP_ENDED: usize = 1024;

/// Records appended between compactions.
const COMPACT_EVERY: usize = 256;

impl Inner {
    /// Keep the in-memory picture in step with a record.
    fn track(&mut self, record: &Record) {
        let job = record.job_id().to_string();
        match record {
            Record::Guard { domain_uuid, .. } => {
                self.guards
                    .retain(|g| guarded_domain(g) != Some(domain_uuid));
                self.guards.push(record.clone());
            }
            Record::Unguard { domain_uuid, .. } => {
                self.guards
                    .retain(|g| guarded_domain(g) != Some(domain_uuid));
            }
            Record::End { .. } => {
                self.live.retain(|(id, _)| *id != job);
                self.ended.retain(|r| r.job_id() != job);
                self.ended.push_back(record.clone());
                while self.ended.len() > self.keep_ended {
                    self.ended.pop_front();
                }
            }
            _ => match self.live.iter_mut().find(|(id, _)| *id == job) {
                Some((_, records)) => records.push(record.clone()),
                None => self.live.push((job, vec![record.clone()])),
            },
        }
    }
}

fn guarded_domain(record: &Record) -> Option<&String> {
    match record {
        Record::Guard { domain_uuid, .. } => Some(domain_uuid),
        _ => None,
    }
}

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another process holds the state directory.
    #[error("{0} is locked by another rbdsnapd (one daemon per state directory)")]
    Locked(PathBuf),
    /// A record in the middle of the file is damaged.
    #[error("{path}: record {line} is damaged; move the file away to start without it (unfinished jobs in it will not be recovered)")]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// An earlier append failed and could not be cut back.
    #[error("the journal is unusable: {0}")]
    Broken(String),
    /// An OS call failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The file and what compaction must keep.
#[derive(Debug)]
struct Inner {
    file: File,
    /// Records of jobs without an end record, by job.
    live: Vec<(String, Vec<Record>)>,
    /// The newest end records.
    ended: VecDeque<Record>,
    /// How many end records are kept.
    keep_ended: usize,
    /// Guards armed and not cleared, one per domain.
    guards: Vec<Record>,
    /// Records appended since the last compaction.
    appended: usize,
    /// Length of the file's intact records: a failed append is cut back
    /// to it, so no fragment makes the next start refuse the journal.
    len: u64,
    /// Set when a failed append could not be cut back: the file may end in
    /// a fragment, and nothing more is appended (no journal, no job).
    broken: Option<String>,
}

/// The open journal.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Held for the daemon's life: the single-instance lock.
    _lock: nix::fcntl::Flock<File>,
    /// Unit tests: make the next append write half its record, then fail
    /// as a full disk does.
    #[cfg(test)]
    pub(crate) fail_next_write: std::sync::atomic::AtomicBool,
    /// Builds with the `test-hooks` feature: the step or checkpoint to
    /// pause at (RBDSNAPD_TEST_PAUSE_AT). Always `None` in other builds.
    pause_at: Option<String>,
}

impl Journal {
    /// Lock `dir`, read the journal in it (dropping a torn tail), and open
    /// it for appending. Returns every intact record, oldest first.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<Record>), JournalError> {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| JournalError::Locked(dir.to_path_buf()))?;
        let path = dir.join("journal");
        let (records, good_len) = read(&path)?;
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        if file.metadata().map_err(io_err("stat", &path))?.len() > good_len {
            tracing::warn!(path = %path.display(), "dropping a torn last journal record");
            file.set_len(good_len).map_err(io_err("truncate", &path))?;
            file.sync_all().map_err(io_err("fsync", &path))?;
        }
        if !existed {
            sync_dir(dir)?;
        }
        let pause_at = test_pause_point();
        let mut inner = Inner {
            file,
            live: Vec::new(),
            ended: VecDeque::new(),
            keep_ended: KEEP_ENDED,
            guards: Vec::new(),
            appended: 0,
            len: good_len,
            broken: None,
        };
        for record in &records {
            inner.track(record);
        }
        let journal = Journal {
            dir: dir.to_path_buf(),
            path,
            inner: Mutex::new(inner),
            _lock: lock,
            #[cfg(test)]
            fail_next_write: std::sync::atomic::AtomicBool::new(false),
            pause_at,
        };
        Ok((journal, records))
    }

    /// Keep the last `n` end records (default [`KEEP_ENDED`]).
    pub fn keep_ended(&self, n: usize) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.keep_ended = n.max(1);
        while inner.ended.len() > inner.keep_ended {
            inner.ended.pop_front();
        }
    }

    /// Append one record and make it durable before returning. Compacts
    /// now and then, when a job ends.
    pub fn append(&self, record: &Record) -> Result<(), JournalError> {
        let line = record.to_line().map_err(|e| self.encode_error(e))?;
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &inner.broken {
            return Err(JournalError::Broken(why.clone()));
        }
        let written = write_line(&mut inner.file, &line, self.short_write_next())
            .map_err(io_err("write", &self.path))
            .and_then(|()| inner.file.sync_data().map_err(io_err("fsync", &self.path)));
        if let Err(e) = written {
            self.cut_back(&mut inner, &e);
            return Err(e);
        }
        inner.len += line.len() as u64;
        inner.track(record);
        inner.appended += 1;
        if matches!(record, Record::End { .. }) && inner.appended >= COMPACT_EVERY {
            if let Err(e) = self.compact_locked(&mut inner) {
                tracing::warn!(error = %e, "journal compaction failed; the journal keeps growing");
            }
        }
        Ok(())
    }

    /// [`Journal::append`] on the journal's owner, off the async runtime.
    pub async fn append_async(self: &Arc<Self>, record: Record) -> Result<(), String> {
        let me = Arc::clone(self);
        crate::owners::journal_write(move || me.append(&record).map_err(|e| e.to_string())).await
    }

    /// A step of a job, journalled off the async runtime.
    pub async fn record_async(self: &Arc<Self>, job_id: &str, step: Step) -> Result<(), String> {
        let (me, job_id) = (Arc::clone(self), job_id.to_string());
        crate::owners::journal_write(move || StepLog::record(me.as_ref(), &job_id, &step)).await
    }

    /// [`Journal::compact`] off the async runtime.
    pub async fn compact_async(self: &Arc<Self>) -> Result<(), String> {
        let me = Arc::clone(self);
        crate::owners::journal_write(move || me.compact().map_err(|e| e.to_string())).await
    }

    /// Unit tests: whether the next append should fail half-way.
    fn short_write_next(&self) -> bool {
        #[cfg(test)]
        {
            self.fail_next_write
                .swap(false, std::sync::atomic::Ordering::SeqCst)
        }
        #[cfg(not(test))]
        false
    }

    /// A failed append (ENOSPC, EIO) may have left part of its record:
    /// cut the file back to its intact records, or, when even that fails,
    /// stop appending so that no job acts on an unrecorded step.
    fn cut_back(&self, inner: &mut Inner, cause: &JournalError) {
        let len = inner.len;
        let cut = inner.file.set_len(len).and_then(|()| inner.file.sync_all());
        if let Err(e) = cut {
            let why = format!(
                "{cause}; cutting {} back to {len} bytes failed too ({e}): no more jobs until \
                 the daemon is restarted (the next start drops the torn record)",
                self.path.display()
            );
            tracing::error!(reason = %why, "journal unusable");
            inner.broken = Some(why);
        }
    }

    /// Rewrite the journal with only what matters: the newest end records
    /// and every record of unfinished jobs (temp file, fsync, rename, fsync
    /// the directory).
    pub fn compact(&self) -> Result<(), JournalError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.compact_locked(&mut inner)
    }

    fn compact_locked(&self, inner: &mut Inner) -> Result<(), JournalError> {
        let tmp = self.dir.join("journal.tmp");
        // the descriptor appended to from now on is opened before the
        // rename: it follows the file to its name, and no reopen can fail
        // append mode, as the journal's own descriptor: after a cut-back,
        // the next record lands at the new end, not past a hole
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err("remove", &tmp)(e))
            }
            _ => {}
        }
        let mut out = OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let mut len = 0u64;
        {
            let keep = inner
                .ended
                .iter()
                .chain(inner.live.iter().flat_map(|(_, recs)| recs.iter()))
                .chain(inner.guards.iter());
            for record in keep {
                let line = record.to_line().map_err(|e| self.encode_error(e))?;
                out.write_all(line.as_bytes())
                    .map_err(io_err("write", &tmp))?;
                len += line.len() as u64;
            }
            out.sync_all().map_err(io_err("fsync", &tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io_err("rename", &tmp))?;
        // renamed: from here on the new file is the journal, whatever fails
        inner.file = out;
        inner.len = len;
        inner.appended = 0;
        sync_dir(&self.dir)
    }

    /// The records of a job that has not ended.
    pub fn live_records(&self, job_id: &str) -> Vec<Record> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .live
            .iter()
            .find(|(id, _)| id == job_id)
            .map(|(_, recs)| recs.clone())
            .unwrap_or_default()
    }

    fn encode_error(&self, e: serde_json::Error) -> JournalError {
        JournalError::Io {
            what: "encode a record for",
            path: self.path.clone(),
            source: std::io::Error::other(e),
        }
    }

    fn pause_if_asked(&self, job_id: &str, name: &str) {
        if self.pause_at.as_deref() != Some(name) {
            return;
        }
        // tests only: announce the pause, then wait to be killed, or to go
        // on when the test removes the marker
        let marker = self.dir.join(format!("paused-at-{name}"));
        let _ = std::fs::write(&marker, job_id);
        tracing::warn!(
            job_id,
            point = name,
            "RBDSNAPD_TEST_PAUSE_AT: pausing until killed or the marker is removed"
        );
        while marker.exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        tracing::warn!(job_id, point = name, "RBDSNAPD_TEST_PAUSE_AT: going on");
    }
}

use disk::{read, sync_dir, test_pause_point, write_line};

#[cfg(test)]
mod tests;
