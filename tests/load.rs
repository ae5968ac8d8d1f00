//! Load: 1000 idle connections held open while 16 snapshots run at once on
//! 16 test-driver domains. Every snapshot succeeds, the daemon keeps
//! answering, and its descriptors and memory come back to where they were.

mod common;

use std::os::unix::net::UnixStream;
use std::time::Instant;

use common::daemon;
use serde_json::json;

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One round: 1000 idle connections held while 16 snapshots run at once;
/// returns how long the snapshots took and the daemon's fds while loaded.
fn round(
    d: &daemon::DaemonProc,
    store: &std::sync::Arc<dyn rbdsnapd::rbd::ImageStore>,
) -> (std::time::Duration, usize) {
    let idle: Vec<UnixStream> = (0..1000)
        .map(|i| UnixStream::connect(&d.socket).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    let names: Vec<String> = (1..=16)
        .map(|n| common::unique(&format!("load-{n:02}")))
        .collect();
    let started = Instant::now();
    let answers: Vec<daemon::Response> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                s.spawn(move || {
                    let domain = format!("rbdsnapd-test-{:02}", i + 1);
                    d.connect()
                        .call("snapshot.create", json!({"domain": domain, "image": name}))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let took = started.elapsed();
    let loaded = fds(d.pid());
    let status = d.status();
    drop(idle);
    for name in &names {
        common::engine::remove(store, "images", name);
    }
    for (i, answer) in answers.iter().enumerate() {
        assert!(answer.is_ok(), "snapshot {} failed: {:?}", i + 1, answer.0);
    }
    assert_eq!(status["counters"]["snapshots_failed"], 0, "{status}");
    assert!(
        loaded >= 1000,
        "the 1000 connections were accepted ({loaded} fds)"
    );
    (took, loaded)
}

/// The daemon's fds once it has seen the closed connections.
fn settled_fds(d: &daemon::DaemonProc, at_most: usize) -> usize {
    let until = Instant::now() + std::time::Duration::from_secs(10);
    while fds(d.pid()) > at_most && Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    fds(d.pid())
}

#[test]
fn a_thousand_idle_connections_and_sixteen_concurrent_snapshots() {
    let Some(bed) = daemon::bed() else { return };
    let d = bed.start("max_connections = 1100");
    let store = common::engine::store(&bed.ceph);
    let (fds_idle, rss_idle) = (fds(d.pid()), rss_kib(d.pid()));
    let (took1, loaded1) = round(&d, &store);
    let (fds1, rss1) = (settled_fds(&d, fds_idle + 8), rss_kib(d.pid()));
    let (took2, loaded2) = round(&d, &store);
    let (fds2, rss2) = (settled_fds(&d, fds1), rss_kib(d.pid()));
    eprintln!(
        "load: 16 concurrent snapshots with 1000 idle connections: {took1:?}, then {took2:?}; \
         daemon fds idle {fds_idle}, loaded {loaded1}/{loaded2}, after {fds1}/{fds2}; \
         RSS idle {rss_idle} KiB, after {rss1}/{rss2} KiB"
    );
    // the first round may open lasting Ceph sessions; a second must add nothing
    assert!(
        fds1 <= fds_idle + 8,
        "descriptors after the first round: {fds_idle} -> {fds1}"
    );
    assert!(
        fds2 <= fds1,
        "descriptors leak: {fds1} -> {fds2} after a second round"
    );
    assert!(
        rss2 < rss1 + 16 * 1024,
        "memory grows round after round: {rss1} -> {rss2} KiB"
    );
}
