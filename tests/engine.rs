//! The snapshot workflow with the real adapters: the bed's Ceph cluster and
//! libvirt's test driver (whose domains' disks are real images of that
//! cluster). Every test checks what Ceph holds afterwards with the rbd CLI.

mod common;

use std::sync::{Arc, Mutex};

use rbdsnapd::rbd::CloneFormat;
use rbdsnapd::snapshot::{
    self, Consistency, Flatten, Phase, Progress, ProgressSink, Quiesce, Settings, SnapshotError,
    SnapshotErrorKind, SnapshotRequest, SnapshotResult,
};

fn request(domain: &str, image: &str) -> SnapshotRequest {
    SnapshotRequest {
        domain: domain.into(),
        image: image.into(),
        pool: None,
        disks: vec![],
        quiesce: Quiesce::Required,
        flatten: Flatten::Sync,
    }
}

struct Bed {
    ceph: common::Ceph,
    uri: String,
}

fn bed() -> Option<Bed> {
    let (ceph, drv) = (common::ceph()?, common::test_driver()?);
    Some(Bed { ceph, uri: drv.uri })
}

impl Bed {
    async fn snapshot(
        &self,
        req: &SnapshotRequest,
        settings: &Settings,
    ) -> (Result<SnapshotResult, SnapshotError>, Vec<Progress>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = Arc::clone(&seen);
        let sink: ProgressSink = Arc::new(move |p| sink_seen.lock().expect("progress").push(p));
        let hv = common::engine::hypervisor(&self.uri);
        let store = common::engine::store(&self.ceph);
        let result = snapshot::run(
            hv,
            store,
            settings,
            req,
            &snapshot::workflow::new_job_id(),
            snapshot::JobHooks {
                progress: sink,
                ..Default::default()
            },
        )
        .await;
        let seen = seen.lock().expect("progress").clone();
        (result, seen)
    }

    fn cleanup(&self, pool: &str, names: &[&str]) {
        let store = common::engine::store(&self.ceph);
        for name in names {
            common::engine::remove(&store, pool, name);
        }
    }

    fn no_temp_snapshots(&self, image: &str) {
        let left = self.ceph.temp_snapshots(image);
        assert!(
            left.is_empty(),
            "temporary snapshots left on {image}: {left:?}"
        );
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_sequence_makes_a_flattened_protected_copy_of_the_source() {
    let Some(bed) = bed() else { return };
    let source = "vms/testdrv-02-vda";
    bed.ceph.write_image(source, 0, &pattern(3 << 20, 1));
    bed.ceph.write_image(source, 9 << 20, &pattern(1 << 20, 2));
    let name = common::unique("engine-whole");
    let (result, progress) = bed
        .snapshot(
            &request("rbdsnapd-test-02", &name),
            &common::engine::settings("images"),
        )
        .await;
    let result = result.expect("snapshot");
    let dest = format!("images/{name}");
    let checks = std::panic::catch_unwind(|| {
        assert_eq!(result.disks.len(), 1);
        assert_eq!(
            result.disks[0].location,
            format!("rbd://{}/images/{name}/snap", bed.ceph.fsid)
        );
        assert_eq!(result.fsid, bed.ceph.fsid);
        assert_eq!(
            result.consistency,
            Consistency::Filesystem,
            "the test driver freezes"
        );
        assert_eq!(
            result.frozen_filesystems, 2,
            "the test driver has two mount points"
        );
        assert_eq!(result.clone_format, CloneFormat::V2);
        assert!(
            bed.ceph.info(&dest).get("parent").is_none(),
            "flattened: no parent"
        );
        assert_eq!(bed.ceph.snapshots(&dest), vec![("snap".to_string(), true)]);
        bed.no_temp_snapshots(source);
        assert!(
            bed.ceph.export(&format!("{dest}@snap")) == bed.ceph.export(source),
            "copy differs from source"
        );
        let job = bed
            .ceph
            .rbd(&["image-meta", "get", &dest, "rbdsnapd.job"], None);
        assert_eq!(String::from_utf8_lossy(&job).trim(), result.job_id);
        let flatten = progress
            .iter()
            .rev()
            .find(|p| p.phase == Phase::Flatten)
            .expect("flatten progress");
        assert!(
            flatten.total > 0 && flatten.done == flatten.total,
            "{flatten:?}"
        );
        let t = &result.timings;
        assert!(
            t.freeze_window_ms >= t.snap_ms && t.total_ms >= t.freeze_window_ms + t.flatten_ms,
            "{t:?}"
        );
    });
    bed.cleanup("images", &[&name]);
    checks.expect("checks");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_cloned_from_a_base_image_goes_to_the_base_images_pool() {
    let Some(bed) = bed() else { return };
    let name = common::unique("engine-parent");
    let (result, _) = bed
        .snapshot(
            &request("rbdsnapd-test-child", &name),
            &common::engine::settings("vms"),
        )
        .await;
    let result = result.expect("snapshot");
    let checks = std::panic::catch_unwind(|| {
        assert_eq!(
            result.disks[0].pool, "images",
            "Nova's rule: the parent's pool, not the default"
        );
        let data = bed.ceph.export(&format!("images/{name}@snap"));
        assert!(
            data.starts_with(b"rbdsnapd base image\n"),
            "the base image's data was copied in"
        );
        bed.no_temp_snapshots("vms/testdrv-child-vda");
    });
    bed.cleanup("images", &[&name]);
    checks.expect("checks");
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_v1_protects_the_temporary_snapshot_and_removes_it_after_flatten() {
    let Some(bed) = bed() else { return };
    let settings = Settings {
        clone_format: Some(CloneFormat::V1),
        ..common::engine::settings("images")
    };
    let name = common::unique("engine-v1");
    let (result, _) = bed
        .snapshot(&request("rbdsnapd-test-03", &name), &settings)
        .await;
    let result = result.expect("snapshot");
    let checks = std::panic::catch_unwind(|| {
        assert_eq!(result.clone_format, CloneFormat::V1);
        bed.no_temp_snapshots("vms/testdrv-03-vda");
        assert!(bed
            .ceph
            .info(&format!("images/{name}"))
            .get("parent")
            .is_none());
    });
    bed.cleanup("images", &[&name]);
    checks.expect("checks");

    // without a flatten, a v1 clone keeps its protected parent snapshot
    let name = common::unique("engine-v1-none");
    let req = SnapshotRequest {
        flatten: Flatten::None,
        ..request("rbdsnapd-test-03", &name)
    };
    let result = bed.snapshot(&req, &settings).await.0.expect("snapshot");
    let parent = result.disks[0].parent.clone().expect("still a clone");
    let temp = parent.split_once('@').expect("image@snap").1.to_string();
    let snaps = bed.ceph.snapshots("vms/testdrv-03-vda");
    let info = bed.ceph.info(&format!("images/{name}"));
    bed.cleanup("images", &[&name]);
    bed.ceph.rbd(
        &["snap", "unprotect", &format!("vms/testdrv-03-vda@{temp}")],
        None,
    );
    bed.ceph.rbd(
        &[
            "snap",
            "rm",
            "--no-progress",
            &format!("vms/testdrv-03-vda@{temp}"),
        ],
        None,
    );
    assert_eq!(snaps, vec![(temp, true)]);
    assert_eq!(info["parent"]["image"], "testdrv-03-vda");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_disks_are_snapshotted_in_one_freeze() {
    let Some(bed) = bed() else { return };
    let name = common::unique("engine-two");
    let req = SnapshotRequest {
        disks: vec!["vda".into(), "vdb".into()],
        ..request("rbdsnapd-test-01", &name)
    };
    let result = bed
        .snapshot(&req, &common::engine::settings("images"))
        .await
        .0
        .expect("snapshot");
    let (a, b) = (format!("{name}-vda"), format!("{name}-vdb"));
    let checks = std::panic::catch_unwind(|| {
        let images: Vec<&str> = result.disks.iter().map(|d| d.image.as_str()).collect();
        assert_eq!(images, [a.as_str(), b.as_str()]);
        assert_eq!(result.consistency, Consistency::Filesystem);
        for disk in &result.disks {
            assert_eq!(
                bed.ceph.snapshots(&format!("images/{}", disk.image)),
                vec![("snap".to_string(), true)]
            );
        }
        bed.no_temp_snapshots("vms/testdrv-01-vda");
        bed.no_temp_snapshots("vms/testdrv-01-vdb");
    });
    bed.cleanup("images", &[&a, &b]);
    checks.expect("checks");
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_leave_ceph_as_it_was() {
    let Some(bed) = bed() else { return };
    let taken = common::unique("engine-taken");
    bed.ceph.rbd(
        &["create", "--size", "1M", &format!("images/{taken}")],
        None,
    );
    let n = |i: u32| common::unique(&format!("engine-refused-{i}"));
    let cases = [
        (
            request("rbdsnapd-test-file", &n(1)),
            SnapshotErrorKind::DiskNotRbd,
        ),
        (
            request("rbdsnapd-test-off", &n(2)),
            SnapshotErrorKind::DomainNotRunning,
        ),
        (
            request("no-such-domain", &n(3)),
            SnapshotErrorKind::DomainNotFound,
        ),
        (
            request("rbdsnapd-test-04", &taken),
            SnapshotErrorKind::ImageExists,
        ),
        (
            SnapshotRequest {
                pool: Some("nopool".into()),
                ..request("rbdsnapd-test-04", &n(4))
            },
            SnapshotErrorKind::PoolNotFound,
        ),
        (
            SnapshotRequest {
                disks: vec!["vdq".into()],
                ..request("rbdsnapd-test-04", &n(5))
            },
            SnapshotErrorKind::DiskNotFound,
        ),
    ];
    for (req, kind) in cases {
        let err = bed
            .snapshot(&req, &common::engine::settings("images"))
            .await
            .0
            .expect_err("refused");
        assert_eq!(err.kind, kind, "{req:?}: {err}");
        if req.image != taken {
            assert!(
                !bed.ceph.exists(&format!("images/{}", req.image)),
                "{req:?} left an image"
            );
        }
    }
    // the taken image is still the 1 MiB one it was, without snapshots
    assert_eq!(bed.ceph.info(&format!("images/{taken}"))["size"], 1 << 20);
    assert!(bed.ceph.snapshots(&format!("images/{taken}")).is_empty());
    bed.no_temp_snapshots("vms/testdrv-04-vda");
    bed.cleanup("images", &[&taken]);
}
