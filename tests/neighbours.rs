//! The daemon beside what the cloud around it does, on the bed's cluster
//! with libvirt's test driver: Nova's clones of our images (which carry our
//! metadata), a second job on a domain whose background flatten ends, names
//! Glance decodes, a disk of a second cluster, and a delete racing our own
//! flatten. Each checks what the daemon answered and what Ceph holds.
//!
//! The paused guest and the agent's timeout need the real guest:
//! tests/guest_neighbours.rs.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{self, ImageCleanup};
use serde_json::{json, Value};

/// Metadata of `image` as `rbd image-meta get` reads it (None: no such key).
fn meta(ceph: &common::Ceph, image: &str, key: &str) -> Option<String> {
    let out = ceph.rbd_output(&["image-meta", "get", image, key], None);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn wait_job_end(c: &mut daemon::Conn, job_id: &str, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let job = c
            .call("jobs.get", json!({"job_id": job_id}))
            .result()
            .clone();
        if job["state"] != "running" {
            return job;
        }
        assert!(Instant::now() < until, "job {job_id} never ended: {job}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn clones_of_our_image_are_not_ours_and_our_image_waits_for_them() {
    let Some(bed) = daemon::bed() else { return };
    let ceph = &bed.ceph;
    let d = bed.start("");
    let mut c = d.connect();
    let image = common::unique("nb-owned");
    let ours = ImageCleanup::new(ceph, "images", &image);
    let made = c.call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-03", "image": image, "quiesce": "off"}),
    );
    assert!(made.is_ok(), "{made:?}");
    // as Nova boots instances from it: a clone, and a flattened clone
    let (disk, flat) = (format!("{image}_disk"), format!("{image}_flat"));
    let _disk = ImageCleanup::new(ceph, "vms", &disk);
    let _flat = ImageCleanup::new(ceph, "vms", &flat);
    let snap = format!("{}@snap", ours.spec());
    ceph.rbd(&["clone", &snap, &format!("vms/{disk}")], None);
    ceph.rbd(&["clone", &snap, &format!("vms/{flat}")], None);
    ceph.rbd(&["flatten", "--no-progress", &format!("vms/{flat}")], None);
    // librbd copied our marks into both: what made the old check delete them
    for copy in [&disk, &flat] {
        let job = meta(ceph, &format!("vms/{copy}"), "rbdsnapd.job");
        assert!(
            job.is_some(),
            "{copy} carries no rbdsnapd.job: the test proves nothing"
        );
    }
    for copy in [&disk, &flat] {
        let refused = c.call("snapshot.delete", json!({"pool": "vms", "image": copy}));
        refused.assert_error(1015, "not_ours", &format!("delete of Nova's {copy}"));
        let says = refused.error()["message"].as_str().unwrap_or_default();
        assert!(says.contains("clone or copy"), "{says}");
        assert!(ceph.exists(&format!("vms/{copy}")), "{copy} was deleted");
    }
    // ours, with clones: refused, and untouched
    let busy = c.call("snapshot.delete", json!({"pool": "images", "image": image}));
    busy.assert_error(1014, "image_in_use", "our image with clones");
    assert_eq!(
        ceph.snapshots(&ours.spec()),
        vec![("snap".to_string(), true)],
        "a refused delete changed our image"
    );
    ceph.rbd(&["rm", "--no-progress", &format!("vms/{disk}")], None);
    ceph.rbd(&["rm", "--no-progress", &format!("vms/{flat}")], None);
    let deleted = c.call("snapshot.delete", json!({"pool": "images", "image": image}));
    assert_eq!(deleted.result()["deleted"], true, "{deleted:?}");
    assert!(!ceph.exists(&ours.spec()));
}

#[test]
fn an_image_without_an_id_record_is_not_deleted() {
    let Some(bed) = daemon::bed() else { return };
    let ceph = &bed.ceph;
    let d = bed.start("");
    let mut c = d.connect();
    let image = common::unique("nb-legacy");
    let ours = ImageCleanup::new(ceph, "images", &image);
    let made = c.call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-04", "image": image, "quiesce": "off"}),
    );
    assert!(made.is_ok(), "{made:?}");
    let recorded = meta(ceph, &ours.spec(), "rbdsnapd.image_id").expect("id recorded");
    let actual = ceph.info(&ours.spec())["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(recorded, actual, "the record is the image's own id");
    // an image as the daemon made them before ids were recorded
    ceph.rbd(
        &["image-meta", "remove", &ours.spec(), "rbdsnapd.image_id"],
        None,
    );
    let refused = c.call("snapshot.delete", json!({"pool": "images", "image": image}));
    refused.assert_error(1015, "not_ours", "an image with no id record");
    assert!(ceph.exists(&ours.spec()));
}

/// A answers (background flatten going on), B takes the domain, A's flatten
/// ends while B still holds it: a third request must find the domain busy.
#[test]
fn a_background_flattens_end_leaves_the_domain_to_the_job_that_holds_it() {
    let Some(bed) = daemon::bed() else { return };
    let ceph = &bed.ceph;
    let _big = common::BigDisk::new(ceph, "vms/testdrv-01-vda", "1536M", "1280M");
    let d = bed
        .launch()
        .env("RBDSNAPD_TEST_PAUSE_AT", "flattened")
        .start();
    let marker = d.dir.path().join("state/paused-at-flattened");
    let mut c = d.connect();
    let (a, b, cc) = (
        common::unique("nb-a"),
        common::unique("nb-b"),
        common::unique("nb-c"),
    );
    let _clean: Vec<ImageCleanup> = [&a, &b, &cc]
        .iter()
        .map(|i| ImageCleanup::new(ceph, "images", i))
        .collect();
    let domain = "rbdsnapd-test-01";
    let first = c.call(
        "snapshot.create",
        json!({"domain": domain, "image": a, "disks": ["vda"], "flatten": "background", "quiesce": "off"}),
    );
    assert!(first.is_ok(), "{first:?}");
    let a_job = first.result()["job_id"].as_str().expect("job").to_string();
    // B: sync on the other disk, held at its pause point after the flatten
    let b_id =
        c.send_create(json!({"domain": domain, "image": b, "disks": ["vdb"], "quiesce": "off"}));
    d.wait_paused(&marker);
    let a_then = c
        .call("jobs.get", json!({"job_id": a_job}))
        .result()
        .clone();
    assert_eq!(
        a_then["state"], "running",
        "A's flatten ended before B started: the disk is too small to show anything"
    );
    let a_end = wait_job_end(&mut c, &a_job, Duration::from_secs(120));
    assert_eq!(a_end["state"], "succeeded", "{a_end}");
    // A is over, B still holds the domain
    let third = c.call(
        "snapshot.create",
        json!({"domain": domain, "image": cc, "disks": ["vdb"], "flatten": "background", "quiesce": "off"}),
    );
    third.assert_error(1024, "busy", "C while B holds the domain");
    assert!(!ceph.exists(&format!("images/{cc}")), "C made an image");
    std::fs::remove_file(&marker).expect("let B go on");
    let b_answer = c.wait_for(&b_id);
    assert!(b_answer.is_ok(), "{b_answer:?}");
    let after = c.call(
        "snapshot.create",
        json!({"domain": domain, "image": cc, "disks": ["vdb"], "flatten": "background", "quiesce": "off"}),
    );
    assert!(
        after.is_ok(),
        "the domain is free once B answered: {after:?}"
    );
    let c_job = after.result()["job_id"].as_str().expect("job").to_string();
    wait_job_end(&mut c, &c_job, Duration::from_secs(60));
}

#[test]
fn locations_are_percent_encoded_as_glance_reads_them() {
    let Some(bed) = daemon::bed() else { return };
    let ceph = &bed.ceph;
    let d = bed.start("");
    let mut c = d.connect();
    let tag = common::unique("nb");
    // Glance decodes `x%41` to `xA`: the decoy must survive the delete
    let (odd, decoy) = (format!("{tag}-x%41 é+"), format!("{tag}-xA é+"));
    let _odd = ImageCleanup::new(ceph, "images", &odd);
    let _decoy = ImageCleanup::new(ceph, "images", &decoy);
    let mut locations = Vec::new();
    for (name, domain) in [(&odd, "rbdsnapd-test-06"), (&decoy, "rbdsnapd-test-07")] {
        let made = c.call(
            "snapshot.create",
            json!({"domain": domain, "image": name, "quiesce": "off"}),
        );
        assert!(made.is_ok(), "{made:?}");
        locations.push(
            made.result()["disks"][0]["location"]
                .as_str()
                .expect("location")
                .to_string(),
        );
    }
    let expected = format!(
        "rbd://{}/images/{}-x%2541%20%C3%A9%2B/snap",
        ceph.fsid,
        tag.replace('%', "%25")
    );
    assert_eq!(
        locations[0], expected,
        "as glance_store's get_uri writes it"
    );
    let deleted = c.call("snapshot.delete", json!({"location": locations[0]}));
    assert_eq!(deleted.result()["image"], odd.as_str(), "{deleted:?}");
    assert!(
        !ceph.exists(&format!("images/{odd}")),
        "the odd image is still there"
    );
    assert!(
        ceph.exists(&format!("images/{decoy}")),
        "the decoded name was deleted instead"
    );
    let deleted = c.call("snapshot.delete", json!({"location": locations[1]}));
    assert_eq!(deleted.result()["image"], decoy.as_str(), "{deleted:?}");
}

/// A delete sent while our own background flatten of that image runs is
/// refused and changes nothing: the job ends with a location that exists.
#[test]
fn a_delete_during_our_own_flatten_changes_nothing() {
    let Some(bed) = daemon::bed() else { return };
    let ceph = &bed.ceph;
    let _big = common::BigDisk::new(ceph, "vms/testdrv-08-vda", "512M", "384M");
    let d = bed.start("");
    let mut c = d.connect();
    let image = common::unique("nb-racing");
    let ours = ImageCleanup::new(ceph, "images", &image);
    let made = c.call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-08", "image": image, "flatten": "background", "quiesce": "off"}),
    );
    assert!(made.is_ok(), "{made:?}");
    let job = made.result()["job_id"].as_str().expect("job").to_string();
    let refused = c.call("snapshot.delete", json!({"pool": "images", "image": image}));
    refused.assert_error(1014, "image_in_use", "delete during our flatten");
    let says = refused.error()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(says.contains(&job), "names the job: {says}");
    assert_eq!(
        ceph.snapshots(&ours.spec()),
        vec![("snap".to_string(), true)]
    );
    let end = wait_job_end(&mut c, &job, Duration::from_secs(120));
    assert_eq!(end["state"], "succeeded", "{end}");
    assert_eq!(
        ceph.snapshots(&ours.spec()),
        vec![("snap".to_string(), true)]
    );
    assert!(ceph.info(&ours.spec()).get("parent").is_none(), "flattened");
    let deleted = c.call("snapshot.delete", json!({"pool": "images", "image": image}));
    assert_eq!(deleted.result()["deleted"], true, "{deleted:?}");
}

/// An image opened by another client (a guest, a tool) is refused before
/// anything is changed.
#[test]
fn a_delete_of_an_image_someone_has_open_changes_nothing() {
    let Some(bed) = daemon::bed() else { return };
    let ceph = &bed.ceph;
    let d = bed.start("");
    let mut c = d.connect();
    let image = common::unique("nb-open");
    let ours = ImageCleanup::new(ceph, "images", &image);
    let made = c.call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-09", "image": image, "quiesce": "off"}),
    );
    assert!(made.is_ok(), "{made:?}");
    let holder = ceph.hold_open(&ours.spec());
    let refused = c.call("snapshot.delete", json!({"pool": "images", "image": image}));
    drop(holder);
    refused.assert_error(1014, "image_in_use", "delete of an open image");
    let says = refused.error()["message"].as_str().unwrap_or_default();
    assert!(says.contains("open by 1 client"), "{says}");
    assert_eq!(
        ceph.snapshots(&ours.spec()),
        vec![("snap".to_string(), true)]
    );
    let deleted = c.call("snapshot.delete", json!({"pool": "images", "image": image}));
    assert_eq!(deleted.result()["deleted"], true, "{deleted:?}");
}

/// A disk of a second cluster whose pool and image names exist in ours too
/// (every bed makes the same test-driver images): refused before any
/// freeze, and nothing made or left in our cluster; the daemon of that
/// cluster snapshots it.
#[test]
fn a_disk_of_another_cluster_is_refused_and_its_own_cluster_takes_it() {
    let Some(bed) = daemon::bed() else { return };
    let ceph = &bed.ceph;
    let other = common::extra::ExtraCluster::up(ceph, 600, "memstore");
    let other_ceph = other.ceph(ceph);
    let twin = "vms/testdrv-02-vda";
    assert!(
        ceph.exists(twin) && other_ceph.exists(twin),
        "the same name in both"
    );
    other_ceph.write_image(twin, 0, &[b'B'; 4096]);
    let other_uri = other.testdrv_uri();
    let d = bed.launch().libvirt_uri(&other_uri).start();
    let mut c = d.connect();
    let image = common::unique("nb-twin");
    let _here = ImageCleanup::new(ceph, "images", &image);
    let refused = c.call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-02", "image": image}),
    );
    refused.assert_error(1005, "disk_other_cluster", "a disk of the second cluster");
    let says = refused.error()["message"].as_str().unwrap_or_default();
    assert!(
        says.contains("disk vda names monitors 127.0.0.1:"),
        "{says}"
    );
    assert!(
        !ceph.exists(&format!("images/{image}")),
        "an image was made of our twin"
    );
    assert!(
        ceph.temp_snapshots(twin).is_empty(),
        "our twin was snapshotted"
    );
    drop(d);
    // the same domain through a daemon of the second cluster: its own disk
    let theirs = bed
        .launch()
        .libvirt_uri(&other_uri)
        .ceph_conf(std::path::Path::new(&other.conf))
        .start();
    let made = theirs.connect().call(
        "snapshot.create",
        json!({"domain": "rbdsnapd-test-02", "image": image, "quiesce": "off"}),
    );
    assert!(made.is_ok(), "its own cluster takes it: {made:?}");
    let data = other_ceph.export(&format!("images/{image}@snap"));
    assert_eq!(
        &data[..4096],
        &[b'B'; 4096][..],
        "the second cluster's data"
    );
}
