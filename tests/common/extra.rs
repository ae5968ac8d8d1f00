//! A second, throwaway cluster a test starts itself (dev/testbed, no
//! libvirtd) on ports `offset` above the bed's, for faults that must not
//! touch the shared bed: killing its mon or OSD. Stopped on drop.

use std::process::Command;

const TESTBED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dev/testbed");

/// The extra cluster.
#[derive(Debug)]
pub struct ExtraCluster {
    /// Its bed directory.
    pub dir: String,
    /// Its ceph.conf.
    pub conf: String,
    /// dev/testbed's state.json (pids).
    pub state: serde_json::Value,
}

impl ExtraCluster {
    /// Start it, with `store` = memstore or bluestore.
    pub fn up(first: &super::Ceph, offset: u16, store: &str) -> ExtraCluster {
        let mon_port: u16 = first
            .mon_v1
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let base = (mon_port - 1 + offset).to_string();
        let dir = std::env::temp_dir().join(super::unique("rbdsnapd-extra-bed"));
        let dir = dir.to_str().expect("utf-8 path").to_string();
        let up = Command::new(TESTBED)
            .args([
                "up",
                "--dir",
                &dir,
                "--port-base",
                &base,
                "--no-libvirtd",
                "--store",
                store,
            ])
            .output()
            .expect("run dev/testbed up");
        let mut extra = ExtraCluster {
            conf: format!("{dir}/ceph.conf"),
            dir,
            state: serde_json::Value::Null,
        };
        assert!(
            up.status.success(),
            "extra bed up: {}",
            String::from_utf8_lossy(&up.stderr)
        );
        let state =
            std::fs::read_to_string(format!("{}/state.json", extra.dir)).expect("state.json");
        extra.state = serde_json::from_str(&state).expect("state is JSON");
        extra
    }

    /// Its own test-driver domains, whose disks name its monitors (the
    /// main bed's name the bed's: a daemon of this cluster refuses them as
    /// disks of another cluster).
    pub fn testdrv_uri(&self) -> String {
        format!("test://{}/test-node.xml", self.dir)
    }

    /// The pid of a daemon of the cluster (`mon`, `osd.0`).
    pub fn pid(&self, daemon: &str) -> i32 {
        self.state["cluster"]["pids"][daemon].as_i64().expect("pid") as i32
    }

    /// The same cluster seen through the bed's helpers (rbd CLI, store).
    pub fn ceph(&self, first: &super::Ceph) -> super::Ceph {
        super::Ceph {
            conf: self.conf.clone(),
            ..first.clone()
        }
    }

    /// Start the OSD again after a kill (its data survives on bluestore).
    pub fn restart_osd(&self) -> std::process::Child {
        Command::new("ceph-osd")
            .args(["-f", "-c", &self.conf, "-i", "0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start ceph-osd")
    }

    /// Stop it and check nothing of it runs.
    pub fn down(&self) -> bool {
        let down = Command::new(TESTBED)
            .args(["down", "--dir", &self.dir])
            .status();
        let left = Command::new(TESTBED)
            .args(["leftovers", "--dir", &self.dir])
            .status();
        down.is_ok_and(|s| s.success()) && left.is_ok_and(|s| s.success())
    }
}

impl Drop for ExtraCluster {
    fn drop(&mut self) {
        self.down();
    }
}
