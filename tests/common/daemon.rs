//! The daemon binary as the tests drive it: a configuration in a fresh
//! temporary directory, the process with its log captured (and shown in
//! every failure), readiness by polling the socket, and a line-oriented
//! JSON-RPC client over a plain `UnixStream` with read timeouts.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

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

/// How to start one daemon.
#[derive(Debug, Clone)]
pub struct Launch {
    libvirt_uri: String,
    ceph_conf: PathBuf,
    ceph_id: String,
    extra_toml: String,
    env: Vec<(String, String)>,
    activate: bool,
    wait_ready: bool,
    /// Another daemon binary (the release build) than the test build's.
    exe: Option<PathBuf>,
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
    /// see [`super::Ceph::user_with_caps`]).
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
fn merge(base: &mut toml::Table, extra: toml::Table) {
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
fn keep_core_dumps(command: &mut Command, dir: &Path) {
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
fn crash_backtrace(dir: &Path) -> String {
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

/// How much of a daemon's log a failing test prints.
const LOG_TAIL_LINES: usize = 60;

/// A running daemon; SIGTERM (then SIGKILL after [`STOP_DEADLINE`]) on drop.
#[derive(Debug)]
pub struct DaemonProc {
    child: Option<Child>,
    /// Where clients connect.
    pub socket: PathBuf,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its stdout + stderr.
    pub log: PathBuf,
    /// The temporary directory holding all of it.
    pub dir: TempDir,
}

impl DaemonProc {
    /// A daemon on the bed (see [`Bed::start`]).
    pub fn start(bed: &Bed, extra_toml: &str) -> DaemonProc {
        bed.start(extra_toml)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> i32 {
        let child = self.child.as_ref().expect("daemon still owned");
        i32::try_from(child.id()).expect("pid fits in i32")
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// On a failing test: whether the daemon still ran, and the end of its
    /// log (CI keeps only the test's output, not the kept directory).
    fn print_log_tail(&self, exited: Option<ExitStatus>) {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        let state = exited.map_or("still running".to_string(), |s| format!("exited: {s}"));
        eprintln!(
            "----- daemon {} ({state}), last {} lines of {} -----\n{tail}\n-----",
            self.socket.display(),
            LOG_TAIL_LINES.min(lines.len()),
            self.log.display()
        );
        if exited.is_some_and(|s| std::os::unix::process::ExitStatusExt::core_dumped(&s)) {
            eprintln!("{}", crash_backtrace(self.dir.path()));
        }
    }

    /// Panic with `what` and the daemon's log.
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\n----- daemon log {} -----\n{}\n-----",
            self.log.display(),
            self.log()
        )
    }

    /// Wait until a connection gets an answer to `daemon.status`; fail with
    /// the log when the process exits or `deadline` passes first.
    pub fn wait_ready(&mut self, deadline: Duration) {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.try_wait() {
                self.fail(&format!("the daemon exited before it served: {status}"));
            }
            if Instant::now() >= until {
                self.fail(&format!("the daemon did not answer within {deadline:?}"));
            }
            if let Ok(stream) = UnixStream::connect(&self.socket) {
                // bound but maybe still connecting its backends: the first
                // answer comes once it serves
                let left = until.saturating_duration_since(Instant::now());
                let mut conn = Conn::from_stream(stream, left.max(POLL));
                match conn.try_call("daemon.status", json!({})) {
                    Ok(resp) if resp.is_ok() => return,
                    Ok(resp) => self.fail(&format!("first daemon.status failed: {resp:?}")),
                    Err(Msg::Eof) => {} // closed while starting: try again
                    Err(other) => self.fail(&format!("first daemon.status: {other:?}")),
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// Wait (60 s at most) until `RBDSNAPD_TEST_PAUSE_AT` made this
    /// daemon pause: its marker file `path` appears.
    pub fn wait_paused(&self, path: &Path) {
        let until = Instant::now() + Duration::from_secs(60);
        while !path.exists() {
            if Instant::now() > until {
                self.fail(&format!("never paused: {} did not appear", path.display()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A new connection, or a failure with the log.
    pub fn connect(&self) -> Conn {
        match UnixStream::connect(&self.socket) {
            Ok(stream) => Conn::from_stream(stream, READ_TIMEOUT),
            Err(e) => self.fail(&format!("connect {}: {e}", self.socket.display())),
        }
    }

    /// `daemon.status` on a new connection, which must succeed.
    pub fn status(&self) -> Value {
        let resp = self.connect().call("daemon.status", json!({}));
        if !resp.is_ok() {
            self.fail(&format!("daemon.status failed: {resp:?}"));
        }
        resp.result().clone()
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("waitpid")
    }

    /// Send `signal` to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal)
            .unwrap_or_else(|e| panic!("kill -{signal} {}: {e}", self.pid()));
    }

    /// Wait for the process to exit within `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM and wait for the exit (failing with the log, after a
    /// SIGKILL, when it does not come within [`STOP_DEADLINE`]).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        match self.wait_exit(STOP_DEADLINE) {
            Some(status) => status,
            None => {
                let _ = self.child.as_mut().map(Child::kill);
                let _ = self.child.as_mut().map(Child::wait);
                self.fail(&format!(
                    "the daemon did not exit within {STOP_DEADLINE:?} of SIGTERM (killed)"
                ))
            }
        }
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let exited = child.try_wait().ok().flatten();
        if std::thread::panicking() {
            self.print_log_tail(exited);
        }
        if exited.is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let until = Instant::now() + STOP_DEADLINE;
        while Instant::now() < until {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(POLL);
        }
        eprintln!(
            "daemon {} ignored SIGTERM for {STOP_DEADLINE:?}: killing it",
            child.id()
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// What reading a connection produced, other than a message.
#[derive(Debug)]
pub enum Msg {
    /// A JSON message.
    Message(Value),
    /// The daemon closed the connection.
    Eof,
    /// Nothing complete arrived in time.
    Timeout,
    /// The connection failed.
    Error(String),
}

/// An answer to a request.
#[derive(Debug, Clone)]
pub struct Response(pub Value);

impl Response {
    /// The answer's id.
    pub fn id(&self) -> &Value {
        &self.0["id"]
    }

    /// Whether it carries a result (and no error).
    pub fn is_ok(&self) -> bool {
        self.0.get("result").is_some() && self.0.get("error").is_none()
    }

    /// The result; panics with the answer when it is an error.
    pub fn result(&self) -> &Value {
        assert!(self.is_ok(), "expected a result, got {}", self.0);
        &self.0["result"]
    }

    /// The error object; panics with the answer when it is a result.
    pub fn error(&self) -> &Value {
        assert!(
            self.0.get("error").is_some() && self.0.get("result").is_none(),
            "expected an error, got {}",
            self.0
        );
        &self.0["error"]
    }

    /// The error's `data.kind`.
    pub fn kind(&self) -> &str {
        self.error()["data"]["kind"].as_str().unwrap_or_default()
    }

    /// The error's numeric code.
    pub fn code(&self) -> i64 {
        self.error()["code"].as_i64().unwrap_or_default()
    }

    /// Assert this is the error `kind` with `code`, with a message.
    pub fn assert_error(&self, code: i64, kind: &str, context: &str) {
        let error = self.error();
        assert_eq!(
            (self.code(), self.kind()),
            (code, kind),
            "{context}: {}",
            self.0
        );
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{context}: error without a message: {}",
            self.0
        );
        assert_eq!(self.0["jsonrpc"], "2.0", "{context}: {}", self.0);
    }
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    partial: Vec<u8>,
    next_id: u64,
    /// Wait for one message at most this long.
    pub timeout: Duration,
    /// Notifications seen while waiting for answers, in arrival order.
    pub notifications: Vec<Value>,
    /// Answers to other ids seen while waiting, in arrival order.
    stash: VecDeque<Value>,
    /// The method of each request sent, by its id as JSON: answers are
    /// checked against that method's schema in the OpenRPC document.
    methods: HashMap<String, String>,
}

impl Conn {
    /// Wrap a connected stream.
    pub fn from_stream(stream: UnixStream, timeout: Duration) -> Conn {
        let writer = stream.try_clone().expect("dup stream");
        Conn {
            reader: BufReader::new(stream),
            writer,
            partial: Vec::new(),
            next_id: 1,
            timeout,
            notifications: Vec::new(),
            stash: VecDeque::new(),
            methods: HashMap::new(),
        }
    }

    /// Remember the method of a request line, if it is one.
    fn remember(&mut self, bytes: &[u8]) {
        let Ok(request) = serde_json::from_slice::<Value>(bytes) else {
            return;
        };
        if let (Some(id), Some(method)) = (request.get("id"), request["method"].as_str()) {
            self.methods.insert(id.to_string(), method.to_string());
        }
    }

    /// Hold a message to the published protocol (tests/common/openrpc.rs).
    fn conform(&self, message: &Value) {
        let method = message
            .get("id")
            .and_then(|id| self.methods.get(&id.to_string()))
            .map(String::as_str);
        if let Some(wrong) = super::openrpc::protocol().check(method, message) {
            panic!("the daemon's message does not follow docs/openrpc.json: {wrong}\n{message}");
        }
    }

    /// Write `bytes` and a newline.
    pub fn send_line(&mut self, bytes: &[u8]) {
        self.remember(bytes);
        let mut line = bytes.to_vec();
        line.push(b'\n');
        self.send_raw(&line);
    }

    /// Write `bytes` as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to the daemon");
    }

    /// Close our writing side (the daemon reads EOF).
    pub fn shutdown_write(&mut self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Write);
    }

    /// Send a request with `id` without waiting.
    pub fn send_request(&mut self, id: &Value, method: &str, params: Value) {
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_line(request.to_string().as_bytes());
    }

    /// Next message from the wire (stashed answers first), waiting at most
    /// `timeout`.
    pub fn read_message(&mut self, timeout: Duration) -> Msg {
        if let Some(v) = self.stash.pop_front() {
            return Msg::Message(v);
        }
        self.read_wire(timeout)
    }

    fn read_wire(&mut self, timeout: Duration) -> Msg {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Msg::Timeout;
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .expect("set read timeout");
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(0) if self.partial.is_empty() => return Msg::Eof,
                Ok(0) => {
                    let line = std::mem::take(&mut self.partial);
                    return Msg::Error(format!(
                        "connection closed inside a line: {}",
                        String::from_utf8_lossy(&line)
                    ));
                }
                Ok(_) if self.partial.last() == Some(&b'\n') => {
                    let line = std::mem::take(&mut self.partial);
                    return match serde_json::from_slice(&line) {
                        Ok(v) => {
                            self.conform(&v);
                            Msg::Message(v)
                        }
                        Err(e) => Msg::Error(format!(
                            "the daemon sent a line that is not JSON ({e}): {}",
                            String::from_utf8_lossy(&line)
                        )),
                    };
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Msg::Timeout
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Msg::Eof,
                Err(e) => return Msg::Error(e.to_string()),
            }
        }
    }

    /// Next answer (whatever its id), collecting notifications on the way.
    pub fn read_answer(&mut self, timeout: Duration) -> Msg {
        loop {
            match self.read_message(timeout) {
                Msg::Message(m) if m.get("method").is_some() && m.get("id").is_none() => {
                    self.notifications.push(m);
                }
                other => return other,
            }
        }
    }

    /// Wait for the answer to `id`: notifications are collected in
    /// [`Conn::notifications`], answers to other ids kept for later reads.
    pub fn try_wait_for(&mut self, id: &Value) -> Result<Response, Msg> {
        if let Some(pos) = self.stash.iter().position(|m| &m["id"] == id) {
            let found = self.stash.remove(pos).expect("stashed answer");
            return Ok(Response(found));
        }
        loop {
            match self.read_wire(self.timeout) {
                Msg::Message(m) if m.get("method").is_some() && m.get("id").is_none() => {
                    self.notifications.push(m);
                }
                Msg::Message(m) if &m["id"] == id => return Ok(Response(m)),
                Msg::Message(m) => self.stash.push_back(m),
                other => return Err(other),
            }
        }
    }

    /// [`Conn::try_wait_for`], panicking when no answer comes.
    pub fn wait_for(&mut self, id: &Value) -> Response {
        self.try_wait_for(id)
            .unwrap_or_else(|m| panic!("no answer to id {id}: {m:?}"))
    }

    /// A fresh numeric id.
    pub fn fresh_id(&mut self) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        json!(id)
    }

    /// Send `method` with `params` and wait for its answer.
    pub fn try_call(&mut self, method: &str, params: Value) -> Result<Response, Msg> {
        let id = self.fresh_id();
        self.send_request(&id, method, params);
        self.try_wait_for(&id)
    }

    /// [`Conn::try_call`], panicking when no answer comes.
    pub fn call(&mut self, method: &str, params: Value) -> Response {
        self.try_call(method, params)
            .unwrap_or_else(|m| panic!("no answer to {method}: {m:?}"))
    }

    /// Send a `snapshot.create` without waiting; its request id.
    pub fn send_create(&mut self, params: Value) -> Value {
        let id = self.fresh_id();
        self.send_request(&id, "snapshot.create", params);
        id
    }

    /// Read until request `id` reports `phase`; its job id. An answer
    /// first (other than to another id, kept for later) is an error.
    pub fn until_phase(&mut self, id: &Value, phase: &str) -> Result<String, String> {
        loop {
            match self.read_message(self.timeout) {
                Msg::Message(m) if m["params"]["id"] == *id && m["params"]["phase"] == phase => {
                    return Ok(m["params"]["job_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string());
                }
                Msg::Message(m) if m["id"] == *id => {
                    return Err(format!("answered before phase {phase}: {m}"))
                }
                Msg::Message(m) if m.get("id").is_some() => self.stash.push_back(m),
                Msg::Message(m) => self.notifications.push(m),
                other => return Err(format!("no {phase} progress: {other:?}")),
            }
        }
    }

    /// Progress notifications collected so far for request `id`.
    pub fn progress_of(&self, id: &Value) -> Vec<Value> {
        self.notifications
            .iter()
            .filter(|n| n["method"] == "progress" && &n["params"]["id"] == id)
            .cloned()
            .collect()
    }
}

/// What a client run as another user got.
#[derive(Debug)]
pub struct Foreign {
    /// The messages received.
    pub messages: Vec<Value>,
    /// Whether the daemon closed the connection (rather than the client
    /// stopping after the first line).
    pub closed: bool,
}

/// Run a one-shot client as `uid`/`gid` (a child process, so the daemon
/// sees those credentials): connect to `socket`, send `line`, read until
/// the answer (after any progress notes) or EOF (within 60 s).
pub fn call_as(uid: u32, gid: u32, socket: &Path, line: &str) -> Foreign {
    call_as_member(uid, gid, &[], socket, line)
}

/// Like [`call_as`], the client also in the supplementary `groups`.
pub fn call_as_member(uid: u32, gid: u32, groups: &[u32], socket: &Path, line: &str) -> Foreign {
    use std::os::unix::process::CommandExt;
    let groups: Vec<nix::unistd::Gid> = groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    let script = r##"
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(60)
s.connect(sys.argv[1])
try:
    s.sendall(sys.argv[2].encode() + b"\n")
except (BrokenPipeError, ConnectionResetError):
    pass  # refused peers are answered and cut off without being read

def answered(data):
    # progress notes may come first: stop at the answer (or anything odd)
    for line in data.split(b"\n")[:-1]:
        try:
            message = json.loads(line)
        except ValueError:
            return True
        if "result" in message or "error" in message:
            return True
    return False

data = b""
closed = False
while not answered(data):
    try:
        chunk = s.recv(65536)
    except ConnectionResetError:
        chunk = b""
    if not chunk:
        closed = True
        break
    data += chunk
if not closed:
    # the daemon closes at once after a refusal: wait briefly for the EOF
    s.settimeout(2)
    try:
        closed = s.recv(65536) == b""
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        pass
sys.stdout.write(data.decode())
sys.stdout.write("#closed\n" if closed else "#open\n")
"##;
    let mut command = Command::new("/usr/bin/python3");
    command
        .args(["-c", script])
        .arg(socket)
        .arg(line)
        .current_dir("/");
    // SAFETY: only async-signal-safe system calls between fork and exec
    unsafe {
        command.pre_exec(move || {
            use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
            setgroups(&groups)?;
            setgid(Gid::from_raw(gid))?;
            setuid(Uid::from_raw(uid))?;
            Ok(())
        });
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .expect("run python3 as another user");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client as {uid}:{gid} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut messages = Vec::new();
    let mut closed = None;
    let method = serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|r| r["method"].as_str().map(String::from));
    for l in stdout.lines() {
        match l {
            "#closed" => closed = Some(true),
            "#open" => closed = Some(false),
            _ => {
                let message: Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
                if let Some(wrong) = super::openrpc::protocol().check(method.as_deref(), &message) {
                    panic!("the daemon's message does not follow docs/openrpc.json: {wrong}\n{message}");
                }
                messages.push(message);
            }
        }
    }
    Foreign {
        messages,
        closed: closed.expect("the client reports whether the connection closed"),
    }
}

/// Removes an image a test may have made (with its snapshots) when dropped,
/// also when the test fails half-way.
#[derive(Debug)]
pub struct ImageCleanup {
    ceph: super::Ceph,
    /// Pool.
    pub pool: String,
    /// Image name.
    pub name: String,
}

impl ImageCleanup {
    /// Guard `pool/name`.
    pub fn new(ceph: &super::Ceph, pool: &str, name: &str) -> ImageCleanup {
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
            super::engine::remove(&super::engine::store(&self.ceph), &self.pool, &self.name);
        }
    }
}

/// Temporary snapshots (`rbdsnapd-tmp-…`) left on `image`.
pub fn temp_snapshots(ceph: &super::Ceph, image: &str) -> Vec<String> {
    ceph.snapshots(image)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("rbdsnapd-tmp"))
        .collect()
}
