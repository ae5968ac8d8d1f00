//! `rbdsnapd`, the daemon: configuration, logging, then [`rbdsnapd::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rbdsnapd::config::{Config, LogFormat, DEFAULT_PATH, EXIT_CONFIG};
use rbdsnapd::snapshot::QuiescePolicy;

/// Command line: a config file, and overrides of its most used keys.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Quiesced RBD direct snapshots of running libvirt/QEMU guests, over a Unix socket"
)]
struct Args {
    /// Configuration file (TOML). Missing is fine only for the default path.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
    /// Socket path (`socket`).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// libvirt URI (`libvirt.uri`).
    #[arg(long, value_name = "URI")]
    libvirt_uri: Option<String>,
    /// ceph.conf (`ceph.conf`).
    #[arg(long, value_name = "PATH")]
    ceph_conf: Option<PathBuf>,
    /// cephx client id without `client.` (`ceph.client_id`).
    #[arg(long, value_name = "ID")]
    ceph_id: Option<String>,
    /// Default destination pool (`snapshot.default_pool`).
    #[arg(long, value_name = "POOL")]
    default_pool: Option<String>,
    /// Default quiesce policy (`snapshot.quiesce`).
    #[arg(long, value_name = "POLICY", value_parser = ["required", "preferred", "off"])]
    quiesce: Option<String>,
    /// Freeze deadline in seconds (`snapshot.freeze_deadline_secs`).
    #[arg(long, value_name = "SECS")]
    freeze_deadline: Option<f64>,
    /// Guest agent timeout in seconds (`libvirt.agent_timeout_secs`).
    #[arg(long, value_name = "SECS")]
    agent_timeout: Option<f64>,
    /// State directory (`state_dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Log format (`log_format`).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Allow this user (name or uid); repeatable, adds to `allowed_users`.
    #[arg(long, value_name = "USER")]
    allow_user: Vec<String>,
    /// Allow this group (name or gid); repeatable, adds to `allowed_groups`.
    #[arg(long, value_name = "GROUP")]
    allow_group: Vec<String>,
}

impl Args {
    fn apply(self, mut c: Config) -> Config {
        c.socket = self.socket.unwrap_or(c.socket);
        c.libvirt.uri = self.libvirt_uri.unwrap_or(c.libvirt.uri);
        c.ceph.conf = self.ceph_conf.unwrap_or(c.ceph.conf);
        c.ceph.client_id = self.ceph_id.unwrap_or(c.ceph.client_id);
        c.snapshot.default_pool = self.default_pool.or(c.snapshot.default_pool);
        c.snapshot.quiesce = match self.quiesce.as_deref() {
            Some("required") => QuiescePolicy::Required,
            Some("off") => QuiescePolicy::Off,
            Some(_) => QuiescePolicy::Preferred,
            None => c.snapshot.quiesce,
        };
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

fn main() -> ExitCode {
    // before any thread exists: sd_notify reads and clears LISTEN_FDS
    let activated = match rbdsnapd::systemd::activated_listener() {
        Ok(listener) => listener,
        Err(e) => return fail(format!("socket activation: {e}")),
    };
    let mut args = Args::parse();
    let (path, explicit) = match args.config.take() {
        Some(path) => (path, true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    let check_only = args.check_config;
    let config = match Config::load(&path, explicit).map(|c| args.apply(c)) {
        Ok(config) => config,
        Err(e) => return config_error(e),
    };
    if let Err(e) = config.validate() {
        return config_error(e);
    }
    if check_only {
        println!("{config:#?}");
        return ExitCode::SUCCESS;
    }
    rbdsnapd::logging::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("tokio runtime: {e}")),
    };
    match runtime.block_on(rbdsnapd::run::run(config, activated)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(rbdsnapd::run::RunError::Config(e)) => config_error(e),
        Err(e) => fail(e.to_string()),
    }
}

fn config_error(e: rbdsnapd::config::ConfigError) -> ExitCode {
    fail(e.to_string());
    ExitCode::from(EXIT_CONFIG)
}

fn fail(message: String) -> ExitCode {
    eprintln!("rbdsnapd: {message}");
    tracing::error!("{message}");
    ExitCode::FAILURE
}
