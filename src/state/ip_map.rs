//! A map keyed by IP address, in half the memory of `HashMap<IpAddr, V>`.
//!
//! `IpAddr` is 17 bytes, so a `HashMap<IpAddr, TaskId>` entry is 40 bytes,
//! most of it padding for the IPv4 addresses that nearly every task has.
//! Here IPv4 keys are `u32` (24-byte entries) and IPv6 keys `u128`.

use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Debug)]
pub struct IpMap<V> {
    v4: HashMap<u32, V>,
    v6: HashMap<u128, V>,
}

impl<V> Default for IpMap<V> {
    fn default() -> IpMap<V> {
        IpMap {
            v4: HashMap::new(),
            v6: HashMap::new(),
        }
    }
}

impl<V> IpMap<V> {
    pub fn get(&self, ip: &IpAddr) -> Option<&V> {
        match ip {
            IpAddr::V4(a) => self.v4.get(&u32::from(*a)),
            IpAddr::V6(a) => self.v6.get(&u128::from(*a)),
        }
    }

    pub fn contains_key(&self, ip: &IpAddr) -> bool {
        self.get(ip).is_some()
    }

    pub fn insert(&mut self, ip: IpAddr, value: V) -> Option<V> {
        match ip {
            IpAddr::V4(a) => self.v4.insert(u32::from(a), value),
            IpAddr::V6(a) => self.v6.insert(u128::from(a), value),
        }
    }

    pub fn remove(&mut self, ip: &IpAddr) -> Option<V> {
        match ip {
            IpAddr::V4(a) => self.v4.remove(&u32::from(*a)),
            IpAddr::V6(a) => self.v6.remove(&u128::from(*a)),
        }
    }

    /// Empties the map and makes room for exactly the addresses of `ips`
    /// (filling a map step by step holds its old and new table together at
    /// every growth).
    pub fn clear_for<'a>(&mut self, ips: impl Iterator<Item = &'a IpAddr>) {
        let (mut v4, mut v6) = (0, 0);
        for ip in ips {
            if ip.is_ipv4() {
                v4 += 1;
            } else {
                v6 += 1;
            }
        }
        self.v4.clear();
        self.v6.clear();
        self.v4.reserve(v4);
        self.v6.reserve(v6);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map_of_ip_addr() {
        let ips: Vec<IpAddr> = [
            "10.233.0.1",
            "fd00:233::1",
            "10.233.0.2",
            "::ffff:10.233.0.1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let mut ours = IpMap::default();
        let mut theirs = HashMap::new();
        for (i, ip) in ips.iter().enumerate() {
            assert_eq!(ours.insert(*ip, i), theirs.insert(*ip, i));
        }
        assert_eq!(ours.insert(ips[0], 9), theirs.insert(ips[0], 9));
        for ip in &ips {
            assert_eq!(ours.get(ip), theirs.get(ip));
        }
        // An IPv4-mapped IPv6 address is another key than the IPv4 address.
        assert_eq!(ours.get(&ips[3]), Some(&3));
        assert_eq!(ours.remove(&ips[1]), theirs.remove(&ips[1]));
        assert!(!ours.contains_key(&ips[1]) && ours.contains_key(&ips[2]));
        ours.clear_for(ips.iter());
        assert!(ips.iter().all(|ip| !ours.contains_key(ip)));
    }
}
