//! The hypervisor adapter: the `Hypervisor` trait the workflow drives and its
//! real implementation over the `virt` crate (domain lookup, live XML disks,
//! guest agent freeze/thaw/fsinfo with an explicit response timeout). Built by
//! the engine issue; the only place that calls libvirt's C API.
