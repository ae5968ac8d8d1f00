//! The workflow beside a live migration: no freeze while libvirt migrates
//! the domain, and a guarded guest that leaves the host stays reported
//! (it may run frozen elsewhere) until it comes back or an operator
//! dismisses it.

use std::time::Duration;

use super::fakes::{Fake, UUID};
use super::tests::{assert_untouched, go, guards_for, request, settings};
use super::{SnapshotErrorKind, ThawGuards, Window};
use crate::libvirt::{Migration, MigrationDirection};

fn freeze(fake: &Fake) {
    fake.world
        .lock()
        .expect("world")
        .frozen
        .insert(UUID.into(), true);
}

async fn arm(guards: &std::sync::Arc<ThawGuards>) {
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
}

/// Wait until the guard reports the domain gone from the host.
async fn wait_left_host(guards: &ThawGuards) -> super::GuardInfo {
    for _ in 0..100 {
        if let Some(guard) = guards.get(UUID).filter(|g| g.left_host) {
            return guard;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never reported as left: {:?}", guards.get(UUID));
}

#[tokio::test]
async fn a_migrating_domain_is_refused_busy_before_any_freeze() {
    for direction in [MigrationDirection::Out, MigrationDirection::In] {
        let fake = Fake::standard();
        fake.set_migration(
            UUID,
            Some(Migration {
                direction,
                processed_bytes: Some(3 << 20),
                total_bytes: Some(64 << 20),
            }),
        );
        let err = go(&fake, &request(), &settings())
            .await
            .expect_err("refused");
        assert_eq!(err.kind, SnapshotErrorKind::Busy, "{err}");
        assert!(err.message.contains("migrat"), "{err}");
        assert!(err.message.contains("3 of 64 MiB"), "{err}");
        assert!(
            !fake.log().iter().any(|c| c.starts_with("freeze")),
            "{:?}",
            fake.log()
        );
        assert_untouched(&fake, "migrating");
        // once the migration ended (it stayed, a failed one), snapshots go on
        fake.set_migration(UUID, None);
        go(&fake, &request(), &settings())
            .await
            .expect("after the migration");
    }
}

#[tokio::test]
async fn a_guest_that_migrates_away_stays_at_risk_and_is_thawed_when_it_comes_back() {
    for persistent in [true, false] {
        let fake = Fake::standard();
        let domain = fake.world.lock().expect("world").domains[0].clone();
        freeze(&fake);
        // the agent does not thaw (a hook hangs), then the guest leaves
        fake.inject("thaw", super::fakes::Fault::Fail, 3);
        let guards = guards_for(&fake);
        arm(&guards).await;
        fake.migrate_away(UUID, persistent);
        let guard = wait_left_host(&guards).await;
        assert!(
            guard.last_error.contains("rbdsnapctl guard dismiss"),
            "{guard:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            guards.get(UUID).is_some(),
            "a departed guest keeps its guard"
        );
        // it migrates back, still frozen: the guard reaches it and thaws
        fake.migrate_home(domain);
        tokio::time::timeout(Duration::from_secs(15), guards.wait_cleared(UUID))
            .await
            .expect("thawed once back");
        assert!(!fake.frozen(), "the guard cleared without thawing");
    }
}

#[tokio::test]
async fn a_dismissed_guard_ends_and_no_later_attempt_brings_it_back() {
    let fake = Fake::standard();
    freeze(&fake);
    let guards = guards_for(&fake);
    fake.migrate_away(UUID, false);
    arm(&guards).await;
    wait_left_host(&guards).await;
    let (dismissed, journalled) = guards.dismiss(UUID).await.expect("a guard");
    journalled.expect("journalled");
    assert_eq!(dismissed.job_id, "job1");
    assert!(guards.get(UUID).is_none());
    assert!(guards.dismiss(UUID).await.is_none(), "dismissed once");
    // the old guard's loop notices and stops; a new guard is its own
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(guards.get(UUID).is_none(), "{:?}", guards.get(UUID));
}
