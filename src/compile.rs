//! Cluster view + local bindings + policy -> the nftables ruleset. Pure: no I/O.
//!
//! The ruleset has a static part ([`skeleton`]: base chains, dispatch, the
//! anti-spoofing chains and the sets) and a part per task ([`contribution`]:
//! set elements, and for local endpoints two chains). Group membership lives
//! in ONE set per address family keyed by `group-id . address`; a local
//! endpoint's chain looks its peer up once per group of its own, loading the
//! group id into a register itself. So per-packet cost depends on the number
//! of groups of the local task, never on the size of the cluster, and a
//! task's change touches only that task's elements.

use std::collections::BTreeSet;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::config::{Config, EgressNonEndpoint, IfacePattern, Ungrouped};
use crate::model::Task;
use crate::net::Cidr;
use crate::ruleset::{
    Action, BaseChain, Chain, Dir, Element, Family, GroupId, Hook, KeyPart, KeyValue, Match, Rule,
    Table, Verdict, L3,
};

// Names of the objects in groupd's tables (generated, never from the master).
pub const ENDPOINTS4: &str = "endpoints4";
pub const ENDPOINTS6: &str = "endpoints6";
pub const MEMBERS4: &str = "members4";
pub const MEMBERS6: &str = "members6";
pub const BOUND4: &str = "bound4";
pub const BOUND6: &str = "bound6";
pub const BRIDGES: &str = "bridges";
pub const PORTS: &str = "ports";
pub const IGNORED_PORTS: &str = "ignored_ports";
pub const OUT4: &str = "out4";
pub const OUT6: &str = "out6";
pub const IN4: &str = "in4";
pub const IN6: &str = "in6";

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

/// The group ids of a task's effective groups.
pub fn group_ids(task: &Task, policy: &Policy) -> Vec<GroupId> {
    let mut ids: Vec<GroupId> = effective_groups(task, policy)
        .iter()
        .map(|g| group_id(g))
        .collect();
    ids.sort();
    ids
}

/// Per-endpoint chain names: from a hash of the task ID (never the ID itself).
pub fn chain_names(task_id: &str) -> (String, String) {
    let d = Sha256::new()
        .chain_update(b"groupd-task\0")
        .chain_update(task_id.as_bytes())
        .finalize();
    let h: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
    (format!("ep_{h}_out"), format!("ep_{h}_in"))
}

/// The chain that checks peers of an endpoint whose ports are restricted (R9).
pub fn peers_chain_name(task_id: &str) -> String {
    let (_, ingress) = chain_names(task_id);
    format!("{}_peers", ingress.trim_end_matches("_in"))
}

/// groups(T) after R3: a task with no groups is isolated or joins the
/// configured group.
pub fn effective_groups(task: &Task, policy: &Policy) -> BTreeSet<String> {
    let groups: BTreeSet<String> = task.groups.keys().cloned().collect();
    if groups.is_empty() {
        if let Ungrouped::Group(g) = &policy.ungrouped {
            return BTreeSet::from([g.clone()]);
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

fn prefix(dir: Dir, p: &str) -> Match {
    // Only called with the literal prefixes below.
    let prefix: Cidr = p.parse().unwrap_or(Cidr {
        addr: IpAddr::from([0u8; 16]),
        prefix: 128,
    });
    Match::AddrPrefix { dir, prefix }
}

/// IPv6 needs neighbour discovery from link-local (and, for duplicate address
/// detection, unspecified) sources before any address is usable (R7).
fn neighbour_discovery_rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    for t in [133u8, 135, 136, 143] {
        rules.push(ret(vec![
            prefix(Dir::In, "fe80::/10"),
            Match::Icmpv6Type(t),
        ]));
    }
    for t in [135u8, 143] {
        rules.push(ret(vec![prefix(Dir::In, "::/128"), Match::Icmpv6Type(t)]));
    }
    rules
}

/// Neighbour discovery is link plumbing, not a flow between endpoints:
/// conntrack does not track it, so a group policy would drop the answer to a
/// neighbour solicitation between two tasks that may talk only one way (R2).
/// Sources are still anti-spoof checked at the task interface.
fn neighbour_discovery_chain() -> Chain {
    let rules = (133u8..=137)
        .map(|t| Rule::verdict(vec![Match::Icmpv6Type(t)], Verdict::Accept))
        .collect();
    chain(NEIGHBOUR_DISCOVERY, None, rules)
}

/// One cheap test in the hot path; the ND types are checked only for ICMPv6.
fn neighbour_discovery_jump() -> Rule {
    Rule::verdict(
        vec![Match::L4Proto(58)],
        Verdict::Jump(NEIGHBOUR_DISCOVERY.into()),
    )
}

const NEIGHBOUR_DISCOVERY: &str = "neighbour_discovery";

fn per_pattern(dir: Dir, patterns: &[IfacePattern], target: &str) -> Vec<Rule> {
    patterns
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
                Verdict::Jump(target.to_string()),
            )
        })
        .collect()
}

/// The static part of both tables: everything but the per-task pieces.
pub fn skeleton(policy: &Policy) -> (Table, Table) {
    (inet_skeleton(policy), bridge_skeleton(policy))
}

fn inet_skeleton(policy: &Policy) -> Table {
    let mut t = Table::new(Family::Inet, &policy.table);
    t.add_set(ENDPOINTS4, vec![KeyPart::Ipv4], false);
    t.add_set(ENDPOINTS6, vec![KeyPart::Ipv6], false);
    t.add_set(MEMBERS4, vec![KeyPart::GroupId, KeyPart::Ipv4], false);
    t.add_set(MEMBERS6, vec![KeyPart::GroupId, KeyPart::Ipv6], false);
    t.add_set(BOUND4, vec![KeyPart::Ifname, KeyPart::Ipv4], false);
    t.add_set(BOUND6, vec![KeyPart::Ifname, KeyPart::Ipv6], false);
    t.add_set(BRIDGES, vec![KeyPart::Ifname], false);
    for (m, k) in [
        (OUT4, KeyPart::Ipv4),
        (OUT6, KeyPart::Ipv6),
        (IN4, KeyPart::Ipv4),
        (IN6, KeyPart::Ipv6),
    ] {
        t.add_set(m, vec![k], true);
    }

    // R7 + R8 at the task interface (routed task networks).
    // The common case (a bound pair) first: this runs for every packet.
    let mut from_task = vec![
        ret(vec![Match::IfAddrInSet {
            dir: Dir::In,
            l3: L3::Ip,
            set: BOUND4.into(),
        }]),
        ret(vec![Match::IfAddrInSet {
            dir: Dir::In,
            l3: L3::Ip6,
            set: BOUND6.into(),
        }]),
        ret(vec![Match::IfnameInSet {
            dir: Dir::In,
            set: BRIDGES.into(),
        }]),
    ];
    from_task.extend(neighbour_discovery_rules());
    from_task.push(Rule::verdict(vec![], Verdict::Drop).counted());
    t.chains.push(chain("from_task", None, from_task));

    let to_task = vec![
        ret(vec![Match::IfAddrInSet {
            dir: Dir::Out,
            l3: L3::Ip,
            set: BOUND4.into(),
        }]),
        ret(vec![Match::IfAddrInSet {
            dir: Dir::Out,
            l3: L3::Ip6,
            set: BOUND6.into(),
        }]),
        ret(vec![Match::IfnameInSet {
            dir: Dir::Out,
            set: BRIDGES.into(),
        }]),
        ret(vec![prefix(Dir::Out, "fe80::/10")]),
        ret(vec![prefix(Dir::Out, "ff02::/16")]),
        Rule::verdict(vec![], Verdict::Drop).counted(),
    ];
    t.chains.push(chain("to_task", None, to_task));

    // R1-R5: the source's egress chain, then the destination's ingress chain.
    let vmap = |dir, l3, map: &str| {
        Rule::new(
            vec![],
            Action::Vmap {
                dir,
                l3,
                map: map.into(),
            },
        )
    };
    t.chains.push(neighbour_discovery_chain());
    let mut policy_rules = vec![neighbour_discovery_jump()];
    policy_rules.extend([
        vmap(Dir::In, L3::Ip, OUT4),
        vmap(Dir::In, L3::Ip6, OUT6),
        vmap(Dir::Out, L3::Ip, IN4),
        vmap(Dir::Out, L3::Ip6, IN6),
    ]);
    t.chains.push(chain("policy", None, policy_rules));

    // The interface checks (R7, R8) run in the hooks the policy runs in
    // anyway: two fewer base chains on every packet's path than separate
    // prerouting/postrouting chains would cost.
    let established = || Rule::verdict(vec![Match::CtState(2 | 4)], Verdict::Accept);
    let from_task = || per_pattern(Dir::In, &policy.patterns, "from_task");
    let to_task = || per_pattern(Dir::Out, &policy.patterns, "to_task");
    let mut forward = from_task();
    forward.extend(to_task());
    forward.extend([
        established(),
        Rule::verdict(vec![], Verdict::Jump("policy".into())),
    ]);
    t.chains
        .push(chain("forward", base(Hook::Forward, 0), forward));
    // Endpoint -> this host: the endpoint's egress rules (the host is not an endpoint, R4).
    let mut input = from_task();
    input.extend([
        established(),
        neighbour_discovery_jump(),
        vmap(Dir::In, L3::Ip, OUT4),
        vmap(Dir::In, L3::Ip6, OUT6),
    ]);
    t.chains.push(chain("input", base(Hook::Input, 0), input));
    // This host -> endpoint (R5): allowed, or the endpoint's ingress rules.
    let mut output = to_task();
    if !policy.allow_from_host {
        output.extend([
            established(),
            neighbour_discovery_jump(),
            vmap(Dir::Out, L3::Ip, IN4),
            vmap(Dir::Out, L3::Ip6, IN6),
        ]);
    }
    t.chains
        .push(chain("output", base(Hook::Output, 0), output));
    t
}

fn bridge_skeleton(policy: &Policy) -> Table {
    let mut t = Table::new(Family::Bridge, &policy.table);
    t.add_set(BOUND4, vec![KeyPart::Ifname, KeyPart::Ipv4], false);
    t.add_set(BOUND6, vec![KeyPart::Ifname, KeyPart::Ipv6], false);
    t.add_set(PORTS, vec![KeyPart::Ifname], false);
    t.add_set(IGNORED_PORTS, vec![KeyPart::Ifname], false);

    // Bridged frames: the bridge port is only visible in the bridge family.
    let mut port_in = vec![
        ret(vec![Match::IfAddrInSet {
            dir: Dir::In,
            l3: L3::Arp,
            set: BOUND4.into(),
        }]),
        ret(vec![Match::IfAddrInSet {
            dir: Dir::In,
            l3: L3::Ip,
            set: BOUND4.into(),
        }]),
        ret(vec![Match::IfAddrInSet {
            dir: Dir::In,
            l3: L3::Ip6,
            set: BOUND6.into(),
        }]),
    ];
    port_in.extend(neighbour_discovery_rules());
    port_in.push(Rule::verdict(vec![], Verdict::Drop).counted());
    t.chains.push(chain("port_in", None, port_in));

    let known_port = || Match::IfnameInSet {
        dir: Dir::Out,
        set: PORTS.into(),
    };
    let port_out = vec![
        ret(vec![Match::IfAddrInSet {
            dir: Dir::Out,
            l3: L3::Arp,
            set: BOUND4.into(),
        }]),
        ret(vec![Match::IfAddrInSet {
            dir: Dir::Out,
            l3: L3::Ip,
            set: BOUND4.into(),
        }]),
        ret(vec![Match::IfAddrInSet {
            dir: Dir::Out,
            l3: L3::Ip6,
            set: BOUND6.into(),
        }]),
        ret(vec![known_port(), prefix(Dir::Out, "fe80::/10")]),
        ret(vec![known_port(), prefix(Dir::Out, "ff02::/16")]),
        Rule::verdict(vec![], Verdict::Drop).counted(),
    ];
    t.chains.push(chain("port_out", None, port_out));

    let ignored = |dir| {
        Rule::verdict(
            vec![Match::IfnameInSet {
                dir,
                set: IGNORED_PORTS.into(),
            }],
            Verdict::Accept,
        )
    };
    let mut pre = vec![ignored(Dir::In)];
    pre.extend(per_pattern(Dir::In, &policy.patterns, "port_in"));
    t.chains
        .push(chain("prerouting", base(Hook::Prerouting, -200), pre));
    let mut post = vec![ignored(Dir::Out)];
    post.extend(per_pattern(Dir::Out, &policy.patterns, "port_out"));
    t.chains
        .push(chain("postrouting", base(Hook::Postrouting, -200), post));
    t
}

/// Where one of a task's IPs is bound locally.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalBinding {
    pub iface: String,
    pub ip: IpAddr,
    /// The interface is a bridge port (its anti-spoofing is in the bridge table).
    pub bridged: bool,
}

/// What one task adds to the tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contribution {
    /// (family, set, element)
    pub elements: BTreeSet<(Family, SetName, Element)>,
    /// Chains of a local endpoint (inet table).
    pub chains: Vec<Chain>,
}

/// The elements and chains task `task` contributes. `local` lists its IPs
/// that are bound to task interfaces of this agent (empty: remote task).
///
/// Group memberships are listed only for `relevant` groups: the groups of
/// this agent's endpoints and the open groups. A group nobody here belongs to
/// is never looked up, so its members cost the kernel nothing.
///
/// `gids` are the task's group ids, sorted ([`group_ids`]; callers cache them).
pub fn contribution(
    task: &Task,
    gids: &[GroupId],
    local: &[LocalBinding],
    policy: &Policy,
    relevant: &dyn Fn(&GroupId) -> bool,
) -> Contribution {
    let mut c = Contribution::default();
    if !task.is_endpoint() {
        return c;
    }
    let ids = gids;
    let inet = |set: SetName, e: Element| (Family::Inet, set, e);
    for ip in &task.ips {
        c.elements.insert(inet(
            v4v6(ip, ENDPOINTS4, ENDPOINTS6),
            Element::set(&[KeyValue::Ip(*ip)]),
        ));
        for gid in ids.iter().filter(|g| !local.is_empty() || relevant(g)) {
            c.elements.insert(inet(
                v4v6(ip, MEMBERS4, MEMBERS6),
                Element::set(&[KeyValue::Group(gid), KeyValue::Ip(*ip)]),
            ));
        }
    }
    if local.is_empty() {
        return c;
    }
    let (out_chain, in_chain) = chain_names(&task.id);
    for b in local {
        let pair = Element::set(&[KeyValue::Ifname(&b.iface), KeyValue::Ip(b.ip)]);
        let bound = v4v6(&b.ip, BOUND4, BOUND6);
        c.elements.insert(inet(bound, pair.clone()));
        if b.bridged {
            c.elements.insert((Family::Bridge, bound, pair));
            c.elements.insert((
                Family::Bridge,
                PORTS,
                Element::set(&[KeyValue::Ifname(&b.iface)]),
            ));
        }
    }
    // Dispatch every IP of a local endpoint to its chains (bound or not: the
    // anti-spoofing chains already decide which source IPs may enter).
    for ip in &task.ips {
        let key = [KeyValue::Ip(*ip)];
        c.elements.insert(inet(
            v4v6(ip, OUT4, OUT6),
            Element::map(&key, Verdict::Jump(out_chain.clone())),
        ));
        c.elements.insert(inet(
            v4v6(ip, IN4, IN6),
            Element::map(&key, Verdict::Jump(in_chain.clone())),
        ));
    }
    let in_open = ids.iter().any(|g| policy.open_ids.contains(g));
    c.chains.push(egress_chain(&out_chain, ids, policy));
    if policy.enforce_discovery_ports && !task.discovery_ports.is_empty() {
        let peers = peers_chain_name(&task.id);
        c.chains
            .push(port_gate_chain(&in_chain, &peers, task, policy));
        c.chains.push(peers_chain(&peers, ids, in_open));
    } else {
        c.chains
            .push(ingress_chain(&in_chain, ids, in_open, policy));
    }
    c
}

fn group_rules(ids: &[GroupId], dir: Dir) -> Vec<Rule> {
    let mut rules = Vec::new();
    // Sorted by id, not name: the chain's layout reveals nothing about names.
    let mut sorted: Vec<&GroupId> = ids.iter().collect();
    sorted.sort();
    // One family after the other: a packet skips the other family's rules
    // only after it found no group of its own, not between every group.
    for (l3, set) in [(L3::Ip, MEMBERS4), (L3::Ip6, MEMBERS6)] {
        for gid in &sorted {
            rules.push(ret(vec![Match::GroupAddrInSet {
                group: **gid,
                dir,
                l3,
                set: set.into(),
            }]));
        }
    }
    rules
}

/// R1, R2, R4 for traffic a local endpoint sends.
fn egress_chain(name: &str, ids: &[GroupId], policy: &Policy) -> Chain {
    let mut rules = vec![Rule::new(vec![], Action::None).counted()];
    rules.extend(group_rules(ids, Dir::Out));
    let open: Vec<GroupId> = policy
        .open_ids
        .iter()
        .filter(|o| !ids.contains(o))
        .copied()
        .collect();
    rules.extend(group_rules(&open, Dir::Out));
    for (l3, set) in [(L3::Ip, ENDPOINTS4), (L3::Ip6, ENDPOINTS6)] {
        rules.push(
            Rule::verdict(
                vec![Match::AddrInSet {
                    dir: Dir::Out,
                    l3,
                    set: set.into(),
                }],
                Verdict::Drop,
            )
            .counted(),
        );
    }
    match policy.egress {
        EgressNonEndpoint::Allow => rules.push(ret(vec![])),
        EgressNonEndpoint::Deny => {
            for cidr in &policy.egress_allow {
                rules.push(ret(vec![Match::AddrPrefix {
                    dir: Dir::Out,
                    prefix: *cidr,
                }]));
            }
            rules.push(Rule::verdict(vec![], Verdict::Drop).counted());
        }
    }
    chain(name, None, rules)
}

/// Who may reach a local endpoint: members of its groups (R1) and, if it is
/// in an open group, every endpoint (R2).
fn peer_rules(ids: &[GroupId], in_open: bool) -> Vec<Rule> {
    let mut rules = group_rules(ids, Dir::In);
    if in_open {
        for (l3, set) in [(L3::Ip, ENDPOINTS4), (L3::Ip6, ENDPOINTS6)] {
            rules.push(ret(vec![Match::AddrInSet {
                dir: Dir::In,
                l3,
                set: set.into(),
            }]));
        }
    }
    rules
}

fn ingress_allow_rules(policy: &Policy) -> Vec<Rule> {
    policy
        .ingress_allow
        .iter()
        .map(|cidr| {
            ret(vec![Match::AddrPrefix {
                dir: Dir::In,
                prefix: *cidr,
            }])
        })
        .collect()
}

/// R1, R2, R5 for traffic a local endpoint receives.
fn ingress_chain(name: &str, ids: &[GroupId], in_open: bool, policy: &Policy) -> Chain {
    let mut rules = vec![Rule::new(vec![], Action::None).counted()];
    rules.extend(peer_rules(ids, in_open));
    rules.extend(ingress_allow_rules(policy));
    rules.push(Rule::verdict(vec![], Verdict::Drop).counted());
    chain(name, None, rules)
}

/// R9: peers reach the endpoint only on its discovery ports (and ICMP);
/// then [`peers_chain`] decides who the peers are. CIDR allowances (R5) are
/// not limited by ports.
fn port_gate_chain(name: &str, peers: &str, task: &Task, policy: &Policy) -> Chain {
    let mut rules = vec![Rule::new(vec![], Action::None).counted()];
    rules.extend(ingress_allow_rules(policy));
    let to_peers = || Verdict::Goto(peers.to_string());
    for p in &task.discovery_ports {
        let udp = p.protocol == crate::model::Protocol::Udp;
        rules.push(Rule::verdict(
            vec![Match::Dport {
                udp,
                port: p.number,
            }],
            to_peers(),
        ));
    }
    rules.push(Rule::verdict(vec![Match::L4Proto(1)], to_peers()));
    rules.push(Rule::verdict(vec![Match::L4Proto(58)], to_peers()));
    rules.push(Rule::verdict(vec![], Verdict::Drop).counted());
    chain(name, None, rules)
}

fn peers_chain(name: &str, ids: &[GroupId], in_open: bool) -> Chain {
    let mut rules = peer_rules(ids, in_open);
    rules.push(Rule::verdict(vec![], Verdict::Drop).counted());
    chain(name, None, rules)
}
