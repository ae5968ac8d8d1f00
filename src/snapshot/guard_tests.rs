//! The thaw guard against what an operator does to a guarded domain: a
//! pause keeps the guard (the freeze lives in the paused memory), a
//! shutdown or an undefine ends it.

use std::time::Duration;

use super::fakes::{Fake, UUID};
use super::tests::guards_for;
use super::Window;
use crate::libvirt::DomainState;

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
