//! The daemon as a process: started by systemd-socket-activate, talking
//! sd_notify (READY, WATCHDOG, STOPPING), starting degraded when Ceph is
//! down, and SIGTERM in the middle of a flatten (cancelled, rolled back,
//! exit 0).

mod common;

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{self, ImageCleanup, Msg, TempDir};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

fn assert_exit_zero(d: &daemon::DaemonProc, status: std::process::ExitStatus) {
    if status.code() != Some(0) {
        d.fail(&format!(
            "exit status {status} (signal {:?}), expected 0",
            status.signal()
        ));
    }
}

#[test]
fn socket_activation_serves_the_passed_socket() {
    let Some(bed) = daemon::bed() else { return };
    let mut d = bed.launch().socket_activated().start();
    let exe = std::fs::read_link(format!("/proc/{}/exe", d.pid())).expect("exe of the pid");
    assert!(
        exe.ends_with("rbdsnapd"),
        "systemd-socket-activate should exec rbdsnapd in place: {}",
        exe.display()
    );
    let status = d.status();
    assert_eq!(status["ceph"]["fsid"], bed.ceph.fsid.as_str(), "{status}");
    assert_eq!(status["degraded"], false, "{status}");
    let mut c = d.connect();
    let disks = c.call("domain.disks", json!({"domain": "rbdsnapd-test-09"}));
    assert_eq!(disks.result()["boot_disk"], "vda");
    drop(c);
    let unused = d.dir.path().join("unused.sock");
    assert!(
        !unused.exists(),
        "the config's socket was bound despite LISTEN_FDS"
    );
    assert!(
        d.log().contains("the activated socket"),
        "log does not say it serves the activated socket:\n{}",
        d.log()
    );
    let status = d.terminate();
    assert_exit_zero(&d, status);
    assert!(
        d.socket.exists(),
        "the daemon removed systemd's socket file (it does not own it)"
    );
}

/// Datagrams received on `sock` within `wait`, until `done` says enough.
fn collect(
    sock: &UnixDatagram,
    wait: Duration,
    got: &mut Vec<String>,
    done: impl Fn(&[String]) -> bool,
) {
    let until = Instant::now() + wait;
    let mut buf = vec![0u8; 4096];
    while !done(got) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        sock.set_read_timeout(Some(left)).expect("timeout");
        match sock.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }
}

fn has(messages: &[String], line: &str) -> usize {
    messages
        .iter()
        .filter(|m| m.lines().any(|l| l == line))
        .count()
}

fn notify_socket(dir: &Path) -> (UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    (sock, path.display().to_string())
}

#[test]
fn sd_notify_ready_watchdog_and_stopping() {
    let Some(bed) = daemon::bed() else { return };
    let dir = TempDir::new("rbdsnapd-notify");
    let (sock, path) = notify_socket(dir.path());
    let mut d = bed
        .launch()
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .start();
    let mut got = Vec::new();
    collect(&sock, Duration::from_secs(5), &mut got, |m| {
        has(m, "READY=1") == 1 && has(m, "WATCHDOG=1") >= 2
    });
    let ready: Vec<&String> = got
        .iter()
        .filter(|m| m.lines().any(|l| l == "READY=1"))
        .collect();
    assert_eq!(ready.len(), 1, "READY=1 once: {got:?}\n{}", d.log());
    assert!(
        ready[0]
            .lines()
            .any(|l| l.starts_with("STATUS=serving: libvirt up, ceph up")),
        "READY=1 without a STATUS= line saying it serves: {got:?}"
    );
    assert!(
        has(&got, "WATCHDOG=1") >= 2,
        "fewer than two WATCHDOG=1 at WATCHDOG_USEC=200000 within 5 s: {got:?}"
    );
    assert_eq!(has(&got, "STOPPING=1"), 0, "STOPPING=1 before SIGTERM");
    // the watchdog keeps coming while it serves
    let mut more = Vec::new();
    collect(&sock, Duration::from_secs(5), &mut more, |m| {
        has(m, "WATCHDOG=1") >= 2
    });
    assert!(has(&more, "WATCHDOG=1") >= 2, "watchdog stopped: {more:?}");
    let status = d.terminate();
    assert_exit_zero(&d, status);
    let mut after = Vec::new();
    collect(&sock, Duration::from_secs(2), &mut after, |m| {
        has(m, "STOPPING=1") >= 1
    });
    assert_eq!(
        has(&after, "STOPPING=1"),
        1,
        "no STOPPING=1 after SIGTERM: {after:?}"
    );
    assert!(
        !d.socket.exists(),
        "socket file left behind after a clean exit"
    );
    drop(d);

    // WATCHDOG_PID naming another process: the watchdog is not ours to feed
    let path = dir.path().join("notify-other.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    let d = bed
        .launch()
        .env("NOTIFY_SOCKET", &path.display().to_string())
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", "1")
        .start();
    let mut got = Vec::new();
    collect(&sock, Duration::from_millis(700), &mut got, |_| false);
    assert_eq!(has(&got, "READY=1"), 1, "{got:?}");
    assert_eq!(
        has(&got, "WATCHDOG=1"),
        0,
        "fed a watchdog that belongs to pid 1: {got:?}\n{}",
        d.log()
    );
}

/// The bed's keyring, from its ceph.conf.
fn bed_keyring(conf: &str) -> String {
    let text = std::fs::read_to_string(conf).expect("read the bed's ceph.conf");
    text.lines()
        .find_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == "keyring").then(|| value.trim().to_string())
        })
        .expect("keyring in the bed's ceph.conf")
}

#[test]
fn degraded_start_when_ceph_is_down() {
    let Some(bed) = daemon::bed() else { return };
    let dir = TempDir::new("rbdsnapd-degraded");
    let conf = dir.path().join("ceph.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\n\
             mon host = 127.0.0.1:30899\n\
             keyring = {keyring}\n\
             auth client required = cephx\n\
             log to stderr = false\n\
             log file = {log}\n\
             admin socket = {asok}\n\
             [client]\n\
             client mount timeout = 2\n\
             rados mon op timeout = 2\n\
             rados osd op timeout = 2\n",
            keyring = bed_keyring(&bed.ceph.conf),
            log = dir.path().join("client.log").display(),
            asok = dir.path().join("client.asok").display(),
        ),
    )
    .expect("write ceph.conf");
    let (sock, path) = notify_socket(dir.path());
    let started = Instant::now();
    let d = bed
        .launch()
        .ceph_conf(&conf)
        .env("NOTIFY_SOCKET", &path)
        .start();
    let ready_after = started.elapsed();
    let mut got = Vec::new();
    collect(&sock, Duration::from_secs(5), &mut got, |m| {
        has(m, "READY=1") >= 1
    });
    let ready = got
        .iter()
        .find(|m| m.lines().any(|l| l == "READY=1"))
        .unwrap_or_else(|| d.fail(&format!("no READY=1 while degraded: {got:?}")));
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=degraded") && l.contains("ceph DOWN")),
        "READY's status does not say degraded: {ready:?}"
    );
    eprintln!("degraded daemon answered {ready_after:?} after spawn");
    assert!(
        ready_after < Duration::from_secs(10),
        "a dead cluster held readiness for {ready_after:?}"
    );

    let status = d.status();
    assert_eq!(status["degraded"], true, "{status}");
    assert_eq!(status["ceph"]["connected"], false, "{status}");
    assert_eq!(status["ceph"]["fsid"], Value::Null, "{status}");
    assert!(
        status["ceph"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "no reason given: {status}"
    );
    assert_eq!(status["libvirt"]["connected"], true, "{status}");

    let mut c = d.connect();
    let image = common::unique("daemon-degraded");
    let asked = Instant::now();
    let refused = c.call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-07", "image": image}),
    );
    let took = asked.elapsed();
    refused.assert_error(1031, "ceph_unavailable", "create without Ceph");
    assert!(
        took < Duration::from_secs(2),
        "ceph_unavailable took {took:?}"
    );
    assert!(
        c.notifications.is_empty(),
        "no job should start: {:?}",
        c.notifications
    );
    let asked = Instant::now();
    c.call(
        "snapshot.delete",
        json!({"pool": "images", "image": "testdrv-base"}),
    )
    .assert_error(1031, "ceph_unavailable", "delete without Ceph");
    assert!(asked.elapsed() < Duration::from_secs(2));
    let disks = c.call("domain.disks", json!({"domain": "rbdsnapd-test-07"}));
    assert_eq!(disks.result()["boot_disk"], "vda", "{disks:?}");
    assert_eq!(
        disks.result()["disks"][0]["source"]["image"],
        "testdrv-07-vda"
    );
    assert!(!bed.ceph.exists(&format!("images/{image}")));
    // still degraded later: a refused create is not counted as a job
    assert_eq!(d.status()["counters"]["snapshots_failed"], 0);
}

#[test]
fn sigterm_during_a_flatten_cancels_rolls_back_and_exits_zero() {
    let Some(bed) = daemon::bed() else { return };
    let ceph = &bed.ceph;
    let (domain, source) = ("rbdsnapd-test-16", "vms/testdrv-16-vda");
    let filled = Instant::now();
    let _big = common::BigDisk::new(ceph, source, "1024M", "768M");
    eprintln!("filled {source} in {:?}", filled.elapsed());
    let image = common::unique("daemon-sigterm");
    let _cleanup = ImageCleanup::new(ceph, "images", &image);
    let mut d = bed.start("shutdown_grace_secs = 0.1");
    let mut c = d.connect();
    let id = json!("slow");
    c.send_request(
        &id,
        "snapshot.create",
        json!({"domain": domain, "image": image}),
    );
    // wait for the flatten to start
    let first_flatten = loop {
        match c.read_message(Duration::from_secs(60)) {
            Msg::Message(m) if m["params"]["phase"] == "flatten" => break m,
            Msg::Message(m) if m.get("method").is_some() => c.notifications.push(m),
            other => d.fail(&format!("before the flatten: {other:?}")),
        }
    };
    let job_id = first_flatten["params"]["job_id"]
        .as_str()
        .expect("job id")
        .to_string();
    assert_eq!(first_flatten["params"]["total"], 1u64 << 30);
    let signalled = Instant::now();
    d.signal(Signal::SIGTERM);
    let answer = c.wait_for(&id);
    let answered_after = signalled.elapsed();
    answer.assert_error(1026, "cancelled", "create cut off by SIGTERM");
    assert_eq!(
        answer.error()["data"]["job_id"],
        job_id.as_str(),
        "{answer:?}"
    );
    assert!(
        answer.error()["data"].get("rollback_failures").is_none(),
        "rollback left something behind: {answer:?}"
    );
    let phases: Vec<&str> = c
        .notifications
        .iter()
        .filter_map(|n| n["params"]["phase"].as_str())
        .collect();
    assert_eq!(
        phases.last(),
        Some(&"rollback"),
        "no rollback progress before the answer: {phases:?}"
    );
    let flatten_done = c
        .notifications
        .iter()
        .filter(|n| n["params"]["phase"] == "flatten")
        .filter_map(|n| n["params"]["done"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(
        flatten_done < 1 << 30,
        "the flatten finished before the cancel landed: make the disk bigger"
    );
    match c.read_message(Duration::from_secs(20)) {
        Msg::Eof => {}
        other => d.fail(&format!("connection not closed at shutdown: {other:?}")),
    }
    let status = d
        .wait_exit(daemon::STOP_DEADLINE)
        .unwrap_or_else(|| d.fail("no exit after SIGTERM"));
    assert_exit_zero(&d, status);
    eprintln!(
        "answered {answered_after:?} after SIGTERM, flatten at {} MiB of 1024",
        flatten_done >> 20
    );
    assert!(!d.socket.exists(), "socket left behind");
    assert!(
        !ceph.exists(&format!("images/{image}")),
        "the partial clone survived"
    );
    assert_eq!(ceph.temp_snapshots(source), Vec::<String>::new());
    let log = d.log();
    assert!(
        log.contains("cancelling running jobs"),
        "no cancel in the log:\n{log}"
    );
}
