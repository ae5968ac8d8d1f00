//! The OpenRPC document: valid against the OpenRPC meta-schema, the same
//! in the repository (docs/openrpc.json) as generated, served as such by
//! `rpc.discover`, and strict enough to catch a result that drifts from it.
//! (Every message the other suites read is checked against it by their
//! client: tests/common/openrpc.rs.)

mod common;

use common::openrpc::protocol;
use serde_json::{json, Value};

#[test]
fn the_document_follows_the_openrpc_meta_schema() {
    let p = protocol();
    let errors = p.meta_errors(&p.document);
    assert!(errors.is_empty(), "{errors:#?}");
    // the check itself can fail
    let mut broken = p.document.clone();
    broken["methods"][0]["paramStructure"] = json!("by-magic");
    assert!(
        !p.meta_errors(&broken).is_empty(),
        "the meta-schema accepted a broken document"
    );
}

#[test]
fn the_repository_copy_is_current() {
    let copy = include_str!("../docs/openrpc.json");
    let copy: Value = serde_json::from_str(copy).expect("docs/openrpc.json is JSON");
    assert!(
        copy == protocol().document,
        "docs/openrpc.json is not what the code generates: run \
         `cargo run --example openrpc > docs/openrpc.json`"
    );
}

#[test]
fn results_that_drift_from_the_document_are_caught() {
    let p = protocol();
    let good = json!({"jsonrpc": "2.0", "id": 1, "result": {"pool": "images", "image": "x", "deleted": true}});
    assert_eq!(p.check(Some("snapshot.delete"), &good), None);
    let extra = json!({"jsonrpc": "2.0", "id": 1, "result": {"pool": "images", "image": "x", "deleted": true, "size": 1}});
    assert!(
        p.check(Some("snapshot.delete"), &extra).is_some(),
        "an undescribed field passed"
    );
    let missing = json!({"jsonrpc": "2.0", "id": 1, "result": {"pool": "images", "image": "x"}});
    assert!(
        p.check(Some("snapshot.delete"), &missing).is_some(),
        "a missing field passed"
    );
    let unlisted = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": 1024, "message": "busy", "data": {"kind": "busy"}}});
    assert!(
        p.check(Some("jobs.list"), &unlisted).is_some(),
        "an unlisted error code passed"
    );
    let unknown_kind = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": 1024, "message": "m", "data": {"kind": "frozen_forever"}}});
    assert!(
        p.check(Some("snapshot.create"), &unknown_kind).is_some(),
        "an unknown kind passed"
    );
    let progress = json!({"jsonrpc": "2.0", "method": "progress", "params": {"id": 1, "job_id": "j", "phase": "melting", "done": 0, "total": 0}});
    assert!(
        p.check(None, &progress).is_some(),
        "an unknown phase passed"
    );
}

#[test]
fn rpc_discover_serves_the_document() {
    let Some(bed) = common::daemon::bed() else {
        return;
    };
    let d = bed.start("");
    let mut c = d.connect();
    let served = c.call("rpc.discover", json!({})).result().clone();
    assert_eq!(served, protocol().document);
    assert_eq!(served["info"]["version"], env!("CARGO_PKG_VERSION"));
    // the methods it lists are the ones the daemon answers
    for method in served["methods"].as_array().expect("methods") {
        let name = method["name"].as_str().expect("name");
        let answer = c
            .try_call(name, json!({"no_such_param": 1}))
            .expect("answer");
        answer.assert_error(-32602, "invalid_params", name);
    }
}
