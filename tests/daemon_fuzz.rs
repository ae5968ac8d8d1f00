//! A generated battery of bad input, each case on its own connection: every
//! field of snapshot.create with every kind of bad value, every truncation
//! of a valid request, random bytes, deep nesting, odd ids, unknown methods
//! and fields. Each gets its documented error; afterwards the daemon still
//! serves, ran no job, and Ceph's images pool holds exactly what it held.

mod common;

use common::daemon::{self, Msg};
use serde_json::{json, Value};

/// A domain that does not exist: a request that passes validation ends
/// there, before anything is touched.
const NOWHERE: &str = "no-such-domain-rbdsnapd";

fn name_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && !s.contains(['/', '@'])
        && !s.chars().any(char::is_control)
        && s != "."
        && s != ".."
}

/// Whether `value` is acceptable for `field` (mirrors the documented rules).
fn valid(field: &str, value: &Value) -> bool {
    match (field, value) {
        ("pool" | "quiesce" | "flatten" | "request_id" | "on_busy", Value::Null) => true,
        ("domain" | "image" | "pool", Value::String(s)) => name_ok(s, 250),
        ("disks", Value::String(s)) => name_ok(s, 250),
        ("quiesce", Value::String(s)) => ["required", "preferred", "off"].contains(&s.as_str()),
        ("flatten", Value::String(s)) => {
            ["sync", "background", "cluster", "none"].contains(&s.as_str())
        }
        ("on_busy", Value::String(s)) => ["reject", "wait"].contains(&s.as_str()),
        ("request_id", Value::String(s)) => {
            !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control)
        }
        _ => false,
    }
}

fn bad_values() -> Vec<Value> {
    vec![
        json!(""),
        json!("a/b"),
        json!("a@b"),
        json!(".."),
        json!("."),
        json!("a\u{0}b"),
        json!("a\nb"),
        json!("\u{1b}[31mred"),
        json!("x".repeat(251)),
        json!("y".repeat(129)),
        json!("ok-name"),
        json!(12345),
        json!(-1),
        json!(1e308),
        json!(true),
        json!(null),
        json!([]),
        json!({}),
    ]
}

/// (line, allowed kinds) for every generated case.
fn cases() -> Vec<(Vec<u8>, Vec<&'static str>)> {
    let mut cases = Vec::new();
    let base = json!({"domain": NOWHERE, "image": "img"});
    for field in [
        "domain",
        "image",
        "pool",
        "disks",
        "quiesce",
        "flatten",
        "request_id",
        "on_busy",
    ] {
        for value in bad_values() {
            let mut params = base.clone();
            let ok = valid(field, &value);
            params[field] = if field == "disks" {
                json!([value])
            } else {
                value
            };
            let line =
                json!({"jsonrpc": "2.0", "id": 1, "method": "snapshot.create", "params": params});
            let kind = if ok {
                "domain_not_found"
            } else {
                "invalid_params"
            };
            cases.push((line.to_string().into_bytes(), vec![kind]));
        }
    }
    let good =
        json!({"jsonrpc": "2.0", "id": 7, "method": "snapshot.create", "params": base}).to_string();
    for cut in 1..good.len() {
        cases.push((good.as_bytes()[..cut].to_vec(), vec!["parse_error"]));
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..40 {
        let garbage: Vec<u8> = (0..64)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x as u8).max(1)
            })
            .filter(|b| *b != b'\n')
            .collect();
        cases.push((garbage, vec!["parse_error", "invalid_request"]));
    }
    for depth in [2, 64, 127, 128, 129, 1000, 20000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        cases.push((nested.into_bytes(), vec!["invalid_request", "parse_error"]));
        let in_params = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"daemon.status","params":{{"x":{}{}}}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        cases.push((
            in_params.into_bytes(),
            vec!["invalid_params", "parse_error"],
        ));
    }
    for id in [
        "1e400",
        "-1e400",
        "18446744073709551616",
        "null",
        "true",
        "[1]",
        "{}",
    ] {
        let line = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"daemon.status"}}"#);
        let kinds = if id.contains("e400") {
            vec!["parse_error"]
        } else if id.starts_with('1') {
            vec![]
        } else {
            vec!["invalid_request"]
        };
        cases.push((line.into_bytes(), kinds));
    }
    for method in [
        "",
        "snapshot",
        "snapshot.create ",
        "SNAPSHOT.CREATE",
        "jobs.cancel.x",
        "../etc",
        "daemon.status\u{0}",
        "x".repeat(300).as_str(),
    ] {
        let line = json!({"jsonrpc": "2.0", "id": 1, "method": method}).to_string();
        cases.push((line.into_bytes(), vec!["method_not_found"]));
    }
    for (line, kind) in [
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"daemon.status","extra":1}"#,
            "invalid_request",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"jobs.list","params":{"all":true}}"#,
            "invalid_params",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"jobs.get","params":{"job_id":7}}"#,
            "invalid_params",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"jobs.cancel","params":{"job_id":[1]}}"#,
            "invalid_params",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"jobs.cancel","params":{}}"#,
            "invalid_params",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"jobs.cancel","params":{"job_id":"nope"}}"#,
            "job_not_found",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"domain.disks","params":{"domain":"a/b"}}"#,
            "invalid_params",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"snapshot.delete","params":{"location":"rbd://x/a/b"}}"#,
            "invalid_params",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"snapshot.delete","params":{"pool":"images","image":"..","x":1}}"#,
            "invalid_params",
        ),
        (
            r#"{"jsonrpc":"3.0","id":1,"method":"daemon.status"}"#,
            "invalid_request",
        ),
        (r#"{"id":1,"method":"daemon.status"}"#, "invalid_request"),
    ] {
        cases.push((line.as_bytes().to_vec(), vec![kind]));
    }
    cases
}

#[test]
fn hundreds_of_bad_inputs_each_get_their_documented_error() {
    let Some(bed) = daemon::bed() else { return };
    let d = bed.start("");
    let images_before = bed.ceph.rbd(&["ls", "images"], None);
    let cases = cases();
    assert!(cases.len() >= 200, "only {} cases", cases.len());
    for (i, (line, kinds)) in cases.iter().enumerate() {
        let mut conn = d.connect();
        let mut bytes = line.clone();
        bytes.push(b'\n');
        conn.send_raw(&bytes);
        let shown = String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned();
        let message = match conn.read_message(daemon::READ_TIMEOUT) {
            Msg::Message(m) => m,
            other => d.fail(&format!("case {i} ({shown}): no answer: {other:?}")),
        };
        let kind = message["error"]["data"]["kind"].as_str().unwrap_or("");
        if kinds.is_empty() {
            assert!(
                message.get("result").is_some(),
                "case {i} ({shown}) should succeed: {message}"
            );
            continue;
        }
        assert!(
            kinds.contains(&kind),
            "case {i} ({shown}): got {message}, expected one of {kinds:?}"
        );
        let code = message["error"]["code"].as_i64().unwrap_or_default();
        let documented = rbdsnapd::protocol::ErrorKind::from_name(kind).map(|k| k.code());
        assert_eq!(
            Some(code),
            documented,
            "case {i}: code {code} is not {kind}'s"
        );
    }
    let status = d.status();
    assert_eq!(status["jobs_in_flight"], 0);
    assert_eq!(status["counters"]["snapshots_succeeded"], 0, "{status}");
    let jobs = d.connect().call("jobs.list", json!({}));
    assert_eq!(jobs.result()["jobs"], json!([]), "no job was started");
    assert_eq!(
        bed.ceph.rbd(&["ls", "images"], None),
        images_before,
        "the images pool is unchanged"
    );
    eprintln!(
        "bad input battery: {} cases answered as documented",
        cases.len()
    );
}
