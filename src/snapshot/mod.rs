//! The direct-snapshot workflow: what Nova's `Rbd.direct_snapshot` does, with
//! the guest quiesced, a bounded freeze window and nothing left behind.
//!
//! 1. [`preflight`]: everything that can be checked before touching the
//!    guest (domain running, disks on RBD, destination pool and name, snapshot
//!    limit, agent and filesystems), and source images opened.
//! 2. [`capture`]: freeze → temporary snapshot of every disk → thaw, the
//!    thaw on every path; the freeze window is measured around exactly this.
//! 3. [`workflow`]: clone into the destination pool, flatten, drop the
//!    temporary snapshot, `snap` + protect on the new image, the location.
//!
//! Each step records its undo in the [`saga::Saga`] before it acts; a failure
//! undoes the completed steps in reverse and reports both the cause and any
//! undo that failed. The source image is never changed beyond the temporary
//! snapshot. Hypervisor and image-store calls block: [`blocking`] runs them
//! off the async runtime, each with a deadline.

mod blocking;
pub mod capture;
mod error;
pub mod flatten;
pub mod guard;
pub mod labels;
pub mod ownership;
mod pause;
pub mod preflight;
pub mod saga;
mod slots;
mod steplog;
mod types;
pub mod workflow;

/// In-memory fakes of the hypervisor and the image store, with failures
/// injectable at every call: for unit tests of this layer and the layers
/// above it (recovery, the daemon), and, with the `fakes` feature, for
/// other crates' tests.
#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
#[cfg(test)]
mod migration_tests;
#[cfg(test)]
mod neighbour_tests;
#[cfg(test)]
mod ownership_tests;
#[cfg(test)]
mod pause_tests;
#[cfg(test)]
mod tests;

pub use error::{SnapshotError, SnapshotErrorKind};
pub use guard::{GuardInfo, GuardLog, ThawGuards, Window};
pub use slots::{FlattenSlots, Slot};
pub use steplog::{NoLog, Step, StepLog};
pub use types::*;
pub use workflow::run;

/// Prefix of every temporary snapshot rbdsnapd creates on a source image:
/// recognisably ours, followed by the job id that made it.
pub const TEMP_SNAPSHOT_PREFIX: &str = "rbdsnapd-tmp-";

/// The snapshot every finished image carries (what Glance's store expects).
pub const FINAL_SNAPSHOT: &str = "snap";

/// Image metadata key naming the job that made an image.
pub const METADATA_JOB: &str = "rbdsnapd.job";

/// Image metadata key naming the host whose daemon made an image: by
/// default only that host's daemon deletes it.
pub const METADATA_HOST: &str = "rbdsnapd.host";

/// Image metadata key naming the source image and disk of an image.
pub const METADATA_SOURCE: &str = "rbdsnapd.source";
