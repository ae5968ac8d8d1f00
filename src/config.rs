//! Configuration: a TOML file (default `/etc/rbdsnapd/rbdsnapd.toml`) with
//! command-line overrides, validated before the daemon binds anything. Every
//! key is optional; the defaults suit a Nova-like compute node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::protocol::{OnBusy, Quiesce};
use crate::rbd::CloneFormat;

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/rbdsnapd/rbdsnapd.toml";

/// The daemon's exit status for a configuration it refuses (sysexits'
/// EX_CONFIG): the systemd unit does not restart on it.
pub const EXIT_CONFIG: u8 = 78;

/// What is wrong with the configuration, said so an operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The Unix socket clients connect to.
    pub socket: PathBuf,
    /// Its permission bits, as an octal string ("0660").
    pub socket_mode: String,
    /// Group owning the socket (name or gid); unset: the daemon's group.
    pub socket_group: Option<String>,
    /// Users (names or uids) allowed to call; root and the daemon's own user
    /// always are.
    pub allowed_users: Vec<String>,
    /// Groups (names or gids) whose members (primary or supplementary group
    /// of the peer) are allowed to call.
    pub allowed_groups: Vec<String>,
    /// Connections served at once; more are refused.
    pub max_connections: usize,
    /// Connections one caller (uid) may hold at once, so that one client
    /// cannot take every slot; more are refused. Root and the daemon's own
    /// user are not held to it.
    pub max_connections_per_caller: usize,
    /// `on_busy: "wait"` requests that may wait for one domain; more are
    /// refused `busy`.
    pub max_waiting_per_domain: usize,
    /// `on_busy: "wait"` requests one caller (uid) may have waiting.
    pub max_waiting_per_caller: usize,
    /// Longest request line; a longer one gets an error and the connection
    /// is closed.
    pub max_line_bytes: usize,
    /// Seconds a connection may stay silent with nothing in flight.
    pub idle_timeout_secs: f64,
    /// Where the daemon keeps its state (journal, lock).
    pub state_dir: PathBuf,
    /// `auto` (journald under systemd, text on a terminal), `text`, `json`,
    /// `journald`.
    pub log_format: LogFormat,
    /// At start, temporary snapshots of ours that no journal knows (a lost
    /// state directory): `report` (log and `daemon.status`), `remove`, or
    /// `off`.
    pub sweep_orphans: String,
    /// Seconds running jobs get to finish on SIGTERM before they are
    /// cancelled (a frozen guest is thawed regardless).
    pub shutdown_grace_secs: f64,
    /// Finished jobs kept (in memory for `jobs.list`/`jobs.get` and
    /// `request_id` retries, and in the journal across restarts).
    pub jobs_kept: usize,
    /// Recorded on every image as the host that made it (`rbdsnapd.host`);
    /// default: the host name.
    pub host_name: Option<String>,
    /// Also delete images another host's daemon made.
    pub delete_any_host: bool,
    /// Where to keep the Prometheus textfile (node_exporter's textfile
    /// collector); unset: none is written.
    pub metrics_textfile: Option<PathBuf>,
    /// How often the textfile is rewritten (also at the end of each job).
    pub metrics_interval_secs: f64,
    /// libvirt settings.
    pub libvirt: LibvirtConfig,
    /// Ceph settings.
    pub ceph: CephConfig,
    /// Snapshot workflow settings.
    pub snapshot: SnapshotConfig,
    /// Per-caller rules (`[[policy]]`); none: every caller may do everything.
    pub policy: Vec<PolicyRule>,
}

/// One `[[policy]]` rule: what the users and groups it names may do. A
/// caller named by several rules may do what any of them allows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyRule {
    /// Users (names or uids) the rule is for.
    pub users: Vec<String>,
    /// Groups (names or gids) whose members the rule is for.
    pub groups: Vec<String>,
    /// Domain name patterns (`*`, `?`) they may snapshot; unset: any.
    pub domains: Option<Vec<String>>,
    /// Destination pools they may write into; unset: any.
    pub pools: Option<Vec<String>>,
    /// Whether they may delete images (in `pools`).
    pub delete: bool,
    /// Whether they may also delete images another host made.
    pub delete_any_host: bool,
}

/// Log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// journald when started by systemd, text otherwise.
    Auto,
    /// Human-readable lines on stderr.
    Text,
    /// One JSON object per line on stderr.
    Json,
    /// The systemd journal.
    Journald,
}

/// `[libvirt]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LibvirtConfig {
    /// Connection URI.
    pub uri: String,
    /// Seconds the guest agent may take to answer (libvirt's default is to
    /// wait forever).
    pub agent_timeout_secs: f64,
}

/// `[ceph]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CephConfig {
    /// ceph.conf (mon addresses, keyring path, client timeouts).
    pub conf: PathBuf,
    /// cephx client id, without `client.`.
    pub client_id: String,
    /// librbd's `rbd_concurrent_management_ops`: how many objects one
    /// flatten copies at once (Ceph's default is 10).
    pub concurrent_management_ops: u32,
    /// librados' `rados_mon_op_timeout`: a monitor that does not answer a
    /// call within this many seconds fails it (0: ceph.conf's, else never).
    pub mon_op_timeout_secs: f64,
    /// librados' `rados_osd_op_timeout`: an OSD op not done within this many
    /// seconds fails (0: ceph.conf's). On a one-OSD cluster a dead OSD is
    /// never marked down, so without it calls hang for good.
    pub osd_op_timeout_secs: f64,
    /// librados' `client_mount_timeout`: how long a connect waits for the
    /// monitors (0: ceph.conf's; Ceph's own default is 300 s).
    pub mount_timeout_secs: f64,
}

impl CephConfig {
    /// The client options the daemon sets over ceph.conf's. The manager
    /// connection overrides `rados_mon_op_timeout` to 0 (see
    /// `CephStore::manager`): librados 16 writes a timed-out manager
    /// command's late reply into freed memory.
    pub fn client_options(&self) -> Vec<(&'static str, String)> {
        let mut options = vec![(
            "rbd_concurrent_management_ops",
            self.concurrent_management_ops.to_string(),
        )];
        for (key, secs) in [
            ("rados_mon_op_timeout", self.mon_op_timeout_secs),
            ("rados_osd_op_timeout", self.osd_op_timeout_secs),
            ("client_mount_timeout", self.mount_timeout_secs),
        ] {
            if secs > 0.0 {
                options.push((key, format!("{secs}")));
            }
        }
        options
    }
}

/// `[snapshot]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Destination when the request names no pool and the disk has no parent.
    pub default_pool: Option<String>,
    /// Quiesce policy when the request names none.
    pub quiesce: Quiesce,
    /// Longest the guest may stay frozen, in seconds.
    pub freeze_deadline_secs: f64,
    /// Deadline of each libvirt or Ceph call, in seconds.
    pub call_timeout_secs: f64,
    /// Deadline of a whole flatten, in seconds.
    pub flatten_timeout_secs: f64,
    /// A flatten without progress for this many seconds fails (an OSD gone).
    pub flatten_stall_secs: f64,
    /// `auto` (newest the cluster allows), `v1` or `v2`.
    pub clone_format: String,
    /// An image made with `flatten: none` is flattened once its source has
    /// had no client (no running instance) for this many seconds, so that
    /// the source can be removed; 0: never (its owner then flattens it
    /// before removing the source).
    pub release_none_after_secs: f64,
    /// Deprecated and ignored: a request now waits the agent timeout plus
    /// a second for its thaw to be confirmed, then leaves a thaw guard that
    /// retries for as long as the domain runs. Still accepted, so that
    /// existing configuration files load.
    pub thaw_confirm_secs: f64,
    /// Most flattens this host runs at once (more wait in a queue); 0 is no
    /// limit. `cluster` flattens run in the Ceph manager and do not count.
    pub max_concurrent_flattens: usize,
    /// A second snapshot of a domain that has one running: `reject` (answer
    /// `busy`) or `wait` for it. A request's `on_busy` overrides this.
    pub on_busy: OnBusy,
    /// Several disks that no freeze covers (quiesce off, no agent, a raw
    /// disk): `auto` pauses the vCPUs around their snapshots so that the
    /// set is one instant; `never` snapshots each disk at its own instant.
    pub pause_vcpus: PauseVcpus,
}

/// Whether the vCPUs are paused around the snapshots of several disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseVcpus {
    /// When several disks are not all under frozen filesystems.
    #[default]
    Auto,
    /// Never: each disk is its own instant.
    Never,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from("/run/rbdsnapd/rbdsnapd.sock"),
            socket_mode: "0660".into(),
            socket_group: None,
            allowed_users: Vec::new(),
            allowed_groups: Vec::new(),
            max_connections: 1024,
            max_connections_per_caller: 256,
            max_waiting_per_domain: 16,
            max_waiting_per_caller: 64,
            max_line_bytes: 64 * 1024,
            idle_timeout_secs: 600.0,
            state_dir: PathBuf::from("/var/lib/rbdsnapd"),
            log_format: LogFormat::Auto,
            sweep_orphans: "report".into(),
            shutdown_grace_secs: 30.0,
            jobs_kept: crate::journal::KEEP_ENDED,
            host_name: None,
            delete_any_host: false,
            metrics_textfile: None,
            metrics_interval_secs: 15.0,
            libvirt: LibvirtConfig::default(),
            ceph: CephConfig::default(),
            snapshot: SnapshotConfig::default(),
            policy: Vec::new(),
        }
    }
}

impl Default for LibvirtConfig {
    fn default() -> Self {
        LibvirtConfig {
            uri: "qemu:///system".into(),
            agent_timeout_secs: 5.0,
        }
    }
}

impl Default for CephConfig {
    fn default() -> Self {
        CephConfig {
            conf: PathBuf::from("/etc/ceph/ceph.conf"),
            client_id: "admin".into(),
            concurrent_management_ops: 10,
            mon_op_timeout_secs: 10.0,
            osd_op_timeout_secs: 30.0,
            mount_timeout_secs: 10.0,
        }
    }
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            default_pool: None,
            quiesce: Quiesce::Preferred,
            freeze_deadline_secs: 5.0,
            call_timeout_secs: 30.0,
            flatten_timeout_secs: 3600.0,
            flatten_stall_secs: 60.0,
            clone_format: "auto".into(),
            release_none_after_secs: 10.0,
            thaw_confirm_secs: 60.0,
            max_concurrent_flattens: 2,
            on_busy: OnBusy::Reject,
            pause_vcpus: PauseVcpus::Auto,
        }
    }
}

impl Config {
    /// Read `path`; a missing file is an error only when `explicit`.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Check ranges and consistency; call after overrides.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.socket.as_os_str().is_empty() || !self.socket.is_absolute() {
            return bad(format!("socket {:?} must be an absolute path", self.socket));
        }
        self.socket_mode_bits()?;
        if let Some(path) = &self.metrics_textfile {
            if !path.is_absolute() || path.file_name().is_none() {
                return bad(format!(
                    "metrics_textfile {path:?} must be an absolute file path"
                ));
            }
        }
        if self.max_connections == 0 || self.max_line_bytes < 1024 {
            return bad("max_connections must be > 0 and max_line_bytes >= 1024".into());
        }
        for (name, value) in [
            (
                "max_connections_per_caller",
                self.max_connections_per_caller,
            ),
            ("max_waiting_per_domain", self.max_waiting_per_domain),
            ("max_waiting_per_caller", self.max_waiting_per_caller),
        ] {
            if !(1..=1_000_000).contains(&value) {
                return bad(format!("{name} {value} is not 1-1000000"));
            }
        }
        for (name, secs, max) in [
            ("idle_timeout_secs", self.idle_timeout_secs, 86_400.0),
            ("shutdown_grace_secs", self.shutdown_grace_secs, 3600.0),
            ("metrics_interval_secs", self.metrics_interval_secs, 3600.0),
            (
                "libvirt.agent_timeout_secs",
                self.libvirt.agent_timeout_secs,
                600.0,
            ),
            (
                "snapshot.freeze_deadline_secs",
                self.snapshot.freeze_deadline_secs,
                600.0,
            ),
            (
                "snapshot.call_timeout_secs",
                self.snapshot.call_timeout_secs,
                3600.0,
            ),
            (
                "snapshot.flatten_timeout_secs",
                self.snapshot.flatten_timeout_secs,
                7.0 * 86_400.0,
            ),
            (
                "snapshot.flatten_stall_secs",
                self.snapshot.flatten_stall_secs,
                86_400.0,
            ),
            (
                "snapshot.thaw_confirm_secs",
                self.snapshot.thaw_confirm_secs,
                3600.0,
            ),
        ] {
            if !(secs > 0.0 && secs <= max) {
                return bad(format!("{name} = {secs} must be > 0 and <= {max}"));
            }
        }
        if self.libvirt.uri.is_empty() {
            return bad("libvirt.uri is empty".into());
        }
        for (name, secs) in [
            ("ceph.mon_op_timeout_secs", self.ceph.mon_op_timeout_secs),
            ("ceph.osd_op_timeout_secs", self.ceph.osd_op_timeout_secs),
            ("ceph.mount_timeout_secs", self.ceph.mount_timeout_secs),
        ] {
            if !(0.0..=3600.0).contains(&secs) {
                return bad(format!("{name} = {secs} must be 0 (ceph.conf's) to 3600"));
            }
        }
        if !(1..=1024).contains(&self.ceph.concurrent_management_ops) {
            return bad(format!(
                "ceph.concurrent_management_ops = {} must be 1 to 1024",
                self.ceph.concurrent_management_ops
            ));
        }
        if self.snapshot.max_concurrent_flattens > 1024 {
            return bad(format!(
                "snapshot.max_concurrent_flattens = {} must be 0 (no limit) to 1024",
                self.snapshot.max_concurrent_flattens
            ));
        }
        if self.ceph.client_id.is_empty() || self.ceph.client_id.starts_with("client.") {
            return bad(format!(
                "ceph.client_id {:?} must be the id without \"client.\"",
                self.ceph.client_id
            ));
        }
        if let Some(pool) = &self.snapshot.default_pool {
            crate::protocol::check_name("snapshot.default_pool", pool)
                .map_err(|e| ConfigError::Invalid(e.message))?;
        }
        self.clone_format()?;
        let release = self.snapshot.release_none_after_secs;
        if !(0.0..=30.0 * 86_400.0).contains(&release) {
            return bad(format!(
                "snapshot.release_none_after_secs {release} is not 0-2592000"
            ));
        }
        if !(1..=1_000_000).contains(&self.jobs_kept) {
            return bad(format!("jobs_kept {} is not 1-1000000", self.jobs_kept));
        }
        if !["report", "remove", "off"].contains(&self.sweep_orphans.as_str()) {
            return bad(format!(
                "sweep_orphans {:?} is not report, remove or off",
                self.sweep_orphans
            ));
        }
        Ok(())
    }

    /// The socket's permission bits.
    pub fn socket_mode_bits(&self) -> Result<u32, ConfigError> {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "socket_mode {:?} is not octal like \"0660\"",
                    self.socket_mode
                ))
            })
    }

    /// The clone format override, `None` for `auto`.
    pub fn clone_format(&self) -> Result<Option<CloneFormat>, ConfigError> {
        match self.snapshot.clone_format.as_str() {
            "auto" => Ok(None),
            "v1" => Ok(Some(CloneFormat::V1)),
            "v2" => Ok(Some(CloneFormat::V2)),
            other => Err(ConfigError::Invalid(format!(
                "snapshot.clone_format {other:?} is not auto, v1 or v2"
            ))),
        }
    }

    /// The name recorded on images as the host that made them.
    pub fn host_name(&self) -> String {
        self.host_name
            .clone()
            .or_else(|| {
                nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
            })
            .unwrap_or_else(|| "localhost".into())
    }

    /// The workflow settings this configuration asks for.
    pub fn settings(&self) -> crate::snapshot::Settings {
        let secs = Duration::from_secs_f64;
        crate::snapshot::Settings {
            default_pool: self.snapshot.default_pool.clone(),
            freeze_deadline: secs(self.snapshot.freeze_deadline_secs),
            agent_timeout: secs(self.libvirt.agent_timeout_secs),
            call_deadline: secs(self.snapshot.call_timeout_secs),
            flatten_deadline: secs(self.snapshot.flatten_timeout_secs),
            flatten_stall: secs(self.snapshot.flatten_stall_secs),
            clone_format: self.clone_format().ok().flatten(),
            host: self.host_name(),
            allowed_pools: None,
            pause_vcpus: self.snapshot.pause_vcpus == PauseVcpus::Auto,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    #[test]
    fn defaults_are_valid_and_a_full_file_parses() {
        Config::default().validate().expect("defaults");
        let cfg = parse(
            r#"socket = "/tmp/x.sock"
               allowed_users = ["nova", "1000"]
               [libvirt]
               uri = "test:///default"
               [ceph]
               conf = "/etc/ceph/c.conf"
               client_id = "nova"
               [snapshot]
               default_pool = "images"
               quiesce = "required"
               freeze_deadline_secs = 2.5
               clone_format = "v1""#,
        )
        .expect("valid");
        assert_eq!(cfg.snapshot.quiesce, Quiesce::Required);
        assert_eq!(cfg.settings().freeze_deadline, Duration::from_millis(2500));
        assert_eq!(cfg.clone_format().expect("format"), Some(CloneFormat::V1));
    }

    #[test]
    fn mistakes_are_refused_with_the_key_named() {
        for (text, needle) in [
            ("sockett = \"/x\"", "sockett"),
            ("socket = \"relative.sock\"", "absolute"),
            ("socket_mode = \"999\"", "socket_mode"),
            (
                "[snapshot]\nfreeze_deadline_secs = 0",
                "freeze_deadline_secs",
            ),
            ("[snapshot]\nquiesce = \"sometimes\"", "sometimes"),
            ("[snapshot]\ndefault_pool = \"a/b\"", "default_pool"),
            ("[ceph]\nclient_id = \"client.admin\"", "client_id"),
            ("[snapshot]\nclone_format = \"v3\"", "clone_format"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
