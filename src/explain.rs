//! `groupctl explain SRC DST`: trace a synthetic packet through the ruleset
//! groupd intends (the same [`Table`] it writes to the kernel), and say which
//! rule decides and why, in terms of tasks and groups.
//!
//! The tracer evaluates groupd's own rule vocabulary; it assumes a packet
//! that opens a new flow (conntrack state NEW), which is the one the policy
//! judges (replies of allowed flows are accepted by `ct state`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::compile::{
    effective_groups, DEST_CHECK, EGRESS, GATED, HOST_TO_TASK, INGRESS, PORT_IN, PORT_OUT,
    SOURCE_CHECK,
};
use crate::model::GroupName;
use crate::ruleset::{Action, Dir, Element, Field, Hook, KeyValue, Match, Table, Verdict, L3};
use crate::state::DesiredState;

/// Transport protocol of the traced packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    pub port: Option<u16>,
    /// Input / output interface on this agent (`None`: not a task interface).
    pub iif: Option<String>,
    pub oif: Option<String>,
}

/// One rule the packet matched on its way.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub chain: String,
    pub rule: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Explanation {
    pub verdict: String,
    /// The rule that decided (the last one matched that had a verdict).
    pub deciding_rule: Option<Step>,
    pub reason: String,
    pub hooks: Vec<String>,
    pub steps: Vec<Step>,
}

enum Outcome {
    Accept,
    Drop,
    /// Fell off the end of the base chain: its policy (accept) applies.
    Policy,
}

struct Tracer<'a> {
    table: &'a Table,
    pkt: &'a Packet,
    steps: Vec<Step>,
}

impl Tracer<'_> {
    fn addr(&self, dir: Dir) -> IpAddr {
        if dir == Dir::In {
            self.pkt.src
        } else {
            self.pkt.dst
        }
    }

    fn ifname(&self, dir: Dir) -> Option<&str> {
        if dir == Dir::In {
            self.pkt.iif.as_deref()
        } else {
            self.pkt.oif.as_deref()
        }
    }

    fn family_ok(&self, l3: L3) -> bool {
        match l3 {
            L3::Ip => self.pkt.src.is_ipv4(),
            L3::Ip6 => self.pkt.src.is_ipv6(),
            L3::Arp => false,
        }
    }

    /// The value `key` has in `set` (empty for a plain set), if it is there.
    fn lookup(&self, set: &str, key: &[KeyValue]) -> Option<&[u8]> {
        let probe = Element::set(key);
        let (def, elems) = self.table.sets.get(set)?;
        elems.iter().find_map(|e| {
            let (k, value) = e.split(def.data_len);
            (*k == *probe.key).then_some(value)
        })
    }

    /// The packet's value of each field, looked up in `set`.
    fn lookup_fields(&self, key: &[Field], set: &str) -> bool {
        self.key_values(key)
            .is_some_and(|values| self.lookup(set, &values).is_some())
    }

    /// The identity the packet's `peer` field has in `ident_map`, then its
    /// `key`, found in `set` (what [`Match::ViaIdentity`] asks).
    fn via_identity(&self, key: &[Field], peer: Field, ident_map: &str, set: &str) -> bool {
        let Some(values) = self.key_values(key) else {
            return false;
        };
        let Some(peer) = self.key_values(&[peer]) else {
            return false;
        };
        let Some(identity) = self.lookup(ident_map, &peer) else {
            return false;
        };
        let mut probe = identity.to_vec();
        probe.extend_from_slice(&Element::set(&values).key);
        self.table
            .sets
            .get(set)
            .is_some_and(|(_, elems)| elems.contains(&Element { key: probe.into() }))
    }

    /// The packet's value of each field of a lookup key (`None`: the packet
    /// has no such field, so the lookup cannot match).
    fn key_values(&self, key: &[Field]) -> Option<Vec<KeyValue<'_>>> {
        let proto = match self.pkt.proto {
            Proto::Icmp => {
                if self.pkt.src.is_ipv4() {
                    1
                } else {
                    58
                }
            }
            Proto::Tcp => 6,
            Proto::Udp => 17,
        };
        let mut values = Vec::new();
        for f in key {
            values.push(match f {
                Field::Ifname(dir) => KeyValue::Ifname(self.ifname(*dir)?),
                Field::Addr(dir, l3) => {
                    if !self.family_ok(*l3) {
                        return None;
                    }
                    KeyValue::Ip(self.addr(*dir))
                }
                Field::L4Proto => KeyValue::Proto(proto),
                Field::Dport => match (self.pkt.proto, self.pkt.port) {
                    (Proto::Tcp | Proto::Udp, Some(p)) => KeyValue::Port(p),
                    _ => return None,
                },
            });
        }
        Some(values)
    }

    fn matches(&self, m: &Match) -> bool {
        match m {
            Match::Ifname { dir, name, prefix } => self.ifname(*dir).is_some_and(|i| {
                if *prefix {
                    i.starts_with(name.as_str())
                } else {
                    i == name
                }
            }),
            Match::Lookup { key, set } => self.lookup_fields(key, set),
            Match::ViaIdentity {
                key,
                peer,
                ident_map,
                set,
            } => self.via_identity(key, *peer, ident_map, set),
            Match::AddrPrefix { dir, prefix } => prefix.contains(&self.addr(*dir)),
            // Synthetic packets are data, never neighbour discovery.
            Match::Icmpv6Type(_) => false,
            // A new flow: neither established nor related.
            Match::CtState(bits) => bits & 8 != 0,
            Match::L4Proto(p) => match self.pkt.proto {
                Proto::Icmp => *p == if self.pkt.src.is_ipv4() { 1 } else { 58 },
                Proto::Tcp => *p == 6,
                Proto::Udp => *p == 17,
            },
            // A rate limit never changes what the packet's fate is.
            Match::Limit { .. } => true,
            Match::Dport { udp, port } => {
                let proto_ok = matches!(
                    (self.pkt.proto, udp),
                    (Proto::Udp, true) | (Proto::Tcp, false)
                );
                proto_ok && self.pkt.port == Some(*port)
            }
        }
    }

    fn run(&mut self, chain: &str, depth: usize) -> Option<Outcome> {
        let c = self.table.chain(chain)?;
        if depth > 16 {
            return Some(Outcome::Drop);
        }
        for rule in &c.rules {
            if !rule.matches.iter().all(|m| self.matches(m)) {
                continue;
            }
            let verdict = match &rule.action {
                // A log rule only reports what the next rule decides.
                Action::None | Action::Log { .. } => None,
                Action::Verdict(v) => Some(v.clone()),
            };
            let Some(v) = verdict else { continue };
            self.steps.push(Step {
                chain: chain.to_string(),
                rule: rule.text(),
            });
            match v {
                Verdict::Accept => return Some(Outcome::Accept),
                Verdict::Drop => return Some(Outcome::Drop),
                Verdict::Return => return None,
                Verdict::Jump(target) => {
                    if let Some(o) = self.run(&target, depth + 1) {
                        return Some(o);
                    }
                }
                Verdict::Goto(target) => return self.run(&target, depth + 1),
            }
        }
        if c.base.is_some() {
            Some(Outcome::Policy)
        } else {
            None
        }
    }
}

/// The base chains a packet passes on this agent, in order: one the host
/// sends, or one it forwards (to or from a task, or through it).
fn hooks_for(from_host: bool) -> Vec<Hook> {
    if from_host {
        vec![Hook::Output]
    } else {
        vec![Hook::Forward]
    }
}

fn base_chain(table: &Table, hook: Hook) -> Option<&str> {
    table
        .chains
        .iter()
        .find(|c| c.base.is_some_and(|b| b.hook == hook))
        .map(|c| c.name.as_str())
}

/// Explain what this agent does with a new flow from `src` to `dst`.
pub fn explain(
    state: &DesiredState,
    src: IpAddr,
    dst: IpAddr,
    proto: Proto,
    port: Option<u16>,
    from_host: bool,
) -> Explanation {
    let (inet, _) = state.tables();
    // The interfaces the inet hooks see: the bridge for a bridge port.
    let src_bind = state.binding_of(&src).map(|b| b.l3_iface().to_string());
    let dst_bind = state.binding_of(&dst).map(|b| b.l3_iface().to_string());
    let pkt = Packet {
        src,
        dst,
        proto,
        port,
        iif: src_bind,
        oif: dst_bind,
    };
    let mut tracer = Tracer {
        table: &inet,
        pkt: &pkt,
        steps: Vec::new(),
    };
    let hooks = hooks_for(from_host);
    let mut verdict = "accept";
    for hook in &hooks {
        let Some(chain) = base_chain(&inet, *hook) else {
            continue;
        };
        if let Some(Outcome::Drop) = tracer.run(chain, 0) {
            verdict = "drop";
            break;
        }
    }
    // A drop is decided by the rule that dropped. An accept is decided by the
    // policy rule that let it pass (the interface checks and the sorting by
    // interface are how the packet got there, not why it may).
    let deciding_rule = if verdict == "drop" {
        tracer.steps.last().cloned()
    } else {
        tracer
            .steps
            .iter()
            .rev()
            .find(|s| is_policy_step(s))
            .or_else(|| tracer.steps.last())
            .cloned()
    };
    let reason = describe(state, &pkt, verdict, deciding_rule.as_ref());
    Explanation {
        verdict: verdict.to_string(),
        deciding_rule,
        reason,
        hooks: hooks
            .iter()
            .map(|h| format!("{h:?}").to_lowercase())
            .collect(),
        steps: tracer.steps,
    }
}

/// Why the rule `rule_text` of `chain` dropped a packet from `src` to `dst`,
/// in the words [`explain`] uses (`groupctl drops` shows it per drop).
pub fn drop_reason(
    state: &DesiredState,
    src: IpAddr,
    dst: IpAddr,
    chain: &str,
    rule_text: &str,
) -> String {
    let pkt = Packet {
        src,
        dst,
        proto: Proto::Tcp,
        port: None,
        iif: None,
        oif: None,
    };
    let step = Step {
        chain: chain.to_string(),
        rule: rule_text.to_string(),
    };
    describe(state, &pkt, "drop", Some(&step))
}

/// A rule that decides by policy (R1, R2, R4, R5, R9), not by interface.
fn is_policy_step(s: &Step) -> bool {
    [EGRESS, INGRESS, GATED].contains(&s.chain.as_str())
        || ["@egress", "@ingress", "@pass", "@gated", "@open", "@wide_"]
            .iter()
            .any(|set| s.rule.contains(set))
}

/// Say it in the operator's words: tasks, groups, R-numbers.
fn describe(state: &DesiredState, pkt: &Packet, verdict: &str, rule: Option<&Step>) -> String {
    let name = |ip: &IpAddr| match state.owner_of(ip) {
        Some(t) => format!("task {t:?}"),
        None => format!("{ip} (not an endpoint)"),
    };
    let groups_of = |ip: &IpAddr| -> BTreeSet<GroupName> {
        state
            .owner_of(ip)
            .and_then(|t| state.view().tasks.get(t))
            .map(|t| effective_groups(t, state.policy()))
            .unwrap_or_default()
    };
    let (src, dst) = (name(&pkt.src), name(&pkt.dst));
    let Some(rule) = rule else {
        return format!("{src} -> {dst}: no groupd rule applies on this agent ({verdict})");
    };
    let (text, chain) = (&rule.rule, rule.chain.as_str());
    let uses = |set: &str| text.contains(&format!("@{set}"));
    let dst_is_endpoint = state.owner_of(&pkt.dst).is_some();
    let dst_ports: Vec<String> = state
        .owner_of(&pkt.dst)
        .and_then(|t| state.endpoint(t))
        .map(|e| {
            e.gate_ports
                .iter()
                .map(|p| format!("{}/{:?}", p.number, p.protocol).to_lowercase())
                .collect()
        })
        .unwrap_or_default();
    if verdict == "accept" {
        let wide = ["wide_egress", "wide_ingress", "wide_gated"]
            .iter()
            .any(|s| text.contains(&format!("@{s}")));
        if wide
            || ["egress", "ingress", "pass", "gated"]
                .iter()
                .any(|s| uses(s))
        {
            let shared: Vec<String> = groups_of(&pkt.src)
                .intersection(&groups_of(&pkt.dst))
                .map(|g| g.to_string())
                .collect();
            let ports = if uses("gated") || text.contains("@wide_gated") {
                " (on one of its discovery ports, R9)"
            } else {
                ""
            };
            let how = if wide {
                " (a wide group: decided by the peer's identity)"
            } else {
                ""
            };
            return format!(
                "R1: {src} and {dst} are both in group(s) {shared:?}{ports}{how}; allowed by {chain} `{text}`"
            );
        }
        if uses("open") || uses("open_gated") {
            return format!(
                "R2: {dst} is in an open group, reachable by every endpoint; allowed by {chain} `{text}`"
            );
        }
        if matches!(rule.chain.as_str(), HOST_TO_TASK) {
            return format!(
                "R5: this host may reach its endpoints (policy.allow_from_host); `{text}`"
            );
        }
        if chain == INGRESS {
            return format!("R5: {src} is in an allowed CIDR (policy ingress_allow); `{text}`");
        }
        if !dst_is_endpoint {
            return format!("R4: endpoints may reach non-endpoint {dst}; `{text}`");
        }
        return format!("{src} -> {dst}: accepted by {chain} `{text}`");
    }
    match chain {
        SOURCE_CHECK | DEST_CHECK | PORT_IN | PORT_OUT => format!(
            "R7/R8: the interface/address pair is not bound to a known task; dropped by {chain} `{text}`"
        ),
        EGRESS if uses("endpoints4") || uses("endpoints6") => format!(
            "R1: {src} and {dst} share no group; dropped by {chain} `{text}`"
        ),
        EGRESS => format!("R4: {src} may not reach non-endpoint {dst}; dropped by {chain} `{text}`"),
        GATED => format!(
            "R9: {dst} accepts its peers only on its discovery ports, or {src} is not a peer; dropped by {chain} `{text}`"
        ),
        INGRESS if !dst_ports.is_empty() => format!(
            "R9: {dst} accepts peers only on its discovery ports ({}), or nothing allows {src}; dropped by {chain} `{text}`",
            dst_ports.join(", ")
        ),
        INGRESS if dst_is_endpoint && state.owner_of(&pkt.src).is_some() => format!(
            "R1: {src} and {dst} share no group; dropped by {chain} `{text}`"
        ),
        INGRESS => format!("R5: nothing allows {src} to reach {dst}; dropped by {chain} `{text}`"),
        _ => format!("{src} -> {dst}: {verdict} by {chain} `{text}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{LocalBinding, Policy};
    use crate::config::Config;
    use crate::model::{ClusterView, Task};
    use std::collections::{BTreeSet, HashMap};

    fn task(id: &str, ip: &str, groups: &[&str]) -> Task {
        Task::running(id, "/a", [ip.parse().expect("ip")], groups)
    }

    fn state() -> DesiredState {
        let c = Config::parse("[source]\nkind = \"file\"\npath = \"/x\"\n").expect("config");
        let mut st = DesiredState::new(Policy::from_config(&c));
        let mut v = ClusterView::default();
        v.insert(task("web.1", "10.233.1.1", &["web"]));
        v.insert(task("web.2", "10.233.2.1", &["web"]));
        v.insert(task("db.1", "10.233.1.2", &["db"]));
        v.insert(task("lb.1", "10.233.1.3", &["public"]));
        st.set_view(v);
        let mut b = HashMap::new();
        for (ip, iface) in [
            ("10.233.1.1", "veth1"),
            ("10.233.1.2", "veth2"),
            ("10.233.1.3", "veth3"),
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            b.insert(
                ip,
                LocalBinding {
                    iface: iface.into(),
                    ip,
                    bridge: None,
                },
            );
        }
        st.set_bindings(b, BTreeSet::new(), BTreeSet::new());
        st
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn shared_group_is_allowed_and_named() {
        let e = explain(
            &state(),
            ip("10.233.1.1"),
            ip("10.233.2.1"),
            Proto::Tcp,
            Some(80),
            false,
        );
        assert_eq!(e.verdict, "accept", "{e:?}");
        assert!(
            e.reason.starts_with("R1:") && e.reason.contains("\"web\""),
            "{}",
            e.reason
        );
    }

    #[test]
    fn no_shared_group_is_dropped_by_the_egress_chain() {
        let e = explain(
            &state(),
            ip("10.233.1.1"),
            ip("10.233.1.2"),
            Proto::Tcp,
            Some(80),
            false,
        );
        assert_eq!(e.verdict, "drop", "{e:?}");
        assert!(
            e.reason.starts_with("R1:") && e.reason.contains("share no group"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn open_group_is_reachable() {
        let e = explain(
            &state(),
            ip("10.233.1.2"),
            ip("10.233.1.3"),
            Proto::Udp,
            Some(53),
            false,
        );
        assert_eq!(e.verdict, "accept", "{e:?}");
        assert!(e.reason.contains("R2"), "{}", e.reason);
    }

    #[test]
    fn a_spoofed_source_is_dropped_at_the_interface() {
        let mut e_state = state();
        // web.2 is remote; a packet claiming its address arrives on veth1.
        let mut b = HashMap::new();
        let ip1 = ip("10.233.1.1");
        b.insert(
            ip1,
            LocalBinding {
                iface: "veth1".into(),
                ip: ip1,
                bridge: None,
            },
        );
        e_state.set_bindings(b, BTreeSet::new(), BTreeSet::new());
        let (inet, _) = e_state.tables();
        let pkt = Packet {
            src: ip("10.233.2.1"),
            dst: ip("10.233.1.2"),
            proto: Proto::Tcp,
            port: None,
            iif: Some("veth1".into()),
            oif: None,
        };
        let mut t = Tracer {
            table: &inet,
            pkt: &pkt,
            steps: Vec::new(),
        };
        assert!(matches!(t.run("forward", 0), Some(Outcome::Drop)));
        assert_eq!(t.steps.last().map(|s| s.chain.as_str()), Some(SOURCE_CHECK));
    }

    #[test]
    fn the_host_reaches_its_endpoints() {
        let e = explain(
            &state(),
            ip("10.233.0.1"),
            ip("10.233.1.2"),
            Proto::Tcp,
            Some(22),
            true,
        );
        assert_eq!(e.verdict, "accept", "{e:?}");
    }
}
