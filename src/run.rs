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
use crate::server::{self, listener, Gate, Shared};
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

/// How long start-up waits for libvirt before going on degraded (thaws
/// need it).
const STARTUP_LIBVIRT: Duration = Duration::from_secs(5);

/// How long start-up waits for Ceph before going on degraded: nothing
/// before READY needs it, and a stalled monitor must not hold READY.
const STARTUP_CEPH: Duration = Duration::from_secs(2);

/// Run until a termination signal; `activated` is systemd's listener.
pub async fn run(
    config: Config,
    activated: Option<std::os::unix::net::UnixListener>,
) -> Result<(), RunError> {
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| RunError::Io(format!("SIGTERM handler: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| RunError::Io(format!("SIGINT handler: {e}")))?;
    let signalled = async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    };
    let backends = crate::daemon::Backends::new(&config);
    run_with(config, activated, backends, signalled).await
}

/// The daemon's life over the given `backends` (the real adapters, or a
/// test's fakes), until `shutdown` resolves (to what asked for it).
pub async fn run_with(
    config: Config,
    activated: Option<std::os::unix::net::UnixListener>,
    backends: crate::daemon::Backends,
    shutdown: impl std::future::Future<Output = &'static str>,
) -> Result<(), RunError> {
    let gate = Arc::new(Gate::new(&config)?);
    // first: the lock keeps a second daemon from binding or recovering
    let (journal, records) = Journal::open(&config.state_dir)?;
    journal.keep_ended(config.jobs_kept);
    let listening = listener::listen(&config, activated)?;
    let daemon = Daemon::with_backends(config, journal, backends);
    let (stop, stopped) = watch::channel(false);
    let ceph = {
        let backends = Arc::clone(&daemon.backends);
        tokio::spawn(async move { backends.connect_ceph(STARTUP_CEPH).await })
    };
    daemon.backends.connect_libvirt(STARTUP_LIBVIRT).await;
    let trails = thaw_before_ready(&daemon, records).await;
    let _ = ceph.await;
    recover_after_ready(&daemon, trails, &stopped);
    tokio::spawn(Arc::clone(&daemon.backends).keep_connected(stopped.clone()));
    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(systemd::watchdog(interval, stopped.clone()));
    }
    tokio::spawn(report_status(Arc::clone(&daemon), stopped.clone()));
    tokio::spawn(crate::daemon::release::keep_releasing(
        Arc::clone(&daemon),
        stopped.clone(),
    ));
    if let Some(path) = daemon.config.metrics_textfile.clone() {
        let every = Duration::from_secs_f64(daemon.config.metrics_interval_secs);
        tokio::spawn(crate::daemon::metrics::textfile(
            Arc::clone(&daemon),
            path,
            every,
            stopped.clone(),
        ));
    }
    if !gate.current().unresolved().is_empty() {
        let config = Arc::new(daemon.config.clone());
        tokio::spawn(Arc::clone(&gate).keep_resolving(config, stopped.clone()));
    }
    let shared = Arc::new(Shared {
        gate,
        document: crate::openrpc::document(),
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
    let why = shutdown.await;
    tracing::info!("{why}: shutting down");
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

/// Before READY=1: every guest a previous run may have left frozen (an
/// armed guard in the journal, or an unfinished job past its freeze) gets
/// a thaw guard, and READY waits for their first attempts — in parallel,
/// each bounded — but not for Ceph. The unfinished jobs, for later.
async fn thaw_before_ready(
    daemon: &Arc<Daemon>,
    records: Vec<crate::journal::Record>,
) -> Vec<recovery::Trail> {
    let guards = recovery::guards(&records);
    let (trails, ended) = recovery::split(records);
    daemon.load_ended(ended);
    if !trails.is_empty() || !guards.is_empty() {
        tracing::warn!(
            jobs = trails.len(),
            guards = guards.len(),
            "the journal shows unfinished jobs or guests at risk: thawing first"
        );
        systemd::status(&format!(
            "thawing: {} unfinished job(s), {} guest(s) at risk",
            trails.len(),
            guards.len()
        ));
    }
    for guard in guards {
        daemon.guards.resume(guard, None, None);
    }
    daemon.guard_trails(&trails).await;
    let at_risk: Vec<String> = daemon
        .guards
        .list()
        .into_iter()
        .map(|g| g.domain_uuid)
        .collect();
    // the guards thaw in parallel, in their own tasks; this only waits
    let first_attempts = async {
        for uuid in &at_risk {
            daemon.guards.wait_cleared(uuid).await;
        }
    };
    let bound = daemon.settings.agent_timeout * 2 + Duration::from_secs(1);
    if tokio::time::timeout(bound, first_attempts).await.is_err() {
        tracing::warn!(
            at_risk = daemon.guards.list().len(),
            "guests still not confirmed thawed: their guards go on after READY"
        );
    }
    trails
}

/// After READY=1: roll back (or keep) the Ceph side of unfinished jobs,
/// in the background, with deadlines and retries, visible in
/// `daemon.status` (`recovery.pending`); then the orphan sweep, then a
/// journal compaction.
fn recover_after_ready(
    daemon: &Arc<Daemon>,
    trails: Vec<recovery::Trail>,
    stopped: &watch::Receiver<bool>,
) {
    let (daemon, stopped) = (Arc::clone(daemon), stopped.clone());
    tokio::spawn(async move {
        if !trails.is_empty() {
            tracing::warn!(jobs = trails.len(), "recovering unfinished jobs");
        }
        daemon.recover(trails).await;
        tokio::spawn(Arc::clone(&daemon).keep_recovering(stopped));
        // after recovery, so that what it just rolled back is not reported
        daemon.sweep().await;
        if let Err(e) = daemon.journal.compact_async().await {
            tracing::warn!(error = %e, "journal compaction failed");
        }
    });
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
    let at_risk = daemon.guards.list();
    let stuck: Vec<String> = crate::owners::all()
        .iter()
        .filter(|o| o.status().degraded)
        .map(|o| format!("{} stuck ({} calls)", o.name(), o.status().stuck))
        .collect();
    let mode = if libvirt.connected && ceph.connected && at_risk.is_empty() && stuck.is_empty() {
        "serving"
    } else {
        "degraded"
    };
    let mut line = format!(
        "{mode}: libvirt {}, ceph {}, {} job(s) running",
        state(libvirt.connected),
        state(ceph.connected),
        daemon.jobs.running()
    );
    if !at_risk.is_empty() {
        let domains: Vec<&str> = at_risk.iter().map(|g| g.domain_uuid.as_str()).collect();
        line.push_str(&format!(
            ", {} GUEST(S) AT RISK (thaw not confirmed: {})",
            at_risk.len(),
            domains.join(" ")
        ));
    }
    if !stuck.is_empty() {
        line.push_str(&format!(", {}", stuck.join(", ")));
    }
    line
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
