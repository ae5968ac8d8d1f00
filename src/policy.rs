//! Per-caller rules: which domains a caller may snapshot (name patterns),
//! which pools it may write into, and whether it may delete. Resolved at
//! start (a user or group that does not exist fails then); each connection
//! gets the [`Scope`] of its peer, and the daemon checks it before acting.
//!
//! With no `[[policy]]` rule configured, every caller that may connect may
//! do everything (the behaviour before rules existed). Once rules exist, a
//! caller is held to the rules naming it (its uid, primary group or a
//! supplementary group); one named by none may still read (status, jobs,
//! metrics) but not act — except root and the daemon's own user, which stay
//! unrestricted unless a rule names them.

use nix::unistd::{Group, Uid, User};

use crate::config::{Config, ConfigError, PolicyRule};

/// One resolved rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its place in the file (1-based), for messages.
    number: usize,
    uids: Vec<u32>,
    gids: Vec<u32>,
    domains: Option<Vec<String>>,
    pools: Option<Vec<String>>,
    delete: bool,
    delete_any_host: bool,
}

/// The configured rules, resolved.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    /// Users and groups the rules name that did not resolve (they match
    /// nobody until they do).
    unresolved: Vec<String>,
}

/// The process at the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer<'a> {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its supplementary groups.
    pub groups: &'a [u32],
}

/// What one caller may do.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Everything (no rules configured, or root/the daemon's user unnamed).
    Unrestricted,
    /// What the rules naming the caller allow (none: read only).
    Rules {
        /// Who, for messages (`uid 1000`).
        who: String,
        /// The rules naming the caller.
        rules: Vec<Rule>,
    },
}

/// A refusal, in words naming the caller and the rules.
pub type Refusal = String;

impl Policy {
    /// Check the rules and resolve their users and groups: a malformed
    /// rule is an error; a name that does not resolve is listed in
    /// [`Policy::unresolved`] and matches nobody.
    pub fn from_config(config: &Config) -> Result<Policy, ConfigError> {
        let mut unresolved = Vec::new();
        let rules = config
            .policy
            .iter()
            .enumerate()
            .map(|(i, rule)| resolve_rule(i + 1, rule, &mut unresolved))
            .collect::<Result<_, _>>()?;
        Ok(Policy { rules, unresolved })
    }

    /// The users and groups named by rules that did not resolve.
    pub fn unresolved(&self) -> &[String] {
        &self.unresolved
    }

    /// Every uid and gid some rule names (they may connect).
    pub fn members(&self) -> (Vec<u32>, Vec<u32>) {
        let uids = self.rules.iter().flat_map(|r| r.uids.clone()).collect();
        let gids = self.rules.iter().flat_map(|r| r.gids.clone()).collect();
        (uids, gids)
    }

    /// What `peer` may do.
    pub fn scope(&self, peer: Peer<'_>) -> Scope {
        if self.rules.is_empty() {
            return Scope::Unrestricted;
        }
        let rules: Vec<Rule> = self
            .rules
            .iter()
            .filter(|r| {
                r.uids.contains(&peer.uid)
                    || r.gids.contains(&peer.gid)
                    || peer.groups.iter().any(|g| r.gids.contains(g))
            })
            .cloned()
            .collect();
        let privileged = peer.uid == 0 || peer.uid == Uid::effective().as_raw();
        if rules.is_empty() && privileged {
            return Scope::Unrestricted;
        }
        Scope::Rules {
            who: format!("uid {}", peer.uid),
            rules,
        }
    }
}

/// A user's uid, by number or name; `None` when the name does not resolve.
pub fn uid_of(entry: &str) -> Option<u32> {
    entry.parse::<u32>().ok().or_else(|| {
        User::from_name(entry)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    })
}

/// A group's gid, by number or name; `None` when the name does not resolve.
pub fn gid_of(entry: &str) -> Option<u32> {
    entry.parse::<u32>().ok().or_else(|| {
        Group::from_name(entry)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    })
}

fn resolve_rule(
    number: usize,
    rule: &PolicyRule,
    unresolved: &mut Vec<String>,
) -> Result<Rule, ConfigError> {
    let invalid = |m: String| ConfigError::Invalid(format!("policy rule {number}: {m}"));
    if rule.users.is_empty() && rule.groups.is_empty() {
        return Err(invalid("names no users and no groups".into()));
    }
    for (what, list) in [("domains", &rule.domains), ("pools", &rule.pools)] {
        if list
            .as_ref()
            .is_some_and(|l| l.iter().any(String::is_empty))
        {
            return Err(invalid(format!("{what} has an empty entry")));
        }
    }
    let mut ids = |what: &str, entries: &[String], of: fn(&str) -> Option<u32>| {
        let mut ids = Vec::new();
        for entry in entries {
            match of(entry) {
                Some(id) => ids.push(id),
                None => unresolved.push(format!("policy rule {number}: {what} {entry:?}")),
            }
        }
        ids
    };
    Ok(Rule {
        number,
        uids: ids("user", &rule.users, uid_of),
        gids: ids("group", &rule.groups, gid_of),
        domains: rule.domains.clone(),
        pools: rule.pools.clone(),
        delete: rule.delete,
        delete_any_host: rule.delete_any_host,
    })
}

impl Rule {
    fn domain(&self, name: &str) -> bool {
        self.domains
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| glob(p, name)))
    }

    fn pool(&self, pool: &str) -> bool {
        self.pools
            .as_ref()
            .is_none_or(|pools| pools.iter().any(|p| p == pool))
    }
}

impl Scope {
    /// Whether the caller sees what happens on domain `name` (its jobs,
    /// its guard, its recovery): the domains its rules let it act on.
    pub fn sees(&self, name: &str) -> bool {
        self.domain(name).is_ok()
    }

    /// Whether the caller may freeze and snapshot domain `name` (or look at
    /// its disks, or cancel its jobs). On success, the destination pools it
    /// may write into for that domain (`None`: any).
    pub fn domain(&self, name: &str) -> Result<Option<Vec<String>>, Refusal> {
        let Scope::Rules { who, rules } = self else {
            return Ok(None);
        };
        let matching: Vec<&Rule> = rules.iter().filter(|r| r.domain(name)).collect();
        if matching.is_empty() {
            return Err(format!(
                "{who} may not act on domain {name:?} ({})",
                describe(rules, "domains")
            ));
        }
        if matching.iter().any(|r| r.pools.is_none()) {
            return Ok(None);
        }
        let mut pools: Vec<String> = matching
            .iter()
            .flat_map(|r| r.pools.clone().unwrap_or_default())
            .collect();
        pools.sort();
        pools.dedup();
        Ok(Some(pools))
    }

    /// Whether the caller may delete an image in `pool`; on success, whether
    /// it may also delete another host's image (`None`: the daemon's
    /// `delete_any_host` decides).
    pub fn delete(&self, pool: &str) -> Result<Option<bool>, Refusal> {
        let Scope::Rules { who, rules } = self else {
            return Ok(None);
        };
        let matching: Vec<&Rule> = rules.iter().filter(|r| r.delete && r.pool(pool)).collect();
        if matching.is_empty() {
            let why = if rules.iter().any(|r| r.delete) {
                format!("its rules with delete = true allow no pool {pool:?}")
            } else {
                describe(rules, "delete")
            };
            return Err(format!(
                "{who} may not delete images in pool {pool:?} ({why})"
            ));
        }
        Ok(Some(matching.iter().any(|r| r.delete_any_host)))
    }
}

/// What the caller's rules say about `what`, for a refusal.
fn describe(rules: &[Rule], what: &str) -> String {
    if rules.is_empty() {
        return "no [[policy]] rule names this caller, so it may only read".into();
    }
    let numbers: Vec<String> = rules.iter().map(|r| r.number.to_string()).collect();
    let allowed: Vec<String> = match what {
        "domains" => rules
            .iter()
            .flat_map(|r| r.domains.clone().unwrap_or_default())
            .collect(),
        _ => Vec::new(),
    };
    let detail = if allowed.is_empty() {
        String::new()
    } else {
        format!(": {}", allowed.join(", "))
    };
    format!(
        "policy rule(s) {} do not allow it{detail}",
        numbers.join(", ")
    )
}

/// Shell-style match: `*` any run of characters, `?` any one, the rest
/// literally.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // where the last `*` was, and the name position it matched up to
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(users: &[&str], domains: Option<&[&str]>, pools: Option<&[&str]>) -> PolicyRule {
        let strings = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        PolicyRule {
            users: strings(users),
            domains: domains.map(strings),
            pools: pools.map(strings),
            ..PolicyRule::default()
        }
    }

    fn policy(rules: Vec<PolicyRule>) -> Policy {
        let config = Config {
            policy: rules,
            ..Config::default()
        };
        Policy::from_config(&config).expect("policy")
    }

    fn peer(uid: u32, groups: &[u32]) -> Peer<'_> {
        Peer {
            uid,
            gid: 60000,
            groups,
        }
    }

    #[test]
    fn globs() {
        assert!(glob("instance-*", "instance-0001"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYbc"));
        assert!(glob("vm-??", "vm-01"));
        assert!(!glob("vm-??", "vm-1"));
        assert!(!glob("instance-*", "other"));
        assert!(!glob("a*c", "abcd"));
        assert!(glob("exact", "exact"));
    }

    #[test]
    fn no_rules_leave_everyone_unrestricted() {
        let scope = policy(vec![]).scope(peer(5000, &[]));
        assert_eq!(scope.domain("anything"), Ok(None));
        assert_eq!(scope.delete("vms"), Ok(None));
    }

    #[test]
    fn a_rule_limits_domains_pools_and_deletes() {
        let mut deleter = rule(&["5001"], Some(&["instance-*"]), Some(&["images"]));
        deleter.delete = true;
        let p = policy(vec![
            rule(&["5000"], Some(&["instance-*"]), Some(&["images"])),
            deleter,
        ]);
        let nova = p.scope(peer(5000, &[]));
        assert_eq!(nova.domain("instance-7"), Ok(Some(vec!["images".into()])));
        let refused = nova.domain("db-1").expect_err("refused");
        assert!(
            refused.contains("uid 5000") && refused.contains("instance-*"),
            "{refused}"
        );
        assert!(nova.delete("images").is_err());
        let deleter = p.scope(peer(5001, &[]));
        assert_eq!(deleter.delete("images"), Ok(Some(false)));
        assert!(deleter.delete("vms").is_err());
    }

    #[test]
    fn unnamed_callers_only_read_but_root_keeps_everything() {
        let p = policy(vec![rule(&["5000"], None, None)]);
        let stranger = p.scope(peer(5002, &[]));
        let refused = stranger.domain("x").expect_err("refused");
        assert!(refused.contains("may only read"), "{refused}");
        assert!(stranger.delete("vms").is_err());
        assert_eq!(p.scope(peer(0, &[])).domain("x"), Ok(None));
        // named, root is held to its rule
        let p = policy(vec![rule(&["0"], Some(&["a"]), None)]);
        assert!(p.scope(peer(0, &[])).domain("b").is_err());
    }

    #[test]
    fn groups_match_primary_and_supplementary_and_rules_add_up() {
        let mut by_group = rule(&[], Some(&["web-*"]), Some(&["vms"]));
        by_group.groups = vec!["7000".into()];
        let p = policy(vec![
            by_group,
            rule(&["5000"], Some(&["web-*"]), Some(&["images"])),
        ]);
        assert!(p.scope(peer(5003, &[7000])).domain("web-1").is_ok());
        let both = p.scope(peer(5000, &[7000]));
        assert_eq!(
            both.domain("web-1"),
            Ok(Some(vec!["images".to_string(), "vms".to_string()]))
        );
        let primary = p.scope(Peer {
            uid: 5004,
            gid: 7000,
            groups: &[],
        });
        assert!(primary.domain("web-2").is_ok());
    }

    #[test]
    fn bad_rules_fail_at_start() {
        let config = |r: PolicyRule| Config {
            policy: vec![r],
            ..Config::default()
        };
        assert!(Policy::from_config(&config(rule(&[], None, None))).is_err());
        // a name that does not resolve is no error: it matches nobody,
        // and is listed (the daemon serves only root until it resolves)
        let typo = Policy::from_config(&config(rule(&["no-such-user-rbdsnapd"], None, None)))
            .expect("a missing name is not a malformed rule");
        assert_eq!(
            typo.unresolved(),
            ["policy rule 1: user \"no-such-user-rbdsnapd\""]
        );
        assert!(Policy::from_config(&config(rule(&["5000"], Some(&[""]), None))).is_err());
    }
}
