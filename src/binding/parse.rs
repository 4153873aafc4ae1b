//! rtnetlink messages -> the plain facts of [`super::model`].
//!
//! Everything here comes from the kernel: nothing is unwrapped, a message
//! that lacks what we need is skipped (`None`).

use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteType,
};

use super::model::{bindable, Address, HostRoute, Link, Peer};

/// A link of our namespace. Only full link messages (a dump of family
/// AF_UNSPEC) are given here: bridge-port notifications (AF_BRIDGE) carry no
/// link kind and are never parsed, they only trigger a new dump.
pub(super) fn link(msg: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut kind = None;
    let mut master = None;
    let mut peer_index = None;
    let mut peer_nsid = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Controller(m) if *m != 0 => master = Some(*m),
            LinkAttribute::Link(l) if *l != 0 => peer_index = Some(*l),
            LinkAttribute::LinkNetNsId(id) if *id >= 0 => peer_nsid = Some(*id),
            LinkAttribute::LinkInfo(infos) => kind = link_kind(infos),
            _ => {}
        }
    }
    let is_pair = matches!(kind, Some(InfoKind::Veth | InfoKind::Netkit));
    // IFLA_LINK of a pair device is the peer's ifindex; it is in another
    // namespace exactly when IFLA_LINK_NETNSID is present.
    let peer = match (is_pair, peer_nsid, peer_index) {
        (true, Some(nsid), Some(ifindex)) => Some(Peer { nsid, ifindex }),
        _ => None,
    };
    Some(Link {
        index: msg.header.index,
        name: name?,
        is_bridge: matches!(kind, Some(InfoKind::Bridge)),
        master,
        peer,
    })
}

fn link_kind(infos: &[LinkInfo]) -> Option<InfoKind> {
    infos.iter().find_map(|i| match i {
        LinkInfo::Kind(k) => Some(k.clone()),
        _ => None,
    })
}

/// A host route (`/32`, `/128`, unicast, any table) and its output interface.
/// Local, broadcast and multicast routes (the host's own addresses) and
/// cached clones (PMTU exceptions) are not task bindings.
pub(super) fn host_route(msg: &RouteMessage) -> Option<HostRoute> {
    let h = &msg.header;
    if h.kind != RouteType::Unicast || h.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let mut dst = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = Some(IpAddr::V6(*a)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let ip = dst?;
    let full = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if h.destination_prefix_length != full || !bindable(ip) {
        return None;
    }
    Some(HostRoute { oif: oif?, ip })
}

/// A global-scope address, as configured on a peer interface.
pub(super) fn address(msg: &AddressMessage) -> Option<Address> {
    let h = &msg.header;
    if h.scope != AddressScope::Universe {
        return None;
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the far end on
    // point-to-point links and equals IFA_LOCAL otherwise (IPv6 sends only it).
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    bindable(ip).then_some(Address {
        ifindex: h.index,
        ip,
        prefix: h.prefix_len,
    })
}
