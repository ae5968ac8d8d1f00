//! End to end with the real guest: QEMU under libvirtd, its disk on the
//! bed's RBD, its filesystems frozen through the real guest agent.

mod common;

use std::time::{Duration, Instant};

use rbdsnapd::libvirt::{AgentChannel, FreezeStatus};
use rbdsnapd::snapshot::{
    self, Consistency, Flatten, ProgressSink, Quiesce, SnapshotErrorKind, SnapshotRequest,
};

/// The tests share one guest: one at a time.
static GUEST: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn request(guest: &common::Guest, image: &str, quiesce: Quiesce) -> SnapshotRequest {
    SnapshotRequest {
        domain: guest.name.clone(),
        image: image.into(),
        pool: None,
        disks: vec![],
        quiesce,
        flatten: Flatten::Sync,
    }
}

async fn take(
    ceph: &common::Ceph,
    guest: &common::Guest,
    req: &SnapshotRequest,
) -> Result<snapshot::SnapshotResult, snapshot::SnapshotError> {
    let sink: ProgressSink = std::sync::Arc::new(|_| {});
    let (hv, store) = (
        common::engine::hypervisor(&guest.uri),
        common::engine::store(ceph),
    );
    snapshot::run(
        hv,
        store,
        &common::engine::settings("images"),
        req,
        &snapshot::workflow::new_job_id(),
        snapshot::JobHooks {
            progress: sink,
            ..Default::default()
        },
    )
    .await
}

fn no_temp_snapshots(ceph: &common::Ceph, image: &str) {
    let left = ceph.temp_snapshots(image);
    assert!(
        left.is_empty(),
        "temporary snapshots left on {image}: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_written_just_before_the_snapshot_is_in_it_and_the_filesystem_is_clean() {
    let (Some(ceph), Some(guest)) = (common::ceph(), common::guest()) else {
        return;
    };
    let _one = GUEST.lock().await;
    let file = common::unique("rbdsnapd-data");
    let data: Vec<u8> = format!("written by the test, not synced: {file}\n")
        .repeat(2000)
        .into_bytes();
    // guest-file-write leaves the data in the guest's page cache: only the
    // freeze puts it on the disk before the snapshot
    guest.write_file(&format!("{}/{file}", guest.mount), &data);
    let name = common::unique("guest-data");
    let result = take(&ceph, &guest, &request(&guest, &name, Quiesce::Required))
        .await
        .expect("snapshot");
    eprintln!("real guest snapshot timings: {:?}", result.timings);
    let exported = std::env::temp_dir().join(format!("{name}.img"));
    let exported = exported.to_str().expect("utf-8").to_string();
    ceph.rbd(
        &[
            "export",
            "--no-progress",
            &format!("images/{name}@snap"),
            &exported,
        ],
        None,
    );
    let fsck = std::process::Command::new("e2fsck")
        .args(["-fn", &exported])
        .output()
        .expect("e2fsck");
    let cat = std::process::Command::new("debugfs")
        .args(["-R", &format!("cat /{file}"), &exported])
        .output()
        .expect("debugfs");
    let status = common::engine::hypervisor(&guest.uri).freeze_status(&result.domain_uuid);
    let _ = std::fs::remove_file(&exported);
    common::engine::remove(&common::engine::store(&ceph), "images", &name);
    assert!(
        cat.stdout == data,
        "the snapshot lacks the file written before it ({} of {} bytes)",
        cat.stdout.len(),
        data.len()
    );
    assert!(
        fsck.status.success(),
        "fsck of the snapshot: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    assert_eq!(
        result.consistency,
        Consistency::Filesystem,
        "{:?}",
        result.consistency_reason
    );
    assert!(result.frozen_filesystems >= 1);
    assert_eq!(
        result.disks[0].pool, "images",
        "the guest disk's parent pool"
    );
    assert_eq!(status.expect("freeze status"), FreezeStatus::Thawed);
    no_temp_snapshots(&ceph, &guest.image);
}

/// Take the agent away for `seconds` (the guest's init restarts it after).
fn stop_agent(guest: &common::Guest, seconds: u32) {
    guest.write_file(
        "/etc/rbdsnapd-test/agent-pause",
        seconds.to_string().as_bytes(),
    );
    let (_conn, dom) = guest.domain();
    let kill = r#"{"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c","sleep 0.2; killall qemu-ga"]}}"#;
    dom.qemu_agent_command(kill, 10, 0).expect("guest-exec");
    let hv = common::engine::hypervisor(&guest.uri);
    let deadline = Instant::now() + Duration::from_secs(10);
    while hv.domain(&guest.name).expect("domain").agent != AgentChannel::Disconnected {
        assert!(
            Instant::now() < deadline,
            "libvirt never saw the agent disconnect"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_agent(guest: &common::Guest) {
    let (_conn, dom) = guest.domain();
    let deadline = Instant::now() + Duration::from_secs(60);
    while dom
        .qemu_agent_command(r#"{"execute":"guest-ping"}"#, 2, 0)
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the guest agent did not come back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_agent_required_fails_cleanly_and_preferred_falls_back_to_crash() {
    let (Some(ceph), Some(guest)) = (common::ceph(), common::guest()) else {
        return;
    };
    let _one = GUEST.lock().await;
    stop_agent(&guest, 20);
    let required = common::unique("guest-noagent-required");
    let refused = take(
        &ceph,
        &guest,
        &request(&guest, &required, Quiesce::Required),
    )
    .await;
    let preferred = common::unique("guest-noagent-preferred");
    let fallback = take(
        &ceph,
        &guest,
        &request(&guest, &preferred, Quiesce::Preferred),
    )
    .await;
    let required_left = ceph.exists(&format!("images/{required}"));
    common::engine::remove(&common::engine::store(&ceph), "images", &preferred);
    wait_for_agent(&guest);
    let err = refused.expect_err("required without agent");
    assert_eq!(err.kind, SnapshotErrorKind::AgentUnavailable, "{err}");
    assert!(!required_left, "a refused request made an image");
    let result = fallback.expect("preferred without agent");
    assert_eq!(result.consistency, Consistency::Crash);
    let reason = result.consistency_reason.unwrap_or_default();
    assert!(reason.contains("agent"), "reason: {reason}");
    no_temp_snapshots(&ceph, &guest.image);
}
