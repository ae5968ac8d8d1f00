//! The planner on hand-made trails, and the executor against the in-memory
//! image store: what is removed, what is kept, what waits.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::plan::{plan, Action, Verdict};
use super::*;
use crate::journal::Outcome;
use crate::rbd::{ImageSpec, ImageStore};
use crate::snapshot::fakes::{Fake, FakeStore, Fault};
use crate::snapshot::{Step, METADATA_JOB};

const TEMP: &str = "rbdsnapd-tmp-job1";

fn src() -> ImageSpec {
    ImageSpec::new("vms", "vm-disk")
}

fn dst() -> ImageSpec {
    ImageSpec::new("images", "new")
}

fn trail(steps: Vec<Step>, flatten: &str) -> Trail {
    Trail {
        job_id: "job1".into(),
        request_id: None,
        params: json!({"domain": "vm", "image": "new", "flatten": flatten}),
        domain_uuid: "uuid".into(),
        client_addr: Some("10.0.0.1:0/1".into()),
        steps,
        started: 0.0,
    }
}

fn begin() -> Step {
    Step::Begin {
        domain_uuid: "uuid".into(),
        fsid: "fsid".into(),
        sources: vec![src()],
        dests: vec![dst()],
        temp_snap: TEMP.into(),
    }
}

#[test]
fn a_job_that_touched_nothing_ends_without_actions() {
    let p = plan(&trail(vec![], "sync"), None);
    assert_eq!(p.verdict, Verdict::Untouched);
    assert!(p.actions.is_empty());
}

#[test]
fn a_cloned_job_removes_its_clone_then_the_temporary_snapshot_after_fencing() {
    let t = trail(
        vec![
            begin(),
            Step::Freeze,
            Step::Thawed,
            Step::Clone { dest: dst() },
        ],
        "sync",
    );
    let p = plan(&t, Some("10.0.0.2:0/9"));
    assert_eq!(p.verdict, Verdict::RollBack);
    assert_eq!(
        p.actions,
        vec![
            Action::Fence("10.0.0.1:0/1".into()),
            Action::RemovePartial {
                dest: dst(),
                source: src()
            },
            Action::RemoveTemp {
                source: src(),
                required: true
            },
        ]
    );
    // our own address is never fenced
    let own = plan(&t, Some("10.0.0.1:0/1"));
    assert!(!own.actions.iter().any(|a| matches!(a, Action::Fence(_))));
}

#[test]
fn finished_images_are_kept_and_background_flattens_resume_only_when_paused() {
    let finished = vec![
        begin(),
        Step::Clone { dest: dst() },
        Step::Finished { dest: dst() },
    ];
    let p = plan(&trail(finished.clone(), "sync"), Some("10.0.0.1:0/1"));
    let Verdict::Keep { result, resume } = p.verdict else {
        panic!("kept");
    };
    assert!(!resume);
    assert_eq!(result["disks"][0]["location"], "rbd://fsid/images/new/snap");
    assert_eq!(
        p.actions,
        vec![Action::RemoveTemp {
            source: src(),
            required: false
        }]
    );

    let mut paused = finished.clone();
    paused.extend([Step::Flattening, Step::Paused]);
    let p = plan(&trail(paused, "background"), None);
    assert!(matches!(p.verdict, Verdict::Keep { resume: true, .. }));

    let mut killed = finished;
    killed.push(Step::Flattening);
    let p = plan(&trail(killed, "background"), None);
    let Verdict::Keep { result, resume } = p.verdict else {
        panic!("kept");
    };
    assert!(!resume, "a flatten killed inside librbd is not resumed");
    assert!(result["flatten_error"].is_object());
}

/// The fake world after a crash between the clone and the end: the
/// temporary snapshot on the source, the clone marked as the job's.
fn crashed_world() -> (Arc<Fake>, Arc<dyn ImageStore>) {
    let fake = Fake::standard();
    let store: Arc<dyn ImageStore> = Arc::new(FakeStore(Arc::clone(&fake)));
    let image = store.open(&src()).expect("source");
    image.create_snapshot(TEMP).expect("temp");
    store
        .clone_image(&src(), TEMP, &dst(), crate::rbd::CloneFormat::V2)
        .expect("clone");
    store
        .open(&dst())
        .and_then(|i| i.set_metadata(METADATA_JOB, "job1"))
        .expect("mark");
    (fake, store)
}

#[tokio::test]
async fn the_executor_rolls_back_what_is_provably_the_jobs() {
    let (fake, store) = crashed_world();
    let t = trail(vec![begin(), Step::Clone { dest: dst() }], "sync");
    let outcome = recover(&t, Some(store), Duration::from_secs(5)).await;
    let Recovered::Ended(Outcome::Error(error), done) = outcome else {
        panic!("ended: {outcome:?}");
    };
    assert_eq!(error.data.kind, "cancelled");
    assert!(
        fake.image("images/new").is_none(),
        "the clone is gone: {done:?}"
    );
    let source = fake.image("vms/vm-disk").expect("source");
    assert!(
        source.snapshots.iter().all(|(s, _)| s != TEMP),
        "{source:?}"
    );
}

#[tokio::test]
async fn an_image_that_is_not_the_jobs_is_left_alone() {
    let (fake, store) = crashed_world();
    store
        .open(&dst())
        .and_then(|i| i.set_metadata(METADATA_JOB, "another-job"))
        .expect("remark");
    // and not hanging off this job's snapshot: another job's name
    let mut t = trail(vec![begin(), Step::Clone { dest: dst() }], "sync");
    if let Step::Begin { temp_snap, .. } = &mut t.steps[0] {
        *temp_snap = "rbdsnapd-tmp-other".into();
    }
    let outcome = recover(&t, Some(store), Duration::from_secs(5)).await;
    assert!(matches!(outcome, Recovered::Ended(..)), "{outcome:?}");
    assert!(
        fake.image("images/new").is_some(),
        "someone else's image kept"
    );
}

#[tokio::test]
async fn a_failing_or_stalled_cluster_keeps_the_job_pending() {
    let t = trail(vec![begin(), Step::Clone { dest: dst() }], "sync");
    assert!(matches!(
        recover(&t, None, Duration::from_secs(5)).await,
        Recovered::Pending(_)
    ));
    let (fake, store) = crashed_world();
    fake.inject("open", Fault::Slow(Duration::from_millis(500)), 1);
    let outcome = recover(&t, Some(store), Duration::from_millis(100)).await;
    let Recovered::Pending(why) = outcome else {
        panic!("pending: {outcome:?}");
    };
    assert!(why.contains("did not finish"), "{why}");
}

#[test]
fn a_pause_without_its_resume_is_left_to_a_guard_that_resumes() {
    let paused = trail(vec![begin(), Step::Pause], "sync");
    assert!(paused.maybe_paused() && !paused.maybe_frozen());
    let both = trail(vec![begin(), Step::Freeze, Step::Pause], "sync");
    assert_eq!(
        both.window(),
        crate::snapshot::Window {
            thaw: true,
            resume: true
        }
    );
    let done = trail(
        vec![
            begin(),
            Step::Freeze,
            Step::Pause,
            Step::Resumed,
            Step::Thawed,
        ],
        "sync",
    );
    assert!(!done.maybe_paused() && !done.maybe_frozen());
}

#[test]
fn the_sweep_asks_about_each_job_when_it_reaches_its_snapshot() {
    use crate::snapshot::fakes::FakeHv;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let fake = Fake::standard();
    let store = FakeStore(Arc::clone(&fake));
    let disk = store.open(&src()).expect("source");
    for job in ["orphan", "started-meanwhile"] {
        disk.create_snapshot(&format!("rbdsnapd-tmp-{job}"))
            .expect("temp snapshot");
    }
    // a job registered after the sweep began: known by the time its
    // snapshot is looked at, which a set made up front would not know
    let asked = AtomicUsize::new(0);
    let known = |job_id: &str| {
        asked.fetch_add(1, Ordering::SeqCst);
        job_id == "started-meanwhile"
    };
    let orphans = sweep(&FakeHv(Arc::clone(&fake)), &store, &known, true).expect("sweep");
    assert_eq!(asked.load(Ordering::SeqCst), 2);
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(orphans[0].snapshot, "rbdsnapd-tmp-orphan");
    let left: Vec<String> = disk.snapshots().expect("snapshots");
    assert_eq!(
        left,
        ["rbdsnapd-tmp-started-meanwhile"],
        "the new job's snapshot was removed"
    );
}
