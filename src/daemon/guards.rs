//! `guard.dismiss`: an operator ends a thaw guard the daemon cannot end
//! itself — typically a guest that migrated away before its thaw was
//! confirmed, which this host's libvirt can no longer reach. The operator
//! checks the guest where it runs now (and thaws it there); the dismissal
//! is journalled, so a restart does not bring the guard back. A caller held
//! to `[[policy]]` rules dismisses only guards of the domains they name.

use serde_json::Value;

use super::Daemon;
use crate::policy::Scope;
use crate::protocol::{ErrorKind, RpcError};

pub(super) async fn guard_dismiss(
    daemon: &Daemon,
    domain_uuid: &str,
    scope: &Scope,
) -> Result<Value, RpcError> {
    let not_found = || {
        RpcError::new(
            ErrorKind::GuardNotFound,
            format!("no thaw guard on domain {domain_uuid} (daemon.status lists guests_at_risk)"),
        )
    };
    let Some(guard) = daemon.guards.get(domain_uuid) else {
        return Err(not_found());
    };
    if !matches!(scope, Scope::Unrestricted) {
        let name = daemon.jobs.get(&guard.job_id).map(|job| job.domain_name);
        match name {
            Some(name) => scope.domain(&name).map_err(super::denied)?,
            // its job is no longer kept: no name the rules could match
            None => return Err(not_found()),
        };
    }
    let Some((guard, journalled)) = daemon.guards.dismiss(domain_uuid).await else {
        return Err(not_found());
    };
    if let Err(e) = journalled {
        tracing::error!(domain_uuid, error = %e,
            "could not journal a dismissed guard: the next start guards the domain again");
    }
    super::to_value(&super::results::Dismissed {
        guard,
        dismissed: true,
    })
}
