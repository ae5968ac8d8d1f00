//! `flatten: none` never keeps an instance from being deleted. The image it
//! makes reads through to a snapshot of the source disk; with clone v2 that
//! snapshot sits in the source's trash. Here the whole chain a cloud builds
//! is made on the bed's cluster: the source is held open (its instance
//! runs), a consumer boots an instance from our image, Glance moves our image
//! to the trash (it has children), the instance of the source stops, and
//! Nova removes the source disk, retrying as Nova does. The daemon must have
//! flattened our image in between, so that the source has no snapshot left.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{self, ImageCleanup};
use serde_json::{json, Value};

const DOMAIN: &str = "rbdsnapd-test-02";
const SOURCE: &str = "vms/testdrv-02-vda";

/// Every snapshot of `image`, the trashed ones too, as `(name, namespace)`.
fn all_snapshots(ceph: &common::Ceph, image: &str) -> Vec<(String, String)> {
    let out = ceph.rbd(&["snap", "ls", "--all", "--format", "json", image], None);
    let list: Vec<Value> = serde_json::from_slice(&out).expect("snap ls JSON");
    list.iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                s["namespace"]["type"]
                    .as_str()
                    .unwrap_or("user")
                    .to_string(),
            )
        })
        .collect()
}

fn dependents(d: &daemon::DaemonProc) -> Vec<Value> {
    let status = d.connect().call("daemon.status", json!({}));
    status.result()["dependents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Nova's `_destroy_volume`: remove, and on "has snapshots" or "busy" try
/// again every 5 s, 12 times; whether it went.
fn nova_removes(ceph: &common::Ceph, image: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let mut last = String::new();
    for _ in 0..12 {
        let out = ceph.rbd_output(&["rm", "--no-progress", image], None);
        if out.status.success() {
            return Ok(started.elapsed());
        }
        last = String::from_utf8_lossy(&out.stderr).to_string();
        std::thread::sleep(Duration::from_secs(5));
    }
    Err(last)
}

/// The id of `image` as `rbd trash ls` lists it.
fn trash_id(ceph: &common::Ceph, pool: &str, name: &str) -> String {
    let out = ceph.rbd(&["trash", "ls", "--format", "json", pool], None);
    let list: Vec<Value> = serde_json::from_slice(&out).expect("trash ls JSON");
    list.iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["id"].as_str())
        .unwrap_or_else(|| panic!("{pool}/{name} not in the trash: {list:?}"))
        .to_string()
}

/// On a failure, what the test made goes, so that the bed's disk is
/// empty again: the consumer's clone, then our image (from the trash too).
struct Leftovers<'a> {
    ceph: &'a common::Ceph,
    consumer: String,
    ours: String,
}

impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let run = |args: &[&str]| drop(self.ceph.rbd_output(args, None));
        run(&["rm", "--no-progress", &self.consumer]);
        let out = self
            .ceph
            .rbd_output(&["trash", "ls", "--format", "json", "images"], None);
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for entry in list.iter().filter(|e| e["name"] == self.ours.as_str()) {
            let id = entry["id"].as_str().unwrap_or_default();
            run(&["trash", "restore", "--pool", "images", "--image-id", id]);
        }
        let ours = format!("images/{}", self.ours);
        run(&["snap", "unprotect", &format!("{ours}@snap")]);
        run(&["snap", "purge", "--no-progress", &ours]);
        run(&["rm", "--no-progress", &ours]);
    }
}

#[test]
fn a_flatten_none_source_can_be_removed_once_its_instance_is_gone() {
    let Some(bed) = daemon::bed() else { return };
    let ceph = &bed.ceph;
    let _disk = common::BigDisk::new(ceph, SOURCE, "64M", "32M");
    let instance_of_source = ceph.hold_open(SOURCE);
    let d = bed.start("[snapshot]\nrelease_none_after_secs = 2\n");
    let image = common::unique("release");
    let answer = d.connect().call(
        "snapshot.create",
        json!({"domain": DOMAIN, "image": image, "flatten": "none", "quiesce": "off"}),
    );
    assert!(answer.is_ok(), "{:?}", answer.0);
    assert!(answer.result()["disks"][0]["parent"].is_string());
    // the image says what it holds, for whoever finds it later
    let meta = |key: &str| {
        let out = ceph.rbd(
            &["image-meta", "get", &format!("images/{image}"), key],
            None,
        );
        String::from_utf8_lossy(&out).trim().to_string()
    };
    assert_eq!(meta("rbdsnapd.consistency"), "crash");
    assert_eq!(
        meta("rbdsnapd.consistency_reason"),
        answer.result()["consistency_reason"]
            .as_str()
            .expect("a reason")
    );
    assert_eq!(meta("rbdsnapd.one_instant"), "true");

    // a consumer boots an instance from our image; Glance then deletes our
    // image, which has a child, by moving it to the trash
    let consumer = format!("vms/{}", common::unique("booted"));
    let _leftovers = Leftovers {
        ceph,
        consumer: consumer.clone(),
        ours: image.clone(),
    };
    ceph.rbd(&["clone", &format!("images/{image}@snap"), &consumer], None);
    ceph.rbd(&["trash", "mv", &format!("images/{image}")], None);

    // while the source's instance runs, the dependency stays, visible
    std::thread::sleep(Duration::from_secs(4));
    let listed = dependents(&d);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["image"]["name"], image.as_str(), "{listed:?}");
    assert_eq!(listed[0]["source"]["name"], "testdrv-02-vda", "{listed:?}");
    assert_eq!(listed[0]["state"], "source in use", "{listed:?}");
    let held = all_snapshots(ceph, SOURCE);
    assert!(
        held.iter().any(|(_, ns)| ns == "trash"),
        "clone v2 keeps the temporary snapshot in the source's trash: {held:?}"
    );

    // the instance stops and Nova removes its disk
    drop(instance_of_source);
    let removed = nova_removes(ceph, SOURCE);
    // the bed's domain names this disk: give it back, empty
    if removed.is_ok() {
        ceph.rbd(&["create", "--size", "16M", SOURCE], None);
    }
    let took = removed.unwrap_or_else(|e| {
        panic!(
            "Nova could not remove the source within its 60 s of retries: {e}; its snapshots: \
             {:?}; dependents: {:?}\n{}",
            all_snapshots(ceph, SOURCE),
            dependents(&d),
            d.log()
        )
    });
    eprintln!("the source was removable {took:?} after its instance stopped");
    assert!(dependents(&d).is_empty(), "{:?}", dependents(&d));

    // the consumer's instance still reads: its parent (ours, in the trash)
    // is whole now
    let info = ceph.info(&consumer);
    assert_eq!(info["parent"]["image"], image.as_str(), "{info}");
    assert_eq!(info["parent"]["trash"], true, "{info}");
    assert_eq!(ceph.export(&consumer).len(), 64 << 20);
    let id = trash_id(ceph, "images", &image);
    let ours: Value = serde_json::from_slice(&ceph.rbd(
        &[
            "info",
            "--format",
            "json",
            "--pool",
            "images",
            "--image-id",
            &id,
        ],
        None,
    ))
    .expect("info JSON");
    assert!(ours.get("parent").is_none(), "ours is flattened: {ours}");

    // clean up as the consumers would: the instance, then our image back
    // from the trash and deleted through the daemon (it is still ours)
    ceph.rbd(&["rm", "--no-progress", &consumer], None);
    ceph.rbd(
        &["trash", "restore", "--pool", "images", "--image-id", &id],
        None,
    );
    let deleted = d
        .connect()
        .call("snapshot.delete", json!({"pool": "images", "image": image}));
    assert!(deleted.is_ok(), "{:?}", deleted.0);
}

/// A digest of `bytes`, to compare two images' contents.
fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

#[test]
fn a_release_flatten_killed_half_way_is_finished_whole_after_a_restart() {
    let Some(bed) = daemon::bed() else { return };
    let ceph = &bed.ceph;
    let source = "vms/testdrv-03-vda";
    let _disk = common::BigDisk::new(ceph, source, "512M", "512M");
    let expected = digest(&ceph.export(source));
    // slow flattens: one object at a time
    let config = "[snapshot]\nrelease_none_after_secs = 1\n[ceph]\nconcurrent_management_ops = 1";
    let mut d = bed.start(config);
    let image = common::unique("release-kill");
    let _cleanup = ImageCleanup::new(ceph, "images", &image);
    let answer = d.connect().call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-03", "image": image, "flatten": "none", "quiesce": "off"}),
    );
    assert!(answer.is_ok(), "{:?}", answer.0);
    // the source has no client: the release starts; kill it half-way
    let until = Instant::now() + Duration::from_secs(30);
    while dependents(&d).first().map(|d| d["state"].clone()) != Some(json!("flattening")) {
        assert!(
            Instant::now() < until,
            "no release started: {:?}",
            dependents(&d)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(700));
    d.signal(nix::sys::signal::Signal::SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    let info = ceph.info(&format!("images/{image}"));
    assert!(
        info.get("parent").is_some(),
        "precondition: the flatten was still running when killed: {info}"
    );
    // the next start goes on, object map rebuilt, and the image is whole
    let state = d.dir.path().join("state");
    let again = bed.start(&format!(
        "state_dir = {:?}\n{config}",
        state.display().to_string()
    ));
    let until = Instant::now() + Duration::from_secs(120);
    while !dependents(&again).is_empty() {
        assert!(
            Instant::now() < until,
            "never released: {:?}",
            dependents(&again)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        again.log().contains("rebuilding its object map first"),
        "{}",
        again.log()
    );
    let info = ceph.info(&format!("images/{image}"));
    assert!(info.get("parent").is_none(), "flattened: {info}");
    assert_eq!(
        digest(&ceph.export(&format!("images/{image}"))),
        expected,
        "the released image holds what the snapshot held"
    );
    assert!(
        all_snapshots(ceph, source).is_empty(),
        "{:?}",
        all_snapshots(ceph, source)
    );
    let deleted = again
        .connect()
        .call("snapshot.delete", json!({"pool": "images", "image": image}));
    assert!(deleted.is_ok(), "{:?}", deleted.0);
}
