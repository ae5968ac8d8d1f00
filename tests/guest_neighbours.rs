//! The real guest and what an operator does next to the daemon: a guest
//! paused while its thaw guard waits for a late freeze keeps the guard and
//! ends thawed; the domain's agent timeout is left as it was found.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{self, DaemonProc};
use serde_json::{json, Value};

/// The tests share one guest and its hook: one at a time.
static GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn start(bed: &daemon::Bed, guest: &common::Guest) -> DaemonProc {
    let extra = "[snapshot]\nfreeze_deadline_secs = 2.0\n[libvirt]\nagent_timeout_secs = 2.0";
    bed.launch().libvirt_uri(&guest.uri).extra(extra).start()
}

fn guards(d: &DaemonProc) -> Vec<Value> {
    d.status()["guests_at_risk"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The agent response timeout libvirt holds for the guest (its status file).
fn agent_timeout(guest: &common::Guest) -> i32 {
    let status = std::fs::read_to_string(format!("/run/libvirt/qemu/{}.xml", guest.name))
        .expect("libvirt's status file of the guest");
    let (_, after) = status.split_once("<agentTimeout>").expect("agentTimeout");
    let (value, _) = after
        .split_once("</agentTimeout>")
        .expect("agentTimeout end");
    value.trim().parse().expect("a number")
}

fn set_agent_timeout(guest: &common::Guest, seconds: i32) {
    let script = format!(
        "import libvirt\nc = libvirt.open({uri:?})\n\
         c.lookupByName({name:?}).agentSetResponseTimeout({seconds}, 0)\n",
        uri = guest.uri,
        name = guest.name
    );
    let done = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .status()
        .expect("python3-libvirt");
    assert!(done.success(), "agentSetResponseTimeout");
}

#[test]
fn a_guest_paused_while_guarded_keeps_its_guard_and_ends_thawed() {
    let (Some(bed), Some(guest)) = (daemon::bed(), common::guest()) else {
        return;
    };
    let _one = GUEST.lock().unwrap_or_else(|p| p.into_inner());
    let d = start(&bed, &guest);
    // the hook sleeps 12 s before qemu-ga freezes: the freeze lands long
    // after the request answered, while a guard waits for it
    guest.hook("freeze-delay", "12");
    let image = common::unique("paused-guard");
    let answer = d.connect().call(
        "snapshot.create",
        json!({"domain": guest.name, "image": image, "quiesce": "required"}),
    );
    assert!(
        !answer.is_ok(),
        "a 12 s hook cannot fit a 2 s deadline: {answer:?}"
    );
    let armed = guards(&d);
    assert_eq!(
        armed.len(),
        1,
        "a guard waits for the late freeze: {armed:?}"
    );
    let (_conn, dom) = guest.domain();
    // an operator's pause (virsh suspend) while the guard is on: the
    // hook inside the guest stops with the vCPUs
    dom.suspend().expect("suspend");
    let paused_at = Instant::now();
    let mut said_paused = false;
    while paused_at.elapsed() < Duration::from_secs(20) {
        let now = guards(&d);
        if now.len() != 1 {
            let _ = dom.resume();
            panic!("the guard left a paused guest: {now:?}");
        }
        said_paused |= now[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("paused"));
        std::thread::sleep(Duration::from_millis(500));
    }
    dom.resume().expect("resume");
    assert!(said_paused, "the guard said why it waits: {:?}", guards(&d));
    // the hook finishes, the freeze lands, the guard thaws it
    let until = Instant::now() + Duration::from_secs(60);
    while !guards(&d).is_empty() {
        assert!(
            Instant::now() < until,
            "the guard never cleared: {:?}",
            guards(&d)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = guest.freeze_status();
    guest.hook("freeze-delay", "");
    assert_eq!(
        status,
        json!("thawed"),
        "the late freeze was undone after the pause"
    );
    let log = guest.read_file("/run/fsfreeze-hook.log");
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("freeze: delay 12"), "the hook ran: {log}");
    assert!(!bed.ceph.exists(&format!("images/{image}")));
    assert!(bed.ceph.temp_snapshots(&guest.image).is_empty());
}

#[test]
fn the_domain_keeps_the_agent_timeout_it_had() {
    let (Some(bed), Some(guest)) = (daemon::bed(), common::guest()) else {
        return;
    };
    let _one = GUEST.lock().unwrap_or_else(|p| p.into_inner());
    let d = start(&bed, &guest);
    for before in [-2, 17] {
        set_agent_timeout(&guest, before);
        let image = common::unique("agent-timeout");
        let made = d.connect().call(
            "snapshot.create",
            json!({"domain": guest.name, "image": image, "quiesce": "required"}),
        );
        assert!(made.is_ok(), "{made:?}");
        assert_eq!(made.result()["consistency"], "filesystem");
        assert_eq!(
            agent_timeout(&guest),
            before,
            "the job left its own timeout behind"
        );
        let deleted = d
            .connect()
            .call("snapshot.delete", json!({"pool": "images", "image": image}));
        assert!(deleted.is_ok(), "{deleted:?}");
    }
    set_agent_timeout(&guest, -2);
}
