//! The hang suite, on the real bed: a freeze hook slower than any
//! confirmation, libvirtd stopped while the guest is frozen, the monitor and
//! an OSD stopped inside the freeze window, the monitor stopped at start-up
//! with a frozen guest in the journal. Each time: the answer comes within
//! its bound, the guest is thawed within 5 s of the hang ending, nothing is
//! left in Ceph, and all along `daemon.status` on a fresh connection
//! answers (p99 < 100 ms) and the watchdog keepalive never misses.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{self, DaemonProc, TempDir};
use common::hang::{notify_socket, Prober, Stopped};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// The tests share one guest, its hook and the bed's daemons: one at a time.
static GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

const FREEZE_DEADLINE: f64 = 2.0;
const AGENT_TIMEOUT: f64 = 2.0;
/// The daemon pings the watchdog every WATCHDOG_USEC / 2 (1 s).
const WATCHDOG_USEC: u64 = 2_000_000;

/// A daemon on `state`, with short freeze and agent deadlines, a watchdog,
/// and a prober (started once it answers).
fn start(
    bed: &daemon::Bed,
    guest: &common::Guest,
    state: &Path,
    pause_at: Option<&str>,
    wait: bool,
) -> (
    DaemonProc,
    TempDir,
    Option<std::os::unix::net::UnixDatagram>,
) {
    let notify_dir = TempDir::new("rbdsnapd-hang-notify");
    let (sock, path) = notify_socket(notify_dir.path());
    let mut launch = bed
        .launch()
        .libvirt_uri(&guest.uri)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", &WATCHDOG_USEC.to_string())
        .extra(&format!(
            "state_dir = {:?}\n[snapshot]\nfreeze_deadline_secs = {FREEZE_DEADLINE}\n\
             [libvirt]\nagent_timeout_secs = {AGENT_TIMEOUT}",
            state.display().to_string()
        ));
    if let Some(point) = pause_at {
        launch = launch.env("RBDSNAPD_TEST_PAUSE_AT", point);
    }
    if !wait {
        launch = launch.no_wait();
    }
    (launch.start(), notify_dir, Some(sock))
}

/// Whatever an earlier (failed) test left: wait for the agent to answer
/// (a slow hook may still run), thaw, and put the hook back to normal.
fn settle(guest: &common::Guest) {
    let (_conn, dom) = guest.domain();
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let status = dom.qemu_agent_command(r#"{"execute":"guest-fsfreeze-status"}"#, 5, 0);
        match status {
            Ok(reply) if reply.contains("thawed") => break,
            Ok(_) => {
                let _ = dom.qemu_agent_command(r#"{"execute":"guest-fsfreeze-thaw"}"#, 5, 0);
            }
            Err(_) => assert!(Instant::now() < until, "the guest agent never answered"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for control in ["freeze-delay", "thaw-delay", "freeze-fail", "thaw-fail"] {
        guest.hook(control, "");
    }
}

fn at_risk(d: &DaemonProc) -> Vec<Value> {
    d.status()["guests_at_risk"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Poll until the daemon reports no guest at risk; when that happened.
fn wait_unguarded(d: &DaemonProc, within: Duration) -> Instant {
    let until = Instant::now() + within;
    loop {
        if at_risk(d).is_empty() {
            return Instant::now();
        }
        if Instant::now() > until {
            d.fail(&format!(
                "guard still on after {within:?}: {:?}",
                at_risk(d)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The job's temporary snapshots on the guest's disk and whether its image
/// exists, or why Ceph cannot tell now (an OSD just continued can time
/// calls out for a while: that is not an answer).
fn leftovers(
    bed: &daemon::Bed,
    guest: &common::Guest,
    image: &str,
) -> Result<(Vec<String>, bool), String> {
    let listed = bed
        .ceph
        .rbd_output(&["snap", "ls", "--format", "json", &guest.image], None);
    if !listed.status.success() {
        return Err(String::from_utf8_lossy(&listed.stderr).into_owned());
    }
    let snaps: Vec<Value> = serde_json::from_slice(&listed.stdout).map_err(|e| e.to_string())?;
    let temps = snaps
        .iter()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| n.starts_with("rbdsnapd-tmp"))
        .map(str::to_string)
        .collect();
    let info = bed
        .ceph
        .rbd_output(&["info", &format!("images/{image}")], None);
    let stderr = String::from_utf8_lossy(&info.stderr);
    let made = match info.status.success() {
        true => true,
        false if stderr.contains("No such file") => false,
        false => return Err(stderr.into_owned()),
    };
    Ok((temps, made))
}

/// Nothing of the job left in Ceph, waiting up to `within` for recovery.
fn nothing_left(bed: &daemon::Bed, guest: &common::Guest, image: &str, within: Duration) {
    common::hang::heal_laggy_pgs(&bed.ceph);
    let until = Instant::now() + within;
    loop {
        let seen = leftovers(bed, guest, image);
        if let Ok((temps, false)) = &seen {
            if temps.is_empty() {
                return;
            }
        }
        assert!(
            Instant::now() < until,
            "left behind after {within:?}: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn watchdog_limit() -> Duration {
    Duration::from_micros(WATCHDOG_USEC)
}

#[test]
fn a_hook_slower_than_any_confirmation_is_thawed_by_its_guard_across_a_sigkill() {
    let (Some(bed), Some(guest)) = (daemon::bed(), common::guest()) else {
        return;
    };
    let _one = GUEST.lock().unwrap_or_else(|p| p.into_inner());
    settle(&guest);
    const HOOK_SECS: u64 = 70;
    let state = TempDir::new("rbdsnapd-hang-state");
    let (first, _n1, sock) = start(&bed, &guest, state.path(), None, true);
    let prober = Prober::start(first.socket.clone(), sock);
    guest.hook("freeze-delay", &HOOK_SECS.to_string());
    let image = common::unique("slowhook");
    let sent = Instant::now();
    let answer = first.connect().call(
        "snapshot.create",
        json!({"domain": guest.name, "image": image, "quiesce": "required"}),
    );
    let answered = sent.elapsed();
    let bound = Duration::from_secs_f64(FREEZE_DEADLINE + AGENT_TIMEOUT + 3.0);
    assert!(
        answered < bound,
        "answered after {answered:?} (bound {bound:?})"
    );
    assert_eq!(answer.kind(), "thaw_failed", "{:?}", answer.0);
    let guard = answer.error()["data"]["guard"].clone();
    assert!(
        guard["domain_uuid"].is_string(),
        "the error names the guard: {:?}",
        answer.0
    );
    let risk = at_risk(&first);
    assert_eq!(risk.len(), 1, "guard visible: {risk:?}");
    assert_eq!(risk[0]["domain_uuid"], guard["domain_uuid"]);
    // a guarded domain takes no snapshot
    let refused = first.connect().call(
        "snapshot.create",
        json!({"domain": guest.name, "image": common::unique("slowhook-2")}),
    );
    refused.assert_error(1024, "busy", "a second snapshot while guarded");
    assert!(
        refused.error()["data"]["guard"].is_object(),
        "{:?}",
        refused.0
    );
    prober
        .finish()
        .assert_responsive("slow hook, first daemon", watchdog_limit());

    // killed while the guard is on: the next start resumes it from the journal
    let mut first = first;
    first.signal(Signal::SIGKILL);
    assert!(first.wait_exit(Duration::from_secs(10)).is_some());
    let (second, _n2, sock) = start(&bed, &guest, state.path(), None, true);
    let prober = Prober::start(second.socket.clone(), sock);
    let risk = at_risk(&second);
    assert_eq!(risk.len(), 1, "the guard resumed after SIGKILL: {risk:?}");
    let cleared = wait_unguarded(&second, Duration::from_secs(HOOK_SECS + 30));
    // the hook sleeps by the guest's clock, which under TCG on a loaded
    // host runs a little fast (measured in CI: its 70 s sleep ended 69.05 s
    // after the request); the guard must not clear before it, give or take
    // that drift
    const GUEST_CLOCK_DRIFT: Duration = Duration::from_secs(3);
    let landed = sent + Duration::from_secs(HOOK_SECS) - GUEST_CLOCK_DRIFT;
    let late = cleared.saturating_duration_since(landed);
    eprintln!(
        "hang: slow hook: answered after {answered:?}, guard cleared {:?} after the request, \
         {late:?} after the late freeze landed",
        cleared - sent
    );
    assert!(
        cleared >= landed,
        "cleared before the late freeze could land ({:?} after the request)",
        cleared - sent
    );
    assert!(
        late < Duration::from_secs(5) + GUEST_CLOCK_DRIFT,
        "thawed {late:?} after the freeze landed"
    );
    assert_eq!(guest.freeze_status(), json!("thawed"));
    // the agent answers again: the hook back to normal for what follows
    guest.hook("freeze-delay", "");
    let log = String::from_utf8_lossy(&guest.read_file("/run/fsfreeze-hook.log")).to_string();
    let froze = log.rfind("freeze: ok").expect("the late freeze landed");
    assert!(
        log[froze..].contains("thaw: ok"),
        "thawed after it landed: {log}"
    );
    nothing_left(&bed, &guest, &image, Duration::from_secs(30));
    prober
        .finish()
        .assert_responsive("slow hook, restarted daemon", watchdog_limit());
}

/// Freeze, pause inside the window, stop `backend`, let the job go on; the
/// backend comes back after `down`. Returns the answer, when the backend
/// came back and when the guard cleared.
fn stopped_inside_the_window(
    backend: &str,
    down: Duration,
) -> Option<(daemon::Response, Duration)> {
    let (Some(bed), Some(guest)) = (daemon::bed(), common::guest()) else {
        return None;
    };
    let _one = GUEST.lock().unwrap_or_else(|p| p.into_inner());
    settle(&guest);
    let state = TempDir::new("rbdsnapd-hang-state");
    let (d, _n, sock) = start(&bed, &guest, state.path(), Some("frozen"), true);
    let prober = Prober::start(d.socket.clone(), sock);
    let image = common::unique(&format!("stop-{}", backend.replace('.', "")));
    let mut conn = d.connect();
    let id = conn.send_create(json!({"domain": guest.name, "image": image, "quiesce": "required"}));
    let marker = state.path().join("paused-at-frozen");
    d.wait_paused(&marker);
    let stopped = Stopped::stop(backend);
    let sent = Instant::now();
    std::fs::remove_file(&marker).expect("let the daemon go on");
    let waiter = std::thread::spawn(move || (conn.wait_for(&id), Instant::now()));
    std::thread::sleep(down);
    let back = stopped.resume();
    let cleared = wait_unguarded(&d, Duration::from_secs(60));
    let (answer, answered) = waiter.join().expect("answer");
    let thawed_after = cleared.saturating_duration_since(back);
    eprintln!(
        "hang: {backend} stopped {down:?} inside the window: answered {:?} after the go-on \
         ({}), guard cleared {thawed_after:?} after its return",
        answered - sent,
        answer.kind()
    );
    assert_eq!(guest.freeze_status(), json!("thawed"), "{:?}", answer.0);
    assert!(
        thawed_after < Duration::from_secs(5),
        "thawed {thawed_after:?} after {backend} came back"
    );
    nothing_left(&bed, &guest, &image, Duration::from_secs(90));
    prober
        .finish()
        .assert_responsive(&format!("{backend} stopped"), watchdog_limit());
    Some((answer, thawed_after))
}

#[test]
fn libvirtd_stopped_while_frozen_for_20_and_90_s_is_thawed_on_its_return() {
    for secs in [20, 90] {
        let Some((answer, _)) = stopped_inside_the_window("libvirtd", Duration::from_secs(secs))
        else {
            return;
        };
        // the snapshot was taken frozen; the thaw could not be confirmed
        // in the request's budget, so the job failed and the guard thawed
        assert!(!answer.is_ok(), "{:?}", answer.0);
        assert!(
            ["thaw_failed", "freeze_timeout"].contains(&answer.kind()),
            "{:?}",
            answer.0
        );
    }
}

#[test]
fn the_mon_then_an_osd_stopped_inside_the_window_fail_the_job_clearly_and_leave_nothing() {
    // the OSD for 10 s: at 15 s it trips its own op-thread timeout
    // (osd_op_thread_timeout) and what follows is the OSD's health, not a
    // hang; once in five runs QEMU's librbd then stayed stuck for minutes
    let only = std::env::var("RBDSNAPD_HANG_ONLY").ok();
    for (backend, secs) in [("mon", 15), ("osd.0", 10)] {
        if only.as_deref().is_some_and(|o| o != backend) {
            continue;
        }
        let Some((answer, _)) = stopped_inside_the_window(backend, Duration::from_secs(secs))
        else {
            return;
        };
        assert!(!answer.is_ok(), "{backend}: {:?}", answer.0);
        assert!(
            ["freeze_timeout", "thaw_failed", "ceph_unavailable"].contains(&answer.kind()),
            "{backend}: {:?}",
            answer.0
        );
    }
}

#[test]
fn the_mon_stopped_at_start_up_does_not_hold_ready_or_the_thaw() {
    let (Some(bed), Some(guest)) = (daemon::bed(), common::guest()) else {
        return;
    };
    let _one = GUEST.lock().unwrap_or_else(|p| p.into_inner());
    settle(&guest);
    let state = TempDir::new("rbdsnapd-hang-state");
    let (mut first, _n1, _) = start(&bed, &guest, state.path(), Some("frozen"), true);
    let image = common::unique("monstart");
    let mut conn = first.connect();
    conn.send_create(json!({"domain": guest.name, "image": image, "quiesce": "required"}));
    first.wait_paused(&state.path().join("paused-at-frozen"));
    first.signal(Signal::SIGKILL);
    assert!(first.wait_exit(Duration::from_secs(10)).is_some());
    drop(conn);
    assert_eq!(
        guest.freeze_status(),
        json!("frozen"),
        "left frozen by the kill"
    );

    let mon = Stopped::stop("mon");
    let started = Instant::now();
    let (second, _n2, sock) = start(&bed, &guest, state.path(), None, false);
    let sock = sock.expect("notify");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut buf = vec![0u8; 4096];
    let ready = loop {
        if let Ok(n) = sock.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                break started.elapsed();
            }
        }
        if started.elapsed() > Duration::from_secs(20) {
            second.fail("no READY=1 within 20 s with the mon stopped");
        }
    };
    let prober = Prober::start(second.socket.clone(), Some(sock));
    let thawed = loop {
        if at_risk(&second).is_empty() {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never thawed");
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "hang: mon stopped at start-up: READY after {ready:?}, guest thawed after {thawed:?}"
    );
    assert!(ready < Duration::from_secs(5), "READY after {ready:?}");
    assert!(thawed < Duration::from_secs(5), "thawed after {thawed:?}");
    assert_eq!(guest.freeze_status(), json!("thawed"));
    let status = second.status();
    assert_eq!(
        status["recovery"]["pending"].as_array().map(Vec::len),
        Some(1),
        "the Ceph side waits for the mon: {status}"
    );
    std::thread::sleep(Duration::from_secs(3));
    mon.resume();
    nothing_left(&bed, &guest, &image, Duration::from_secs(90));
    let until = Instant::now() + Duration::from_secs(60);
    while second.status()["recovery"]["pending"] != json!([]) {
        assert!(Instant::now() < until, "recovery never finished");
        std::thread::sleep(Duration::from_millis(500));
    }
    prober
        .finish()
        .assert_responsive("mon stopped at start-up", watchdog_limit());
}
