//! Cluster view + local bindings + policy -> the nftables ruleset. Pure: no I/O.
//!
//! The chains are static ([`skeleton`]); everything that depends on tasks is
//! set elements, so a task's change is element adds and deletes only (no rule
//! is rewritten, and the kernel never re-validates the chains).
//!
//! R1 is enforced from sets of address *pairs*, listed only for the
//! endpoints of this agent: `egress` holds (interface, local endpoint, peer)
//! for every peer the local endpoint shares a group with, `ingress` the same
//! in the other direction, and `pass` (interface, local, local, interface)
//! for two local endpoints. One lookup then decides a packet between
//! endpoints that may talk, and also proves that its source address belongs
//! to its input interface (R7) — the hot path is one hash lookup, whatever
//! the size of the cluster. Everything else (replies, open groups, non-endpoints,
//! spoofing, discovery ports) takes the slower path through
//! [`source_check`](SOURCE_CHECK), conntrack and the `egress`/`ingress` chains.
//!
//! A pair exists once per peer, not per group: a membership change costs
//! elements proportional to the local endpoints of the groups involved.

pub mod wide;

use std::collections::BTreeSet;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::config::{Config, EgressNonEndpoint, IfacePattern, Rate, Ungrouped};
use crate::drops::DropRule;
use crate::model::{DiscoveryPort, GroupName, Protocol, Task};
use crate::net::Cidr;
use crate::ruleset::{
    Action, BaseChain, Chain, Dir, Element, Family, Field, GroupId, Hook, KeyPart, KeyValue, Match,
    Rule, Table, Verdict, L3,
};

// Names of the objects in groupd's tables (generated, never from the master).
pub const ENDPOINTS4: &str = "endpoints4";
pub const ENDPOINTS6: &str = "endpoints6";
pub const OPEN4: &str = "open4";
pub const OPEN6: &str = "open6";
pub const OPEN_GATED4: &str = "open_gated4";
pub const OPEN_GATED6: &str = "open_gated6";
pub const BOUND4: &str = "bound4";
pub const BOUND6: &str = "bound6";
pub const BRIDGES: &str = "bridges";
pub const EGRESS4: &str = "egress4";
pub const EGRESS6: &str = "egress6";
pub const INGRESS4: &str = "ingress4";
pub const INGRESS6: &str = "ingress6";
pub const PASS4: &str = "pass4";
pub const PASS6: &str = "pass6";
pub const GATED4: &str = "gated4";
pub const GATED6: &str = "gated6";
pub const GATE_PORTS4: &str = "gate_ports4";
pub const GATE_PORTS6: &str = "gate_ports6";
pub const PORTS: &str = "ports";
pub const IGNORED_PORTS: &str = "ignored_ports";
/// One element: the generation of the cluster view the table was compiled
/// from (see [`generation_element`]).
pub const GENERATION: &str = "generation";

// Chains of the inet table.
pub const SOURCE_CHECK: &str = "source_check";
pub const DEST_CHECK: &str = "dest_check";
pub const NEIGHBOUR_DISCOVERY: &str = "neighbour_discovery";
pub const EGRESS: &str = "egress";
pub const INGRESS: &str = "ingress";
pub const GATED: &str = "gated";
pub const FROM_TASK: &str = "from_task";
pub const TO_TASK: &str = "to_task";
pub const TASK_TO_TASK: &str = "task_to_task";
pub const HOST_FROM_TASK: &str = "host_from_task";
pub const HOST_TO_TASK: &str = "host_to_task";
// Chains of the bridge table.
pub const PORT_IN: &str = "port_in";
pub const PORT_OUT: &str = "port_out";

/// A set name: always one of the constants above.
pub type SetName = &'static str;

/// The policy knobs the compiler needs, derived once from the config.
#[derive(Debug, Clone)]
pub struct Policy {
    pub table: String,
    pub patterns: Vec<IfacePattern>,
    pub open: BTreeSet<String>,
    /// Ids of the open groups.
    pub open_ids: BTreeSet<GroupId>,
    pub ungrouped: Ungrouped,
    pub egress: EgressNonEndpoint,
    pub egress_allow: Vec<Cidr>,
    pub allow_from_host: bool,
    pub ingress_allow: Vec<Cidr>,
    pub enforce_discovery_ports: bool,
    /// `[drops] log`: dropped packets also go to nflog (rate-limited).
    pub drop_log: Option<DropLog>,
    /// Large groups with a local member are told apart by identity
    /// ([`wide`]) instead of address pairs. Off: every group keeps pairs.
    pub wide: bool,
}

/// Where and how often the dropping rules log (`[drops]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropLog {
    pub group: u16,
    pub rate: Rate,
    pub burst: u32,
}

impl Policy {
    pub fn from_config(c: &Config) -> Policy {
        Policy {
            table: c.daemon.table.clone(),
            patterns: c.interfaces.patterns(),
            open: c.groups.open.iter().cloned().collect(),
            open_ids: c.groups.open.iter().map(|g| group_id(g)).collect(),
            ungrouped: c.groups.ungrouped_policy(),
            egress: c.policy.egress_non_endpoint,
            egress_allow: c.policy.egress_allow.clone(),
            allow_from_host: c.policy.allow_from_host,
            ingress_allow: c.policy.ingress_allow.clone(),
            enforce_discovery_ports: c.policy.enforce_discovery_ports,
            drop_log: c.drops.log.then(|| DropLog {
                group: c.drops.group,
                rate: c.drops.rate(),
                burst: c.drops.burst,
            }),
            wide: true,
        }
    }
}

/// A group's 128-bit id: a hash of its name, so any string is safe, ids are
/// the same on every agent and across restarts, and collisions are
/// computationally out of reach.
pub fn group_id(name: &str) -> GroupId {
    let d = Sha256::new()
        .chain_update(b"groupd-group\0")
        .chain_update(name.as_bytes())
        .finalize();
    let mut g = [0u8; 16];
    g.copy_from_slice(&d[..16]);
    g
}

/// groups(T) after R3: a task with no groups is isolated or joins the
/// configured group.
pub fn effective_groups(task: &Task, policy: &Policy) -> BTreeSet<GroupName> {
    let groups: BTreeSet<GroupName> = task.groups.keys().cloned().collect();
    if groups.is_empty() {
        if let Ungrouped::Group(g) = &policy.ungrouped {
            return BTreeSet::from([GroupName::new(g)]);
        }
    }
    groups
}

fn v4v6<T>(ip: &IpAddr, a: T, b: T) -> T {
    if ip.is_ipv4() {
        a
    } else {
        b
    }
}

fn same_family(a: &IpAddr, b: &IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn base(hook: Hook, priority: i32) -> Option<BaseChain> {
    Some(BaseChain { hook, priority })
}

fn chain(name: &str, base: Option<BaseChain>, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.to_string(),
        base,
        rules,
    }
}

fn ret(matches: Vec<Match>) -> Rule {
    Rule::verdict(matches, Verdict::Return)
}

fn accept(matches: Vec<Match>) -> Rule {
    Rule::verdict(matches, Verdict::Accept)
}

fn goto(matches: Vec<Match>, target: &str) -> Rule {
    Rule::verdict(matches, Verdict::Goto(target.into()))
}

fn jump(matches: Vec<Match>, target: &str) -> Rule {
    Rule::verdict(matches, Verdict::Jump(target.into()))
}

fn counted_drop(matches: Vec<Match>) -> Rule {
    Rule::verdict(matches, Verdict::Drop).counted()
}

/// The dropping rule `rule`: a counted drop, preceded with `[drops] log` by
/// a rate-limited copy of its matches that sends the packet to nflog tagged
/// with the rule's id. Two rules rather than one because the limit must
/// only gate the logging, never the drop. Config only: chains stay static.
fn dropping(policy: &Policy, rule: DropRule, matches: Vec<Match>) -> Vec<Rule> {
    let mut rules = Vec::with_capacity(2);
    if let Some(log) = &policy.drop_log {
        let mut m = matches.clone();
        m.push(Match::Limit {
            rate: log.rate.rate,
            unit_secs: log.rate.unit_secs,
            burst: log.burst,
        });
        rules.push(Rule::new(
            m,
            Action::Log {
                prefix: rule.id().to_string(),
                group: log.group,
            },
        ));
    }
    rules.push(counted_drop(matches));
    rules
}

fn prefix(dir: Dir, p: &str) -> Match {
    // Only called with the literal prefixes below.
    let prefix: Cidr = p.parse().unwrap_or(Cidr {
        addr: IpAddr::from([0u8; 16]),
        prefix: 128,
    });
    Match::AddrPrefix { dir, prefix }
}

use Dir::{In, Out};
use L3::{Ip, Ip6};

/// The same lookup for IPv4 and IPv6: `fields(l3) @set4`, `fields(l3) @set6`.
fn both_families(fields: impl Fn(L3) -> Vec<Field>, sets: [&str; 2]) -> [Match; 2] {
    [
        Match::lookup(&fields(Ip), sets[0]),
        Match::lookup(&fields(Ip6), sets[1]),
    ]
}

/// `iifname . ip saddr . ip daddr`: the input interface and the flow.
fn from_flow(l3: L3) -> Vec<Field> {
    vec![Field::Ifname(In), Field::Addr(In, l3), Field::Addr(Out, l3)]
}

/// `oifname . ip saddr . ip daddr`: the output interface and the flow.
fn to_flow(l3: L3) -> Vec<Field> {
    vec![
        Field::Ifname(Out),
        Field::Addr(In, l3),
        Field::Addr(Out, l3),
    ]
}

/// `iifname . ip saddr . ip daddr . oifname`
fn through_flow(l3: L3) -> Vec<Field> {
    let mut f = from_flow(l3);
    f.push(Field::Ifname(Out));
    f
}

/// IPv6 needs neighbour discovery from link-local (and, for duplicate address
/// detection, unspecified) sources before any address is usable (R7).
fn neighbour_discovery_sources() -> Vec<Rule> {
    let mut rules = Vec::new();
    for t in [133u8, 135, 136, 143] {
        rules.push(ret(vec![prefix(In, "fe80::/10"), Match::Icmpv6Type(t)]));
    }
    for t in [135u8, 143] {
        rules.push(ret(vec![prefix(In, "::/128"), Match::Icmpv6Type(t)]));
    }
    rules
}

/// Neighbour discovery is link plumbing, not a flow between endpoints:
/// conntrack does not track it, so a group policy would drop the answer to a
/// neighbour solicitation between two tasks that may talk only one way (R2).
/// Sources are still anti-spoof checked at the task interface.
fn neighbour_discovery_chain() -> Chain {
    let rules = (133u8..=137)
        .map(|t| accept(vec![Match::Icmpv6Type(t)]))
        .collect();
    chain(NEIGHBOUR_DISCOVERY, None, rules)
}

/// One cheap test; the ND types are checked only for ICMPv6.
fn neighbour_discovery_jump() -> Rule {
    jump(vec![Match::L4Proto(58)], NEIGHBOUR_DISCOVERY)
}

fn established() -> Rule {
    accept(vec![Match::CtState(2 | 4)])
}

/// `iifname "veth*" <verdict>` for every task interface pattern, and the
/// bridges that have task ports (bridged traffic shows the bridge as its
/// interface in the inet hooks).
fn task_interface_rules(dir: Dir, patterns: &[IfacePattern], v: Verdict) -> Vec<Rule> {
    let mut rules: Vec<Rule> = patterns
        .iter()
        .map(|p| {
            let (name, is_prefix) = match p {
                IfacePattern::Exact(n) => (n.clone(), false),
                IfacePattern::Prefix(n) => (n.clone(), true),
            };
            Rule::verdict(
                vec![Match::Ifname {
                    dir,
                    name,
                    prefix: is_prefix,
                }],
                v.clone(),
            )
        })
        .collect();
    rules.push(Rule::verdict(
        vec![Match::lookup(&[Field::Ifname(dir)], BRIDGES)],
        v,
    ));
    rules
}

/// Largest generation an element can carry: 15 decimal digits fit an
/// `ifname` key (1,000 view changes a second for 31,000 years).
pub const MAX_GENERATION: u64 = 999_999_999_999_999;

/// The element that stamps a table with the generation of the view it
/// holds. A set element, because it is the one thing in a table that one
/// transaction can replace (table and chain comments cannot be updated);
/// an `ifname` key because `nft list` then prints it as a plain number.
pub fn generation_element(generation: u64) -> Element {
    let digits = generation.min(MAX_GENERATION).to_string();
    Element::set(&[KeyValue::Ifname(&digits)])
}

/// The generation a table read back from the kernel is stamped with (`None`
/// when it has no stamp: made by an older groupd or by hand).
pub fn generation_of(set_elements: &std::collections::BTreeSet<Element>) -> Option<u64> {
    let [e] = set_elements.iter().collect::<Vec<_>>()[..] else {
        return None;
    };
    let digits: Vec<u8> = e.key.iter().copied().take_while(|c| *c != 0).collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// The static part of both tables: every chain and set, no elements.
/// The chains and empty sets, without the rules for wide groups.
pub fn skeleton(policy: &Policy) -> (Table, Table) {
    skeleton_for(policy, false)
}

/// The chains and empty sets; `wide_rules`: with the rules that decide by
/// identity ([`wide`]), which are there only while this agent has a wide
/// group: `nft` (1.0.x) cannot list a lookup whose key holds a map's value,
/// so an agent without wide groups keeps a table `nft list` can print.
pub fn skeleton_for(policy: &Policy, wide_rules: bool) -> (Table, Table) {
    (inet_skeleton(policy, wide_rules), bridge_skeleton(policy))
}

fn inet_sets(t: &mut Table) {
    let (v4, v6, ifname) = (KeyPart::Ipv4, KeyPart::Ipv6, KeyPart::Ifname);
    for (name, key) in [
        (ENDPOINTS4, vec![v4]),
        (ENDPOINTS6, vec![v6]),
        (OPEN4, vec![v4]),
        (OPEN6, vec![v6]),
        (OPEN_GATED4, vec![v4]),
        (OPEN_GATED6, vec![v6]),
        (BOUND4, vec![ifname, v4]),
        (BOUND6, vec![ifname, v6]),
        (BRIDGES, vec![ifname]),
        (GENERATION, vec![ifname]),
        (EGRESS4, vec![ifname, v4, v4]),
        (EGRESS6, vec![ifname, v6, v6]),
        (INGRESS4, vec![ifname, v4, v4]),
        (INGRESS6, vec![ifname, v6, v6]),
        (GATED4, vec![ifname, v4, v4]),
        (GATED6, vec![ifname, v6, v6]),
        (PASS4, vec![ifname, v4, v4, ifname]),
        (PASS6, vec![ifname, v6, v6, ifname]),
        (
            GATE_PORTS4,
            vec![v4, KeyPart::InetProto, KeyPart::InetService],
        ),
        (
            GATE_PORTS6,
            vec![v6, KeyPart::InetProto, KeyPart::InetService],
        ),
    ] {
        t.add_set(name, key);
    }
}

fn inet_skeleton(policy: &Policy, wide_rules: bool) -> Table {
    let mut t = Table::new(Family::Inet, &policy.table);
    inet_sets(&mut t);
    if policy.wide {
        wide::add_sets(&mut t);
    }
    // The wide-group twin of a pair rule, right after it (none without).
    let wide_rules = |local: Dir, sets: [&str; 2], verdict: fn(Vec<Match>) -> Rule| {
        if !wide_rules {
            return vec![];
        }
        wide::matches(local, sets)
            .into_iter()
            .map(|m| verdict(vec![m]))
            .collect::<Vec<Rule>>()
    };
    let addr_in = |dir, l3, set: &str| Match::lookup(&[Field::Addr(dir, l3)], set);
    let if_addr =
        |dir, l3, set: &str| Match::lookup(&[Field::Ifname(dir), Field::Addr(dir, l3)], set);
    let bridge_if = |dir| Match::lookup(&[Field::Ifname(dir)], BRIDGES);

    // R7 + R8 for a packet from a task interface: returns if its source is
    // bound there (bridge ports are checked per port in the bridge table).
    let mut source_check = vec![
        ret(vec![if_addr(In, Ip, BOUND4)]),
        ret(vec![if_addr(In, Ip6, BOUND6)]),
        ret(vec![bridge_if(In)]),
    ];
    source_check.extend(neighbour_discovery_sources());
    source_check.extend(dropping(policy, DropRule::SourceCheck, vec![]));
    t.chains.push(chain(SOURCE_CHECK, None, source_check));

    // R8 for a packet to a task interface: returns if its destination is bound there.
    let mut dest_check = vec![
        ret(vec![if_addr(Out, Ip, BOUND4)]),
        ret(vec![if_addr(Out, Ip6, BOUND6)]),
        ret(vec![bridge_if(Out)]),
        ret(vec![prefix(Out, "fe80::/10")]),
        ret(vec![prefix(Out, "ff02::/16")]),
    ];
    dest_check.extend(dropping(policy, DropRule::DestCheck, vec![]));
    t.chains.push(chain(DEST_CHECK, None, dest_check));
    t.chains.push(neighbour_discovery_chain());

    // R1, R2, R4 for a packet a (verified) local endpoint sends: returns if allowed.
    let mut egress: Vec<Rule> = both_families(from_flow, [EGRESS4, EGRESS6])
        .into_iter()
        .map(|m| ret(vec![m]))
        .collect();
    egress.extend(wide_rules(
        In,
        [wide::WIDE_EGRESS4, wide::WIDE_EGRESS6],
        ret,
    ));
    for (l3, sets) in [(Ip, [OPEN4, OPEN_GATED4]), (Ip6, [OPEN6, OPEN_GATED6])] {
        for set in sets {
            egress.push(ret(vec![addr_in(Out, l3, set)]));
        }
    }
    for (l3, set) in [(Ip, ENDPOINTS4), (Ip6, ENDPOINTS6)] {
        let to_endpoint = vec![addr_in(Out, l3, set)];
        egress.extend(dropping(policy, DropRule::EgressNoSharedGroup, to_endpoint));
    }
    match policy.egress {
        EgressNonEndpoint::Allow => {}
        EgressNonEndpoint::Deny => {
            for cidr in &policy.egress_allow {
                egress.push(ret(vec![Match::AddrPrefix {
                    dir: Out,
                    prefix: *cidr,
                }]));
            }
            egress.extend(dropping(policy, DropRule::EgressNonEndpoint, vec![]));
        }
    }
    t.chains.push(chain(EGRESS, None, egress));

    // R9: a port-restricted endpoint, reached on one of its ports (or by
    // ICMP): its group peers and, if it is in an open group, every endpoint.
    let mut gated: Vec<Rule> = both_families(to_flow, [GATED4, GATED6])
        .into_iter()
        .map(|m| accept(vec![m]))
        .collect();
    gated.extend(wide_rules(
        Out,
        [wide::WIDE_GATED4, wide::WIDE_GATED6],
        accept,
    ));
    for (l3, open, all) in [
        (Ip, OPEN_GATED4, ENDPOINTS4),
        (Ip6, OPEN_GATED6, ENDPOINTS6),
    ] {
        gated.push(accept(vec![addr_in(Out, l3, open), addr_in(In, l3, all)]));
    }
    gated.extend(dropping(policy, DropRule::Gated, vec![]));
    t.chains.push(chain(GATED, None, gated));

    // R1, R2, R5, R9 for a packet to a (verified) local endpoint: accepts or drops.
    let mut ingress: Vec<Rule> = both_families(to_flow, [INGRESS4, INGRESS6])
        .into_iter()
        .map(|m| accept(vec![m]))
        .collect();
    ingress.extend(wide_rules(
        Out,
        [wide::WIDE_INGRESS4, wide::WIDE_INGRESS6],
        accept,
    ));
    for (l3, open, all) in [(Ip, OPEN4, ENDPOINTS4), (Ip6, OPEN6, ENDPOINTS6)] {
        ingress.push(accept(vec![addr_in(Out, l3, open), addr_in(In, l3, all)]));
    }
    for cidr in &policy.ingress_allow {
        ingress.push(accept(vec![Match::AddrPrefix {
            dir: In,
            prefix: *cidr,
        }]));
    }
    let service = |l3| vec![Field::Addr(Out, l3), Field::L4Proto, Field::Dport];
    for m in both_families(service, [GATE_PORTS4, GATE_PORTS6]) {
        ingress.push(goto(vec![m], GATED));
    }
    ingress.push(goto(vec![Match::L4Proto(1)], GATED));
    ingress.push(goto(vec![Match::L4Proto(58)], GATED));
    ingress.extend(dropping(policy, DropRule::Ingress, vec![]));
    t.chains.push(chain(INGRESS, None, ingress));

    // Between two task interfaces of this agent (the pairs that may pass
    // were accepted by the forward chain already).
    let task_to_task = vec![
        jump(vec![], SOURCE_CHECK),
        jump(vec![], DEST_CHECK),
        established(),
        neighbour_discovery_jump(),
        jump(vec![], EGRESS),
        goto(vec![], INGRESS),
    ];
    t.chains.push(chain(TASK_TO_TASK, None, task_to_task));

    // From a task interface to the rest of the world (or to another task interface).
    let mut from_task =
        task_interface_rules(Out, &policy.patterns, Verdict::Goto(TASK_TO_TASK.into()));
    from_task.extend(
        both_families(from_flow, [EGRESS4, EGRESS6])
            .into_iter()
            .map(|m| accept(vec![m])),
    );
    from_task.extend(wide_rules(
        In,
        [wide::WIDE_EGRESS4, wide::WIDE_EGRESS6],
        accept,
    ));
    from_task.extend([
        jump(vec![], SOURCE_CHECK),
        established(),
        neighbour_discovery_jump(),
        jump(vec![], EGRESS),
        accept(vec![]),
    ]);
    t.chains.push(chain(FROM_TASK, None, from_task));

    // From elsewhere to a task interface.
    let mut to_task: Vec<Rule> = both_families(to_flow, [INGRESS4, INGRESS6])
        .into_iter()
        .map(|m| accept(vec![m]))
        .collect();
    to_task.extend(wide_rules(
        Out,
        [wide::WIDE_INGRESS4, wide::WIDE_INGRESS6],
        accept,
    ));
    to_task.extend([
        jump(vec![], DEST_CHECK),
        established(),
        neighbour_discovery_jump(),
        goto(vec![], INGRESS),
    ]);
    t.chains.push(chain(TO_TASK, None, to_task));

    // Endpoint -> this host: the endpoint's egress rules (the host is not an endpoint, R4).
    let host_from_task = vec![
        jump(vec![], SOURCE_CHECK),
        established(),
        neighbour_discovery_jump(),
        jump(vec![], EGRESS),
        accept(vec![]),
    ];
    t.chains.push(chain(HOST_FROM_TASK, None, host_from_task));
    // This host -> endpoint (R5): allowed, or the endpoint's ingress rules.
    let mut host_to_task = vec![jump(vec![], DEST_CHECK)];
    if policy.allow_from_host {
        host_to_task.push(accept(vec![]));
    } else {
        host_to_task.extend([
            established(),
            neighbour_discovery_jump(),
            goto(vec![], INGRESS),
        ]);
    }
    t.chains.push(chain(HOST_TO_TASK, None, host_to_task));

    // Two local endpoints that may talk: decided before anything else (the
    // pair proves both interfaces and the group). The rest of the base
    // chains only sorts packets by the task interfaces they touch.
    let mut forward: Vec<Rule> = both_families(through_flow, [PASS4, PASS6])
        .into_iter()
        .map(|m| accept(vec![m]))
        .collect();
    forward.extend(task_interface_rules(
        In,
        &policy.patterns,
        Verdict::Goto(FROM_TASK.into()),
    ));
    forward.extend(task_interface_rules(
        Out,
        &policy.patterns,
        Verdict::Goto(TO_TASK.into()),
    ));
    t.chains
        .push(chain("forward", base(Hook::Forward, 0), forward));
    let input = task_interface_rules(In, &policy.patterns, Verdict::Goto(HOST_FROM_TASK.into()));
    t.chains.push(chain("input", base(Hook::Input, 0), input));
    let output = task_interface_rules(Out, &policy.patterns, Verdict::Goto(HOST_TO_TASK.into()));
    t.chains
        .push(chain("output", base(Hook::Output, 0), output));
    t
}

fn bridge_skeleton(policy: &Policy) -> Table {
    let mut t = Table::new(Family::Bridge, &policy.table);
    t.add_set(BOUND4, vec![KeyPart::Ifname, KeyPart::Ipv4]);
    t.add_set(BOUND6, vec![KeyPart::Ifname, KeyPart::Ipv6]);
    t.add_set(PORTS, vec![KeyPart::Ifname]);
    t.add_set(IGNORED_PORTS, vec![KeyPart::Ifname]);
    let if_addr =
        |dir, l3, set: &str| Match::lookup(&[Field::Ifname(dir), Field::Addr(dir, l3)], set);

    // Bridged frames: the bridge port is only visible in the bridge family.
    let mut port_in = vec![
        ret(vec![if_addr(In, L3::Arp, BOUND4)]),
        ret(vec![if_addr(In, Ip, BOUND4)]),
        ret(vec![if_addr(In, Ip6, BOUND6)]),
    ];
    port_in.extend(neighbour_discovery_sources());
    port_in.extend(dropping(policy, DropRule::PortIn, vec![]));
    t.chains.push(chain(PORT_IN, None, port_in));

    let known_port = || Match::lookup(&[Field::Ifname(Out)], PORTS);
    let mut port_out = vec![
        ret(vec![if_addr(Out, L3::Arp, BOUND4)]),
        ret(vec![if_addr(Out, Ip, BOUND4)]),
        ret(vec![if_addr(Out, Ip6, BOUND6)]),
        ret(vec![known_port(), prefix(Out, "fe80::/10")]),
        ret(vec![known_port(), prefix(Out, "ff02::/16")]),
    ];
    port_out.extend(dropping(policy, DropRule::PortOut, vec![]));
    t.chains.push(chain(PORT_OUT, None, port_out));

    let ignored = |dir| accept(vec![Match::lookup(&[Field::Ifname(dir)], IGNORED_PORTS)]);
    let per_pattern = |dir, target: &str| {
        let mut rules = task_interface_rules(dir, &policy.patterns, Verdict::Jump(target.into()));
        rules.pop(); // the bridge table sees ports, never the bridge itself
        rules
    };
    let mut pre = vec![ignored(In)];
    pre.extend(per_pattern(In, PORT_IN));
    t.chains
        .push(chain("prerouting", base(Hook::Prerouting, -200), pre));
    let mut post = vec![ignored(Out)];
    post.extend(per_pattern(Out, PORT_OUT));
    t.chains
        .push(chain("postrouting", base(Hook::Postrouting, -200), post));
    t
}

/// Where one of a task's IPs is bound locally.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalBinding {
    /// The host-side task interface (a veth, or a port of `bridge`).
    pub iface: String,
    pub ip: IpAddr,
    /// The bridge the interface is a port of (bridged task networks: its
    /// anti-spoofing is in the bridge table).
    pub bridge: Option<String>,
}

impl LocalBinding {
    /// The interface the inet hooks see the endpoint's packets on: the
    /// bridge for a bridge port (br_netfilter), else the interface itself.
    pub fn l3_iface(&self) -> &str {
        self.bridge.as_deref().unwrap_or(&self.iface)
    }
}

/// What the compiler needs to know about one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
///
/// One per endpoint of the cluster: boxed slices, not vectors, because at
/// tens of thousands of tasks every word counts.
pub struct Endpoint {
    pub ips: Box<[IpAddr]>,
    /// Ids of its effective groups that are not open: its R1 peers are the
    /// members of these.
    pub gids: Box<[GroupId]>,
    /// Member of an open group (R2): every endpoint may reach it.
    pub open: bool,
    /// Its IPs bound on this agent (empty: a remote endpoint).
    pub local: Box<[LocalBinding]>,
    /// R9 ports, when they restrict who reaches it here (local endpoints
    /// with `enforce_discovery_ports`); empty: not restricted.
    pub gate_ports: Box<[DiscoveryPort]>,
}

impl Endpoint {
    /// `None` for a task that is not an endpoint. `gids` are the ids of
    /// [`effective_groups`] (callers cache the hashing).
    pub fn of(
        task: &Task,
        gids: Vec<GroupId>,
        local: Vec<LocalBinding>,
        policy: &Policy,
    ) -> Option<Endpoint> {
        if !task.is_endpoint() {
            return None;
        }
        let open = gids.iter().any(|g| policy.open_ids.contains(g));
        let mut gids: Vec<GroupId> = gids
            .into_iter()
            .filter(|g| !policy.open_ids.contains(g))
            .collect();
        gids.sort();
        gids.dedup();
        let gate_ports = if policy.enforce_discovery_ports && !local.is_empty() {
            task.discovery_ports.iter().cloned().collect()
        } else {
            Box::default()
        };
        Some(Endpoint {
            ips: task.ips.iter().copied().collect(),
            gids: gids.into(),
            open,
            local: local.into(),
            gate_ports,
        })
    }

    pub fn is_local(&self) -> bool {
        !self.local.is_empty()
    }

    fn gated(&self) -> bool {
        !self.gate_ports.is_empty()
    }
}

/// Where compiled elements go: (table family, set, element).
pub type Sink<'a> = dyn FnMut(Family, SetName, Element) + 'a;

/// The elements an endpoint has on its own (not with its peers).
pub fn own_elements(e: &Endpoint, out: &mut Sink) {
    let inet = Family::Inet;
    for ip in &e.ips {
        let key = Element::set(&[KeyValue::Ip(*ip)]);
        out(inet, v4v6(ip, ENDPOINTS4, ENDPOINTS6), key.clone());
        if e.open {
            let (open, gated) = (v4v6(ip, OPEN4, OPEN6), v4v6(ip, OPEN_GATED4, OPEN_GATED6));
            out(inet, if e.gated() { gated } else { open }, key);
        }
    }
    let mut ports: Vec<&str> = Vec::new();
    for b in e.local.iter() {
        let bound = v4v6(&b.ip, BOUND4, BOUND6);
        out(
            inet,
            bound,
            Element::set(&[KeyValue::Ifname(b.l3_iface()), KeyValue::Ip(b.ip)]),
        );
        if b.bridge.is_some() {
            let port = Element::set(&[KeyValue::Ifname(&b.iface), KeyValue::Ip(b.ip)]);
            out(Family::Bridge, bound, port);
            // Once per port, even when it carries an IPv4 and an IPv6 address.
            if !ports.contains(&b.iface.as_str()) {
                ports.push(&b.iface);
                out(
                    Family::Bridge,
                    PORTS,
                    Element::set(&[KeyValue::Ifname(&b.iface)]),
                );
            }
        }
        for p in &e.gate_ports {
            let proto = if p.protocol == Protocol::Udp { 17 } else { 6 };
            out(
                inet,
                v4v6(&b.ip, GATE_PORTS4, GATE_PORTS6),
                Element::set(&[
                    KeyValue::Ip(b.ip),
                    KeyValue::Proto(proto),
                    KeyValue::Port(p.number),
                ]),
            );
        }
    }
}

/// The elements that let two endpoints sharing a group talk (R1), seen from
/// this agent: for each local one, its egress to the other and the other's
/// ingress to it (port-gated under R9), and for two local ones the pass-through.
pub fn pair_elements(a: &Endpoint, b: &Endpoint, out: &mut Sink) {
    one_way_pair(a, b, out);
    one_way_pair(b, a, out);
}

/// What `local` (if it is local) contributes for its peer `peer`.
fn one_way_pair(local: &Endpoint, peer: &Endpoint, out: &mut Sink) {
    let inet = Family::Inet;
    for l in &local.local {
        let iface = KeyValue::Ifname(l.l3_iface());
        for p in peer.ips.iter().filter(|p| same_family(p, &l.ip)) {
            let (lip, pip) = (KeyValue::Ip(l.ip), KeyValue::Ip(*p));
            out(
                inet,
                v4v6(p, EGRESS4, EGRESS6),
                Element::set(&[iface.clone(), lip.clone(), pip.clone()]),
            );
            let ingress = if local.gated() {
                v4v6(p, GATED4, GATED6)
            } else {
                v4v6(p, INGRESS4, INGRESS6)
            };
            out(
                inet,
                ingress,
                Element::set(&[iface.clone(), pip.clone(), lip.clone()]),
            );
            if peer.gated() {
                continue;
            }
            for pl in peer.local.iter().filter(|pl| pl.ip == *p) {
                out(
                    inet,
                    v4v6(p, PASS4, PASS6),
                    Element::set(&[
                        iface.clone(),
                        lip.clone(),
                        pip.clone(),
                        KeyValue::Ifname(pl.l3_iface()),
                    ]),
                );
            }
        }
    }
}
