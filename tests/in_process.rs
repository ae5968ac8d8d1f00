//! The real daemon — configuration, socket, framing, dispatch, job registry,
//! workflow, journal — run in this process on a temporary socket over the
//! workflow's in-memory fakes (no Ceph, no libvirt): the protocol's answers,
//! a whole snapshot as the fakes hold it, a busy domain refused or waited
//! for, a cancel rolled back, a request_id retry, and a shutdown. Seconds, no bed; the real-bed suites keep what
//! needs the real parts. Built with the `fakes` feature (dev/test's
//! `test-hooks` brings it).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbdsnapd::config::Config;
use rbdsnapd::daemon::Backends;
use rbdsnapd::snapshot::fakes::{Fake, FakeHv, FakeStore, Fault};
use serde_json::{json, Value};

const FAKE_FSID: &str = "fa4e0000-0000-0000-0000-00000000f51d";

/// A daemon in a thread of its own, over `fake`, stopped when dropped.
struct InProcess {
    dir: PathBuf,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl InProcess {
    fn start(fake: &Arc<Fake>) -> InProcess {
        let dir = std::env::temp_dir().join(format!("rbdsnapd-inproc-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket = dir.join("rbdsnapd.sock");
        let mut config = Config {
            socket: socket.clone(),
            state_dir: dir.join("state"),
            ..Config::default()
        };
        config.snapshot.default_pool = Some("images".into());
        config.validate().expect("a valid configuration");
        let backends = Backends::given(
            &config,
            Arc::new(FakeHv(Arc::clone(fake))),
            Arc::new(FakeStore(Arc::clone(fake))),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let shutdown = async move {
                let _ = stopped.await;
                "the test"
            };
            runtime
                .block_on(rbdsnapd::run::run_with(config, None, backends, shutdown))
                .map_err(|e| e.to_string())
        });
        let until = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < until,
                "the in-process daemon never listened"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        InProcess {
            dir,
            socket,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn connect(&self) -> Client {
        let stream = UnixStream::connect(&self.socket).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        Client {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            stream,
            next_id: 0,
        }
    }

    /// Stop it as SIGTERM would; whether it ended cleanly.
    fn stop(&mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| Err("panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Client {
    fn send_line(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .expect("write");
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("a line in time");
        assert!(n > 0, "the daemon closed the connection");
        serde_json::from_str(&line).expect("JSON")
    }

    fn send(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let request =
            json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        self.send_line(&request.to_string());
        self.next_id
    }

    /// The answer to `id`, and the progress notifications before it.
    fn answer(&mut self, id: u64) -> (Value, Vec<Value>) {
        let mut progress = Vec::new();
        loop {
            let message = self.read();
            if message["method"] == "progress" {
                progress.push(message);
            } else if message["id"] == json!(id) {
                return (message, progress);
            }
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        self.answer(id).0
    }
}

fn kind(answer: &Value) -> &str {
    answer["error"]["data"]["kind"].as_str().unwrap_or("")
}

#[test]
fn the_protocol_answers_bad_requests_without_touching_a_backend() {
    let fake = Fake::standard();
    let daemon = InProcess::start(&fake);
    let mut c = daemon.connect();
    c.send_line("{not json");
    assert_eq!(c.read()["error"]["code"], -32700);
    let unknown = c.call("snapshot.make", json!({}));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    let bad = c.call(
        "snapshot.create",
        json!({"domain": "vm", "image": "i", "quiesce": "always"}),
    );
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    let message = bad["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("is not one of required, preferred, off"),
        "{bad}"
    );
    let slash = c.call("snapshot.create", json!({"domain": "vm", "image": "a/b"}));
    assert_eq!(kind(&slash), "invalid_params", "{slash}");
    assert!(
        !fake
            .log()
            .iter()
            .any(|call| call.starts_with("snap_create")),
        "a refused request reached the store: {:?}",
        fake.log()
    );
}

#[test]
fn a_snapshot_over_the_fakes_is_made_whole_and_the_guest_thawed() {
    let fake = Fake::standard();
    let daemon = InProcess::start(&fake);
    let mut c = daemon.connect();
    let id = c.send(
        "snapshot.create",
        json!({"domain": "vm", "image": "img1", "quiesce": "required"}),
    );
    let (answer, progress) = c.answer(id);
    let result = &answer["result"];
    assert_eq!(
        result["disks"][0]["location"],
        format!("rbd://{FAKE_FSID}/images/img1/snap"),
        "{answer}"
    );
    assert_eq!(result["consistency"], "filesystem", "{answer}");
    assert!(!progress.is_empty(), "no progress before the answer");
    let image = fake.image("images/img1").expect("the new image");
    assert!(image.snapshots.iter().any(|(name, _)| name == "snap"));
    assert!(image.parent.is_none(), "sync flatten: independent");
    let source = fake.image("vms/vm-disk").expect("source");
    assert!(
        !source
            .snapshots
            .iter()
            .any(|(name, _)| name.starts_with("rbdsnapd-tmp-")),
        "temporary snapshot left: {:?}",
        source.snapshots
    );
    assert!(!fake.frozen(), "left frozen");
    assert!(
        fake.log().iter().any(|call| call == "snap_create(frozen)"),
        "the snapshot was not taken frozen: {:?}",
        fake.log()
    );
    let job = c.call("jobs.get", json!({"job_id": result["job_id"]}));
    assert_eq!(job["result"]["state"], "succeeded", "{job}");
}

#[test]
fn a_busy_domain_is_refused_or_waited_for_as_asked() {
    let fake = Fake::standard();
    fake.inject("freeze", Fault::Slow(Duration::from_millis(1500)), 1);
    let daemon = InProcess::start(&fake);
    let (mut first, mut second, mut third) = (daemon.connect(), daemon.connect(), daemon.connect());
    let running = first.send("snapshot.create", json!({"domain": "vm", "image": "a"}));
    let until = Instant::now() + Duration::from_secs(10);
    while !fake.log().iter().any(|call| call == "freeze") {
        assert!(Instant::now() < until, "the first job never froze");
        std::thread::sleep(Duration::from_millis(10));
    }
    let refused = second.call(
        "snapshot.create",
        json!({"domain": "vm", "image": "b", "on_busy": "reject"}),
    );
    assert_eq!(kind(&refused), "busy", "{refused}");
    let waiting = third.send(
        "snapshot.create",
        json!({"domain": "vm", "image": "c", "on_busy": "wait"}),
    );
    let (done, _) = first.answer(running);
    assert!(done["result"]["disks"][0]["location"].is_string(), "{done}");
    let (waited, _) = third.answer(waiting);
    assert!(
        waited["result"]["disks"][0]["location"].is_string(),
        "{waited}"
    );
    assert!(
        fake.image("images/b").is_none(),
        "a refused request made an image"
    );
    assert!(!fake.frozen());
}

#[test]
fn a_cancel_before_the_answer_rolls_the_job_back_and_leaves_nothing() {
    let fake = Fake::standard();
    // a slow clone: the cancel arrives during it, the next safe point is
    // before the flatten
    fake.inject("clone", Fault::Slow(Duration::from_millis(1500)), 1);
    let daemon = InProcess::start(&fake);
    let mut c = daemon.connect();
    let id = c.send("snapshot.create", json!({"domain": "vm", "image": "gone"}));
    let job_id = loop {
        let message = c.read();
        if message["method"] == "progress" && message["params"]["phase"] == "clone" {
            break message["params"]["job_id"].clone();
        }
        assert!(
            message["id"] != json!(id),
            "answered before its flatten: {message}"
        );
    };
    let cancel = daemon
        .connect()
        .call("jobs.cancel", json!({ "job_id": job_id }));
    assert_eq!(cancel["result"]["cancelling"], true, "{cancel}");
    let (answer, _) = c.answer(id);
    assert_eq!(kind(&answer), "cancelled", "{answer}");
    assert!(
        fake.image("images/gone").is_none(),
        "the rolled-back image is left"
    );
    let source = fake.image("vms/vm-disk").expect("source");
    assert!(
        source.snapshots.is_empty() && source.trashed.is_empty(),
        "the temporary snapshot is left: {source:?}"
    );
    assert!(!fake.frozen());
    let job = daemon
        .connect()
        .call("jobs.get", json!({ "job_id": job_id }));
    assert_eq!(job["result"]["state"], "failed", "{job}");
    assert_eq!(job["result"]["error"]["data"]["kind"], "cancelled", "{job}");
}

#[test]
fn a_retry_with_the_same_request_id_gets_the_first_result() {
    let fake = Fake::standard();
    let daemon = InProcess::start(&fake);
    let mut c = daemon.connect();
    let params = json!({"domain": "vm", "image": "once", "request_id": "r-1"});
    let first = c.call("snapshot.create", params.clone());
    let again = c.call("snapshot.create", params);
    assert_eq!(
        first["result"]["job_id"], again["result"]["job_id"],
        "{again}"
    );
    let snapshots_taken = fake
        .log()
        .iter()
        .filter(|call| call.contains("snap_create"))
        .count();
    // the job's temporary snapshot and the new image's `snap`: once
    assert_eq!(snapshots_taken, 2, "{:?}", fake.log());
    let changed = c.call(
        "snapshot.create",
        json!({"domain": "vm", "image": "other", "request_id": "r-1"}),
    );
    assert_eq!(kind(&changed), "invalid_params", "{changed}");
}

#[test]
fn a_shutdown_ends_the_daemon_and_removes_its_socket() {
    let fake = Fake::standard();
    let mut daemon = InProcess::start(&fake);
    let status = daemon.connect().call("daemon.status", json!({}));
    assert_eq!(status["result"]["libvirt"]["connected"], true, "{status}");
    assert_eq!(status["result"]["ceph"]["connected"], true, "{status}");
    assert_eq!(daemon.stop(), Ok(()));
    assert!(!daemon.socket.exists(), "the socket is left behind");
}
