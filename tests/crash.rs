//! The crash suite: the real daemon is killed with SIGKILL at every step
//! boundary of a snapshot (it pauses there on RBDSNAPD_TEST_PAUSE_AT), then
//! restarted on the same state directory. After the restart: the guest is
//! thawed, Ceph holds no temporary snapshot and no partial clone, and the
//! same request_id retried yields exactly one complete image.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{self, DaemonProc, TempDir};
use nix::sys::signal::Signal;
use serde_json::json;

/// Every named point a job passes, in order.
const POINTS: &[&str] = &[
    "begin",
    "freeze",
    "frozen",
    "snapshotted",
    "thawed",
    "clone",
    "cloned",
    "flattened",
    "finished",
];

/// The guest tests share one guest: one at a time.
static GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Start a daemon on `state`, optionally pausing at `point`.
fn start(bed: &daemon::Bed, uri: &str, state: &Path, point: Option<&str>) -> DaemonProc {
    let mut launch = bed.launch().libvirt_uri(uri).extra(&format!(
        "state_dir = {:?}\n[snapshot]\nquiesce = \"required\"",
        state.display().to_string()
    ));
    if let Some(point) = point {
        launch = launch.env("RBDSNAPD_TEST_PAUSE_AT", point);
    }
    launch.start()
}

/// One crash: start paused at `point`, request, wait for the pause, check
/// `while_paused`, SIGKILL, restart, check the aftermath, retry.
fn crash_at(
    bed: &daemon::Bed,
    uri: &str,
    domain: &str,
    source: &str,
    point: &str,
    while_paused: impl Fn(),
) {
    die_at(
        bed,
        uri,
        (domain, source),
        point,
        Signal::SIGKILL,
        while_paused,
    );
}

/// [`crash_at`], the daemon ended by `signal` (SIGABRT: what a failed
/// assertion inside librbd does to the process).
fn die_at(
    bed: &daemon::Bed,
    uri: &str,
    (domain, source): (&str, &str),
    point: &str,
    signal: Signal,
    while_paused: impl Fn(),
) {
    let ceph = &bed.ceph;
    let state = TempDir::new("rbdsnapd-crash-state");
    let image = common::unique(&format!("crash-{point}"));
    let request_id = common::unique("rid");
    let params = json!({"domain": domain, "image": image, "request_id": request_id});

    let mut first = start(bed, uri, state.path(), Some(point));
    let mut conn = first.connect();
    let id = conn.fresh_id();
    conn.send_request(&id, "snapshot.create", params.clone());
    first.wait_paused(&state.path().join(format!("paused-at-{point}")));
    while_paused();
    first.signal(signal);
    assert!(
        first.wait_exit(Duration::from_secs(30)).is_some(),
        "{point}: the daemon survived {signal}"
    );
    drop(conn);

    // the restart thaws before READY, and rolls Ceph back right after it
    let second = start(bed, uri, state.path(), None);
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = second.status();
        if status["recovery"]["recovered"] == 1 {
            break status;
        }
        if Instant::now() > until {
            second.fail(&format!("{point}: never recovered: {status}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        status["recovery"]["pending"],
        json!([]),
        "{point}: recovery pending: {status}"
    );
    assert!(
        ceph.temp_snapshots(source).is_empty(),
        "{point}: temporary snapshot left on {source}"
    );
    let dest = format!("images/{image}");
    let kept = point == "finished";
    assert_eq!(
        ceph.exists(&dest),
        kept,
        "{point}: {dest} exists={} after recovery",
        ceph.exists(&dest)
    );

    // the retry: exactly one complete image
    let mut conn = second.connect();
    let retry = conn.call("snapshot.create", params.clone());
    assert!(retry.is_ok(), "{point}: retry failed: {:?}", retry.0);
    let location = retry.result()["disks"][0]["location"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        location,
        format!("rbd://{}/images/{image}/snap", ceph.fsid),
        "{point}"
    );
    assert_eq!(
        ceph.snapshots(&dest),
        vec![("snap".to_string(), true)],
        "{point}: the image is complete"
    );
    assert!(
        ceph.temp_snapshots(source).is_empty(),
        "{point}: retry left a temporary snapshot"
    );
    let again = conn.call("snapshot.create", params);
    assert_eq!(
        again.result()["disks"][0]["location"],
        json!(location),
        "{point}: a third try answers the same"
    );
    let listed = ceph.rbd(&["ls", "images"], None);
    let copies = String::from_utf8_lossy(&listed)
        .lines()
        .filter(|l| l.starts_with(&image))
        .count();
    assert_eq!(copies, 1, "{point}: one image, not more");

    // after another restart the finished job is restored from the journal
    // as it was: its last phase and its own start and end
    let job_id = retry.result()["job_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let before = conn
        .call("jobs.get", json!({ "job_id": job_id }))
        .result()
        .clone();
    drop(conn);
    drop(second);
    let third = start(bed, uri, state.path(), None);
    let after = third
        .connect()
        .call("jobs.get", json!({ "job_id": job_id }))
        .result()
        .clone();
    assert_eq!(after["state"], "succeeded", "{point}: {after}");
    assert_eq!(
        after["phase"], before["phase"],
        "{point}: {before} then {after}"
    );
    assert_ne!(after["phase"], "preflight", "{point}: {after}");
    for key in ["started_unix", "finished_unix"] {
        let (was, is) = (before[key].as_f64(), after[key].as_f64());
        assert!(
            was.zip(is).is_some_and(|(was, is)| (was - is).abs() < 0.01),
            "{point}: {key} {was:?} then {is:?}"
        );
    }
    common::engine::remove(&common::engine::store(ceph), "images", &image);
}

#[test]
fn sigkill_at_every_step_leaves_nothing_and_the_retry_makes_one_image() {
    let Some(bed) = daemon::bed() else { return };
    for point in POINTS {
        crash_at(
            &bed,
            &bed.testdrv_uri,
            "rbdsnapd-test-10",
            "vms/testdrv-10-vda",
            point,
            || {},
        );
    }
}

#[test]
fn a_guest_frozen_when_the_daemon_dies_is_thawed_by_the_next_start() {
    let (Some(bed), Some(guest)) = (daemon::bed(), common::guest()) else {
        return;
    };
    let _one = GUEST.lock().unwrap_or_else(|p| p.into_inner());
    for point in ["frozen", "snapshotted"] {
        let check = || {
            assert_eq!(
                guest.freeze_status(),
                json!("frozen"),
                "{point}: the guest is frozen while paused"
            )
        };
        crash_at(&bed, &guest.uri, &guest.name, &guest.image, point, check);
        assert_eq!(
            guest.freeze_status(),
            json!("thawed"),
            "{point}: thawed after the restart"
        );
    }
}

/// librbd's assertions abort the process (SIGABRT, as seen in a soak):
/// inside the freeze window the next start thaws the guest all the same.
#[test]
fn a_guest_frozen_when_librbd_aborts_the_daemon_is_thawed_by_the_next_start() {
    let (Some(bed), Some(guest)) = (daemon::bed(), common::guest()) else {
        return;
    };
    let _one = GUEST.lock().unwrap_or_else(|p| p.into_inner());
    let frozen = || {
        assert_eq!(
            guest.freeze_status(),
            json!("frozen"),
            "the guest is frozen while paused"
        )
    };
    let disk = (guest.name.as_str(), guest.image.as_str());
    die_at(
        &bed,
        &guest.uri,
        disk,
        "snapshotted",
        Signal::SIGABRT,
        frozen,
    );
    assert_eq!(
        guest.freeze_status(),
        json!("thawed"),
        "thawed after the restart"
    );
}
