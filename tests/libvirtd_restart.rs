//! libvirtd restarted under the real daemon (the bed's libvirtd, through
//! `dev/testbed restart-libvirtd`; the guest keeps running): while idle,
//! requests fail fast with `libvirt_unavailable` and work again once it is
//! back; in the middle of a freeze, the daemon keeps thawing until the
//! restarted libvirtd lets it, and the guest ends thawed with nothing left
//! in Ceph.

mod common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::daemon::{self, DaemonProc};
use serde_json::json;

/// The tests restart the one libvirtd and share the guest: one at a time.
static LIBVIRTD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn restart_libvirtd(down_secs: f64) -> thread::JoinHandle<()> {
    let testbed = concat!(env!("CARGO_MANIFEST_DIR"), "/dev/testbed");
    thread::spawn(move || {
        let out = Command::new(testbed)
            .args(["restart-libvirtd", "--down-secs", &down_secs.to_string()])
            .output()
            .expect("run dev/testbed");
        assert!(
            out.status.success(),
            "restart-libvirtd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
}

fn start(bed: &daemon::Bed, guest: &common::Guest) -> DaemonProc {
    bed.launch()
        .libvirt_uri(&guest.uri)
        .extra("[snapshot]\nquiesce = \"required\"\nfreeze_deadline_secs = 10.0\n[libvirt]\nagent_timeout_secs = 10.0")
        .start()
}

fn snapshot_works(d: &DaemonProc, guest: &common::Guest, what: &str) {
    let image = common::unique("after-restart");
    let answer = d.connect().call(
        "snapshot.create",
        json!({"domain": guest.name, "image": image}),
    );
    assert!(answer.is_ok(), "{what}: {:?}", answer.0);
    assert_eq!(answer.result()["consistency"], "filesystem", "{what}");
    let deleted = d
        .connect()
        .call("snapshot.delete", json!({"pool": "images", "image": image}));
    assert!(deleted.is_ok(), "{:?}", deleted.0);
}

#[test]
fn while_idle_requests_fail_fast_then_work_again() {
    let (Some(bed), Some(guest)) = (daemon::bed(), common::guest()) else {
        return;
    };
    let _one = LIBVIRTD.lock().unwrap_or_else(|p| p.into_inner());
    let d = start(&bed, &guest);
    assert_eq!(d.status()["libvirt"]["connected"], true);
    let restart = restart_libvirtd(3.0);
    let (mut unavailable, mut slowest) = (0, Duration::ZERO);
    while !restart.is_finished() {
        let asked = Instant::now();
        let answer = d
            .connect()
            .call("domain.disks", json!({"domain": guest.name}));
        slowest = slowest.max(asked.elapsed());
        if !answer.is_ok() {
            answer.assert_error(1030, "libvirt_unavailable", "libvirtd down");
            unavailable += 1;
        }
        thread::sleep(Duration::from_millis(100));
    }
    restart.join().expect("restart");
    assert!(unavailable > 0, "no request saw libvirtd down");
    assert!(
        slowest < Duration::from_secs(8),
        "a request took {slowest:?}"
    );
    // back: the daemon reconnects on its own (every 3 s)
    let until = Instant::now() + Duration::from_secs(30);
    while d.status()["libvirt"]["connected"] != true {
        assert!(Instant::now() < until, "never reconnected: {}", d.status());
        thread::sleep(Duration::from_millis(200));
    }
    snapshot_works(&d, &guest, "after the restart");
    eprintln!("libvirtd restart while idle: {unavailable} requests refused, slowest {slowest:?}");
}

#[test]
fn during_a_freeze_the_guest_is_thawed_once_libvirtd_is_back() {
    let (Some(bed), Some(guest)) = (daemon::bed(), common::guest()) else {
        return;
    };
    let _one = LIBVIRTD.lock().unwrap_or_else(|p| p.into_inner());
    let d = start(&bed, &guest);
    // the freeze call is in flight for 3 s: libvirtd goes away under it
    guest.write_file("/etc/rbdsnapd-test/freeze-delay", b"3");
    let image = common::unique("libvirtd-restart");
    let mut conn = d.connect();
    let id = conn.send_create(json!({"domain": guest.name, "image": image}));
    if let Err(e) = conn.until_phase(&id, "freeze") {
        d.fail(&e);
    }
    thread::sleep(Duration::from_millis(500));
    restart_libvirtd(2.0).join().expect("restart");
    let answer = conn.wait_for(&id);
    // asked the moment the answer came
    let status = guest.agent(json!({"execute": "guest-fsfreeze-status"}));
    guest.write_file("/etc/rbdsnapd-test/freeze-delay", b"");
    assert_eq!(status, json!("thawed"), "answer: {:?}", answer.0);
    if answer.is_ok() {
        assert_eq!(
            answer.result()["consistency"],
            "filesystem",
            "{:?}",
            answer.0
        );
        let deleted = d
            .connect()
            .call("snapshot.delete", json!({"pool": "images", "image": image}));
        assert!(deleted.is_ok(), "{:?}", deleted.0);
    } else {
        assert!(
            !bed.ceph.exists(&format!("images/{image}")),
            "failed, but made an image: {:?}",
            answer.0
        );
    }
    assert!(bed.ceph.temp_snapshots(&guest.image).is_empty());
    snapshot_works(&d, &guest, "after the restart");
    eprintln!("libvirtd restart mid-freeze: answer {:?}", answer.0);
}
