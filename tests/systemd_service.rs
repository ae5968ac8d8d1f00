//! The installed daemon under systemd as PID 1 (dev/testbed vm-up), with the
//! package's own units and sandbox, libvirtd's real socket and a
//! least-privilege Ceph user. Every test asserts on systemd's view
//! (`systemctl show`, `journalctl -o json`) and on what Ceph holds.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::vm::{vm, Vm};
use common::BigDisk;
use serde_json::{json, Value};

/// The installed unit's WatchdogSec= (kept as shipped).
const WATCHDOG: Duration = Duration::from_secs(30);

/// Start a snapshot on its own connection; its phases come through the
/// channel, its answer (or the client's error) through the handle.
fn start_snapshot(
    vm: &Vm,
    params: Value,
) -> (
    mpsc::Receiver<String>,
    std::thread::JoinHandle<Result<Value, String>>,
) {
    let (tx, rx) = mpsc::channel();
    let mut client = vm.client(Some(Duration::from_secs(200))).expect("connect");
    let handle = std::thread::spawn(move || {
        client
            .call("snapshot.create", params, |p| {
                let _ = tx.send(p.phase.clone());
            })
            .map_err(|e| e.to_string())
    });
    (rx, handle)
}

fn wait_phase(phases: &mpsc::Receiver<String>, phase: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if phases.recv_timeout(Duration::from_secs(1)).as_deref() == Ok(phase) {
            return;
        }
    }
    panic!("the job never reached {phase}");
}

/// Every snapshot of `image` (trash namespace too): none may be left.
fn snapshots(vm: &Vm, image: &str) -> Vec<Value> {
    serde_json::from_slice(
        &vm.ceph
            .rbd(&["snap", "ls", "--all", "--format", "json", image], None),
    )
    .expect("snap ls json")
}

fn delete(vm: &Vm, image: &str) {
    vm.call("snapshot.delete", json!({"pool": "images", "image": image}));
}

#[test]
fn a_client_s_connect_starts_the_stopped_service_and_gets_its_answer() {
    let _one = Vm::lock();
    let Some(vm) = vm() else { return };
    vm.ready();
    vm.sh("systemctl stop rbdsnapd.service");
    assert_eq!(vm.prop("rbdsnapd.service", "ActiveState"), "inactive");
    assert_eq!(vm.prop("rbdsnapd.socket", "ActiveState"), "active");
    let started = Instant::now();
    let status = vm.call("daemon.status", json!({}));
    eprintln!("activated and answered in {:?}", started.elapsed());
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"), "{status}");
    assert_eq!(status["ceph"]["connected"], true, "{status}");
    assert_eq!(status["libvirt"]["connected"], true, "{status}");
    assert_eq!(vm.prop("rbdsnapd.service", "ActiveState"), "active");
    assert_eq!(
        vm.prop("rbdsnapd.service", "TriggeredBy"),
        "rbdsnapd.socket"
    );
    // systemd's own clock: from exec to READY=1
    let micros = |name: &str| -> u64 { vm.prop("rbdsnapd.service", name).parse().expect(name) };
    let to_ready =
        micros("ActiveEnterTimestampMonotonic") - micros("ExecMainStartTimestampMonotonic");
    eprintln!("exec to READY: {} ms", to_ready / 1000);
    assert!(to_ready < 30_000_000, "{to_ready} µs to READY");
}

#[test]
fn a_real_snapshot_through_the_sandboxed_service() {
    let _one = Vm::lock();
    let Some(vm) = vm() else { return };
    vm.ready();
    // the sandbox is on the running process, not only in the unit file
    let pid = vm.main_pid();
    let proc_status = vm.sh(&format!("cat /proc/{pid}/status"));
    for line in [
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(proc_status.contains(line), "{line} not in:\n{proc_status}");
    }
    assert_eq!(vm.prop("rbdsnapd.service", "ProtectSystem"), "strict");
    assert_eq!(vm.prop("rbdsnapd.service", "MemoryDenyWriteExecute"), "yes");
    let mut families: Vec<String> = vm
        .prop("rbdsnapd.service", "RestrictAddressFamilies")
        .split_whitespace()
        .map(String::from)
        .collect();
    families.sort();
    assert_eq!(families, ["AF_INET", "AF_INET6", "AF_UNIX"]);
    assert!(!vm.prop("rbdsnapd.service", "SystemCallFilter").is_empty());
    let image = common::unique("sysd-snap");
    let result = vm.call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-02", "image": image, "pool": "images"}),
    );
    let location = format!("rbd://{}/images/{image}/snap", vm.ceph.fsid);
    assert_eq!(
        result["disks"][0]["location"],
        location.as_str(),
        "{result}"
    );
    assert_eq!(result["flattened"], true, "{result}");
    // what Ceph holds, seen with admin from the host
    let info: Value = serde_json::from_slice(&vm.ceph.rbd(
        &["info", "--format", "json", &format!("images/{image}")],
        None,
    ))
    .expect("info json");
    assert!(info.get("parent").is_none(), "flattened: {info}");
    assert!(vm.ceph.exists(&format!("images/{image}@snap")));
    assert!(
        snapshots(&vm, "vms/testdrv-02-vda").is_empty(),
        "no temporary snapshot left"
    );
    delete(&vm, &image);
    assert!(!vm.ceph.exists(&format!("images/{image}")));
}

#[test]
fn job_lines_carry_job_id_domain_and_image_and_levels_map_to_priority() {
    let _one = Vm::lock();
    let Some(vm) = vm() else { return };
    vm.ready();
    let image = common::unique("sysd-journal");
    let result = vm.call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-04", "image": image, "pool": "images"}),
    );
    let job_id = result["job_id"].as_str().expect("job_id").to_string();
    let lines = vm.journal(&format!("-u rbdsnapd.service JOB_ID={job_id}"));
    assert!(lines.len() >= 2, "the job's lines: {lines:?}");
    for line in &lines {
        assert_eq!(line["DOMAIN"], "rbdsnapd-test-04", "{line}");
        assert_eq!(line["IMAGE"], image.as_str(), "{line}");
        assert_eq!(line["PRIORITY"], "6", "info is PRIORITY 6: {line}");
    }
    // a failing job logs a warning: PRIORITY 4, with the same fields
    let answer = vm.client(None).expect("connect").call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-04", "image": image, "pool": "images"}),
        |_| {},
    );
    assert!(answer.is_err(), "the image exists: {answer:?}");
    let warnings = vm.journal(&format!("-u rbdsnapd.service IMAGE={image} PRIORITY=4"));
    assert!(
        warnings.iter().any(|l| l["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.contains("snapshot failed"))),
        "{warnings:?}"
    );
    delete(&vm, &image);
}

#[test]
fn a_stopped_daemon_is_killed_by_the_watchdog_and_the_restart_recovers() {
    let _one = Vm::lock();
    let Some(vm) = vm() else { return };
    vm.ready_with("", "concurrent_management_ops = 1");
    // big enough that a one-op-at-a-time flatten from the VM lasts seconds
    let source = "vms/testdrv-03-vda";
    let _disk = BigDisk::new(&vm.ceph, source, "512M", "256M");
    let image = common::unique("sysd-watchdog");
    let params = json!({"domain": "rbdsnapd-test-03", "image": image, "pool": "images",
                        "request_id": image});
    let (phases, first) = start_snapshot(&vm, params.clone());
    wait_phase(&phases, "flatten");
    let old = vm.main_pid();
    vm.sh(&format!("kill -STOP {old}"));
    let stopped = Instant::now();
    let deadline = WATCHDOG + Duration::from_secs(20);
    while vm.main_pid() == old || vm.prop("rbdsnapd.service", "ActiveState") != "active" {
        assert!(
            stopped.elapsed() < deadline,
            "no restart within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let restart = stopped.elapsed();
    eprintln!("SIGSTOP to a READY restart: {restart:?} (WatchdogSec {WATCHDOG:?})");
    let _ = first.join();
    let unit = vm.journal("-u rbdsnapd.service --since=-3min");
    let message = |l: &Value| l["MESSAGE"].as_str().unwrap_or_default().to_string();
    assert!(
        unit.iter().any(|l| message(l).contains("Watchdog timeout")),
        "systemd says why it killed it"
    );
    // READY (systemd's "Started") only after the new process took the
    // unfinished job from the journal
    let new_pid = vm.main_pid().to_string();
    let at = |pred: &dyn Fn(&Value) -> bool| {
        unit.iter()
            .rposition(pred)
            .unwrap_or_else(|| panic!("line not found in {unit:?}"))
    };
    let taken = at(&|l| {
        l["_PID"] == new_pid.as_str() && message(l).contains("the journal shows unfinished jobs")
    });
    let ready = at(&|l| message(l).starts_with("Started rbdsnapd"));
    assert!(taken < ready, "READY came before the journal was read");
    // a retry with the same request_id gives exactly one image
    let mut result = None;
    for _ in 0..3 {
        let mut client = vm.client(Some(Duration::from_secs(200))).expect("connect");
        if let Ok(r) = client.call("snapshot.create", params.clone(), |_| {}) {
            result = Some(r);
            break;
        }
    }
    let result = result.expect("the retry succeeds");
    assert_eq!(result["flattened"], true, "{result}");
    let listed = String::from_utf8_lossy(&vm.ceph.rbd(&["ls", "images"], None)).into_owned();
    assert_eq!(
        listed.lines().filter(|l| *l == image).count(),
        1,
        "{listed}"
    );
    assert!(
        snapshots(&vm, source).is_empty(),
        "no temporary snapshot left"
    );
    delete(&vm, &image);
}

#[test]
fn systemctl_stop_during_a_job_is_graceful() {
    let _one = Vm::lock();
    let Some(vm) = vm() else { return };
    vm.ready_with("shutdown_grace_secs = 1", "concurrent_management_ops = 1");
    let source = "vms/testdrv-05-vda";
    let _disk = BigDisk::new(&vm.ceph, source, "512M", "256M");
    let image = common::unique("sysd-stop");
    let (phases, job) = start_snapshot(
        &vm,
        json!({"domain": "rbdsnapd-test-05", "image": image, "pool": "images"}),
    );
    wait_phase(&phases, "flatten");
    let stopping = Instant::now();
    vm.sh("systemctl stop rbdsnapd.service");
    eprintln!("systemctl stop took {:?}", stopping.elapsed());
    let answer = job.join().expect("client thread");
    let err = answer.expect_err("the job is cancelled, not finished");
    assert!(err.contains("cancel") || err.contains("shutting"), "{err}");
    assert_eq!(vm.prop("rbdsnapd.service", "Result"), "success");
    assert_eq!(vm.prop("rbdsnapd.service", "ExecMainStatus"), "0");
    assert!(!vm.ceph.exists(&format!("images/{image}")), "rolled back");
    assert!(
        snapshots(&vm, source).is_empty(),
        "no temporary snapshot left"
    );
    vm.ready();
}

#[test]
fn a_configuration_error_exits_78_and_is_not_restarted() {
    let _one = Vm::lock();
    let Some(vm) = vm() else { return };
    vm.ready();
    vm.configure("no_such_key = 1", "");
    let _ = vm.run("systemctl restart rbdsnapd.service");
    vm.wait_prop(
        "rbdsnapd.service",
        "ActiveState",
        "failed",
        Duration::from_secs(30),
    );
    // longer than RestartSec: a restart would have happened by now
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(vm.prop("rbdsnapd.service", "ActiveState"), "failed");
    assert_eq!(vm.prop("rbdsnapd.service", "ExecMainStatus"), "78");
    assert_eq!(vm.prop("rbdsnapd.service", "NRestarts"), "0");
    assert_eq!(vm.prop("rbdsnapd.service", "Result"), "exit-code");
    let said = vm.journal("-u rbdsnapd.service --since=-1min");
    assert!(
        said.iter().any(|l| l["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.contains("no_such_key"))),
        "the journal names the bad key: {said:?}"
    );
    vm.ready();
}

#[test]
fn the_restart_limit_stops_a_crash_loop_and_status_names_a_degraded_backend() {
    let _one = Vm::lock();
    let Some(vm) = vm() else { return };
    vm.ready();
    // a Ceph user without a keyring: the daemon starts (READY), degraded
    vm.sh(
        "sed -i 's/^client_id = .*/client_id = \"nobody-here\"/' /etc/rbdsnapd/rbdsnapd.toml; \
           systemctl restart rbdsnapd.service",
    );
    assert_eq!(vm.prop("rbdsnapd.service", "ActiveState"), "active");
    let status = vm.prop("rbdsnapd.service", "StatusText");
    assert!(
        status.contains("ceph"),
        "STATUS names the backend: {status}"
    );
    assert!(status.to_lowercase().contains("degraded"), "{status}");
    // killed again and again: at most StartLimitBurst=5 starts a minute
    let mut kills = 0;
    let start = Instant::now();
    while vm.prop("rbdsnapd.service", "ActiveState") != "failed" {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no start limit after {kills} kills"
        );
        if vm.prop("rbdsnapd.service", "ActiveState") == "active" {
            let pid = vm.main_pid();
            if pid != 0 {
                vm.sh(&format!("kill -KILL {pid}"));
                kills += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!(
        "start limit hit after {kills} kills in {:?}",
        start.elapsed()
    );
    assert!(kills <= 5, "{kills} kills");
    assert_eq!(vm.prop("rbdsnapd.service", "ActiveState"), "failed");
    vm.ready();
}
