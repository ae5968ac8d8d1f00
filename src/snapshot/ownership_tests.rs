//! Ownership against what a consumer does with our images: a clone (as
//! Nova boots from one) carries our metadata, never our id.

use std::sync::Arc;

use super::fakes::{Fake, FakeStore};
use super::ownership::{self, Claim};
use super::saga::remove_if_made_by;
use super::tests::{go, request, settings};
use crate::rbd::{CloneFormat, ImageSpec, ImageStore};

fn store(fake: &Arc<Fake>) -> FakeStore {
    FakeStore(Arc::clone(fake))
}

fn claim_of(fake: &Arc<Fake>, pool: &str, name: &str) -> Claim {
    let image = store(fake).open(&ImageSpec::new(pool, name)).expect("open");
    ownership::claim(image.as_ref()).expect("claim")
}

/// Our image `images/new`, then `vms/instance` cloned from its `snap` as
/// Nova boots an instance.
async fn ours_and_a_consumers_clone() -> Arc<Fake> {
    let fake = Fake::standard();
    go(&fake, &request(), &settings()).await.expect("snapshot");
    store(&fake)
        .clone_image(
            &ImageSpec::new("images", "new"),
            "snap",
            &ImageSpec::new("vms", "instance"),
            CloneFormat::V2,
        )
        .expect("consumer's clone");
    fake
}

#[tokio::test]
async fn our_image_is_ours_and_its_clone_is_a_copy() {
    let fake = ours_and_a_consumers_clone().await;
    assert!(matches!(
        claim_of(&fake, "images", "new"),
        Claim::Ours { ref job, host: Some(ref h) } if job == "job1" && h == "host-a"
    ));
    // the clone inherited every key of ours, and still is not ours
    let instance = fake.image("vms/instance").expect("clone");
    assert_eq!(
        instance
            .metadata
            .get(super::METADATA_JOB)
            .map(String::as_str),
        Some("job1")
    );
    assert!(matches!(
        claim_of(&fake, "vms", "instance"),
        Claim::Copy { .. }
    ));
}

#[tokio::test]
async fn a_flattened_clone_is_still_not_ours() {
    let fake = ours_and_a_consumers_clone().await;
    let instance = store(&fake)
        .open(&ImageSpec::new("vms", "instance"))
        .expect("open");
    instance.flatten(&mut |_, _| true).expect("flatten");
    assert!(matches!(
        claim_of(&fake, "vms", "instance"),
        Claim::Copy { .. }
    ));
}

#[tokio::test]
async fn images_without_an_id_record_are_unproven() {
    let fake = ours_and_a_consumers_clone().await;
    fake.world
        .lock()
        .expect("world")
        .images
        .get_mut("images/new")
        .expect("ours")
        .metadata
        .remove(ownership::METADATA_IMAGE_ID);
    assert!(matches!(
        claim_of(&fake, "images", "new"),
        Claim::Unproven { .. }
    ));
    assert_eq!(claim_of(&fake, "vms", "vm-data"), Claim::Foreign);
}

#[tokio::test]
async fn the_rollback_removes_only_what_the_job_provably_made() {
    let fake = ours_and_a_consumers_clone().await;
    let s = store(&fake);
    let (source, temp) = (ImageSpec::new("vms", "vm-disk"), "rbdsnapd-tmp-job1");
    // a consumer's clone of job1's image under the name: job1's marks, not job1's
    let removed = remove_if_made_by(
        &s,
        &ImageSpec::new("vms", "instance"),
        "job1",
        &source,
        temp,
    );
    assert!(!removed.expect("checked"));
    assert!(fake.image("vms/instance").is_some());
    // someone else's image, no marks at all
    let removed = remove_if_made_by(&s, &ImageSpec::new("vms", "vm-data"), "job1", &source, temp);
    assert!(!removed.expect("checked"));
    assert!(fake.image("vms/vm-data").is_some());
    // another job's proven image is not this job's either
    let removed = remove_if_made_by(&s, &ImageSpec::new("images", "new"), "job2", &source, temp);
    assert!(!removed.expect("checked"));
    // a bare clone of the job's own temporary snapshot (marks not yet written) is
    let img = s.open(&source).expect("source");
    img.create_snapshot(temp).expect("temp snapshot");
    s.clone_image(
        &source,
        temp,
        &ImageSpec::new("images", "half"),
        CloneFormat::V2,
    )
    .expect("clone");
    let half = ImageSpec::new("images", "half");
    assert!(remove_if_made_by(&s, &half, "job1", &source, temp).expect("checked"));
    assert!(fake.image("images/half").is_none());
    // and the job's own marked image is, once the consumer's clone is gone
    s.remove_image(&ImageSpec::new("vms", "instance"))
        .expect("consumer cleans up");
    let new = ImageSpec::new("images", "new");
    assert!(remove_if_made_by(&s, &new, "job1", &source, temp).expect("checked"));
    assert!(fake.image("images/new").is_none());
}

#[tokio::test]
async fn every_image_records_how_consistent_it_is() {
    use super::labels::{METADATA_CONSISTENCY, METADATA_CONSISTENCY_REASON, METADATA_ONE_INSTANT};
    let key = |fake: &Arc<Fake>, image: &str, k: &str| {
        fake.image(image).expect("image").metadata.get(k).cloned()
    };
    // frozen: filesystem-consistent, no reason
    let fake = Fake::standard();
    go(&fake, &request(), &settings()).await.expect("snapshot");
    assert_eq!(
        key(&fake, "images/new", METADATA_CONSISTENCY).as_deref(),
        Some("filesystem")
    );
    assert_eq!(
        key(&fake, "images/new", METADATA_ONE_INSTANT).as_deref(),
        Some("true")
    );
    assert_eq!(key(&fake, "images/new", METADATA_CONSISTENCY_REASON), None);
    // no freeze asked: crash-consistent, with the reason the answer gave
    let fake = Fake::standard();
    let req = super::SnapshotRequest {
        quiesce: super::Quiesce::Off,
        ..request()
    };
    let result = go(&fake, &req, &settings()).await.expect("snapshot");
    assert_eq!(
        key(&fake, "images/new", METADATA_CONSISTENCY).as_deref(),
        Some("crash")
    );
    assert_eq!(
        key(&fake, "images/new", METADATA_CONSISTENCY_REASON),
        result.consistency_reason
    );
}
