//! Ceph failing under the real daemon, on extra clusters the tests start
//! and kill themselves (never the shared bed): the mon gone at request
//! time, and the OSD killed in the middle of a flatten.

mod common;

use std::time::{Duration, Instant};

use common::daemon;
use common::extra::ExtraCluster;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

#[test]
fn a_dead_mon_gives_ceph_unavailable_and_the_daemon_keeps_serving() {
    let Some(bed) = daemon::bed() else { return };
    let extra = ExtraCluster::up(&bed.ceph, 300, "memstore");
    let d = bed
        .launch()
        .libvirt_uri(&extra.testdrv_uri())
        .ceph_conf(std::path::Path::new(&extra.conf))
        .start();
    kill(Pid::from_raw(extra.pid("mon")), Signal::SIGKILL).expect("kill the mon");
    let started = Instant::now();
    let answer = d.connect().call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-13", "image": common::unique("monless")}),
    );
    let took = started.elapsed();
    answer.assert_error(1031, "ceph_unavailable", "snapshot with the mon down");
    assert!(
        took < Duration::from_secs(30),
        "failed after {took:?} (client timeouts are 10 s)"
    );
    // everything that needs no mon still answers
    let disks = d
        .connect()
        .call("domain.disks", json!({"domain": "rbdsnapd-test-13"}));
    assert!(disks.is_ok(), "{:?}", disks.0);
    let status = d.status();
    assert_eq!(status["jobs_in_flight"], 0, "{status}");
    eprintln!("mon down: ceph_unavailable after {took:?}");
}

#[test]
fn an_osd_killed_mid_flatten_fails_clearly_and_is_rolled_back_once_it_returns() {
    let Some(bed) = daemon::bed() else { return };
    let extra = ExtraCluster::up(&bed.ceph, 400, "bluestore");
    let ceph = extra.ceph(&bed.ceph);
    let source = "vms/testdrv-14-vda";
    let _big = common::BigDisk::new(&ceph, source, "1024M", "640M");
    let d = bed
        .launch()
        .libvirt_uri(&extra.testdrv_uri())
        .ceph_conf(std::path::Path::new(&extra.conf))
        .extra("[snapshot]\nflatten_stall_secs = 15")
        .start();
    let image = common::unique("osdloss");
    let mut conn = d.connect();
    let id = conn.send_create(json!({"domain": "rbdsnapd-test-14", "image": image}));
    // wait until the flatten runs, then take the OSD away
    if let Err(e) = conn.until_phase(&id, "flatten") {
        d.fail(&e);
    }
    kill(Pid::from_raw(extra.pid("osd.0")), Signal::SIGKILL).expect("kill the OSD");
    let killed = Instant::now();
    let answer = conn.wait_for(&id);
    let took = killed.elapsed();
    let kind = answer.kind().to_string();
    assert!(
        kind == "ceph_unavailable" || kind == "ceph_error",
        "answer: {:?}",
        answer.0
    );
    assert!(took < Duration::from_secs(90), "the error took {took:?}");
    let failures = answer.error()["data"]["rollback_failures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !failures.is_empty(),
        "with the OSD gone the rollback cannot finish: {:?}",
        answer.0
    );
    let status = d.status();
    assert_eq!(
        status["recovery"]["pending"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );

    let mut osd = extra.restart_osd();
    let until = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let status = d.status();
        if status["recovery"]["pending"] == json!([]) {
            break status;
        }
        assert!(Instant::now() < until, "recovery never finished: {status}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let exists = ceph.exists(&format!("images/{image}"));
    let temps = ceph.temp_snapshots(source);
    let _ = osd.kill();
    let _ = osd.wait();
    eprintln!(
        "osd loss: error after {took:?}; recovered: {}",
        status["recovery"]["recovered"]
    );
    assert!(!exists, "the partial clone was removed");
    assert!(temps.is_empty(), "temporary snapshots left: {temps:?}");
    assert_eq!(status["recovery"]["recovered"], 1, "{status}");
}
