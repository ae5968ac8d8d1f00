//! The views of the host side: a domain's disks, and the daemon's status.

use std::fmt::Write as _;

use serde_json::Value;

use super::{duration, ms, number, table, text};

/// A disk source: `pool[/namespace]/image[@snap]`, or `kind (path)`.
fn source(disk: &Value) -> String {
    let Some(src) = disk.get("source") else {
        return "?".into();
    };
    match src.get("type").and_then(Value::as_str) {
        Some("rbd") => {
            let mut s = text(src, "pool");
            if let Some(ns) = src
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                let _ = write!(s, "/{ns}");
            }
            let _ = write!(s, "/{}", text(src, "image"));
            if let Some(snap) = src
                .get("snapshot")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                let _ = write!(s, "@{snap}");
            }
            s
        }
        _ => match src.get("path").and_then(Value::as_str) {
            Some(path) => format!("{} ({path})", text(src, "kind")),
            None => text(src, "kind"),
        },
    }
}

/// The agent's state as one phrase, whatever shape the daemon gives it.
pub(super) fn agent(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "unknown".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(true)) => "connected".into(),
        Some(Value::Bool(false)) => "not connected".into(),
        Some(Value::Object(fields)) => fields
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k} {s}"),
                other => format!("{k} {other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

/// The `disks` view.
pub fn disks(result: &Value) -> String {
    let boot_disk = result.get("boot_disk").and_then(Value::as_str);
    let rows: Vec<Vec<String>> = result
        .get("disks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|disk| {
            let target = text(disk, "target");
            let order = number(disk, "boot_order").map_or_else(|| "-".into(), |n| n.to_string());
            let mark = if boot_disk == Some(target.as_str()) {
                " *"
            } else {
                ""
            };
            vec![target, format!("{order}{mark}"), source(disk)]
        })
        .collect();
    let mut out = format!(
        "domain {} ({}), {}; guest agent: {}\n",
        text(result, "name"),
        text(result, "uuid"),
        text(result, "state"),
        agent(result.get("agent")),
    );
    out.push_str(&table(&["TARGET", "BOOT", "SOURCE"], &rows));
    if boot_disk.is_some() {
        out.push_str("* boot disk: what `snapshot` takes without --disk\n");
    }
    out
}

/// One service's connectivity: `connected` or `NOT connected: why`.
fn link(v: Option<&Value>, extra: &str) -> String {
    let v = v.cloned().unwrap_or_default();
    if v.get("connected").and_then(Value::as_bool) == Some(true) {
        format!("connected{extra}")
    } else {
        format!("NOT connected: {}", text(&v, "error"))
    }
}

/// The `status` summary.
pub fn status(result: &Value) -> String {
    let uptime = number(result, "uptime_secs").map_or_else(|| "?".into(), duration);
    let degraded = if result.get("degraded").and_then(Value::as_bool) == Some(true) {
        " — DEGRADED"
    } else {
        ""
    };
    let libvirt = result.get("libvirt");
    let ceph = result.get("ceph");
    let fsid = ceph
        .map(|c| format!(", fsid {}", text(c, "fsid")))
        .unwrap_or_default();
    let counters = result.get("counters").cloned().unwrap_or_default();
    let count = |k: &str| number(&counters, k).map_or_else(|| "?".into(), |n| n.to_string());
    let fw = result.get("freeze_window_ms").cloned().unwrap_or_default();
    let window = match number(&fw, "count") {
        Some(0) | None => "no snapshots yet".to_string(),
        Some(n) => format!(
            "p50 {}, p90 {}, p99 {}, max {} ({n} snapshots)",
            ms(&fw, "p50"),
            ms(&fw, "p90"),
            ms(&fw, "p99"),
            ms(&fw, "max")
        ),
    };
    let rows = [
        (
            "daemon",
            format!(
                "rbdsnapd {}, up {uptime}{degraded}",
                text(result, "version")
            ),
        ),
        (
            "libvirt",
            format!(
                "{} {}",
                libvirt.map_or_else(|| "?".into(), |l| text(l, "uri")),
                link(libvirt, "")
            ),
        ),
        (
            "ceph",
            format!(
                "{} {}",
                ceph.map_or_else(|| "?".into(), |c| text(c, "conf")),
                link(ceph, &fsid)
            ),
        ),
        (
            "jobs",
            format!(
                "{} in flight",
                number(result, "jobs_in_flight").unwrap_or(0)
            ),
        ),
        (
            "requests",
            format!("{} ({} errors)", count("requests"), count("errors")),
        ),
        (
            "snapshots",
            format!(
                "{} succeeded, {} failed",
                count("snapshots_succeeded"),
                count("snapshots_failed")
            ),
        ),
        ("freeze", format!("window {window}")),
    ];
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "{key:<10}{value}");
    }
    out.push_str(&guests_at_risk(result));
    out
}

/// One line per guest whose thaw is not confirmed, with what to do.
fn guests_at_risk(result: &Value) -> String {
    let mut out = String::new();
    let guards = result.get("guests_at_risk").and_then(Value::as_array);
    for guard in guards.into_iter().flatten() {
        let left = if guard.get("left_host").and_then(Value::as_bool) == Some(true) {
            ", LEFT THIS HOST"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:<10}{} (job {}, {} attempts{left}): {}",
            "at risk",
            text(guard, "domain_uuid"),
            text(guard, "job_id"),
            number(guard, "attempts").unwrap_or(0),
            text(guard, "last_error")
        );
    }
    out
}
