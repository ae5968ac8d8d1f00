//! Blocking calls with owners. libvirt, librados, librbd, the Ceph manager
//! and the journal's fsync block their thread, and a C call cannot be
//! interrupted: a call that misses its deadline goes on running. Each backend
//! therefore has an [`Owner`] with a fixed number of threads' worth of
//! permits. A call first takes a permit (a backend whose permits are all held
//! by stuck calls refuses at once instead of eating more threads), runs on
//! tokio's blocking pool, and gives the permit back only when the C call
//! really returns. Calls abandoned at their deadline are counted; an owner
//! with too many of them reports its backend degraded.
//!
//! Thaws (and the agent's freeze status) have their own owner, [`THAW`],
//! that nothing else may use: whatever hangs elsewhere, a thaw finds a
//! thread. The sum of all capacities stays far below tokio's blocking-pool
//! limit (512), so the owners cannot starve each other either.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// How a deadline-bound call ended, when it did not return in time.
#[derive(Debug)]
pub enum Late<T> {
    /// The deadline passed; the call is still running.
    TimedOut(JoinHandle<T>),
    /// The call panicked (a bug; never expected from a C binding).
    Panicked(String),
    /// Every permit of the owner is held (by calls stuck in the backend):
    /// the call was not started.
    Saturated(String),
}

impl<T> Late<T> {
    /// What every layer reports of a late call to `what`: the one wording,
    /// and the one split between a backend that did not answer and a bug.
    pub fn error(&self, what: &str, deadline: Duration) -> LateError {
        match self {
            Late::TimedOut(_) => LateError::Unanswered(format!(
                "{what} did not answer within {} ms",
                deadline.as_millis()
            )),
            Late::Saturated(msg) => LateError::Unanswered(format!("{what}: {msg}")),
            Late::Panicked(msg) => LateError::Panicked(format!("{what} panicked: {msg}")),
        }
    }
}

/// A late call, as [`Late::error`] describes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LateError {
    /// No answer within the deadline, or not started: every permit is held
    /// by calls stuck in the backend. The backend is unavailable.
    #[error("{0}")]
    Unanswered(String),
    /// The call panicked: a bug, never expected from a C binding.
    #[error("{0}")]
    Panicked(String),
}

/// The owner of one backend's blocking calls.
#[derive(Debug)]
pub struct Owner {
    /// The backend, as `daemon.status` names it.
    name: &'static str,
    /// Most calls running at once.
    capacity: usize,
    permits: Arc<Semaphore>,
    /// Calls past their deadline, still running.
    stuck: Arc<AtomicUsize>,
    /// Calls that ever missed their deadline.
    abandoned: Arc<AtomicU64>,
    /// This many stuck calls mark the backend degraded.
    degraded_at: usize,
}

/// An owner as `daemon.status` reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct OwnerStatus {
    /// Most calls at once.
    pub capacity: usize,
    /// Calls running now.
    pub running: usize,
    /// Calls running past their deadline now.
    pub stuck: usize,
    /// Calls abandoned at their deadline since start.
    pub abandoned_total: u64,
    /// Whether stuck calls reached the threshold.
    pub degraded: bool,
}

thread_local! {
    /// Set on the threads that run owned calls: there, blocking is the point.
    static OWNED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread may block: an owner's call runs on it, or no async
/// runtime is around. Drop impls that must block (closing an image) ask.
pub fn may_block() -> bool {
    OWNED.with(std::cell::Cell::get) || tokio::runtime::Handle::try_current().is_err()
}

/// Run `call` marked as an owned call.
fn owned<T>(call: impl FnOnce() -> T) -> T {
    OWNED.with(|owned| owned.set(true));
    call()
}

/// Running: the waiter still waits; Abandoned: the waiter gave up; Done.
const RUNNING: u8 = 0;
const ABANDONED: u8 = 1;
const DONE: u8 = 2;

/// Travels with the call onto its thread: gives the permit back and
/// settles the stuck count when the call ends, however it ends.
struct Ticket {
    _permit: OwnedSemaphorePermit,
    state: Arc<AtomicU8>,
    stuck: Arc<AtomicUsize>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.state.swap(DONE, Ordering::SeqCst) == ABANDONED {
            self.stuck.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Owner {
    /// An owner of `capacity` calls, degraded from `degraded_at` stuck ones.
    pub fn new(name: &'static str, capacity: usize, degraded_at: usize) -> Owner {
        Owner {
            name,
            capacity,
            permits: Arc::new(Semaphore::new(capacity)),
            stuck: Arc::default(),
            abandoned: Arc::default(),
            degraded_at,
        }
    }

    /// The backend's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Run `call` with a deadline covering the wait for a permit and the
    /// call itself.
    pub async fn call<T, F>(&self, deadline: Duration, call: F) -> Result<T, Late<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let started = Instant::now();
        let permit =
            match tokio::time::timeout(deadline, Arc::clone(&self.permits).acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => return Err(Late::Saturated(self.saturated())),
            };
        let state = Arc::new(AtomicU8::new(RUNNING));
        let ticket = Ticket {
            _permit: permit,
            state: Arc::clone(&state),
            stuck: Arc::clone(&self.stuck),
        };
        let mut handle = tokio::task::spawn_blocking(move || {
            let _ticket = ticket;
            owned(call)
        });
        let left = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, &mut handle).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(join)) => Err(Late::Panicked(join.to_string())),
            Err(_) => {
                if state
                    .compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    self.stuck.fetch_add(1, Ordering::SeqCst);
                    self.abandoned.fetch_add(1, Ordering::SeqCst);
                }
                Err(Late::TimedOut(handle))
            }
        }
    }

    /// Start `call` now if a permit is free; the caller bounds the wait and
    /// keeps the handle of a call that outlives it (it shows as running).
    pub fn spawn<T, F>(&self, call: F) -> Result<JoinHandle<T>, String>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| self.saturated())?;
        let ticket = Ticket {
            _permit: permit,
            state: Arc::new(AtomicU8::new(RUNNING)),
            stuck: Arc::clone(&self.stuck),
        };
        Ok(tokio::task::spawn_blocking(move || {
            let _ticket = ticket;
            owned(call)
        }))
    }

    fn saturated(&self) -> String {
        format!(
            "{} is not answering: all {} of its call slots are held ({} stuck past their deadline)",
            self.name,
            self.capacity,
            self.stuck.load(Ordering::SeqCst)
        )
    }

    /// Usage, for `daemon.status`.
    pub fn status(&self) -> OwnerStatus {
        let stuck = self.stuck.load(Ordering::SeqCst);
        OwnerStatus {
            capacity: self.capacity,
            running: self.capacity - self.permits.available_permits(),
            stuck,
            abandoned_total: self.abandoned.load(Ordering::SeqCst),
            degraded: stuck >= self.degraded_at,
        }
    }
}

/// libvirt calls other than thaws: lookups, freezes, agent set-up.
pub static LIBVIRT: LazyLock<Owner> = LazyLock::new(|| Owner::new("libvirt", 16, 4));
/// Thaws and freeze-status checks only: never starved by anything else.
pub static THAW: LazyLock<Owner> = LazyLock::new(|| Owner::new("thaw", 8, 4));
/// librados and librbd calls (snapshots, clones, opens, removals).
pub static CEPH: LazyLock<Owner> = LazyLock::new(|| Owner::new("ceph", 32, 8));
/// Whole flattens: long by nature, bounded by the flatten slots too.
pub static FLATTEN: LazyLock<Owner> = LazyLock::new(|| Owner::new("flatten", 64, 64));
/// Ceph manager commands (task add, list, cancel), on their own connection.
pub static MANAGER: LazyLock<Owner> = LazyLock::new(|| Owner::new("manager", 4, 2));
/// Journal appends, fsyncs and compaction.
pub static JOURNAL: LazyLock<Owner> = LazyLock::new(|| Owner::new("journal", 4, 1));
/// Writes of the metrics textfile: one at a time, never the journal's.
pub static METRICS: LazyLock<Owner> = LazyLock::new(|| Owner::new("metrics", 1, 1));

/// Run a journal write on the journal's owner. No deadline to abandon it
/// at (a write not known durable must not be acted upon), but never on an
/// async worker: a full disk or a slow device holds a blocking thread.
pub async fn journal_write<F>(call: F) -> Result<(), String>
where
    F: FnOnce() -> Result<(), String> + Send + 'static,
{
    let deadline = Duration::from_secs(3600);
    match JOURNAL.call(deadline, call).await {
        Ok(outcome) => outcome,
        Err(late) => Err(late.error("the journal write", deadline).to_string()),
    }
}

/// Every owner, for `daemon.status`.
pub fn all() -> [&'static Owner; 7] {
    [
        &LIBVIRT, &THAW, &CEPH, &FLATTEN, &MANAGER, &JOURNAL, &METRICS,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stuck_call_holds_its_permit_until_it_really_returns() {
        let owner = Owner::new("test", 1, 1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let late = owner
            .call(Duration::from_millis(50), move || rx.recv().is_ok())
            .await;
        let Err(Late::TimedOut(handle)) = late else {
            panic!("expected a timeout");
        };
        let status = owner.status();
        assert_eq!(
            (status.running, status.stuck, status.abandoned_total),
            (1, 1, 1)
        );
        assert!(status.degraded);
        // full: the next call is refused, not queued behind the stuck one
        let refused = owner.call(Duration::from_millis(50), || 1).await;
        assert!(matches!(refused, Err(Late::Saturated(_))));
        tx.send(()).expect("release");
        assert!(handle.await.expect("join"));
        let status = owner.status();
        assert_eq!((status.running, status.stuck), (0, 0));
        assert!(!status.degraded);
        assert_eq!(owner.call(Duration::from_secs(1), || 2).await.ok(), Some(2));
    }

    #[tokio::test]
    async fn spawn_refuses_when_full() {
        let owner = Owner::new("test", 1, 1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let held = owner.spawn(move || rx.recv().is_ok()).expect("first");
        assert!(owner.spawn(|| true).is_err());
        tx.send(()).expect("release");
        assert!(held.await.expect("join"));
        assert!(owner.spawn(|| true).is_ok());
    }
}
