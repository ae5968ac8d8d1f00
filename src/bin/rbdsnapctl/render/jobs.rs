//! The `jobs` views: a table of all jobs, or one job field by field.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{duration, locations, number, phase_progress, snapshot_summary, table, text};

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A Unix time in whole seconds (the daemon sends fractions).
fn unix(v: &Value, key: &str) -> Option<u64> {
    number(v, key)
}

/// How long a job ran (or has been running), to a tenth of a second when
/// short: most snapshots of small images take well under a second.
fn job_duration(job: &Value, now: u64) -> String {
    let time = |key| job.get(key).and_then(Value::as_f64);
    let Some(start) = time("started_unix") else {
        return "?".into();
    };
    let end = time("finished_unix").unwrap_or(now as f64);
    let secs = (end - start).max(0.0);
    if secs < 10.0 {
        format!("{secs:.1}s")
    } else {
        duration(secs as u64)
    }
}

/// How far a running job got; nothing once it ended (its last report is
/// stale then: a finished job's phase counter is not meaningful).
fn job_progress(job: &Value) -> String {
    if job.get("state").and_then(Value::as_str) != Some("running") {
        return String::new();
    }
    let phase = text(job, "phase");
    let done = number(job, "done").unwrap_or(0);
    let total = number(job, "total").unwrap_or(0);
    phase_progress(&phase, done, total)
}

/// The `jobs` table.
pub fn jobs_table(result: &Value, now: Option<u64>) -> String {
    let now = now.unwrap_or_else(now_unix);
    let jobs = result.get("jobs").and_then(Value::as_array);
    let Some(jobs) = jobs.filter(|j| !j.is_empty()) else {
        return "no jobs\n".into();
    };
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let started = unix(job, "started_unix").map_or_else(
                || "?".into(),
                |t| format!("{} ago", duration(now.saturating_sub(t))),
            );
            vec![
                text(job, "job_id"),
                text(job, "state"),
                text(job, "domain"),
                text(job, "image"),
                text(job, "phase"),
                job_progress(job),
                started,
                job_duration(job, now),
            ]
        })
        .collect();
    table(
        &[
            "JOB", "STATE", "DOMAIN", "IMAGE", "PHASE", "PROGRESS", "STARTED", "TOOK",
        ],
        &rows,
    )
}

/// One job, field by field.
pub fn job_detail(job: &Value, now: Option<u64>) -> String {
    let now = now.unwrap_or_else(now_unix);
    let mut rows = vec![
        ("job", text(job, "job_id")),
        ("state", text(job, "state")),
        ("domain", text(job, "domain")),
        ("image", text(job, "image")),
        (
            "phase",
            format!("{} {}", text(job, "phase"), job_progress(job))
                .trim_end()
                .to_string(),
        ),
    ];
    if let Some(t) = unix(job, "started_unix") {
        rows.push((
            "started",
            format!("{t} ({} ago)", duration(now.saturating_sub(t))),
        ));
    }
    if let Some(t) = unix(job, "finished_unix") {
        rows.push(("finished", format!("{t} (took {})", job_duration(job, now))));
    }
    if let Some(result) = job.get("result").filter(|r| !r.is_null()) {
        rows.extend(locations(result).into_iter().map(|l| ("location", l)));
        rows.push((
            "summary",
            snapshot_summary(result)
                .lines()
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    if let Some(error) = job.get("error").filter(|e| !e.is_null()) {
        let kind = error
            .pointer("/data/kind")
            .and_then(Value::as_str)
            .unwrap_or("?");
        rows.push(("error", format!("{} ({kind})", text(error, "message"))));
        let failures = error
            .pointer("/data/rollback_failures")
            .and_then(Value::as_array);
        for failure in failures.into_iter().flatten() {
            rows.push((
                "left behind",
                failure
                    .as_str()
                    .map_or_else(|| failure.to_string(), str::to_string),
            ));
        }
    }
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "{key:<12}{value}");
    }
    out
}
