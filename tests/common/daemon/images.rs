//! The one guard that removes an image a test made, also when the test
//! fails half-way.

#[allow(unused_imports)]
use super::*;

/// Removes an image a test may have made (with its snapshots) when dropped,
/// also when the test fails half-way.
#[derive(Debug)]
pub struct ImageCleanup {
    ceph: super::super::Ceph,
    /// Pool.
    pub pool: String,
    /// Image name.
    pub name: String,
}

impl ImageCleanup {
    /// Guard `pool/name`.
    pub fn new(ceph: &super::super::Ceph, pool: &str, name: &str) -> ImageCleanup {
        ImageCleanup {
            ceph: ceph.clone(),
            pool: pool.to_string(),
            name: name.to_string(),
        }
    }

    /// `pool/name`.
    pub fn spec(&self) -> String {
        format!("{}/{}", self.pool, self.name)
    }
}

impl Drop for ImageCleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // no second panic while unwinding: best effort through the CLI
            let spec = self.spec();
            let snap = format!("{spec}@snap");
            let _ = self.ceph.rbd_output(&["snap", "unprotect", &snap], None);
            let _ = self.ceph.rbd_output(&["snap", "purge", &spec], None);
            let _ = self.ceph.rbd_output(&["rm", "--no-progress", &spec], None);
        } else {
            super::super::engine::remove(
                &super::super::engine::store(&self.ceph),
                &self.pool,
                &self.name,
            );
        }
    }
}
