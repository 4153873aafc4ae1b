//! One NFULNL_MSG_PACKET (what a `log group N` rule sends) -> the dropped
//! packet's flow: which rule, addresses, protocol, ports. Pure: bytes in,
//! record out, so it is tested without a kernel.
//!
//! The attributes are read with [`crate::nft::nla`]: netlink-packet-netfilter
//! 0.4 parses them but keeps the packet header's EtherType private, and the
//! EtherType is what tells an ARP frame (bridge table) from an IP packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::nft::nla;

use super::DropRule;

const NFULA_PACKET_HDR: u16 = 1;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_IFINDEX_OUTDEV: u16 = 5;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
/// netlink header + nfgenmsg in front of the attributes.
const HEADER: usize = 16 + 4;

/// What the kernel told us about one logged (and then dropped) packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedPacket {
    pub rule: DropRule,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number; `None` for ARP.
    pub proto: Option<u8>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// ICMP / ICMPv6 type.
    pub icmp_type: Option<u8>,
    pub in_ifindex: Option<u32>,
    pub out_ifindex: Option<u32>,
}

/// Why a message is not a drop record (logged at debug level only: a
/// foreign prefix in our group, or a truncated packet, is not an error
/// worth an operator's attention per packet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not an nflog packet message")]
    NotAPacket,
    #[error(
        "nflog prefix {0:?} is not one of groupd's rules (another program logs to this group?)"
    )]
    ForeignPrefix(String),
    #[error("the logged packet is too short or not IPv4/IPv6/ARP")]
    BadPayload,
}

/// Decode one whole netlink message (header included).
pub fn decode_message(msg: &[u8]) -> Result<LoggedPacket, DecodeError> {
    const NFNL_SUBSYS_ULOG: u16 = 4;
    const NFULNL_MSG_PACKET: u16 = 0;
    let kind = msg
        .get(4..6)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .ok_or(DecodeError::NotAPacket)?;
    if kind != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
        return Err(DecodeError::NotAPacket);
    }
    decode_attributes(msg.get(HEADER..).ok_or(DecodeError::NotAPacket)?)
}

/// Decode the attributes of an NFULNL_MSG_PACKET.
pub fn decode_attributes(attrs: &[u8]) -> Result<LoggedPacket, DecodeError> {
    let prefix = nla::find(attrs, NFULA_PREFIX)
        .map(nla::string)
        .unwrap_or_default();
    let rule = DropRule::from_id(&prefix).ok_or(DecodeError::ForeignPrefix(prefix))?;
    let ether_type = nla::find(attrs, NFULA_PACKET_HDR)
        .and_then(|h| h.get(0..2))
        .map(|b| u16::from_be_bytes([b[0], b[1]]));
    let payload = nla::find(attrs, NFULA_PAYLOAD).ok_or(DecodeError::BadPayload)?;
    let flow = parse_packet(ether_type, payload).ok_or(DecodeError::BadPayload)?;
    let ifindex = |kind| nla::find(attrs, kind).and_then(nla::u32_be);
    Ok(LoggedPacket {
        rule,
        src: flow.src,
        dst: flow.dst,
        proto: flow.proto,
        sport: flow.sport,
        dport: flow.dport,
        icmp_type: flow.icmp_type,
        in_ifindex: ifindex(NFULA_IFINDEX_INDEV),
        out_ifindex: ifindex(NFULA_IFINDEX_OUTDEV),
    })
}

#[derive(Debug)]
struct Flow {
    src: IpAddr,
    dst: IpAddr,
    proto: Option<u8>,
    sport: Option<u16>,
    dport: Option<u16>,
    icmp_type: Option<u8>,
}

/// The L3 header (and the start of L4) of the logged packet. The EtherType
/// decides when the kernel gave one; else the IP version nibble (the inet
/// family gives the packet from its network header).
fn parse_packet(ether_type: Option<u16>, p: &[u8]) -> Option<Flow> {
    match ether_type {
        Some(ETH_P_ARP) => parse_arp(p),
        Some(ETH_P_IP) => parse_ipv4(p),
        Some(ETH_P_IPV6) => parse_ipv6(p),
        _ => match p.first()? >> 4 {
            4 => parse_ipv4(p),
            6 => parse_ipv6(p),
            _ => None,
        },
    }
}

fn parse_ipv4(p: &[u8]) -> Option<Flow> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let proto = p[9];
    // Only the first fragment carries the transport header.
    let first_fragment = u16::from_be_bytes([p[6], p[7]]) & 0x1fff == 0;
    let l4 = if first_fragment && ihl >= 20 {
        p.get(ihl..)
    } else {
        None
    };
    Some(with_transport(src.into(), dst.into(), proto, l4, 1))
}

fn parse_ipv6(p: &[u8]) -> Option<Flow> {
    if p.len() < 40 || p[0] >> 4 != 6 {
        return None;
    }
    let addr = |at: usize| -> Option<Ipv6Addr> {
        let b: [u8; 16] = p.get(at..at + 16)?.try_into().ok()?;
        Some(Ipv6Addr::from(b))
    };
    let (src, dst) = (addr(8)?, addr(24)?);
    // Walk the extension headers nft itself skips for `meta l4proto`.
    let (mut next, mut at) = (p[6], 40usize);
    let mut l4 = Some(at);
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let h = p.get(at..at + 2)?;
                next = h[0];
                at += (usize::from(h[1]) + 1) * 8;
            }
            44 => {
                let h = p.get(at..at + 4)?;
                next = h[0];
                // A later fragment has no transport header.
                if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                    l4 = None;
                }
                at += 8;
            }
            _ => break,
        }
        l4 = l4.map(|_| at);
    }
    let l4 = l4.and_then(|at| p.get(at..));
    Some(with_transport(src.into(), dst.into(), next, l4, 58))
}

fn with_transport(src: IpAddr, dst: IpAddr, proto: u8, l4: Option<&[u8]>, icmp: u8) -> Flow {
    let mut f = Flow {
        src,
        dst,
        proto: Some(proto),
        sport: None,
        dport: None,
        icmp_type: None,
    };
    let Some(l4) = l4 else { return f };
    match proto {
        // TCP, UDP, UDP-Lite, SCTP, DCCP: the ports come first.
        6 | 17 | 136 | 132 | 33 if l4.len() >= 4 => {
            f.sport = Some(u16::from_be_bytes([l4[0], l4[1]]));
            f.dport = Some(u16::from_be_bytes([l4[2], l4[3]]));
        }
        p if p == icmp => f.icmp_type = l4.first().copied(),
        _ => {}
    }
    f
}

/// ARP over Ethernet/IPv4: sender and target protocol addresses.
fn parse_arp(p: &[u8]) -> Option<Flow> {
    if p.len() < 28 || p[4] != 6 || p[5] != 4 {
        return None;
    }
    let src = Ipv4Addr::new(p[14], p[15], p[16], p[17]);
    let dst = Ipv4Addr::new(p[24], p[25], p[26], p[27]);
    Some(Flow {
        src: src.into(),
        dst: dst.into(),
        proto: None,
        sport: None,
        dport: None,
        icmp_type: None,
    })
}

/// The protocol the way `groupctl drops` prints it.
pub fn proto_name(proto: Option<u8>) -> String {
    match proto {
        None => "arp".into(),
        Some(1) => "icmp".into(),
        Some(6) => "tcp".into(),
        Some(17) => "udp".into(),
        Some(58) => "icmpv6".into(),
        Some(132) => "sctp".into(),
        Some(p) => p.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
        nla::put(buf, kind, value);
    }

    /// A message the way the kernel sends it for `log prefix P group G`.
    fn message(prefix: &str, ether_type: u16, payload: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        let mut hdr = ether_type.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[2, 0]); // hook: forward
        put(&mut attrs, NFULA_PACKET_HDR, &hdr);
        let mut p = prefix.as_bytes().to_vec();
        p.push(0);
        put(&mut attrs, NFULA_PREFIX, &p);
        put(&mut attrs, NFULA_IFINDEX_INDEV, &7u32.to_be_bytes());
        put(&mut attrs, NFULA_IFINDEX_OUTDEV, &9u32.to_be_bytes());
        put(&mut attrs, NFULA_PAYLOAD, payload);
        let len = (HEADER + attrs.len()) as u32;
        let mut msg = len.to_ne_bytes().to_vec();
        msg.extend_from_slice(&(4u16 << 8).to_ne_bytes());
        msg.extend_from_slice(&[0; 10]); // flags, seq, port id
        msg.extend_from_slice(&[2, 0, 0x10, 0xc2]); // AF_INET, v0, group 4290
        msg.extend_from_slice(&attrs);
        msg
    }

    fn ipv4_tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }

    #[test]
    fn a_tcp_syn_dropped_by_r1_egress() {
        let msg = message(
            "gd-r1-egress",
            ETH_P_IP,
            &ipv4_tcp([10, 233, 1, 2], [10, 233, 2, 3], 40000, 8080),
        );
        let p = decode_message(&msg).expect("decodes");
        assert_eq!(p.rule, DropRule::EgressNoSharedGroup);
        assert_eq!(p.src, "10.233.1.2".parse::<IpAddr>().expect("ip"));
        assert_eq!(p.dst, "10.233.2.3".parse::<IpAddr>().expect("ip"));
        assert_eq!(
            (p.proto, p.sport, p.dport),
            (Some(6), Some(40000), Some(8080))
        );
        assert_eq!((p.in_ifindex, p.out_ifindex), (Some(7), Some(9)));
    }

    #[test]
    fn an_ipv6_udp_datagram_behind_a_hop_by_hop_header() {
        let mut p = vec![0x60, 0, 0, 0, 0, 16, 0, 64]; // next header: hop-by-hop
        p.extend_from_slice(&"fd00:233::1".parse::<Ipv6Addr>().expect("ip").octets());
        p.extend_from_slice(&"fd00:233::2".parse::<Ipv6Addr>().expect("ip").octets());
        p.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]); // hop-by-hop -> UDP
        p.extend_from_slice(&[0x13, 0x88, 0, 53, 0, 8, 0, 0]);
        let got = decode_message(&message("gd-ingress", ETH_P_IPV6, &p)).expect("decodes");
        assert_eq!(got.rule, DropRule::Ingress);
        assert_eq!(got.dst, "fd00:233::2".parse::<IpAddr>().expect("ip"));
        assert_eq!(
            (got.proto, got.sport, got.dport),
            (Some(17), Some(5000), Some(53))
        );
    }

    #[test]
    fn icmp_arp_and_fragments() {
        let mut ping = ipv4_tcp([10, 233, 0, 1], [10, 233, 0, 2], 0, 0);
        ping[9] = 1;
        ping[20] = 8; // echo request
        let got = decode_message(&message("gd-r9-gated", ETH_P_IP, &ping)).expect("icmp");
        assert_eq!(
            (got.proto, got.icmp_type, got.dport),
            (Some(1), Some(8), None)
        );

        let mut frag = ipv4_tcp([10, 233, 0, 1], [10, 233, 0, 2], 1, 2);
        frag[7] = 10; // fragment offset 80 bytes: no TCP header here
        let got = decode_message(&message("gd-r9-gated", ETH_P_IP, &frag)).expect("frag");
        assert_eq!((got.proto, got.sport, got.dport), (Some(6), None, None));

        let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1];
        arp.extend_from_slice(&[10, 233, 0, 66]);
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&[10, 233, 0, 1]);
        let got = decode_message(&message("gd-r7-port-in", ETH_P_ARP, &arp)).expect("arp");
        assert_eq!(got.src, "10.233.0.66".parse::<IpAddr>().expect("ip"));
        assert_eq!(got.proto, None);
        assert_eq!(proto_name(got.proto), "arp");
    }

    #[test]
    fn foreign_prefixes_and_garbage_are_errors_not_panics() {
        let tcp = ipv4_tcp([10, 233, 0, 1], [10, 233, 0, 2], 1, 2);
        assert!(matches!(
            decode_message(&message("ulogd: ", ETH_P_IP, &tcp)),
            Err(DecodeError::ForeignPrefix(_))
        ));
        assert_eq!(
            decode_message(&message("gd-r1-egress", ETH_P_IP, &tcp[..12])),
            Err(DecodeError::BadPayload)
        );
        assert_eq!(decode_message(&[1, 2, 3]), Err(DecodeError::NotAPacket));
        // Every truncation of a valid message decodes or fails cleanly.
        let msg = message("gd-r1-egress", ETH_P_IP, &tcp);
        for n in 0..msg.len() {
            let _ = decode_message(&msg[..n]);
        }
    }
}
