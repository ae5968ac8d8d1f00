//! The daemon's life: bind, connect the backends (without waiting for a
//! dead one), READY=1, serve, and on SIGTERM/SIGINT stop accepting, let
//! jobs finish or cancel them at a safe point after the grace period,
//! answer what is pending, STOPPING=1, exit.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::Config;
use crate::daemon::Daemon;
use crate::journal::Journal;
use crate::recovery;
use crate::server::{self, listener, Access, Shared};
use crate::systemd;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration found at start.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The socket could not be set up.
    #[error(transparent)]
    Listen(#[from] listener::ListenError),
    /// The journal cannot be used (locked by another daemon, damaged).
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// Signal handlers or the state directory could not be set up.
    #[error("{0}")]
    Io(String),
}

/// How long start-up waits for a backend before going on degraded.
const STARTUP_CONNECT: Duration = Duration::from_secs(5);

/// Run until a termination signal; `activated` is systemd's listener.
pub async fn run(
    config: Config,
    activated: Option<std::os::unix::net::UnixListener>,
) -> Result<(), RunError> {
    let access = Access::from_config(&config)?;
    // first: the lock keeps a second daemon from binding or recovering
    let (journal, records) = Journal::open(&config.state_dir)?;
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| RunError::Io(format!("SIGTERM handler: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| RunError::Io(format!("SIGINT handler: {e}")))?;
    let listening = listener::listen(&config, activated)?;
    let daemon = Daemon::new(config, journal);
    daemon.backends.connect_missing(STARTUP_CONNECT).await;
    let (stop, stopped) = watch::channel(false);
    recover_before_ready(&daemon, records, &stopped).await;
    tokio::spawn(Arc::clone(&daemon.backends).keep_connected(stopped.clone()));
    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(systemd::watchdog(interval, stopped.clone()));
    }
    tokio::spawn(report_status(Arc::clone(&daemon), stopped.clone()));
    let shared = Arc::new(Shared {
        access,
        max_line: daemon.config.max_line_bytes,
        idle: Duration::from_secs_f64(daemon.config.idle_timeout_secs),
        daemon: Arc::clone(&daemon),
    });
    let where_ = listening
        .owned_path
        .as_ref()
        .map_or("the activated socket".to_string(), |p| {
            p.display().to_string()
        });
    tracing::info!(socket = %where_, version = env!("CARGO_PKG_VERSION"), "serving");
    systemd::ready(&status_line(&daemon));
    let serving = tokio::spawn(server::serve(listening.listener, shared, stopped));
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    systemd::stopping();
    daemon.begin_shutdown();
    let _ = stop.send(true);
    drain_jobs(&daemon).await;
    let _ = serving.await;
    if let Some(path) = listening.owned_path {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("stopped");
    Ok(())
}

/// Recovery before READY=1: guests a previous run may have left frozen are
/// thawed and its unfinished jobs rolled back (or kept when complete);
/// what needs a backend that is down keeps being retried in the background.
async fn recover_before_ready(
    daemon: &Arc<Daemon>,
    records: Vec<crate::journal::Record>,
    stopped: &watch::Receiver<bool>,
) {
    let (trails, ended) = recovery::split(records);
    daemon.load_ended(ended);
    if !trails.is_empty() {
        tracing::warn!(
            jobs = trails.len(),
            "the journal shows unfinished jobs: recovering"
        );
        systemd::status(&format!("recovering {} unfinished job(s)", trails.len()));
    }
    daemon.recover(trails).await;
    tokio::spawn(Arc::clone(daemon).keep_recovering(stopped.clone()));
    // after recovery, so that what it just rolled back is not reported
    let sweeper = Arc::clone(daemon);
    tokio::spawn(async move { sweeper.sweep().await });
    if let Err(e) = daemon.journal.compact() {
        tracing::warn!(error = %e, "journal compaction failed");
    }
}

/// Pause background flattens, give running jobs the grace period, then cancel them at their next safe
/// point (never inside a freeze window) and wait for their rollback.
async fn drain_jobs(daemon: &Daemon) {
    // answered jobs only flatten: stop them now, the next start resumes them
    daemon.jobs.cancel_answered();
    let grace = Duration::from_secs_f64(daemon.config.shutdown_grace_secs);
    if tokio::time::timeout(grace, daemon.jobs.wait_idle())
        .await
        .is_ok()
    {
        return;
    }
    tracing::warn!(
        running = daemon.jobs.running(),
        "grace period over: cancelling running jobs"
    );
    daemon.jobs.cancel_all();
    let rollback = daemon.settings.call_deadline * 4;
    if tokio::time::timeout(rollback, daemon.jobs.wait_idle())
        .await
        .is_err()
    {
        tracing::error!(
            running = daemon.jobs.running(),
            "jobs did not stop in time; exiting anyway"
        );
    }
}

fn status_line(daemon: &Daemon) -> String {
    let (libvirt, ceph) = (
        daemon.backends.libvirt_status(),
        daemon.backends.ceph_status(),
    );
    let state = |ok: bool| if ok { "up" } else { "DOWN" };
    let mode = if libvirt.connected && ceph.connected {
        "serving"
    } else {
        "degraded"
    };
    format!(
        "{mode}: libvirt {}, ceph {}, {} job(s) running",
        state(libvirt.connected),
        state(ceph.connected),
        daemon.jobs.running()
    )
}

/// Keep systemd's STATUS= current.
async fn report_status(daemon: Arc<Daemon>, mut stopped: watch::Receiver<bool>) {
    let mut last = String::new();
    loop {
        let line = status_line(&daemon);
        if line != last {
            systemd::status(&line);
            last = line;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stopped.changed() => return,
        }
    }
}
