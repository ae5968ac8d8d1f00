//! Who may call: each connection's peer credentials (SO_PEERCRED) against
//! the configured users and groups. Root and the daemon's own user always
//! may; a group counts when it is the peer's primary or a supplementary one.
//! Supplementary groups come from the socket (SO_PEERGROUPS), as the kernel
//! recorded them at connect: reading /proc/<pid>/status after accept could
//! see another process under a reused pid, and it is file I/O on the async
//! path.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc;

use nix::unistd::{Gid, Uid};

use crate::policy::{gid_of, uid_of};

use crate::config::{Config, ConfigError};

/// The resolved access list.
#[derive(Debug, Clone, Default)]
pub struct Access {
    uids: HashSet<u32>,
    gids: HashSet<u32>,
    /// Names that did not resolve (`allowed user "nova"`): a name service
    /// not up yet, or a typo.
    unresolved: Vec<String>,
}

impl Access {
    /// Resolve names to ids; those that do not resolve are listed in
    /// [`Access::unresolved`] and admit nobody.
    pub fn from_config(config: &Config) -> Access {
        let mut access = Access::default();
        for entry in &config.allowed_users {
            match uid_of(entry) {
                Some(uid) => drop(access.uids.insert(uid)),
                None => access.unresolved.push(format!("allowed user {entry:?}")),
            }
        }
        for entry in &config.allowed_groups {
            match gid_of(entry) {
                Some(gid) => drop(access.gids.insert(gid)),
                None => access.unresolved.push(format!("allowed group {entry:?}")),
            }
        }
        access.uids.insert(0);
        access.uids.insert(Uid::effective().as_raw());
        access
    }

    /// The configured names that did not resolve.
    pub fn unresolved(&self) -> &[String] {
        &self.unresolved
    }

    /// Also let these users and groups connect (those `[[policy]]` rules
    /// name: a rule implies access).
    pub fn admit(&mut self, (uids, gids): (Vec<u32>, Vec<u32>)) {
        self.uids.extend(uids);
        self.gids.extend(gids);
    }

    /// Whether the peer `uid`/`gid`, member of `groups`, may call.
    pub fn allows(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        self.uids.contains(&uid)
            || self.gids.contains(&gid)
            || groups.iter().any(|g| self.gids.contains(g))
    }
}

/// The supplementary groups of the process at the other end of `socket`, as
/// they were when it connected (Linux 4.13+). An error denies them all.
pub fn peer_groups(socket: BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    const GID: usize = size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = (groups.len() * GID) as libc::socklen_t;
        // SAFETY: `groups` has room for `len` bytes and outlives the call;
        // `socket` is an open descriptor for its duration.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            groups.truncate(len as usize / GID);
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        // ERANGE: the kernel says in `len` how much room it needs
        if err.raw_os_error() == Some(libc::ERANGE) && len as usize > groups.len() * GID {
            groups.resize(len as usize / GID, 0);
            continue;
        }
        return Err(err);
    }
}

/// The group a socket should belong to, by name or gid.
pub fn socket_gid(entry: &str) -> Result<Gid, ConfigError> {
    gid_of(entry).map(Gid::from_raw).ok_or_else(|| {
        ConfigError::Invalid(format!(
            "socket_group {entry:?} does not exist on this host"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_s_groups_come_from_the_socket() {
        use std::os::fd::AsFd;
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        let mut mine: Vec<u32> = nix::unistd::getgroups()
            .expect("getgroups")
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let mut seen = peer_groups(ours.as_fd()).expect("SO_PEERGROUPS");
        mine.sort();
        seen.sort();
        assert_eq!(seen, mine);
    }

    #[test]
    fn root_and_self_always_listed_others_by_config() {
        let config = Config {
            allowed_users: vec!["4242".into()],
            allowed_groups: vec!["777".into()],
            ..Config::default()
        };
        let access = Access::from_config(&config);
        assert!(access.unresolved().is_empty());
        assert!(access.allows(0, 0, &[]));
        assert!(access.allows(Uid::effective().as_raw(), 12345, &[]));
        assert!(access.allows(4242, 1, &[]));
        assert!(access.allows(5000, 777, &[]));
        assert!(access.allows(5000, 5000, &[3, 777]));
        assert!(!access.allows(5000, 5000, &[3, 4]));
        let typo = Config {
            allowed_users: vec!["no-such-user-rbdsnapd".into()],
            ..Config::default()
        };
        let access = Access::from_config(&typo);
        assert_eq!(
            access.unresolved(),
            ["allowed user \"no-such-user-rbdsnapd\""]
        );
        assert!(access.allows(0, 0, &[]), "root is always served");
    }
}
