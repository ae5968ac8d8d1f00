//! Metrics as monitoring stacks take them: the `metrics` method, the
//! node_exporter textfile and `rbdsnapctl metrics` give the Prometheus text
//! format, which `promtool check metrics` accepts; the example alert rules
//! in dist/prometheus pass `promtool check rules` and their own tests.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{self, TempDir};
use serde_json::json;

fn promtool(args: &[&str], stdin: Option<&str>, dir: &Path) -> String {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; dev/setup installs it)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {said}");
    said
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_example_alert_rules_check_and_pass_their_tests() {
    let dir = repo().join("dist/prometheus");
    promtool(&["check", "rules", "rbdsnapd.rules.yml"], None, &dir);
    promtool(&["test", "rules", "rbdsnapd.rules.test.yml"], None, &dir);
}

/// The value of the sample `series` (name with labels) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn metrics_method_textfile_and_cli_give_what_promtool_accepts() {
    let Some(bed) = daemon::bed() else { return };
    let dir = TempDir::new("rbdsnapd-metrics");
    let textfile = dir.path().join("rbdsnapd.prom");
    let d = bed.start(&format!(
        "metrics_textfile = {:?}\nmetrics_interval_secs = 600",
        textfile.display().to_string()
    ));
    // written at start, readable by node_exporter's user
    let until = Instant::now() + Duration::from_secs(5);
    while !textfile.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode = std::fs::metadata(&textfile).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.ok(), Some(0o644), "{}", textfile.display());

    let image = common::unique("metrics");
    let params = json!({"domain": "rbdsnapd-test-07", "image": image, "pool": "images"});
    let mut c = d.connect();
    assert!(c.call("snapshot.create", params.clone()).is_ok());
    c.call("snapshot.create", params)
        .assert_error(1012, "image_exists", "the same image again");

    let text = c
        .call("metrics", json!({}))
        .result()
        .as_str()
        .expect("text")
        .to_string();
    promtool(&["check", "metrics"], Some(&text), dir.path());
    let expect = [
        (
            "rbdsnapd_snapshots_total{outcome=\"succeeded\",kind=\"\"}",
            1.0,
        ),
        (
            "rbdsnapd_snapshots_total{outcome=\"failed\",kind=\"image_exists\"}",
            1.0,
        ),
        ("rbdsnapd_backend_up{backend=\"ceph\"}", 1.0),
        ("rbdsnapd_backend_up{backend=\"libvirt\"}", 1.0),
        ("rbdsnapd_freeze_window_seconds_count", 1.0),
        ("rbdsnapd_freeze_window_seconds_bucket{le=\"+Inf\"}", 1.0),
        ("rbdsnapd_guests_at_risk", 0.0),
        ("rbdsnapd_recovery_pending", 0.0),
        ("rbdsnapd_jobs_in_flight", 0.0),
        (
            &format!(
                "rbdsnapd_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            ),
            1.0,
        ),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    }
    let copied = sample(&text, "rbdsnapd_flatten_bytes_total").unwrap_or(0.0);
    assert!(
        copied >= 16.0 * 1024.0 * 1024.0,
        "flatten bytes {copied}:\n{text}"
    );

    // the textfile follows at the end of the jobs, not only on its timer
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let file = std::fs::read_to_string(&textfile).unwrap_or_default();
        if sample(
            &file,
            "rbdsnapd_snapshots_total{outcome=\"failed\",kind=\"image_exists\"}",
        ) == Some(1.0)
        {
            promtool(&["check", "metrics"], Some(&file), dir.path());
            break;
        }
        assert!(Instant::now() < until, "textfile not rewritten:\n{file}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // rbdsnapctl metrics prints the same format
    let out = Command::new(env!("CARGO_BIN_EXE_rbdsnapctl"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("metrics")
        .output()
        .expect("rbdsnapctl");
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    promtool(&["check", "metrics"], Some(&printed), dir.path());
    assert!(printed.contains("# TYPE rbdsnapd_freeze_window_seconds histogram"));
    c.call("snapshot.delete", json!({"pool": "images", "image": image}))
        .result();
}
