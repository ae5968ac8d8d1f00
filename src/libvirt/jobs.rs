//! A domain's migration job, read with `virDomainGetJobStats` through
//! `virt::sys`: the `virt` crate's wrapper turns the parameter list libvirt
//! allocates into a `Vec` (undefined behaviour for the NULL list of a domain
//! without a job, and a free with the wrong allocator otherwise), so the
//! list is read with libvirt's own accessors and freed by libvirt.

use std::os::raw::{c_int, c_ulonglong};
use std::ptr;

use virt::domain::Domain;
use virt::sys;

use super::{LibvirtError, LibvirtErrorKind, Migration, MigrationDirection};

/// The list libvirt filled, freed by libvirt when dropped.
struct Params {
    list: sys::virTypedParameterPtr,
    count: c_int,
}

impl Params {
    fn int(&self, name: &std::ffi::CStr) -> Option<c_int> {
        let mut value: c_int = 0;
        // SAFETY: `list` holds `count` parameters libvirt filled (or is NULL
        // with 0); `name` is NUL-terminated; `value` is valid for writes.
        let found =
            unsafe { sys::virTypedParamsGetInt(self.list, self.count, name.as_ptr(), &mut value) };
        (found == 1).then_some(value)
    }

    fn ullong(&self, name: &std::ffi::CStr) -> Option<u64> {
        let mut value: c_ulonglong = 0;
        // SAFETY: as in `int`.
        let found = unsafe {
            sys::virTypedParamsGetULLong(self.list, self.count, name.as_ptr(), &mut value)
        };
        (found == 1).then_some(value)
    }
}

impl Drop for Params {
    fn drop(&mut self) {
        // SAFETY: libvirt allocated the list (or left it NULL, which it
        // accepts); freed once, here.
        unsafe { sys::virTypedParamsFree(self.list, self.count) };
    }
}

/// The migration libvirt runs on `dom` now, if any; a driver without jobs
/// (libvirt's test driver) migrates nothing.
pub(super) fn migration(dom: &Domain, uuid: &str) -> Result<Option<Migration>, LibvirtError> {
    let mut kind: c_int = 0;
    let mut params = Params {
        list: ptr::null_mut(),
        count: 0,
    };
    // SAFETY: `dom` is a live domain handle; libvirt writes the job type,
    // and allocates the list it stores in `params` (freed by its Drop).
    let rc = unsafe {
        sys::virDomainGetJobStats(
            dom.as_ptr(),
            &mut kind,
            &mut params.list,
            &mut params.count,
            0,
        )
    };
    if rc < 0 {
        let e = LibvirtError::from_virt("job stats", uuid, &virt::error::Error::last_error());
        return if e.kind == LibvirtErrorKind::Unsupported {
            Ok(None)
        } else {
            Err(e)
        };
    }
    if u32::try_from(kind) == Ok(sys::VIR_DOMAIN_JOB_NONE) {
        return Ok(None);
    }
    let direction = match params
        .int(sys::VIR_DOMAIN_JOB_OPERATION)
        .and_then(|op| u32::try_from(op).ok())
    {
        Some(sys::VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT) => MigrationDirection::Out,
        Some(sys::VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN) => MigrationDirection::In,
        // a save, dump or backup job: not ours to judge here
        _ => return Ok(None),
    };
    Ok(Some(Migration {
        direction,
        processed_bytes: params.ullong(sys::VIR_DOMAIN_JOB_DATA_PROCESSED),
        total_bytes: params.ullong(sys::VIR_DOMAIN_JOB_DATA_TOTAL),
    }))
}
