//! The daemon's command line: a configuration file and overrides of its
//! most used keys. In the library so that the man page generator
//! (examples/man.rs) renders the very definitions `--help` shows.

use std::path::PathBuf;

use clap::Parser;

use crate::config::{Config, LogFormat};
use crate::protocol::Quiesce;

/// Command line: a config file, and overrides of its most used keys.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Quiesced RBD direct snapshots of running libvirt/QEMU guests, over a Unix socket"
)]
pub struct Args {
    /// Configuration file (TOML). Missing is fine only for the default path.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Socket path (`socket`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// libvirt URI (`libvirt.uri`).
    #[arg(long, value_name = "URI")]
    pub libvirt_uri: Option<String>,
    /// ceph.conf (`ceph.conf`).
    #[arg(long, value_name = "PATH")]
    pub ceph_conf: Option<PathBuf>,
    /// cephx client id without `client.` (`ceph.client_id`).
    #[arg(long, value_name = "ID")]
    pub ceph_id: Option<String>,
    /// Default destination pool (`snapshot.default_pool`).
    #[arg(long, value_name = "POOL")]
    pub default_pool: Option<String>,
    /// Default quiesce policy (`snapshot.quiesce`).
    #[arg(long, value_name = "POLICY", value_enum)]
    pub quiesce: Option<Quiesce>,
    /// Freeze deadline in seconds (`snapshot.freeze_deadline_secs`).
    #[arg(long, value_name = "SECS")]
    pub freeze_deadline: Option<f64>,
    /// Guest agent timeout in seconds (`libvirt.agent_timeout_secs`).
    #[arg(long, value_name = "SECS")]
    pub agent_timeout: Option<f64>,
    /// State directory (`state_dir`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log format (`log_format`).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Allow this user (name or uid); repeatable, adds to `allowed_users`.
    #[arg(long, value_name = "USER")]
    pub allow_user: Vec<String>,
    /// Allow this group (name or gid); repeatable, adds to `allowed_groups`.
    #[arg(long, value_name = "GROUP")]
    pub allow_group: Vec<String>,
}

impl Args {
    /// The configuration file's values with this command line's over them.
    pub fn apply(self, mut c: Config) -> Config {
        c.socket = self.socket.unwrap_or(c.socket);
        c.libvirt.uri = self.libvirt_uri.unwrap_or(c.libvirt.uri);
        c.ceph.conf = self.ceph_conf.unwrap_or(c.ceph.conf);
        c.ceph.client_id = self.ceph_id.unwrap_or(c.ceph.client_id);
        c.snapshot.default_pool = self.default_pool.or(c.snapshot.default_pool);
        c.snapshot.quiesce = self.quiesce.unwrap_or(c.snapshot.quiesce);
        c.snapshot.freeze_deadline_secs = self
            .freeze_deadline
            .unwrap_or(c.snapshot.freeze_deadline_secs);
        c.libvirt.agent_timeout_secs = self.agent_timeout.unwrap_or(c.libvirt.agent_timeout_secs);
        c.state_dir = self.state_dir.unwrap_or(c.state_dir);
        c.log_format = self.log_format.unwrap_or(c.log_format);
        c.allowed_users.extend(self.allow_user);
        c.allowed_groups.extend(self.allow_group);
        c
    }
}
