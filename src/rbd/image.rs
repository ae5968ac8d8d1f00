//! [`RbdImage`]: one open librbd image handle behind the [`Image`] trait.
//!
//! librbd reports buffers too small with -ERANGE (sometimes telling the size
//! it needs), so list and string reads retry with a bigger buffer.

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::{c_char, c_int};
use std::ptr;
use std::sync::Arc;

use nix::errno::Errno;

use super::cluster::Pool;
use super::ffi;
use super::flatten;
use super::{FlattenProgress, Image, ImageSpec, ParentSpec, RbdError, RbdErrorKind};

/// Buffers never grow past this: a bigger answer means something is wrong.
const MAX_BUFFER: usize = 1 << 20;

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
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful open and is closed only
        // here, once; `&mut self` means no call on it is in flight.
        let rc = unsafe { ffi::rbd_close(self.handle) };
        if rc < 0 {
            tracing::warn!(image = %self.spec, errno = -rc, "closing the image failed");
        }
    }
}

/// A Rust string as a C string, or an `Invalid` error naming the target.
pub(super) fn c_string(
    op: &'static str,
    target: &dyn fmt::Display,
    s: &str,
) -> Result<CString, RbdError> {
    CString::new(s).map_err(|_| RbdError::bad_name(op, target.to_string()))
}

/// Copy a C string that librbd owns; `None` for a null pointer.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string alive for the call.
unsafe fn owned(p: *const c_char) -> Option<String> {
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Read a string through a call that fills `buf` of `len` bytes and answers
/// -ERANGE when it is too small (raising `len` to what it needs, or not:
/// then the buffer doubles).
fn read_string(
    mut call: impl FnMut(*mut c_char, &mut usize) -> c_int,
    op: &'static str,
    target: impl Fn() -> String,
) -> Result<String, RbdError> {
    let mut size = 256;
    loop {
        let mut buf = vec![0u8; size];
        let mut len = size;
        let rc = call(buf.as_mut_ptr().cast(), &mut len);
        if rc == -(Errno::ERANGE as c_int) && size < MAX_BUFFER {
            size = len.max(size * 2).min(MAX_BUFFER);
            continue;
        }
        RbdError::check(op, rc, &target)?;
        let text = CStr::from_bytes_until_nul(&buf).map_err(|_| {
            RbdError::new(
                op,
                target(),
                RbdErrorKind::Other,
                "librbd returned an unterminated string",
            )
        })?;
        return Ok(text.to_string_lossy().into_owned());
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

    /// Open read-only by image id (how librbd names a parent, which may be
    /// in the trash where its name no longer finds it).
    fn open_by_id(pool: Arc<Pool>, spec: ImageSpec, id: &str) -> Result<RbdImage, RbdError> {
        let c_id = c_string("open", &spec, id)?;
        Self::open_with(pool, spec, |io, out| {
            // SAFETY: as in `open`.
            unsafe { ffi::rbd_open_by_id_read_only(io, c_id.as_ptr(), out, ptr::null()) }
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
        Ok(RbdImage {
            handle,
            spec,
            pool: pool,
        })
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

    /// The original name of a parent snapshot now in the trash namespace.
    fn trash_snap_name(
        &self,
        parent: &ImageSpec,
        pool_id: i64,
        image_id: &str,
        snap_id: u64,
    ) -> Result<String, RbdError> {
        let ns = parent.namespace.as_deref().unwrap_or_default();
        let pool = Arc::new(self.pool.by_id(pool_id, ns)?);
        let image = RbdImage::open_by_id(pool, parent.clone(), image_id)?;
        let target = || format!("{parent} snap id {snap_id}");
        read_string(
            |buf, len| {
                // SAFETY: the parent image is open; `buf` has `len` bytes.
                unsafe { ffi::rbd_snap_get_trash_namespace(image.handle, snap_id, buf, *len) }
            },
            "parent",
            target,
        )
    }
}

/// What `rbd_get_parent` filled in, copied out before it is freed.
struct RawParent {
    pool_id: i64,
    image: ImageSpec,
    image_id: String,
    snap_id: u64,
    snap: String,
    in_trash: bool,
}

impl RbdImage {
    fn raw_parent(&self) -> Result<Option<RawParent>, RbdError> {
        let mut image = ffi::rbd_linked_image_spec_t {
            pool_id: 0,
            pool_name: ptr::null_mut(),
            pool_namespace: ptr::null_mut(),
            image_id: ptr::null_mut(),
            image_name: ptr::null_mut(),
            trash: false,
        };
        let mut snap = ffi::rbd_snap_spec_t {
            id: 0,
            namespace_type: 0,
            name: ptr::null_mut(),
        };
        // SAFETY: the image is open; both structs are valid for writes.
        let rc = unsafe { ffi::rbd_get_parent(self.handle, &mut image, &mut snap) };
        if rc == -(Errno::ENOENT as c_int) {
            return Ok(None);
        }
        RbdError::check("parent", rc, || self.spec.to_string())?;
        // SAFETY: on success librbd filled both structs with NUL-terminated
        // strings it allocated; they are copied here and freed just below,
        // once each.
        let raw = unsafe {
            let raw = RawParent {
                pool_id: image.pool_id,
                image: ImageSpec {
                    pool: owned(image.pool_name).unwrap_or_default(),
                    namespace: owned(image.pool_namespace).filter(|ns| !ns.is_empty()),
                    name: owned(image.image_name).unwrap_or_default(),
                },
                image_id: owned(image.image_id).unwrap_or_default(),
                snap_id: snap.id,
                snap: owned(snap.name).unwrap_or_default(),
                in_trash: snap.namespace_type == ffi::RBD_SNAP_NAMESPACE_TYPE_TRASH,
            };
            ffi::rbd_linked_image_spec_cleanup(&mut image);
            ffi::rbd_snap_spec_cleanup(&mut snap);
            raw
        };
        Ok(Some(raw))
    }
}

impl Image for RbdImage {
    fn spec(&self) -> &ImageSpec {
        &self.spec
    }

    fn snapshots(&self) -> Result<Vec<String>, RbdError> {
        let mut max: c_int = 16;
        loop {
            let empty = || ffi::rbd_snap_info_t {
                id: 0,
                size: 0,
                name: ptr::null(),
            };
            let mut infos: Vec<_> = (0..max.max(1)).map(|_| empty()).collect();
            let asked = max;
            // SAFETY: `infos` holds `max` writable entries, as librbd
            // requires (it zeroes that many before filling them).
            let rc = unsafe { ffi::rbd_snap_list(self.handle, infos.as_mut_ptr(), &mut max) };
            if rc == -(Errno::ERANGE as c_int) {
                // librbd raised `max` to what it needs (n + 1 for its end
                // marker); the list may also have grown meanwhile.
                max = max.max(asked.saturating_mul(2));
                continue;
            }
            let n = RbdError::check("snap list", rc, || self.spec.to_string())?;
            let mut snaps: Vec<(u64, String)> = infos[..n as usize]
                .iter()
                // SAFETY: librbd filled the first `n` entries with names it
                // allocated; they live until `rbd_snap_list_end` below.
                .map(|info| (info.id, unsafe { owned(info.name) }.unwrap_or_default()))
                .collect();
            // SAFETY: frees exactly the names `rbd_snap_list` allocated, once.
            unsafe { ffi::rbd_snap_list_end(infos.as_mut_ptr()) };
            // Snapshot ids only grow, so id order is creation order.
            snaps.sort_by_key(|(id, _)| *id);
            return Ok(snaps.into_iter().map(|(_, name)| name).collect());
        }
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
        // watchers (QEMU) to quiesce too would only add a round trip to the
        // freeze window.
        let flags = ffi::RBD_SNAP_CREATE_SKIP_QUIESCE;
        self.on_snap("snap create", snap, |img, name| {
            // SAFETY: open image, C string name, no progress callback.
            unsafe { ffi::rbd_snap_create2(img, name, flags, None, ptr::null_mut()) }
        })
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
        let Some(raw) = self.raw_parent()? else {
            return Ok(None);
        };
        let snap = if raw.in_trash {
            self.trash_snap_name(&raw.image, raw.pool_id, &raw.image_id, raw.snap_id)?
        } else {
            raw.snap
        };
        Ok(Some(ParentSpec {
            image: raw.image,
            snap,
        }))
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

    fn size(&self) -> Result<u64, RbdError> {
        let mut size = 0u64;
        // SAFETY: open image, `size` valid for writes.
        let rc = unsafe { ffi::rbd_get_size(self.handle, &mut size) };
        RbdError::check("size", rc, || self.spec.to_string())?;
        Ok(size)
    }
}
