//! [`RbdImage`]: one open librbd image handle behind the [`Image`] trait.
//! The calls that take several librbd calls live in `lookup.rs`.

use std::fmt;
use std::os::raw::{c_char, c_int};
use std::ptr;
use std::sync::Arc;

use super::cluster::Pool;
use super::ffi;
use super::flatten;
use super::strings::{c_string, read_string};
use super::{FlattenProgress, Image, ImageSpec, ParentSpec, RbdError, RbdErrorKind};

/// An open image. Dropping it closes the handle, then lets go of the I/O
/// context (`Drop::drop` runs before the fields are dropped).
pub(super) struct RbdImage {
    handle: ffi::rbd_image_t,
    spec: ImageSpec,
    pool: Arc<Pool>,
}

// SAFETY: the handle is a librbd `ImageCtx`, which guards its state with its
// own locks: librbd is called on one image from many threads at once (QEMU's
// I/O threads, the Python binding without the GIL). The only call that must
// not overlap with others is `rbd_close`, and it runs in `Drop`, when no
// other reference to the image can exist.
unsafe impl Send for RbdImage {}
// SAFETY: see `Send` above: every call but `rbd_close` takes `&self` and is
// safe concurrently.
unsafe impl Sync for RbdImage {}

impl fmt::Debug for RbdImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RbdImage")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Drop for RbdImage {
    /// `rbd_close` waits for the image's in-flight ops and releases its
    /// exclusive lock through the OSDs: it blocks. On an owner's thread (or
    /// without a runtime) it closes here and now — a removal that follows
    /// must find the image closed; on an async worker it is handed to the
    /// Ceph owner.
    fn drop(&mut self) {
        let closer = Closer {
            handle: self.handle,
            spec: self.spec.clone(),
            _pool: Arc::clone(&self.pool),
        };
        if crate::owners::may_block() {
            return drop(closer);
        }
        // a dropped task drops its closure, and so still closes the image
        let slot = Arc::new(std::sync::Mutex::new(Some(closer)));
        let take = |slot: &std::sync::Mutex<Option<Closer>>| {
            drop(slot.lock().unwrap_or_else(|p| p.into_inner()).take())
        };
        let owned = Arc::clone(&slot);
        if crate::owners::CEPH.spawn(move || take(&owned)).is_err() {
            // every Ceph slot is held by stuck calls: a plain blocking thread
            tokio::task::spawn_blocking(move || take(&slot));
        }
    }
}

/// Closes an image handle when dropped, wherever that happens.
struct Closer {
    handle: ffi::rbd_image_t,
    spec: ImageSpec,
    /// The I/O context outlives the handle.
    _pool: Arc<Pool>,
}

// SAFETY: the handle moved here from its `RbdImage`, which no longer uses
// it; `rbd_close` may run on any thread.
unsafe impl Send for Closer {}

impl Drop for Closer {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful open; its `RbdImage` is
        // gone and this is the only close, so no call on it is in flight.
        let rc = unsafe { ffi::rbd_close(self.handle) };
        if rc < 0 {
            tracing::warn!(image = %self.spec, errno = -rc, "closing the image failed");
        }
    }
}

impl RbdImage {
    /// Open `spec` in `pool` (its I/O context); `read_only` takes no watch.
    pub(super) fn open(
        pool: Arc<Pool>,
        spec: ImageSpec,
        read_only: bool,
    ) -> Result<RbdImage, RbdError> {
        let name = c_string("open", &spec, &spec.name)?;
        Self::open_with(pool, spec, |io, out| {
            // SAFETY: `io` is alive (the pool is held), `name` is a C string,
            // `out` receives the handle; a null snapshot opens the head.
            unsafe {
                if read_only {
                    ffi::rbd_open_read_only(io, name.as_ptr(), out, ptr::null())
                } else {
                    ffi::rbd_open(io, name.as_ptr(), out, ptr::null())
                }
            }
        })
    }

    /// Open `snap` of `spec` read-only (calls then act on that snapshot).
    pub(super) fn open_at_snapshot(
        pool: Arc<Pool>,
        spec: ImageSpec,
        snap: &str,
    ) -> Result<RbdImage, RbdError> {
        let name = c_string("open", &spec, &spec.name)?;
        let c_snap = c_string("open", &spec, snap)?;
        Self::open_with(pool, spec, |io, out| {
            // SAFETY: as in `open`; `c_snap` names the snapshot to read.
            unsafe { ffi::rbd_open_read_only(io, name.as_ptr(), out, c_snap.as_ptr()) }
        })
    }

    /// Open by image id (how librbd names a parent or a clone, which may
    /// be in the trash where its name no longer finds it).
    pub(super) fn open_by_id(
        pool: Arc<Pool>,
        spec: ImageSpec,
        id: &str,
    ) -> Result<RbdImage, RbdError> {
        Self::open_id(pool, spec, id, true)
    }

    /// [`RbdImage::open_by_id`], read-only or not.
    pub(super) fn open_id(
        pool: Arc<Pool>,
        spec: ImageSpec,
        id: &str,
        read_only: bool,
    ) -> Result<RbdImage, RbdError> {
        let c_id = c_string("open", &spec, id)?;
        Self::open_with(pool, spec, |io, out| {
            // SAFETY: as in `open`.
            unsafe {
                if read_only {
                    ffi::rbd_open_by_id_read_only(io, c_id.as_ptr(), out, ptr::null())
                } else {
                    ffi::rbd_open_by_id(io, c_id.as_ptr(), out, ptr::null())
                }
            }
        })
    }

    fn open_with(
        pool: Arc<Pool>,
        spec: ImageSpec,
        call: impl FnOnce(ffi::rados_ioctx_t, *mut ffi::rbd_image_t) -> c_int,
    ) -> Result<RbdImage, RbdError> {
        let mut handle: ffi::rbd_image_t = ptr::null_mut();
        let rc = call(pool.handle(), &mut handle);
        RbdError::check("open", rc, || spec.to_string())?;
        Ok(RbdImage { handle, spec, pool })
    }

    /// The raw handle, valid while `self` lives.
    pub(super) fn handle(&self) -> ffi::rbd_image_t {
        self.handle
    }

    /// The I/O context the image was opened in.
    pub(super) fn pool(&self) -> &Pool {
        &self.pool
    }

    fn snap_target(&self, snap: &str) -> String {
        format!("{}@{snap}", self.spec)
    }

    /// Run a call that takes the image and a snapshot name.
    fn on_snap(
        &self,
        op: &'static str,
        snap: &str,
        call: impl FnOnce(ffi::rbd_image_t, *const c_char) -> c_int,
    ) -> Result<(), RbdError> {
        let c_snap = c_string(op, &format_args!("{}@{snap}", self.spec), snap)?;
        let rc = call(self.handle, c_snap.as_ptr());
        RbdError::check(op, rc, || self.snap_target(snap)).map(drop)
    }
}

impl Image for RbdImage {
    fn spec(&self) -> &ImageSpec {
        &self.spec
    }

    fn snapshots(&self) -> Result<Vec<String>, RbdError> {
        let mut names = Vec::new();
        for (id, name) in self.all_snapshots()? {
            if self.is_user_snapshot(id)? {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn snapshot_limit(&self) -> Result<Option<u64>, RbdError> {
        let mut limit = 0u64;
        // SAFETY: the image is open; `limit` is valid for writes.
        let rc = unsafe { ffi::rbd_snap_get_limit(self.handle, &mut limit) };
        RbdError::check("snap limit", rc, || self.spec.to_string())?;
        Ok((limit != u64::MAX).then_some(limit))
    }

    fn create_snapshot(&self, snap: &str) -> Result<(), RbdError> {
        // The guest is quiesced through its agent already: asking librbd's
        // watchers (QEMU) to quiesce too would put a round trip to every
        // watcher into the freeze window.
        let flags = ffi::RBD_SNAP_CREATE_SKIP_QUIESCE;
        self.on_snap("snap create", snap, |img, name| {
            // SAFETY: open image, C string name, no progress callback.
            unsafe { ffi::rbd_snap_create2(img, name, flags, None, ptr::null_mut()) }
        })?;
        // With that flag librbd 16.2 may answer success for a snapshot it
        // did not make: believe only what the image holds.
        let mut exists = false;
        self.on_snap("snap create", snap, |img, name| {
            // SAFETY: open image, C string name, `exists` valid for writes.
            unsafe { ffi::rbd_snap_exists(img, name, &mut exists) }
        })?;
        if exists {
            Ok(())
        } else {
            Err(self.missing_snapshot(snap))
        }
    }

    fn protect_snapshot(&self, snap: &str) -> Result<(), RbdError> {
        self.on_snap("snap protect", snap, |img, name| {
            // SAFETY: open image, C string name.
            unsafe { ffi::rbd_snap_protect(img, name) }
        })
    }

    fn unprotect_snapshot(&self, snap: &str) -> Result<(), RbdError> {
        self.on_snap("snap unprotect", snap, |img, name| {
            // SAFETY: open image, C string name.
            unsafe { ffi::rbd_snap_unprotect(img, name) }
        })
    }

    fn is_protected(&self, snap: &str) -> Result<bool, RbdError> {
        let mut protected: c_int = 0;
        self.on_snap("snap is protected", snap, |img, name| {
            // SAFETY: open image, C string name, `protected` valid for writes.
            unsafe { ffi::rbd_snap_is_protected(img, name, &mut protected) }
        })?;
        Ok(protected != 0)
    }

    fn remove_snapshot(&self, snap: &str, unprotect: bool) -> Result<(), RbdError> {
        let flags = if unprotect {
            ffi::RBD_SNAP_REMOVE_UNPROTECT
        } else {
            0
        };
        self.on_snap("snap remove", snap, |img, name| {
            // SAFETY: open image, C string name, no progress callback.
            unsafe { ffi::rbd_snap_remove2(img, name, flags, None, ptr::null_mut()) }
        })
    }

    fn parent(&self) -> Result<Option<ParentSpec>, RbdError> {
        self.parent_spec()
    }

    fn flatten(&self, progress: FlattenProgress<'_>) -> Result<(), RbdError> {
        flatten::run(self.handle, progress).map_err(|(code, message)| {
            let mut err = RbdError::from_code("flatten", self.spec.to_string(), code);
            if let Some(message) = message {
                err.message = message;
            }
            err
        })
    }

    fn rebuild_object_map(&self) -> Result<(), RbdError> {
        // SAFETY: open image; librbd calls the no-op progress function only
        // before returning and never dereferences the NULL argument.
        let rc =
            unsafe { ffi::rbd_rebuild_object_map(self.handle, Some(no_progress), ptr::null_mut()) };
        RbdError::check("rebuild object map", rc, || self.spec.to_string()).map(drop)
    }

    fn set_metadata(&self, key: &str, value: &str) -> Result<(), RbdError> {
        let target = || format!("{} key {key}", self.spec);
        let c_key = c_string("metadata set", &target(), key)?;
        let c_value = c_string("metadata set", &target(), value)?;
        // SAFETY: open image, both C strings live across the call.
        let rc = unsafe { ffi::rbd_metadata_set(self.handle, c_key.as_ptr(), c_value.as_ptr()) };
        RbdError::check("metadata set", rc, target).map(drop)
    }

    fn metadata(&self, key: &str) -> Result<Option<String>, RbdError> {
        let target = || format!("{} key {key}", self.spec);
        let c_key = c_string("metadata get", &target(), key)?;
        let read = read_string(
            |buf, len| {
                // SAFETY: open image, C string key, `buf` has `*len` bytes;
                // librbd writes the size it needs to `len` on -ERANGE.
                unsafe { ffi::rbd_metadata_get(self.handle, c_key.as_ptr(), buf, len) }
            },
            "metadata get",
            target,
        );
        match read {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.kind == RbdErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn id(&self) -> Result<String, RbdError> {
        read_string(
            |buf, len| {
                // SAFETY: open image; `buf` has `*len` bytes. librbd answers
                // -ERANGE when they are too few (the caller then doubles).
                unsafe { ffi::rbd_get_id(self.handle, buf, *len) }
            },
            "get id",
            || self.spec.to_string(),
        )
    }

    fn watchers(&self) -> Result<Vec<String>, RbdError> {
        self.watcher_addrs()
    }

    fn children(&self, snap: &str) -> Result<Vec<String>, RbdError> {
        let at = RbdImage::open_at_snapshot(Arc::clone(&self.pool), self.spec.clone(), snap)?;
        Ok(at
            .children_here()?
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    fn size(&self) -> Result<u64, RbdError> {
        let mut size = 0u64;
        // SAFETY: open image, `size` valid for writes.
        let rc = unsafe { ffi::rbd_get_size(self.handle, &mut size) };
        RbdError::check("size", rc, || self.spec.to_string())?;
        Ok(size)
    }
}

/// librbd calls a progress function unconditionally: one that ignores it.
unsafe extern "C" fn no_progress(
    _done: u64,
    _total: u64,
    _arg: *mut std::os::raw::c_void,
) -> c_int {
    0
}
