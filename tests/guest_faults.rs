//! The guest agent misbehaving, through the real daemon and the real guest:
//! a failing fsfreeze hook, a hook that hangs past the freeze deadline
//! (whose freeze lands after the daemon gave up on it), and the agent
//! killed while the guest is frozen. The policy is honoured, nothing is
//! left in Ceph, and the guest ends thawed every time.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{self, DaemonProc};
use rbdsnapd::libvirt::AgentChannel;
use serde_json::json;

/// The tests share one guest and its hook: one at a time.
static GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn start(bed: &daemon::Bed, guest: &common::Guest) -> DaemonProc {
    let extra = "[snapshot]\nfreeze_deadline_secs = 2.0\n[libvirt]\nagent_timeout_secs = 2.0";
    bed.launch().libvirt_uri(&guest.uri).extra(extra).start()
}

fn no_traces(bed: &daemon::Bed, guest: &common::Guest, image: &str, what: &str) {
    assert!(
        !bed.ceph.exists(&format!("images/{image}")),
        "{what}: an image was made"
    );
    let temps = bed.ceph.temp_snapshots(&guest.image);
    assert!(
        temps.is_empty(),
        "{what}: temporary snapshots left: {temps:?}"
    );
}

#[test]
fn a_failing_freeze_hook_fails_required_degrades_preferred_and_leaves_the_guest_thawed() {
    let (Some(bed), Some(guest)) = (daemon::bed(), common::guest()) else {
        return;
    };
    let _one = GUEST.lock().unwrap_or_else(|p| p.into_inner());
    let d = start(&bed, &guest);
    guest.hook("freeze-fail", "1");
    let image = common::unique("hookfail");
    let required = d.connect().call(
        "snapshot.create",
        json!({"domain": guest.name, "image": image, "quiesce": "required"}),
    );
    let preferred_image = common::unique("hookfail-preferred");
    let preferred = d.connect().call(
        "snapshot.create",
        json!({"domain": guest.name, "image": preferred_image, "quiesce": "preferred"}),
    );
    guest.hook("freeze-fail", "");
    let status = guest.freeze_status();
    let preferred_exists = bed.ceph.exists(&format!("images/{preferred_image}"));
    common::engine::remove(
        &common::engine::store(&bed.ceph),
        "images",
        &preferred_image,
    );

    required.assert_error(1021, "freeze_failed", "required with a failing hook");
    assert!(
        required.error()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("hook"),
        "{:?}",
        required.0
    );
    no_traces(&bed, &guest, &image, "required");
    assert!(preferred.is_ok(), "preferred falls back: {:?}", preferred.0);
    assert_eq!(preferred.result()["consistency"], "crash");
    let reason = preferred.result()["consistency_reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("freeze failed") && reason.contains("hook"),
        "reason: {reason}"
    );
    assert!(preferred_exists, "the crash-consistent image was made");
    assert_eq!(status, json!("thawed"));
}

#[test]
fn a_hook_that_hangs_past_the_deadline_is_thawed_when_its_freeze_lands() {
    let (Some(bed), Some(guest)) = (daemon::bed(), common::guest()) else {
        return;
    };
    let _one = GUEST.lock().unwrap_or_else(|p| p.into_inner());
    let d = start(&bed, &guest);
    // the hook sleeps 5 s, then qemu-ga freezes: long after the 2 s deadline
    guest.hook("freeze-delay", "5");
    let image = common::unique("hookhang");
    let started = Instant::now();
    let answer = d.connect().call(
        "snapshot.create",
        json!({"domain": guest.name, "image": image, "quiesce": "required"}),
    );
    let took = started.elapsed();
    // the freeze lands at about 5 s, the request's thaw budget ends at
    // 2 + 2 + 1 s: either it saw the thaw confirmed, or a guard did after
    let kind = answer.kind().to_string();
    // libvirt reports an agent command that timed out as unresponsive (86)
    assert!(
        [
            "freeze_timeout",
            "freeze_failed",
            "agent_unavailable",
            "thaw_failed"
        ]
        .contains(&kind.as_str()),
        "answer: {:?}",
        answer.0
    );
    assert!(
        took < Duration::from_secs(8),
        "answered within freeze deadline + agent timeout + a few seconds ({took:?})"
    );
    let until = Instant::now() + Duration::from_secs(30);
    while d.status()["guests_at_risk"] != json!([]) {
        assert!(Instant::now() < until, "the guard never cleared");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = guest.freeze_status();
    guest.hook("freeze-delay", "");
    assert_eq!(status, json!("thawed"), "the late freeze was undone");
    no_traces(&bed, &guest, &image, "hung hook");
    let log = guest.read_file("/run/fsfreeze-hook.log");
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("freeze: delay 5"), "the hook ran: {log}");
}

#[test]
fn an_agent_killed_while_the_guest_is_frozen_is_waited_for_and_the_guest_thawed() {
    let (Some(bed), Some(guest)) = (daemon::bed(), common::guest()) else {
        return;
    };
    let _one = GUEST.lock().unwrap_or_else(|p| p.into_inner());
    // the daemon stops inside the freeze window (after the freeze, before
    // the snapshot) until the test lets it go on
    let d = bed
        .launch()
        .libvirt_uri(&guest.uri)
        .env("RBDSNAPD_TEST_PAUSE_AT", "frozen")
        .extra("[snapshot]\nfreeze_deadline_secs = 30.0\nthaw_confirm_secs = 60.0")
        .start();
    // qemu-ga cannot run anything while the guest is frozen: arm the killer
    // now. SIGKILL leaves no chance to thaw on the way out; the guest's init
    // starts the agent again 4 s later.
    guest.hook("agent-pause", "4");
    let (_conn, dom) = guest.domain();
    let killer = r#"{"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c","sleep 4; killall -9 qemu-ga"]}}"#;
    dom.qemu_agent_command(killer, 10, 0).expect("guest-exec");
    let image = common::unique("agentdeath");
    let mut conn = d.connect();
    let id = conn.send_create(json!({"domain": guest.name, "image": image, "quiesce": "required"}));
    let marker = d.dir.path().join("state").join("paused-at-frozen");
    let until = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < until, "the daemon never froze the guest");
        std::thread::sleep(Duration::from_millis(20));
    }
    let hv = common::engine::hypervisor(&guest.uri);
    let until = Instant::now() + Duration::from_secs(20);
    while hv.domain(&guest.name).expect("domain").agent != AgentChannel::Disconnected {
        assert!(Instant::now() < until, "the agent was not killed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let died = Instant::now();
    std::fs::remove_file(&marker).expect("let the daemon go on");
    let answer = conn.wait_for(&id);
    let took = died.elapsed();
    // asked the moment the answer came: the daemon thawed before answering
    let status = guest.freeze_status();
    assert_eq!(status, json!("thawed"), "answer: {:?}", answer.0);
    assert!(answer.is_ok(), "{:?}", answer.0);
    assert_eq!(
        answer.result()["consistency"],
        "filesystem",
        "{:?}",
        answer.0
    );
    assert!(
        took >= Duration::from_secs(3),
        "the daemon waited for the agent to come back ({took:?})"
    );
    let log = guest.read_file("/run/fsfreeze-hook.log");
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.trim_end().ends_with("thaw: ok"),
        "thawed by the agent: {log}"
    );
    assert!(bed.ceph.temp_snapshots(&guest.image).is_empty());
    let deleted = d
        .connect()
        .call("snapshot.delete", json!({"pool": "images", "image": image}));
    assert!(deleted.is_ok(), "{:?}", deleted.0);
    eprintln!("agent killed while frozen: answered {took:?} after its death, guest thawed");
}
