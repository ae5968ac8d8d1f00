//! Callers who share one daemon neither see nor starve each other: a caller
//! held to `[[policy]]` rules sees only its domains' jobs, guests and
//! dependencies; one caller (root and the daemon's user aside) cannot hold
//! every connection, nor queue without end; blank lines do not keep a
//! connection open. On the bed, callers run
//! as other users (the daemon reads their credentials from the socket).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{self, ImageCleanup, Msg, Response};
use serde_json::{json, Value};

const MINE: &str = "rbdsnapd-test-16";
const THEIRS: &str = "rbdsnapd-test-09";
/// nobody: may snapshot `rbdsnapd-test-1?` only.
const SNAPSHOTTER: u32 = 65534;
/// Allowed to connect, named by no rule: reads only.
const STRANGER: u32 = 65531;

const POLICY: &str = r#"
socket_mode = "0666"
allowed_users = ["65531"]

[[policy]]
users = ["65534"]
domains = ["rbdsnapd-test-1?"]
pools = ["images"]
"#;

fn call_as(d: &daemon::DaemonProc, uid: u32, method: &str, params: Value) -> Response {
    let line = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let got = daemon::call_as(uid, uid, &d.socket, &line);
    let answer = got
        .messages
        .into_iter()
        .find(|m| m.get("result").is_some() || m.get("error").is_some())
        .unwrap_or_else(|| panic!("no answer to {method} as uid {uid}"));
    Response(answer)
}

fn job_ids(answer: &Response) -> Vec<String> {
    answer.result()["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["job_id"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_caller_held_to_rules_sees_only_its_domains() {
    let Some(bed) = daemon::bed() else { return };
    let ceph = &bed.ceph;
    let d = bed.start(POLICY);
    let (mine, theirs) = (common::unique("seen"), common::unique("unseen"));
    let _cleanup = [
        ImageCleanup::new(ceph, "images", &mine),
        ImageCleanup::new(ceph, "images", &theirs),
    ];
    let create = |uid: Option<u32>, domain: &str, image: &str| {
        let params =
            json!({"domain": domain, "image": image, "flatten": "none", "request_id": image});
        let answer = match uid {
            Some(uid) => call_as(&d, uid, "snapshot.create", params),
            None => d.connect().call("snapshot.create", params),
        };
        assert!(answer.is_ok(), "{domain}: {:?}", answer.0);
        answer.result()["job_id"]
            .as_str()
            .expect("job_id")
            .to_string()
    };
    let my_job = create(Some(SNAPSHOTTER), MINE, &mine);
    let their_job = create(None, THEIRS, &theirs);

    // jobs.list and jobs.get: the snapshotter's own domain only
    let listed = job_ids(&call_as(&d, SNAPSHOTTER, "jobs.list", json!({})));
    assert_eq!(listed, vec![my_job.clone()]);
    let hidden = call_as(&d, SNAPSHOTTER, "jobs.get", json!({"job_id": their_job}));
    hidden.assert_error(1025, "job_not_found", "another domain's job");
    assert!(!hidden.0.to_string().contains(THEIRS), "{:?}", hidden.0);
    assert!(call_as(&d, SNAPSHOTTER, "jobs.get", json!({"job_id": my_job})).is_ok());
    // a caller no rule names sees no job; root sees both
    assert!(job_ids(&call_as(&d, STRANGER, "jobs.list", json!({}))).is_empty());
    let all = job_ids(&d.connect().call("jobs.list", json!({})));
    assert!(all.contains(&my_job) && all.contains(&their_job), "{all:?}");

    // daemon.status: the dependencies (flatten: none) likewise
    let sources = |answer: &Response| -> Vec<String> {
        answer.result()["dependents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["job_id"].as_str().map(String::from))
            .collect()
    };
    let status = call_as(&d, SNAPSHOTTER, "daemon.status", json!({}));
    assert_eq!(sources(&status), vec![my_job.clone()]);
    assert!(!status.0.to_string().contains(&theirs), "{:?}", status.0);
    assert!(sources(&call_as(&d, STRANGER, "daemon.status", json!({}))).is_empty());
    assert_eq!(
        sources(&d.connect().call("daemon.status", json!({}))).len(),
        2
    );
    // the retry of another caller's request_id is no window either
    let retry = call_as(
        &d,
        SNAPSHOTTER,
        "snapshot.create",
        json!({"domain": MINE, "image": theirs, "flatten": "none", "request_id": theirs}),
    );
    assert!(!retry.is_ok(), "{:?}", retry.0);
    assert!(!retry.0.to_string().contains(THEIRS), "{:?}", retry.0);
}

/// As `uid`, open `count` connections and hold them until dropped; what
/// each got at once (a refusal's error kind, or `open`).
struct HeldBy {
    child: std::process::Child,
    got: Vec<String>,
}

fn hold_connections(d: &daemon::DaemonProc, uid: u32, count: usize) -> HeldBy {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let script = r#"
import json, socket, sys
held, got = [], []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    s.settimeout(0.5)
    try:
        line = s.recv(65536)
        got.append(json.loads(line)["error"]["data"]["kind"] if line else "closed")
    except socket.timeout:
        got.append("open")
    held.append(s)
print(json.dumps(got), flush=True)
sys.stdin.read()
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args([
            "-c",
            script,
            &d.socket.display().to_string(),
            &count.to_string(),
        ])
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let got = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    HeldBy { child, got }
}

impl Drop for HeldBy {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

#[test]
fn one_caller_cannot_hold_every_connection() {
    let Some(bed) = daemon::bed() else { return };
    let d = bed.start(&format!("max_connections_per_caller = 3\n{POLICY}"));
    // the stranger's fourth is refused, its first three served
    let held = hold_connections(&d, STRANGER, 4);
    assert_eq!(held.got, ["open", "open", "open", "too_many_connections"]);
    assert!(
        d.log()
            .contains("its caller holds max_connections_per_caller uid=65531"),
        "{}",
        d.log()
    );
    // another caller still gets in, and root is not counted
    assert!(call_as(&d, SNAPSHOTTER, "daemon.status", json!({})).is_ok());
    let root: Vec<daemon::Conn> = (0..5).map(|_| d.connect()).collect();
    for mut conn in root {
        assert!(conn.call("daemon.status", json!({})).is_ok());
    }
    // closed, the stranger's slots come back
    drop(held);
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if call_as(&d, STRANGER, "daemon.status", json!({})).is_ok() {
            break;
        }
        assert!(
            Instant::now() < until,
            "the stranger never got a connection back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn blank_lines_do_not_keep_a_connection_open() {
    let Some(bed) = daemon::bed() else { return };
    let d = bed.start("idle_timeout_secs = 1");
    let mut conn = d.connect();
    let started = Instant::now();
    let closed = loop {
        conn.send_raw(b"\n");
        match conn.read_message(Duration::from_millis(300)) {
            Msg::Eof => break started.elapsed(),
            Msg::Timeout => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "blank lines kept the connection open"
        );
    };
    assert!(
        closed >= Duration::from_millis(900),
        "closed early: {closed:?}"
    );
    // a request does count as activity
    let mut conn = d.connect();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        assert!(conn.call("daemon.status", json!({})).is_ok());
    }
}

#[test]
fn waiting_lines_are_bounded() {
    let Some(bed) = daemon::bed() else { return };
    let ceph = &bed.ceph;
    let source = "vms/testdrv-14-vda";
    let _disk = common::BigDisk::new(ceph, source, "512M", "512M");
    let d = bed.start("max_waiting_per_domain = 1\n[ceph]\nconcurrent_management_ops = 1");
    let names: Vec<String> = (0..3)
        .map(|i| common::unique(&format!("line{i}")))
        .collect();
    let _cleanup: Vec<ImageCleanup> = names
        .iter()
        .map(|n| ImageCleanup::new(ceph, "images", n))
        .collect();
    let params = |image: &str| json!({"domain": "rbdsnapd-test-14", "image": image, "on_busy": "wait", "quiesce": "off"});
    // the first holds the domain (a slow sync flatten), the second waits
    let mut first = d.connect();
    let first_id = first.send_create(params(&names[0]));
    let mut second = d.connect();
    let second_id = second.send_create(params(&names[1]));
    let until = Instant::now() + Duration::from_secs(20);
    let waiting = loop {
        let jobs = d.connect().call("jobs.list", json!({})).result().clone();
        let queued = jobs["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j["waiting_for_domain"] == true)
            .cloned();
        if let Some(job) = queued {
            break job;
        }
        assert!(
            Instant::now() < until,
            "the second request never queued: {jobs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // the third finds the line full: refused busy, not listed
    let third = d.connect().call("snapshot.create", params(&names[2]));
    third.assert_error(1024, "busy", "a third request for the domain");
    assert!(
        third.error()["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_waiting_per_domain")),
        "{:?}",
        third.0
    );
    // the waiting one still starts once the first is done
    assert!(first.wait_for(&first_id).is_ok());
    let second_answer = second.wait_for(&second_id);
    assert!(
        second_answer.is_ok(),
        "{waiting} then {:?}",
        second_answer.0
    );
    assert!(!ceph.exists(&format!("images/{}", names[2])));
}
