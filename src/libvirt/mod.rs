//! The hypervisor adapter: the [`Hypervisor`] trait the workflow drives, and
//! its real implementation over libvirt's C API ([`LibvirtHypervisor`], via
//! the `virt` crate). The only place that calls libvirt.
//!
//! Calls block (libvirtd and the guest agent answer when they answer): the
//! workflow runs them off the async runtime, each with a deadline. The guest
//! agent's own response timeout is set explicitly before freezing, because
//! libvirt's default is to wait forever.

mod connection;
mod error;
mod jobs;
pub mod xml;

pub use connection::LibvirtHypervisor;
pub use error::{LibvirtError, LibvirtErrorKind};

use std::fmt;

/// What the daemon needs to know about a domain, read from its live state
/// and XML in one go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct DomainInfo {
    /// Domain name.
    pub name: String,
    /// Domain UUID: the stable handle used for every later call.
    pub uuid: String,
    /// Run state.
    pub state: DomainState,
    /// Disks in XML order.
    pub disks: Vec<Disk>,
    /// The guest agent channel as the live XML shows it.
    pub agent: AgentChannel,
}

/// libvirt's agent response timeout of a domain nobody set one for:
/// `VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_BLOCK`, wait as long as it takes.
pub const AGENT_TIMEOUT_LIBVIRT_DEFAULT: i32 = -2;

/// A domain's run state, as far as snapshots care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DomainState {
    /// Running: the only state a snapshot proceeds in.
    Running,
    /// Paused by the user or an I/O error.
    Paused,
    /// Shut off or crashed.
    Shutoff,
    /// Anything else (shutting down, pmsuspended, blocked, unknown).
    Other,
}

/// Whether a domain can still hold a freeze: what a thaw guard asks when
/// libvirt refuses its thaw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Running: a thaw reaches the agent.
    Running,
    /// Active with its vCPUs stopped (paused by an operator or an I/O
    /// error, suspended to RAM, saving): its memory lives on, a freeze with
    /// it, and the agent answers once it runs again.
    Paused,
    /// Shut off with its memory saved (managed save, or a save to a file):
    /// a restore brings a freeze back with it.
    Saved,
    /// Shut off without saved memory: a boot starts with nothing frozen.
    ShutOff,
    /// Shut off here because it migrated to another host (a persistent
    /// domain stays defined where it left): it runs there, a freeze with it.
    MigratedAway,
    /// libvirt does not know the domain any more: undefined, or a
    /// transient domain that migrated away (libvirt cannot say which).
    Gone,
}

/// Which way a domain migrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MigrationDirection {
    /// Leaving this host.
    Out,
    /// Arriving on this host.
    In,
}

/// A migration job libvirt runs on a domain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Migration {
    /// Leaving or arriving.
    pub direction: MigrationDirection,
    /// Bytes sent so far and the total libvirt expects (memory and, with
    /// storage migration, disks), when libvirt says.
    pub processed_bytes: Option<u64>,
    /// See `processed_bytes`.
    pub total_bytes: Option<u64>,
}

impl fmt::Display for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let way = match self.direction {
            MigrationDirection::Out => "migrating to another host",
            MigrationDirection::In => "migrating in from another host",
        };
        match (self.processed_bytes, self.total_bytes) {
            (Some(done), Some(total)) if total > 0 => {
                write!(f, "{way} ({} of {} MiB sent)", done >> 20, total >> 20)
            }
            _ => f.write_str(way),
        }
    }
}

/// A disk of the domain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Disk {
    /// Target device in the guest, e.g. `vda`: how requests name disks.
    pub target: String,
    /// `disk`, `cdrom`, `floppy` or `lun`.
    pub device: String,
    /// The per-device `<boot order>`, if set.
    pub boot_order: Option<u32>,
    /// Where the data lives.
    pub source: DiskSource,
}

/// Where a disk's data lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum DiskSource {
    /// A network disk with protocol `rbd`.
    Rbd(RbdSource),
    /// Anything else: `file`, `block`, another network protocol, none.
    Other {
        /// The disk's `type` attribute, plus `/protocol` for network disks.
        kind: String,
        /// The file, device or name, when the XML has one.
        path: Option<String>,
    },
}

/// An RBD disk's source as libvirt describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct RbdSource {
    /// Pool name.
    pub pool: String,
    /// RADOS namespace, if any.
    pub namespace: Option<String>,
    /// Image name.
    pub image: String,
    /// A snapshot the disk reads from (read-only disks), if any.
    pub snapshot: Option<String>,
    /// Mon hosts as `host:port` (port omitted when the XML has none).
    pub hosts: Vec<String>,
    /// cephx user the domain authenticates as, if any.
    pub auth_user: Option<String>,
}

/// The guest agent's virtio-serial channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentChannel {
    /// The domain has no `org.qemu.guest_agent.0` channel.
    Missing,
    /// libvirt sees an agent connected on the channel.
    Connected,
    /// The channel exists but no agent is connected.
    Disconnected,
    /// The channel exists; the driver does not report its state.
    Unknown,
}

/// A mounted filesystem in the guest, as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct FsInfo {
    /// Mount point in the guest.
    pub mountpoint: String,
    /// Guest device name.
    pub name: String,
    /// Filesystem type.
    pub fstype: String,
    /// Target devs (`vda`…) of the disks it lives on.
    pub disks: Vec<String>,
}

/// The agent's own view of the freeze (`guest-fsfreeze-status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FreezeStatus {
    /// Filesystems are frozen.
    Frozen,
    /// Filesystems are thawed.
    Thawed,
}

/// The hypervisor operations the snapshot workflow needs. Domains are named
/// by UUID after the first lookup, so a rename cannot redirect a job.
pub trait Hypervisor: Send + Sync + fmt::Debug {
    /// Find a domain by name or UUID and read its state, disks and agent.
    fn domain(&self, name_or_uuid: &str) -> Result<DomainInfo, LibvirtError>;
    /// Every domain libvirt knows, running or not (for the start-up sweep).
    fn list_domains(&self) -> Result<Vec<DomainInfo>, LibvirtError>;
    /// Bound every later agent call on this domain to `seconds` (or, with
    /// libvirt's negative values, block or use the default).
    fn set_agent_timeout(&self, uuid: &str, seconds: i32) -> Result<(), LibvirtError>;
    /// The domain's agent response timeout as libvirt holds it now, when
    /// that can be read (libvirt has no call for it; its status file under
    /// /run/libvirt/qemu has it); `None` when it cannot.
    fn agent_timeout(&self, _uuid: &str) -> Option<i32> {
        None
    }
    /// Mounted filesystems (ask before freezing: a frozen agent refuses).
    fn fs_info(&self, uuid: &str) -> Result<Vec<FsInfo>, LibvirtError>;
    /// Freeze the given mount points (all when empty); returns how many froze.
    fn freeze(&self, uuid: &str, mountpoints: &[String]) -> Result<u32, LibvirtError>;
    /// Thaw the given mount points (all when empty); returns how many thawed.
    fn thaw(&self, uuid: &str, mountpoints: &[String]) -> Result<u32, LibvirtError>;
    /// Ask the agent directly whether the guest is frozen.
    fn freeze_status(&self, uuid: &str) -> Result<FreezeStatus, LibvirtError>;
    /// Pause the domain's vCPUs (`virDomainSuspend`): the guest issues no
    /// new I/O until [`Hypervisor::resume`].
    fn suspend(&self, uuid: &str) -> Result<(), LibvirtError>;
    /// Resume the vCPUs if the domain is paused; `Ok(false)` when it was
    /// not (nothing to do), so that a retry after an answer lost on the way
    /// is harmless.
    fn resume(&self, uuid: &str) -> Result<bool, LibvirtError>;
    /// Whether the domain runs, is paused, saved, shut off, migrated away
    /// or gone.
    fn presence(&self, uuid: &str) -> Result<Presence, LibvirtError>;
    /// The migration libvirt runs on the domain now, if any.
    fn migration(&self, _uuid: &str) -> Result<Option<Migration>, LibvirtError> {
        Ok(None)
    }
}
