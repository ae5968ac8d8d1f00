//! A running daemon: readiness, signals, its exit, and its log shown
//! in every failure (with the backtrace of a crash).

#[allow(unused_imports)]
use super::*;

/// How much of a daemon's log a failing test prints.
pub(super) const LOG_TAIL_LINES: usize = 60;

/// A running daemon; SIGTERM (then SIGKILL after [`STOP_DEADLINE`]) on drop.
#[derive(Debug)]
pub struct DaemonProc {
    pub(super) child: Option<Child>,
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
