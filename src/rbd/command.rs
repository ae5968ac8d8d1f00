//! Commands to the monitors and the manager: JSON in, the answer's JSON (or
//! Ceph's status text on failure) out. Fencing, the monitor ping and the
//! manager's flatten tasks all go this way, through librados, so the daemon
//! needs no `ceph` CLI.

use std::ffi::CString;
use std::os::raw::c_char;
use std::ptr;
use std::slice;

use ceph::rados;

use super::cluster::Cluster;
use super::ffi;
use super::{RbdError, RbdErrorKind};

/// Who answers a command.
#[derive(Debug, Clone, Copy)]
pub(super) enum Daemon {
    /// A monitor.
    Mon,
    /// The active manager (its modules: `rbd task …` is rbd_support's).
    Mgr,
}

/// `rados_mon_command` and `rados_mgr_command` take the same arguments.
type SendCommand = unsafe extern "C" fn(
    ffi::rados_t,
    *mut *const c_char,
    usize,
    *const c_char,
    usize,
    *mut *mut c_char,
    *mut usize,
    *mut *mut c_char,
    *mut usize,
) -> std::os::raw::c_int;

/// Output buffers librados allocates for one command, freed on drop.
struct Answer {
    outbuf: *mut c_char,
    outlen: usize,
    outs: *mut c_char,
    outslen: usize,
}

impl Answer {
    fn bytes(ptr: *const c_char, len: usize) -> Vec<u8> {
        if ptr.is_null() || len == 0 {
            return Vec::new();
        }
        // SAFETY: librados set `ptr` to a buffer of `len` bytes, alive until
        // `Answer` is dropped.
        unsafe { slice::from_raw_parts(ptr.cast::<u8>(), len) }.to_vec()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        for buf in [self.outbuf, self.outs] {
            if !buf.is_null() {
                // SAFETY: allocated by librados for this command, freed once.
                unsafe { rados::rados_buffer_free(buf) };
            }
        }
    }
}

impl Cluster {
    /// Send `cmd` (a JSON object with a `prefix`) and return the output
    /// buffer. On failure the error carries Ceph's status line, which says
    /// more than the errno ("No such task …", "unrecognized command").
    pub(super) fn command(
        &self,
        to: Daemon,
        op: &'static str,
        target: &str,
        cmd: &serde_json::Value,
    ) -> Result<Vec<u8>, RbdError> {
        let cmd = CString::new(cmd.to_string()).map_err(|_| RbdError::bad_name(op, target))?;
        let mut cmds = [cmd.as_ptr()];
        let mut answer = Answer {
            outbuf: ptr::null_mut(),
            outlen: 0,
            outs: ptr::null_mut(),
            outslen: 0,
        };
        let send: SendCommand = match to {
            Daemon::Mon => rados::rados_mon_command,
            Daemon::Mgr => ffi::rados_mgr_command,
        };
        // SAFETY: one valid command string that outlives the call, no input
        // buffer; librados allocates the output buffers `answer` frees.
        let rc = unsafe {
            send(
                self.raw(),
                cmds.as_mut_ptr(),
                1,
                ptr::null(),
                0,
                &mut answer.outbuf,
                &mut answer.outlen,
                &mut answer.outs,
                &mut answer.outslen,
            )
        };
        if let Err(mut e) = RbdError::check(op, rc, || target.to_string()) {
            let status = Answer::bytes(answer.outs, answer.outslen);
            let status = String::from_utf8_lossy(&status).trim().to_string();
            if !status.is_empty() {
                e.message = format!("{} ({status})", e.message);
            }
            return Err(e);
        }
        Ok(Answer::bytes(answer.outbuf, answer.outlen))
    }

    /// Every address of every monitor in the monitor map (`mon dump`).
    pub(super) fn monitor_map_addrs(&self) -> Result<Vec<super::monitors::Endpoint>, RbdError> {
        let cmd = serde_json::json!({"prefix": "mon dump", "format": "json"});
        let out = self.command(Daemon::Mon, "mon dump", "cluster", &cmd)?;
        let map: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
            RbdError::new("mon dump", "cluster", RbdErrorKind::Other, e.to_string())
        })?;
        let addrs = map["mons"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|mon| {
                mon["public_addrs"]["addrvec"]
                    .as_array()
                    .into_iter()
                    .flatten()
            })
            .filter_map(|a| a["addr"].as_str())
            .filter_map(super::monitors::Endpoint::parse)
            .collect();
        Ok(addrs)
    }
}
