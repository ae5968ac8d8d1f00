//! The read side of an open image that needs more than one librbd call:
//! snapshot listings (with the namespace of each snapshot), the parent (with
//! the original name of a parent snapshot in the trash).
//!
//! librbd reports buffers too small with -ERANGE, sometimes telling the size
//! it needs, so list reads retry with a bigger buffer.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
use std::ptr;
use std::sync::Arc;

use nix::errno::Errno;

use super::ffi;
use super::image::RbdImage;
use super::strings::read_string;
use super::{Image, ImageSpec, ParentSpec, RbdError, RbdErrorKind};

const ERANGE: c_int = -(Errno::ERANGE as c_int);
const ENOENT: c_int = -(Errno::ENOENT as c_int);

/// Copy a C string that librbd owns; empty for a null pointer.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string alive for the call.
unsafe fn owned(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
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
    /// Every snapshot of every namespace (user, trash, ...), as (id, name),
    /// oldest first.
    pub(super) fn all_snapshots(&self) -> Result<Vec<(u64, String)>, RbdError> {
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
            let rc = unsafe { ffi::rbd_snap_list(self.handle(), infos.as_mut_ptr(), &mut max) };
            if rc == ERANGE {
                // librbd raised `max` to what it needs (n + 1 for its end
                // marker); the list may also have grown meanwhile.
                max = max.max(asked.saturating_mul(2));
                continue;
            }
            let n = RbdError::check("snap list", rc, || self.spec().to_string())?;
            let mut snaps: Vec<(u64, String)> = infos[..n as usize]
                .iter()
                // SAFETY: librbd filled the first `n` entries with names it
                // allocated; they live until `rbd_snap_list_end` below.
                .map(|info| (info.id, unsafe { owned(info.name) }))
                .collect();
            // SAFETY: frees exactly the names `rbd_snap_list` allocated, once.
            unsafe { ffi::rbd_snap_list_end(infos.as_mut_ptr()) };
            // Snapshot ids only grow, so id order is creation order.
            snaps.sort_by_key(|(id, _)| *id);
            return Ok(snaps);
        }
    }

    /// The addresses of the image's watchers (clients with it open
    /// read-write).
    pub(super) fn watcher_addrs(&self) -> Result<Vec<String>, RbdError> {
        let mut max: usize = 8;
        loop {
            let empty = || ffi::rbd_image_watcher_t {
                addr: ptr::null_mut(),
                id: 0,
                cookie: 0,
            };
            let mut list: Vec<_> = (0..max).map(|_| empty()).collect();
            let asked = max;
            // SAFETY: `list` holds `max` writable entries; librbd fills at
            // most that many and sets `max` to the count (or, with -ERANGE,
            // to what it needs).
            let rc = unsafe { ffi::rbd_watchers_list(self.handle(), list.as_mut_ptr(), &mut max) };
            if rc == ERANGE && asked < 4096 {
                max = max.max(asked * 2);
                continue;
            }
            RbdError::check("watchers", rc, || self.spec().to_string())?;
            let n = max.min(asked);
            // SAFETY: librbd filled the first `n` entries with addresses it
            // allocated; they live until the cleanup below.
            let addrs = list[..n].iter().map(|w| unsafe { owned(w.addr) }).collect();
            // SAFETY: frees exactly the `n` entries librbd filled, once.
            unsafe { ffi::rbd_watchers_list_cleanup(list.as_mut_ptr(), n) };
            return Ok(addrs);
        }
    }

    /// The clones of the snapshot this handle is open at — on a handle of
    /// the head, of every snapshot (the trashed ones too) — those moved to
    /// the RBD trash included.
    pub(super) fn children_here(&self) -> Result<Vec<super::Linked>, RbdError> {
        let mut max: usize = 8;
        loop {
            let empty = || ffi::rbd_linked_image_spec_t {
                pool_id: 0,
                pool_name: ptr::null_mut(),
                pool_namespace: ptr::null_mut(),
                image_id: ptr::null_mut(),
                image_name: ptr::null_mut(),
                trash: false,
            };
            let mut list: Vec<_> = (0..max).map(|_| empty()).collect();
            let asked = max;
            // SAFETY: `list` has `max` writable entries; librbd fills at most
            // that many and sets `max` to the count (or, with -ERANGE, to
            // what it needs).
            let rc = unsafe { ffi::rbd_list_children3(self.handle(), list.as_mut_ptr(), &mut max) };
            if rc == ERANGE && asked < 65536 {
                max = max.max(asked * 2);
                continue;
            }
            RbdError::check("list children", rc, || self.spec().to_string())?;
            let n = max.min(asked);
            let linked = list[..n]
                .iter()
                .map(|c| {
                    // SAFETY: librbd filled the first `n` entries with
                    // strings it allocated; freed by the cleanup below.
                    let (pool, ns, name, id) = unsafe {
                        (
                            owned(c.pool_name),
                            owned(c.pool_namespace),
                            owned(c.image_name),
                            owned(c.image_id),
                        )
                    };
                    super::Linked {
                        spec: ImageSpec {
                            pool,
                            namespace: (!ns.is_empty()).then_some(ns),
                            name,
                        },
                        id,
                        trash: c.trash,
                    }
                })
                .collect();
            // SAFETY: frees exactly the `n` entries librbd filled, once.
            unsafe { ffi::rbd_linked_image_spec_list_cleanup(list.as_mut_ptr(), n) };
            return Ok(linked);
        }
    }

    /// Whether a listed snapshot is a user one (not in the trash, a group or
    /// mirroring namespace); a snapshot gone since the listing is not.
    pub(super) fn is_user_snapshot(&self, snap_id: u64) -> Result<bool, RbdError> {
        let mut ns: ffi::rbd_snap_namespace_type_t = 0;
        // SAFETY: open image; `ns` is valid for writes.
        let rc = unsafe { ffi::rbd_snap_get_namespace_type(self.handle(), snap_id, &mut ns) };
        if rc == ENOENT {
            return Ok(false);
        }
        RbdError::check("snap list", rc, || {
            format!("{} snap id {snap_id}", self.spec())
        })?;
        Ok(ns == ffi::RBD_SNAP_NAMESPACE_TYPE_USER)
    }

    /// The parent with the name its snapshot had, also when that snapshot
    /// was removed and lives on in the trash for this clone's sake.
    pub(super) fn parent_spec(&self) -> Result<Option<ParentSpec>, RbdError> {
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
        let rc = unsafe { ffi::rbd_get_parent(self.handle(), &mut image, &mut snap) };
        if rc == ENOENT {
            return Ok(None);
        }
        RbdError::check("parent", rc, || self.spec().to_string())?;
        // SAFETY: on success librbd filled both structs with NUL-terminated
        // strings it allocated; they are copied here and freed just below,
        // once each.
        let raw = unsafe {
            let namespace = owned(image.pool_namespace);
            let raw = RawParent {
                pool_id: image.pool_id,
                image: ImageSpec {
                    pool: owned(image.pool_name),
                    namespace: (!namespace.is_empty()).then_some(namespace),
                    name: owned(image.image_name),
                },
                image_id: owned(image.image_id),
                snap_id: snap.id,
                snap: owned(snap.name),
                in_trash: snap.namespace_type == ffi::RBD_SNAP_NAMESPACE_TYPE_TRASH,
            };
            ffi::rbd_linked_image_spec_cleanup(&mut image);
            ffi::rbd_snap_spec_cleanup(&mut snap);
            raw
        };
        Ok(Some(raw))
    }

    /// The original name of a parent snapshot now in the trash namespace
    /// (librbd gives the trash entry's generated name).
    fn trash_snap_name(
        &self,
        parent: &ImageSpec,
        pool_id: i64,
        image_id: &str,
        snap_id: u64,
    ) -> Result<String, RbdError> {
        let ns = parent.namespace.as_deref().unwrap_or_default();
        let pool = Arc::new(self.pool().by_id(pool_id, ns)?);
        let image = RbdImage::open_by_id(pool, parent.clone(), image_id)?;
        read_string(
            |buf, len| {
                // SAFETY: the parent image is open; `buf` has `len` bytes.
                unsafe { ffi::rbd_snap_get_trash_namespace(image.handle(), snap_id, buf, *len) }
            },
            "parent",
            || format!("{parent} snap id {snap_id}"),
        )
    }

    /// Why a snapshot librbd said it made does not exist: librbd 16.2
    /// answers success with `RBD_SNAP_CREATE_SKIP_QUIESCE` even when the
    /// snapshot limit stopped it, so that is the first suspect.
    pub(super) fn missing_snapshot(&self, snap: &str) -> RbdError {
        let target = format!("{}@{snap}", self.spec());
        let limit = self.snapshot_limit().ok().flatten();
        let count = self.all_snapshots().map(|s| s.len() as u64).ok();
        match (limit, count) {
            (Some(limit), Some(count)) if count >= limit => {
                RbdError::from_code("snap create", target, -(Errno::EDQUOT as c_int))
            }
            _ => RbdError::new(
                "snap create",
                target,
                RbdErrorKind::Other,
                "librbd reported success but the snapshot does not exist",
            ),
        }
    }
}
