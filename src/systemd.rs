//! systemd integration: readiness, status, watchdog and stopping
//! notifications (no-ops when not started by systemd), and the listener
//! systemd passes with socket activation.

use std::os::fd::FromRawFd;
use std::time::Duration;

/// READY=1 with a status line.
pub fn ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// STATUS=… (shown by `systemctl status`).
pub fn status(status: &str) {
    notify(&[sd_notify::NotifyState::Status(status)]);
}

/// STOPPING=1.
pub fn stopping() {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("shutting down"),
    ]);
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// The interval to send WATCHDOG=1 at (half of WatchdogSec), when enabled:
/// as sd_watchdog_enabled(3), WATCHDOG_USEC set and positive, and
/// WATCHDOG_PID, when set, this process (the sd-notify crate also refuses
/// an unset WATCHDOG_PID, which libsystemd accepts).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC")
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|usec| *usec > 0)?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Send WATCHDOG=1 every `interval` until `shutdown` fires.
pub async fn watchdog(interval: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => notify(&[sd_notify::NotifyState::Watchdog]),
            _ = shutdown.changed() => return,
        }
    }
}

/// The listening socket systemd passed (LISTEN_FDS), if any. Call before
/// any thread is spawned: it reads and clears the environment.
pub fn activated_listener() -> std::io::Result<Option<std::os::unix::net::UnixListener>> {
    let mut fds = sd_notify::listen_fds()?;
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    if fds.next().is_some() {
        return Err(std::io::Error::other(
            "systemd passed more than one socket; rbdsnapd.socket must have one ListenStream",
        ));
    }
    // SAFETY: sd_notify checked LISTEN_PID and LISTEN_FDS: `fd` (3) is an
    // open descriptor systemd handed to this process, and nothing else in
    // the process owns it, so taking ownership here is sound.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}
