//! Who may call: each connection's peer credentials (SO_PEERCRED) against
//! the configured users and groups. Root and the daemon's own user always
//! may; a group counts when it is the peer's primary or a supplementary one.

use std::collections::HashSet;

use nix::unistd::{Gid, Group, Uid, User};

use crate::config::{Config, ConfigError};

/// The resolved access list.
#[derive(Debug, Clone, Default)]
pub struct Access {
    uids: HashSet<u32>,
    gids: HashSet<u32>,
}

fn resolve<T>(
    what: &str,
    entry: &str,
    by_name: impl Fn(&str) -> Option<T>,
    id: impl Fn(T) -> u32,
) -> Result<u32, ConfigError> {
    if let Ok(number) = entry.parse::<u32>() {
        return Ok(number);
    }
    by_name(entry).map(id).ok_or_else(|| {
        ConfigError::Invalid(format!("{what} {entry:?} does not exist on this host"))
    })
}

impl Access {
    /// Resolve names to ids now, so that a typo fails at start.
    pub fn from_config(config: &Config) -> Result<Access, ConfigError> {
        let user = |name: &str| User::from_name(name).ok().flatten();
        let group = |name: &str| Group::from_name(name).ok().flatten();
        let mut access = Access::default();
        for entry in &config.allowed_users {
            access
                .uids
                .insert(resolve("allowed user", entry, user, |u| u.uid.as_raw())?);
        }
        for entry in &config.allowed_groups {
            access
                .gids
                .insert(resolve("allowed group", entry, group, |g| g.gid.as_raw())?);
        }
        access.uids.insert(0);
        access.uids.insert(Uid::effective().as_raw());
        Ok(access)
    }

    /// Whether the peer `uid`/`gid` (process `pid`) may call.
    pub fn allows(&self, uid: u32, gid: u32, pid: Option<i32>) -> bool {
        if self.uids.contains(&uid) || self.gids.contains(&gid) {
            return true;
        }
        !self.gids.is_empty()
            && pid.is_some_and(|pid| {
                supplementary_groups(pid)
                    .iter()
                    .any(|g| self.gids.contains(g))
            })
    }
}

/// A process's supplementary groups, from /proc (empty when unreadable).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The group a socket should belong to, by name or gid.
pub fn socket_gid(entry: &str) -> Result<Gid, ConfigError> {
    let group = |name: &str| Group::from_name(name).ok().flatten();
    resolve("socket_group", entry, group, |g| g.gid.as_raw()).map(Gid::from_raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_self_always_listed_others_by_config() {
        let config = Config {
            allowed_users: vec!["4242".into()],
            allowed_groups: vec!["777".into()],
            ..Config::default()
        };
        let access = Access::from_config(&config).expect("access");
        assert!(access.allows(0, 0, None));
        assert!(access.allows(Uid::effective().as_raw(), 12345, None));
        assert!(access.allows(4242, 1, None));
        assert!(access.allows(5000, 777, None));
        assert!(!access.allows(5000, 5000, None));
        let typo = Config {
            allowed_users: vec!["no-such-user-rbdsnapd".into()],
            ..Config::default()
        };
        assert!(Access::from_config(&typo).is_err());
    }
}
