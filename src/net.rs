//! Small address types shared by config, compiler and diagnostics.
//!
//! The prefix arithmetic is `ipnet`'s; [`Cidr`] keeps the two fields the
//! rule encoders read (`addr`, `prefix`), always normalised to the network
//! address.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 or IPv6 prefix such as `10.233.0.0/16` or `fd00:233::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Text that is not an IP prefix, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP prefix like 10.0.0.0/8")]
    NotAPrefix(String),
    #[error("{text:?}: prefix length must be 0..={max}")]
    Length { text: String, max: u8 },
}

impl Cidr {
    fn net(&self) -> IpNet {
        // `prefix` is at most the address length: every Cidr is made from
        // an IpNet (see `from_net`).
        IpNet::new(self.addr, self.prefix).unwrap_or_else(|_| IpNet::from(self.addr))
    }

    fn from_net(net: IpNet) -> Cidr {
        let net = net.trunc();
        Cidr {
            addr: net.addr(),
            prefix: net.prefix_len(),
        }
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.net().contains(ip)
    }

    /// The first and last address of the prefix (nftables interval elements).
    pub fn range(&self) -> (IpAddr, IpAddr) {
        let net = self.net();
        (net.network(), net.broadcast())
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    /// `ADDR/LEN`, or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a.trim(), Some(l.trim())),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::NotAPrefix(s.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let net = match len {
            None => IpNet::from(addr),
            Some(l) => l
                .parse::<u8>()
                .ok()
                .and_then(|l| IpNet::new(addr, l).ok())
                .ok_or_else(|| CidrError::Length {
                    text: s.to_string(),
                    max,
                })?,
        };
        Ok(Cidr::from_net(net))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let c: Cidr = "10.233.1.7/16".parse().expect("cidr");
        assert_eq!(c.to_string(), "10.233.0.0/16");
        assert!(c.contains(&"10.233.200.1".parse().expect("ip")));
        assert!(!c.contains(&"10.234.0.1".parse().expect("ip")));
        let c: Cidr = "fd00:233::/64".parse().expect("cidr6");
        assert!(c.contains(&"fd00:233::1:5".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("banana".parse::<Cidr>().is_err());
        let host: Cidr = "10.1.2.3".parse().expect("host");
        assert_eq!(host.prefix, 32);
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>().map_err(|e| e.to_string()),
            Err("\"10.0.0.0/33\": prefix length must be 0..=32".to_string())
        );
    }

    #[test]
    fn ranges_cover_the_prefix() {
        let c: Cidr = "10.233.4.0/22".parse().expect("cidr");
        assert_eq!(
            c.range(),
            (
                "10.233.4.0".parse().expect("ip"),
                "10.233.7.255".parse().expect("ip")
            )
        );
        let all: Cidr = "::/0".parse().expect("all");
        assert!(all.contains(&"fd00::1".parse().expect("ip")));
        assert!(!all.contains(&"10.0.0.1".parse().expect("ip")));
    }
}
