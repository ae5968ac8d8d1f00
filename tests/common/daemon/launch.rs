//! Starting a daemon: its configuration in a fresh directory (the
//! bed's values, a test's extra TOML merged over them), its environment,
//! and a core dump kept where a failing test can read its backtrace.

#[allow(unused_imports)]
use super::*;

/// How to start one daemon.
#[derive(Debug, Clone)]
pub struct Launch {
    pub(super) libvirt_uri: String,
    pub(super) ceph_conf: PathBuf,
    pub(super) ceph_id: String,
    pub(super) extra_toml: String,
    pub(super) env: Vec<(String, String)>,
    pub(super) activate: bool,
    pub(super) wait_ready: bool,
    /// Another daemon binary (the release build) than the test build's.
    pub(super) exe: Option<PathBuf>,
}

impl Launch {
    /// TOML merged over the harness's configuration (top-level keys and
    /// tables alike; a key given here wins).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra_toml.push('\n');
        self.extra_toml.push_str(toml);
        self
    }

    /// Another cephx user for the daemon (its keyring next to ceph.conf,
    /// see [`super::super::Ceph::user_with_caps`]).
    pub fn ceph_id(mut self, id: &str) -> Self {
        self.ceph_id = id.to_string();
        self
    }

    /// Another libvirt URI (the real guest's `qemu:///system`).
    pub fn libvirt_uri(mut self, uri: &str) -> Self {
        self.libvirt_uri = uri.to_string();
        self
    }

    /// Another ceph.conf.
    pub fn ceph_conf(mut self, path: &Path) -> Self {
        self.ceph_conf = path.to_path_buf();
        self
    }

    /// An environment variable for the daemon.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Start it under `systemd-socket-activate -l <socket>`: the daemon gets
    /// the listener through LISTEN_FDS and its config's `socket` points
    /// elsewhere (to a path that must stay unused).
    pub fn socket_activated(mut self) -> Self {
        self.activate = true;
        self
    }

    /// Run this daemon binary (e.g. the release build) instead of the
    /// test build's.
    pub fn exe(mut self, path: &Path) -> Self {
        self.exe = Some(path.to_path_buf());
        self
    }

    /// Do not wait for the first answer in [`Launch::start`].
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    /// The daemon's configuration: the bed's backends, a private state
    /// directory, and `release_none_after_secs = 0` — the bed's test-driver
    /// domains never open their disks, so every `flatten: none` source
    /// would look idle at once; the tests of that release ask for it.
    fn config_text(&self, dir: &Path, socket: &Path) -> String {
        let mut config: toml::Table = toml::from_str(&format!(
            r#"
            socket = {socket:?}
            state_dir = {state:?}
            log_format = "text"
            [libvirt]
            uri = {uri:?}
            [ceph]
            conf = {conf:?}
            client_id = {id:?}
            [snapshot]
            default_pool = "images"
            release_none_after_secs = 0
            "#,
            socket = socket.display().to_string(),
            state = dir.join("state").display().to_string(),
            uri = self.libvirt_uri,
            conf = self.ceph_conf.display().to_string(),
            id = self.ceph_id,
        ))
        .expect("the harness's own TOML parses");
        let extra: toml::Table = toml::from_str(&self.extra_toml)
            .unwrap_or_else(|e| panic!("extra TOML of the test: {e}\n{}", self.extra_toml));
        merge(&mut config, extra);
        toml::to_string(&config).expect("TOML serialises")
    }

    /// Write the configuration, spawn the daemon, and (unless
    /// [`Launch::no_wait`]) wait until it answers `daemon.status`.
    pub fn start(self) -> DaemonProc {
        let dir = TempDir::new("rbdsnapd-daemon");
        let socket = dir.path().join("rbdsnapd.sock");
        let own_socket = if self.activate {
            dir.path().join("unused.sock")
        } else {
            socket.clone()
        };
        let config = dir.path().join("rbdsnapd.toml");
        std::fs::write(&config, self.config_text(dir.path(), &own_socket)).expect("write config");
        let log = dir.path().join("daemon.log");
        let stderr = std::fs::File::create(&log).expect("create log");
        let exe = self
            .exe
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rbdsnapd")));
        let exe = exe.display().to_string();
        let mut command = if self.activate {
            let mut c = Command::new("systemd-socket-activate");
            c.arg("-l").arg(&socket).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        command
            .arg("--config")
            .arg(&config)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("dup log"))
            .stderr(stderr);
        keep_core_dumps(&mut command, dir.path());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {exe}: {e}"));
        let mut daemon = DaemonProc {
            child: Some(child),
            socket,
            config,
            log,
            dir,
        };
        if self.wait_ready {
            daemon.wait_ready(READY_DEADLINE);
        }
        daemon
    }
}

/// Deep-merge `extra` into `base`: tables merge, other values replace.
pub(super) fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(into)), toml::Value::Table(from)) => merge(into, from),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// A daemon that dies by a signal leaves its core in its own directory
/// (where the kernel's default `core` pattern puts it), so a failing test
/// can say where it crashed: CI keeps only the output.
pub(super) fn keep_core_dumps(command: &mut Command, dir: &Path) {
    use std::os::unix::process::CommandExt;
    command.current_dir(dir);
    // SAFETY: only setrlimit(2), async-signal-safe, runs between fork and
    // exec; nothing is allocated.
    unsafe {
        command.pre_exec(|| {
            let unlimited = nix::sys::resource::RLIM_INFINITY;
            let _ = nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_CORE,
                unlimited,
                unlimited,
            );
            Ok(())
        });
    }
}

/// The crashing thread's stack, read by gdb from the core in `dir`.
pub(super) fn crash_backtrace(dir: &Path) -> String {
    let core = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == "core" || n.starts_with("core."))
        });
    let Some(core) = core else {
        return format!(
            "(no core file in {}: see /proc/sys/kernel/core_pattern)",
            dir.display()
        );
    };
    let gdb = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "bt 40"])
        .arg(env!("CARGO_BIN_EXE_rbdsnapd"))
        .arg(&core)
        .output();
    match gdb {
        Ok(out) => format!(
            "----- backtrace of the crash ({}) -----\n{}-----",
            core.display(),
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(e) => format!("(gdb could not read {}: {e})", core.display()),
    }
}
