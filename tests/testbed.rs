//! Smoke tests that prove the test bed is real: a Ceph cluster that stores
//! and returns image data, libvirt domains whose disks are that cluster's
//! images, and a booted guest whose agent answers and holds what we write.

mod common;

use std::time::{Duration, Instant};

#[test]
fn ceph_cluster_stores_an_image_and_returns_its_bytes() {
    let Some(ceph) = common::ceph() else { return };
    let image = format!("{}/{}", ceph.pool_vms, common::unique("smoke"));
    let data = common::pattern(6 << 20, 7);
    ceph.rbd(&["import", "--no-progress", "-", &image], Some(&data));
    let info: serde_json::Value =
        serde_json::from_slice(&ceph.rbd(&["info", "--format", "json", &image], None))
            .expect("rbd info is JSON");
    assert_eq!(info["size"].as_u64(), Some(data.len() as u64));
    let back = ceph.rbd(&["export", "--no-progress", &image, "-"], None);
    ceph.rbd(&["rm", "--no-progress", &image], None);
    assert!(
        back == data,
        "image read back differs from what was written"
    );
}

#[test]
fn librados_through_the_ceph_crate_reaches_the_bed_cluster() {
    let Some(ceph) = common::ceph() else { return };
    let rados = ceph::ceph::connect_to_ceph(&ceph.id, &ceph.conf).expect("connect to the bed");
    let fsid = rados.rados_fsid().expect("fsid");
    assert_eq!(fsid.to_string(), ceph.fsid);
    let ioctx = rados
        .get_rados_ioctx(&ceph.pool_vms)
        .expect("open vms pool");
    let name = common::unique("smoke-object");
    let data = common::pattern(100_000, 3);
    ioctx
        .rados_object_write_full(&name, &data)
        .expect("write object");
    let mut back = Vec::with_capacity(200_000);
    ioctx
        .rados_object_read(&name, &mut back, 0)
        .expect("read object");
    ioctx.rados_object_remove(&name).expect("remove object");
    assert!(back == data, "object read back differs");
    // the IoCtx must go before the cluster handle it belongs to
    drop(ioctx);
    drop(rados);
}

#[test]
fn test_driver_domains_have_disks_on_the_bed_cluster() {
    let (Some(ceph), Some(drv)) = (common::ceph(), common::test_driver()) else {
        return;
    };
    virt::error::clear_error_callback();
    let conn = virt::connect::Connect::open(Some(&drv.uri)).expect("open test driver");
    let dom = conn
        .lookup_domain_by_name("rbdsnapd-test-01")
        .expect("test domain");
    assert!(
        dom.is_active().expect("state"),
        "test domains start running"
    );
    let xml = dom.xml_desc(0).expect("xml");
    let image = format!("{}/testdrv-01-vda", ceph.pool_vms);
    assert!(xml.contains(&format!("name='{image}'")) || xml.contains(&format!("name=\"{image}\"")));
    assert!(xml.contains(ceph.mon_v1.split(':').nth(1).expect("port")));
    // the disk the domain points at is a real image of the cluster
    ceph.rbd(&["info", &image], None);
    let off = conn
        .lookup_domain_by_name("rbdsnapd-test-off")
        .expect("stopped domain");
    assert!(!off.is_active().expect("state"));
}

#[test]
fn libvirtd_lists_the_running_guest() {
    let Some(guest) = common::guest() else { return };
    let (conn, dom) = guest.domain();
    assert!(dom.is_active().expect("state"), "guest is running");
    let running = conn
        .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        .expect("list domains");
    let names: Vec<String> = running.iter().filter_map(|d| d.name().ok()).collect();
    assert!(
        names.contains(&guest.name),
        "{} not in {names:?}",
        guest.name
    );
    let xml = dom.xml_desc(0).expect("xml");
    assert!(xml.contains("protocol='rbd'") || xml.contains("protocol=\"rbd\""));
    assert!(xml.contains(&guest.image), "guest disk is its RBD image");
}

#[test]
fn guest_agent_answers_ping() {
    let Some(guest) = common::guest() else { return };
    let started = Instant::now();
    let reply = guest.agent(serde_json::json!({"execute": "guest-ping"}));
    assert_eq!(reply, serde_json::json!({}));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn file_written_in_the_guest_through_the_agent_reads_back() {
    let Some(guest) = common::guest() else { return };
    let path = format!("{}/{}", guest.mount, common::unique("smoke"));
    let data = common::pattern(150_000, 11);
    guest.write_file(&path, &data);
    let back = guest.read_file(&path);
    assert_eq!(back.len(), data.len());
    assert!(back == data, "file read back from the guest differs");
    // the file lives on the RBD-backed ext4, not the guest's tmpfs
    let mounts = String::from_utf8(guest.read_file("/proc/mounts")).expect("utf-8");
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with("/dev/vda ") && l.contains(&format!(" {} ext4 ", guest.mount))),
        "ext4 on /dev/vda at {}: {mounts}",
        guest.mount
    );
}

/// Runs one test of this binary again with the bed's variables removed.
fn rerun_without_bed(test: &str, ci: bool) -> std::process::Output {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"]);
    for (key, _) in std::env::vars() {
        if key.starts_with("RBDSNAPD_TEST_") || key == "RBDSNAPD_REQUIRE_BED" || key == "CI" {
            cmd.env_remove(key);
        }
    }
    if ci {
        cmd.env("CI", "true");
    }
    cmd.output().expect("rerun the test binary")
}

#[test]
fn a_missing_bed_fails_loudly_under_ci_and_says_so_elsewhere() {
    let under_ci = rerun_without_bed("guest_agent_answers_ping", true);
    let text =
        String::from_utf8_lossy(&under_ci.stdout) + String::from_utf8_lossy(&under_ci.stderr);
    assert!(!under_ci.status.success(), "must fail under CI: {text}");
    assert!(text.contains("test bed part `guest` is missing"), "{text}");

    let local = rerun_without_bed("guest_agent_answers_ping", false);
    let text = String::from_utf8_lossy(&local.stdout) + String::from_utf8_lossy(&local.stderr);
    assert!(local.status.success(), "{text}");
    assert!(
        text.contains("SKIPPED: no test bed guest"),
        "a skip is never silent: {text}"
    );
}

use common::extra::ExtraCluster;

fn ceph_cli(conf: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("timeout")
        .args(["60", "ceph", "--conf", conf])
        .args(args)
        .output()
        .expect("run ceph")
}

#[test]
fn a_second_cluster_runs_beside_the_first_without_touching_it() {
    let Some(first) = common::ceph() else { return };
    let second = ExtraCluster::up(&first, 100, "memstore");
    let fsid_of = |conf: &str| {
        String::from_utf8_lossy(&ceph_cli(conf, &["fsid"]).stdout)
            .trim()
            .to_string()
    };
    let second_fsid = fsid_of(&second.conf);
    assert_eq!(
        fsid_of(&first.conf),
        first.fsid,
        "the first cluster still answers as itself"
    );
    assert_eq!(
        second_fsid.len(),
        36,
        "second cluster answered: {second_fsid:?}"
    );
    assert_ne!(second_fsid, first.fsid);
    assert!(
        second.down(),
        "the second cluster stops and leaves no process behind"
    );
}

#[test]
fn a_dead_osd_makes_client_calls_fail_in_seconds_not_hang() {
    let Some(first) = common::ceph() else { return };
    let extra = ExtraCluster::up(&first, 200, "memstore");
    let osd = extra.state["cluster"]["pids"]["osd.0"]
        .as_i64()
        .expect("osd pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(osd as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the OSD");
    let started = Instant::now();
    let out = std::process::Command::new("timeout")
        .args([
            "120",
            "rados",
            "--conf",
            &extra.conf,
            "-p",
            "vms",
            "stat",
            "rbd_directory",
        ])
        .output()
        .expect("run rados");
    let took = started.elapsed();
    assert!(!out.status.success(), "a call with no OSD cannot succeed");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timed out"),
        "fails with a timeout: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < Duration::from_secs(30),
        "failed after {took:?}, the bed sets 10 s"
    );
}
