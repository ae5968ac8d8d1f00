//! The thaw guard: a freeze (or a pause of the vCPUs) that is not
//! confirmed undone outlives the request that made it. A guest agent busy in a slow freeze hook, an agent
//! that stopped answering, libvirtd stopped: the request answers within its
//! bound, and a guard on the domain keeps thawing, with backoff, for as long
//! as the domain runs — journalled, so a restarted daemon goes on with it.
//!
//! A guard is cleared only when the agent itself reports the guest thawed
//! and no freeze call of ours is still running (a late freeze can land after
//! any thaw that came before it), or when the domain is shut off without
//! saved memory. A paused or saved guest keeps its guard: its memory, and a
//! freeze in it, comes back when it runs. A domain that left the host
//! (migrated away, or undefined) keeps it too, reported as `left_host`: it
//! may run frozen elsewhere. Its guard looks for it every few seconds (a
//! migration back brings it within reach again) until an operator who
//! checked the guest where it runs dismisses it. While a domain has a
//! guard, it gets no new snapshot.
//!
//! A guard whose job paused the vCPUs resumes them first (a paused guest's
//! agent cannot thaw); a resume of a domain that is not paused is a no-op,
//! so a retry is harmless.
//!
//! Each attempt is one blocking call (resume, thaw, then ask the agent) on the
//! libvirt owner's reserved thaw lane; an attempt that misses its deadline
//! is waited for by the next one instead of piling up another thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::task::JoinHandle;

use super::blocking;
use crate::libvirt::{FreezeStatus, Hypervisor, LibvirtError, LibvirtErrorKind, Presence};

/// First wait between two attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest wait between two attempts: a late freeze is thawed at most this
/// long (plus one agent round trip) after it lands.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often a guard looks for a domain that left the host.
const DEPARTED_POLL: Duration = Duration::from_secs(5);
/// Failed attempts between two warnings in the log (the first always warns).
const WARN_EVERY: u64 = 10;

/// Where the guards find the hypervisor (libvirt may be down, or reconnect).
pub type HypervisorSource = Arc<dyn Fn() -> Option<Arc<dyn Hypervisor>> + Send + Sync>;

/// Where guards are journalled, so that the next start resumes them.
pub trait GuardLog: Send + Sync + std::fmt::Debug {
    /// A guard was armed (make it durable).
    fn armed(&self, guard: &GuardInfo) -> Result<(), String>;
    /// A guard was cleared: the guest is confirmed thawed, or gone.
    fn cleared(&self, guard: &GuardInfo) -> Result<(), String>;
}

/// No journal (unit tests, library use).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoGuardLog;

impl GuardLog for NoGuardLog {
    fn armed(&self, _guard: &GuardInfo) -> Result<(), String> {
        Ok(())
    }
    fn cleared(&self, _guard: &GuardInfo) -> Result<(), String> {
        Ok(())
    }
}

/// A guest at risk: maybe frozen, thaw not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct GuardInfo {
    /// The domain.
    pub domain_uuid: String,
    /// The job whose freeze is not confirmed undone.
    pub job_id: String,
    /// Unix seconds of the freeze attempt.
    pub since_unix: u64,
    /// Thaw attempts the guard made.
    pub attempts: u64,
    /// Why the guest is not confirmed thawed yet.
    pub last_error: String,
    /// The domain left this host (migrated away, or undefined) with its
    /// freeze not confirmed undone: this daemon can no longer reach it.
    pub left_host: bool,
    /// What the guard undoes: the freeze, and the pause of the vCPUs.
    #[serde(flatten)]
    pub window: Window,
}

/// What a job did to the guest that a guard (or the request) undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Window {
    /// The filesystems may be frozen: thaw them.
    pub thaw: bool,
    /// The vCPUs may be paused: resume them (first).
    pub resume: bool,
}

impl Window {
    /// A freeze only (what every guard was before pauses existed).
    pub const FREEZE: Window = Window {
        thaw: true,
        resume: false,
    };
}

/// One blocking attempt: the resume's answer (when the window paused),
/// the thaw's (when it froze) and, when asked, the agent's view after it;
/// and, when libvirt refused any of them as "not running" or "no such
/// domain", where the domain is.
#[derive(Debug)]
pub struct Attempt {
    resumed: Option<Result<bool, LibvirtError>>,
    thawed: Option<Result<u32, LibvirtError>>,
    status: Option<Result<FreezeStatus, LibvirtError>>,
    presence: Option<Result<Presence, LibvirtError>>,
}

/// A thaw attempt still running past its deadline, handed on to whoever
/// tries next.
pub type InFlight = JoinHandle<Attempt>;

/// A freeze call of ours still running past its deadline.
pub type PendingFreeze = JoinHandle<()>;

/// How one attempt ended.
#[derive(Debug)]
pub enum Thaw {
    /// The agent reports thawed (or, without an agent to ask, the thaw
    /// answered).
    Confirmed,
    /// The domain is shut off (without saved memory): nothing is frozen
    /// any more.
    Gone,
    /// The domain left this host, maybe frozen; why, in words.
    Departed(String),
    /// Not confirmed; why.
    NotYet(String),
}

/// Undo `window` on `uuid` once: resume, thaw and, with `ask`, ask the
/// agent whether it is thawed (without, a thaw that answers counts as
/// confirmed); wait at most `deadline`. A call still running is continued
/// from `in_flight` rather than started again.
pub async fn attempt(
    hv: &Arc<dyn Hypervisor>,
    uuid: &str,
    window: Window,
    ask: bool,
    deadline: Duration,
    in_flight: &mut Option<InFlight>,
) -> Thaw {
    let mut handle = match in_flight.take() {
        Some(handle) => handle,
        None => {
            let (hv, id) = (Arc::clone(hv), uuid.to_string());
            let call = move || {
                let resumed = window.resume.then(|| hv.resume(&id));
                // a paused guest's agent cannot thaw: resume first
                let running = !matches!(resumed, Some(Err(_)));
                let thawed = (window.thaw && running).then(|| hv.thaw(&id, &[]));
                let status = (window.thaw && running && ask).then(|| hv.freeze_status(&id));
                let refused = [
                    resumed.as_ref().and_then(|r| r.as_ref().err()),
                    thawed.as_ref().and_then(|r| r.as_ref().err()),
                    status.as_ref().and_then(|r| r.as_ref().err()),
                ]
                .into_iter()
                .flatten()
                .any(not_running);
                let presence = refused.then(|| hv.presence(&id));
                Attempt {
                    resumed,
                    thawed,
                    status,
                    presence,
                }
            };
            match blocking::spawn_thaw(call) {
                Ok(handle) => handle,
                Err(full) => return Thaw::NotYet(full),
            }
        }
    };
    match tokio::time::timeout(deadline, &mut handle).await {
        Ok(Ok(answer)) => judge(answer),
        Ok(Err(join)) => Thaw::NotYet(format!("thaw task failed: {join}")),
        Err(_) => {
            *in_flight = Some(handle);
            Thaw::NotYet(format!(
                "the thaw did not answer within {} ms (libvirtd or the agent is stuck)",
                deadline.as_millis()
            ))
        }
    }
}

/// libvirt's answer for a domain that is not running or not there: then
/// only the domain's presence tells whether a freeze can still be in it.
fn not_running(e: &LibvirtError) -> bool {
    matches!(
        e.kind,
        LibvirtErrorKind::DomainNotFound | LibvirtErrorKind::NotRunning
    )
}

/// Only a domain shut off without saved memory (a boot starts thawed)
/// ends a guard; a paused or saved one keeps it until it runs, and one that
/// left the host keeps it, reported, until it comes back or an operator
/// dismisses it (`guard.dismiss`).
fn judge_presence(presence: Result<Presence, LibvirtError>) -> Option<Thaw> {
    match presence {
        Ok(Presence::ShutOff) => Some(Thaw::Gone),
        Ok(Presence::MigratedAway) => Some(Thaw::Departed(
            "the domain migrated to another host before its thaw was confirmed: it may run \
             there frozen, out of this daemon's reach; check it there (virsh domfsinfo, \
             virsh domfsthaw), then rbdsnapctl guard dismiss"
                .into(),
        )),
        Ok(Presence::Gone) => Some(Thaw::Departed(
            "libvirt on this host no longer knows the domain (migrated away as a transient \
             domain, or undefined) and its thaw was not confirmed: if it runs elsewhere it \
             may be frozen there; check it there (virsh domfsinfo, virsh domfsthaw), then \
             rbdsnapctl guard dismiss"
                .into(),
        )),
        Ok(Presence::Paused) => Some(Thaw::NotYet(
            "the domain is paused (its vCPUs stopped): the agent cannot thaw until it runs \
             again; thawed as soon as it does"
                .into(),
        )),
        Ok(Presence::Saved) => Some(Thaw::NotYet(
            "the domain is shut off with its memory saved: a restore brings the freeze back; \
             thawed once it runs again"
                .into(),
        )),
        // refused as not running, yet running: paused and resumed meanwhile
        Ok(Presence::Running) => None,
        Err(e) => Some(Thaw::NotYet(format!(
            "libvirt refused the thaw and cannot say whether the domain runs: {e}"
        ))),
    }
}

fn judge(attempt: Attempt) -> Thaw {
    let Attempt {
        resumed,
        thawed,
        status,
        presence,
    } = attempt;
    if let Some(verdict) = presence.and_then(judge_presence) {
        return verdict;
    }
    if let Some(Err(e)) = resumed {
        return Thaw::NotYet(format!("resume: {e}"));
    }
    let Some(thawed) = thawed else {
        return Thaw::Confirmed;
    };
    let Some(status) = status else {
        return match thawed {
            Ok(_) => Thaw::Confirmed,
            Err(e) => Thaw::NotYet(format!("thaw: {e}")),
        };
    };
    match (&thawed, status) {
        (_, Ok(FreezeStatus::Thawed)) => Thaw::Confirmed,
        // a driver without a real agent: the thaw's own answer is all there is
        (Ok(_), Err(e)) if e.kind == LibvirtErrorKind::Unsupported => Thaw::Confirmed,
        (Ok(_), Ok(FreezeStatus::Frozen)) => {
            Thaw::NotYet("the agent still reports the guest frozen".into())
        }
        (Err(t), Ok(FreezeStatus::Frozen)) => {
            Thaw::NotYet(format!("the guest reports frozen; thaw: {t}"))
        }
        (Ok(_), Err(s)) => Thaw::NotYet(format!("thawed, but the agent's status failed: {s}")),
        (Err(t), Err(s)) => Thaw::NotYet(format!("thaw: {t}; status: {s}")),
    }
}

/// Every guard of the daemon, one per domain.
pub struct ThawGuards {
    hypervisor: HypervisorSource,
    log: Arc<dyn GuardLog>,
    /// Deadline of one attempt (thaw and status: two agent round trips).
    attempt_deadline: Duration,
    guards: Mutex<HashMap<String, GuardInfo>>,
    /// Agent response timeouts to give domains back when their guard
    /// clears (the job that changed it ended while the guard ran).
    restore_timeouts: Mutex<HashMap<String, i32>>,
    /// Woken when a guard is cleared.
    cleared: tokio::sync::Notify,
}

impl std::fmt::Debug for ThawGuards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThawGuards")
            .field("guards", &self.list())
            .finish()
    }
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ThawGuards {
    /// Guards that thaw through `hypervisor`, each attempt bounded by
    /// twice `agent_timeout` plus a second, journalled to `log`.
    pub fn new(
        hypervisor: HypervisorSource,
        log: Arc<dyn GuardLog>,
        agent_timeout: Duration,
    ) -> Arc<ThawGuards> {
        Arc::new(ThawGuards {
            hypervisor,
            log,
            attempt_deadline: agent_timeout * 2 + Duration::from_secs(1),
            guards: Mutex::new(HashMap::new()),
            restore_timeouts: Mutex::new(HashMap::new()),
            cleared: tokio::sync::Notify::new(),
        })
    }

    /// No guards can thaw anything (library use without a daemon).
    pub fn inert() -> Arc<ThawGuards> {
        ThawGuards::new(Arc::new(|| None), Arc::new(NoGuardLog), Duration::ZERO)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, GuardInfo>> {
        self.guards.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The guard on `uuid`, if any.
    pub fn get(&self, uuid: &str) -> Option<GuardInfo> {
        self.lock().get(uuid).cloned()
    }

    /// Every guard, oldest first.
    pub fn list(&self) -> Vec<GuardInfo> {
        let mut all: Vec<GuardInfo> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| (a.since_unix, &a.domain_uuid).cmp(&(b.since_unix, &b.domain_uuid)));
        all
    }

    /// Arm a guard on `uuid` (journalled first) and start thawing in the
    /// background; `pending` is a freeze call still running, `in_flight` a
    /// thaw attempt still running. A domain already guarded keeps its guard.
    pub async fn arm(
        self: &Arc<Self>,
        uuid: &str,
        job_id: &str,
        why: String,
        window: Window,
        pending: Option<PendingFreeze>,
        in_flight: Option<InFlight>,
    ) -> GuardInfo {
        let info = GuardInfo {
            domain_uuid: uuid.to_string(),
            job_id: job_id.to_string(),
            since_unix: unix_now(),
            attempts: 0,
            last_error: why,
            left_host: false,
            window,
        };
        if let Some(existing) = self.get(uuid) {
            return existing;
        }
        let log = Arc::clone(&self.log);
        let durable = info.clone();
        match blocking::journal(move || log.armed(&durable)).await {
            Ok(()) => {}
            Err(e) => tracing::error!(domain_uuid = uuid, error = %e,
                "could not journal the thaw guard: a restart now would not resume it"),
        }
        self.resume(info.clone(), pending, in_flight);
        info
    }

    /// Start (or, at start-up, resume from the journal) the thawing of a
    /// guard without journalling it again.
    pub fn resume(
        self: &Arc<Self>,
        info: GuardInfo,
        pending: Option<PendingFreeze>,
        in_flight: Option<InFlight>,
    ) {
        {
            let mut guards = self.lock();
            if guards.contains_key(&info.domain_uuid) {
                return;
            }
            guards.insert(info.domain_uuid.clone(), info.clone());
        }
        tracing::warn!(domain_uuid = %info.domain_uuid, job_id = %info.job_id, reason = %info.last_error,
            "guest at risk: its thaw is not confirmed; a guard keeps thawing it");
        let me = Arc::clone(self);
        tokio::spawn(async move { me.keep_thawing(info, pending, in_flight).await });
    }

    /// Thaw with backoff until confirmed (and no freeze of ours pending),
    /// or the domain is gone.
    async fn keep_thawing(
        self: Arc<Self>,
        info: GuardInfo,
        mut pending: Option<PendingFreeze>,
        mut in_flight: Option<InFlight>,
    ) {
        let uuid = info.domain_uuid.clone();
        let mut backoff = BACKOFF_MIN;
        loop {
            let outcome = match (self.hypervisor)() {
                Some(hv) => {
                    let deadline = self.attempt_deadline;
                    attempt(&hv, &uuid, info.window, true, deadline, &mut in_flight).await
                }
                None => Thaw::NotYet("libvirt is not connected".into()),
            };
            if pending.as_ref().is_some_and(JoinHandle::is_finished) {
                pending = None;
            }
            let (why, left) = match outcome {
                Thaw::Gone => break,
                Thaw::Confirmed if pending.is_none() => break,
                Thaw::Confirmed => (
                    "thawed, but a freeze call of ours is still running".into(),
                    false,
                ),
                Thaw::NotYet(why) => (why, false),
                Thaw::Departed(why) => (why, true),
            };
            if !self.note_failure(&uuid, &info.job_id, why, left) {
                // dismissed by an operator meanwhile
                return;
            }
            // a departed domain is only looked for, in case it comes back
            let wait = if left { DEPARTED_POLL } else { backoff };
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        self.clear(&uuid, &info.job_id).await;
    }

    /// Record a failed attempt; `false` when the guard is gone (dismissed).
    fn note_failure(&self, uuid: &str, job_id: &str, why: String, left: bool) -> bool {
        let mut guards = self.lock();
        let Some(guard) = guards.get_mut(uuid).filter(|g| g.job_id == job_id) else {
            return false;
        };
        if left && !guard.left_host {
            tracing::error!(domain_uuid = uuid, job_id = %guard.job_id, reason = %why,
                "guest at risk left this host: it may be frozen where it runs now");
        } else if !left && guard.left_host {
            tracing::warn!(domain_uuid = uuid, job_id = %guard.job_id,
                "guest at risk is back on this host: thawing it");
        }
        guard.left_host = left;
        guard.attempts += 1;
        if guard.attempts % WARN_EVERY == 1 {
            tracing::warn!(domain_uuid = uuid, job_id = %guard.job_id, attempts = guard.attempts,
                reason = %why, "guest at risk: thaw not confirmed yet, retrying");
        }
        guard.last_error = why;
        true
    }

    async fn clear(&self, uuid: &str, job_id: &str) {
        let info = {
            let mut guards = self.lock();
            if guards.get(uuid).is_none_or(|g| g.job_id != job_id) {
                return;
            }
            guards.remove(uuid)
        };
        let Some(info) = info else {
            return;
        };
        let log = Arc::clone(&self.log);
        let durable = info.clone();
        if let Err(e) = blocking::journal(move || log.cleared(&durable)).await {
            tracing::warn!(domain_uuid = uuid, error = %e,
                "could not journal the end of a thaw guard: the next start thaws once more");
        }
        tracing::info!(domain_uuid = uuid, job_id = %info.job_id, attempts = info.attempts,
            "guest confirmed thawed: guard cleared");
        self.restore_agent_timeout(uuid).await;
        self.cleared.notify_waiters();
    }

    /// An operator checked the guest where it runs now: stop guarding
    /// `uuid` (journalled, so a restart does not bring the guard back).
    /// The guard that was dismissed and whether the journal has it, or
    /// `None` without a guard.
    pub async fn dismiss(&self, uuid: &str) -> Option<(GuardInfo, Result<(), String>)> {
        let info = self.lock().remove(uuid)?;
        self.restore_timeouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uuid);
        let log = Arc::clone(&self.log);
        let durable = info.clone();
        let journalled = blocking::journal(move || log.cleared(&durable)).await;
        tracing::warn!(domain_uuid = uuid, job_id = %info.job_id, left_host = info.left_host,
            reason = %info.last_error, "thaw guard dismissed by an operator");
        self.cleared.notify_waiters();
        Some((info, journalled))
    }

    /// If `uuid` has a guard, give the domain agent timeout `seconds` back
    /// when it clears (and say so); `false` without a guard.
    pub fn restore_agent_timeout_on_clear(&self, uuid: &str, seconds: i32) -> bool {
        let guards = self.lock();
        if !guards.contains_key(uuid) {
            return false;
        }
        self.restore_timeouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uuid.to_string(), seconds);
        true
    }

    async fn restore_agent_timeout(&self, uuid: &str) {
        let seconds = self
            .restore_timeouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uuid);
        let (Some(seconds), Some(hv)) = (seconds, (self.hypervisor)()) else {
            return;
        };
        let id = uuid.to_string();
        let deadline = self.attempt_deadline;
        let restored = blocking::hv("agent timeout", deadline, move || {
            hv.set_agent_timeout(&id, seconds)
        })
        .await;
        if let Err(e) = restored {
            tracing::warn!(domain_uuid = uuid, seconds, error = %e,
                "could not give the domain its agent timeout back");
        }
    }

    /// Wait until `uuid` has no guard (tests, and a job waiting to start).
    pub async fn wait_cleared(&self, uuid: &str) {
        loop {
            let cleared = self.cleared.notified();
            if self.get(uuid).is_none() {
                return;
            }
            cleared.await;
        }
    }
}
