//! In-memory fakes of the hypervisor and the image store, sharing one world,
//! with failures injectable at every call. They keep the rules that matter
//! to the workflow: libvirt serialises agent jobs per domain, clone v1 needs
//! a protected parent snapshot, a protected snapshot with children cannot be
//! unprotected, an image with snapshots cannot be removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::libvirt::{
    AgentChannel, Disk, DiskSource, DomainInfo, DomainState, LibvirtError, LibvirtErrorKind,
    Migration, RbdSource,
};
use crate::rbd::{CloneFormat, ImageSpec, ParentSpec, RbdError, RbdErrorKind};

/// What an injected failure does at its call.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Fail with this image-store error kind (or a libvirt error for hypervisor calls).
    Fail,
    /// Sleep this long, then succeed (a call that misses its deadline).
    Slow(Duration),
    /// Fail with a libvirt agent error.
    AgentGone,
}

#[derive(Debug, Clone, Default)]
pub struct FakeImage {
    pub snapshots: Vec<(String, bool)>,
    pub parent: Option<ParentSpec>,
    pub clone_format: Option<CloneFormat>,
    pub metadata: HashMap<String, String>,
    pub limit: Option<u64>,
    /// The image's RBD id; empty: derived from its name.
    pub id: String,
    /// Snapshots removed while v2 clones used them (Ceph's trash namespace).
    pub trashed: Vec<String>,
}

#[derive(Debug, Default)]
pub struct World {
    pub domains: Vec<DomainInfo>,
    pub frozen: HashMap<String, bool>,
    /// Domains whose vCPUs are paused.
    pub paused: HashMap<String, bool>,
    /// Agent response timeouts set on domains (absent: never set).
    pub agent_timeouts: HashMap<String, i32>,
    /// Migrations libvirt runs on domains.
    pub migrations: HashMap<String, Migration>,
    /// Domains shut off here because they migrated away.
    pub migrated_away: HashSet<String>,
    pub images: BTreeMap<String, FakeImage>,
    pub pools: Vec<String>,
    pub clone_format: Option<CloneFormat>,
    pub faults: HashMap<&'static str, (Fault, u32)>,
    /// Every call, in order, with "frozen" noted for snapshot creation.
    pub log: Vec<String>,
}

/// The shared fake world; clone the Arc into both fakes.
#[derive(Debug, Default)]
pub struct Fake {
    pub world: Mutex<World>,
    /// Held during freeze/thaw: libvirt runs one agent job per domain at a time.
    agent_job: Mutex<()>,
}

pub const UUID: &str = "11111111-2222-3333-4444-555555555555";

fn rbd_disk(target: &str, pool: &str, image: &str, boot: Option<u32>) -> Disk {
    Disk {
        target: target.into(),
        device: "disk".into(),
        boot_order: boot,
        source: DiskSource::Rbd(RbdSource {
            pool: pool.into(),
            namespace: None,
            image: image.into(),
            snapshot: None,
            hosts: vec!["127.0.0.1:6789".into()],
            auth_user: Some("admin".into()),
        }),
    }
}

mod hypervisor;
mod store;

pub use hypervisor::FakeHv;
pub use store::FakeStore;

impl Fake {
    /// A running domain `vm` with RBD disks vda (boot, cloned from
    /// images/base@snap) and vdb, a file disk vdc, a connected agent.
    pub fn standard() -> Arc<Fake> {
        let fake = Fake::default();
        {
            let mut w = fake.world.lock().expect("world");
            w.pools = vec!["vms".into(), "images".into()];
            w.clone_format = Some(CloneFormat::V2);
            w.domains.push(DomainInfo {
                name: "vm".into(),
                uuid: UUID.into(),
                state: DomainState::Running,
                disks: vec![
                    rbd_disk("vdb", "vms", "vm-data", None),
                    rbd_disk("vda", "vms", "vm-disk", Some(1)),
                    Disk {
                        target: "vdc".into(),
                        device: "disk".into(),
                        boot_order: None,
                        source: DiskSource::Other {
                            kind: "file".into(),
                            path: Some("/x.img".into()),
                        },
                    },
                ],
                agent: AgentChannel::Connected,
            });
            let base = FakeImage {
                snapshots: vec![("snap".into(), true)],
                ..Default::default()
            };
            w.images.insert("images/base".into(), base);
            let parent = ParentSpec {
                image: ImageSpec::new("images", "base"),
                snap: "snap".into(),
            };
            w.images.insert(
                "vms/vm-disk".into(),
                FakeImage {
                    parent: Some(parent),
                    ..Default::default()
                },
            );
            w.images.insert("vms/vm-data".into(), FakeImage::default());
        }
        Arc::new(fake)
    }

    pub fn inject(&self, point: &'static str, fault: Fault, times: u32) {
        self.world
            .lock()
            .expect("world")
            .faults
            .insert(point, (fault, times));
    }

    pub fn frozen(&self) -> bool {
        self.world
            .lock()
            .expect("world")
            .frozen
            .get(UUID)
            .copied()
            .unwrap_or(false)
    }

    pub fn paused(&self) -> bool {
        self.world
            .lock()
            .expect("world")
            .paused
            .get(UUID)
            .copied()
            .unwrap_or(false)
    }

    pub fn image(&self, key: &str) -> Option<FakeImage> {
        self.world.lock().expect("world").images.get(key).cloned()
    }

    pub fn log(&self) -> Vec<String> {
        self.world.lock().expect("world").log.clone()
    }

    /// Record the call; apply its fault, if one is armed.
    fn enter(&self, point: &'static str) -> Option<Fault> {
        let fault = {
            let mut w = self.world.lock().expect("world");
            let frozen = w.frozen.get(UUID).copied().unwrap_or(false);
            let paused = w.paused.get(UUID).copied().unwrap_or(false);
            w.log.push(match point {
                "snap_create" if frozen => "snap_create(frozen)".into(),
                "snap_create" if paused => "snap_create(paused)".into(),
                _ => point.into(),
            });
            match w.faults.get_mut(point) {
                Some((fault, n)) if *n > 0 => {
                    *n -= 1;
                    Some(*fault)
                }
                _ => None,
            }
        };
        if let Some(Fault::Slow(d)) = fault {
            std::thread::sleep(d);
            return None;
        }
        fault
    }

    fn rbd_fault(&self, point: &'static str, target: &str) -> Result<(), RbdError> {
        match self.enter(point) {
            None => Ok(()),
            Some(_) => Err(RbdError::new(
                "fake",
                target,
                RbdErrorKind::Other,
                format!("injected at {point}"),
            )),
        }
    }

    fn hv_fault(&self, point: &'static str) -> Result<(), LibvirtError> {
        match self.enter(point) {
            None => Ok(()),
            Some(Fault::AgentGone) => Err(LibvirtError::new(
                point,
                UUID,
                LibvirtErrorKind::AgentUnavailable,
                "QEMU guest agent is not connected",
            )),
            Some(_) => Err(LibvirtError::new(
                point,
                UUID,
                LibvirtErrorKind::Other,
                format!("injected at {point}"),
            )),
        }
    }
}

impl Fake {
    /// libvirt refuses agent calls on a domain whose vCPUs an operator
    /// stopped (or that is shut off) with "domain is not running".
    fn refuse_if_stopped(&self, op: &'static str, uuid: &str) -> Result<(), LibvirtError> {
        let w = self.world.lock().expect("world");
        let Some(domain) = w.domains.iter().find(|d| d.uuid == uuid) else {
            return Err(LibvirtError::new(
                op,
                uuid,
                LibvirtErrorKind::DomainNotFound,
                "Domain not found: no domain with matching uuid",
            ));
        };
        if domain.state != DomainState::Running {
            return Err(LibvirtError::new(
                op,
                uuid,
                LibvirtErrorKind::NotRunning,
                "Requested operation is not valid: domain is not running",
            ));
        }
        Ok(())
    }

    /// Start (`Some`) or end (`None`) a migration job on a domain.
    pub fn set_migration(&self, uuid: &str, migration: Option<Migration>) {
        let mut w = self.world.lock().expect("world");
        match migration {
            Some(m) => w.migrations.insert(uuid.into(), m),
            None => w.migrations.remove(uuid),
        };
    }

    /// The domain left this host by migration: a persistent one stays
    /// defined, shut off (reason migrated); a transient one is gone.
    pub fn migrate_away(&self, uuid: &str, persistent: bool) {
        let mut w = self.world.lock().expect("world");
        w.migrations.remove(uuid);
        if persistent {
            if let Some(d) = w.domains.iter_mut().find(|d| d.uuid == uuid) {
                d.state = DomainState::Shutoff;
            }
            w.migrated_away.insert(uuid.into());
        } else {
            w.domains.retain(|d| d.uuid != uuid);
        }
    }

    /// The domain migrated back and runs here again (still frozen, if it
    /// was when it left).
    pub fn migrate_home(&self, domain: DomainInfo) {
        let mut w = self.world.lock().expect("world");
        w.migrated_away.remove(&domain.uuid);
        w.domains.retain(|d| d.uuid != domain.uuid);
        w.domains.push(domain);
    }

    /// Set a domain's run state (an operator's pause, a shutdown).
    pub fn set_state(&self, uuid: &str, state: DomainState) {
        let mut w = self.world.lock().expect("world");
        if let Some(d) = w.domains.iter_mut().find(|d| d.uuid == uuid) {
            d.state = state;
        }
    }
}

pub(super) fn key(spec: &ImageSpec) -> String {
    format!("{}/{}", spec.pool, spec.name)
}

pub(super) fn not_found(op: &'static str, what: &str) -> RbdError {
    RbdError::new(
        op,
        what,
        RbdErrorKind::NotFound,
        "No such file or directory",
    )
}
