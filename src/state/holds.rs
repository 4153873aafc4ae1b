//! Whether the desired tables hold one element, answered from the compact
//! state instead of compiling the tables: a repair of one element changed
//! by someone else must cost what one endpoint costs, not what 40,000
//! elements cost.
//!
//! Every element whose key has an IP comes from the endpoint that owns one
//! of its IPs (its own elements) or from a pair of endpoints, both named by
//! the key; so the endpoints the key names, and their one pair, are all
//! that is compiled, whatever the size of their groups. The few sets keyed by interface names alone are answered
//! from what the state keeps for them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{ifname_element, DesiredState};
use crate::compile::{self, wide, SetName};
use crate::ruleset::{Element, Family, KeyPart, SetDef};

impl DesiredState {
    /// Whether element `e` of set `set` (in the `family` table, whose key
    /// is `def`) is in the desired tables.
    pub fn holds(&self, family: Family, set: &str, def: &SetDef, e: &Element) -> bool {
        match (family, set) {
            (Family::Inet, compile::BRIDGES) => {
                return self.bridges.iter().any(|b| ifname_element(b) == *e)
            }
            (Family::Bridge, compile::IGNORED_PORTS) => {
                return self.ignored_ports.iter().any(|p| ifname_element(p) == *e)
            }
            (Family::Inet, compile::GENERATION) => {
                return self.generation != 0 && compile::generation_element(self.generation) == *e
            }
            _ => {}
        }
        let ips = ips_in(def, e);
        let found = std::cell::Cell::new(false);
        let mut sink = |f: Family, s: SetName, el: Element| {
            if f == family && s == set && el == *e {
                found.set(true);
            }
        };
        if ips.is_empty() {
            // Keyed by interface alone (a bridge's ports): only local
            // endpoints have interfaces.
            for ep in self.local_eps.values() {
                compile::own_elements(ep, &mut sink);
            }
            return found.get();
        }
        // The endpoints the key names (a pair element names two).
        let mut named: Vec<(&str, std::borrow::Cow<'_, crate::compile::Endpoint>)> = Vec::new();
        for ip in ips {
            let Some(id) = self.owners.get(&ip) else {
                continue;
            };
            if named.iter().any(|(n, _)| *n == &**id) {
                continue;
            }
            if let Some(ep) = self.compiled(id) {
                named.push((id, ep));
            }
        }
        for (_, ep) in &named {
            compile::own_elements(ep, &mut sink);
            // Its address -> identity, and (local) its elements with the
            // identity the key names, if that identity shares a wide group.
            let wide = self.wide_of(ep);
            if !wide.is_empty() {
                wide::identity_elements(ep, &wide::identity(&wide), &mut sink);
                if let Some(ident) = identity_in(def, e) {
                    if self.identities_sharing(&wide).contains(&ident) {
                        wide::wide_elements(ep, &ident, &mut sink);
                    }
                }
            }
        }
        // Two endpoints have pair elements when they share a group that is
        // not wide and one of them is local (what `peers` finds from either
        // side), so one pair is compiled, however large their groups are.
        if let [(_, a), (_, b)] = &named[..] {
            let share = a
                .gids
                .iter()
                .any(|g| b.gids.contains(g) && !self.wide.contains(g));
            if share && (a.is_local() || b.is_local()) {
                compile::pair_elements(a, b, &mut sink);
            }
        }
        found.get()
    }

    /// No change waits for a transaction: the kernel is meant to hold
    /// exactly what [`DesiredState::holds`] answers.
    pub fn nothing_pending(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The identity in an element's key (the wide sets), if its key has one.
fn identity_in(def: &SetDef, e: &Element) -> Option<wide::Identity> {
    let mut at = 0;
    for part in &def.key {
        if *part == KeyPart::Identity {
            return e.key.get(at..at + part.byte_len())?.try_into().ok();
        }
        at += part.byte_len();
    }
    None
}

/// The IPs in an element's key, laid out as `def` says (a map's value,
/// after the key, is not looked at).
fn ips_in(def: &SetDef, e: &Element) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut at = 0;
    let (key, _) = e.split(def.data_len);
    for part in &def.key {
        let Some(bytes) = key.get(at..at + part.byte_len()) else {
            break;
        };
        match part {
            KeyPart::Ipv4 => {
                if let Ok(b) = <[u8; 4]>::try_from(bytes) {
                    out.push(IpAddr::V4(Ipv4Addr::from(b)));
                }
            }
            KeyPart::Ipv6 => {
                if let Ok(b) = <[u8; 16]>::try_from(bytes) {
                    out.push(IpAddr::V6(Ipv6Addr::from(b)));
                }
            }
            _ => {}
        }
        at += part.byte_len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::DesiredState;
    use crate::compile::{self, LocalBinding, Policy};
    use crate::config::Config;
    use crate::model::Task;
    use crate::ruleset::{Element, Family, KeyValue, Table};
    use std::collections::{BTreeSet, HashMap};

    fn state() -> DesiredState {
        let config = Config::parse("[source]\nkind = \"file\"\npath = \"/x\"\n").expect("config");
        let mut s = DesiredState::new(Policy::from_config(&config));
        let task = |id: &str, ip: &str, groups: &[&str]| {
            Task::running(id, "/a", [ip.parse().expect("ip")], groups)
        };
        s.upsert_task(task("a", "10.0.0.1", &["g1"]));
        s.upsert_task(task("b", "10.0.0.2", &["g1", "g2"]));
        s.upsert_task(task("c", "10.0.0.3", &["g2"]));
        s.upsert_task(task("d", "10.0.0.4", &["public"]));
        s.upsert_task(task("e", "fd00::5", &["g2"]));
        s.upsert_task(task("f", "10.0.0.6", &["g1"]));
        let bind = |ip: &str, iface: &str| {
            let ip = ip.parse().expect("ip");
            let b = LocalBinding {
                iface: iface.into(),
                ip,
                bridge: None,
            };
            (ip, b)
        };
        let bindings: HashMap<_, _> = [
            bind("10.0.0.1", "veth-a"),
            bind("10.0.0.3", "veth-c"),
            bind("10.0.0.6", "veth-f"),
        ]
        .into_iter()
        .collect();
        s.set_bindings(bindings, BTreeSet::from(["br0".into()]), BTreeSet::new());
        s.set_generation(7);
        s
    }

    /// Every element of the compiled tables is held, and nothing else is:
    /// the same elements with one byte changed are not.
    #[test]
    fn holds_agrees_with_the_compiled_tables() {
        let s = state();
        let (inet, bridge) = s.tables();
        let mut checked = 0;
        for t in [&inet, &bridge] {
            let family: Family = t.family;
            for (set, (def, elements)) in &t.sets {
                for e in elements {
                    assert!(s.holds(family, set, def, e), "{family:?} {set} {e:?}");
                    let mut other = e.clone();
                    let last = other.key.len() - 1;
                    other.key[last] ^= 0x40;
                    if !elements.contains(&other) {
                        assert!(!s.holds(family, set, def, &other), "{set} {other:?}");
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked >= 14, "{checked} elements");
        assert!(!s.holds(
            Family::Inet,
            compile::GENERATION,
            &def_of(&inet, compile::GENERATION),
            &compile::generation_element(6)
        ));
    }

    /// With a wide group: the identity map and the wide sets are held as
    /// compiled, and an element with another identity or address is not.
    #[test]
    fn holds_agrees_with_the_compiled_tables_of_a_wide_group() {
        let mut s = state();
        for i in 0..20u8 {
            let groups: &[&str] = if i % 2 == 0 { &["big", "g2"] } else { &["big"] };
            let ip = format!("10.0.1.{i}");
            s.upsert_task(Task::running(
                &format!("w{i}"),
                "/w",
                [ip.parse().expect("ip")],
                groups,
            ));
        }
        s.upsert_task(Task::running(
            "a",
            "/a",
            ["10.0.0.1".parse().expect("ip")],
            &["g1", "big"],
        ));
        assert_eq!(s.wide_groups().len(), 1);
        let (inet, _) = s.tables();
        let mut wide = 0;
        for (set, (def, elements)) in &inet.sets {
            for e in elements {
                assert!(s.holds(Family::Inet, set, def, e), "{set} {e:?}");
                let mut other = e.clone();
                other.key[0] ^= 0x40;
                if !elements.contains(&other) {
                    assert!(!s.holds(Family::Inet, set, def, &other), "{set} {other:?}");
                }
                wide += usize::from(set.starts_with("wide_") || set.starts_with("ident"));
            }
        }
        assert!(wide >= 20, "{wide} wide elements");
    }

    /// An element naming an endpoint that is not in the set it was added to.
    #[test]
    fn an_element_in_the_wrong_set_is_not_held() {
        let s = state();
        let (inet, _) = s.tables();
        let (_, open) = &inet.sets[compile::OPEN4];
        let (_, endpoints) = &inet.sets[compile::ENDPOINTS4];
        let not_open: Vec<&Element> = endpoints.difference(open).collect();
        assert!(!not_open.is_empty());
        for e in not_open {
            assert!(!s.holds(
                Family::Inet,
                compile::OPEN4,
                &def_of(&inet, compile::OPEN4),
                e
            ));
        }
    }

    /// Pairs exist only between endpoints that share a group.
    #[test]
    fn a_pair_is_held_only_for_endpoints_that_share_a_group() {
        let s = state();
        let (inet, _) = s.tables();
        let def = def_of(&inet, compile::EGRESS4);
        let ip = |t: &str| KeyValue::Ip(t.parse().expect("ip"));
        let egress = |to: &str| Element::set(&[KeyValue::Ifname("veth-a"), ip("10.0.0.1"), ip(to)]);
        // a and b share g1, a and f too (both local); a and c share nothing.
        assert!(s.holds(Family::Inet, compile::EGRESS4, &def, &egress("10.0.0.2")));
        assert!(s.holds(Family::Inet, compile::EGRESS4, &def, &egress("10.0.0.6")));
        assert!(!s.holds(Family::Inet, compile::EGRESS4, &def, &egress("10.0.0.3")));
        let (_, pass) = &inet.sets[compile::PASS4];
        assert!(!pass.is_empty(), "a and f are both local");
    }

    fn def_of(t: &Table, set: &str) -> crate::ruleset::SetDef {
        t.sets[set].0.clone()
    }
}
