//! Recovery from the journal, in one place.
//!
//! - [`trail`]: the journal read back — each unfinished job as a [`Trail`],
//!   the end records of finished ones, the thaw guards still armed.
//! - [`plan`]: the pure planner, trail → actions and verdict: a partial
//!   clone is removed only if it provably is the job's (its metadata names
//!   the job, or its parent is the job's temporary snapshot), temporary
//!   snapshots go, and a job whose every image was finished is kept (its
//!   `background`/`cluster` flatten resumed).
//! - [`execute`]: the executor — each action one Ceph call on the Ceph owner
//!   with its own deadline; what cannot be done yet stays pending.
//! - [`sweep`]: temporary snapshots no journal knows.
//! - [`state`]: what waits and what was done, for `daemon.status`.
//!
//! The guest comes first and is not this module's: the daemon arms a thaw
//! guard for every trail that may have left its guest frozen, before READY;
//! the Ceph side is rolled back after READY, retried until it succeeds.

pub mod execute;
pub mod plan;
pub mod state;
pub mod sweep;
pub mod trail;

pub use execute::{recover, Recovered};
pub use state::Recovery;
pub use sweep::{sweep, Orphan};
pub use trail::{guards, split, Trail};

#[cfg(test)]
mod tests;
