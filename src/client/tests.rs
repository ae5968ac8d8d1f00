//! The client against a scripted fake daemon: a thread on a real Unix
//! socket in a temporary directory that reads requests and writes exactly
//! the lines a test gives it.

use super::*;
use std::io::BufRead;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

/// A socket in a fresh directory, removed when dropped.
struct Socket {
    dir: PathBuf,
}

impl Socket {
    fn new() -> Socket {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rbdsnapd-client-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Socket { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// Serve one connection: for each step, read one request line (handing
    /// it to the step, which answers with the bytes to write), then close.
    fn serve(&self, steps: Vec<Step>) -> JoinHandle<Vec<Value>> {
        let listener = UnixListener::bind(self.path()).expect("bind");
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut writer = stream;
            let mut requests = Vec::new();
            for step in steps {
                let bytes = match step {
                    Step::Greet(bytes) => bytes,
                    Step::Answer(answer) => {
                        let mut line = String::new();
                        reader.read_line(&mut line).expect("read request");
                        let request: Value = serde_json::from_str(&line).expect("request is JSON");
                        let bytes = answer(&request);
                        requests.push(request);
                        bytes
                    }
                    Step::Sleep(d) => {
                        std::thread::sleep(d);
                        String::new()
                    }
                };
                writer.write_all(bytes.as_bytes()).expect("write");
            }
            requests
        })
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

enum Step {
    /// Write bytes without reading a request first.
    Greet(String),
    /// Read one request, write what the closure returns.
    Answer(Box<dyn FnOnce(&Value) -> String + Send>),
    /// Hold the connection open, silent.
    Sleep(Duration),
}

fn answer(f: impl FnOnce(&Value) -> String + Send + 'static) -> Step {
    Step::Answer(Box::new(f))
}

/// One message as a line on the wire.
fn line(message: Value) -> String {
    format!("{message}\n")
}

fn progress(id: &Value, phase: &str, done: u64, total: u64) -> String {
    line(json!({"jsonrpc": "2.0", "method": "progress",
           "params": {"id": id, "job_id": "j1", "phase": phase, "done": done, "total": total}}))
}

fn ok(id: &Value, result: Value) -> String {
    line(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

fn connect(socket: &Socket, timeout: Option<Duration>) -> Client {
    Client::connect(socket.path(), timeout).expect("connect")
}

#[test]
fn skips_other_traffic_and_matches_the_answer_by_id() {
    let socket = Socket::new();
    let server = socket.serve(vec![
        answer(|req| {
            let id = req["id"].clone();
            let other = json!(id.as_u64().unwrap_or(0) + 100);
            [
                progress(&other, "clone", 1, 1),
                progress(&id, "preflight", 0, 0),
                line(json!({"jsonrpc": "2.0", "method": "something.new", "params": {}})),
                line(json!({"jsonrpc": "2.0", "method": "progress", "params": {"id": id}})),
                progress(&id, "flatten", 512, 1024),
                ok(&other, json!({"not": "ours"})),
                progress(&id, "flatten", 1024, 1024),
                ok(&id, json!({"job_id": "j1", "extra": [1, 2]})),
            ]
            .concat()
        }),
        answer(|req| ok(&req["id"], json!({"second": true}))),
    ]);
    let mut client = connect(&socket, Some(Duration::from_secs(10)));
    let mut seen = Vec::new();
    let result = client
        .call(
            "snapshot.create",
            json!({"domain": "d", "image": "i"}),
            |p| seen.push((p.phase, p.done, p.total)),
        )
        .expect("result");
    assert_eq!(result, json!({"job_id": "j1", "extra": [1, 2]}));
    assert_eq!(
        seen,
        vec![
            ("preflight".to_string(), 0, 0),
            ("flatten".to_string(), 512, 1024),
            ("flatten".to_string(), 1024, 1024)
        ]
    );
    let second = client.call("daemon.status", json!({}), |_| panic!("no progress"));
    assert_eq!(second.expect("second result"), json!({"second": true}));

    let requests = server.join().expect("server");
    assert_eq!(requests[0]["jsonrpc"], "2.0");
    assert_eq!(requests[0]["method"], "snapshot.create");
    assert_eq!(requests[0]["params"], json!({"domain": "d", "image": "i"}));
    assert_ne!(requests[0]["id"], requests[1]["id"], "ids are not reused");
}

#[test]
fn error_responses_become_rpc_errors_with_their_details() {
    let socket = Socket::new();
    let _server = socket.serve(vec![
        answer(|req| {
            line(json!({"jsonrpc": "2.0", "id": req["id"], "error": {
                "code": 1022, "message": "the guest did not freeze in 5s",
                "data": {"kind": "freeze_timeout", "job_id": "j9",
                         "rollback_failures": ["remove vms/x@tmp: busy"]}}}))
        }),
        // An error object missing `data`: still an error, classed cautiously.
        answer(|req| {
            line(json!({"jsonrpc": "2.0", "id": req["id"],
                        "error": {"code": -1, "message": "odd"}}))
        }),
    ]);
    let mut client = connect(&socket, None);
    let err = client
        .call("snapshot.create", json!({}), |_| {})
        .expect_err("error");
    let ClientError::Rpc(rpc) = &err else {
        panic!("not an rpc error: {err:?}")
    };
    assert_eq!(rpc.kind(), ErrorKind::FreezeTimeout);
    assert_eq!(rpc.data.job_id.as_deref(), Some("j9"));
    assert_eq!(rpc.data.rollback_failures.len(), 1);
    assert_eq!(err.kind_name(), "freeze_timeout");
    assert_eq!(err.class(), ErrorClass::Failed);

    let err = client.call("x", json!({}), |_| {}).expect_err("error");
    assert_eq!(
        (err.kind_name(), err.class()),
        ("internal", ErrorClass::Failed)
    );
    assert_eq!(err.to_string(), "odd (internal)");
}

#[test]
fn a_connection_closed_mid_request_is_closed() {
    // Closed after a progress notification, and closed halfway through a
    // line: neither can become an answer.
    for cut in ["", "{\"jsonrpc\":\"2.0\",\"id\":1,\"res"] {
        let socket = Socket::new();
        let server = socket.serve(vec![answer(move |req| {
            progress(&req["id"], "flatten", 1, 2) + cut
        })]);
        let mut client = connect(&socket, Some(Duration::from_secs(10)));
        let mut progress_seen = 0;
        let err = client
            .call("snapshot.create", json!({}), |_| progress_seen += 1)
            .expect_err("closed");
        assert!(matches!(err, ClientError::Closed), "{cut:?}: {err:?}");
        assert_eq!(err.class(), ErrorClass::Unreachable);
        assert_eq!(progress_seen, 1);
        server.join().expect("server");
    }
}

#[test]
fn garbage_from_the_daemon_is_a_protocol_error() {
    for garbage in [
        "this is not json",
        "[1,2]",
        "{\"jsonrpc\":\"2.0\"}",
        "{\"id\":1}",
    ] {
        let socket = Socket::new();
        let _server = socket.serve(vec![answer(move |_| format!("{garbage}\n"))]);
        let mut client = connect(&socket, Some(Duration::from_secs(10)));
        let err = client
            .call("daemon.status", json!({}), |_| {})
            .expect_err(garbage);
        assert!(
            matches!(err, ClientError::Protocol(_)),
            "{garbage}: {err:?}"
        );
        assert_eq!(err.class(), ErrorClass::Unreachable);
    }
}

#[test]
fn a_silent_daemon_times_out() {
    let socket = Socket::new();
    let _server = socket.serve(vec![
        answer(|_| String::new()),
        Step::Sleep(Duration::from_secs(3)),
    ]);
    let mut client = connect(&socket, Some(Duration::from_millis(200)));
    let started = Instant::now();
    let err = client
        .call("daemon.status", json!({}), |_| {})
        .expect_err("timeout");
    assert!(matches!(err, ClientError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_refusal_sent_before_any_request_is_the_answer() {
    let socket = Socket::new();
    let server = socket.serve(vec![Step::Greet(line(json!({
        "jsonrpc": "2.0", "id": null,
        "error": {"code": -32002, "message": "uid 1000 is not allowed",
                  "data": {"kind": "permission_denied"}}})))]);
    let mut client = connect(&socket, Some(Duration::from_secs(10)));
    // Let the fake write and close before the request goes out, so the
    // write fails with EPIPE: the refusal must still come through.
    server.join().expect("server");
    let err = client
        .call("daemon.status", json!({}), |_| {})
        .expect_err("refused");
    assert_eq!(err.kind_name(), "permission_denied", "{err:?}");
    assert_eq!(err.class(), ErrorClass::Refused);
}

#[test]
fn a_missing_socket_is_a_connect_error() {
    let socket = Socket::new();
    let err = Client::connect(socket.path(), None).expect_err("no socket");
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert_eq!(
        (err.kind_name(), err.class()),
        ("connect", ErrorClass::Unreachable)
    );
}

/// The classes the CLI documents, kind by kind: every kind the protocol
/// defines is in exactly one list, and the function agrees.
#[test]
fn every_error_kind_has_the_documented_class() {
    const REFUSED: &[&str] = &[
        "parse_error",
        "invalid_request",
        "method_not_found",
        "invalid_params",
        "request_too_large",
        "permission_denied",
        "shutting_down",
        "too_many_connections",
        "domain_not_found",
        "domain_not_running",
        "disk_not_found",
        "disk_not_rbd",
        "disk_other_cluster",
        "pool_not_found",
        "no_destination_pool",
        "image_exists",
        "image_not_found",
        "image_in_use",
        "not_ours",
        "snapshot_limit",
        "unsupported",
        "agent_unavailable",
        "busy",
        "job_not_found",
        "guard_not_found",
    ];
    const FAILED: &[&str] = &[
        "freeze_failed",
        "freeze_timeout",
        "thaw_failed",
        "cancelled",
        "libvirt_unavailable",
        "ceph_unavailable",
        "timeout",
        "libvirt_error",
        "ceph_error",
        "internal",
    ];
    for kind in ErrorKind::ALL {
        let name = kind.as_str();
        let expected = match (REFUSED.contains(&name), FAILED.contains(&name)) {
            (true, false) => ErrorClass::Refused,
            (false, true) => ErrorClass::Failed,
            _ => panic!("{name} must be in exactly one documented list"),
        };
        assert_eq!(ErrorClass::of_kind(Some(*kind)), expected, "{name}");
    }
    assert_eq!(REFUSED.len() + FAILED.len(), ErrorKind::ALL.len());
    assert_eq!(
        ErrorClass::of_kind(ErrorKind::from_name("from_the_future")),
        ErrorClass::Failed
    );
}
