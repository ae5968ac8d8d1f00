//! Whether a disk's `<host>` elements name this daemon's cluster.
//!
//! A libvirt RBD disk may name the monitors of any cluster; the daemon only
//! talks to its own, so a disk of another cluster would be opened by its
//! `pool/image` in ours — a different image that happens to share the name.
//!
//! The rule: the disk is in our cluster when one of its monitors is one of
//! ours, compared as IP address and port after resolving names. A host
//! without a port means Ceph's defaults (6789 for msgr v1, 3300 for v2),
//! which is what librados (and so QEMU) tries for it. Our monitors are every
//! address of the cluster's monitor map (v1 and v2 of each monitor) and of
//! the configured `mon_host`. A disk that names no monitor uses the host's
//! Ceph configuration, assumed to be ours. A monitor name that does not
//! resolve still matches one of our configured names spelled the same.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Ceph's default monitor ports: msgr v1 and v2.
const DEFAULT_PORTS: [u16; 2] = [6789, 3300];

/// One monitor as written somewhere: a host (name or address) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port, when written.
    pub port: Option<u16>,
}

impl Endpoint {
    /// `host`, `host:port`, `1.2.3.4:port`, `[v6]:port`, `v6`, and the msgr
    /// forms `v1:1.2.3.4:6789/0`, `v2:...`; `None` for an empty one.
    pub fn parse(text: &str) -> Option<Endpoint> {
        let text = text.trim();
        let text = text
            .strip_prefix("v1:")
            .or_else(|| text.strip_prefix("v2:"))
            .unwrap_or(text);
        // a nonce: `addr:port/nonce`
        let text = text.split('/').next().unwrap_or(text);
        if text.is_empty() {
            return None;
        }
        if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return Some(Endpoint {
                host: host.to_string(),
                port,
            });
        }
        if text.parse::<std::net::Ipv6Addr>().is_ok() {
            return Some(Endpoint {
                host: text.to_string(),
                port: None,
            });
        }
        match text.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => Some(Endpoint {
                host: host.to_string(),
                port: port.parse().ok(),
            }),
            _ => Some(Endpoint {
                host: text.to_string(),
                port: None,
            }),
        }
    }

    /// The socket addresses this endpoint may mean: its resolved
    /// addresses, each with its port or both default ports.
    fn resolve(&self) -> Vec<SocketAddr> {
        let ports: Vec<u16> = match self.port {
            Some(port) => vec![port],
            None => DEFAULT_PORTS.to_vec(),
        };
        let ips: Vec<IpAddr> = match self.host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (self.host.as_str(), 0)
                .to_socket_addrs()
                .map(|addrs| addrs.map(|a| a.ip()).collect())
                .unwrap_or_default(),
        };
        ips.iter()
            .flat_map(|ip| ports.iter().map(move |port| SocketAddr::new(*ip, *port)))
            .collect()
    }
}

/// Every monitor written in a `mon_host` value: entries separated by
/// commas, spaces or semicolons, each maybe a bracketed list of msgr
/// addresses (`[v2:1.2.3.4:3300,v1:1.2.3.4:6789]`).
pub fn parse_mon_host(value: &str) -> Vec<Endpoint> {
    let mut out = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix("[v") {
            let end = inner.find(']').unwrap_or(inner.len());
            let vec = format!("v{}", &inner[..end]);
            out.extend(vec.split(',').filter_map(Endpoint::parse));
            rest = inner.get(end + 1..).unwrap_or_default();
        } else {
            let end = rest.find([',', ' ', ';']).unwrap_or(rest.len());
            out.extend(Endpoint::parse(&rest[..end]));
            rest = &rest[end..];
        }
        rest = rest.trim_start_matches([',', ' ', ';']);
    }
    out
}

/// How a disk's monitors compare with ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The disk names no monitor: it uses the host's configuration.
    Unnamed,
    /// One of its monitors is one of ours.
    Ours,
    /// None of its monitors is ours.
    Other,
}

/// Compare a disk's `<host>` list (`name[:port]` each) with our monitors.
pub fn compare(disk_hosts: &[String], ours: &[Endpoint]) -> Verdict {
    let disk: Vec<Endpoint> = disk_hosts
        .iter()
        .filter_map(|h| Endpoint::parse(h))
        .collect();
    if disk.is_empty() {
        return Verdict::Unnamed;
    }
    let our_addrs: HashSet<SocketAddr> = ours.iter().flat_map(Endpoint::resolve).collect();
    let same_name = |d: &Endpoint| {
        ours.iter().any(|o| {
            o.host.eq_ignore_ascii_case(&d.host)
                && (o.port == d.port || o.port.is_none() || d.port.is_none())
        })
    };
    let ours_too = |d: &Endpoint| {
        let resolved = d.resolve();
        if resolved.is_empty() {
            return same_name(d);
        }
        resolved.iter().any(|a| our_addrs.contains(a))
    };
    if disk.iter().any(ours_too) {
        Verdict::Ours
    } else {
        Verdict::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn bed() -> Vec<Endpoint> {
        parse_mon_host("[v2:127.0.0.1:26800,v1:127.0.0.1:26801]")
    }

    #[test]
    fn mon_host_forms_are_read() {
        let ep = |h: &str, p: Option<u16>| Endpoint {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            bed(),
            vec![ep("127.0.0.1", Some(26800)), ep("127.0.0.1", Some(26801))]
        );
        assert_eq!(
            parse_mon_host("10.0.0.1:6789, mon-b ;[::1]:3300 fe80::1"),
            vec![
                ep("10.0.0.1", Some(6789)),
                ep("mon-b", None),
                ep("::1", Some(3300)),
                ep("fe80::1", None)
            ]
        );
        assert_eq!(
            parse_mon_host("[v2:10.0.0.1:3300/0,v1:10.0.0.1:6789/0],[v2:10.0.0.2:3300/0]"),
            vec![
                ep("10.0.0.1", Some(3300)),
                ep("10.0.0.1", Some(6789)),
                ep("10.0.0.2", Some(3300))
            ]
        );
    }

    #[test]
    fn a_disk_naming_our_v1_or_v2_port_is_ours() {
        assert_eq!(compare(&hosts(&["127.0.0.1:26801"]), &bed()), Verdict::Ours);
        assert_eq!(compare(&hosts(&["127.0.0.1:26800"]), &bed()), Verdict::Ours);
        // a name that resolves to our address
        assert_eq!(compare(&hosts(&["localhost:26801"]), &bed()), Verdict::Ours);
        // one of several monitors is enough
        assert_eq!(
            compare(&hosts(&["192.0.2.7:6789", "127.0.0.1:26801"]), &bed()),
            Verdict::Ours
        );
    }

    #[test]
    fn the_same_address_on_another_port_is_another_cluster() {
        assert_eq!(
            compare(&hosts(&["127.0.0.1:26901"]), &bed()),
            Verdict::Other
        );
        assert_eq!(
            compare(&hosts(&["192.0.2.7:26801"]), &bed()),
            Verdict::Other
        );
        // no port: Ceph's defaults, which the bed does not use
        assert_eq!(compare(&hosts(&["127.0.0.1"]), &bed()), Verdict::Other);
    }

    #[test]
    fn default_ports_match_a_host_without_a_port() {
        let ours = parse_mon_host("10.1.2.3");
        assert_eq!(compare(&hosts(&["10.1.2.3:6789"]), &ours), Verdict::Ours);
        assert_eq!(compare(&hosts(&["10.1.2.3:3300"]), &ours), Verdict::Ours);
        assert_eq!(compare(&hosts(&["10.1.2.3"]), &ours), Verdict::Ours);
        assert_eq!(compare(&hosts(&["10.1.2.3:6790"]), &ours), Verdict::Other);
    }

    #[test]
    fn unresolvable_names_match_only_the_same_name() {
        let ours = parse_mon_host("mon-a.invalid:6789");
        assert_eq!(compare(&hosts(&["MON-A.invalid"]), &ours), Verdict::Ours);
        assert_eq!(compare(&hosts(&["mon-b.invalid"]), &ours), Verdict::Other);
    }

    #[test]
    fn a_disk_without_hosts_uses_the_hosts_configuration() {
        assert_eq!(compare(&[], &bed()), Verdict::Unnamed);
    }
}
