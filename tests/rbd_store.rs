//! The real image store ([`CephStore`]) against the test bed's cluster.
//!
//! Every effect is checked independently through the `rbd` command-line tool
//! (a different client of the same cluster), not only through the store's
//! own answers. Each test registers the images it makes with a [`Scratch`]
//! before making them, which removes them (snapshots first, children before
//! parents) when the test ends, also when an assertion fails.

mod common;

use std::sync::Arc;

use rbdsnapd::rbd::{
    CephStore, CloneFormat, Image, ImageSpec, ImageStore, ParentSpec, RbdErrorKind,
};

fn connect(ceph: &common::Ceph) -> CephStore {
    CephStore::connect(std::path::Path::new(&ceph.conf), &ceph.id).expect("connect to the bed")
}

/// Images a test made, removed when it ends.
struct Scratch {
    ceph: common::Ceph,
    images: Vec<String>,
    namespaces: Vec<String>,
}

impl Scratch {
    fn new(ceph: &common::Ceph) -> Scratch {
        Scratch {
            ceph: ceph.clone(),
            images: Vec::new(),
            namespaces: Vec::new(),
        }
    }

    /// A new RADOS namespace in `pool`, removed after its images.
    fn namespace(&mut self, pool: &str) -> String {
        let ns = common::unique("rbdstore-ns");
        let path = format!("{pool}/{ns}");
        self.namespaces.push(path.clone());
        self.ceph.rbd(&["namespace", "create", &path], None);
        ns
    }

    /// A fresh image name in `pool`, to be cleaned up.
    fn name(&mut self, pool: &str, what: &str) -> ImageSpec {
        let spec = ImageSpec::new(pool, common::unique(&format!("rbdstore-{what}")));
        self.images.push(spec.to_string());
        spec
    }

    /// A fresh image name in a namespace of `pool`, to be cleaned up.
    fn name_in(&mut self, pool: &str, ns: &str, what: &str) -> ImageSpec {
        let mut spec = self.name(pool, what);
        self.images.pop();
        spec.namespace = Some(ns.to_string());
        self.images.push(spec.to_string());
        spec
    }

    /// A new image of `size` bytes, made by the CLI.
    fn image(&mut self, pool: &str, what: &str, size: &str) -> ImageSpec {
        let spec = self.name(pool, what);
        self.ceph
            .rbd(&["create", "--size", size, &spec.to_string()], None);
        spec
    }

    /// A new image holding `data`, in objects of `object_size`.
    fn import(&mut self, pool: &str, what: &str, data: &[u8], object_size: &str) -> ImageSpec {
        let spec = self.name(pool, what);
        let path = spec.to_string();
        self.ceph.rbd(
            &[
                "import",
                "--no-progress",
                "--object-size",
                object_size,
                "-",
                &path,
            ],
            Some(data),
        );
        spec
    }

    fn remove(&self, image: &str) {
        if self
            .ceph
            .rbd_output(&["rm", "--no-progress", image], None)
            .status
            .success()
        {
            return;
        }
        let listing = self
            .ceph
            .rbd_output(&["snap", "ls", "--format", "json", image], None);
        let snaps: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap_or_default();
        for snap in snaps.as_array().into_iter().flatten() {
            if snap["protected"] == "true" {
                let name = format!("{image}@{}", snap["name"].as_str().unwrap_or_default());
                self.ceph.rbd_output(&["snap", "unprotect", &name], None);
            }
        }
        self.ceph
            .rbd_output(&["snap", "purge", "--no-progress", image], None);
        self.ceph.rbd_output(&["rm", "--no-progress", image], None);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for image in self.images.iter().rev() {
            self.remove(image);
        }
        for ns in &self.namespaces {
            self.ceph.rbd_output(&["namespace", "remove", ns], None);
        }
    }
}

/// `rbd info` as JSON.
fn info(ceph: &common::Ceph, image: &ImageSpec) -> serde_json::Value {
    serde_json::from_slice(&ceph.rbd(&["info", "--format", "json", &image.to_string()], None))
        .expect("rbd info is JSON")
}

/// Snapshot names and protection as the CLI sees them.
fn cli_snaps(ceph: &common::Ceph, image: &ImageSpec) -> Vec<(String, bool)> {
    let out = ceph.rbd(
        &["snap", "ls", "--format", "json", &image.to_string()],
        None,
    );
    let snaps: serde_json::Value = serde_json::from_slice(&out).expect("snap ls is JSON");
    snaps
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                s["protected"] == "true",
            )
        })
        .collect()
}

fn export(ceph: &common::Ceph, what: &str) -> Vec<u8> {
    ceph.rbd(&["export", "--no-progress", what, "-"], None)
}

fn kind_of<T: std::fmt::Debug>(result: Result<T, rbdsnapd::rbd::RbdError>) -> RbdErrorKind {
    result.expect_err("the call should fail").kind
}

#[test]
fn fsid_is_the_bed_cluster_s() {
    let Some(ceph) = common::ceph() else { return };
    assert_eq!(connect(&ceph).fsid().expect("fsid"), ceph.fsid);
}

#[test]
fn connect_with_an_unknown_user_is_permission_denied() {
    let Some(ceph) = common::ceph() else { return };
    // a keyring with a key the monitors do not know for this name
    let dir = std::path::Path::new(&ceph.conf).parent().expect("bed dir");
    let user = common::unique("nobody");
    let keyring = dir.join(format!("ceph.client.{user}.keyring"));
    let key = "AQBPmDNmAAAAABAAsfD5zFn8vHHmeK2oqFcTtg==";
    std::fs::write(&keyring, format!("[client.{user}]\n\tkey = {key}\n")).expect("keyring");
    let err = CephStore::connect(std::path::Path::new(&ceph.conf), &user)
        .expect_err("no such cephx user");
    std::fs::remove_file(&keyring).ok();
    assert_eq!(err.kind, RbdErrorKind::PermissionDenied, "{err}");
    // no keyring at all: said so, not a bare "No such file or directory"
    let err = CephStore::connect(std::path::Path::new(&ceph.conf), "nobody-here")
        .expect_err("no keyring");
    assert_eq!(err.kind, RbdErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("no keyring"), "{err}");
    let err = CephStore::connect(std::path::Path::new("/nonexistent/ceph.conf"), &ceph.id)
        .expect_err("no such file");
    assert!(err.to_string().contains("/nonexistent/ceph.conf"), "{err}");
}

#[test]
fn pool_exists_tells_real_pools_from_missing_ones() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    assert!(store.pool_exists(&ceph.pool_vms).expect("lookup"));
    assert!(store.pool_exists(&ceph.pool_images).expect("lookup"));
    assert!(!store.pool_exists("no-such-pool").expect("lookup"));
}

#[test]
fn image_exists_and_opening_a_missing_image_is_not_found() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let image = scratch.image(&ceph.pool_vms, "exists", "4M");
    assert!(store.image_exists(&image).expect("exists"));
    let missing = ImageSpec::new(&ceph.pool_vms, common::unique("rbdstore-missing"));
    assert!(!store.image_exists(&missing).expect("exists"));
    assert_eq!(kind_of(store.open(&missing)), RbdErrorKind::NotFound);
    let no_pool = ImageSpec::new("no-such-pool", "x");
    assert_eq!(
        kind_of(store.image_exists(&no_pool)),
        RbdErrorKind::NotFound
    );
    let opened = store.open(&image).expect("open");
    assert_eq!(opened.spec(), &image);
    assert_eq!(opened.size().expect("size"), 4 << 20);
}

#[test]
fn snapshot_create_protect_unprotect_remove() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let spec = scratch.image(&ceph.pool_vms, "snaps", "4M");
    let image = store.open(&spec).expect("open");
    assert!(image.snapshots().expect("list").is_empty());

    image.create_snapshot("one").expect("create one");
    image.create_snapshot("two").expect("create two");
    assert_eq!(image.snapshots().expect("list"), ["one", "two"]);
    assert_eq!(
        cli_snaps(&ceph, &spec),
        [("one".into(), false), ("two".into(), false)]
    );
    assert_eq!(kind_of(image.create_snapshot("one")), RbdErrorKind::Exists);

    image.protect_snapshot("one").expect("protect");
    assert!(image.is_protected("one").expect("is protected"));
    assert!(!image.is_protected("two").expect("is protected"));
    assert_eq!(cli_snaps(&ceph, &spec)[0], ("one".into(), true));
    assert_eq!(
        kind_of(image.remove_snapshot("one", false)),
        RbdErrorKind::InUse
    );

    image.unprotect_snapshot("one").expect("unprotect");
    assert!(!image.is_protected("one").expect("is protected"));
    assert_eq!(cli_snaps(&ceph, &spec)[0], ("one".into(), false));
    image.remove_snapshot("one", false).expect("remove");

    image.protect_snapshot("two").expect("protect");
    image
        .remove_snapshot("two", true)
        .expect("unprotect and remove");
    assert!(image.snapshots().expect("list").is_empty());
    assert!(cli_snaps(&ceph, &spec).is_empty());
}

#[test]
fn remove_snapshot_with_unprotect_also_takes_an_unprotected_one() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let spec = scratch.image(&ceph.pool_vms, "snaprm", "4M");
    let image = store.open(&spec).expect("open");
    image.create_snapshot("plain").expect("create");
    image.remove_snapshot("plain", true).expect("remove");
    assert!(cli_snaps(&ceph, &spec).is_empty());
}

#[test]
fn missing_snapshots_are_not_found() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let spec = scratch.image(&ceph.pool_vms, "nosnap", "4M");
    let image = store.open(&spec).expect("open");
    assert_eq!(
        kind_of(image.protect_snapshot("ghost")),
        RbdErrorKind::NotFound
    );
    assert_eq!(kind_of(image.is_protected("ghost")), RbdErrorKind::NotFound);
    assert_eq!(
        kind_of(image.remove_snapshot("ghost", true)),
        RbdErrorKind::NotFound
    );
    let err = image
        .remove_snapshot("ghost", false)
        .expect_err("no such snapshot");
    assert!(
        err.to_string().contains(&format!("{spec}@ghost")),
        "error names its target: {err}"
    );
}

#[test]
fn many_snapshots_are_listed_in_creation_order() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let spec = scratch.image(&ceph.pool_vms, "manysnaps", "4M");
    let image = store.open(&spec).expect("open");
    // More than the first buffer holds, so the -ERANGE retry is exercised.
    let names: Vec<String> = (0..20).map(|i| format!("s{}", 20 - i)).collect();
    for name in &names {
        image.create_snapshot(name).expect("create");
    }
    assert_eq!(image.snapshots().expect("list"), names);
}

#[test]
fn snapshot_limit_is_read_and_enforced() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let spec = scratch.image(&ceph.pool_vms, "limit", "4M");
    assert_eq!(
        store
            .open(&spec)
            .expect("open")
            .snapshot_limit()
            .expect("limit"),
        None
    );
    ceph.rbd(
        &["snap", "limit", "set", "--limit", "1", &spec.to_string()],
        None,
    );
    let image = store.open(&spec).expect("open");
    assert_eq!(image.snapshot_limit().expect("limit"), Some(1));
    image.create_snapshot("only").expect("first snapshot");
    assert_eq!(
        kind_of(image.create_snapshot("over")),
        RbdErrorKind::LimitReached
    );
}

#[test]
fn the_bed_allows_clone_v2() {
    let Some(ceph) = common::ceph() else { return };
    assert_eq!(
        connect(&ceph).clone_format().expect("clone format"),
        CloneFormat::V2
    );
}

#[test]
fn clone_v2_needs_no_protection_and_knows_its_parent() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let parent = scratch.image(&ceph.pool_vms, "v2parent", "8M");
    let child = scratch.name(&ceph.pool_images, "v2child");
    store
        .open(&parent)
        .expect("open")
        .create_snapshot("base")
        .expect("snapshot");
    store
        .clone_image(&parent, "base", &child, CloneFormat::V2)
        .expect("clone v2");

    let cli = info(&ceph, &child);
    assert_eq!(cli["parent"]["pool"], ceph.pool_vms.as_str());
    assert_eq!(cli["parent"]["image"], parent.name.as_str());
    assert_eq!(cli["parent"]["snapshot"], "base");
    assert_eq!(
        cli["op_features"],
        serde_json::json!(["clone-child"]),
        "a v2 clone: {cli}"
    );
    let features: Vec<&str> = cli["features"]
        .as_array()
        .expect("features")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    for wanted in [
        "layering",
        "deep-flatten",
        "exclusive-lock",
        "object-map",
        "fast-diff",
    ] {
        assert!(
            features.contains(&wanted),
            "clone lacks {wanted}: {features:?}"
        );
    }
    assert!(!store
        .open(&parent)
        .expect("open")
        .is_protected("base")
        .expect("protected?"));

    let opened = store.open(&child).expect("open clone");
    let expected = ParentSpec {
        image: parent.clone(),
        snap: "base".into(),
    };
    assert_eq!(opened.parent().expect("parent"), Some(expected));
    assert_eq!(
        store.open(&parent).expect("open").parent().expect("parent"),
        None
    );
}

#[test]
fn clone_v1_needs_a_protected_snapshot_which_then_stays_in_use() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let parent = scratch.image(&ceph.pool_vms, "v1parent", "8M");
    let child = scratch.name(&ceph.pool_images, "v1child");
    let source = store.open(&parent).expect("open");
    source.create_snapshot("base").expect("snapshot");

    let unprotected = store.clone_image(&parent, "base", &child, CloneFormat::V1);
    assert_eq!(kind_of(unprotected), RbdErrorKind::Invalid);
    assert!(
        !store.image_exists(&child).expect("exists"),
        "no half-made clone left"
    );

    source.protect_snapshot("base").expect("protect");
    store
        .clone_image(&parent, "base", &child, CloneFormat::V1)
        .expect("clone v1");
    let cli = info(&ceph, &child);
    assert_eq!(cli["parent"]["snapshot"], "base");
    assert!(
        cli["op_features"]
            .as_array()
            .is_none_or(|ops| ops.is_empty()),
        "a v1 clone: {cli}"
    );
    assert_eq!(
        kind_of(source.unprotect_snapshot("base")),
        RbdErrorKind::InUse
    );
    assert_eq!(
        kind_of(source.remove_snapshot("base", true)),
        RbdErrorKind::InUse
    );
}

#[test]
fn clone_into_a_taken_name_is_exists_and_from_a_missing_snapshot_not_found() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let parent = scratch.image(&ceph.pool_vms, "takenparent", "4M");
    let taken = scratch.image(&ceph.pool_images, "taken", "4M");
    store
        .open(&parent)
        .expect("open")
        .create_snapshot("base")
        .expect("snapshot");
    assert_eq!(
        kind_of(store.clone_image(&parent, "base", &taken, CloneFormat::V2)),
        RbdErrorKind::Exists
    );
    let child = scratch.name(&ceph.pool_images, "fromghost");
    assert_eq!(
        kind_of(store.clone_image(&parent, "ghost", &child, CloneFormat::V2)),
        RbdErrorKind::NotFound
    );
    let bad = ImageSpec::new(&ceph.pool_images, "nul\0name");
    assert_eq!(
        kind_of(store.clone_image(&parent, "base", &bad, CloneFormat::V2)),
        RbdErrorKind::Invalid
    );
}

/// A parent with data in many small objects, its snapshot `base`, and a v2
/// clone of it.
fn parent_and_clone(
    ceph: &common::Ceph,
    store: &CephStore,
    scratch: &mut Scratch,
    data: &[u8],
) -> (ImageSpec, ImageSpec) {
    let parent = scratch.import(&ceph.pool_vms, "flatparent", data, "64K");
    let child = scratch.name(&ceph.pool_images, "flatchild");
    store
        .open(&parent)
        .expect("open")
        .create_snapshot("base")
        .expect("snapshot");
    store
        .clone_image(&parent, "base", &child, CloneFormat::V2)
        .expect("clone");
    (parent, child)
}

#[test]
fn flatten_copies_the_snapshot_s_data_and_detaches_the_clone() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let (parent, child) =
        parent_and_clone(&ceph, &store, &mut scratch, &common::pattern(4 << 20, 11));
    // Written after the snapshot: must not reach the clone.
    ceph.rbd(
        &[
            "bench",
            "--io-type",
            "write",
            "--io-size",
            "64K",
            "--io-total",
            "1M",
            &parent.to_string(),
        ],
        None,
    );

    let image = store.open(&child).expect("open clone");
    let mut calls = Vec::new();
    let mut progress = |done: u64, total: u64| {
        calls.push((done, total));
        true
    };
    image.flatten(&mut progress).expect("flatten");
    let &(done, total) = calls.last().expect("progress was reported");
    assert!(
        total > 0 && done == total,
        "last progress call reaches the total: {calls:?}"
    );
    assert!(
        calls.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress never goes back: {calls:?}"
    );
    assert_eq!(image.parent().expect("parent"), None);
    assert!(
        info(&ceph, &child).get("parent").is_none(),
        "the CLI sees no parent either"
    );
    drop(image);

    let source = export(&ceph, &format!("{parent}@base"));
    assert!(
        export(&ceph, &child.to_string()) == source,
        "flattened clone differs from the snapshot"
    );
    // Detached for real: the parent snapshot can go.
    store
        .open(&parent)
        .expect("open")
        .remove_snapshot("base", false)
        .expect("remove parent snapshot");
    assert!(
        export(&ceph, &child.to_string()) == source,
        "clone changed when its old parent snapshot went"
    );
}

#[test]
fn flatten_cancelled_from_progress_leaves_a_usable_removable_clone() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let (parent, child) =
        parent_and_clone(&ceph, &store, &mut scratch, &common::pattern(8 << 20, 5));
    let image = store.open(&child).expect("open clone");
    let mut calls = 0;
    let mut stop_at_once = |_done: u64, _total: u64| {
        calls += 1;
        false
    };
    let err = image.flatten(&mut stop_at_once).expect_err("cancelled");
    assert_eq!(err.kind, RbdErrorKind::Cancelled, "{err}");
    assert_eq!(
        calls, 1,
        "the callback is not asked again once it said stop"
    );
    assert_eq!(
        image.parent().expect("parent").map(|p| p.image),
        Some(parent.clone())
    );
    assert_eq!(image.size().expect("size"), 8 << 20);
    assert!(export(&ceph, &child.to_string()) == export(&ceph, &format!("{parent}@base")));
    drop(image);
    store
        .remove_image(&child)
        .expect("remove the half-flattened clone");
    assert!(!store.image_exists(&child).expect("exists"));
}

#[test]
fn flatten_survives_a_panicking_progress_callback() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let (_parent, child) =
        parent_and_clone(&ceph, &store, &mut scratch, &common::pattern(2 << 20, 9));
    let image = store.open(&child).expect("open clone");
    let mut panics = |_: u64, _: u64| -> bool { panic!("progress callback fails") };
    let err = image.flatten(&mut panics).expect_err("a panic cancels");
    assert_eq!(err.kind, RbdErrorKind::Cancelled, "{err}");
    assert!(err.message.contains("panicked"), "{err}");
    image
        .flatten(&mut |_, _| true)
        .expect("a second flatten finishes the job");
    assert_eq!(image.parent().expect("parent"), None);
}

#[test]
fn flatten_of_an_image_without_parent_is_invalid() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let spec = scratch.image(&ceph.pool_vms, "noparent", "4M");
    let image = store.open(&spec).expect("open");
    assert_eq!(
        kind_of(image.flatten(&mut |_, _| true)),
        RbdErrorKind::Invalid
    );
}

#[test]
fn a_v2_parent_snapshot_in_the_trash_keeps_its_name() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let parent = scratch.image(&ceph.pool_vms, "trashparent", "4M");
    let child = scratch.name(&ceph.pool_images, "trashchild");
    let source = store.open(&parent).expect("open");
    source.create_snapshot("gone").expect("snapshot");
    store
        .clone_image(&parent, "gone", &child, CloneFormat::V2)
        .expect("clone");
    source
        .remove_snapshot("gone", false)
        .expect("snapshot moves to the trash");
    assert!(
        source.snapshots().expect("list").is_empty(),
        "only user snapshots are listed"
    );
    let expected = ParentSpec {
        image: parent.clone(),
        snap: "gone".into(),
    };
    assert_eq!(
        store.open(&child).expect("open").parent().expect("parent"),
        Some(expected)
    );
}

#[test]
fn the_bed_s_child_disk_has_its_base_image_as_parent() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let child = ImageSpec::new(&ceph.pool_vms, "testdrv-child-vda");
    let parent = store.open(&child).expect("open").parent().expect("parent");
    let expected = ParentSpec {
        image: ImageSpec::new(&ceph.pool_images, "testdrv-base"),
        snap: "snap".into(),
    };
    assert_eq!(parent, Some(expected));
}

#[test]
fn metadata_is_set_read_and_absent() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let spec = scratch.image(&ceph.pool_vms, "meta", "4M");
    let image = store.open(&spec).expect("open");
    assert_eq!(image.metadata("rbdsnapd.job").expect("get"), None);
    image.set_metadata("rbdsnapd.job", "job-1").expect("set");
    assert_eq!(
        image.metadata("rbdsnapd.job").expect("get").as_deref(),
        Some("job-1")
    );
    let cli = ceph.rbd(
        &["image-meta", "get", &spec.to_string(), "rbdsnapd.job"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&cli).trim(), "job-1");
    // Longer than the first read buffer: the -ERANGE retry.
    let long = "x".repeat(5000);
    image
        .set_metadata("rbdsnapd.long", &long)
        .expect("set long");
    assert_eq!(
        image.metadata("rbdsnapd.long").expect("get").as_deref(),
        Some(long.as_str())
    );
    assert_eq!(
        kind_of(image.set_metadata("bad\0key", "v")),
        RbdErrorKind::Invalid
    );
}

#[test]
fn remove_image_removes_it_and_refuses_one_with_snapshots() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let plain = scratch.image(&ceph.pool_images, "rm", "4M");
    store.remove_image(&plain).expect("remove");
    assert!(
        !ceph
            .rbd_output(&["info", &plain.to_string()], None)
            .status
            .success(),
        "the CLI no longer finds it"
    );
    assert_eq!(kind_of(store.remove_image(&plain)), RbdErrorKind::NotFound);

    let with_snap = scratch.image(&ceph.pool_images, "rmsnap", "4M");
    store
        .open(&with_snap)
        .expect("open")
        .create_snapshot("keep")
        .expect("snapshot");
    assert_eq!(kind_of(store.remove_image(&with_snap)), RbdErrorKind::InUse);
}

#[test]
fn one_open_image_serves_many_threads() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let spec = scratch.image(&ceph.pool_vms, "threads", "4M");
    let image: Arc<dyn Image> = store.open(&spec).expect("open");
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let image = Arc::clone(&image);
            std::thread::spawn(move || {
                image.create_snapshot(&format!("t{i}")).expect("snapshot");
                image.snapshots().expect("list").len()
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().expect("thread") >= 1);
    }
    assert_eq!(image.snapshots().expect("list").len(), 4);
    drop(store); // the image keeps its connection alive
    assert_eq!(image.size().expect("size"), 4 << 20);
}

#[test]
fn images_in_a_rados_namespace_are_found_cloned_and_named_as_parents() {
    let Some(ceph) = common::ceph() else { return };
    let store = connect(&ceph);
    let mut scratch = Scratch::new(&ceph);
    let ns = scratch.namespace(&ceph.pool_vms);
    let parent = scratch.name_in(&ceph.pool_vms, &ns, "nsparent");
    ceph.rbd(&["create", "--size", "4M", &parent.to_string()], None);
    assert!(store.image_exists(&parent).expect("exists"));
    let same_name_outside = ImageSpec::new(&ceph.pool_vms, &parent.name);
    assert!(
        !store.image_exists(&same_name_outside).expect("exists"),
        "namespaces are kept apart"
    );

    store
        .open(&parent)
        .expect("open")
        .create_snapshot("base")
        .expect("snapshot");
    let child = scratch.name(&ceph.pool_images, "nschild");
    store
        .clone_image(&parent, "base", &child, CloneFormat::V2)
        .expect("clone out of the namespace");
    let cli = info(&ceph, &child);
    assert_eq!(cli["parent"]["pool_namespace"], ns.as_str(), "{cli}");
    let expected = ParentSpec {
        image: parent.clone(),
        snap: "base".into(),
    };
    assert_eq!(
        store.open(&child).expect("open").parent().expect("parent"),
        Some(expected)
    );
}
