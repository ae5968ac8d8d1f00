//! The flatten modes against the real cluster (with its manager): each
//! makes an image whose `snap` holds the source's data, detached from the
//! source where promised; `jobs.cancel` in `sync` (rolled back) and in
//! `background` (left usable, a clone); the host-wide flatten limit with
//! more requests than slots; a background flatten resumed after the daemon
//! is stopped or killed; `cluster` refused without a manager; a second
//! request for a busy domain waiting instead of failing.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{self, Conn, DaemonProc, TempDir};
use common::extra::ExtraCluster;
use common::{BigDisk, Ceph};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Slow flattens (one object at a time) for tests that act mid-flatten.
const SLOW: &str = "[ceph]\nconcurrent_management_ops = 1";

/// Whether the bed has a manager; required in CI, where the tests must run.
fn manager() -> bool {
    let has = std::env::var("RBDSNAPD_TEST_CEPH_MGR").as_deref() == Ok("1");
    if !has && std::env::var("RBDSNAPD_REQUIRE_BED").as_deref() == Ok("1") {
        panic!("the bed has no Ceph manager (dev/testbed up --mgr)");
    }
    has
}

/// Every snapshot of an image, trash namespace included.
fn all_snapshots(ceph: &Ceph, image: &str) -> Vec<Value> {
    let out = ceph.rbd(&["snap", "ls", "--all", "--format", "json", image], None);
    serde_json::from_slice(&out).expect("snap ls JSON")
}

/// Poll `jobs.get` until the job is no longer running.
fn wait_job(d: &DaemonProc, job_id: &str, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let job = d.connect().call("jobs.get", json!({ "job_id": job_id }));
        assert!(job.is_ok(), "jobs.get: {:?}", job.0);
        if job.result()["state"] != "running" {
            return job.result().clone();
        }
        if Instant::now() > until {
            d.fail(&format!(
                "job still running after {within:?}: {}",
                job.result()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Send a create and wait until its flatten is under way: (request id,
/// job id).
fn start_until_flatten(conn: &mut Conn, d: &DaemonProc, params: Value) -> (Value, String) {
    let id = conn.send_create(params);
    match conn.until_phase(&id, "flatten") {
        Ok(job_id) => (id, job_id),
        Err(e) => d.fail(&e),
    }
}

/// The new image is whole: `snap` holds the source's bytes; detached from
/// the source when `flattened`, else still its clone.
fn assert_image(ceph: &Ceph, source: &str, image: &str, flattened: bool) {
    let spec = format!("images/{image}");
    let info = ceph.info(&spec);
    assert_eq!(info.get("parent").is_none(), flattened, "{spec}: {info}");
    let snap_info = ceph.info(&format!("{spec}@snap"));
    assert_eq!(
        snap_info.get("parent").is_none(),
        flattened,
        "{spec}@snap: {snap_info}"
    );
    assert!(
        ceph.export(&format!("{spec}@snap")) == ceph.export(source),
        "{spec}@snap does not hold the source's data"
    );
}

/// The job id of a successful `snapshot.create` answer.
fn answered_job(answer: &daemon::Response) -> String {
    assert!(answer.is_ok(), "{:?}", answer.0);
    answer.result()["job_id"]
        .as_str()
        .expect("job_id")
        .to_string()
}

/// Ask a running job to stop.
fn cancel_job(d: &DaemonProc, job_id: &str) {
    let cancel = d.connect().call("jobs.cancel", json!({ "job_id": job_id }));
    assert!(cancel.is_ok(), "{:?}", cancel.0);
}

fn delete(d: &DaemonProc, image: &str) {
    let answer = d
        .connect()
        .call("snapshot.delete", json!({"pool": "images", "image": image}));
    assert!(answer.is_ok(), "delete {image}: {:?}", answer.0);
}

#[test]
fn each_mode_makes_a_whole_image_detached_where_promised() {
    let Some(bed) = daemon::bed() else { return };
    if !manager() {
        return;
    }
    let d = bed.start("");
    for (n, mode) in ["sync", "background", "cluster", "none"].iter().enumerate() {
        let domain = format!("rbdsnapd-test-0{}", n + 2);
        let source = format!("vms/testdrv-0{}-vda", n + 2);
        let _disk = BigDisk::new(&bed.ceph, &source, "256M", "192M");
        let image = common::unique(&format!("mode-{mode}"));
        let started = Instant::now();
        let answer = d.connect().call(
            "snapshot.create",
            json!({"domain": domain, "image": image, "flatten": mode}),
        );
        let to_location = started.elapsed();
        assert!(answer.is_ok(), "{mode}: {:?}", answer.0);
        let result = answer.result().clone();
        assert_eq!(result["flatten"], *mode, "{result}");
        assert_eq!(result["flattened"], *mode == "sync", "{result}");
        let parent = &result["disks"][0]["parent"];
        assert_eq!(parent.is_null(), *mode == "sync", "{result}");
        assert_eq!(
            result["disks"][0]["flatten_task"].is_string(),
            *mode == "cluster",
            "{result}"
        );
        // the location is usable at once in every mode
        assert!(bed.ceph.exists(&format!("images/{image}@snap")));
        if *mode == "background" || *mode == "cluster" {
            let job = wait_job(
                &d,
                result["job_id"].as_str().expect("job_id"),
                Duration::from_secs(120),
            );
            assert_eq!(job["state"], "succeeded", "{job}");
            assert_eq!(job["result"]["flattened"], true, "{job}");
            assert!(job["result"]["disks"][0]["parent"].is_null(), "{job}");
        }
        assert_image(&bed.ceph, &source, &image, *mode != "none");
        let left = all_snapshots(&bed.ceph, &source);
        if *mode == "none" {
            assert_eq!(left.len(), 1, "the clone's parent snapshot: {left:?}");
        } else {
            assert!(left.is_empty(), "{source} keeps snapshots: {left:?}");
        }
        eprintln!("flatten {mode}: location after {to_location:?}");
        delete(&d, &image);
        assert!(all_snapshots(&bed.ceph, &source).is_empty(), "{source}");
    }
}

#[test]
fn cancel_rolls_back_a_sync_job_and_leaves_a_background_image_usable() {
    let Some(bed) = daemon::bed() else { return };
    let source = "vms/testdrv-06-vda";
    let _disk = BigDisk::new(&bed.ceph, source, "1G", "1G");
    let d = bed.start(SLOW);

    // sync: cancelled mid-flatten, rolled back
    let image = common::unique("cancel-sync");
    let mut conn = d.connect();
    let params = json!({"domain": "rbdsnapd-test-06", "image": image});
    let (id, job_id) = start_until_flatten(&mut conn, &d, params);
    let asked = Instant::now();
    let cancel = d.connect().call("jobs.cancel", json!({ "job_id": job_id }));
    assert_eq!(cancel.result()["cancelling"], true, "{:?}", cancel.0);
    // The promise is the stop at the next safe point (about a second); the
    // rollback after it removes a partly flattened 1 GiB image, which on a
    // loaded one-OSD bed took 6.5 s in CI, so only the stop is timed.
    if let Err(e) = conn.until_phase(&id, "rollback") {
        d.fail(&e);
    }
    let stopped = asked.elapsed();
    let answer = conn.wait_for(&id);
    answer.assert_error(1026, "cancelled", "a cancelled sync flatten");
    assert!(
        stopped < Duration::from_secs(5),
        "the stop took {stopped:?}"
    );
    let progress = conn.progress_of(&id);
    if let Some(last) = progress.iter().rfind(|n| n["params"]["phase"] == "flatten") {
        assert!(
            last["params"]["done"].as_u64() < last["params"]["total"].as_u64(),
            "the flatten ran to its end before the cancel: {last}"
        );
    }
    assert!(
        !bed.ceph.exists(&format!("images/{image}")),
        "partial image left"
    );
    assert!(all_snapshots(&bed.ceph, source).is_empty(), "{source}");

    // background: answered, then cancelled: a usable clone remains
    let image = common::unique("cancel-bg");
    let answer = d.connect().call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-06", "image": image, "flatten": "background"}),
    );
    let job_id = answered_job(&answer);
    cancel_job(&d, &job_id);
    let job = wait_job(&d, &job_id, Duration::from_secs(10));
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error"]["data"]["kind"], "cancelled", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .expect("message")
            .contains("usable"),
        "{job}"
    );
    assert_eq!(job["result"]["disks"][0]["image"], image.as_str(), "{job}");
    assert_image(&bed.ceph, source, &image, false);
    // a retry of an answered request gets its answer, not a second image
    let again = d.connect().call("jobs.cancel", json!({ "job_id": job_id }));
    assert_eq!(again.result()["cancelling"], false, "{:?}", again.0);
    delete(&d, &image);
    assert!(all_snapshots(&bed.ceph, source).is_empty(), "{source}");
    let unknown = d.connect().call("jobs.cancel", json!({"job_id": "nope"}));
    unknown.assert_error(1025, "job_not_found", "cancel of an unknown job");
}

#[test]
fn the_flatten_limit_holds_with_more_requests_than_slots() {
    let Some(bed) = daemon::bed() else { return };
    let domains = ["07", "08", "09"];
    let sources: Vec<String> = domains
        .iter()
        .map(|n| format!("vms/testdrv-{n}-vda"))
        .collect();
    let _disks: Vec<BigDisk> = sources
        .iter()
        .map(|s| BigDisk::new(&bed.ceph, s, "512M", "512M"))
        .collect();
    let d = bed.start(&format!("{SLOW}\n[snapshot]\nmax_concurrent_flattens = 1"));
    let mut jobs = Vec::new();
    for n in domains {
        let image = common::unique(&format!("limit-{n}"));
        let answer = d.connect().call(
            "snapshot.create",
            json!({"domain": format!("rbdsnapd-test-{n}"), "image": image, "flatten": "background"}),
        );
        assert!(answer.is_ok(), "{:?}", answer.0);
        jobs.push((
            answer.result()["job_id"]
                .as_str()
                .expect("job_id")
                .to_string(),
            image,
        ));
    }
    let (mut most, mut positions) = (0, Vec::new());
    let until = Instant::now() + Duration::from_secs(180);
    loop {
        let status = d.status();
        most = most.max(status["flattens"]["running"].as_u64().expect("a count"));
        let list = d.connect().call("jobs.list", json!({}));
        let running: Vec<&Value> = list.result()["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .filter(|j| j["state"] == "running")
            .collect();
        positions.extend(running.iter().filter_map(|j| j["position"].as_u64()));
        if running.is_empty() {
            break;
        }
        assert!(
            Instant::now() < until,
            "flattens still running: {running:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(most, 1, "more than one flatten at a time");
    assert!(
        positions.contains(&2),
        "no job was seen second in the queue: {positions:?}"
    );
    for ((job_id, image), source) in jobs.iter().zip(&sources) {
        let job = wait_job(&d, job_id, Duration::from_secs(1));
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_image(&bed.ceph, source, image, true);
        delete(&d, image);
    }
}

/// A daemon on `state`, slow flattens.
fn start_on(bed: &daemon::Bed, state: &Path) -> DaemonProc {
    bed.launch()
        .extra(&format!("state_dir = {:?}", state.display().to_string()))
        .extra(SLOW)
        .start()
}

#[test]
fn a_background_flatten_is_resumed_after_a_stop_and_left_whole_after_a_kill() {
    let Some(bed) = daemon::bed() else { return };
    let source = "vms/testdrv-10-vda";
    let _disk = BigDisk::new(&bed.ceph, source, "1G", "1G");
    let state = TempDir::new("rbdsnapd-bg-state");
    for stop in [Signal::SIGTERM, Signal::SIGKILL] {
        let mut d = start_on(&bed, state.path());
        let image = common::unique("resume");
        let request_id = common::unique("rid");
        let params = json!({"domain": "rbdsnapd-test-10", "image": image,
                            "flatten": "background", "request_id": request_id});
        let answer = d.connect().call("snapshot.create", params.clone());
        let job_id = answered_job(&answer);
        // well into the flatten, then stop
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let job = d.connect().call("jobs.get", json!({ "job_id": job_id }));
            let r = job.result();
            if r["phase"] == "flatten" && r["done"].as_u64() > Some(0) {
                break;
            }
            assert!(r["state"] == "running", "ended before the stop: {r}");
            assert!(Instant::now() < until, "no flatten progress: {r}");
            std::thread::sleep(Duration::from_millis(50));
        }
        d.signal(stop);
        assert!(
            d.wait_exit(Duration::from_secs(30)).is_some(),
            "{stop:?} did not stop it"
        );
        assert!(bed
            .ceph
            .info(&format!("images/{image}"))
            .get("parent")
            .is_some());
        drop(d);
        let d = start_on(&bed, state.path());
        let job = wait_job(&d, &job_id, Duration::from_secs(120));
        assert!(
            !job["recovery"].as_array().expect("recovery").is_empty(),
            "{job}"
        );
        if stop == Signal::SIGTERM {
            // paused cleanly: resumed
            assert_eq!(job["state"], "succeeded", "after {stop:?}: {job}");
            assert_image(&bed.ceph, source, &image, true);
        } else {
            // killed inside librbd: not resumed, the image left a whole clone
            assert_eq!(job["state"], "failed", "after {stop:?}: {job}");
            assert_eq!(job["error"]["data"]["kind"], "cancelled", "{job}");
            assert_image(&bed.ceph, source, &image, false);
        }
        // the same request_id: the same image, no second one
        let retry = d.connect().call("snapshot.create", params);
        assert_eq!(
            retry.result()["disks"][0]["image"],
            image.as_str(),
            "{:?}",
            retry.0
        );
        delete(&d, &image);
        assert!(all_snapshots(&bed.ceph, source).is_empty(), "{source}");
        eprintln!("background flatten after {stop:?}: {}", job["state"]);
    }
}

#[test]
fn a_cluster_flatten_is_followed_again_after_a_kill_and_can_be_cancelled() {
    let Some(bed) = daemon::bed() else { return };
    if !manager() {
        return;
    }
    let source = "vms/testdrv-13-vda";
    let _disk = BigDisk::new(&bed.ceph, source, "1G", "1G");
    let state = TempDir::new("rbdsnapd-cluster-state");
    let mut d = start_on(&bed, state.path());
    let image = common::unique("cluster-kill");
    let answer = d.connect().call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-13", "image": image, "flatten": "cluster"}),
    );
    let job_id = answered_job(&answer);
    d.signal(Signal::SIGKILL);
    assert!(d.wait_exit(Duration::from_secs(10)).is_some());
    drop(d);
    // the manager goes on alone; the next daemon finds the job and its task
    let d = start_on(&bed, state.path());
    let job = wait_job(&d, &job_id, Duration::from_secs(120));
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(
        !job["recovery"].as_array().expect("recovery").is_empty(),
        "{job}"
    );
    assert_image(&bed.ceph, source, &image, true);
    delete(&d, &image);

    // cancelled at once: the manager's task is cancelled, the image stays a
    // usable clone (or, if the manager was quicker, flattened: both are whole)
    let image = common::unique("cluster-cancel");
    let answer = d.connect().call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-13", "image": image, "flatten": "cluster"}),
    );
    let job_id = answered_job(&answer);
    cancel_job(&d, &job_id);
    let job = wait_job(&d, &job_id, Duration::from_secs(60));
    let flattened = job["state"] == "succeeded";
    if !flattened {
        assert_eq!(job["error"]["data"]["kind"], "cancelled", "{job}");
    }
    assert_image(&bed.ceph, source, &image, flattened);
    let out = std::process::Command::new("ceph")
        .args(["--conf", &bed.ceph.conf, "--id", &bed.ceph.admin_id])
        .args(["rbd", "task", "list", "--format", "json"])
        .output()
        .expect("ceph rbd task list");
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(
        listed
            .iter()
            .all(|t| t["refs"]["image_name"] != image.as_str()),
        "a task is left for {image}: {listed:?}"
    );
    delete(&d, &image);
    assert!(all_snapshots(&bed.ceph, source).is_empty(), "{source}");
    eprintln!(
        "cluster flatten cancelled: image left {}",
        if flattened { "flattened" } else { "a clone" }
    );
}

#[test]
fn cluster_flatten_is_refused_without_a_manager() {
    let Some(bed) = daemon::bed() else { return };
    let extra = ExtraCluster::up(&bed.ceph, 500, "memstore");
    let ceph = extra.ceph(&bed.ceph);
    let d = bed
        .launch()
        .libvirt_uri(&extra.testdrv_uri())
        .ceph_conf(Path::new(&extra.conf))
        .start();
    let image = common::unique("nomgr");
    let answer = d.connect().call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-11", "image": image, "flatten": "cluster"}),
    );
    answer.assert_error(1017, "unsupported", "cluster flatten without a manager");
    assert!(
        answer.error()["message"]
            .as_str()
            .expect("message")
            .contains("manager"),
        "{:?}",
        answer.0
    );
    assert!(!ceph.exists(&format!("images/{image}")));
    assert!(all_snapshots(&ceph, "vms/testdrv-11-vda").is_empty());
    // and v1-only clusters cannot do background: the config forces v1 here
    drop(d);
    let d = bed
        .launch()
        .libvirt_uri(&extra.testdrv_uri())
        .ceph_conf(Path::new(&extra.conf))
        .extra("[snapshot]\nclone_format = \"v1\"")
        .start();
    let answer = d.connect().call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-11", "image": image, "flatten": "background"}),
    );
    answer.assert_error(1017, "unsupported", "background flatten with clone v1");
    assert!(!ceph.exists(&format!("images/{image}")));
}

#[test]
fn cluster_flatten_needs_only_the_caps_of_the_flatten_and_names_a_missing_one() {
    let Some(bed) = daemon::bed() else { return };
    if !manager() {
        return;
    }
    // OpenStack's usual caps minus the manager's on the destination pool:
    // the probe must tell this (and say so) from a cluster without rbd_support
    let rbd_pools = "profile rbd pool=vms, profile rbd pool=images";
    let user = bed.ceph.user_with_caps(
        "nomgrcap",
        &[
            ("mon", "profile rbd"),
            ("osd", rbd_pools),
            ("mgr", "profile rbd pool=vms"),
        ],
    );
    let d = bed.launch().ceph_id(&user).start();
    let image = common::unique("nomgrcap");
    let answer = d.connect().call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-11", "image": image, "flatten": "cluster"}),
    );
    answer.assert_error(1017, "unsupported", "cluster flatten without the mgr cap");
    let message = answer.error()["message"]
        .as_str()
        .expect("message")
        .to_string();
    assert!(
        message.contains("mgr 'profile rbd pool=images'"),
        "the missing cap is named: {message}"
    );
    assert!(!bed.ceph.exists(&format!("images/{image}")));
    assert!(all_snapshots(&bed.ceph, "vms/testdrv-11-vda").is_empty());
    // the same user flattens in the other modes, which need no manager
    let answer = d.connect().call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-11", "image": image, "flatten": "sync"}),
    );
    answer.result();
    assert!(bed.ceph.exists(&format!("images/{image}@snap")));
    d.connect()
        .call("snapshot.delete", json!({"pool": "images", "image": image}))
        .result();
    assert!(!bed.ceph.exists(&format!("images/{image}")));
}

#[test]
fn the_cli_follows_a_background_flatten_to_its_end() {
    let Some(bed) = daemon::bed() else { return };
    let d = bed.start(SLOW);
    let source = "vms/testdrv-14-vda";
    let _disk = BigDisk::new(&bed.ceph, source, "256M", "192M");
    let image = common::unique("follow");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rbdsnapctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args([
            "snapshot",
            "rbdsnapd-test-14",
            &image,
            "--flatten",
            "background",
        ])
        .args(["--request-id", &image, "--follow"])
        .output()
        .expect("run rbdsnapctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rbdsnapctl: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("rbd://{}/images/{image}/snap", bed.ceph.fsid),
        "{stderr}"
    );
    // it returned only once the image stood alone
    assert_image(&bed.ceph, source, &image, true);
    let jobs = d.connect().call("jobs.list", json!({}));
    let job = jobs.result()["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["image"] == image.as_str())
        .cloned()
        .expect("the job is listed");
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["request_id"],
        image.as_str(),
        "--request-id was sent: {job}"
    );
    d.connect()
        .call("snapshot.delete", json!({"pool": "images", "image": image}))
        .result();
}

#[test]
fn a_busy_domain_is_waited_for_when_asked() {
    let Some(bed) = daemon::bed() else { return };
    let source = "vms/testdrv-12-vda";
    let _disk = BigDisk::new(&bed.ceph, source, "512M", "512M");
    let d = bed.start(SLOW);
    let first = common::unique("busy-1");
    let mut conn = d.connect();
    let (id, _) = start_until_flatten(
        &mut conn,
        &d,
        json!({"domain": "rbdsnapd-test-12", "image": first}),
    );
    let refused = d.connect().call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-12", "image": common::unique("busy-x")}),
    );
    refused.assert_error(1024, "busy", "a second snapshot of a busy domain");

    // waiting requests are jobs at once: listed in line, cancellable, and
    // never started once their client is gone
    let queued_job = |image: &str| -> Value {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let jobs = d.connect().call("jobs.list", json!({}));
            let found = jobs.result()["jobs"]
                .as_array()
                .and_then(|jobs| jobs.iter().find(|j| j["image"] == image).cloned());
            if let Some(job) = found {
                return job;
            }
            assert!(Instant::now() < until, "{image} never listed");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let cancelled = common::unique("busy-cancelled");
    let mut waiter = d.connect();
    let cancelled_id = waiter.fresh_id();
    waiter.send_request(
        &cancelled_id,
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-12", "image": cancelled, "on_busy": "wait"}),
    );
    let job = queued_job(&cancelled);
    assert_eq!(
        (
            job["state"].as_str(),
            job["phase"].as_str(),
            job["position"].as_u64()
        ),
        (Some("running"), Some("queued"), Some(1)),
        "{job}"
    );
    assert_eq!(job["waiting_for_domain"], true, "{job}");
    cancel_job(&d, job["job_id"].as_str().expect("job_id"));
    waiter
        .wait_for(&cancelled_id)
        .assert_error(1026, "cancelled", "a queued request cancelled");
    let gone = common::unique("busy-gone");
    {
        let mut client = d.connect();
        let gone_id = client.fresh_id();
        client.send_request(
            &gone_id,
            "snapshot.create",
            json!({"domain": "rbdsnapd-test-12", "image": gone, "on_busy": "wait"}),
        );
        queued_job(&gone);
    } // the client goes away while its request waits

    let second = common::unique("busy-2");
    let waited = d.connect().call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-12", "image": second, "on_busy": "wait"}),
    );
    assert!(waited.is_ok(), "{:?}", waited.0);
    let answer = conn.wait_for(&id);
    assert!(answer.is_ok(), "{:?}", answer.0);
    for image in [&first, &second] {
        assert_image(&bed.ceph, source, image, true);
        delete(&d, image);
    }
    for never in [&cancelled, &gone] {
        assert!(
            !bed.ceph.exists(&format!("images/{never}")),
            "{never} was made"
        );
    }
    let job = queued_job(&gone);
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error"]["data"]["kind"], "cancelled", "{job}");
}
