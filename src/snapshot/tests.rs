//! The workflow against the in-memory fakes: the happy paths, and a failure
//! injected at every step, each time checking that the guest ends thawed and
//! that Ceph holds exactly what it held before (nothing orphaned).

use std::sync::Arc;
use std::time::Duration;

use super::fakes::{Fake, FakeHv, FakeStore, Fault, UUID};
use super::*;
use crate::libvirt::AgentChannel;
use crate::rbd::CloneFormat;

pub(super) fn settings() -> Settings {
    Settings {
        default_pool: Some("images".into()),
        freeze_deadline: Duration::from_millis(300),
        agent_timeout: Duration::from_millis(500),
        call_deadline: Duration::from_secs(2),
        flatten_deadline: Duration::from_secs(5),
        flatten_stall: Duration::from_secs(5),
        clone_format: None,
        host: "host-a".into(),
        allowed_pools: None,
        pause_vcpus: true,
    }
}

pub(super) fn request() -> SnapshotRequest {
    SnapshotRequest {
        domain: "vm".into(),
        image: "new".into(),
        pool: None,
        disks: vec![],
        quiesce: Quiesce::Required,
        flatten: Flatten::Sync,
    }
}

pub(super) async fn go(
    fake: &Arc<Fake>,
    req: &SnapshotRequest,
    s: &Settings,
) -> Result<SnapshotResult, SnapshotError> {
    go_with(fake, req, s, JobHooks::default()).await
}

/// [`go`] with the given hooks (guards, late calls, a step log).
pub(super) async fn go_with(
    fake: &Arc<Fake>,
    req: &SnapshotRequest,
    s: &Settings,
    hooks: JobHooks,
) -> Result<SnapshotResult, SnapshotError> {
    run(
        Arc::new(FakeHv(Arc::clone(fake))),
        Arc::new(FakeStore(Arc::clone(fake))),
        s,
        req,
        "job1",
        hooks,
    )
    .await
}

/// Nothing left behind: guest thawed, source images hold only what they held,
/// no destination image.
pub(super) fn assert_untouched(fake: &Fake, ctx: &str) {
    assert!(!fake.frozen(), "{ctx}: guest left frozen");
    let disk = fake.image("vms/vm-disk").expect("source");
    assert!(
        disk.snapshots.is_empty(),
        "{ctx}: snapshots left on source: {:?}",
        disk.snapshots
    );
    assert!(
        disk.trashed.is_empty() || fake.image("images/new").is_none(),
        "{ctx}"
    );
    assert!(
        fake.image("vms/vm-data")
            .expect("data")
            .snapshots
            .is_empty(),
        "{ctx}"
    );
    for dest in ["images/new", "images/new-vda", "images/new-vdb", "vms/new"] {
        assert!(fake.image(dest).is_none(), "{ctx}: {dest} left behind");
    }
}

#[tokio::test]
async fn boot_disk_is_snapshotted_frozen_into_the_parent_pool() {
    let fake = Fake::standard();
    let result = go(&fake, &request(), &settings()).await.expect("snapshot");
    assert_eq!(result.disks.len(), 1);
    let disk = &result.disks[0];
    assert_eq!(
        (disk.disk.as_str(), disk.source.as_str()),
        ("vda", "vms/vm-disk")
    );
    assert_eq!(
        disk.location,
        format!("rbd://{}/images/new/snap", result.fsid)
    );
    assert_eq!(result.consistency, Consistency::Filesystem);
    assert_eq!(result.consistency_reason, None);
    assert_eq!(result.frozen_filesystems, 1);
    assert!(!fake.frozen());
    let log = fake.log();
    let at = |what: &str| {
        log.iter()
            .position(|l| l == what)
            .unwrap_or_else(|| panic!("{what} in {log:?}"))
    };
    assert!(at("freeze") < at("snap_create(frozen)") && at("snap_create(frozen)") < at("thaw"));
    let new = fake.image("images/new").expect("new image");
    assert_eq!(new.snapshots, vec![("snap".to_string(), true)]);
    assert_eq!(new.parent, None, "flattened");
    assert_eq!(
        new.metadata.get(METADATA_JOB).map(String::as_str),
        Some("job1")
    );
    assert_eq!(
        new.metadata.get(METADATA_HOST).map(String::as_str),
        Some("host-a"),
        "the image names the host that made it"
    );
    let source = fake.image("vms/vm-disk").expect("source");
    assert!(
        source.snapshots.is_empty() && source.trashed.is_empty(),
        "temporary snapshot gone"
    );
}

#[tokio::test]
async fn a_failure_at_every_step_leaves_nothing_behind() {
    let points = [
        "domain",
        "fsid",
        "open",
        "snap_create",
        "clone",
        "flatten",
        "snap_remove",
        "set_metadata",
        "final_snap_create",
        "final_protect",
    ];
    for point in points {
        let fake = Fake::standard();
        fake.inject(point, Fault::Fail, 1);
        let err = go(&fake, &request(), &settings()).await.expect_err(point);
        assert!(err.rollback_failures.is_empty(), "{point}: {err}");
        assert!(
            err.message.contains(point) || err.message.contains("injected"),
            "{point}: {err}"
        );
        assert_untouched(&fake, point);
    }
}

#[tokio::test]
async fn clone_v1_protects_and_a_failure_at_every_step_still_cleans_up() {
    for point in [
        "protect",
        "clone",
        "flatten",
        "snap_remove",
        "final_snap_create",
    ] {
        let fake = Fake::standard();
        fake.world.lock().expect("world").clone_format = Some(CloneFormat::V1);
        fake.inject(point, Fault::Fail, 1);
        go(&fake, &request(), &settings()).await.expect_err(point);
        assert_untouched(&fake, point);
    }
    let fake = Fake::standard();
    fake.world.lock().expect("world").clone_format = Some(CloneFormat::V1);
    let result = go(&fake, &request(), &settings())
        .await
        .expect("v1 snapshot");
    assert_eq!(result.clone_format, CloneFormat::V1);
    assert!(fake.log().contains(&"protect".to_string()));
    assert!(fake
        .image("vms/vm-disk")
        .expect("source")
        .snapshots
        .is_empty());
}

#[tokio::test]
async fn undo_failures_are_reported_with_the_cause() {
    let fake = Fake::standard();
    fake.inject("final_snap_create", Fault::Fail, 1);
    fake.inject("remove_image", Fault::Fail, 1);
    let err = go(&fake, &request(), &settings()).await.expect_err("fails");
    assert!(err.message.contains("final_snap_create"), "{err}");
    assert_eq!(err.rollback_failures.len(), 1, "{err}");
    assert!(err.to_string().contains("rollback incomplete"), "{err}");
    assert!(!fake.frozen());
}

#[tokio::test]
async fn freeze_failure_with_required_fails_before_any_snapshot() {
    let fake = Fake::standard();
    fake.inject("freeze", Fault::Fail, 1);
    let err = go(&fake, &request(), &settings())
        .await
        .expect_err("required");
    assert_eq!(err.kind, SnapshotErrorKind::FreezeFailed);
    assert!(!fake.log().iter().any(|l| l.starts_with("snap_create")));
    assert!(
        fake.log().contains(&"thaw".to_string()),
        "thawed even though the freeze failed"
    );
    assert_untouched(&fake, "freeze");
}

#[tokio::test]
async fn freeze_failure_with_preferred_falls_back_to_crash_and_says_why() {
    let fake = Fake::standard();
    fake.inject("freeze", Fault::AgentGone, 1);
    let req = SnapshotRequest {
        quiesce: Quiesce::Preferred,
        ..request()
    };
    let result = go(&fake, &req, &settings()).await.expect("preferred");
    assert_eq!(result.consistency, Consistency::Crash);
    assert!(result
        .consistency_reason
        .as_deref()
        .unwrap_or_default()
        .contains("freeze failed"));
    assert!(!fake.frozen());
}

#[tokio::test]
async fn a_freeze_that_lands_after_its_deadline_is_thawed() {
    let fake = Fake::standard();
    fake.inject("freeze", Fault::Slow(Duration::from_millis(600)), 1);
    let err = go(&fake, &request(), &settings())
        .await
        .expect_err("late freeze");
    assert_eq!(err.kind, SnapshotErrorKind::FreezeTimeout, "{err}");
    assert_untouched(&fake, "late freeze");
}

#[tokio::test]
async fn snapshots_that_miss_the_freeze_deadline_are_thawed_and_removed_when_they_land() {
    let fake = Fake::standard();
    fake.inject("snap_create", Fault::Slow(Duration::from_millis(500)), 1);
    let err = go(&fake, &request(), &settings())
        .await
        .expect_err("slow snapshot");
    assert_eq!(err.kind, SnapshotErrorKind::FreezeTimeout, "{err}");
    assert!(err.rollback_failures.is_empty(), "{err}");
    assert_untouched(&fake, "slow snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disks_are_snapshotted_at_once_inside_the_window() {
    let fake = Fake::standard();
    // each snapshot takes 200 ms: one after another they would take 400
    fake.inject("snap_create", Fault::Slow(Duration::from_millis(200)), 2);
    let req = SnapshotRequest {
        disks: vec!["vda".into(), "vdb".into()],
        ..request()
    };
    let slow = Settings {
        freeze_deadline: Duration::from_millis(1000),
        ..settings()
    };
    let result = go(&fake, &req, &slow).await.expect("snapshot");
    assert!(
        result.timings.snap_ms < 390,
        "two 200 ms snapshots took {} ms: not concurrent",
        result.timings.snap_ms
    );
    assert!(!fake.frozen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_snapshot_of_several_undoes_them_all_after_both_end() {
    let fake = Fake::standard();
    // one of the two snapshots lands late, past the deadline
    fake.inject("snap_create", Fault::Slow(Duration::from_millis(500)), 1);
    let req = SnapshotRequest {
        disks: vec!["vda".into(), "vdb".into()],
        ..request()
    };
    let err = go(&fake, &req, &settings()).await.expect_err("refused");
    assert_eq!(err.kind, SnapshotErrorKind::FreezeTimeout, "{err}");
    assert!(err.rollback_failures.is_empty(), "{err}");
    assert!(!fake.frozen());
    assert_untouched(&fake, "one late snapshot of two");
}

#[tokio::test]
async fn a_failing_thaw_is_retried_until_the_agent_confirms() {
    let fake = Fake::standard();
    fake.inject("thaw", Fault::Fail, 3);
    go(&fake, &request(), &settings())
        .await
        .expect("a later thaw works");
    assert!(!fake.frozen());
}

/// Guards that thaw through the fake.
pub(super) fn guards_for(fake: &Arc<Fake>) -> Arc<ThawGuards> {
    let hv: Arc<dyn crate::libvirt::Hypervisor> = Arc::new(FakeHv(Arc::clone(fake)));
    ThawGuards::new(
        Arc::new(move || Some(Arc::clone(&hv))),
        Arc::new(guard::NoGuardLog),
        Duration::from_millis(100),
    )
}

#[tokio::test]
async fn a_thaw_not_confirmed_in_time_answers_and_leaves_a_guard_that_thaws_later() {
    let fake = Fake::standard();
    // 14 failing thaws: about twice what the request's budget (1.5 s, one
    // try every 250 ms) holds; the guard's backoff sees the rest
    fake.inject("thaw", Fault::Fail, 14);
    let guards = guards_for(&fake);
    let s = settings();
    let started = std::time::Instant::now();
    let err = go_with(
        &fake,
        &request(),
        &s,
        JobHooks {
            guards: Arc::clone(&guards),
            ..Default::default()
        },
    )
    .await
    .expect_err("thaw not confirmed");
    let took = started.elapsed();
    assert_eq!(err.kind, SnapshotErrorKind::ThawFailed, "{err}");
    let guard = err.guard.clone().expect("the error names the guard");
    assert_eq!(guard.domain_uuid, UUID);
    assert_eq!(guard.job_id, "job1");
    // freeze deadline + agent timeout + 1 s, and some slack for the machine
    let bound = s.freeze_deadline + s.agent_timeout + Duration::from_secs(2);
    assert!(took < bound, "answered after {took:?}");
    assert!(fake.frozen(), "still frozen when answered");
    assert_eq!(guards.list().len(), 1);
    // the guard keeps thawing until the faults run out
    tokio::time::timeout(Duration::from_secs(60), guards.wait_cleared(UUID))
        .await
        .expect("the guard thawed the guest");
    assert!(!fake.frozen());
    assert!(guards.list().is_empty());
}

#[tokio::test]
async fn a_guarded_domain_takes_no_snapshot() {
    let fake = Fake::standard();
    fake.inject("thaw", Fault::Fail, 1_000_000);
    let guards = guards_for(&fake);
    let hooks = JobHooks {
        guards: Arc::clone(&guards),
        ..Default::default()
    };
    let hv = Arc::new(FakeHv(Arc::clone(&fake)));
    let store = Arc::new(FakeStore(Arc::clone(&fake)));
    let (s, req) = (settings(), request());
    let first = run(hv.clone(), store.clone(), &s, &req, "job1", hooks.clone()).await;
    assert_eq!(
        first.expect_err("frozen").kind,
        SnapshotErrorKind::ThawFailed
    );
    let second = run(hv, store, &s, &req, "job2", hooks)
        .await
        .expect_err("refused");
    assert_eq!(second.kind, SnapshotErrorKind::Busy, "{second}");
    assert_eq!(second.guard.expect("named").job_id, "job1");
}

/// A step log whose every write takes 300 ms (a slow disk's fsync).
#[derive(Debug)]
struct SlowLog;

impl StepLog for SlowLog {
    fn record(&self, _job_id: &str, _step: &Step) -> Result<(), String> {
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }
}

#[test]
fn a_one_worker_runtime_stays_responsive_while_backends_and_the_journal_hang() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let fake = Fake::standard();
        // a freeze that hangs past its deadline, a thaw that hangs, a slow journal
        fake.inject("freeze", Fault::Slow(Duration::from_millis(800)), 1);
        fake.inject("thaw", Fault::Slow(Duration::from_millis(700)), 1);
        let ticker = tokio::spawn(async {
            let mut worst = Duration::ZERO;
            let mut last = std::time::Instant::now();
            for _ in 0..60 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                worst = worst.max(last.elapsed());
                last = std::time::Instant::now();
            }
            worst
        });
        let hooks = JobHooks {
            guards: guards_for(&fake),
            log: Arc::new(SlowLog),
            ..Default::default()
        };
        let _ = go_with(&fake, &request(), &settings(), hooks).await;
        let worst = ticker.await.expect("ticker");
        // a 20 ms tick never waits for a blocking call (each takes >= 300 ms)
        assert!(
            worst < Duration::from_millis(150),
            "the worker was held {worst:?}"
        );
    });
}

#[tokio::test]
async fn agent_missing_refuses_required_and_degrades_preferred() {
    let fake = Fake::standard();
    fake.world.lock().expect("world").domains[0].agent = AgentChannel::Disconnected;
    let err = go(&fake, &request(), &settings())
        .await
        .expect_err("required");
    assert_eq!(err.kind, SnapshotErrorKind::AgentUnavailable);
    assert!(fake
        .log()
        .iter()
        .all(|l| l != "freeze" && !l.starts_with("snap_create")));
    assert_untouched(&fake, "agent");
    let req = SnapshotRequest {
        quiesce: Quiesce::Preferred,
        ..request()
    };
    let result = go(&fake, &req, &settings()).await.expect("preferred");
    assert_eq!(result.consistency, Consistency::Crash);
    assert_eq!(
        result.consistency_reason.as_deref(),
        Some("the guest agent is not connected")
    );
    let off = SnapshotRequest {
        quiesce: Quiesce::Off,
        image: "new2".into(),
        ..request()
    };
    let result = go(&fake, &off, &settings()).await.expect("off");
    assert_eq!(result.consistency_reason.as_deref(), Some("quiesce off"));
}

#[tokio::test]
async fn an_agent_that_does_not_answer_fsinfo_counts_as_unavailable() {
    let fake = Fake::standard();
    fake.inject("fs_info", Fault::AgentGone, 1);
    let err = go(&fake, &request(), &settings())
        .await
        .expect_err("required");
    assert_eq!(err.kind, SnapshotErrorKind::AgentUnavailable, "{err}");
    assert_untouched(&fake, "fs_info");
}

#[tokio::test]
async fn two_disks_share_one_freeze() {
    let fake = Fake::standard();
    let req = SnapshotRequest {
        disks: vec!["vda".into(), "vdb".into()],
        ..request()
    };
    let result = go(&fake, &req, &settings()).await.expect("two disks");
    let names: Vec<&str> = result.disks.iter().map(|d| d.image.as_str()).collect();
    assert_eq!(names, ["new-vda", "new-vdb"]);
    // vdb has no parent: the default pool applies
    assert_eq!(result.disks[1].pool, "images");
    let log = fake.log();
    assert_eq!(log.iter().filter(|l| *l == "freeze").count(), 1);
    assert_eq!(
        log.iter().filter(|l| *l == "snap_create(frozen)").count(),
        2,
        "{log:?}"
    );
}

#[tokio::test]
async fn preflight_refusals_touch_nothing() {
    let cases: Vec<(SnapshotRequest, SnapshotErrorKind)> = vec![
        (
            SnapshotRequest {
                domain: "nope".into(),
                ..request()
            },
            SnapshotErrorKind::DomainNotFound,
        ),
        (
            SnapshotRequest {
                disks: vec!["vdc".into()],
                ..request()
            },
            SnapshotErrorKind::DiskNotRbd,
        ),
        (
            SnapshotRequest {
                disks: vec!["vdz".into()],
                ..request()
            },
            SnapshotErrorKind::DiskNotFound,
        ),
        (
            SnapshotRequest {
                disks: vec!["vda".into(), "vda".into()],
                ..request()
            },
            SnapshotErrorKind::InvalidParams,
        ),
        (
            SnapshotRequest {
                pool: Some("nopool".into()),
                ..request()
            },
            SnapshotErrorKind::PoolNotFound,
        ),
        (
            SnapshotRequest {
                image: "base".into(),
                ..request()
            },
            SnapshotErrorKind::ImageExists,
        ),
        (
            SnapshotRequest {
                image: "a/b".into(),
                ..request()
            },
            SnapshotErrorKind::InvalidParams,
        ),
        (
            SnapshotRequest {
                image: "a@b".into(),
                ..request()
            },
            SnapshotErrorKind::InvalidParams,
        ),
    ];
    for (req, kind) in cases {
        let fake = Fake::standard();
        let err = go(&fake, &req, &settings()).await.expect_err("refused");
        assert_eq!(err.kind, kind, "{req:?}: {err}");
        assert!(fake.log().iter().all(|l| l != "freeze"), "{req:?}");
        assert_untouched(&fake, &format!("{req:?}"));
    }
}

#[tokio::test]
async fn a_pool_the_caller_may_not_write_is_refused_before_anything() {
    let only_vms = Settings {
        allowed_pools: Some(vec!["vms".into()]),
        ..settings()
    };
    // vda's parent is in images (Nova's rule picks it); vdb's default too
    for disks in [vec![], vec!["vda".to_string(), "vdb".to_string()]] {
        let fake = Fake::standard();
        let req = SnapshotRequest { disks, ..request() };
        let err = go(&fake, &req, &only_vms).await.expect_err("refused");
        assert_eq!(err.kind, SnapshotErrorKind::PermissionDenied, "{err}");
        assert!(err.message.contains("pool images"), "{err}");
        assert!(fake.log().iter().all(|l| l != "freeze"));
        assert_untouched(&fake, "pool refused");
    }
    let fake = Fake::standard();
    let req = SnapshotRequest {
        pool: Some("vms".into()),
        ..request()
    };
    let result = go(&fake, &req, &only_vms).await.expect("allowed pool");
    assert_eq!(result.disks[0].pool, "vms");
}

#[tokio::test]
async fn stopped_domains_snapshot_limits_and_missing_pools_are_refused() {
    let fake = Fake::standard();
    fake.world.lock().expect("world").domains[0].state = crate::libvirt::DomainState::Shutoff;
    assert_eq!(
        go(&fake, &request(), &settings())
            .await
            .expect_err("off")
            .kind,
        SnapshotErrorKind::DomainNotRunning
    );

    let fake = Fake::standard();
    fake.world
        .lock()
        .expect("world")
        .images
        .get_mut("vms/vm-disk")
        .expect("disk")
        .limit = Some(0);
    assert_eq!(
        go(&fake, &request(), &settings())
            .await
            .expect_err("limit")
            .kind,
        SnapshotErrorKind::SnapshotLimit
    );

    let fake = Fake::standard();
    let req = SnapshotRequest {
        disks: vec!["vdb".into()],
        ..request()
    };
    let no_default = Settings {
        default_pool: None,
        ..settings()
    };
    let err = go(&fake, &req, &no_default).await.expect_err("no pool");
    assert_eq!(err.kind, SnapshotErrorKind::NoDestinationPool, "{err}");
}

#[tokio::test]
async fn flatten_none_keeps_the_parent_and_says_so() {
    let fake = Fake::standard();
    let req = SnapshotRequest {
        flatten: Flatten::None,
        pool: Some("vms".into()),
        ..request()
    };
    let result = go(&fake, &req, &settings()).await.expect("none");
    assert_eq!(
        result.disks[0].pool, "vms",
        "the request's pool wins over Nova's rule"
    );
    assert!(result.disks[0]
        .parent
        .as_deref()
        .unwrap_or_default()
        .starts_with("vms/vm-disk@rbdsnapd-tmp-job1"));
    let new = fake.image("vms/new").expect("new");
    assert!(new.parent.is_some(), "still a clone");
    // clone v2: the temporary snapshot left the user namespace (trash)
    let source = fake.image("vms/vm-disk").expect("source");
    assert!(source.snapshots.is_empty());
    assert_eq!(source.trashed, vec!["rbdsnapd-tmp-job1".to_string()]);
}

#[tokio::test]
async fn progress_reports_every_phase_and_flatten_reaches_total() {
    let fake = Fake::standard();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink_seen = Arc::clone(&seen);
    let sink: ProgressSink = Arc::new(move |p| sink_seen.lock().expect("seen").push(p));
    let hv = Arc::new(FakeHv(Arc::clone(&fake)));
    run(
        hv,
        Arc::new(FakeStore(Arc::clone(&fake))),
        &settings(),
        &request(),
        "job1",
        JobHooks {
            progress: sink,
            ..Default::default()
        },
    )
    .await
    .expect("ok");
    let seen = seen.lock().expect("seen");
    for phase in [
        Phase::Preflight,
        Phase::Freeze,
        Phase::Clone,
        Phase::Flatten,
        Phase::Finish,
    ] {
        assert!(
            seen.iter().any(|p| p.phase == phase),
            "{phase:?} in {seen:?}"
        );
    }
    let last_flatten = seen
        .iter()
        .rev()
        .find(|p| p.phase == Phase::Flatten)
        .expect("flatten");
    assert_eq!(last_flatten.done, last_flatten.total);
    let _ = UUID;
}

#[tokio::test]
async fn a_cancel_during_the_flatten_rolls_everything_back() {
    let fake = Fake::standard();
    let cancel = CancelFlag::default();
    let flag = Arc::clone(&cancel);
    let sink: ProgressSink = Arc::new(move |p: Progress| {
        if p.phase == Phase::Flatten {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let hv = Arc::new(FakeHv(Arc::clone(&fake)));
    let store = Arc::new(FakeStore(Arc::clone(&fake)));
    let err = run(
        hv,
        store,
        &settings(),
        &request(),
        "job1",
        JobHooks {
            progress: sink,
            cancel,
            ..Default::default()
        },
    )
    .await
    .expect_err("cancelled");
    assert_eq!(err.kind, SnapshotErrorKind::Cancelled, "{err}");
    assert!(err.rollback_failures.is_empty(), "{err}");
    assert_untouched(&fake, "cancel");
}

#[tokio::test]
async fn a_job_cancelled_before_it_starts_touches_nothing() {
    let fake = Fake::standard();
    let cancel = CancelFlag::default();
    cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    let hv = Arc::new(FakeHv(Arc::clone(&fake)));
    let store = Arc::new(FakeStore(Arc::clone(&fake)));
    let err = run(
        hv,
        store,
        &settings(),
        &request(),
        "job1",
        JobHooks {
            cancel,
            ..Default::default()
        },
    )
    .await
    .expect_err("cancelled");
    assert_eq!(err.kind, SnapshotErrorKind::Cancelled);
    assert!(fake.log().iter().all(|l| l != "freeze"));
    assert_untouched(&fake, "early cancel");
}

#[tokio::test]
async fn a_late_snapshot_the_rollback_cannot_wait_for_is_left_to_recovery_and_tracked() {
    let fake = Fake::standard();
    // lands 4 s after it was asked: past the freeze deadline and the
    // rollback's wait (the call deadline here, 2 s)
    fake.inject("snap_create", Fault::Slow(Duration::from_secs(4)), 1);
    let late = Arc::new(saga::LateCalls::default());
    let started = std::time::Instant::now();
    let err = go_with(
        &fake,
        &request(),
        &settings(),
        JobHooks {
            late: Arc::clone(&late),
            ..Default::default()
        },
    )
    .await
    .expect_err("late snapshot");
    assert_eq!(err.kind, SnapshotErrorKind::FreezeTimeout, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered before the call landed"
    );
    assert!(
        err.rollback_failures
            .iter()
            .any(|f| f.contains("still running")),
        "{err}"
    );
    assert!(late.running("job1"), "tracked for recovery");
    assert!(!fake.frozen(), "thawed all the same");
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while late.running("job1") {
        assert!(
            std::time::Instant::now() < until,
            "the late call never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
