//! The daemon binary driven through its socket, on the bed's cluster with
//! libvirt's test driver (and the real guest for the quiesced snapshot):
//! every method, pipelined requests, and what Ceph holds afterwards.
//!
//! Bad input and refused peers: tests/daemon_protocol.rs. Process life
//! (socket activation, sd_notify, degraded start, SIGTERM mid-flatten):
//! tests/daemon_process.rs.

mod common;

use common::daemon::{self, ImageCleanup, Msg};
use serde_json::{json, Value};

/// Phases in the order a job goes through them.
const PHASES: [&str; 5] = ["preflight", "freeze", "clone", "flatten", "finish"];

/// Size of every test-driver disk.
const TESTDRV_SIZE: u64 = 16 << 20;

/// The progress notifications of request `id` are in phase order, all carry
/// `id` and one job id, and the flatten ended at its total; returns the
/// job id and the phases seen.
fn check_progress(notes: &[Value], id: &Value, size: u64) -> (String, Vec<String>) {
    assert!(!notes.is_empty(), "no progress notifications for {id}");
    let job_id = notes[0]["params"]["job_id"]
        .as_str()
        .expect("progress carries a job id")
        .to_string();
    let mut phases: Vec<String> = Vec::new();
    let mut last_rank = 0;
    for n in notes {
        assert_eq!(n["jsonrpc"], "2.0", "{n}");
        assert_eq!(n["method"], "progress", "{n}");
        assert!(n.get("id").is_none(), "a notification has no id: {n}");
        let p = &n["params"];
        assert_eq!(&p["id"], id, "progress for another request: {n}");
        assert_eq!(p["job_id"], job_id.as_str(), "job id changed: {n}");
        let phase = p["phase"].as_str().expect("phase").to_string();
        let rank = PHASES
            .iter()
            .position(|x| *x == phase)
            .unwrap_or_else(|| panic!("unexpected phase in {n}"));
        assert!(rank >= last_rank, "phase went backwards at {n}: {notes:?}");
        last_rank = rank;
        assert!(
            p["done"].as_u64().expect("done") <= p["total"].as_u64().expect("total")
                || p["total"] == 0,
            "done beyond total: {n}"
        );
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
    }
    for needed in ["preflight", "freeze", "clone", "flatten", "finish"] {
        assert!(
            phases.iter().any(|p| p == needed),
            "no {needed} progress: {phases:?}"
        );
    }
    let last_flatten = notes
        .iter()
        .rev()
        .find(|n| n["params"]["phase"] == "flatten")
        .expect("flatten progress");
    assert_eq!(
        (
            last_flatten["params"]["done"].as_u64(),
            last_flatten["params"]["total"].as_u64()
        ),
        (Some(size), Some(size)),
        "flatten did not end at its total: {last_flatten}"
    );
    (job_id, phases)
}

#[test]
fn every_method_against_the_test_driver_and_the_cluster() {
    let Some(bed) = daemon::bed() else { return };
    let ceph = &bed.ceph;
    let domain = "rbdsnapd-test-05";
    let source = "vms/testdrv-05-vda";
    let d = bed.start("");
    let mut c = d.connect();

    // daemon.status: both backends, the bed's fsid, our version
    let status = c.call("daemon.status", json!({})).result().clone();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"), "{status}");
    assert_eq!(status["degraded"], false, "{status}");
    assert_eq!(status["shutting_down"], false, "{status}");
    assert_eq!(status["ceph"]["connected"], true, "{status}");
    assert_eq!(status["ceph"]["fsid"], ceph.fsid.as_str(), "{status}");
    assert_eq!(status["libvirt"]["connected"], true, "{status}");
    assert_eq!(
        status["libvirt"]["uri"],
        bed.testdrv_uri.as_str(),
        "{status}"
    );
    assert_eq!(status["jobs_in_flight"], 0, "{status}");

    // domain.disks: the boot disk and its RBD source
    let disks = c
        .call("domain.disks", json!({"domain": domain}))
        .result()
        .clone();
    assert_eq!(disks["name"], domain, "{disks}");
    assert_eq!(disks["state"], "running", "{disks}");
    assert_eq!(disks["boot_disk"], "vda", "{disks}");
    let vda = &disks["disks"][0];
    assert_eq!(vda["target"], "vda", "{disks}");
    assert_eq!(vda["source"]["type"], "rbd", "{disks}");
    assert_eq!(vda["source"]["pool"], "vms", "{disks}");
    assert_eq!(vda["source"]["image"], "testdrv-05-vda", "{disks}");
    assert_eq!(disks["disks"].as_array().map(Vec::len), Some(1), "{disks}");
    c.call("domain.disks", json!({"domain": "rbdsnapd-no-such-domain"}))
        .assert_error(1001, "domain_not_found", "domain.disks of a missing domain");

    // snapshot.create with progress
    let image = common::unique("daemon-methods");
    let cleanup = ImageCleanup::new(ceph, "images", &image);
    let id = c.fresh_id();
    c.send_request(
        &id,
        "snapshot.create",
        json!({"domain": domain, "image": image}),
    );
    let created = c.wait_for(&id);
    let result = created.result().clone();
    let notes = c.progress_of(&id);
    assert_eq!(
        notes.len(),
        c.notifications.len(),
        "notifications for nothing: {:?}",
        c.notifications
    );
    let (job_id, _) = check_progress(&notes, &id, TESTDRV_SIZE);
    let location = format!("rbd://{}/images/{image}/snap", ceph.fsid);
    assert_eq!(result["job_id"], job_id.as_str(), "{result}");
    assert_eq!(result["fsid"], ceph.fsid.as_str(), "{result}");
    assert_eq!(result["domain"], domain, "{result}");
    assert_eq!(
        result["disks"][0]["location"],
        location.as_str(),
        "{result}"
    );
    assert_eq!(result["disks"][0]["pool"], "images", "{result}");
    assert_eq!(result["disks"][0]["image"], image.as_str(), "{result}");
    assert_eq!(result["disks"][0]["source"], source, "{result}");
    assert_eq!(result["disks"][0]["parent"], Value::Null, "{result}");
    // the test driver fakes an agent that freezes two filesystems
    assert_eq!(result["consistency"], "filesystem", "{result}");
    assert_eq!(result["consistency_reason"], Value::Null, "{result}");
    assert_eq!(result["frozen_filesystems"], 2, "{result}");
    // in Ceph: the image, flattened, with its protected snap; nothing left on the source
    let spec = format!("images/{image}");
    assert_eq!(ceph.snapshots(&spec), vec![("snap".to_string(), true)]);
    let info = ceph.info(&spec);
    assert!(info.get("parent").is_none(), "not flattened: {info}");
    assert_eq!(info["size"].as_u64(), Some(TESTDRV_SIZE), "{info}");
    assert_eq!(ceph.temp_snapshots(source), Vec::<String>::new());

    // nothing more for the create after its answer
    let before = c.notifications.len();
    let later = c.call("daemon.status", json!({})).result().clone();
    assert_eq!(c.notifications.len(), before, "progress after the result");
    assert_eq!(later["counters"]["snapshots_succeeded"], 1, "{later}");

    // jobs.list and jobs.get
    let jobs = c.call("jobs.list", json!({})).result().clone();
    let listed: Vec<&Value> = jobs["jobs"]
        .as_array()
        .expect("jobs array")
        .iter()
        .filter(|j| j["job_id"] == job_id.as_str())
        .collect();
    assert_eq!(listed.len(), 1, "{jobs}");
    assert_eq!(listed[0]["state"], "succeeded", "{jobs}");
    assert_eq!(listed[0]["domain"], domain, "{jobs}");
    let job = c
        .call("jobs.get", json!({"job_id": job_id}))
        .result()
        .clone();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["image"], image.as_str(), "{job}");
    assert_eq!(
        job["result"]["disks"][0]["location"],
        location.as_str(),
        "{job}"
    );
    assert!(job["finished_unix"].as_f64().is_some(), "{job}");
    c.call("jobs.get", json!({"job_id": "0123456789abcdef"}))
        .assert_error(1025, "job_not_found", "jobs.get of an unknown job");

    // a location in another cluster is refused, the image untouched
    let elsewhere = location.replacen(&ceph.fsid, "00000000-0000-0000-0000-000000000000", 1);
    let refused = c.call("snapshot.delete", json!({"location": elsewhere}));
    refused.assert_error(
        -32602,
        "invalid_params",
        "delete of another cluster's location",
    );
    assert!(
        refused.error()["message"]
            .as_str()
            .is_some_and(|m| m.contains(&ceph.fsid)),
        "{:?}",
        refused.0
    );
    assert!(
        ceph.exists(&spec),
        "{spec} deleted through another cluster's location"
    );

    // the image names its host, and another host's image is not deleted
    let host = String::from_utf8(ceph.rbd(&["image-meta", "get", &spec, "rbdsnapd.host"], None))
        .expect("utf-8");
    let hostname = nix::unistd::gethostname().expect("hostname");
    assert_eq!(host.trim(), hostname.to_string_lossy(), "rbdsnapd.host");
    ceph.rbd(
        &[
            "image-meta",
            "set",
            &spec,
            "rbdsnapd.host",
            "compute-elsewhere",
        ],
        None,
    );
    let refused = c.call("snapshot.delete", json!({"location": location}));
    refused.assert_error(1015, "not_ours", "delete of another host's image");
    assert!(ceph.exists(&spec), "another host's image was deleted");

    // snapshot.delete by location through a daemon that may delete any
    // host's images, then again, then someone else's image
    let any_host = bed.start("delete_any_host = true");
    let deleted = any_host
        .connect()
        .call("snapshot.delete", json!({"location": location}))
        .result()
        .clone();
    drop(any_host);
    assert_eq!(deleted["deleted"], true, "{deleted}");
    assert_eq!(
        (deleted["pool"].as_str(), deleted["image"].as_str()),
        (Some("images"), Some(image.as_str()))
    );
    assert!(!ceph.exists(&spec), "{spec} still exists after delete");
    c.call("snapshot.delete", json!({"location": location}))
        .assert_error(1013, "image_not_found", "second delete");
    c.call(
        "snapshot.delete",
        json!({"pool": "images", "image": "testdrv-base"}),
    )
    .assert_error(1015, "not_ours", "delete of the bed's base image");
    assert!(ceph.exists("images/testdrv-base"), "base image removed");
    assert_eq!(
        ceph.snapshots("images/testdrv-base"),
        vec![("snap".to_string(), true)],
        "base image's snapshot touched"
    );
    drop(cleanup);
}

#[test]
fn pipelined_requests_are_each_answered_once_by_id() {
    let Some(bed) = daemon::bed() else { return };
    let ceph = &bed.ceph;
    let domain = "rbdsnapd-test-06";
    let d = bed.start("");
    let mut c = d.connect();
    let image = common::unique("daemon-pipeline");
    let _cleanup = ImageCleanup::new(ceph, "images", &image);
    let request = |id: Value, method: &str, params: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
    };
    let batch = [
        request(
            json!("create"),
            "snapshot.create",
            json!({"domain": domain, "image": image}),
        ),
        request(json!(2), "daemon.status", json!({})),
        request(json!("disks"), "domain.disks", json!({"domain": domain})),
        request(json!(3), "daemon.status", json!({})),
        request(json!(4), "jobs.list", json!({})),
    ]
    .join("\n")
        + "\n";
    c.send_raw(batch.as_bytes()); // one write
    let mut answered: Vec<Value> = Vec::new();
    let mut answers = std::collections::HashMap::new();
    while !answered.contains(&json!("create")) {
        match c.read_message(daemon::READ_TIMEOUT) {
            Msg::Message(m) if m.get("method").is_some() => c.notifications.push(m),
            Msg::Message(m) => {
                answered.push(m["id"].clone());
                answers.insert(m["id"].to_string(), m);
            }
            other => d.fail(&format!("pipelined answers: {other:?} after {answered:?}")),
        }
    }
    // a last request: any duplicate answer would arrive before its answer
    let tail = c.call("daemon.status", json!({}));
    assert!(tail.is_ok(), "{tail:?}");
    let mut sorted: Vec<String> = answered.iter().map(Value::to_string).collect();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["\"create\"", "\"disks\"", "2", "3", "4"],
        "every id once, in {answered:?}"
    );
    assert_eq!(
        answered.last(),
        Some(&json!("create")),
        "the quick answers come before the snapshot's: {answered:?}"
    );
    for quick in ["2", "3"] {
        let status = &answers[quick]["result"];
        assert_eq!(status["ceph"]["fsid"], ceph.fsid.as_str(), "{status}");
    }
    assert_eq!(answers["\"disks\""]["result"]["boot_disk"], "vda");
    let create = &answers["\"create\""];
    assert_eq!(
        create["result"]["disks"][0]["location"],
        format!("rbd://{}/images/{image}/snap", ceph.fsid).as_str(),
        "{create}"
    );
    let notes = c.progress_of(&json!("create"));
    assert_eq!(notes.len(), c.notifications.len(), "{:?}", c.notifications);
    check_progress(&notes, &json!("create"), TESTDRV_SIZE);
    assert_eq!(
        ceph.snapshots(&format!("images/{image}")),
        vec![("snap".to_string(), true)]
    );
    let deleted = c.call("snapshot.delete", json!({"pool": "images", "image": image}));
    assert_eq!(deleted.result()["deleted"], true);
    assert!(!ceph.exists(&format!("images/{image}")));
}

#[test]
fn real_guest_quiesced_snapshot_through_the_daemon() {
    let Some(bed) = daemon::bed() else { return };
    let Some(guest) = common::guest() else { return };
    let ceph = &bed.ceph;
    let d = bed.launch().libvirt_uri(&guest.uri).start();
    let mut c = d.connect();
    let disks = c
        .call("domain.disks", json!({"domain": guest.name}))
        .result()
        .clone();
    assert_eq!(disks["agent"], "connected", "{disks}");
    let boot = disks["boot_disk"].as_str().expect("boot disk").to_string();
    let image = common::unique("daemon-guest");
    let _cleanup = ImageCleanup::new(ceph, "images", &image);
    let id = c.fresh_id();
    c.send_request(
        &id,
        "snapshot.create",
        json!({"domain": guest.name, "image": image, "quiesce": "required"}),
    );
    let created = c.wait_for(&id);
    if !created.is_ok() {
        d.fail(&format!("quiesced snapshot failed: {created:?}"));
    }
    let result = created.result();
    assert_eq!(result["consistency"], "filesystem", "{result}");
    assert!(
        result["frozen_filesystems"].as_u64().unwrap_or(0) >= 1,
        "{result}"
    );
    let location = format!("rbd://{}/images/{image}/snap", ceph.fsid);
    assert_eq!(
        result["disks"][0]["location"],
        location.as_str(),
        "{result}"
    );
    assert_eq!(result["disks"][0]["disk"], boot.as_str(), "{result}");
    assert_eq!(
        result["disks"][0]["source"],
        guest.image.as_str(),
        "{result}"
    );
    let window = result["timings"]["freeze_window_ms"]
        .as_u64()
        .expect("freeze window");
    assert!(window > 0, "{result}");
    assert_eq!(
        ceph.snapshots(&format!("images/{image}")),
        vec![("snap".to_string(), true)]
    );
    assert_eq!(ceph.temp_snapshots(&guest.image), Vec::<String>::new());
    let status = c.call("daemon.status", json!({})).result().clone();
    assert_eq!(status["freeze_window_ms"]["count"], 1, "{status}");
    assert_eq!(
        status["freeze_window_ms"]["max"].as_u64(),
        Some(window),
        "{status}"
    );
    let deleted = c.call("snapshot.delete", json!({"location": location}));
    assert_eq!(deleted.result()["deleted"], true);
    assert!(!ceph.exists(&format!("images/{image}")));
}
