//! The librados side: the cluster connection and I/O contexts, owned by
//! types that free them exactly once.
//!
//! The librados calls go through the `ceph` crate's bindings
//! (`ceph::rados`), but not through its safe wrappers: `connect_to_ceph`
//! leaks the cluster handle when the connection fails (about four threads and
//! 1 MiB per attempt, measured), and a daemon that retries while Ceph is down
//! would pile them up; `disconnect_from_ceph` and `destroy_rados_ioctx` free
//! without nulling and Drop frees again. So the handles are owned here.
//!
//! Ownership keeps librados' teardown order without explicit cleanup: an
//! open image holds its I/O context, which holds the connection, so the last
//! image closes before its context is destroyed and the last context before
//! the cluster is shut down, whatever order callers drop things in.

use std::ffi::CStr;
use std::os::raw::c_int;
use std::ptr;
use std::sync::Arc;

use ceph::rados;

use super::ffi;
use super::strings::{c_string, read_string};
use super::{RbdError, RbdErrorKind};

/// `CEPH_RELEASE_MIMIC`: the first release that understands clone v2. Not in
/// the public headers (it is Ceph's internal release numbering).
const CEPH_RELEASE_MIMIC: i8 = 13;

/// A librados cluster handle, shut down on drop.
pub(super) struct Cluster(ffi::rados_t);

// SAFETY: librados cluster handles are thread-safe once connected: the
// client serialises its own state, and every language binding shares one
// handle between threads. The handle is only shut down in `Drop`, when no
// other reference exists.
unsafe impl Send for Cluster {}
// SAFETY: see `Send`: all calls made through `&Cluster` are thread-safe.
unsafe impl Sync for Cluster {}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rados_create` and is shut down only
        // here, once. librados frees an unconnected handle this way too.
        unsafe { rados::rados_shutdown(self.0) };
    }
}

impl Cluster {
    /// The raw handle, for sibling modules' calls.
    pub(super) fn raw(&self) -> ffi::rados_t {
        self.0
    }

    /// Create a handle for cephx user `id`, read `conf` and connect. The
    /// handle is freed on every failure.
    pub(super) fn connect(
        conf: &str,
        id: &str,
        options: &[(&str, String)],
    ) -> Result<Cluster, RbdError> {
        let c_conf = c_string("connect", &conf, conf)?;
        let c_id = c_string("connect", &conf, id)?;
        let target = || format!("{conf} as client.{id}");
        let mut handle: ffi::rados_t = ptr::null_mut();
        // SAFETY: `handle` receives a new cluster handle; `c_id` is a C string.
        let rc = unsafe { rados::rados_create(&mut handle, c_id.as_ptr()) };
        RbdError::check("connect", rc, target)?;
        let cluster = Cluster(handle);
        // SAFETY: a fresh, not yet connected handle; `c_conf` is a C string.
        let rc = unsafe { rados::rados_conf_read_file(cluster.0, c_conf.as_ptr()) };
        RbdError::check("read ceph.conf", rc, target)?;
        for (key, value) in options {
            let (c_key, c_value) = (
                c_string("connect", key, key)?,
                c_string("connect", key, value)?,
            );
            // SAFETY: a configured, unconnected handle; both are C strings.
            let rc = unsafe { rados::rados_conf_set(cluster.0, c_key.as_ptr(), c_value.as_ptr()) };
            RbdError::check("set ceph option", rc, || format!("{key} = {value}"))?;
        }
        // SAFETY: a configured handle, connected once.
        let rc = unsafe { rados::rados_connect(cluster.0) };
        if rc == -(nix::errno::Errno::ENOENT as c_int) {
            // librados' own word is a bare "No such file or directory"
            return Err(RbdError::new(
                "connect",
                target(),
                RbdErrorKind::NotFound,
                format!(
                    "no keyring with a key for client.{id} was found (ceph.conf's `keyring` \
                     setting; by default /etc/ceph/ceph.client.{id}.keyring)"
                ),
            ));
        }
        RbdError::check("connect", rc, target)?;
        Ok(cluster)
    }

    /// The cluster's fsid as librados spells it.
    pub(super) fn fsid(&self) -> Result<String, RbdError> {
        let mut buf = [0u8; 64];
        // SAFETY: connected handle; `buf` has `buf.len()` writable bytes.
        let rc = unsafe { rados::rados_cluster_fsid(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        RbdError::check("fsid", rc, || "cluster".to_string())?;
        let fsid = CStr::from_bytes_until_nul(&buf).map_err(|_| {
            RbdError::new(
                "fsid",
                "cluster",
                RbdErrorKind::Other,
                "librados returned an unterminated fsid",
            )
        })?;
        Ok(fsid.to_string_lossy().into_owned())
    }

    /// A configuration value as librados has it (after the file and
    /// overrides).
    pub(super) fn conf_get(&self, key: &str) -> Result<String, RbdError> {
        let c_key = c_string("conf get", &key, key)?;
        read_string(
            |buf, len| {
                // SAFETY: `c_key` is a C string and `buf` has `*len` bytes;
                // librados answers -ENAMETOOLONG when they are too few.
                let rc = unsafe { rados::rados_conf_get(self.0, c_key.as_ptr(), buf, *len) };
                if rc == -(nix::errno::Errno::ENAMETOOLONG as c_int) {
                    -(nix::errno::Errno::ERANGE as c_int)
                } else {
                    rc
                }
            },
            "conf get",
            || key.to_string(),
        )
    }

    /// Whether a pool of that name exists.
    pub(super) fn pool_exists(&self, pool: &str) -> Result<bool, RbdError> {
        let c_pool = c_string("pool lookup", &pool, pool)?;
        // SAFETY: connected handle; `c_pool` is a C string.
        let id = unsafe { rados::rados_pool_lookup(self.0, c_pool.as_ptr()) };
        match RbdError::check("pool lookup", id, || pool.to_string()) {
            Ok(_) => Ok(true),
            Err(e) if e.kind == RbdErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the cluster requires clients new enough for clone v2 (what
    /// librbd's own "auto" clone format decides on).
    pub(super) fn allows_clone_v2(&self) -> Result<bool, RbdError> {
        let (mut min, mut required) = (0i8, 0i8);
        // SAFETY: connected handle; both out-pointers are valid.
        let rc = unsafe { ffi::rados_get_min_compatible_client(self.0, &mut min, &mut required) };
        RbdError::check("min compat client", rc, || "cluster".to_string())?;
        Ok(required >= CEPH_RELEASE_MIMIC)
    }
}

/// An I/O context on one pool and namespace. It holds the cluster, so the
/// context is always destroyed first.
pub(super) struct Pool {
    ioctx: ffi::rados_ioctx_t,
    cluster: Arc<Cluster>,
}

// SAFETY: a librados I/O context may be used from several threads at once
// (librbd itself does); its namespace is only set before it is shared, and
// it is destroyed only in `Drop`.
unsafe impl Send for Pool {}
// SAFETY: see `Send`.
unsafe impl Sync for Pool {}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: created by `rados_ioctx_create*`, destroyed only here; the
        // images using it hold this `Pool`, so none is open any more.
        unsafe { rados::rados_ioctx_destroy(self.ioctx) };
    }
}

impl Pool {
    /// A context on the pool named `pool`, in namespace `ns` ("" = default).
    pub(super) fn open(cluster: &Arc<Cluster>, pool: &str, ns: &str) -> Result<Pool, RbdError> {
        let c_pool = c_string("open pool", &pool, pool)?;
        Self::create(cluster, ns, pool, |handle, out| {
            // SAFETY: connected handle, C string name, `out` receives the
            // context.
            unsafe { rados::rados_ioctx_create(handle, c_pool.as_ptr(), out) }
        })
    }

    /// A separate context on another pool of the same cluster, by pool id
    /// (as librbd reports parents).
    pub(super) fn by_id(&self, pool_id: i64, ns: &str) -> Result<Pool, RbdError> {
        Self::create(&self.cluster, ns, &pool_id.to_string(), |handle, out| {
            // SAFETY: connected handle; `out` receives the context.
            unsafe { rados::rados_ioctx_create2(handle, pool_id, out) }
        })
    }

    fn create(
        cluster: &Arc<Cluster>,
        ns: &str,
        target: &str,
        call: impl FnOnce(ffi::rados_t, *mut ffi::rados_ioctx_t) -> c_int,
    ) -> Result<Pool, RbdError> {
        let c_ns = c_string("open namespace", &ns, ns)?;
        let mut ioctx: ffi::rados_ioctx_t = ptr::null_mut();
        let rc = call(cluster.0, &mut ioctx);
        RbdError::check("open pool", rc, || target.to_string())?;
        let pool = Pool {
            ioctx,
            cluster: Arc::clone(cluster),
        };
        if !ns.is_empty() {
            pool.set_namespace(&c_ns);
        }
        Ok(pool)
    }

    fn set_namespace(&self, ns: &CStr) {
        // SAFETY: the context is new and not shared yet; librados copies the
        // namespace string.
        unsafe { rados::rados_ioctx_set_namespace(self.ioctx, ns.as_ptr()) };
    }

    /// The raw context for librbd calls; valid as long as `self` lives.
    pub(super) fn handle(&self) -> ffi::rados_ioctx_t {
        self.ioctx
    }
}
