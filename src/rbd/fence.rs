//! Fencing a dead incarnation of the daemon: its librados client address is
//! journalled with every job, and on recovery that address is added to the
//! OSD blocklist. The OSDs then drop the dead client's watches at once —
//! without it, every snapshot or removal on an image the dead daemon had
//! open waits out a notify timeout until the watch expires (~30 s) — and a
//! not-quite-dead process could no longer touch the images.

use std::ffi::CStr;
use std::os::raw::c_char;
use std::ptr;

use ceph::rados;

use super::cluster::Cluster;
use super::command::Daemon;
use super::ffi;
use super::RbdError;

/// Blocklist entries expire after this long: the dead client is long gone.
const EXPIRE_SECS: f64 = 3600.0;

impl Cluster {
    /// This client's address as the OSDs see it (`ip:port/nonce`).
    pub(super) fn client_addr(&self) -> Result<String, RbdError> {
        let mut addrs: *mut c_char = ptr::null_mut();
        // SAFETY: the handle is connected; librados sets `addrs` to a
        // NUL-terminated string it allocated with malloc.
        let rc = unsafe { ffi::rados_getaddrs(self.raw(), &mut addrs) };
        RbdError::check("client address", rc, || "cluster".into())?;
        // SAFETY: non-NULL on success, NUL-terminated, ours to free once.
        let text = unsafe { CStr::from_ptr(addrs) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: allocated by librados with malloc and not used after this.
        unsafe { nix::libc::free(addrs.cast()) };
        Ok(text)
    }

    /// Add `addr` to the OSD blocklist and wait until this client has the
    /// new OSD map (so the OSDs it talks to have dropped the old watches).
    pub(super) fn blocklist(&self, addr: &str) -> Result<(), RbdError> {
        let cmd = serde_json::json!({"prefix": "osd blocklist", "blocklistop": "add", "addr": addr, "expire": EXPIRE_SECS});
        self.mon_command("osd blocklist add", addr, &cmd)?;
        // SAFETY: the handle is connected; the call takes no pointers.
        let rc = unsafe { rados::rados_wait_for_latest_osdmap(self.raw()) };
        RbdError::check("wait for osdmap", rc, || "cluster".into()).map(|_| ())
    }

    /// One round trip to a monitor: a snapshot needs one (for its id), so
    /// a dead quorum is found here, before any guest is frozen.
    pub(super) fn ping_mon(&self) -> Result<(), RbdError> {
        self.mon_command(
            "mon ping",
            "cluster",
            &serde_json::json!({"prefix": "version"}),
        )
    }

    fn mon_command(
        &self,
        op: &'static str,
        target: &str,
        cmd: &serde_json::Value,
    ) -> Result<(), RbdError> {
        self.command(Daemon::Mon, op, target, cmd).map(drop)
    }
}
