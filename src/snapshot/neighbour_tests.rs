//! The workflow against its neighbours: what an operator does to a guarded
//! domain (a pause keeps the guard, since the freeze lives in the paused
//! memory; a shutdown or an undefine ends it), and a disk of another
//! cluster.

use std::time::Duration;

use super::fakes::{Fake, UUID};
use super::tests::{assert_untouched, go, guards_for, request, settings};
use super::{SnapshotErrorKind, SnapshotRequest, Window};
use crate::libvirt::{DiskSource, DomainState};

fn freeze(fake: &Fake) {
    fake.world
        .lock()
        .expect("world")
        .frozen
        .insert(UUID.into(), true);
}

#[tokio::test]
async fn a_paused_guest_keeps_its_guard_and_is_thawed_once_it_runs() {
    let fake = Fake::standard();
    freeze(&fake);
    fake.set_state(UUID, DomainState::Paused);
    let guards = guards_for(&fake);
    guards
        .arm(
            UUID,
            "job1",
            "late freeze".into(),
            Window::FREEZE,
            None,
            None,
        )
        .await;
    // several attempts while paused: each refused, none ends the guard
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let guard = guards.get(UUID).expect("the guard survived the pause");
    assert!(guard.attempts >= 2, "{guard:?}");
    assert!(guard.last_error.contains("paused"), "{guard:?}");
    assert!(fake.frozen(), "nothing could thaw a paused guest");
    fake.set_state(UUID, DomainState::Running);
    tokio::time::timeout(Duration::from_secs(10), guards.wait_cleared(UUID))
        .await
        .expect("thawed once it ran");
    assert!(!fake.frozen(), "the guard cleared without thawing");
}

#[tokio::test]
async fn a_guest_shut_off_or_gone_ends_its_guard() {
    for gone in [false, true] {
        let fake = Fake::standard();
        freeze(&fake);
        if gone {
            fake.world.lock().expect("world").domains.clear();
        } else {
            fake.set_state(UUID, DomainState::Shutoff);
        }
        let guards = guards_for(&fake);
        guards
            .arm(
                UUID,
                "job1",
                "late freeze".into(),
                Window::FREEZE,
                None,
                None,
            )
            .await;
        tokio::time::timeout(Duration::from_secs(5), guards.wait_cleared(UUID))
            .await
            .expect("a stopped guest needs no guard");
    }
}

fn name_monitors(fake: &Fake, target: &str, hosts: &[&str]) {
    let mut w = fake.world.lock().expect("world");
    for disk in w.domains.iter_mut().flat_map(|d| d.disks.iter_mut()) {
        if let (true, DiskSource::Rbd(rbd)) = (disk.target == target, &mut disk.source) {
            rbd.hosts = hosts.iter().map(|h| h.to_string()).collect();
        }
    }
}

#[tokio::test]
async fn a_disk_of_another_cluster_is_refused_before_any_freeze() {
    let fake = Fake::standard();
    // the fake cluster's monitor is 127.0.0.1:6789; vdb names another one
    name_monitors(&fake, "vdb", &["127.0.0.1:6790"]);
    let req = SnapshotRequest {
        disks: vec!["vda".into(), "vdb".into()],
        ..request()
    };
    let err = go(&fake, &req, &settings()).await.expect_err("refused");
    assert_eq!(err.kind, SnapshotErrorKind::DiskOtherCluster, "{err}");
    assert!(
        err.message
            .contains("disk vdb names monitors 127.0.0.1:6790"),
        "{err}"
    );
    assert!(
        !fake.log().iter().any(|c| c.starts_with("freeze")),
        "{:?}",
        fake.log()
    );
    assert_untouched(&fake, "other cluster");
}

#[tokio::test]
async fn a_disk_naming_our_monitor_or_none_is_snapshotted() {
    for hosts in [
        &["localhost:6789"][..],
        &["[::ffff:127.0.0.1]:3300", "127.0.0.1"],
        &[],
    ] {
        let fake = Fake::standard();
        name_monitors(&fake, "vda", hosts);
        go(&fake, &request(), &settings())
            .await
            .expect("our cluster");
    }
}
