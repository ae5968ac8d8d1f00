//! Hangs on the bed: SIGSTOP of its mon, OSD or libvirtd (SIGCONT on drop,
//! whatever the test does), and a prober that asks `daemon.status` on a
//! fresh connection every 250 ms and listens to the daemon's watchdog
//! keepalives, to show the daemon is never wedged while something hangs.

#![allow(dead_code)]

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The registry where beds record the libvirtd they started.
const LIBVIRTD_REGISTRY: &str = "/run/rbdsnapd-testbed/libvirtd.json";

/// The pid of a bed daemon: `mon`, `osd.0`, `mgr` (the bed's state.json)
/// or `libvirtd` (the beds' libvirtd registry).
pub fn bed_pid(name: &str) -> i32 {
    let (path, pointer) = if name == "libvirtd" {
        (
            PathBuf::from(LIBVIRTD_REGISTRY),
            "/started/libvirtd".to_string(),
        )
    } else {
        let bed = std::env::var("RBDSNAPD_TEST_BED").expect("RBDSNAPD_TEST_BED");
        (
            Path::new(&bed).join("state.json"),
            format!("/cluster/pids/{name}"),
        )
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let state: serde_json::Value = serde_json::from_str(&text).expect("bed state JSON");
    state
        .pointer(&pointer)
        .and_then(serde_json::Value::as_i64)
        .unwrap_or_else(|| panic!("no pid for {name} in {path:?}")) as i32
}

/// A bed daemon stopped with SIGSTOP; continued on [`Stopped::resume`] or drop.
#[derive(Debug)]
pub struct Stopped {
    name: String,
    pid: i32,
    resumed: bool,
}

impl Stopped {
    /// SIGSTOP the bed's `name`.
    pub fn stop(name: &str) -> Stopped {
        let pid = bed_pid(name);
        kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap_or_else(|e| panic!("SIGSTOP {name}: {e}"));
        eprintln!("hang: {name} (pid {pid}) stopped");
        Stopped {
            name: name.to_string(),
            pid,
            resumed: false,
        }
    }

    /// SIGCONT it; the moment it was continued.
    pub fn resume(mut self) -> Instant {
        self.cont();
        Instant::now()
    }

    fn cont(&mut self) {
        if !self.resumed {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGCONT);
            self.resumed = true;
            eprintln!("hang: {} (pid {}) continued", self.name, self.pid);
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.cont();
    }
}

/// A notify socket for a daemon (`NOTIFY_SOCKET`), read by a [`Prober`].
pub fn notify_socket(dir: &Path) -> (UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    (sock, path.display().to_string())
}

/// Probes a daemon until finished.
#[derive(Debug)]
pub struct Prober {
    stop: Arc<AtomicBool>,
    probes: JoinHandle<(Vec<Duration>, Vec<String>)>,
    watchdog: Option<JoinHandle<(Vec<Instant>, Vec<String>)>>,
    started: Instant,
}

/// What the probes saw.
#[derive(Debug)]
pub struct ProbeReport {
    /// Probes made.
    pub count: usize,
    /// 99th percentile of a fresh connection's `daemon.status`.
    pub p99: Duration,
    /// The slowest probe.
    pub max: Duration,
    /// Probes that failed (connect refused, error, no answer in 2 s).
    pub failures: Vec<String>,
    /// Longest time without a `WATCHDOG=1` (from the start of probing).
    pub watchdog_gap: Option<Duration>,
    /// Every notify message received.
    pub notices: Vec<String>,
}

fn probe_once(socket: &Path) -> Result<Duration, String> {
    let started = Instant::now();
    let stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    let mut conn = super::daemon::Conn::from_stream(stream, Duration::from_secs(2));
    let resp = conn
        .try_call("daemon.status", serde_json::json!({}))
        .map_err(|m| format!("{m:?}"))?;
    if !resp.is_ok() {
        return Err(format!("{:?}", resp.0));
    }
    Ok(started.elapsed())
}

impl Prober {
    /// Probe `socket` every 250 ms; with `notify`, also collect its messages.
    pub fn start(socket: PathBuf, notify: Option<UnixDatagram>) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let probes = std::thread::spawn(move || {
            let (mut times, mut failures) = (Vec::new(), Vec::new());
            while !flag.load(Ordering::SeqCst) {
                match probe_once(&socket) {
                    Ok(took) => times.push(took),
                    Err(e) => failures.push(e),
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            (times, failures)
        });
        let flag = Arc::clone(&stop);
        let watchdog = notify.map(|sock| {
            std::thread::spawn(move || {
                sock.set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                let (mut pings, mut all) = (Vec::new(), Vec::new());
                let mut buf = vec![0u8; 4096];
                while !flag.load(Ordering::SeqCst) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                        if msg.lines().any(|l| l == "WATCHDOG=1") {
                            pings.push(Instant::now());
                        }
                        all.push(msg);
                    }
                }
                (pings, all)
            })
        });
        Prober {
            stop,
            probes,
            watchdog,
            started: Instant::now(),
        }
    }

    /// Stop probing; what was seen.
    pub fn finish(self) -> ProbeReport {
        self.stop.store(true, Ordering::SeqCst);
        let (mut times, failures) = self.probes.join().expect("prober");
        times.sort();
        let pick = |q: f64| {
            times
                .get(((times.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        let (watchdog_gap, notices) = match self.watchdog {
            Some(thread) => {
                let (pings, all) = thread.join().expect("watchdog reader");
                let mut last = self.started;
                let mut gap = Duration::ZERO;
                for ping in pings {
                    gap = gap.max(ping.saturating_duration_since(last));
                    last = ping;
                }
                gap = gap.max(last.elapsed());
                (Some(gap), all)
            }
            None => (None, Vec::new()),
        };
        ProbeReport {
            count: times.len() + failures.len(),
            p99: pick(0.99),
            max: pick(1.0),
            failures,
            watchdog_gap,
            notices,
        }
    }
}

impl ProbeReport {
    /// The daemon stayed responsive: every probe answered, p99 under
    /// 100 ms, and (with a watchdog) no keepalive later than `watchdog`.
    pub fn assert_responsive(&self, what: &str, watchdog: Duration) {
        eprintln!(
            "hang: {what}: {} probes, p99 {:?}, max {:?}, watchdog gap {:?}",
            self.count, self.p99, self.max, self.watchdog_gap
        );
        assert!(
            self.failures.is_empty(),
            "{what}: probes failed: {:?}",
            self.failures
        );
        assert!(self.count >= 4, "{what}: too few probes ({})", self.count);
        assert!(
            self.p99 < Duration::from_millis(100),
            "{what}: daemon.status p99 {:?}",
            self.p99
        );
        if let Some(gap) = self.watchdog_gap {
            assert!(
                gap < watchdog,
                "{what}: no WATCHDOG=1 for {gap:?} (limit {watchdog:?})"
            );
        }
    }
}

/// `ceph` CLI against the bed's cluster: its stdout, or why not.
fn ceph_cli(ceph: &super::Ceph, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("timeout")
        .args(["30", "ceph", "--conf", &ceph.conf, "--id", &ceph.admin_id])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// The bed's one OSD can leave placement groups `laggy` after a daemon of
/// the bed was stopped: their read lease is never renewed (no peer renews
/// it), and every op on them waits "for readable" for ever — seen here
/// after the hang tests, with all later suites failing. Not the daemon's
/// doing, and not what a replicated cluster does: mark the OSD down so it
/// re-peers (it comes straight back up), and wait until no PG is laggy.
pub fn heal_laggy_pgs(ceph: &super::Ceph) {
    let laggy = || {
        ceph_cli(ceph, &["pg", "ls", "laggy", "--format", "json"])
            .ok()
            .and_then(|out| serde_json::from_str::<serde_json::Value>(&out).ok())
            .and_then(|v| v["pg_stats"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    if laggy() == 0 {
        return;
    }
    eprintln!("hang: the bed's OSD left laggy PGs (read lease never renewed): re-peering");
    let _ = ceph_cli(ceph, &["osd", "down", "0"]);
    let until = Instant::now() + Duration::from_secs(60);
    while laggy() > 0 {
        assert!(
            Instant::now() < until,
            "the bed's PGs stay laggy after a re-peer"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
