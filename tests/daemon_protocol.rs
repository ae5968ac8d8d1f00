//! The daemon's socket against bad input and foreign peers: every malformed
//! request gets the documented code and kind, the daemon keeps serving (a
//! new connection answers `daemon.status` after each), and nothing reaches
//! Ceph; peers not allowed are refused, allowed ones served.

mod common;

use common::daemon::{self, Msg};
use serde_json::{json, Value};

/// One bad request and what the daemon must answer.
struct Case {
    what: &'static str,
    line: Vec<u8>,
    code: i64,
    kind: &'static str,
    /// The id the answer carries (`null` when the request's is unreadable).
    id: Value,
}

fn case(what: &'static str, line: &[u8], code: i64, kind: &'static str, id: Value) -> Case {
    Case {
        what,
        line: line.to_vec(),
        code,
        kind,
        id,
    }
}

fn request(id: i64, method: &str, params: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        .to_string()
        .into_bytes()
}

/// `snapshot.create` of `image` (on a domain that must never be reached).
fn create_named(id: i64, image: &str) -> Vec<u8> {
    request(
        id,
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-08", "image": image}),
    )
}

fn cases() -> Vec<Case> {
    const PARSE: (i64, &str) = (-32700, "parse_error");
    const REQUEST: (i64, &str) = (-32600, "invalid_request");
    const PARAMS: (i64, &str) = (-32602, "invalid_params");
    let null = Value::Null;
    let mut deep = br#"{"jsonrpc":"2.0","id":1,"method":"daemon.status","params":"#.to_vec();
    deep.extend(b"{\"a\":".repeat(300));
    deep.extend(b"1");
    deep.extend(b"}".repeat(301));
    let mut invalid_utf8 = br#"{"jsonrpc":"2.0","id":1,"method":"daemon.status"#.to_vec();
    invalid_utf8.extend(b"\xff\xfe\"}");
    let long = "x".repeat(251);
    vec![
        case(
            "malformed JSON",
            b"{jsonrpc: 2.0, id: 1}",
            PARSE.0,
            PARSE.1,
            null.clone(),
        ),
        case(
            "truncated JSON",
            br#"{"jsonrpc":"2.0","id":1,"method":"daemon.sta"#,
            PARSE.0,
            PARSE.1,
            null.clone(),
        ),
        case(
            "invalid UTF-8",
            &invalid_utf8,
            PARSE.0,
            PARSE.1,
            null.clone(),
        ),
        case("nesting 300 deep", &deep, PARSE.0, PARSE.1, null.clone()),
        case(
            "a batch (array)",
            br#"[{"jsonrpc":"2.0","id":1,"method":"daemon.status"}]"#,
            REQUEST.0,
            REQUEST.1,
            null.clone(),
        ),
        case("a number", b"42", REQUEST.0, REQUEST.1, null.clone()),
        case(
            "a string",
            br#""daemon.status""#,
            REQUEST.0,
            REQUEST.1,
            null.clone(),
        ),
        case(
            "no id",
            br#"{"jsonrpc":"2.0","method":"daemon.status"}"#,
            REQUEST.0,
            REQUEST.1,
            null.clone(),
        ),
        case(
            "an object as id",
            br#"{"jsonrpc":"2.0","id":{"a":1},"method":"daemon.status"}"#,
            REQUEST.0,
            REQUEST.1,
            null.clone(),
        ),
        case(
            "jsonrpc 1.0",
            br#"{"jsonrpc":"1.0","id":11,"method":"daemon.status"}"#,
            REQUEST.0,
            REQUEST.1,
            json!(11),
        ),
        case(
            "no jsonrpc",
            br#"{"id":12,"method":"daemon.status"}"#,
            REQUEST.0,
            REQUEST.1,
            json!(12),
        ),
        case(
            "unknown top-level field",
            br#"{"jsonrpc":"2.0","id":"t","method":"daemon.status","extra":1}"#,
            REQUEST.0,
            REQUEST.1,
            json!("t"),
        ),
        case(
            "method not a string",
            br#"{"jsonrpc":"2.0","id":14,"method":7}"#,
            REQUEST.0,
            REQUEST.1,
            json!(14),
        ),
        case(
            "unknown method",
            &request(15, "snapshot.explode", json!({})),
            -32601,
            "method_not_found",
            json!(15),
        ),
        case(
            "params an array",
            &request(16, "daemon.status", json!([1])),
            PARAMS.0,
            PARAMS.1,
            json!(16),
        ),
        case(
            "domain a number",
            &request(17, "snapshot.create", json!({"domain": 5, "image": "i"})),
            PARAMS.0,
            PARAMS.1,
            json!(17),
        ),
        case(
            "disks a string",
            &request(
                18,
                "snapshot.create",
                json!({"domain": "rbdsnapd-test-08", "image": "i", "disks": "vda"}),
            ),
            PARAMS.0,
            PARAMS.1,
            json!(18),
        ),
        case(
            "missing image",
            &request(19, "snapshot.create", json!({"domain": "rbdsnapd-test-08"})),
            PARAMS.0,
            PARAMS.1,
            json!(19),
        ),
        case(
            "unknown param field",
            &request(
                20,
                "snapshot.create",
                json!({"domain": "rbdsnapd-test-08", "image": "i", "colour": "red"}),
            ),
            PARAMS.0,
            PARAMS.1,
            json!(20),
        ),
        case(
            "unknown param of daemon.status",
            &request(21, "daemon.status", json!({"verbose": true})),
            PARAMS.0,
            PARAMS.1,
            json!(21),
        ),
        case(
            "quiesce not an option",
            &request(
                22,
                "snapshot.create",
                json!({"domain": "rbdsnapd-test-08", "image": "i", "quiesce": "always"}),
            ),
            PARAMS.0,
            PARAMS.1,
            json!(22),
        ),
        case(
            "image with /",
            &create_named(23, "a/b"),
            PARAMS.0,
            PARAMS.1,
            json!(23),
        ),
        case(
            "image with @",
            &create_named(24, "a@snap"),
            PARAMS.0,
            PARAMS.1,
            json!(24),
        ),
        case(
            "image ..",
            &create_named(25, ".."),
            PARAMS.0,
            PARAMS.1,
            json!(25),
        ),
        case(
            "image .",
            &create_named(26, "."),
            PARAMS.0,
            PARAMS.1,
            json!(26),
        ),
        case(
            "image with NUL",
            &create_named(27, "a\0b"),
            PARAMS.0,
            PARAMS.1,
            json!(27),
        ),
        case(
            "image with \\n",
            &create_named(28, "a\nb"),
            PARAMS.0,
            PARAMS.1,
            json!(28),
        ),
        case(
            "image with ESC",
            &create_named(29, "a\u{1b}[0m"),
            PARAMS.0,
            PARAMS.1,
            json!(29),
        ),
        case(
            "image with DEL",
            &create_named(30, "a\u{7f}"),
            PARAMS.0,
            PARAMS.1,
            json!(30),
        ),
        case(
            "image empty",
            &create_named(31, ""),
            PARAMS.0,
            PARAMS.1,
            json!(31),
        ),
        case(
            "image of 251 bytes",
            &create_named(32, &long),
            PARAMS.0,
            PARAMS.1,
            json!(32),
        ),
        case(
            "pool with /",
            &request(
                33,
                "snapshot.create",
                json!({"domain": "rbdsnapd-test-08", "image": "i", "pool": "images/x"}),
            ),
            PARAMS.0,
            PARAMS.1,
            json!(33),
        ),
        case(
            "disk with ..",
            &request(
                34,
                "snapshot.create",
                json!({"domain": "rbdsnapd-test-08", "image": "i", "disks": [".."]}),
            ),
            PARAMS.0,
            PARAMS.1,
            json!(34),
        ),
        case(
            "domain with /",
            &request(35, "domain.disks", json!({"domain": "../etc"})),
            PARAMS.0,
            PARAMS.1,
            json!(35),
        ),
        case(
            "delete with image and location",
            &request(
                36,
                "snapshot.delete",
                json!({"pool": "images", "image": "testdrv-base", "location": "rbd://x/images/testdrv-base/snap"}),
            ),
            PARAMS.0,
            PARAMS.1,
            json!(36),
        ),
        case(
            "delete location with ..",
            &request(
                37,
                "snapshot.delete",
                json!({"location": "rbd://x/images/../snap"}),
            ),
            PARAMS.0,
            PARAMS.1,
            json!(37),
        ),
        case(
            "delete of a pool with @",
            &request(
                38,
                "snapshot.delete",
                json!({"pool": "images@x", "image": "testdrv-base"}),
            ),
            PARAMS.0,
            PARAMS.1,
            json!(38),
        ),
        case(
            "jobs.get without job_id",
            &request(39, "jobs.get", json!({})),
            PARAMS.0,
            PARAMS.1,
            json!(39),
        ),
        // 250 bytes is still a valid name: the request gets as far as libvirt
        case(
            "image of 250 bytes on a missing domain",
            &request(
                40,
                "snapshot.create",
                json!({"domain": "rbdsnapd-no-such-domain", "image": "y".repeat(250)}),
            ),
            1001,
            "domain_not_found",
            json!(40),
        ),
    ]
}

fn images_listing(ceph: &common::Ceph) -> Vec<String> {
    let out = ceph.rbd(&["ls", "--format", "json", "images"], None);
    let mut names: Vec<String> = serde_json::from_slice(&out).expect("rbd ls JSON");
    names.sort();
    names
}

#[test]
fn bad_input_gets_the_documented_errors_and_the_daemon_keeps_serving() {
    let Some(bed) = daemon::bed() else { return };
    let before = images_listing(&bed.ceph);
    let d = bed.start("max_line_bytes = 4096");
    for case in cases() {
        assert!(case.line.len() < 4096, "{}: line too long", case.what);
        let mut c = d.connect();
        c.send_line(&case.line);
        let answer = match c.read_answer(daemon::READ_TIMEOUT) {
            Msg::Message(m) => daemon::Response(m),
            other => d.fail(&format!("{}: no answer: {other:?}", case.what)),
        };
        answer.assert_error(case.code, case.kind, case.what);
        assert_eq!(answer.id(), &case.id, "{}: {}", case.what, answer.0);
        // the same connection still serves …
        let again = c.call("daemon.status", json!({}));
        assert!(
            again.is_ok(),
            "{}: connection unusable: {again:?}",
            case.what
        );
        // … and so does a new one
        assert_eq!(d.status()["version"], env!("CARGO_PKG_VERSION"));
    }

    // several bad lines in one write, and an empty line, are answered in turn
    let mut c = d.connect();
    c.send_raw(b"{\n\n[]\n{\"jsonrpc\":\"2.0\",\"id\":\"ok\",\"method\":\"jobs.list\"}\n");
    let kinds: Vec<String> = (0..3)
        .map(|_| match c.read_message(daemon::READ_TIMEOUT) {
            Msg::Message(m) if m.get("error").is_some() => m["error"]["data"]["kind"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            Msg::Message(m) => format!("result {}", m["id"]),
            other => d.fail(&format!("burst: {other:?}")),
        })
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["invalid_request", "parse_error", "result \"ok\""],
        "{kinds:?}"
    );

    // ids come back exactly as sent: past 2^53, past 64 bits, in any
    // spelling of a number (read as raw lines: a JSON parser would round)
    {
        use std::io::{BufRead, BufReader, Write};
        let stream = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
        stream
            .set_read_timeout(Some(daemon::READ_TIMEOUT))
            .expect("timeout");
        let mut lines = BufReader::new(stream.try_clone().expect("clone"));
        let mut writer = stream;
        for id in [
            "9007199254740993",
            "1180591620717411303424",
            "-9223372036854775809",
            "1.5e300",
            "0.1000",
            "\"2^70\"",
        ] {
            writeln!(
                writer,
                r#"{{"jsonrpc":"2.0","id":{id},"method":"jobs.list"}}"#
            )
            .expect("write");
            let mut answer = String::new();
            lines.read_line(&mut answer).expect("answer");
            assert!(
                answer.contains(&format!(r#""id":{id},"#)),
                "id {id} came back as: {answer}"
            );
        }
    }

    // a line past max_line_bytes: request_too_large, then the daemon hangs up
    let mut c = d.connect();
    let mut huge =
        br#"{"jsonrpc":"2.0","id":1,"method":"daemon.status","params":{"pad":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'p', 5000));
    huge.extend(b"\"}}");
    c.send_line(&huge);
    let answer = match c.read_message(daemon::READ_TIMEOUT) {
        Msg::Message(m) => daemon::Response(m),
        other => d.fail(&format!("oversized line: no answer: {other:?}")),
    };
    answer.assert_error(-32001, "request_too_large", "oversized line");
    assert_eq!(answer.id(), &Value::Null);
    match c.read_message(daemon::READ_TIMEOUT) {
        Msg::Eof => {}
        other => d.fail(&format!(
            "connection not closed after an oversized line: {other:?}"
        )),
    }
    // an endless line without a newline is cut off the same way
    let mut c = d.connect();
    c.send_raw(&vec![b' '; 10_000]);
    let answer = match c.read_message(daemon::READ_TIMEOUT) {
        Msg::Message(m) => daemon::Response(m),
        other => d.fail(&format!("endless line: no answer: {other:?}")),
    };
    answer.assert_error(-32001, "request_too_large", "endless line");
    assert!(matches!(c.read_message(daemon::READ_TIMEOUT), Msg::Eof));

    let status = d.status();
    let counters = &status["counters"];
    assert_eq!(counters["snapshots_succeeded"], 0, "{status}");
    assert_eq!(
        counters["snapshots_failed"], 0,
        "nothing reached the workflow (the 250-byte name is an unknown domain): {status}"
    );
    let jobs = d.connect().call("jobs.list", json!({})).result().clone();
    assert_eq!(
        jobs["jobs"],
        json!([]),
        "a refused request left a job: {jobs}"
    );
    assert_eq!(
        images_listing(&bed.ceph),
        before,
        "the battery changed pool images"
    );
}

#[test]
fn peers_not_allowed_are_refused_and_allowed_ones_served() {
    let Some(bed) = daemon::bed() else { return };
    let status = json!({"jsonrpc": "2.0", "id": 1, "method": "daemon.status"}).to_string();

    // nobody (65534) may connect (mode 0666) but is not allowed
    let d = bed.start(r#"socket_mode = "0666""#);
    let refused = daemon::call_as(65534, 65534, &d.socket, &status);
    assert_eq!(refused.messages.len(), 1, "{refused:?}");
    let answer = daemon::Response(refused.messages[0].clone());
    answer.assert_error(-32002, "permission_denied", "uid 65534");
    assert_eq!(answer.id(), &Value::Null, "{answer:?}");
    assert!(
        answer.error()["message"]
            .as_str()
            .is_some_and(|m| m.contains("65534")),
        "the message names the refused uid: {answer:?}"
    );
    assert!(refused.closed, "connection left open after the refusal");
    assert!(
        d.log().contains("refused a peer"),
        "refusal not logged:\n{}",
        d.log()
    );
    assert_eq!(d.status()["counters"]["snapshots_failed"], 0);
    drop(d);

    // allowed by uid
    let d = bed.start("socket_mode = \"0666\"\nallowed_users = [\"65534\"]");
    let served = daemon::call_as(65534, 65534, &d.socket, &status);
    assert_eq!(served.messages.len(), 1, "{served:?}");
    let answer = daemon::Response(served.messages[0].clone());
    assert_eq!(answer.id(), &json!(1), "{answer:?}");
    assert_eq!(answer.result()["ceph"]["fsid"], bed.ceph.fsid.as_str());
    assert!(!served.closed, "an allowed peer's connection was closed");
    // … but another uid still is not
    let other = daemon::call_as(65533, 65533, &d.socket, &status);
    daemon::Response(other.messages[0].clone()).assert_error(
        -32002,
        "permission_denied",
        "uid 65533",
    );
    drop(d);

    // allowed by group
    let d = bed.start("socket_mode = \"0666\"\nallowed_groups = [\"65534\"]");
    let served = daemon::call_as(65533, 65534, &d.socket, &status);
    let answer = daemon::Response(served.messages[0].clone());
    assert!(answer.is_ok(), "gid 65534 refused: {answer:?}");
    // … as a supplementary group (SO_PEERGROUPS), and not without it
    let member = daemon::call_as_member(65533, 65533, &[65534], &d.socket, &status);
    let answer = daemon::Response(member.messages[0].clone());
    assert!(
        answer.is_ok(),
        "supplementary gid 65534 refused: {answer:?}"
    );
    let outsider = daemon::call_as_member(65533, 65533, &[65532], &d.socket, &status);
    daemon::Response(outsider.messages[0].clone()).assert_error(
        -32002,
        "permission_denied",
        "supplementary groups not listed",
    );
}

/// The daemon's resident memory, in KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_client_that_pipelines_and_never_reads_does_not_grow_the_daemon() {
    use std::io::Write;
    let Some(bed) = daemon::bed() else { return };
    let d = bed.start("");
    let pid = d.pid();
    let before = rss_kib(pid);
    // 200 000 requests (jobs.list answers are the biggest cheap ones), never
    // reading an answer: the daemon stops reading once its bounded output
    // queue and in-flight slots are full, so the writer blocks in the end
    let stream = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
    stream
        .set_write_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let line = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.status\"}\n";
    let mut sent = 0usize;
    for _ in 0..200_000 {
        if writer.write_all(line).is_err() {
            break; // back-pressure reached us: the daemon stopped reading
        }
        sent += 1;
    }
    let during = rss_kib(pid);
    // the daemon still serves everyone else, promptly
    let started = std::time::Instant::now();
    assert_eq!(d.status()["version"], env!("CARGO_PKG_VERSION"));
    let status_ms = started.elapsed().as_millis();
    eprintln!(
        "never-reading client: {sent} requests written before back-pressure; \
         daemon RSS {before} KiB before, {during} KiB while it waits; \
         another client's daemon.status in {status_ms} ms"
    );
    assert!(sent < 200_000, "the daemon read everything without bound");
    assert!(
        during < before + 64 * 1024,
        "RSS grew from {before} KiB to {during} KiB"
    );
    drop(writer);
    drop(stream);
    // the stuck connection goes away with its client
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(d.status()["version"], env!("CARGO_PKG_VERSION"));
}
