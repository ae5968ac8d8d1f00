//! [`LibvirtHypervisor`]: the [`Hypervisor`] trait over libvirt's C API.
//!
//! One connection, re-opened when libvirtd went away (it restarts; the daemon
//! must not). FSFreeze, FSThaw, GetFSInfo and AgentSetResponseTimeout are not
//! wrapped by the `virt` crate: they are called through `virt::sys` here.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_uint};
use std::sync::{Arc, Mutex};

use virt::connect::Connect;
use virt::domain::{
    Domain, DomainShutoffReason as ShutoffReason, DomainState as VirtState,
    DomainStateReason as StateReason,
};
use virt::enumutil::Enum;

use super::{xml, DomainInfo, DomainState, FreezeStatus, FsInfo, Hypervisor, Migration, Presence};
use super::{LibvirtError, LibvirtErrorKind};

/// The real hypervisor: a libvirt connection to `uri`.
#[derive(Debug)]
pub struct LibvirtHypervisor {
    /// e.g. `qemu:///system`, or `test:///path` for the test driver.
    uri: String,
    /// The open connection; `None` after it was found dead.
    conn: Mutex<Option<Arc<Connect>>>,
    /// Seconds the raw agent commands (`guest-fsfreeze-status`) may take.
    agent_command_timeout: i32,
}

impl LibvirtHypervisor {
    /// Open the connection now, so that a wrong URI fails at start.
    pub fn connect(uri: &str, agent_command_timeout: i32) -> Result<Self, LibvirtError> {
        // libvirt prints every error to stderr unless told otherwise
        virt::error::clear_error_callback();
        let hv = LibvirtHypervisor {
            uri: uri.to_string(),
            conn: Mutex::new(None),
            agent_command_timeout,
        };
        hv.connection()?;
        Ok(hv)
    }

    /// The URI this hypervisor talks to.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The live connection, re-opened if libvirtd dropped it.
    fn connection(&self) -> Result<Arc<Connect>, LibvirtError> {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conn) = slot.as_ref() {
            if conn.is_alive().unwrap_or(false) {
                return Ok(Arc::clone(conn));
            }
        }
        *slot = None;
        let conn = Connect::open(Some(&self.uri))
            .map_err(|e| LibvirtError::from_virt("connect", &self.uri, &e))?;
        let conn = Arc::new(conn);
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    fn lookup(&self, name_or_uuid: &str) -> Result<Domain, LibvirtError> {
        let conn = self.connection()?;
        let found = if looks_like_uuid(name_or_uuid) {
            conn.lookup_domain_by_uuid_string(name_or_uuid)
        } else {
            conn.lookup_domain_by_name(name_or_uuid)
        };
        found.map_err(|e| {
            let mut err = LibvirtError::from_virt("lookup", name_or_uuid, &e);
            if err.kind == LibvirtErrorKind::DomainNotFound {
                err.message = format!("no domain named or with UUID {name_or_uuid:?}");
            }
            err
        })
    }
}

fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn state_of(dom: &Domain, name: &str) -> Result<DomainState, LibvirtError> {
    // state() reports Unknown(-1) rather than failing: ask is_active too
    let active = dom
        .is_active()
        .map_err(|e| LibvirtError::from_virt("state", name, &e))?;
    let (state, _) = dom
        .state()
        .map_err(|e| LibvirtError::from_virt("state", name, &e))?;
    Ok(match state {
        Enum::Known(VirtState::Running) if active => DomainState::Running,
        Enum::Known(VirtState::Paused) if active => DomainState::Paused,
        Enum::Known(VirtState::Shutoff | VirtState::Crashed) => DomainState::Shutoff,
        _ if !active => DomainState::Shutoff,
        _ => DomainState::Other,
    })
}

/// Mount points as the C array FSFreeze/FSThaw take; keeps the strings alive.
struct MountArray {
    _owned: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl MountArray {
    fn new(op: &'static str, uuid: &str, mounts: &[String]) -> Result<Self, LibvirtError> {
        let owned = mounts
            .iter()
            .map(|m| CString::new(m.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                LibvirtError::new(op, uuid, LibvirtErrorKind::Other, "NUL in a mount point")
            })?;
        let ptrs = owned.iter().map(|c| c.as_ptr()).collect();
        Ok(MountArray {
            _owned: owned,
            ptrs,
        })
    }

    fn as_mut_ptr(&mut self) -> *mut *const c_char {
        if self.ptrs.is_empty() {
            std::ptr::null_mut()
        } else {
            self.ptrs.as_mut_ptr()
        }
    }
}

type FsCall =
    unsafe extern "C" fn(virt::sys::virDomainPtr, *mut *const c_char, c_uint, c_uint) -> i32;

impl LibvirtHypervisor {
    fn freeze_or_thaw(
        &self,
        op: &'static str,
        call: FsCall,
        uuid: &str,
        mounts: &[String],
    ) -> Result<u32, LibvirtError> {
        let dom = self.lookup(uuid)?;
        let mut array = MountArray::new(op, uuid, mounts)?;
        let count = array.ptrs.len() as c_uint;
        // SAFETY: `dom` is a live domain handle for the whole call; the array
        // holds `count` valid NUL-terminated strings (or is NULL with count 0)
        // that outlive the call, and libvirt only reads them.
        let ret = unsafe { call(dom.as_ptr(), array.as_mut_ptr(), count, 0) };
        if ret < 0 {
            return Err(LibvirtError::from_virt(
                op,
                uuid,
                &virt::error::Error::last_error(),
            ));
        }
        Ok(ret as u32)
    }
}

impl Hypervisor for LibvirtHypervisor {
    fn domain(&self, name_or_uuid: &str) -> Result<DomainInfo, LibvirtError> {
        let dom = self.lookup(name_or_uuid)?;
        describe(&dom, name_or_uuid)
    }

    fn list_domains(&self) -> Result<Vec<DomainInfo>, LibvirtError> {
        let conn = self.connection()?;
        let domains = conn
            .list_all_domains(0)
            .map_err(|e| LibvirtError::from_virt("list domains", &self.uri, &e))?;
        // a domain that vanishes while we look is simply not listed
        Ok(domains
            .iter()
            .filter_map(|dom| describe(dom, &self.uri).ok())
            .collect())
    }

    fn set_agent_timeout(&self, uuid: &str, seconds: i32) -> Result<(), LibvirtError> {
        let dom = self.lookup(uuid)?;
        // SAFETY: `dom` is a live domain handle; the call takes plain integers.
        let ret = unsafe { virt::sys::virDomainAgentSetResponseTimeout(dom.as_ptr(), seconds, 0) };
        if ret < 0 {
            return Err(LibvirtError::from_virt(
                "agent timeout",
                uuid,
                &virt::error::Error::last_error(),
            ));
        }
        Ok(())
    }

    fn agent_timeout(&self, uuid: &str) -> Option<i32> {
        // only the local system driver's status files are where we know
        let local = ["qemu:///system", "qemu+unix:///system"]
            .iter()
            .any(|u| self.uri.split('?').next() == Some(*u));
        if !local {
            return None;
        }
        let name = self.lookup(uuid).ok()?.name().ok()?;
        let status = std::fs::read_to_string(format!("/run/libvirt/qemu/{name}.xml")).ok()?;
        let (_, after) = status.split_once("<agentTimeout>")?;
        let (value, _) = after.split_once("</agentTimeout>")?;
        value.trim().parse().ok()
    }

    fn fs_info(&self, uuid: &str) -> Result<Vec<FsInfo>, LibvirtError> {
        let dom = self.lookup(uuid)?;
        let mut info: *mut virt::sys::virDomainFSInfoPtr = std::ptr::null_mut();
        // SAFETY: `dom` is live; `info` is a valid out-pointer that libvirt
        // sets to an array of `ret` entries it allocated for us.
        let ret = unsafe { virt::sys::virDomainGetFSInfo(dom.as_ptr(), &mut info, 0) };
        if ret < 0 {
            return Err(LibvirtError::from_virt(
                "fsinfo",
                uuid,
                &virt::error::Error::last_error(),
            ));
        }
        let mut result = Vec::with_capacity(ret as usize);
        for i in 0..ret as usize {
            // SAFETY: i < ret, so the entry exists; each entry is ours to free
            // once read, and the array itself is freed with free() after the loop.
            unsafe {
                let entry = *info.add(i);
                result.push(read_fs_info(entry));
                virt::sys::virDomainFSInfoFree(entry);
            }
        }
        if !info.is_null() {
            // SAFETY: libvirt allocated the array with malloc and hands it over.
            unsafe { nix::libc::free(info.cast()) };
        }
        Ok(result)
    }

    fn freeze(&self, uuid: &str, mountpoints: &[String]) -> Result<u32, LibvirtError> {
        self.freeze_or_thaw("fsfreeze", virt::sys::virDomainFSFreeze, uuid, mountpoints)
    }

    fn thaw(&self, uuid: &str, mountpoints: &[String]) -> Result<u32, LibvirtError> {
        self.freeze_or_thaw("fsthaw", virt::sys::virDomainFSThaw, uuid, mountpoints)
    }

    fn suspend(&self, uuid: &str) -> Result<(), LibvirtError> {
        self.lookup(uuid)?
            .suspend()
            .map_err(|e| LibvirtError::from_virt("suspend", uuid, &e))
    }

    fn resume(&self, uuid: &str) -> Result<bool, LibvirtError> {
        let dom = self.lookup(uuid)?;
        match state_of(&dom, uuid)? {
            DomainState::Paused => dom
                .resume()
                .map(|()| true)
                .map_err(|e| LibvirtError::from_virt("resume", uuid, &e)),
            DomainState::Shutoff => Err(LibvirtError::new(
                "resume",
                uuid,
                LibvirtErrorKind::NotRunning,
                "the domain is not running".to_string(),
            )),
            _ => Ok(false),
        }
    }

    fn presence(&self, uuid: &str) -> Result<Presence, LibvirtError> {
        let dom = match self.lookup(uuid) {
            Ok(dom) => dom,
            Err(e) if e.kind == LibvirtErrorKind::DomainNotFound => return Ok(Presence::Gone),
            Err(e) => return Err(e),
        };
        let failed = |e: virt::error::Error| LibvirtError::from_virt("state", uuid, &e);
        let (state, reason) = dom.state().map_err(failed)?;
        if dom.is_active().map_err(failed)? {
            return Ok(match state {
                Enum::Known(VirtState::Running) => Presence::Running,
                _ => Presence::Paused,
            });
        }
        if matches!(
            reason,
            Enum::Known(StateReason::Shutoff(Enum::Known(ShutoffReason::Migrated)))
        ) {
            return Ok(Presence::MigratedAway);
        }
        let saved_to_file = matches!(
            reason,
            Enum::Known(StateReason::Shutoff(Enum::Known(ShutoffReason::Saved)))
        );
        if saved_to_file || dom.has_managed_save(0).map_err(failed)? {
            return Ok(Presence::Saved);
        }
        Ok(Presence::ShutOff)
    }

    fn migration(&self, uuid: &str) -> Result<Option<Migration>, LibvirtError> {
        super::jobs::migration(&self.lookup(uuid)?, uuid)
    }

    fn freeze_status(&self, uuid: &str) -> Result<FreezeStatus, LibvirtError> {
        let dom = self.lookup(uuid)?;
        let reply = dom
            .qemu_agent_command(
                r#"{"execute":"guest-fsfreeze-status"}"#,
                self.agent_command_timeout,
                0,
            )
            .map_err(|e| LibvirtError::from_virt("fsfreeze status", uuid, &e))?;
        let value: serde_json::Value = serde_json::from_str(&reply).map_err(|e| {
            LibvirtError::new(
                "fsfreeze status",
                uuid,
                LibvirtErrorKind::Other,
                format!("agent reply {reply:?}: {e}"),
            )
        })?;
        match value.get("return").and_then(|v| v.as_str()) {
            Some("frozen") => Ok(FreezeStatus::Frozen),
            Some("thawed") => Ok(FreezeStatus::Thawed),
            _ => Err(LibvirtError::new(
                "fsfreeze status",
                uuid,
                LibvirtErrorKind::Other,
                format!("unexpected agent reply {reply}"),
            )),
        }
    }
}

/// Copy one libvirt FS info entry into owned Rust data.
///
/// # Safety
/// `entry` must point to a valid `virDomainFSInfo` whose strings are
/// NUL-terminated (or NULL) and whose `devAlias` has `ndevAlias` entries.
unsafe fn read_fs_info(entry: virt::sys::virDomainFSInfoPtr) -> FsInfo {
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: non-NULL strings from libvirt are NUL-terminated (caller's contract).
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    // SAFETY: the caller guarantees `entry` is valid for reads.
    let e = unsafe { &*entry };
    let disks = (0..e.ndevAlias)
        // SAFETY: k < ndevAlias, within the array the caller vouches for.
        .map(|k| text(unsafe { *e.devAlias.add(k) }))
        .collect();
    FsInfo {
        mountpoint: text(e.mountpoint),
        name: text(e.name),
        fstype: text(e.fstype),
        disks,
    }
}

/// Name, UUID, state, disks and agent of a domain handle.
fn describe(dom: &Domain, name_or_uuid: &str) -> Result<DomainInfo, LibvirtError> {
    let err = |op, e: virt::error::Error| LibvirtError::from_virt(op, name_or_uuid, &e);
    let name = dom.name().map_err(|e| err("name", e))?;
    let uuid = dom.uuid_string().map_err(|e| err("uuid", e))?;
    let state = state_of(dom, name_or_uuid)?;
    let live_xml = dom.xml_desc(0).map_err(|e| err("xml", e))?;
    let (disks, agent) = xml::parse(&live_xml)
        .map_err(|m| LibvirtError::new("xml", name_or_uuid, LibvirtErrorKind::BadXml, m))?;
    Ok(DomainInfo {
        name,
        uuid,
        state,
        disks,
        agent,
    })
}
