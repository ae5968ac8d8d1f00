//! [`CephStore`]: the [`ImageStore`] over a real cluster — one connection,
//! an I/O context per pool and namespace made on first use and kept, and the
//! image-level calls of librbd (clone, remove).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::cluster::{Cluster, Pool};
use super::ffi;
use super::image::RbdImage;
use super::strings::c_string;
use super::{CloneFormat, Image, ImageSpec, ImageStore, MgrTask, RbdError, RbdErrorKind};

/// What every clone gets: layering (it is a clone), deep-flatten (so that
/// flatten also detaches the clone's own snapshots) and the exclusive-lock,
/// object-map and fast-diff trio that makes flatten and diffs cheap; the
/// same set as Ceph's default features.
const CLONE_FEATURES: u64 = ffi::RBD_FEATURE_LAYERING
    | ffi::RBD_FEATURE_EXCLUSIVE_LOCK
    | ffi::RBD_FEATURE_OBJECT_MAP
    | ffi::RBD_FEATURE_FAST_DIFF
    | ffi::RBD_FEATURE_DEEP_FLATTEN;

/// Cached I/O contexts by (pool, namespace).
type Pools = HashMap<(String, String), Arc<Pool>>;

/// The real image store. Field order is drop order: the cached contexts go
/// before the connection (each also holds the connection).
pub struct CephStore {
    pools: Mutex<Pools>,
    cluster: Arc<Cluster>,
    /// The connection for manager commands, made on first use (see
    /// [`CephStore::manager`]).
    mgr: Mutex<Option<Arc<Cluster>>>,
    /// How to make it: ceph.conf, client id, options.
    conf: String,
    client_id: String,
    options: Vec<(String, String)>,
}

impl fmt::Debug for CephStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CephStore").finish_non_exhaustive()
    }
}

impl CephStore {
    /// Connect as cephx user `client_id` (without `client.`) with the given
    /// ceph.conf. Client timeouts (`rados osd op timeout`, `rados mon op
    /// timeout`, `client mount timeout`) belong in that file: without them a
    /// dead OSD or mon makes calls hang instead of fail.
    pub fn connect(conf: &Path, client_id: &str) -> Result<CephStore, RbdError> {
        CephStore::connect_with(conf, client_id, &[])
    }

    /// [`CephStore::connect`], with Ceph options set over the file's (e.g.
    /// `rbd_concurrent_management_ops`, how many objects a flatten copies
    /// at once).
    pub fn connect_with(
        conf: &Path,
        client_id: &str,
        options: &[(&str, String)],
    ) -> Result<CephStore, RbdError> {
        let conf = conf.to_str().ok_or_else(|| {
            let target = conf.display().to_string();
            RbdError::new(
                "connect",
                target,
                RbdErrorKind::Invalid,
                "path is not UTF-8",
            )
        })?;
        Ok(CephStore {
            pools: Mutex::new(HashMap::new()),
            cluster: Arc::new(Cluster::connect(conf, client_id, options)?),
            mgr: Mutex::new(None),
            conf: conf.to_string(),
            client_id: client_id.to_string(),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        })
    }

    /// The connection manager commands go through. librados (16.2) frees a
    /// manager command's reply buffers when `rados_mon_op_timeout` expires
    /// but keeps the command, and writes the late reply into freed memory
    /// (seen as a crash while the manager was busy flattening): this
    /// connection has no such timeout, and callers bound their wait on
    /// their side instead, leaving the call to end when the manager answers.
    fn manager(&self) -> Result<Arc<Cluster>, RbdError> {
        let mut mgr = self.mgr.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cluster) = mgr.as_ref() {
            return Ok(Arc::clone(cluster));
        }
        let mut options: Vec<(&str, String)> = self
            .options
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        options.push(("rados_mon_op_timeout", "0".to_string()));
        let cluster = Arc::new(Cluster::connect(&self.conf, &self.client_id, &options)?);
        *mgr = Some(Arc::clone(&cluster));
        Ok(cluster)
    }

    /// The I/O context for the image's pool and namespace, made on first use
    /// (outside the lock: looking up an unknown pool asks the mon).
    fn pool(&self, image: &ImageSpec) -> Result<Arc<Pool>, RbdError> {
        let ns = image.namespace.clone().unwrap_or_default();
        let key = (image.pool.clone(), ns);
        if let Some(pool) = self.cached_pools().get(&key) {
            return Ok(Arc::clone(pool));
        }
        let pool = Arc::new(Pool::open(&self.cluster, &key.0, &key.1)?);
        // Another thread may have been quicker; keep one context per key.
        Ok(Arc::clone(self.cached_pools().entry(key).or_insert(pool)))
    }

    fn cached_pools(&self) -> MutexGuard<'_, Pools> {
        // Every change to the map is a single insert, so it is consistent
        // even if a holder panicked.
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

    fn set(&self, option: i32, value: u64, target: &str) -> Result<(), RbdError> {
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
        self.cluster.fsid()
    }

    fn ping(&self) -> Result<(), RbdError> {
        self.cluster.ping_mon()
    }

    fn client_addr(&self) -> Option<String> {
        self.cluster.client_addr().ok()
    }

    fn fence(&self, client_addr: &str) -> Result<(), RbdError> {
        self.cluster.blocklist(client_addr)
    }

    fn pool_exists(&self, pool: &str) -> Result<bool, RbdError> {
        self.cluster.pool_exists(pool)
    }

    fn image_exists(&self, image: &ImageSpec) -> Result<bool, RbdError> {
        // The pool is resolved first so that a missing pool is an error, not
        // a missing image. Read-only: a look must not take a watch.
        let pool = self.pool(image)?;
        match RbdImage::open(pool, image.clone(), true) {
            Ok(_) => Ok(true),
            Err(e) if e.kind == RbdErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn open(&self, image: &ImageSpec) -> Result<Arc<dyn Image>, RbdError> {
        Ok(Arc::new(RbdImage::open(
            self.pool(image)?,
            image.clone(),
            false,
        )?))
    }

    fn open_by_id(&self, at: &ImageSpec, id: &str) -> Result<Arc<dyn Image>, RbdError> {
        Ok(Arc::new(RbdImage::open_id(
            self.pool(at)?,
            at.clone(),
            id,
            false,
        )?))
    }

    fn open_by_id_read_only(&self, at: &ImageSpec, id: &str) -> Result<Arc<dyn Image>, RbdError> {
        Ok(Arc::new(RbdImage::open_id(
            self.pool(at)?,
            at.clone(),
            id,
            true,
        )?))
    }

    fn open_read_only(&self, image: &ImageSpec) -> Result<Arc<dyn Image>, RbdError> {
        Ok(Arc::new(RbdImage::open(
            self.pool(image)?,
            image.clone(),
            true,
        )?))
    }

    fn monitors(&self) -> Result<Vec<super::monitors::Endpoint>, RbdError> {
        let mut ours = super::monitors::parse_mon_host(&self.cluster.conf_get("mon_host")?);
        // the monitor map has every monitor's v1 and v2 address; a client
        // whose caps do not allow `mon dump` has the configured ones only
        match self.cluster.monitor_map_addrs() {
            Ok(addrs) => ours.extend(addrs),
            Err(e) => tracing::debug!(error = %e, "no monitor map: comparing with mon_host only"),
        }
        Ok(ours)
    }

    fn clone_format(&self) -> Result<CloneFormat, RbdError> {
        Ok(if self.cluster.allows_clone_v2()? {
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
        let p_name = c_string("clone", &target, &parent.name)?;
        let p_snap = c_string("clone", &target, snap)?;
        let c_name = c_string("clone", &target, &child.name)?;
        let (p_pool, c_pool) = (self.pool(parent)?, self.pool(child)?);
        let opts = CloneOptions::new();
        let version = match format {
            CloneFormat::V1 => 1,
            CloneFormat::V2 => 2,
        };
        opts.set(ffi::RBD_IMAGE_OPTION_CLONE_FORMAT, version, &target)?;
        opts.set(ffi::RBD_IMAGE_OPTION_FEATURES, CLONE_FEATURES, &target)?;
        // SAFETY: both contexts are alive (held by `p_pool`/`c_pool`), the
        // names are C strings and the options live in `opts` past the call.
        let rc = unsafe {
            ffi::rbd_clone3(
                p_pool.handle(),
                p_name.as_ptr(),
                p_snap.as_ptr(),
                c_pool.handle(),
                c_name.as_ptr(),
                opts.0,
            )
        };
        RbdError::check("clone", rc, || target).map(drop)
    }

    fn check_flatten_tasks(&self, pool: &str) -> Result<(), RbdError> {
        self.cluster.check_flatten_tasks(pool)
    }

    fn add_flatten_task(&self, image: &ImageSpec) -> Result<String, RbdError> {
        self.manager()?.add_flatten_task(image)
    }

    fn flatten_task(&self, task_id: &str) -> Result<Option<MgrTask>, RbdError> {
        self.manager()?.task(task_id)
    }

    fn cancel_flatten_task(&self, task_id: &str) -> Result<(), RbdError> {
        self.manager()?.cancel_task(task_id)
    }

    fn remove_image(&self, image: &ImageSpec) -> Result<(), RbdError> {
        let name = c_string("remove", image, &image.name)?;
        let pool = self.pool(image)?;
        // SAFETY: the context is alive (held by `pool`); `name` is a C string.
        let rc = unsafe { ffi::rbd_remove(pool.handle(), name.as_ptr()) };
        RbdError::check("remove", rc, || image.to_string()).map(drop)
    }
}
