//! [`CephStore`]: the [`ImageStore`] over a real cluster — one librados
//! connection (through the `ceph` crate), an I/O context per pool and
//! namespace, and the image-level calls of librbd.
//!
//! Ownership keeps librados' teardown order without any explicit cleanup:
//! an open image holds its I/O context, which holds the connection, so the
//! last image closes before its context is destroyed and the last context
//! before the cluster is shut down — whatever order callers drop things in.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::ptr;
use std::sync::{Arc, Mutex};

use ceph::ceph::{IoCtx, Rados};
use ceph::error::RadosError;

use super::ffi;
use super::image::{c_string, RbdImage};
use super::{CloneFormat, Image, ImageSpec, ImageStore, RbdError, RbdErrorKind};

/// `CEPH_RELEASE_MIMIC`: the first release that understands clone v2. Not in
/// the public headers (it is Ceph's internal release numbering).
const CEPH_RELEASE_MIMIC: i8 = 13;

/// What every clone gets: layering (it is a clone), deep-flatten (so that
/// flatten also detaches the clone's own snapshots) and the exclusive-lock,
/// object-map and fast-diff trio that makes flatten and diffs cheap. The same
/// as Ceph's default features.
const CLONE_FEATURES: u64 = ffi::RBD_FEATURE_LAYERING
    | ffi::RBD_FEATURE_EXCLUSIVE_LOCK
    | ffi::RBD_FEATURE_OBJECT_MAP
    | ffi::RBD_FEATURE_FAST_DIFF
    | ffi::RBD_FEATURE_DEEP_FLATTEN;

/// The cluster connection.
struct Cluster(Rados);

// SAFETY: `Rados` only owns a `rados_t`. librados documents its cluster
// handle as safe to use from any thread once connected, and the ceph crate
// already declares `Rados: Sync`; it lacks `Send` only because it holds a raw
// pointer. Moving the owner to another thread (and dropping it there, which
// calls `rados_shutdown` once) is fine: we never call the crate's
// `disconnect_from_ceph`, which would shut the handle down a second time.
unsafe impl Send for Cluster {}

impl Cluster {
    fn handle(&self) -> ffi::rados_t {
        *self.0.inner()
    }
}

/// An I/O context on one pool and namespace. Field order is drop order: the
/// context is destroyed before this holder lets go of the cluster.
pub(super) struct Pool {
    ioctx: IoCtx,
    cluster: Arc<Cluster>,
}

impl Pool {
    fn new(ioctx: IoCtx, ns: &str, cluster: &Arc<Cluster>) -> Result<Pool, RbdError> {
        if !ns.is_empty() {
            let c_ns = c_string("open namespace", &ns, ns)?;
            // SAFETY: the context was just created and is owned here; the
            // namespace string outlives the call (librados copies it).
            unsafe { ffi::rados_ioctx_set_namespace(*ioctx.inner(), c_ns.as_ptr()) };
        }
        Ok(Pool {
            ioctx,
            cluster: Arc::clone(cluster),
        })
    }

    /// A separate, uncached context on another pool of the same cluster, by
    /// pool id (as librbd reports parents).
    pub(super) fn by_id(&self, pool_id: i64, ns: &str) -> Result<Pool, RbdError> {
        let ioctx = self
            .cluster
            .0
            .get_rados_ioctx2(pool_id)
            .map_err(|e| rados_error("open pool", &pool_id.to_string(), e))?;
        Pool::new(ioctx, ns, &self.cluster)
    }

    /// The raw context for librbd calls; valid as long as `self` lives.
    pub(super) fn handle(&self) -> ffi::rados_ioctx_t {
        *self.ioctx.inner()
    }
}

/// The real image store. Field order is drop order: cached I/O contexts go
/// before the connection (though each also holds the connection).
pub struct CephStore {
    pools: Mutex<HashMap<(String, String), Arc<Pool>>>,
    cluster: Arc<Cluster>,
}

impl fmt::Debug for CephStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CephStore").finish_non_exhaustive()
    }
}

/// An error of the `ceph` crate as ours: errnos keep their kind, anything
/// else (a bad path, a parse failure) is reported as is.
fn rados_error(op: &'static str, target: &str, err: RadosError) -> RbdError {
    match err {
        RadosError::ApiError(errno) => RbdError::from_code(op, target, errno as i32),
        other => RbdError::new(op, target, RbdErrorKind::Other, other.to_string()),
    }
}

impl CephStore {
    /// Connect as cephx user `client_id` (without `client.`) with the given
    /// ceph.conf. Client timeouts belong in that file: the connection cannot
    /// be configured before it is made.
    pub fn connect(conf: &Path, client_id: &str) -> Result<CephStore, RbdError> {
        let target = conf.display().to_string();
        let conf_str = conf.to_str().ok_or_else(|| {
            RbdError::new(
                "connect",
                &target,
                RbdErrorKind::Invalid,
                "path is not UTF-8",
            )
        })?;
        let rados = ceph::ceph::connect_to_ceph(client_id, conf_str)
            .map_err(|e| rados_error("connect", &target, e))?;
        Ok(CephStore {
            pools: Mutex::new(HashMap::new()),
            cluster: Arc::new(Cluster(rados)),
        })
    }

    /// The I/O context for the image's pool and namespace, made on first use.
    pub(super) fn pool(&self, image: &ImageSpec) -> Result<Arc<Pool>, RbdError> {
        let ns = image.namespace.clone().unwrap_or_default();
        let key = (image.pool.clone(), ns);
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(pool) = pools.get(&key) {
            return Ok(Arc::clone(pool));
        }
        let ioctx = self
            .cluster
            .0
            .get_rados_ioctx(&key.0)
            .map_err(|e| rados_error("open pool", &key.0, e))?;
        let pool = Arc::new(Pool::new(ioctx, &key.1, &self.cluster)?);
        pools.insert(key, Arc::clone(&pool));
        Ok(pool)
    }

    /// Open an image read-write (`read_only` for a look that must not take
    /// a watch).
    pub(super) fn open_image(
        &self,
        image: &ImageSpec,
        read_only: bool,
    ) -> Result<RbdImage, RbdError> {
        RbdImage::open(self.pool(image)?, image.clone(), read_only)
    }
}

/// Options for `rbd_clone3`, destroyed on every path.
struct CloneOptions(ffi::rbd_image_options_t);

impl CloneOptions {
    fn new() -> CloneOptions {
        let mut opts: ffi::rbd_image_options_t = ptr::null_mut();
        // SAFETY: librbd writes a freshly allocated options handle into
        // `opts`; it cannot fail.
        unsafe { ffi::rbd_image_options_create(&mut opts) };
        CloneOptions(opts)
    }

    fn set(&self, option: i32, value: u64, target: &dyn fmt::Display) -> Result<(), RbdError> {
        // SAFETY: `self.0` is a live options handle owned by `self`.
        let rc = unsafe { ffi::rbd_image_options_set_uint64(self.0, option, value) };
        RbdError::check("clone", rc, || target.to_string()).map(drop)
    }
}

impl Drop for CloneOptions {
    fn drop(&mut self) {
        // SAFETY: created by `rbd_image_options_create`, destroyed once here.
        unsafe { ffi::rbd_image_options_destroy(self.0) };
    }
}

impl ImageStore for CephStore {
    fn fsid(&self) -> Result<String, RbdError> {
        let fsid = self
            .cluster
            .0
            .rados_fsid()
            .map_err(|e| rados_error("fsid", "cluster", e))?;
        Ok(fsid.to_string())
    }

    fn pool_exists(&self, pool: &str) -> Result<bool, RbdError> {
        let c_pool = c_string("pool lookup", &pool, pool)?;
        // SAFETY: the cluster handle is connected and outlives the call; the
        // name is a valid C string.
        let id = unsafe { ffi::rados_pool_lookup(self.cluster.handle(), c_pool.as_ptr()) };
        match RbdError::check("pool lookup", id, || pool.to_string()) {
            Ok(_) => Ok(true),
            Err(e) if e.kind == RbdErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn image_exists(&self, image: &ImageSpec) -> Result<bool, RbdError> {
        // The pool is resolved first so that a missing pool is an error, not
        // a missing image.
        let pool = self.pool(image)?;
        match RbdImage::open(pool, image.clone(), true) {
            Ok(_) => Ok(true),
            Err(e) if e.kind == RbdErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn open(&self, image: &ImageSpec) -> Result<Arc<dyn Image>, RbdError> {
        Ok(Arc::new(self.open_image(image, false)?))
    }

    fn clone_format(&self) -> Result<CloneFormat, RbdError> {
        let (mut min, mut required) = (0i8, 0i8);
        // SAFETY: connected cluster handle; both out-pointers are valid.
        let rc = unsafe {
            ffi::rados_get_min_compatible_client(self.cluster.handle(), &mut min, &mut required)
        };
        RbdError::check("min compat client", rc, || "cluster".to_string())?;
        Ok(if required >= CEPH_RELEASE_MIMIC {
            CloneFormat::V2
        } else {
            CloneFormat::V1
        })
    }

    fn clone_image(
        &self,
        parent: &ImageSpec,
        snap: &str,
        child: &ImageSpec,
        format: CloneFormat,
    ) -> Result<(), RbdError> {
        let target = format!("{parent}@{snap} -> {child}");
        let (p_name, p_snap, c_child) = (
            c_string("clone", &target, &parent.name)?,
            c_string("clone", &target, snap)?,
            c_string("clone", &target, &child.name)?,
        );
        let (p_pool, c_pool) = (self.pool(parent)?, self.pool(child)?);
        let opts = CloneOptions::new();
        let version = match format {
            CloneFormat::V1 => 1,
            CloneFormat::V2 => 2,
        };
        opts.set(ffi::RBD_IMAGE_OPTION_CLONE_FORMAT, version, &target)?;
        opts.set(ffi::RBD_IMAGE_OPTION_FEATURES, CLONE_FEATURES, &target)?;
        // SAFETY: both contexts are alive (held by `p_pool`/`c_pool`), the
        // names are valid C strings and the options handle lives in `opts`
        // until after the call.
        let rc = unsafe {
            ffi::rbd_clone3(
                p_pool.handle(),
                p_name.as_ptr(),
                p_snap.as_ptr(),
                c_pool.handle(),
                c_child.as_ptr(),
                opts.0,
            )
        };
        RbdError::check("clone", rc, || target).map(drop)
    }

    fn remove_image(&self, image: &ImageSpec) -> Result<(), RbdError> {
        let name = c_string("remove", image, &image.name)?;
        let pool = self.pool(image)?;
        // SAFETY: the context is alive (held by `pool`); the name is a valid
        // C string.
        let rc = unsafe { ffi::rbd_remove(pool.handle(), name.as_ptr()) };
        RbdError::check("remove", rc, || image.to_string()).map(drop)
    }
}
