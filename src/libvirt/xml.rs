//! Reading what the daemon needs from a domain's live XML: its disks (with
//! RBD sources) and the guest agent channel. A real XML parser, because
//! libvirt may order, quote and escape attributes as it likes.

use super::{AgentChannel, Disk, DiskSource, RbdSource};

/// The guest agent's channel name, as QEMU and libvirt know it.
pub const AGENT_CHANNEL: &str = "org.qemu.guest_agent.0";

/// Disks and agent channel of a domain, from its XML.
pub fn parse(xml: &str) -> Result<(Vec<Disk>, AgentChannel), String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("domain XML: {e}"))?;
    let Some(devices) = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("devices"))
    else {
        return Ok((Vec::new(), AgentChannel::Missing));
    };
    let disks = devices
        .children()
        .filter(|n| n.has_tag_name("disk"))
        .map(parse_disk)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let agent = devices
        .children()
        .filter(|n| n.has_tag_name("channel"))
        .filter_map(|ch| child(ch, "target"))
        .find(|t| {
            t.attribute("type") == Some("virtio") && t.attribute("name") == Some(AGENT_CHANNEL)
        })
        .map_or(AgentChannel::Missing, |t| match t.attribute("state") {
            Some("connected") => AgentChannel::Connected,
            Some("disconnected") => AgentChannel::Disconnected,
            _ => AgentChannel::Unknown,
        });
    Ok((disks, agent))
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|n| n.has_tag_name(tag))
}

/// One `<disk>`; `None` for a disk without a target (nothing can name it).
fn parse_disk(disk: roxmltree::Node<'_, '_>) -> Result<Option<Disk>, String> {
    let Some(target) = child(disk, "target").and_then(|t| t.attribute("dev")) else {
        return Ok(None);
    };
    let boot_order = match child(disk, "boot").and_then(|b| b.attribute("order")) {
        Some(order) => Some(
            order
                .parse()
                .map_err(|_| format!("disk {target}: boot order {order:?}"))?,
        ),
        None => None,
    };
    let kind = disk.attribute("type").unwrap_or("file");
    let source = child(disk, "source");
    let protocol = source.and_then(|s| s.attribute("protocol"));
    let source = match (kind, protocol, source) {
        ("network", Some("rbd"), Some(src)) => {
            DiskSource::Rbd(parse_rbd(disk, src).map_err(|e| format!("disk {target}: {e}"))?)
        }
        _ => DiskSource::Other {
            kind: protocol.map_or_else(|| kind.to_string(), |p| format!("{kind}/{p}")),
            path: source.and_then(|s| {
                ["file", "dev", "name", "dir", "volume"]
                    .iter()
                    .find_map(|a| s.attribute(*a))
                    .map(str::to_string)
            }),
        },
    };
    Ok(Some(Disk {
        target: target.to_string(),
        device: disk.attribute("device").unwrap_or("disk").to_string(),
        boot_order,
        source,
    }))
}

/// `<source protocol='rbd' name='pool[/namespace]/image[@snap]'>` + hosts + auth.
fn parse_rbd(
    disk: roxmltree::Node<'_, '_>,
    src: roxmltree::Node<'_, '_>,
) -> Result<RbdSource, String> {
    let name = src.attribute("name").ok_or("rbd source without a name")?;
    let (path, mut snapshot) = match name.split_once('@') {
        Some((path, snap)) => (path, Some(snap.to_string())),
        None => (name, None),
    };
    if let Some(snap) = child(src, "snapshot").and_then(|s| s.attribute("name")) {
        snapshot = Some(snap.to_string());
    }
    let parts: Vec<&str> = path.split('/').collect();
    let (pool, namespace, image) = match parts.as_slice() {
        [pool, image] => (*pool, None, *image),
        [pool, ns, image] => (*pool, Some(ns.to_string()), *image),
        _ => {
            return Err(format!(
                "rbd source name {name:?} is not pool/[namespace/]image"
            ))
        }
    };
    if pool.is_empty() || image.is_empty() {
        return Err(format!(
            "rbd source name {name:?} has an empty pool or image"
        ));
    }
    let hosts = src
        .children()
        .filter(|n| n.has_tag_name("host"))
        .filter_map(|h| {
            let host = h.attribute("name")?;
            Some(match h.attribute("port") {
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            })
        })
        .collect();
    // libvirt accepts <auth> inside <disk> (old) or inside <source> (new)
    let auth_user = child(src, "auth")
        .or_else(|| child(disk, "auth"))
        .and_then(|a| a.attribute("username"))
        .map(str::to_string);
    Ok(RbdSource {
        pool: pool.to_string(),
        namespace,
        image: image.to_string(),
        snapshot,
        hosts,
        auth_user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<domain type='kvm'><name>d</name><devices>
      <disk type='network' device='disk'>
        <auth username='nova'><secret type='ceph' uuid='x'/></auth>
        <source protocol='rbd' name='vms/ns1/disk-a'>
          <host name='10.0.0.1' port='6789'/><host name='mon2'/>
        </source>
        <target dev='vdb' bus='virtio'/><boot order='2'/>
      </disk>
      <disk type="network" device="disk">
        <source protocol="rbd" name="vms/disk-b@base"><auth username="admin"/></source>
        <target dev="vda"/><boot order="1"/>
      </disk>
      <disk type='file' device='cdrom'><source file='/x.iso'/><target dev='hdc'/></disk>
      <disk type='network'><source protocol='nbd' name='exp'/><target dev='vdc'/></disk>
      <disk type='file'><source file='/no-target.img'/></disk>
      <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' state='connected'/></channel>
    </devices></domain>"#;

    #[test]
    fn rbd_disks_with_namespace_snapshot_hosts_and_auth() {
        let (disks, agent) = parse(XML).expect("parses");
        assert_eq!(agent, AgentChannel::Connected);
        assert_eq!(disks.len(), 4, "the disk without a target is skipped");
        let DiskSource::Rbd(a) = &disks[0].source else {
            panic!("vdb is rbd")
        };
        assert_eq!(
            (a.pool.as_str(), a.namespace.as_deref(), a.image.as_str()),
            ("vms", Some("ns1"), "disk-a")
        );
        assert_eq!(a.hosts, ["10.0.0.1:6789", "mon2"]);
        assert_eq!(a.auth_user.as_deref(), Some("nova"));
        assert_eq!(disks[0].boot_order, Some(2));
        let DiskSource::Rbd(b) = &disks[1].source else {
            panic!("vda is rbd")
        };
        assert_eq!(
            (b.image.as_str(), b.snapshot.as_deref()),
            ("disk-b", Some("base"))
        );
        assert_eq!(b.auth_user.as_deref(), Some("admin"));
    }

    #[test]
    fn other_disks_keep_their_kind_and_path() {
        let (disks, _) = parse(XML).expect("parses");
        assert_eq!(disks[2].device, "cdrom");
        assert_eq!(
            disks[2].source,
            DiskSource::Other {
                kind: "file".into(),
                path: Some("/x.iso".into())
            }
        );
        assert_eq!(
            disks[3].source,
            DiskSource::Other {
                kind: "network/nbd".into(),
                path: Some("exp".into())
            }
        );
    }

    #[test]
    fn agent_channel_states() {
        let with = |state: &str| {
            format!("<domain><devices><channel type='unix'><target type='virtio' name='{AGENT_CHANNEL}'{state}/></channel></devices></domain>")
        };
        assert_eq!(parse(&with("")).expect("xml").1, AgentChannel::Unknown);
        assert_eq!(
            parse(&with(" state='disconnected'")).expect("xml").1,
            AgentChannel::Disconnected
        );
        assert_eq!(
            parse("<domain><devices/></domain>").expect("xml").1,
            AgentChannel::Missing
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(parse("<domain><devices>").is_err());
        let bad = "<domain><devices><disk type='network'><source protocol='rbd' name='justone'/><target dev='vda'/></disk></devices></domain>";
        assert!(parse(bad).is_err_and(|e| e.contains("pool/[namespace/]image")));
        let bad_boot =
            "<domain><devices><disk><target dev='vda'/><boot order='x'/></disk></devices></domain>";
        assert!(parse(bad_boot).is_err());
    }
}
