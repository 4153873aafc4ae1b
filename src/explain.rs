//! `groupctl explain SRC DST`: trace a synthetic packet through the ruleset
//! groupd intends (the same [`Table`] it writes to the kernel), and say which
//! rule decides and why, in terms of tasks and groups.
//!
//! The tracer evaluates groupd's own rule vocabulary; it assumes a packet
//! that opens a new flow (conntrack state NEW), which is the one the policy
//! judges (replies of allowed flows are accepted by `ct state`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::compile::{effective_groups, group_id};
use crate::ruleset::{Action, Dir, Element, Hook, KeyValue, Match, Table, Verdict, L3};
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

    fn lookup(&self, set: &str, key: &[KeyValue]) -> Option<&Element> {
        let probe = Element::set(key);
        let (_, elems) = self.table.sets.get(set)?;
        elems.iter().find(|e| e.key == probe.key)
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
            Match::IfnameInSet { dir, set } => self
                .ifname(*dir)
                .is_some_and(|i| self.lookup(set, &[KeyValue::Ifname(i)]).is_some()),
            Match::IfAddrInSet { dir, l3, set } => {
                self.family_ok(*l3)
                    && self.ifname(*dir).is_some_and(|i| {
                        self.lookup(set, &[KeyValue::Ifname(i), KeyValue::Ip(self.addr(*dir))])
                            .is_some()
                    })
            }
            Match::AddrInSet { dir, l3, set } => {
                self.family_ok(*l3) && self.lookup(set, &[KeyValue::Ip(self.addr(*dir))]).is_some()
            }
            Match::GroupAddrInSet {
                group,
                dir,
                l3,
                set,
            } => {
                self.family_ok(*l3)
                    && self
                        .lookup(
                            set,
                            &[KeyValue::Group(group), KeyValue::Ip(self.addr(*dir))],
                        )
                        .is_some()
            }
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
                Action::None => None,
                Action::Verdict(v) => Some(v.clone()),
                Action::Vmap { dir, l3, map } => {
                    if !self.family_ok(*l3) {
                        continue;
                    }
                    match self
                        .lookup(map, &[KeyValue::Ip(self.addr(*dir))])
                        .and_then(|e| e.verdict.clone())
                    {
                        Some(v) => Some(v),
                        None => continue,
                    }
                }
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
    let src_bind = state
        .binding_of(&src)
        .filter(|b| !b.bridged)
        .map(|b| b.iface.clone());
    let dst_bind = state
        .binding_of(&dst)
        .filter(|b| !b.bridged)
        .map(|b| b.iface.clone());
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
    // endpoint chains that let it pass (the interface checks and the dispatch
    // are how the packet got there, not why it may).
    let is_dispatch = |s: &&Step| s.rule.contains(" vmap @") || s.rule.contains("jump ");
    let deciding_rule = if verdict == "drop" {
        tracer.steps.last().cloned()
    } else {
        tracer
            .steps
            .iter()
            .rev()
            .find(|s| s.chain.starts_with("ep_"))
            .or_else(|| tracer.steps.iter().rev().find(|s| !is_dispatch(s)))
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

/// Say it in the operator's words: tasks, groups, R-numbers.
fn describe(state: &DesiredState, pkt: &Packet, verdict: &str, rule: Option<&Step>) -> String {
    let name = |ip: &IpAddr| match state.owner_of(ip) {
        Some(t) => format!("task {t:?}"),
        None => format!("{ip} (not an endpoint)"),
    };
    let groups_of = |ip: &IpAddr| -> BTreeMap<String, String> {
        state
            .owner_of(ip)
            .and_then(|t| state.view().tasks.get(t))
            .map(|t| {
                effective_groups(t, state.policy())
                    .into_iter()
                    .map(|g| (hex(&group_id(&g)), g))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (src, dst) = (name(&pkt.src), name(&pkt.dst));
    let Some(rule) = rule else {
        return format!("{src} -> {dst}: no groupd rule applies on this agent ({verdict})");
    };
    let text = &rule.rule;
    if let Some(gid) = text
        .strip_prefix("0x")
        .and_then(|r| r.split_whitespace().next())
    {
        let mut all = groups_of(&pkt.src);
        all.extend(groups_of(&pkt.dst));
        let open: Vec<&String> = state.policy().open.iter().collect();
        for o in open {
            all.insert(hex(&group_id(o)), o.clone());
        }
        let group = all.get(gid).cloned().unwrap_or_else(|| format!("0x{gid}"));
        let rnum = if state.policy().open.contains(&group) {
            "R2 (open group)"
        } else {
            "R1"
        };
        return format!(
            "{rnum}: {src} and {dst} are both in group {group:?}; allowed by {} `{text}`",
            rule.chain
        );
    }
    if text.contains("@endpoints") && verdict == "drop" {
        return format!(
            "R1: {src} and {dst} share no group; dropped by {} `{text}`",
            rule.chain
        );
    }
    if text.contains("@endpoints") {
        return format!("R2: {dst} is in an open group, reachable by every endpoint; `{text}`");
    }
    if rule.chain == "from_task" || rule.chain == "to_task" {
        return format!("R7/R8: the interface/address pair is not bound to a known task; dropped by {} `{text}`", rule.chain);
    }
    if rule.chain.ends_with("_in") && verdict == "drop" && state.policy().enforce_discovery_ports {
        return format!("R9/R5: {dst} accepts peers only on its discovery ports, or nothing allows {src}; dropped by {} `{text}`", rule.chain);
    }
    if rule.chain.ends_with("_in") && verdict == "drop" {
        return format!(
            "R1/R5: nothing allows {src} to reach {dst}; dropped by {} `{text}`",
            rule.chain
        );
    }
    if rule.chain.ends_with("_out") && verdict == "drop" {
        return format!(
            "R4: {src} may not reach non-endpoint {dst}; dropped by {} `{text}`",
            rule.chain
        );
    }
    format!("{src} -> {dst}: {verdict} by {} `{text}`", rule.chain)
}

/// The group id as `nft list` prints it (hex, no leading zeros).
fn hex(g: &[u8; 16]) -> String {
    format!("{:x}", u128::from_be_bytes(*g))
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
                    bridged: false,
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
                bridged: false,
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
        assert_eq!(t.steps.last().map(|s| s.chain.as_str()), Some("from_task"));
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
