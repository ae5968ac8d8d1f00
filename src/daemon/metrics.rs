//! The daemon's state in the Prometheus text exposition format, for the
//! `metrics` method, `rbdsnapctl metrics` and the node_exporter textfile
//! (`metrics_textfile`, written atomically every `metrics_interval_secs`
//! and at the end of each job). Names follow Prometheus' conventions:
//! `rbdsnapd_` prefix, base units (`_seconds`, `_bytes`), `_total` counters.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::stats::FREEZE_BUCKETS;
use super::Daemon;

/// The exposition text now.
pub fn render(daemon: &Daemon) -> String {
    let mut out = Exposition::default();
    out.metric(
        "rbdsnapd_build_info",
        "gauge",
        "Always 1; the version as a label.",
        &[(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1.0)],
    );
    let libvirt = daemon.backends.libvirt_status().connected;
    let ceph = daemon.backends.ceph_status().connected;
    out.metric(
        "rbdsnapd_backend_up",
        "gauge",
        "1 while the daemon is connected to the backend.",
        &[
            ("backend=\"libvirt\"", flag(libvirt)),
            ("backend=\"ceph\"", flag(ceph)),
        ],
    );
    out.metric(
        "rbdsnapd_guests_at_risk",
        "gauge",
        "Guests that may be frozen: their thaw is not confirmed, a guard keeps thawing them.",
        &[("", daemon.guards.list().len() as f64)],
    );
    let departed = daemon.guards.list().iter().filter(|g| g.left_host).count();
    out.metric(
        "rbdsnapd_guests_at_risk_left_host",
        "gauge",
        "Guests at risk that left this host (migrated away): this daemon cannot thaw them; check them where they run, then guard.dismiss.",
        &[("", departed as f64)],
    );
    out.metric(
        "rbdsnapd_jobs_in_flight",
        "gauge",
        "Snapshot jobs running, queued ones included.",
        &[("", daemon.jobs.running() as f64)],
    );
    let (running, queued) = daemon.slots.usage();
    out.metric(
        "rbdsnapd_flattens_running",
        "gauge",
        "Flattens running on this host.",
        &[("", running as f64)],
    );
    out.metric(
        "rbdsnapd_flatten_queue_depth",
        "gauge",
        "Flattens waiting for one of this host's slots.",
        &[("", queued as f64)],
    );
    out.metric(
        "rbdsnapd_flatten_bytes_total",
        "counter",
        "Bytes copied by flattens since start.",
        &[("", daemon.stats.flatten_bytes() as f64)],
    );
    out.metric(
        "rbdsnapd_recovery_pending",
        "gauge",
        "Jobs a previous run left unfinished that recovery could not finish yet.",
        &[("", daemon.recovery.pending() as f64)],
    );
    snapshots(&mut out, daemon);
    blocking_calls(&mut out);
    out.text
}

fn snapshots(out: &mut Exposition, daemon: &Daemon) {
    let counters = daemon.stats.counters();
    let mut outcomes = vec![(
        "outcome=\"succeeded\",kind=\"\"".to_string(),
        counters.snapshots_succeeded as f64,
    )];
    for (kind, n) in daemon.stats.failed_kinds() {
        outcomes.push((format!("outcome=\"failed\",kind=\"{kind}\""), n as f64));
    }
    let labelled: Vec<(&str, f64)> = outcomes.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    out.metric(
        "rbdsnapd_snapshots_total",
        "counter",
        "Snapshot jobs ended, by outcome and error kind.",
        &labelled,
    );
    out.metric(
        "rbdsnapd_requests_total",
        "counter",
        "Requests answered, errors included.",
        &[("", counters.requests as f64)],
    );
    out.metric(
        "rbdsnapd_request_errors_total",
        "counter",
        "Requests answered with an error.",
        &[("", counters.errors as f64)],
    );
    let h = &daemon.stats.histogram;
    let name = "rbdsnapd_freeze_window_seconds";
    out.head(
        name,
        "histogram",
        "From the freeze call to the thaw's answer, per frozen snapshot.",
    );
    for (bound, count) in FREEZE_BUCKETS.iter().zip(&h.buckets) {
        let _ = writeln!(
            out.text,
            "{name}_bucket{{le=\"{bound}\"}} {}",
            count.load(Ordering::Relaxed)
        );
    }
    let count = h.count.load(Ordering::Relaxed);
    let _ = writeln!(out.text, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let sum = h.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
    let _ = writeln!(out.text, "{name}_sum {sum}");
    let _ = writeln!(out.text, "{name}_count {count}");
}

fn blocking_calls(out: &mut Exposition) {
    let statuses: Vec<(String, crate::owners::OwnerStatus)> = crate::owners::all()
        .iter()
        .map(|o| (format!("owner=\"{}\"", o.name()), o.status()))
        .collect();
    let per_owner = |value: fn(&crate::owners::OwnerStatus) -> f64| -> Vec<(&str, f64)> {
        statuses
            .iter()
            .map(|(l, s)| (l.as_str(), value(s)))
            .collect()
    };
    out.metric(
        "rbdsnapd_blocking_calls_stuck",
        "gauge",
        "Calls into libvirt or Ceph running past their deadline, per backend owner.",
        &per_owner(|s| s.stuck as f64),
    );
    out.metric(
        "rbdsnapd_blocking_calls_abandoned_total",
        "counter",
        "Calls given up at their deadline since start, per backend owner.",
        &per_owner(|s| s.abandoned_total as f64),
    );
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

/// Text being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One metric: its samples as (labels without braces, value).
    fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
        self.head(name, kind, help);
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.text, "{name} {value}");
            } else {
                let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
            }
        }
    }
}

/// Keep `path` current: every `every` and after each job, until `stopped`.
pub async fn textfile(
    daemon: Arc<Daemon>,
    path: std::path::PathBuf,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        match write_atomically(&path, render(&daemon)).await {
            Ok(()) if failing => {
                tracing::info!(path = %path.display(), "metrics textfile written again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the metrics textfile");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = daemon.metrics_changed.notified() => {}
            _ = stopped.changed() => return,
        }
    }
}

/// node_exporter's convention: write a temporary file in the same
/// directory, then rename it over the old one, so no scrape sees half. On
/// the metrics owner: a hanging file system holds one thread, not the loop.
async fn write_atomically(path: &Path, text: String) -> Result<(), String> {
    let path = path.to_path_buf();
    let write = move || -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let result = std::fs::write(&tmp, text)
            // readable by node_exporter's user, whatever the daemon's umask
            .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(|e| e.to_string())
    };
    match crate::owners::METRICS.call(TEXTFILE_DEADLINE, write).await {
        Ok(outcome) => outcome,
        Err(late) => Err(format!("{late:?}")),
    }
}

/// Longest a textfile write may take before it is given up.
const TEXTFILE_DEADLINE: Duration = Duration::from_secs(10);
