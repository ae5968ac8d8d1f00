//! Several disks at one instant, against the fakes: the vCPUs are paused
//! around the snapshots exactly when no freeze holds every disk still, and
//! never left paused — a refused pause, a resume that keeps failing (a
//! guard takes over), a snapshot that fails while paused.

use std::sync::Arc;
use std::time::Duration;

use super::fakes::{Fake, Fault, UUID};
use super::tests::{assert_untouched, go, go_with, guards_for, request, settings};
use super::*;

fn both(quiesce: Quiesce) -> SnapshotRequest {
    SnapshotRequest {
        disks: vec!["vda".into(), "vdb".into()],
        quiesce,
        ..request()
    }
}

fn at(log: &[String], entry: &str) -> usize {
    log.iter()
        .position(|l| l == entry)
        .unwrap_or_else(|| panic!("{entry} not in {log:?}"))
}

#[tokio::test]
async fn several_disks_without_a_freeze_are_taken_with_the_vcpus_paused() {
    let fake = Fake::standard();
    let result = go(&fake, &both(Quiesce::Off), &settings())
        .await
        .expect("snapshot");
    let log = fake.log();
    let snaps: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("snap_create"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(snaps.len(), 2, "{log:?}");
    assert!(
        snaps.iter().all(|i| log[*i] == "snap_create(paused)"),
        "{log:?}"
    );
    assert!(at(&log, "suspend") < snaps[0] && snaps[1] < at(&log, "resume"));
    assert!(!fake.paused());
    assert!(result.one_instant);
    assert_eq!(result.consistency, Consistency::Crash);
}

#[tokio::test]
async fn a_disk_no_frozen_filesystem_covers_is_paused_for_too() {
    // the fake's agent freezes / on vda only: vdb is a raw disk
    let fake = Fake::standard();
    let result = go(&fake, &both(Quiesce::Required), &settings())
        .await
        .expect("snapshot");
    let log = fake.log();
    assert!(at(&log, "freeze") < at(&log, "suspend"), "{log:?}");
    assert!(at(&log, "resume") < at(&log, "thaw"), "{log:?}");
    assert!(result.one_instant);
    assert_eq!(result.consistency, Consistency::Filesystem);
    assert!(!fake.paused() && !fake.frozen());
}

#[tokio::test]
async fn one_disk_or_pause_never_does_not_pause() {
    let fake = Fake::standard();
    let single = SnapshotRequest {
        quiesce: Quiesce::Off,
        ..request()
    };
    let result = go(&fake, &single, &settings()).await.expect("one disk");
    assert!(result.one_instant);
    assert!(!fake.log().iter().any(|l| l == "suspend"));

    let fake = Fake::standard();
    let never = Settings {
        pause_vcpus: false,
        ..settings()
    };
    let result = go(&fake, &both(Quiesce::Off), &never)
        .await
        .expect("no pause");
    assert!(!result.one_instant, "reported one instant without a pause");
    assert!(!fake.log().iter().any(|l| l == "suspend"));
}

#[tokio::test]
async fn a_refused_pause_fails_the_job_before_any_snapshot() {
    let fake = Fake::standard();
    fake.inject("suspend", Fault::Fail, 1);
    let err = go(&fake, &both(Quiesce::Off), &settings())
        .await
        .expect_err("pause refused");
    assert!(err.message.contains("could not pause"), "{err}");
    assert!(!fake.log().iter().any(|l| l.starts_with("snap_create")));
    assert!(!fake.paused());
    assert_untouched(&fake, "pause refused");
}

#[tokio::test]
async fn a_failing_snapshot_while_paused_is_undone_and_the_guest_resumed() {
    let fake = Fake::standard();
    fake.inject("snap_create", Fault::Fail, 1);
    go(&fake, &both(Quiesce::Required), &settings())
        .await
        .expect_err("snapshot failed");
    assert!(!fake.paused());
    assert_untouched(&fake, "snapshot failed while paused");
}

#[tokio::test]
async fn a_resume_not_confirmed_in_time_leaves_a_guard_that_resumes_then_thaws() {
    let fake = Fake::standard();
    // more failures than the request's budget holds (agent timeout + 1 s)
    fake.inject("resume", Fault::Fail, 10);
    let guards = guards_for(&fake);
    let hooks = JobHooks {
        guards: Arc::clone(&guards),
        ..Default::default()
    };
    let err = go_with(&fake, &both(Quiesce::Required), &settings(), hooks)
        .await
        .expect_err("resume not confirmed");
    assert_eq!(err.kind, SnapshotErrorKind::ThawFailed, "{err}");
    let guard = err.guard.clone().expect("the error names the guard");
    assert!(guard.window.resume && guard.window.thaw, "{guard:?}");
    assert!(
        fake.paused() && fake.frozen(),
        "answered before the guard's work"
    );
    tokio::time::timeout(Duration::from_secs(60), guards.wait_cleared(UUID))
        .await
        .expect("the guard resumed and thawed the guest");
    assert!(!fake.paused() && !fake.frozen());
    let log = fake.log();
    let last_resume = log.iter().rposition(|l| l == "resume").expect("resumed");
    let last_thaw = log.iter().rposition(|l| l == "thaw").expect("thawed");
    assert!(last_resume < last_thaw, "thawed before resuming: {log:?}");
}
