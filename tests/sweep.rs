//! The start-up sweep: a temporary snapshot of ours that no journal knows
//! (as after a lost state directory) is reported, or removed on request.
//! Its own test binary: a sweep sees every test-driver domain's disk, and
//! must not meet other tests' live jobs.

mod common;

use std::time::{Duration, Instant};

use common::daemon;
use serde_json::{json, Value};

fn orphans_once_swept(d: &daemon::DaemonProc, snapshot: &str) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let status = d.status();
        let orphans: Vec<Value> = status["recovery"]["orphans"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if orphans.iter().any(|o| o["snapshot"] == snapshot) {
            return orphans;
        }
        assert!(
            Instant::now() < until,
            "the sweep never listed {snapshot}: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn temporary_snapshots_no_journal_knows_are_reported_or_removed() {
    let Some(bed) = daemon::bed() else { return };
    let image = "vms/testdrv-09-vda";
    let snapshot = format!("rbdsnapd-tmp-{}", common::unique("lost").replace('-', ""));
    bed.ceph.rbd(
        &[
            "snap",
            "create",
            "--no-progress",
            &format!("{image}@{snapshot}"),
        ],
        None,
    );

    let reporting = bed.start("sweep_orphans = \"report\"");
    let found = orphans_once_swept(&reporting, &snapshot);
    drop(reporting);
    let still_there = bed.ceph.temp_snapshots(image).contains(&snapshot);

    let removing = bed.start("sweep_orphans = \"remove\"");
    let removed = orphans_once_swept(&removing, &snapshot);
    drop(removing);
    let left = bed.ceph.temp_snapshots(image);
    if left.contains(&snapshot) {
        bed.ceph.rbd(
            &[
                "snap",
                "rm",
                "--no-progress",
                &format!("{image}@{snapshot}"),
            ],
            None,
        );
    }

    let entry = |list: &[Value]| {
        list.iter()
            .find(|o| o["snapshot"] == snapshot)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        entry(&found),
        json!({"image": image, "snapshot": snapshot, "action": "reported"})
    );
    assert!(still_there, "report does not remove");
    assert_eq!(entry(&removed)["action"], "removed");
    assert!(!left.contains(&snapshot), "remove removed it: {left:?}");
}
