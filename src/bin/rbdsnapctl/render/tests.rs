//! The views on results shaped like the daemon's, and on results missing
//! fields (which must degrade to `?`, not fail).

use super::host::agent;
use super::*;
use serde_json::json;

#[test]
fn units() {
    assert_eq!(bytes(0), "0 B");
    assert_eq!(bytes(1023), "1023 B");
    assert_eq!(bytes(1536), "1.5 KiB");
    assert_eq!(bytes(3 << 30), "3.0 GiB");
    assert_eq!(duration(42), "42s");
    assert_eq!(duration(182), "3m 2s");
    assert_eq!(duration(3 * 3600 + 120), "3h 2m");
    assert_eq!(duration(2 * 86400 + 3600), "2d 1h");
    assert_eq!(
        phase_progress("flatten", 1 << 29, 1 << 30),
        "50% of 1.0 GiB"
    );
    assert_eq!(phase_progress("clone", 1, 2), "1/2");
    assert_eq!(phase_progress("finish", 0, 0), "");
}

#[test]
fn tables_pad_columns() {
    let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
    assert_eq!(t, "A     BB\nlong  x\n");
}

fn snapshot_result() -> Value {
    json!({
        "job_id": "j1", "domain": "vm", "domain_uuid": "u", "fsid": "f",
        "disks": [
            {"disk": "vda", "source": "vms/a", "pool": "images", "image": "img-vda",
             "snapshot": "snap", "location": "rbd://f/images/img-vda/snap", "parent": null},
            {"disk": "vdb", "source": "vms/b", "pool": "images", "image": "img-vdb",
             "snapshot": "snap", "location": "rbd://f/images/img-vdb/snap",
             "parent": "vms/b@rbdsnapd-tmp-j1"}
        ],
        "consistency": "filesystem", "consistency_reason": null, "frozen_filesystems": 2,
        "clone_format": "v2",
        "timings": {"freeze_ms": 3, "snap_ms": 20, "thaw_ms": 2, "freeze_window_ms": 25,
                    "clone_ms": 40, "flatten_ms": 900, "total_ms": 1000}
    })
}

#[test]
fn snapshot_locations_and_summary() {
    let r = snapshot_result();
    assert_eq!(
        locations(&r),
        ["rbd://f/images/img-vda/snap", "rbd://f/images/img-vdb/snap"]
    );
    assert_eq!(
        snapshot_summary(&r),
        "filesystem-consistent (2 filesystems frozen); freeze window 25 ms, total 1000 ms (job j1)\n\
         img-vdb: not flattened, still a clone of vms/b@rbdsnapd-tmp-j1\n"
    );
    let crash =
        json!({"consistency": "crash", "consistency_reason": "the guest agent is not connected"});
    assert_eq!(
        snapshot_summary(&crash),
        "crash-consistent: the guest agent is not connected; freeze window ?, total ? (job ?)\n"
    );
}

#[test]
fn jobs_views() {
    let now = 10_000;
    let list = json!({"jobs": [
        {"job_id": "j1", "state": "running", "domain": "vm", "image": "i", "phase": "flatten",
         "done": 1 << 29, "total": 1 << 30, "started_unix": 9_990},
        {"job_id": "j2", "state": "failed", "domain": "vm2", "image": "k", "phase": "rollback",
         "done": 0, "total": 0, "started_unix": 9_000, "finished_unix": 9_005.5,
         "error": {"code": 1022, "message": "no freeze", "data": {"kind": "freeze_timeout",
                   "rollback_failures": ["remove x"]}}}
    ]});
    let table = jobs_table(&list, Some(now));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("JOB  STATE    DOMAIN  IMAGE  PHASE"),
        "{table}"
    );
    assert!(
        lines[1].contains("50% of 1.0 GiB") && lines[1].contains("10s ago"),
        "{table}"
    );
    assert!(
        lines[2].contains("16m 40s ago") && lines[2].ends_with("5.5s"),
        "{table}"
    );
    assert_eq!(jobs_table(&json!({"jobs": []}), Some(now)), "no jobs\n");

    let failed = &list["jobs"][1];
    let detail = job_detail(failed, Some(now));
    assert!(detail.contains("state       failed\n"), "{detail}");
    assert!(
        detail.contains("error       no freeze (freeze_timeout)\n"),
        "{detail}"
    );
    assert!(detail.contains("left behind remove x\n"), "{detail}");
    assert!(
        detail.contains("finished    9005 (took 5.5s)\n"),
        "{detail}"
    );

    let done = json!({"job_id": "j3", "state": "succeeded", "phase": "finish",
                      "result": snapshot_result()});
    let detail = job_detail(&done, Some(now));
    assert!(
        detail.contains("location    rbd://f/images/img-vdb/snap\n"),
        "{detail}"
    );
    assert!(detail.contains("domain      ?\n"), "{detail}");
}

#[test]
fn disks_view() {
    let r = json!({
        "name": "vm", "uuid": "u", "state": "running", "agent": "connected", "boot_disk": "vda",
        "disks": [
            {"target": "vda", "device": "disk", "boot_order": 1,
             "source": {"type": "rbd", "pool": "vms", "namespace": null, "image": "a",
                        "snapshot": null, "hosts": [], "auth_user": "admin"}},
            {"target": "vdb", "device": "disk", "boot_order": null,
             "source": {"type": "rbd", "pool": "vms", "namespace": "ns", "image": "b",
                        "snapshot": "s"}},
            {"target": "vdc", "device": "disk",
             "source": {"type": "other", "kind": "file", "path": "/var/lib/x.img"}}
        ]
    });
    assert_eq!(
        disks(&r),
        "domain vm (u), running; guest agent: connected\n\
         TARGET  BOOT  SOURCE\n\
         vda     1 *   vms/a\n\
         vdb     -     vms/ns/b@s\n\
         vdc     -     file (/var/lib/x.img)\n\
         * boot disk: what `snapshot` takes without --disk\n"
    );
    assert_eq!(
        agent(Some(&json!({"connected": false, "reason": "no channel"}))),
        "connected false, reason no channel"
    );
}

#[test]
fn status_view() {
    let r = json!({
        "version": "0.1.0", "uptime_secs": 3700.25, "degraded": true,
        "libvirt": {"uri": "test:///x", "connected": true, "error": null},
        "ceph": {"conf": "/etc/ceph/ceph.conf", "connected": false, "fsid": null,
                 "error": "mon unreachable"},
        "jobs_in_flight": 1,
        "counters": {"requests": 10, "errors": 2, "snapshots_succeeded": 3, "snapshots_failed": 1},
        "freeze_window_ms": {"count": 4, "p50": 20, "p90": 30, "p99": 31, "max": 31}
    });
    assert_eq!(
        status(&r),
        "daemon    rbdsnapd 0.1.0, up 1h 1m — DEGRADED\n\
         libvirt   test:///x connected\n\
         ceph      /etc/ceph/ceph.conf NOT connected: mon unreachable\n\
         jobs      1 in flight\n\
         requests  10 (2 errors)\n\
         snapshots 3 succeeded, 1 failed\n\
         freeze    window p50 20 ms, p90 30 ms, p99 31 ms, max 31 ms (4 snapshots)\n"
    );
    // An empty result: every line degrades, none panics.
    assert!(status(&json!({})).contains("freeze    window no snapshots yet"));
}
