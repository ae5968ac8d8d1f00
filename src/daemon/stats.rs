//! Counters and the freeze-window distribution for `daemon.status`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// Freeze windows kept for the percentiles.
const WINDOWS: usize = 1024;

/// What the daemon counts.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    errors: AtomicU64,
    snapshots_succeeded: AtomicU64,
    snapshots_failed: AtomicU64,
    windows: Mutex<VecDeque<u64>>,
}

/// Counters as reported.
#[derive(Debug, Serialize)]
pub struct Counters {
    /// Requests answered.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// Snapshot jobs that succeeded.
    pub snapshots_succeeded: u64,
    /// Snapshot jobs that failed.
    pub snapshots_failed: u64,
}

/// Freeze-window percentiles over the last snapshots.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Percentiles {
    /// Windows measured.
    pub count: usize,
    /// Median, ms.
    pub p50: u64,
    /// 90th percentile, ms.
    pub p90: u64,
    /// 99th percentile, ms.
    pub p99: u64,
    /// Longest, ms.
    pub max: u64,
}

impl Stats {
    /// A request was answered.
    pub fn answered(&self, error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A snapshot job ended; `window_ms` for the frozen ones.
    pub fn snapshot(&self, ok: bool, window_ms: Option<u64>) {
        let counter = if ok {
            &self.snapshots_succeeded
        } else {
            &self.snapshots_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(ms) = window_ms {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            if windows.len() == WINDOWS {
                windows.pop_front();
            }
            windows.push_back(ms);
        }
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        Counters {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            snapshots_succeeded: self.snapshots_succeeded.load(Ordering::Relaxed),
            snapshots_failed: self.snapshots_failed.load(Ordering::Relaxed),
        }
    }

    /// Percentiles of the kept freeze windows (nearest rank).
    pub fn freeze_windows(&self) -> Percentiles {
        let mut sorted: Vec<u64> = self
            .windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        sorted.sort_unstable();
        let rank = |q: f64| -> u64 {
            if sorted.is_empty() {
                return 0;
            }
            let idx = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[idx]
        };
        Percentiles {
            count: sorted.len(),
            p50: rank(0.5),
            p90: rank(0.9),
            p99: rank(0.99),
            max: rank(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let stats = Stats::default();
        assert_eq!(stats.freeze_windows().count, 0);
        for ms in 1..=100 {
            stats.snapshot(true, Some(ms));
        }
        stats.snapshot(false, None);
        let p = stats.freeze_windows();
        assert_eq!(
            (p.count, p.p50, p.p90, p.p99, p.max),
            (100, 50, 90, 99, 100)
        );
        assert_eq!(stats.counters().snapshots_failed, 1);
    }
}
