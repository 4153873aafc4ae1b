//! The addressing plan. Every address the harness configures comes from
//! here, so the safety rule "only 10.233.0.0/16 and fd00:233::/64" is
//! enforced in one place.
//!
//! Agent `k` (1-based, per cluster; clusters are isolated worlds, so numbers
//! repeat between clusters):
//!
//! | what                    | IPv4                  | IPv6                          |
//! |-------------------------|-----------------------|-------------------------------|
//! | agent identity (on lo)  | 10.233.0.k/32         | fd00:233::ff:k/128            |
//! | routed tasks            | 10.233.(2k).n/32      | fd00:233::(2k):n/128          |
//! | bridge `br-tasks`       | 10.233.(2k+1).1/24    | fd00:233::(2k+1):1/112        |
//! | bridged tasks           | 10.233.(2k+1).n/24    | fd00:233::(2k+1):n/112        |
//! | uplink link-local       | –                     | fe80::ff:k/64                 |
//! | routed gateway (host)   | –                     | fe80::1/64 on every veth-r<n> |
//!
//! The IPv6 groups are the *decimal* digits of the IPv4 octets written as
//! hex digits (10.233.12.34 ↔ fd00:233::12:34), so a v6 address can be read
//! off its v4 twin. "ff" never occurs in such a mirror, so the identity
//! block cannot collide with a task block.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Largest agent number: 2k+1 must stay a valid octet.
pub const MAX_AGENTS: u8 = 126;
/// Largest host number inside a task subnet.
pub const MAX_HOST: u8 = 254;

/// `x` printed in decimal and read back as hex (12 -> 0x12). x <= 255.
pub fn mirror(x: u8) -> u16 {
    u16::from_str_radix(&x.to_string(), 16).expect("decimal digits are hex digits")
}

pub fn agent_v4(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 233, 0, k)
}

pub fn agent_v6(k: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x233, 0, 0, 0, 0, 0xff, mirror(k))
}

/// Static link-local of agent k on its uplinks (next hop for IPv6 routes).
pub fn uplink_ll(k: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xff, mirror(k))
}

/// Third octet of agent k's routed-task block.
pub fn routed_subnet(k: u8) -> u8 {
    2 * k
}

/// Third octet of agent k's bridge block.
pub fn bridge_subnet(k: u8) -> u8 {
    2 * k + 1
}

pub fn task_v4(subnet: u8, n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 233, subnet, n)
}

pub fn task_v6(subnet: u8, n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x233, 0, 0, 0, 0, mirror(subnet), mirror(n))
}

/// The /24 (v4) or /112 (v6) prefix of a task block, as `ip route` syntax.
pub fn block_v4(subnet: u8) -> String {
    format!("{}/24", task_v4(subnet, 0))
}

pub fn block_v6(subnet: u8) -> String {
    format!("{}/112", task_v6(subnet, 0))
}

/// True for 10.233.0.0/16 and fd00:233::/64: the only addresses the harness
/// may configure or send to.
pub fn in_test_range(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.octets()[..2] == [10, 233],
        IpAddr::V6(a) => a.segments()[..4] == [0xfd00, 0x233, 0, 0],
    }
}
