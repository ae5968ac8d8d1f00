//! The daemon binary as the tests drive it: a configuration in a fresh
//! temporary directory, the process with its log captured (and shown in
//! every failure), readiness by polling the socket, and a line-oriented
//! JSON-RPC client over a plain `UnixStream` with read timeouts. One file
//! per concern: launch, process, conn, foreign (other users), images.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod conn;
mod foreign;
mod images;
mod launch;
mod process;

// each test crate uses some of them
#[allow(unused_imports)]
pub use {conn::*, foreign::*, images::*, launch::*, process::*};

/// How long a daemon may take to answer its first `daemon.status`.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);
/// How long a daemon may take to exit after SIGTERM before it is killed.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// Default wait for one message on a connection.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Polling interval while waiting for a socket or a process.
const POLL: Duration = Duration::from_millis(20);

/// The bed parts a daemon under test needs.
#[derive(Debug, Clone)]
pub struct Bed {
    /// The bed's cluster.
    pub ceph: super::Ceph,
    /// The test driver's URI.
    pub testdrv_uri: String,
}

/// The cluster and the test driver, or `None` (after saying so) outside CI.
pub fn bed() -> Option<Bed> {
    let ceph = super::ceph()?;
    let drv = super::test_driver()?;
    Some(Bed {
        ceph,
        testdrv_uri: drv.uri,
    })
}

impl Bed {
    /// A daemon on the test driver and the bed's cluster, `extra_toml`
    /// merged over the harness's configuration; waits until it answers.
    pub fn start(&self, extra_toml: &str) -> DaemonProc {
        self.launch().extra(extra_toml).start()
    }

    /// A launch to customise before [`Launch::start`].
    pub fn launch(&self) -> Launch {
        Launch {
            libvirt_uri: self.testdrv_uri.clone(),
            ceph_conf: PathBuf::from(&self.ceph.conf),
            ceph_id: self.ceph.id.clone(),
            extra_toml: String::new(),
            env: Vec::new(),
            activate: false,
            wait_ready: true,
            exe: None,
        }
    }
}

/// A temporary directory, removed on drop unless the test is failing
/// (then kept, and its path printed, for the logs in it).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory under the system's temp dir.
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(super::unique(prefix));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: keeping {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
