//! The image-store adapter: the [`ImageStore`] and [`Image`] traits the
//! workflow drives, and their real implementation over Ceph ([`CephStore`]):
//! librados through the `ceph` crate's bindings (not its safe wrappers, which
//! leak a cluster handle on a failed connect and double-free on others), and
//! librbd through the project's own small `extern "C"` layer ([`ffi`],
//! checked against the installed headers by `tests/ffi_header.rs`), with
//! safe wrappers over both. Every `unsafe` for Ceph lives in this module,
//! each with a `// SAFETY:` line.
//!
//! The calls block (they wait on the cluster): the workflow runs them off the
//! async runtime, each with a deadline.

mod cluster;
mod command;
mod error;
mod fence;
pub mod ffi;
mod flatten;
mod image;
mod location;
mod lookup;
pub mod monitors;
mod store;
mod strings;
mod tasks;

pub use error::{RbdError, RbdErrorKind};
pub use location::{BadLocation, Location};
pub use store::CephStore;
pub use tasks::MgrTask;

use std::fmt;
use std::sync::Arc;

/// An RBD image: pool, optional RADOS namespace, name.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct ImageSpec {
    /// Pool name.
    pub pool: String,
    /// RADOS namespace inside the pool; `None` or empty is the default one.
    pub namespace: Option<String>,
    /// Image name.
    pub name: String,
}

impl ImageSpec {
    /// An image in the pool's default namespace.
    pub fn new(pool: impl Into<String>, name: impl Into<String>) -> Self {
        ImageSpec {
            pool: pool.into(),
            namespace: None,
            name: name.into(),
        }
    }
}

impl fmt::Display for ImageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace.as_deref().filter(|ns| !ns.is_empty()) {
            Some(ns) => write!(f, "{}/{}/{}", self.pool, ns, self.name),
            None => write!(f, "{}/{}", self.pool, self.name),
        }
    }
}

/// The snapshot an image was cloned from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct ParentSpec {
    /// The parent image.
    pub image: ImageSpec,
    /// The parent snapshot's name (for a clone v2 parent whose snapshot was
    /// removed, the name it had; it then lives in the trash namespace).
    pub snap: String,
}

/// How a clone depends on its parent snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CloneFormat {
    /// The parent snapshot must be protected first and cannot be removed
    /// while the clone is attached.
    V1,
    /// No protection needed; a removed parent snapshot moves to the trash
    /// namespace until its last clone is flattened or removed. Needs
    /// `require_min_compat_client` mimic or later.
    V2,
}

/// Flatten progress: called with (done, total) units; return `false` to ask
/// the flatten to stop (it then fails with [`RbdErrorKind::Cancelled`]).
pub type FlattenProgress<'a> = &'a mut (dyn FnMut(u64, u64) -> bool + Send);

/// One open image. Opening is the slow part of most calls (it reads the
/// header objects), so the workflow opens before freezing and keeps the
/// handle: inside the freeze window only `create_snapshot` runs.
pub trait Image: Send + Sync + fmt::Debug {
    /// Which image this is.
    fn spec(&self) -> &ImageSpec;
    /// Snapshot names (user namespace), oldest first.
    fn snapshots(&self) -> Result<Vec<String>, RbdError>;
    /// The image's snapshot limit, `None` when unlimited.
    fn snapshot_limit(&self) -> Result<Option<u64>, RbdError>;
    /// Create a snapshot (the one call inside the freeze window).
    fn create_snapshot(&self, snap: &str) -> Result<(), RbdError>;
    /// Protect a snapshot (clone v1 needs it).
    fn protect_snapshot(&self, snap: &str) -> Result<(), RbdError>;
    /// Unprotect a snapshot; fails with `InUse` while clones depend on it.
    fn unprotect_snapshot(&self, snap: &str) -> Result<(), RbdError>;
    /// Whether a snapshot is protected.
    fn is_protected(&self, snap: &str) -> Result<bool, RbdError>;
    /// Remove a snapshot (unprotecting it first when `unprotect`).
    fn remove_snapshot(&self, snap: &str, unprotect: bool) -> Result<(), RbdError>;
    /// The parent snapshot this image was cloned from, if any.
    fn parent(&self) -> Result<Option<ParentSpec>, RbdError>;
    /// Copy the parent's data into this image and detach it from the parent.
    fn flatten(&self, progress: FlattenProgress<'_>) -> Result<(), RbdError>;
    /// Make the object map say again which objects exist. A client killed
    /// inside a flatten can leave an object marked as existing that was
    /// never copied up; a flatten resumed on that map would skip it and
    /// then detach the parent, leaving a hole of zeros.
    fn rebuild_object_map(&self) -> Result<(), RbdError> {
        Ok(())
    }
    /// Set an image metadata key (how rbdsnapd marks images it made).
    fn set_metadata(&self, key: &str, value: &str) -> Result<(), RbdError>;
    /// Read an image metadata key, `None` when absent.
    fn metadata(&self, key: &str) -> Result<Option<String>, RbdError>;
    /// Image size in bytes.
    fn size(&self) -> Result<u64, RbdError>;
    /// The image's RBD id: made by the cluster when the image is created,
    /// kept across renames, never copied into a clone or a copy (its
    /// metadata is) — what proves that an image is the one we made.
    fn id(&self) -> Result<String, RbdError>;
    /// The addresses of the clients that have the image open read-write
    /// (each holds a watch on it; a read-only handle holds none).
    fn watchers(&self) -> Result<Vec<String>, RbdError> {
        Ok(Vec::new())
    }
    /// The images cloned from snapshot `snap` of this image (`pool/name`,
    /// those in the RBD trash too): with clone v2 a snapshot with clones
    /// can be unprotected and "removed" into the trash, so this is the
    /// check that comes before either.
    fn children(&self, snap: &str) -> Result<Vec<String>, RbdError>;
}

/// A clone, as librbd links it to its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    /// Where it is (its name is kept while it is in the trash).
    pub spec: ImageSpec,
    /// Its RBD id: how it is opened while in the trash.
    pub id: String,
    /// Whether it was moved to the RBD trash.
    pub trash: bool,
}

impl fmt::Display for Linked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let trash = if self.trash { " (in the trash)" } else { "" };
        write!(f, "{}{trash}", self.spec)
    }
}

/// The cluster side: pools, image lifecycle, cluster identity.
pub trait ImageStore: Send + Sync + fmt::Debug {
    /// The cluster's fsid (what `rbd://` locations start with).
    fn fsid(&self) -> Result<String, RbdError>;
    /// Whether the pool exists.
    fn pool_exists(&self, pool: &str) -> Result<bool, RbdError>;
    /// Whether an image of that name exists.
    fn image_exists(&self, image: &ImageSpec) -> Result<bool, RbdError>;
    /// Open an image for the calls of [`Image`].
    fn open(&self, image: &ImageSpec) -> Result<Arc<dyn Image>, RbdError>;
    /// Open an image only to look at it: no watch, no lock, nothing another
    /// client of the image notices (writes through it fail).
    fn open_read_only(&self, image: &ImageSpec) -> Result<Arc<dyn Image>, RbdError> {
        self.open(image)
    }
    /// The newest clone format the cluster allows.
    fn clone_format(&self) -> Result<CloneFormat, RbdError>;
    /// Clone `parent@snap` into `child` in the given format.
    fn clone_image(
        &self,
        parent: &ImageSpec,
        snap: &str,
        child: &ImageSpec,
        format: CloneFormat,
    ) -> Result<(), RbdError>;
    /// Whether the cluster answers (one monitor round trip): checked before
    /// a guest is frozen, since a snapshot needs the monitors.
    fn ping(&self) -> Result<(), RbdError> {
        Ok(())
    }

    /// This cluster's monitors (every address of its monitor map and of
    /// the configured `mon_host`); empty when not known, which leaves a
    /// disk's `<host>` elements unchecked.
    fn monitors(&self) -> Result<Vec<monitors::Endpoint>, RbdError> {
        Ok(Vec::new())
    }

    /// This client's address as the OSDs see it (journalled, so that a
    /// later incarnation can fence this one).
    fn client_addr(&self) -> Option<String> {
        None
    }

    /// Blocklist a dead client's address so that its watches on images go
    /// away at once (a dead daemon's watches otherwise stall snapshots until
    /// they time out).
    fn fence(&self, _client_addr: &str) -> Result<(), RbdError> {
        Ok(())
    }

    /// Open an image by its RBD id in the pool (and namespace) of `at`,
    /// also while it is in the trash; `at`'s name serves the messages.
    fn open_by_id(&self, at: &ImageSpec, _id: &str) -> Result<Arc<dyn Image>, RbdError> {
        self.open(at)
    }

    /// [`ImageStore::open_by_id`], only to look ([`ImageStore::open_read_only`]).
    fn open_by_id_read_only(&self, at: &ImageSpec, id: &str) -> Result<Arc<dyn Image>, RbdError> {
        self.open_by_id(at, id)
    }

    /// Remove an image (it must have no snapshots left).
    fn remove_image(&self, image: &ImageSpec) -> Result<(), RbdError>;

    /// Whether the cluster's manager takes flatten tasks for images in
    /// `pool` from this client (checked before a `cluster` flatten touches
    /// the guest).
    fn check_flatten_tasks(&self, _pool: &str) -> Result<(), RbdError> {
        Err(no_manager("mgr flatten"))
    }

    /// Queue the flatten of `image` as a manager task (or find the one
    /// queued before); its task id.
    fn add_flatten_task(&self, _image: &ImageSpec) -> Result<String, RbdError> {
        Err(no_manager("mgr flatten"))
    }

    /// A manager task, `None` once it left the task list.
    fn flatten_task(&self, _task_id: &str) -> Result<Option<MgrTask>, RbdError> {
        Err(no_manager("mgr task"))
    }

    /// Cancel a manager task (one already gone is not an error).
    fn cancel_flatten_task(&self, _task_id: &str) -> Result<(), RbdError> {
        Err(no_manager("mgr task cancel"))
    }
}

fn no_manager(op: &'static str) -> RbdError {
    RbdError::new(
        op,
        "cluster",
        RbdErrorKind::Invalid,
        "this image store has no Ceph manager",
    )
}
