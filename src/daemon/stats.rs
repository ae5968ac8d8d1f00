//! Counters and the freeze-window distribution for `daemon.status` and the
//! `metrics` method.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// Freeze windows kept for the percentiles.
const WINDOWS: usize = 1024;

/// Upper bounds of the freeze-window histogram, seconds. Measured: 60-270 ms
/// on the test bed's monitor (paxos propose interval 0.01 s), about 0.7 s
/// per snapshot id on Ceph's default (1 s); the default freeze deadline is
/// 5 s.
pub const FREEZE_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
];

/// A cumulative histogram of freeze windows since start.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Windows at or under each bound of [`FREEZE_BUCKETS`].
    pub buckets: [AtomicU64; FREEZE_BUCKETS.len()],
    /// Sum of all windows, ms.
    pub sum_ms: AtomicU64,
    /// Windows observed.
    pub count: AtomicU64,
}

/// What the daemon counts.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    errors: AtomicU64,
    snapshots_succeeded: AtomicU64,
    snapshots_failed: AtomicU64,
    windows: Mutex<VecDeque<u64>>,
    /// Freeze windows since start.
    pub histogram: Histogram,
    /// Failed snapshot jobs by error kind.
    failed_kinds: Mutex<BTreeMap<&'static str, u64>>,
    /// Bytes copied by flattens since start.
    flatten_bytes: AtomicU64,
}

/// Counters as reported.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
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

    /// A snapshot job ended: `failed` with its error kind, or not;
    /// `window_ms` for the frozen ones.
    pub fn snapshot(&self, failed: Option<&'static str>, window_ms: Option<u64>) {
        match failed {
            None => self.snapshots_succeeded.fetch_add(1, Ordering::Relaxed),
            Some(kind) => {
                *self
                    .failed_kinds
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(kind)
                    .or_default() += 1;
                self.snapshots_failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        if let Some(ms) = window_ms {
            let secs = ms as f64 / 1000.0;
            for (bound, count) in FREEZE_BUCKETS.iter().zip(&self.histogram.buckets) {
                if secs <= *bound {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.histogram.sum_ms.fetch_add(ms, Ordering::Relaxed);
            self.histogram.count.fetch_add(1, Ordering::Relaxed);
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            if windows.len() == WINDOWS {
                windows.pop_front();
            }
            windows.push_back(ms);
        }
    }

    /// Bytes a flatten copied.
    pub fn flattened(&self, bytes: u64) {
        self.flatten_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes copied by flattens since start.
    pub fn flatten_bytes(&self) -> u64 {
        self.flatten_bytes.load(Ordering::Relaxed)
    }

    /// Failed snapshot jobs by error kind.
    pub fn failed_kinds(&self) -> BTreeMap<&'static str, u64> {
        self.failed_kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
            stats.snapshot(None, Some(ms));
        }
        stats.snapshot(Some("image_exists"), None);
        assert_eq!(stats.failed_kinds().get("image_exists"), Some(&1));
        let h = &stats.histogram;
        assert_eq!(h.count.load(Ordering::Relaxed), 100);
        assert_eq!(h.buckets[0].load(Ordering::Relaxed), 50, "<= 50 ms");
        assert_eq!(h.buckets[1].load(Ordering::Relaxed), 100, "<= 100 ms");
        assert_eq!(h.sum_ms.load(Ordering::Relaxed), 5050);
        let p = stats.freeze_windows();
        assert_eq!(
            (p.count, p.p50, p.p90, p.p99, p.max),
            (100, 50, 90, 99, 100)
        );
        assert_eq!(stats.counters().snapshots_failed, 1);
    }
}
