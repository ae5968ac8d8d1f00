//! Who may call and what, as resolved from the configuration's names, and
//! kept resolving: a user or group name that does not resolve at start (the
//! name service, LDAP say, not up yet) must not keep the daemon from
//! starting — its journalled thaw guards have to run — so the daemon starts
//! with what resolved, serves only root and its own user while anything is
//! missing, and tries the names again until all resolve.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::peer::Access;
use crate::config::{Config, ConfigError};
use crate::policy::Policy;

/// How often names that did not resolve are tried again.
const RETRY: Duration = Duration::from_secs(10);

/// One resolution of the configuration's access list and rules.
#[derive(Debug)]
pub struct Admission {
    /// Who may connect.
    pub access: Access,
    /// What each caller may do.
    pub policy: Policy,
}

impl Admission {
    /// Resolve now; only a malformed rule is an error.
    pub fn resolve(config: &Config) -> Result<Admission, ConfigError> {
        let policy = Policy::from_config(config)?;
        let mut access = Access::from_config(config);
        access.admit(policy.members());
        Ok(Admission { access, policy })
    }

    /// Every configured name that did not resolve.
    pub fn unresolved(&self) -> Vec<String> {
        let mut all = self.access.unresolved().to_vec();
        all.extend_from_slice(self.policy.unresolved());
        all
    }
}

/// The current admission, replaced when a retry resolves more.
#[derive(Debug)]
pub struct Gate(RwLock<Arc<Admission>>);

impl Gate {
    /// Resolve now; a malformed rule is an error, a missing name is not.
    pub fn new(config: &Config) -> Result<Gate, ConfigError> {
        let admission = Admission::resolve(config)?;
        let missing = admission.unresolved();
        if !missing.is_empty() {
            tracing::error!(names = ?missing,
                "names in the configuration do not resolve (name service not up, or a typo): \
                 serving only root and the daemon's user until they do; retried every 10 s");
        }
        Ok(Gate(RwLock::new(Arc::new(admission))))
    }

    /// The admission connections are checked against now.
    pub fn current(&self) -> Arc<Admission> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Try the names again every [`RETRY`] until they all resolve (off the
    /// runtime: a name service may block).
    pub async fn keep_resolving(
        self: Arc<Self>,
        config: Arc<Config>,
        mut stopped: watch::Receiver<bool>,
    ) {
        while !self.current().unresolved().is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = stopped.changed() => return,
            }
            let config = Arc::clone(&config);
            let Ok(Ok(admission)) =
                tokio::task::spawn_blocking(move || Admission::resolve(&config)).await
            else {
                continue;
            };
            let missing = admission.unresolved();
            if missing.is_empty() {
                tracing::info!("every configured user and group resolves now: serving all callers");
            }
            *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(admission);
        }
    }
}
