//! Human-readable views of the daemon's results. Every function takes the
//! raw result and reads only the fields it shows, with a placeholder when
//! one is missing, so a daemon that adds or renames a field degrades a line
//! instead of breaking the command (`--json` shows everything verbatim).

use std::fmt::Write as _;

use serde_json::Value;

mod host;
mod jobs;

pub use host::{disks, status};
pub use jobs::{job_detail, jobs_table};

/// A string field, or `?`.
fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "?".into(),
        Some(other) => other.to_string(),
    }
}

/// A non-negative number field, whole or not (`uptime_secs` has a
/// fraction), truncated.
fn number(v: &Value, key: &str) -> Option<u64> {
    let n = v.get(key)?;
    n.as_u64()
        .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

fn ms(v: &Value, key: &str) -> String {
    number(v, key).map_or_else(|| "?".into(), |n| format!("{n} ms"))
}

/// Bytes with a binary unit, one decimal: `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in seconds, coarsely: `42s`, `3m 2s`, `5h 1m`, `2d 3h`.
pub fn duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {}s", secs / 60, secs % 60),
        3600..=86399 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// How far a phase got: `42% of 1.0 GiB` for a flatten (bytes), `1/2`
/// for counted phases, nothing when the total is unknown.
pub fn phase_progress(phase: &str, done: u64, total: u64) -> String {
    if total == 0 {
        String::new()
    } else if phase == "flatten" {
        format!("{}% of {}", done.saturating_mul(100) / total, bytes(total))
    } else {
        format!("{done}/{total}")
    }
}

/// Lines of a table, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The stderr summary of a `snapshot.create` result.
pub fn snapshot_summary(result: &Value) -> String {
    let timings = result.get("timings").cloned().unwrap_or_default();
    let consistency = match result.get("consistency").and_then(Value::as_str) {
        Some("filesystem") => {
            let n = number(result, "frozen_filesystems").unwrap_or(0);
            let plural = if n == 1 { "" } else { "s" };
            format!("filesystem-consistent ({n} filesystem{plural} frozen)")
        }
        Some("crash") => format!("crash-consistent: {}", text(result, "consistency_reason")),
        _ => format!("consistency {}", text(result, "consistency")),
    };
    let mut out = format!(
        "{consistency}; freeze window {}, total {} (job {})\n",
        ms(&timings, "freeze_window_ms"),
        ms(&timings, "total_ms"),
        text(result, "job_id"),
    );
    let disks = result
        .get("disks")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    match result.get("one_instant").and_then(Value::as_bool) {
        Some(false) if disks > 1 => {
            out.push_str("each disk at its own instant (no freeze covered them all, no pause)\n")
        }
        Some(true) if number(&timings, "pause_ms").is_some_and(|p| p > 0) => {
            let _ = writeln!(
                out,
                "all {disks} disks at one instant: vCPUs paused {}",
                ms(&timings, "pause_ms")
            );
        }
        _ => {}
    }
    for disk in result
        .get("disks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(parent) = disk.get("parent").and_then(Value::as_str) else {
            continue;
        };
        let _ = match result.get("flatten").and_then(Value::as_str) {
            Some(mode @ ("background" | "cluster")) => writeln!(
                out,
                "{}: usable now; flattening goes on ({mode}; `rbdsnapctl jobs {}` follows it)",
                text(disk, "image"),
                text(result, "job_id")
            ),
            _ => writeln!(
                out,
                "{}: not flattened, still a clone of {parent}",
                text(disk, "image")
            ),
        };
    }
    out
}

/// The locations a `snapshot.create` result names, one per disk.
pub fn locations(result: &Value) -> Vec<String> {
    result
        .get("disks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("location").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests;
