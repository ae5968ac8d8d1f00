//! The fake world as an [`ImageStore`]: clone v1/v2 rules, protection,
//! children and the trash namespace, as far as the workflow relies on them.

use super::{key, not_found, Fake, FakeImage, World};
use crate::rbd::{
    CloneFormat, FlattenProgress, Image, ImageSpec, ImageStore, ParentSpec, RbdError, RbdErrorKind,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The fake as an image store.
#[derive(Debug, Clone)]
pub struct FakeStore(pub Arc<Fake>);

/// Image ids, unique in the process as the cluster's are in a pool.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

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
        let point = if snap == crate::snapshot::FINAL_SNAPSHOT {
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
        let point = if snap == crate::snapshot::FINAL_SNAPSHOT {
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
    fn children(&self, snap: &str) -> Result<Vec<String>, RbdError> {
        let w = self.fake.world.lock().expect("world");
        Ok(w.images
            .iter()
            .filter(|(_, i)| {
                i.parent
                    .as_ref()
                    .is_some_and(|p| p.image == self.spec && p.snap == snap)
            })
            .map(|(k, _)| k.clone())
            .collect())
    }
    fn id(&self) -> Result<String, RbdError> {
        self.with("get id", |w, k| {
            let image = img(w, k);
            Ok(if image.id.is_empty() {
                format!("id-{k}")
            } else {
                image.id.clone()
            })
        })
    }
}

impl ImageStore for FakeStore {
    fn monitors(&self) -> Result<Vec<crate::rbd::monitors::Endpoint>, RbdError> {
        Ok(crate::rbd::monitors::parse_mon_host(
            "[v2:127.0.0.1:3300,v1:127.0.0.1:6789]",
        ))
    }
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
        // as librbd does: a clone gets a fresh id and a copy of its
        // parent's metadata (ours included)
        let metadata = p.metadata.clone();
        let parent = Some(ParentSpec {
            image: parent.clone(),
            snap: snap.into(),
        });
        let id = format!("fake{:08x}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        w.images.insert(
            key(child),
            FakeImage {
                parent,
                clone_format: Some(format),
                metadata,
                id,
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
