//! The pure part: from what the kernel told us to [`Bindings`].
//!
//! Kept free of I/O so the rules (which link is a task interface, which IP
//! counts) are unit-tested without namespaces.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::config::InterfacesConfig;

use super::{Attachment, Bindings, TaskInterface};

/// What we keep of one link of our namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Link {
    pub index: u32,
    pub name: String,
    pub is_bridge: bool,
    /// ifindex of the device this link is enslaved to (bridge, bond, vrf…).
    pub master: Option<u32>,
    /// The other end of a veth (or netkit) pair, when it lives in another namespace.
    pub peer: Option<Peer>,
}

/// Where a veth's other end is: its namespace (by the id our namespace gives
/// it) and its ifindex there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Peer {
    pub nsid: i32,
    pub ifindex: u32,
}

/// A `/32` or `/128` unicast route of our namespace and its output interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct HostRoute {
    pub oif: u32,
    pub ip: IpAddr,
}

/// An address configured in some namespace: the interface (ifindex there),
/// the IP and its prefix length. The prefix is kept so that the same IP
/// configured twice (`/24` and `/32`) stays bound when one of them goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Address {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub prefix: u8,
}

/// The addresses of one peer namespace, by ifindex there.
pub(super) type NsAddrs = HashMap<u32, BTreeSet<(IpAddr, u8)>>;

/// Group a dump of addresses by interface.
pub(super) fn group_addresses(addrs: impl IntoIterator<Item = Address>) -> NsAddrs {
    let mut out = NsAddrs::new();
    for a in addrs {
        out.entry(a.ifindex).or_default().insert((a.ip, a.prefix));
    }
    out
}

/// Whether an IP may be bound to a task at all: link-local, loopback,
/// multicast and unspecified addresses identify no task.
pub(super) fn bindable(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_multicast() || ip.is_unspecified() {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_broadcast(),
        // fe80::/10 (Ipv6Addr::is_unicast_link_local is not stable on our MSRV).
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// The task interfaces among `links`, with the bridge they are a port of.
///
/// A task interface matches an `interfaces.match` pattern and is neither a
/// bridge itself (a bridge named like a pattern, `mesos-cni0`, is not a task;
/// its ports are) nor a port of a bridge in `interfaces.ignore_bridges`.
pub(super) fn task_links<'a>(
    cfg: &'a InterfacesConfig,
    links: &'a [Link],
) -> impl Iterator<Item = (&'a Link, Option<&'a Link>)> + 'a {
    let by_index: HashMap<u32, &Link> = links.iter().map(|l| (l.index, l)).collect();
    let patterns = cfg.patterns();
    links.iter().filter_map(move |link| {
        if link.is_bridge || !patterns.iter().any(|p| p.matches(&link.name)) {
            return None;
        }
        let bridge = link
            .master
            .and_then(|m| by_index.get(&m).copied())
            .filter(|m| m.is_bridge);
        if bridge.is_some_and(|b| cfg.ignore_bridges.contains(&b.name)) {
            return None;
        }
        Some((link, bridge))
    })
}

/// Namespace ids that some task interface's peer lives in: the ones whose
/// addresses we must know.
pub(super) fn wanted_namespaces(cfg: &InterfacesConfig, links: &[Link]) -> BTreeSet<i32> {
    task_links(cfg, links)
        .filter_map(|(l, _)| l.peer.map(|p| p.nsid))
        .collect()
}

/// Put it all together. `peers` holds the addresses of every peer namespace
/// that could be read; a namespace missing there contributes nothing.
pub(super) fn assemble(
    cfg: &InterfacesConfig,
    links: &[Link],
    routes: &[HostRoute],
    peers: &HashMap<i32, NsAddrs>,
) -> Bindings {
    let mut routed: HashMap<u32, BTreeSet<IpAddr>> = HashMap::new();
    for r in routes {
        routed.entry(r.oif).or_default().insert(r.ip);
    }
    let mut interfaces = BTreeMap::new();
    for (link, bridge) in task_links(cfg, links) {
        let mut ips = routed.remove(&link.index).unwrap_or_default();
        if let Some(peer) = link.peer {
            let configured = peers.get(&peer.nsid).and_then(|ns| ns.get(&peer.ifindex));
            ips.extend(configured.into_iter().flatten().map(|(ip, _)| *ip));
        }
        ips.retain(|ip| bindable(*ip));
        let attachment = match bridge {
            Some(b) => Attachment::Bridged {
                bridge: b.name.clone(),
            },
            None => Attachment::Routed,
        };
        let name = link.name.clone();
        interfaces.insert(
            name.clone(),
            TaskInterface {
                name,
                ifindex: link.index,
                attachment,
                ips,
            },
        );
    }
    let bridges = links
        .iter()
        .filter(|l| l.is_bridge)
        .map(|l| l.name.clone())
        .collect();
    // Ports of ignored bridges (docker0) are exempted by name in the bridge
    // table, where a static `veth*` match would otherwise cut them off.
    let by_index: HashMap<u32, &Link> = links.iter().map(|l| (l.index, l)).collect();
    let ignored_ports = links
        .iter()
        .filter(|l| {
            l.master
                .and_then(|m| by_index.get(&m))
                .is_some_and(|m| m.is_bridge && cfg.ignore_bridges.contains(&m.name))
        })
        .map(|l| l.name.clone())
        .collect();
    Bindings {
        interfaces,
        bridges,
        ignored_ports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            is_bridge: false,
            master: None,
            peer: None,
        }
    }
    fn bridge(index: u32, name: &str) -> Link {
        Link {
            is_bridge: true,
            ..link(index, name)
        }
    }
    fn cfg() -> InterfacesConfig {
        InterfacesConfig {
            r#match: vec![
                "veth*".parse().expect("pattern"),
                "mesos-*".parse().expect("pattern"),
            ],
            ignore_bridges: vec!["docker0".into()],
        }
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    #[test]
    fn routed_interface_gets_its_host_routes() {
        let links = [link(5, "veth1"), link(6, "uplink0")];
        let routes = [
            HostRoute {
                oif: 5,
                ip: ip("10.233.0.5"),
            },
            HostRoute {
                oif: 5,
                ip: ip("fd00:233::5"),
            },
            HostRoute {
                oif: 6,
                ip: ip("10.233.0.6"),
            },
        ];
        let b = assemble(&cfg(), &links, &routes, &HashMap::new());
        assert_eq!(b.interfaces.keys().collect::<Vec<_>>(), ["veth1"]);
        let veth = &b.interfaces["veth1"];
        assert_eq!(veth.attachment, Attachment::Routed);
        assert_eq!(veth.ips, [ip("10.233.0.5"), ip("fd00:233::5")].into());
        assert_eq!(b.owner_of(ip("fd00:233::5")).map(|i| i.ifindex), Some(5));
    }

    #[test]
    fn bridged_interface_gets_its_peer_addresses_but_not_link_local() {
        let mut veth = link(7, "veth2");
        veth.master = Some(3);
        veth.peer = Some(Peer {
            nsid: 4,
            ifindex: 2,
        });
        let links = [bridge(3, "mesos-cni0"), veth];
        let ns = group_addresses([
            Address {
                ifindex: 2,
                ip: ip("10.233.1.2"),
                prefix: 24,
            },
            Address {
                ifindex: 2,
                ip: ip("fe80::1"),
                prefix: 64,
            },
            Address {
                ifindex: 1,
                ip: ip("10.233.9.9"),
                prefix: 32,
            },
        ]);
        let b = assemble(&cfg(), &links, &[], &HashMap::from([(4, ns)]));
        assert_eq!(b.bridges, ["mesos-cni0".to_string()].into());
        assert_eq!(
            b.interfaces.len(),
            1,
            "a bridge named like a pattern is not a task interface"
        );
        let veth = &b.interfaces["veth2"];
        assert_eq!(
            veth.attachment,
            Attachment::Bridged {
                bridge: "mesos-cni0".into()
            }
        );
        assert_eq!(veth.ips, [ip("10.233.1.2")].into());
        assert_eq!(wanted_namespaces(&cfg(), &links), [4].into());
    }

    #[test]
    fn ports_of_ignored_bridges_are_not_task_interfaces() {
        let mut port = link(8, "veth3");
        port.master = Some(3);
        port.peer = Some(Peer {
            nsid: 1,
            ifindex: 2,
        });
        let links = [bridge(3, "docker0"), port];
        let b = assemble(&cfg(), &links, &[], &HashMap::new());
        assert!(b.interfaces.is_empty());
        assert!(wanted_namespaces(&cfg(), &links).is_empty());
    }

    #[test]
    fn a_master_that_is_not_a_bridge_leaves_the_interface_routed() {
        let mut veth = link(9, "veth4");
        veth.master = Some(2);
        let b = assemble(&cfg(), &[link(2, "vrf0"), veth], &[], &HashMap::new());
        assert_eq!(b.interfaces["veth4"].attachment, Attachment::Routed);
    }

    #[test]
    fn only_task_addresses_are_bindable() {
        for good in ["10.233.0.1", "fd00:233::1", "2001:db8::1"] {
            assert!(bindable(ip(good)), "{good}");
        }
        for bad in [
            "169.254.1.1",
            "127.0.0.1",
            "fe80::1",
            "febf::1",
            "::1",
            "ff02::1",
            "0.0.0.0",
            "224.0.0.1",
        ] {
            assert!(!bindable(ip(bad)), "{bad}");
        }
    }

    #[test]
    fn same_ip_twice_survives_removal_of_one() {
        let mut ns = group_addresses([
            Address {
                ifindex: 2,
                ip: ip("10.233.1.2"),
                prefix: 24,
            },
            Address {
                ifindex: 2,
                ip: ip("10.233.1.2"),
                prefix: 32,
            },
        ]);
        ns.get_mut(&2).map(|s| s.remove(&(ip("10.233.1.2"), 32)));
        let mut veth = link(7, "veth2");
        veth.peer = Some(Peer {
            nsid: 4,
            ifindex: 2,
        });
        let b = assemble(&cfg(), &[veth], &[], &HashMap::from([(4, ns)]));
        assert_eq!(b.interfaces["veth2"].ips, [ip("10.233.1.2")].into());
    }
}
