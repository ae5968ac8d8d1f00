//! The workflow against its neighbours: what an operator does to a guarded
//! domain (a pause keeps the guard, since the freeze lives in the paused
//! memory; a shutdown ends it, an undefine leaves it reported), and a disk
//! of another cluster.

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
async fn a_guest_shut_off_ends_its_guard_and_one_undefined_stays_reported() {
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
        let cleared = tokio::time::timeout(Duration::from_secs(2), guards.wait_cleared(UUID)).await;
        if gone {
            // libvirt cannot tell an undefined domain from a transient one
            // that migrated away: it may run frozen elsewhere
            assert!(
                cleared.is_err(),
                "a domain gone from the host stays at risk"
            );
            let guard = guards.get(UUID).expect("guard");
            assert!(guard.left_host, "{guard:?}");
        } else {
            cleared.expect("a guest shut off needs no guard");
        }
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

fn agent_timeout(fake: &Fake) -> Option<i32> {
    fake.world
        .lock()
        .expect("world")
        .agent_timeouts
        .get(UUID)
        .copied()
}

#[tokio::test]
async fn the_domain_gets_its_agent_timeout_back() {
    // never set: libvirt's default (block) afterwards, not ours
    let fake = Fake::standard();
    go(&fake, &request(), &settings()).await.expect("snapshot");
    assert_eq!(
        agent_timeout(&fake),
        Some(crate::libvirt::AGENT_TIMEOUT_LIBVIRT_DEFAULT)
    );
    // an operator's value survives a job, and a failed job too
    let fake = Fake::standard();
    fake.world
        .lock()
        .expect("world")
        .agent_timeouts
        .insert(UUID.into(), 30);
    go(&fake, &request(), &settings()).await.expect("snapshot");
    assert_eq!(agent_timeout(&fake), Some(30));
    fake.inject("snap_create", super::fakes::Fault::Fail, 1);
    let req = SnapshotRequest {
        image: "other".into(),
        ..request()
    };
    go(&fake, &req, &settings()).await.expect_err("failed job");
    assert_eq!(agent_timeout(&fake), Some(30));
}

#[tokio::test]
async fn a_guarded_domain_gets_its_agent_timeout_back_when_the_guard_clears() {
    let fake = Fake::standard();
    fake.world
        .lock()
        .expect("world")
        .agent_timeouts
        .insert(UUID.into(), 30);
    fake.inject("thaw", super::fakes::Fault::Fail, 14);
    let guards = guards_for(&fake);
    let hooks = super::JobHooks {
        guards: std::sync::Arc::clone(&guards),
        ..Default::default()
    };
    let err = super::tests::go_with(&fake, &request(), &settings(), hooks)
        .await
        .expect_err("thaw not confirmed in time");
    assert_eq!(err.kind, SnapshotErrorKind::ThawFailed, "{err}");
    // the guard still thaws through the agent: it keeps the bound
    assert_ne!(agent_timeout(&fake), Some(30));
    tokio::time::timeout(Duration::from_secs(60), guards.wait_cleared(UUID))
        .await
        .expect("guard cleared");
    // clear() gives the timeout back right after it notifies
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(agent_timeout(&fake), Some(30));
}
