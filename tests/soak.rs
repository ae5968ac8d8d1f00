//! The soak: the release build (as shipped) runs hundreds of snapshot
//! cycles — flatten sync, none and background in turn — each followed at
//! once by deletes of the new image retried every 50 ms, so that deletes
//! race the ends of background flattens (where librbd 16.2 aborted the
//! daemon: an image context destroyed with operations pending, after a
//! second handle of ours had taken the lock from the flattening one).
//!
//! Asserts: the daemon is the same process at the end, every image made is
//! gone, no temporary snapshot is left, a refused delete never changed the
//! image, and memory stays flat; prints the cycles' times and RSS growth.
//!
//! `RBDSNAPD_SOAK_CYCLES` (default 300) sets the length;
//! `RBDSNAPD_TEST_RELEASE_BIN` the daemon binary (default
//! target/release/rbdsnapd, which dev/test builds for the package).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::daemon::{self, ImageCleanup};
use serde_json::json;

const DOMAIN: &str = "rbdsnapd-test-11";
const SOURCE: &str = "vms/testdrv-11-vda";
const MODES: [&str; 3] = ["sync", "none", "background"];

fn release_bin() -> Option<PathBuf> {
    let path = std::env::var_os("RBDSNAPD_TEST_RELEASE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/release/rbdsnapd"
            ))
        });
    if path.exists() {
        return Some(path);
    }
    let say = format!(
        "the release build {} is missing (dev/test builds it)",
        path.display()
    );
    if std::env::var_os("RBDSNAPD_REQUIRE_BED").is_some() {
        panic!("{say}");
    }
    eprintln!("skipped: {say}");
    None
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn deletes_racing_background_flattens_keep_the_daemon_alive_and_leave_nothing() {
    let Some(bed) = daemon::bed() else { return };
    let Some(exe) = release_bin() else { return };
    let ceph = &bed.ceph;
    let cycles: usize = std::env::var("RBDSNAPD_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    // few finished jobs kept, so that the registry and the journal are at
    // their bound before the warm-up ends: what grows after is a leak
    let d = bed.launch().exe(&exe).extra("jobs_kept = 16").start();
    let pid = d.pid();
    let mut c = d.connect();
    let tag = common::unique("soak");
    let warm_up = (cycles / 5).max(30);
    let (mut rss_warm, mut refused, mut raced) = (0, 0u64, 0u64);
    let started = Instant::now();
    for i in 0..cycles {
        let mode = MODES[i % MODES.len()];
        let image = format!("{tag}-{i}");
        let guard = ImageCleanup::new(ceph, "images", &image);
        let made = c.call(
            "snapshot.create",
            json!({"domain": DOMAIN, "image": image, "flatten": mode}),
        );
        assert!(made.is_ok(), "cycle {i} ({mode}): {made:?}");
        let job = made.result()["job_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let deleted = c.call("snapshot.delete", json!({"pool": "images", "image": image}));
            if deleted.is_ok() {
                assert_eq!(deleted.result()["deleted"], true, "cycle {i}: {deleted:?}");
                break;
            }
            assert_eq!(
                deleted.kind(),
                "image_in_use",
                "cycle {i} ({mode}): {deleted:?}"
            );
            refused += 1;
            // a refused delete changed nothing: the image is whole
            let snaps = ceph.snapshots(&guard.spec());
            assert_eq!(
                snaps,
                vec![("snap".to_string(), true)],
                "cycle {i}: refused, yet changed"
            );
            let state = c.call("jobs.get", json!({"job_id": job})).result()["state"].clone();
            if state != "running" {
                raced += 1;
            }
            assert!(Instant::now() < until, "cycle {i}: never deletable");
            std::thread::sleep(Duration::from_millis(50));
        }
        if mode == "background" {
            let end = c.call("jobs.get", json!({"job_id": job})).result().clone();
            assert_eq!(
                end["state"], "succeeded",
                "cycle {i}: the job's own end: {end}"
            );
        }
        assert!(
            !ceph.exists(&guard.spec()),
            "cycle {i}: {} is still there",
            guard.spec()
        );
        if i + 1 == warm_up {
            rss_warm = rss_kib(pid);
        }
    }
    let took = started.elapsed();
    assert_eq!(d.pid(), pid, "the daemon was restarted");
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_ok(),
        "the daemon died: {}",
        d.log()
    );
    let status = c.call("daemon.status", json!({})).result().clone();
    assert_eq!(status["jobs_in_flight"], 0, "{status}");
    assert_eq!(status["guests_at_risk"], json!([]), "{status}");
    assert!(
        ceph.temp_snapshots(SOURCE).is_empty(),
        "temporary snapshots left"
    );
    let listed = String::from_utf8_lossy(&ceph.rbd(&["ls", "images"], None)).to_string();
    assert!(!listed.contains(&tag), "images of the soak left: {listed}");
    let rss_end = rss_kib(pid);
    let measured = (cycles - warm_up).max(1) as f64;
    let growth_mib_per_1000 = (rss_end as f64 - rss_warm as f64) / 1024.0 * (1000.0 / measured);
    eprintln!(
        "soak: {cycles} cycles in {:.1} s ({:.0} ms each), {refused} refused deletes \
         ({raced} after the job ended, while its handle closed), RSS {:.1} MiB after \
         warm-up, {:.1} MiB at the end: {growth_mib_per_1000:+.1} MiB per 1000 cycles",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / cycles as f64,
        rss_warm as f64 / 1024.0,
        rss_end as f64 / 1024.0,
    );
    assert!(
        growth_mib_per_1000 < 8.0,
        "memory grows {growth_mib_per_1000:.1} MiB per 1000 cycles"
    );
}
