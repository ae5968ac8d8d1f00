//! The daemon's connections to libvirt and Ceph. Either may be down at start
//! or go away later: requests that need a missing backend fail at once with
//! `libvirt_unavailable` / `ceph_unavailable`, `daemon.status` says why, and
//! a background task keeps reconnecting.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;

use crate::libvirt::{Hypervisor, LibvirtHypervisor};
use crate::protocol::{ErrorKind, RpcError};
use crate::rbd::{CephStore, ImageStore};

/// How often a missing backend is retried.
const RETRY: Duration = Duration::from_secs(3);

/// One backend's connection and its last failure.
#[derive(Debug)]
struct Slot<T: ?Sized> {
    handle: Option<Arc<T>>,
    error: Option<String>,
}

/// Both backends.
#[derive(Debug)]
pub struct Backends {
    libvirt_uri: String,
    agent_timeout_secs: i32,
    ceph_conf: PathBuf,
    ceph_id: String,
    /// Ceph options set over ceph.conf's.
    ceph_options: Vec<(&'static str, String)>,
    libvirt: RwLock<Slot<dyn Hypervisor>>,
    ceph: RwLock<Slot<dyn ImageStore>>,
    /// Set while a libvirt connect runs: a hung connect is not piled upon.
    libvirt_connecting: Arc<AtomicBool>,
    /// Set while a Ceph connect runs.
    ceph_connecting: Arc<AtomicBool>,
    /// Handed over connected (a test's fakes): never replaced.
    given: bool,
}

/// A backend as `daemon.status` reports it.
#[derive(Debug, Serialize)]
pub struct BackendStatus {
    /// Whether requests can use it now.
    pub connected: bool,
    /// Why not, when not.
    pub error: Option<String>,
}

impl Backends {
    /// Backends for the configured URI and cluster, not yet connected.
    pub fn new(config: &crate::config::Config) -> Self {
        Backends {
            libvirt_uri: config.libvirt.uri.clone(),
            agent_timeout_secs: config.libvirt.agent_timeout_secs.ceil() as i32,
            ceph_conf: config.ceph.conf.clone(),
            ceph_id: config.ceph.client_id.clone(),
            ceph_options: config.ceph.client_options(),
            libvirt: RwLock::new(Slot {
                handle: None,
                error: Some("not connected yet".into()),
            }),
            ceph: RwLock::new(Slot {
                handle: None,
                error: Some("not connected yet".into()),
            }),
            libvirt_connecting: Arc::default(),
            ceph_connecting: Arc::default(),
            given: false,
        }
    }

    /// Backends handed over already connected (an in-process daemon over
    /// the workflow's fakes): never reconnected or replaced.
    pub fn given(
        config: &crate::config::Config,
        hypervisor: Arc<dyn Hypervisor>,
        store: Arc<dyn ImageStore>,
    ) -> Self {
        Backends {
            libvirt: RwLock::new(Slot {
                handle: Some(hypervisor),
                error: None,
            }),
            ceph: RwLock::new(Slot {
                handle: Some(store),
                error: None,
            }),
            given: true,
            ..Backends::new(config)
        }
    }

    /// The hypervisor, or `libvirt_unavailable` at once.
    pub fn hypervisor(&self) -> Result<Arc<dyn Hypervisor>, RpcError> {
        let slot = self.libvirt.read().unwrap_or_else(|p| p.into_inner());
        slot.handle.clone().ok_or_else(|| {
            RpcError::new(
                ErrorKind::LibvirtUnavailable,
                format!(
                    "libvirt at {} is not reachable: {}",
                    self.libvirt_uri,
                    slot.error.as_deref().unwrap_or("?")
                ),
            )
        })
    }

    /// The image store, or `ceph_unavailable` at once.
    pub fn store(&self) -> Result<Arc<dyn ImageStore>, RpcError> {
        let slot = self.ceph.read().unwrap_or_else(|p| p.into_inner());
        slot.handle.clone().ok_or_else(|| {
            RpcError::new(
                ErrorKind::CephUnavailable,
                format!(
                    "the Ceph cluster of {} is not reachable: {}",
                    self.ceph_conf.display(),
                    slot.error.as_deref().unwrap_or("?")
                ),
            )
        })
    }

    /// libvirt's state for `daemon.status`.
    pub fn libvirt_status(&self) -> BackendStatus {
        let slot = self.libvirt.read().unwrap_or_else(|p| p.into_inner());
        BackendStatus {
            connected: slot.handle.is_some(),
            error: slot.error.clone(),
        }
    }

    /// Ceph's state for `daemon.status`.
    pub fn ceph_status(&self) -> BackendStatus {
        let slot = self.ceph.read().unwrap_or_else(|p| p.into_inner());
        BackendStatus {
            connected: slot.handle.is_some(),
            error: slot.error.clone(),
        }
    }

    /// The libvirt URI.
    pub fn libvirt_uri(&self) -> &str {
        &self.libvirt_uri
    }

    /// The ceph.conf path.
    pub fn ceph_conf(&self) -> &std::path::Path {
        &self.ceph_conf
    }

    /// Try to connect whatever is missing, each attempt bounded by `deadline`
    /// (a connect that hangs keeps its thread; the next round tries again).
    pub async fn connect_missing(self: &Arc<Self>, deadline: Duration) {
        tokio::join!(self.connect_libvirt(deadline), self.connect_ceph(deadline));
    }

    /// Connect libvirt if it is missing, within `deadline`.
    pub async fn connect_libvirt(self: &Arc<Self>, deadline: Duration) {
        let need_libvirt = self.hypervisor().is_err();
        {
            if need_libvirt {
                let me = Arc::clone(self);
                let (uri, timeout) = (self.libvirt_uri.clone(), self.agent_timeout_secs);
                let busy = Arc::clone(&self.libvirt_connecting);
                if let Some(outcome) = attempt(deadline, busy, move || {
                    LibvirtHypervisor::connect(&uri, timeout)
                })
                .await
                {
                    me.set_libvirt(outcome.map(|hv| Arc::new(hv) as Arc<dyn Hypervisor>));
                }
            }
        }
    }

    /// Connect Ceph if it is missing, within `deadline`.
    pub async fn connect_ceph(self: &Arc<Self>, deadline: Duration) {
        let need_ceph = self.store().is_err();
        {
            if need_ceph {
                let me = Arc::clone(self);
                let connect = self.ceph_connector();
                let busy = Arc::clone(&self.ceph_connecting);
                if let Some(outcome) = attempt(deadline, busy, connect).await {
                    me.set_ceph(outcome.map(|s| Arc::new(s) as Arc<dyn ImageStore>));
                }
            }
        }
    }

    /// A Ceph connect with this daemon's settings, to run off the runtime.
    fn ceph_connector(
        &self,
    ) -> impl FnOnce() -> Result<CephStore, crate::rbd::RbdError> + Send + 'static {
        let (conf, id) = (self.ceph_conf.clone(), self.ceph_id.clone());
        let options = self.ceph_options.clone();
        move || CephStore::connect_with(&conf, &id, &options)
    }

    fn set_libvirt(&self, outcome: Result<Arc<dyn Hypervisor>, String>) {
        let mut slot = self.libvirt.write().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(hv) => {
                tracing::info!(uri = %self.libvirt_uri, "connected to libvirt");
                *slot = Slot {
                    handle: Some(hv),
                    error: None,
                };
            }
            Err(e) => {
                if slot.error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(uri = %self.libvirt_uri, error = %e, "libvirt unavailable");
                }
                slot.error = Some(e);
            }
        }
    }

    fn set_ceph(&self, outcome: Result<Arc<dyn ImageStore>, String>) {
        let mut slot = self.ceph.write().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(store) => {
                tracing::info!(conf = %self.ceph_conf.display(), "connected to Ceph");
                *slot = Slot {
                    handle: Some(store),
                    error: None,
                };
            }
            Err(e) => {
                if slot.error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(conf = %self.ceph_conf.display(), error = %e, "Ceph unavailable");
                }
                slot.error = Some(e);
            }
        }
    }

    /// Replace the Ceph connection with a new one (a new client address).
    /// Handles of the old one stuck on a dead OSD keep their locks and
    /// watches — under our own address, which librbd will not break; with a
    /// new address, recovery can fence the old one like any dead client.
    pub async fn reincarnate_ceph(self: &Arc<Self>) -> Result<(), String> {
        if self.given {
            return Err("the image store was handed over: it cannot be replaced".into());
        }
        let busy = Arc::clone(&self.ceph_connecting);
        match attempt(Duration::from_secs(30), busy, self.ceph_connector()).await {
            Some(Ok(store)) => {
                tracing::warn!(
                    "reconnected to Ceph under a new client address, to fence the old one"
                );
                self.set_ceph(Ok(Arc::new(store) as Arc<dyn ImageStore>));
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Err("a connect is already running".into()),
        }
    }

    /// Reconnect missing backends until `shutdown` fires.
    pub async fn keep_connected(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => self.connect_missing(Duration::from_secs(30)).await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// One connect attempt, unless one is still running (`None` then).
async fn attempt<T, E, F>(
    deadline: Duration,
    busy: Arc<AtomicBool>,
    connect: F,
) -> Option<Result<T, String>>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    if busy.swap(true, Ordering::SeqCst) {
        return None;
    }
    let call = move || {
        let outcome = connect();
        busy.store(false, Ordering::SeqCst);
        outcome
    };
    Some(
        match tokio::time::timeout(deadline, tokio::task::spawn_blocking(call)).await {
            Ok(Ok(Ok(handle))) => Ok(handle),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(join)) => Err(format!("connect panicked: {join}")),
            Err(_) => Err(format!("no answer within {} s", deadline.as_secs())),
        },
    )
}
