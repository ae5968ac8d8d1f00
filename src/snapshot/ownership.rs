//! Which images are ours: the marks a job writes on the image it makes, and
//! the one proof of them no copy inherits.
//!
//! librbd copies an image's metadata into every clone of it (and `rbd cp`,
//! `deep cp` and migration copy it too), so every instance disk Nova boots
//! from one of our images carries our `rbdsnapd.*` keys. A key alone proves
//! nothing. What a copy never gets is the image's own RBD id: the cluster
//! gives every new image a fresh one. So a job records its image's id in
//! [`METADATA_IMAGE_ID`], and an image is ours only while that record names
//! the image's own id. Delete, the rollback and recovery all ask here.
//!
//! An image that a job is still making may not carry its marks yet (the
//! clone landed, the metadata writes did not): for the job itself, a clone
//! of its own temporary snapshot is proof too, since that snapshot exists
//! only on the source, named after the job.

use crate::rbd::{Image, ImageSpec, RbdError};

use super::{METADATA_HOST, METADATA_JOB, METADATA_SOURCE};

/// Image metadata key holding the RBD id of the image the job made.
pub const METADATA_IMAGE_ID: &str = "rbdsnapd.image_id";

/// What an image's marks say about who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Made by rbdsnapd: the recorded id is the image's own.
    Ours {
        /// The job that made it.
        job: String,
        /// The host whose daemon made it (absent on early images).
        host: Option<String>,
    },
    /// Carries our marks, but they were copied from another image (a
    /// consumer's clone or copy of ours): not ours.
    Copy {
        /// The id the marks name (the image they were copied from).
        recorded: String,
        /// This image's own id.
        actual: String,
    },
    /// Carries our job mark without an id record: made before ids were
    /// recorded, or a copy of such an image; nothing tells them apart.
    Unproven {
        /// The job the mark names.
        job: String,
    },
    /// No mark of ours.
    Foreign,
}

/// Write a job's marks on the image it just made; the id record first, so
/// that the image is provably ours as early as possible.
pub fn stamp(image: &dyn Image, job_id: &str, source: &str, host: &str) -> Result<(), RbdError> {
    image.set_metadata(METADATA_IMAGE_ID, &image.id()?)?;
    image.set_metadata(METADATA_JOB, job_id)?;
    image.set_metadata(METADATA_SOURCE, source)?;
    image.set_metadata(METADATA_HOST, host)
}

/// Read an image's marks and judge them.
pub fn claim(image: &dyn Image) -> Result<Claim, RbdError> {
    let Some(job) = image.metadata(METADATA_JOB)? else {
        return Ok(Claim::Foreign);
    };
    let Some(recorded) = image.metadata(METADATA_IMAGE_ID)? else {
        return Ok(Claim::Unproven { job });
    };
    let actual = image.id()?;
    if recorded != actual {
        return Ok(Claim::Copy { recorded, actual });
    }
    let host = image.metadata(METADATA_HOST)?;
    Ok(Claim::Ours { job, host })
}

/// Whether job `job_id` made `image`: its proven marks name the job, or it
/// is a clone of the job's own temporary snapshot `source@temp` (made, not
/// yet marked).
pub fn made_by_job(
    image: &dyn Image,
    job_id: &str,
    source: &ImageSpec,
    temp: &str,
) -> Result<bool, RbdError> {
    if let Claim::Ours { job, .. } = claim(image)? {
        return Ok(job == job_id);
    }
    let parent = image.parent()?;
    Ok(parent.is_some_and(|p| &p.image == source && p.snap == temp))
}
