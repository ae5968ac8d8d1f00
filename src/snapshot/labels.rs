//! What an image says about itself: how consistent the data it holds is,
//! written as metadata on every image a job makes, so that a consumer who
//! finds the image later (Glance, a restore script, an operator with `rbd
//! image-meta list`) knows what it holds without the job's answer. Clones of
//! the image inherit these keys, rightly: they start from the same data.

use super::capture::Captured;
use super::Consistency;
use crate::rbd::{Image, RbdError};

/// `filesystem` (taken with the guest's filesystems frozen) or `crash`
/// (what a power cut would leave).
pub const METADATA_CONSISTENCY: &str = "rbdsnapd.consistency";

/// Why an image is only crash-consistent (absent when it is not).
pub const METADATA_CONSISTENCY_REASON: &str = "rbdsnapd.consistency_reason";

/// `true` when every disk of the job was captured at one instant, `false`
/// when each disk is consistent on its own only.
pub const METADATA_ONE_INSTANT: &str = "rbdsnapd.one_instant";

/// Longest reason recorded (the job's answer has it whole).
const REASON_MAX: usize = 1024;

/// The metadata a job's capture gives each of its images.
pub fn of(captured: &Captured) -> Vec<(&'static str, String)> {
    let consistency = match captured.consistency {
        Consistency::Filesystem => "filesystem",
        Consistency::Crash => "crash",
    };
    let mut labels = vec![
        (METADATA_CONSISTENCY, consistency.to_string()),
        (METADATA_ONE_INSTANT, captured.one_instant.to_string()),
    ];
    if let Some(reason) = &captured.reason {
        labels.push((METADATA_CONSISTENCY_REASON, truncated(reason)));
    }
    labels
}

/// Write `labels` on `image`.
pub fn write(image: &dyn Image, labels: &[(&'static str, String)]) -> Result<(), RbdError> {
    labels
        .iter()
        .try_for_each(|(key, value)| image.set_metadata(key, value))
}

fn truncated(reason: &str) -> String {
    if reason.len() <= REASON_MAX {
        return reason.to_string();
    }
    let mut end = REASON_MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}
