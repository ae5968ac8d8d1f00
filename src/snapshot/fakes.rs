//! In-memory fakes of the hypervisor and the image store, sharing one world,
//! with failures injectable at every call. They keep the rules that matter
//! to the workflow: libvirt serialises agent jobs per domain, clone v1 needs
//! a protected parent snapshot, a protected snapshot with children cannot be
//! unprotected, an image with snapshots cannot be removed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::libvirt::{
    AgentChannel, Disk, DiskSource, DomainInfo, DomainState, FreezeStatus, FsInfo, Hypervisor,
    LibvirtError, LibvirtErrorKind, RbdSource,
};
use crate::rbd::{
    CloneFormat, FlattenProgress, Image, ImageSpec, ImageStore, ParentSpec, RbdError, RbdErrorKind,
};

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
    /// Snapshots removed while v2 clones used them (Ceph's trash namespace).
    pub trashed: Vec<String>,
}

#[derive(Debug, Default)]
pub struct World {
    pub domains: Vec<DomainInfo>,
    pub frozen: HashMap<String, bool>,
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
            w.log.push(if point == "snap_create" && frozen {
                "snap_create(frozen)".into()
            } else {
                point.into()
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

fn key(spec: &ImageSpec) -> String {
    format!("{}/{}", spec.pool, spec.name)
}

fn not_found(op: &'static str, what: &str) -> RbdError {
    RbdError::new(
        op,
        what,
        RbdErrorKind::NotFound,
        "No such file or directory",
    )
}

/// The fake as a hypervisor.
#[derive(Debug, Clone)]
pub struct FakeHv(pub Arc<Fake>);

impl Hypervisor for FakeHv {
    fn domain(&self, name_or_uuid: &str) -> Result<DomainInfo, LibvirtError> {
        self.0.hv_fault("domain")?;
        let w = self.0.world.lock().expect("world");
        w.domains
            .iter()
            .find(|d| d.name == name_or_uuid || d.uuid == name_or_uuid)
            .cloned()
            .ok_or_else(|| {
                LibvirtError::new(
                    "lookup",
                    name_or_uuid,
                    LibvirtErrorKind::DomainNotFound,
                    "no domain",
                )
            })
    }

    fn set_agent_timeout(&self, _uuid: &str, _seconds: i32) -> Result<(), LibvirtError> {
        self.0.hv_fault("agent_timeout")
    }

    fn fs_info(&self, _uuid: &str) -> Result<Vec<FsInfo>, LibvirtError> {
        self.0.hv_fault("fs_info")?;
        Ok(vec![FsInfo {
            mountpoint: "/".into(),
            name: "vda1".into(),
            fstype: "ext4".into(),
            disks: vec!["vda".into()],
        }])
    }

    fn freeze(&self, uuid: &str, _mountpoints: &[String]) -> Result<u32, LibvirtError> {
        let _job = self.0.agent_job.lock().expect("agent job");
        self.0.hv_fault("freeze")?;
        self.0
            .world
            .lock()
            .expect("world")
            .frozen
            .insert(uuid.into(), true);
        Ok(1)
    }

    fn thaw(&self, uuid: &str, _mountpoints: &[String]) -> Result<u32, LibvirtError> {
        let _job = self.0.agent_job.lock().expect("agent job");
        self.0.hv_fault("thaw")?;
        let was = self
            .0
            .world
            .lock()
            .expect("world")
            .frozen
            .insert(uuid.into(), false);
        Ok(u32::from(was == Some(true)))
    }

    fn freeze_status(&self, uuid: &str) -> Result<FreezeStatus, LibvirtError> {
        self.0.hv_fault("freeze_status")?;
        let frozen = self
            .0
            .world
            .lock()
            .expect("world")
            .frozen
            .get(uuid)
            .copied()
            .unwrap_or(false);
        Ok(if frozen {
            FreezeStatus::Frozen
        } else {
            FreezeStatus::Thawed
        })
    }
}

/// The fake as an image store.
#[derive(Debug, Clone)]
pub struct FakeStore(pub Arc<Fake>);

/// An open fake image.
#[derive(Debug)]
pub struct FakeImageHandle {
    fake: Arc<Fake>,
    spec: ImageSpec,
}

impl FakeImageHandle {
    fn with<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut World, &str) -> Result<T, RbdError>,
    ) -> Result<T, RbdError> {
        let mut w = self.fake.world.lock().expect("world");
        let k = key(&self.spec);
        if !w.images.contains_key(&k) {
            return Err(not_found(op, &k));
        }
        f(&mut w, &k)
    }
}

fn img<'w>(w: &'w mut World, k: &str) -> &'w mut FakeImage {
    w.images.get_mut(k).expect("checked by with()")
}

fn has_children(w: &World, parent: &str, snap: &str) -> bool {
    w.images.values().any(|i| {
        i.parent
            .as_ref()
            .is_some_and(|p| key(&p.image) == parent && p.snap == snap)
    })
}

impl Image for FakeImageHandle {
    fn spec(&self) -> &ImageSpec {
        &self.spec
    }
    fn snapshots(&self) -> Result<Vec<String>, RbdError> {
        self.with("snap list", |w, k| {
            Ok(img(w, k).snapshots.iter().map(|s| s.0.clone()).collect())
        })
    }
    fn snapshot_limit(&self) -> Result<Option<u64>, RbdError> {
        self.with("snap limit", |w, k| Ok(img(w, k).limit))
    }
    fn create_snapshot(&self, snap: &str) -> Result<(), RbdError> {
        let point = if snap == super::FINAL_SNAPSHOT {
            "final_snap_create"
        } else {
            "snap_create"
        };
        self.fake.rbd_fault(point, snap)?;
        self.with("snap create", |w, k| {
            let image = img(w, k);
            if image.snapshots.iter().any(|s| s.0 == snap) {
                return Err(RbdError::new(
                    "snap create",
                    snap,
                    RbdErrorKind::Exists,
                    "exists",
                ));
            }
            image.snapshots.push((snap.to_string(), false));
            Ok(())
        })
    }
    fn protect_snapshot(&self, snap: &str) -> Result<(), RbdError> {
        let point = if snap == super::FINAL_SNAPSHOT {
            "final_protect"
        } else {
            "protect"
        };
        self.fake.rbd_fault(point, snap)?;
        self.with("protect", |w, k| {
            match img(w, k).snapshots.iter_mut().find(|s| s.0 == snap) {
                Some(s) => {
                    s.1 = true;
                    Ok(())
                }
                None => Err(not_found("protect", snap)),
            }
        })
    }
    fn unprotect_snapshot(&self, snap: &str) -> Result<(), RbdError> {
        self.with("unprotect", |w, k| {
            if has_children(w, k, snap) {
                return Err(RbdError::new(
                    "unprotect",
                    snap,
                    RbdErrorKind::InUse,
                    "has children",
                ));
            }
            match img(w, k).snapshots.iter_mut().find(|s| s.0 == snap) {
                Some(s) => {
                    s.1 = false;
                    Ok(())
                }
                None => Err(not_found("unprotect", snap)),
            }
        })
    }
    fn is_protected(&self, snap: &str) -> Result<bool, RbdError> {
        self.with("is protected", |w, k| {
            img(w, k)
                .snapshots
                .iter()
                .find(|s| s.0 == snap)
                .map(|s| s.1)
                .ok_or_else(|| not_found("is protected", snap))
        })
    }
    fn remove_snapshot(&self, snap: &str, unprotect: bool) -> Result<(), RbdError> {
        self.fake.rbd_fault("snap_remove", snap)?;
        self.with("snap remove", |w, k| {
            let children = has_children(w, k, snap);
            let v1_child = w.images.values().any(|i| {
                i.clone_format == Some(CloneFormat::V1)
                    && i.parent
                        .as_ref()
                        .is_some_and(|p| key(&p.image) == k && p.snap == snap)
            });
            let image = img(w, k);
            let Some(pos) = image.snapshots.iter().position(|s| s.0 == snap) else {
                return Err(not_found("snap remove", snap));
            };
            if image.snapshots[pos].1 && (!unprotect || v1_child) {
                return Err(RbdError::new(
                    "snap remove",
                    snap,
                    RbdErrorKind::InUse,
                    "protected",
                ));
            }
            image.snapshots.remove(pos);
            if children {
                image.trashed.push(snap.to_string());
            }
            Ok(())
        })
    }
    fn parent(&self) -> Result<Option<ParentSpec>, RbdError> {
        self.with("parent", |w, k| Ok(img(w, k).parent.clone()))
    }
    fn flatten(&self, progress: FlattenProgress<'_>) -> Result<(), RbdError> {
        self.fake.rbd_fault("flatten", &key(&self.spec))?;
        for i in 1..=4 {
            if !progress(i, 4) {
                return Err(RbdError::new(
                    "flatten",
                    key(&self.spec),
                    RbdErrorKind::Cancelled,
                    "cancelled",
                ));
            }
        }
        self.with("flatten", |w, k| {
            img(w, k).parent = None;
            Ok(())
        })
    }
    fn set_metadata(&self, key_: &str, value: &str) -> Result<(), RbdError> {
        self.fake.rbd_fault("set_metadata", key_)?;
        self.with("metadata set", |w, k| {
            img(w, k).metadata.insert(key_.into(), value.into());
            Ok(())
        })
    }
    fn metadata(&self, key_: &str) -> Result<Option<String>, RbdError> {
        self.with("metadata get", |w, k| {
            Ok(img(w, k).metadata.get(key_).cloned())
        })
    }
    fn size(&self) -> Result<u64, RbdError> {
        Ok(1 << 30)
    }
}

impl ImageStore for FakeStore {
    fn fsid(&self) -> Result<String, RbdError> {
        self.0.rbd_fault("fsid", "cluster")?;
        Ok("fa4e0000-0000-0000-0000-00000000f51d".into())
    }
    fn pool_exists(&self, pool: &str) -> Result<bool, RbdError> {
        Ok(self
            .0
            .world
            .lock()
            .expect("world")
            .pools
            .iter()
            .any(|p| p == pool))
    }
    fn image_exists(&self, image: &ImageSpec) -> Result<bool, RbdError> {
        Ok(self
            .0
            .world
            .lock()
            .expect("world")
            .images
            .contains_key(&key(image)))
    }
    fn open(&self, image: &ImageSpec) -> Result<Arc<dyn Image>, RbdError> {
        self.0.rbd_fault("open", &key(image))?;
        if !self.image_exists(image)? {
            return Err(not_found("open", &key(image)));
        }
        Ok(Arc::new(FakeImageHandle {
            fake: Arc::clone(&self.0),
            spec: image.clone(),
        }))
    }
    fn clone_format(&self) -> Result<CloneFormat, RbdError> {
        Ok(self
            .0
            .world
            .lock()
            .expect("world")
            .clone_format
            .unwrap_or(CloneFormat::V2))
    }
    fn clone_image(
        &self,
        parent: &ImageSpec,
        snap: &str,
        child: &ImageSpec,
        format: CloneFormat,
    ) -> Result<(), RbdError> {
        self.0.rbd_fault("clone", &key(child))?;
        let mut w = self.0.world.lock().expect("world");
        let Some(p) = w.images.get(&key(parent)) else {
            return Err(not_found("clone", &key(parent)));
        };
        let Some(s) = p.snapshots.iter().find(|s| s.0 == snap) else {
            return Err(not_found("clone", snap));
        };
        if format == CloneFormat::V1 && !s.1 {
            return Err(RbdError::new(
                "clone",
                snap,
                RbdErrorKind::Invalid,
                "parent snapshot must be protected",
            ));
        }
        if w.images.contains_key(&key(child)) {
            return Err(RbdError::new(
                "clone",
                key(child),
                RbdErrorKind::Exists,
                "exists",
            ));
        }
        let parent = Some(ParentSpec {
            image: parent.clone(),
            snap: snap.into(),
        });
        w.images.insert(
            key(child),
            FakeImage {
                parent,
                clone_format: Some(format),
                ..Default::default()
            },
        );
        Ok(())
    }
    fn remove_image(&self, image: &ImageSpec) -> Result<(), RbdError> {
        self.0.rbd_fault("remove_image", &key(image))?;
        let mut w = self.0.world.lock().expect("world");
        match w.images.get(&key(image)) {
            None => Err(not_found("remove", &key(image))),
            Some(i) if !i.snapshots.is_empty() => Err(RbdError::new(
                "remove",
                key(image),
                RbdErrorKind::InUse,
                "has snapshots",
            )),
            Some(_) => {
                w.images.remove(&key(image));
                Ok(())
            }
        }
    }
}
