//! The project's own declarations of the librbd and librados C APIs,
//! limited to what the image store calls.
//!
//! No maintained librbd crate exists, so these are written by hand from
//! `<rbd/librbd.h>` of Ceph Pacific (16.2). `tests/ffi_header.rs` compiles
//! every declaration, type alias, struct layout and constant here against the
//! installed headers, so a mismatch fails the tests instead of corrupting
//! memory at run time: keep to the simple shapes that test parses (one item
//! per `;`, Rust primitive or `std::os::raw` types, pointers, aliases below).
//!
//! Everything here is raw: the safe wrappers are the sibling modules.

#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_void};

/// A librados cluster handle.
pub type rados_t = *mut c_void;
/// A librados I/O context (one pool and namespace).
pub type rados_ioctx_t = *mut c_void;
/// An open image.
pub type rbd_image_t = *mut c_void;
/// A set of image options (for `rbd_clone3`).
pub type rbd_image_options_t = *mut c_void;
/// Progress of a long operation: (offset, total, arg). librbd stops the
/// operation when it returns a negative value and fails with that value.
pub type librbd_progress_fn_t = Option<unsafe extern "C" fn(u64, u64, *mut c_void) -> c_int>;
/// A C enum (user, group, trash, mirror); `int`-sized.
pub type rbd_snap_namespace_type_t = u32;

/// `RBD_SNAP_NAMESPACE_TYPE_USER`: ordinary snapshots.
pub const RBD_SNAP_NAMESPACE_TYPE_USER: rbd_snap_namespace_type_t = 0;
/// `RBD_SNAP_NAMESPACE_TYPE_TRASH`: a clone v2 parent snapshot removed while
/// clones still depend on it.
pub const RBD_SNAP_NAMESPACE_TYPE_TRASH: rbd_snap_namespace_type_t = 2;

/// `rbd_snap_remove2` flag: unprotect first.
pub const RBD_SNAP_REMOVE_UNPROTECT: u32 = 1;
/// `rbd_snap_remove2` flag: flatten the children first.
pub const RBD_SNAP_REMOVE_FLATTEN: u32 = 2;
/// `rbd_snap_remove2` flags: unprotect and flatten the children.
pub const RBD_SNAP_REMOVE_FORCE: u32 = 3;

/// `rbd_snap_create2` flag: do not ask the image's watchers (QEMU) to
/// quiesce. Beware: librbd 16.2 then reports success even when the snapshot
/// was not made (seen with the snapshot limit reached).
pub const RBD_SNAP_CREATE_SKIP_QUIESCE: u32 = 1;

/// Image option: feature bits of the new image.
pub const RBD_IMAGE_OPTION_FEATURES: c_int = 1;
/// Image option: clone format, 1 or 2.
pub const RBD_IMAGE_OPTION_CLONE_FORMAT: c_int = 12;

/// Feature bits (`<rbd/features.h>`).
pub const RBD_FEATURE_LAYERING: u64 = 1;
/// Needed by object-map.
pub const RBD_FEATURE_EXCLUSIVE_LOCK: u64 = 4;
/// Needs exclusive-lock; speeds up flatten and diff.
pub const RBD_FEATURE_OBJECT_MAP: u64 = 8;
/// Needs object-map.
pub const RBD_FEATURE_FAST_DIFF: u64 = 16;
/// Lets flatten detach the clone's own snapshots from the parent too.
pub const RBD_FEATURE_DEEP_FLATTEN: u64 = 32;

/// Where a clone's parent is (filled by `rbd_get_parent`, freed by
/// `rbd_linked_image_spec_cleanup`).
#[repr(C)]
#[derive(Debug)]
pub struct rbd_linked_image_spec_t {
    pub pool_id: i64,
    pub pool_name: *mut c_char,
    pub pool_namespace: *mut c_char,
    pub image_id: *mut c_char,
    pub image_name: *mut c_char,
    pub trash: bool,
}

/// The parent snapshot (filled by `rbd_get_parent`, freed by
/// `rbd_snap_spec_cleanup`).
#[repr(C)]
#[derive(Debug)]
pub struct rbd_snap_spec_t {
    pub id: u64,
    pub namespace_type: rbd_snap_namespace_type_t,
    pub name: *mut c_char,
}

/// One entry of `rbd_snap_list` (names freed by `rbd_snap_list_end`).
#[repr(C)]
#[derive(Debug)]
pub struct rbd_snap_info_t {
    pub id: u64,
    pub size: u64,
    pub name: *const c_char,
}

/// One client with the image open (`rbd_watchers_list`; addresses freed by
/// `rbd_watchers_list_cleanup`).
#[repr(C)]
#[derive(Debug)]
pub struct rbd_image_watcher_t {
    pub addr: *mut c_char,
    pub id: i64,
    pub cookie: u64,
}

#[link(name = "rbd")]
extern "C" {
    pub fn rbd_version(major: *mut c_int, minor: *mut c_int, extra: *mut c_int);

    pub fn rbd_open(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_open_read_only(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_open_by_id(
        io: rados_ioctx_t,
        id: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_open_by_id_read_only(
        io: rados_ioctx_t,
        id: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_close(image: rbd_image_t) -> c_int;
    pub fn rbd_get_size(image: rbd_image_t, size: *mut u64) -> c_int;
    pub fn rbd_remove(io: rados_ioctx_t, name: *const c_char) -> c_int;

    pub fn rbd_snap_create2(
        image: rbd_image_t,
        snap_name: *const c_char,
        flags: u32,
        cb: librbd_progress_fn_t,
        cbdata: *mut c_void,
    ) -> c_int;
    pub fn rbd_snap_remove2(
        image: rbd_image_t,
        snap_name: *const c_char,
        flags: u32,
        cb: librbd_progress_fn_t,
        cbdata: *mut c_void,
    ) -> c_int;
    pub fn rbd_snap_protect(image: rbd_image_t, snap_name: *const c_char) -> c_int;
    pub fn rbd_snap_unprotect(image: rbd_image_t, snap_name: *const c_char) -> c_int;
    pub fn rbd_snap_is_protected(
        image: rbd_image_t,
        snap_name: *const c_char,
        is_protected: *mut c_int,
    ) -> c_int;
    pub fn rbd_snap_exists(image: rbd_image_t, snapname: *const c_char, exists: *mut bool)
        -> c_int;
    pub fn rbd_snap_list(
        image: rbd_image_t,
        snaps: *mut rbd_snap_info_t,
        max_snaps: *mut c_int,
    ) -> c_int;
    pub fn rbd_snap_list_end(snaps: *mut rbd_snap_info_t);
    pub fn rbd_snap_get_limit(image: rbd_image_t, limit: *mut u64) -> c_int;
    pub fn rbd_snap_get_namespace_type(
        image: rbd_image_t,
        snap_id: u64,
        namespace_type: *mut rbd_snap_namespace_type_t,
    ) -> c_int;
    pub fn rbd_snap_get_trash_namespace(
        image: rbd_image_t,
        snap_id: u64,
        original_name: *mut c_char,
        max_length: usize,
    ) -> c_int;

    pub fn rbd_image_options_create(opts: *mut rbd_image_options_t);
    pub fn rbd_image_options_destroy(opts: rbd_image_options_t);
    pub fn rbd_image_options_set_uint64(
        opts: rbd_image_options_t,
        optname: c_int,
        optval: u64,
    ) -> c_int;
    pub fn rbd_clone3(
        p_ioctx: rados_ioctx_t,
        p_name: *const c_char,
        p_snapname: *const c_char,
        c_ioctx: rados_ioctx_t,
        c_name: *const c_char,
        c_opts: rbd_image_options_t,
    ) -> c_int;
    pub fn rbd_flatten_with_progress(
        image: rbd_image_t,
        cb: librbd_progress_fn_t,
        cbdata: *mut c_void,
    ) -> c_int;
    pub fn rbd_rebuild_object_map(
        image: rbd_image_t,
        cb: librbd_progress_fn_t,
        cbdata: *mut c_void,
    ) -> c_int;

    pub fn rbd_get_parent(
        image: rbd_image_t,
        parent_image: *mut rbd_linked_image_spec_t,
        parent_snap: *mut rbd_snap_spec_t,
    ) -> c_int;
    pub fn rbd_linked_image_spec_cleanup(image: *mut rbd_linked_image_spec_t);
    pub fn rbd_snap_spec_cleanup(snap: *mut rbd_snap_spec_t);

    pub fn rbd_metadata_get(
        image: rbd_image_t,
        key: *const c_char,
        value: *mut c_char,
        val_len: *mut usize,
    ) -> c_int;
    pub fn rbd_metadata_set(image: rbd_image_t, key: *const c_char, value: *const c_char) -> c_int;

    pub fn rbd_get_id(image: rbd_image_t, id: *mut c_char, id_len: usize) -> c_int;
    pub fn rbd_list_children3(
        image: rbd_image_t,
        images: *mut rbd_linked_image_spec_t,
        max_images: *mut usize,
    ) -> c_int;
    pub fn rbd_linked_image_spec_list_cleanup(
        images: *mut rbd_linked_image_spec_t,
        num_images: usize,
    );
    pub fn rbd_watchers_list(
        image: rbd_image_t,
        watchers: *mut rbd_image_watcher_t,
        max_watchers: *mut usize,
    ) -> c_int;
    pub fn rbd_watchers_list_cleanup(watchers: *mut rbd_image_watcher_t, num_watchers: usize);
}

// librados comes through the `ceph` crate's bindings (`ceph::rados`); the
// calls the store needs that the crate (3.2.5) does not declare:
#[link(name = "rados")]
extern "C" {
    pub fn rados_getaddrs(cluster: rados_t, addrs: *mut *mut c_char) -> c_int;
    pub fn rados_get_min_compatible_client(
        cluster: rados_t,
        min_compat_client: *mut i8,
        require_min_compat_client: *mut i8,
    ) -> c_int;
    pub fn rados_mgr_command(
        cluster: rados_t,
        cmd: *mut *const c_char,
        cmdlen: usize,
        inbuf: *const c_char,
        inbuflen: usize,
        outbuf: *mut *mut c_char,
        outbuflen: *mut usize,
        outs: *mut *mut c_char,
        outslen: *mut usize,
    ) -> c_int;
}
