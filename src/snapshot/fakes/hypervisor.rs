//! The fake world as a [`Hypervisor`]: freeze and thaw serialised per
//! domain like libvirt's agent jobs.

use super::Fake;
use crate::libvirt::{
    DomainInfo, DomainState, FreezeStatus, FsInfo, Hypervisor, LibvirtError, LibvirtErrorKind,
    Migration, Presence,
};
use std::sync::Arc;

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

    fn list_domains(&self) -> Result<Vec<DomainInfo>, LibvirtError> {
        Ok(self.0.world.lock().expect("world").domains.clone())
    }

    fn agent_timeout(&self, uuid: &str) -> Option<i32> {
        self.0
            .world
            .lock()
            .expect("world")
            .agent_timeouts
            .get(uuid)
            .copied()
    }

    fn set_agent_timeout(&self, uuid: &str, seconds: i32) -> Result<(), LibvirtError> {
        self.0.hv_fault("agent_timeout")?;
        let mut w = self.0.world.lock().expect("world");
        w.agent_timeouts.insert(uuid.into(), seconds);
        Ok(())
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
        self.0.refuse_if_stopped("thaw", uuid)?;
        let was = self
            .0
            .world
            .lock()
            .expect("world")
            .frozen
            .insert(uuid.into(), false);
        Ok(u32::from(was == Some(true)))
    }

    fn suspend(&self, uuid: &str) -> Result<(), LibvirtError> {
        self.0.hv_fault("suspend")?;
        let mut w = self.0.world.lock().expect("world");
        w.paused.insert(uuid.into(), true);
        Ok(())
    }

    fn resume(&self, uuid: &str) -> Result<bool, LibvirtError> {
        self.0.hv_fault("resume")?;
        let mut w = self.0.world.lock().expect("world");
        Ok(w.paused.insert(uuid.into(), false) == Some(true))
    }

    fn presence(&self, uuid: &str) -> Result<Presence, LibvirtError> {
        self.0.hv_fault("presence")?;
        let w = self.0.world.lock().expect("world");
        let Some(domain) = w.domains.iter().find(|d| d.uuid == uuid) else {
            return Ok(Presence::Gone);
        };
        Ok(match domain.state {
            DomainState::Running if w.paused.get(uuid) == Some(&true) => Presence::Paused,
            DomainState::Running => Presence::Running,
            DomainState::Paused | DomainState::Other => Presence::Paused,
            DomainState::Shutoff if w.migrated_away.contains(uuid) => Presence::MigratedAway,
            DomainState::Shutoff => Presence::ShutOff,
        })
    }

    fn migration(&self, uuid: &str) -> Result<Option<Migration>, LibvirtError> {
        self.0.hv_fault("migration")?;
        Ok(self
            .0
            .world
            .lock()
            .expect("world")
            .migrations
            .get(uuid)
            .cloned())
    }

    fn freeze_status(&self, uuid: &str) -> Result<FreezeStatus, LibvirtError> {
        self.0.refuse_if_stopped("fsfreeze status", uuid)?;
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
