//! The benchmark cluster: G groups of 10 members, every task in 3 groups
//! (the shape of the data-plane baseline, docs/notes/dataplane-baseline.md), as a groupd
//! [`ClusterView`] plus local bindings.
//!
//! Membership is laid out as 10·G "slots": slot `s` belongs to task `s / 3`
//! and group `s % G`. So each group has exactly 10 members, each task has 3
//! distinct groups (the last task may have fewer when 3 does not divide 10·G),
//! and groups overlap the way real ones do instead of forming disjoint cliques.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use groupd::compile::{group_id, LocalBinding, Policy};
use groupd::config::Config;
use groupd::model::{ClusterView, Task};

pub const GROUP_SIZE: usize = 10;
pub const GROUPS_PER_TASK: usize = 3;
/// Task addresses start here and stay inside 10.233.0.0/16.
const FIRST_IP: u32 = u32::from_be_bytes([10, 233, 16, 0]);
const LAST_IP: u32 = u32::from_be_bytes([10, 233, 255, 255]);

/// Number of tasks that give G groups of 10 members.
pub fn task_count(groups: usize) -> usize {
    (GROUP_SIZE * groups).div_ceil(GROUPS_PER_TASK)
}

pub fn groups_of(task: usize, groups: usize) -> Vec<usize> {
    let slots = GROUP_SIZE * groups;
    (GROUPS_PER_TASK * task..GROUPS_PER_TASK * (task + 1))
        .filter(|s| *s < slots)
        .map(|s| s % groups)
        .collect()
}

pub fn group_name(k: usize) -> String {
    format!("g{k}")
}

pub fn task_id(t: usize) -> String {
    format!("app{t}.task")
}

pub fn task_ip(t: usize) -> Ipv4Addr {
    let ip = FIRST_IP + t as u32;
    assert!(ip <= LAST_IP, "task {t} would leave 10.233.0.0/16");
    Ipv4Addr::from(ip)
}

/// Interface of the i-th local endpoint (0-based): veth-b1, veth-b2, …
pub fn local_iface(i: usize) -> String {
    format!("veth-b{}", i + 1)
}

/// A running endpoint. Built through serde so that fields other people add
/// to [`Task`] (with serde defaults) do not break the benchmark's build.
pub fn task(id: &str, ip: IpAddr, groups: &[String]) -> Task {
    let groups: serde_json::Map<String, serde_json::Value> = groups
        .iter()
        .map(|g| (g.clone(), serde_json::json!(["network-info"])))
        .collect();
    serde_json::from_value(serde_json::json!({
        "id": id,
        "app": format!("/{}", id.split('.').next().unwrap_or(id)),
        "state": "Running",
        "ips": [ip],
        "groups": groups,
    }))
    .expect("model::Task no longer accepts the benchmark's JSON shape")
}

/// The policy every benchmark uses: defaults, task interfaces `veth*`.
pub fn policy() -> Policy {
    let toml =
        "[source]\nkind = \"file\"\npath = \"/dev/null\"\n[interfaces]\nmatch = [\"veth*\"]\n";
    Policy::from_config(&Config::parse(toml).expect("benchmark config"))
}

pub type Bindings = HashMap<IpAddr, LocalBinding>;

pub fn binding(iface: &str, ip: IpAddr) -> LocalBinding {
    LocalBinding {
        iface: iface.to_string(),
        ip,
        bridge: None,
    }
}

/// The whole cluster for G groups; the first `local` tasks are bound to
/// veth-b1.. (bindings are data: the interfaces need not exist).
pub fn build(groups: usize, local: usize) -> (ClusterView, Bindings) {
    let mut view = ClusterView::default();
    let mut bindings = Bindings::new();
    for t in 0..task_count(groups) {
        let ip = IpAddr::V4(task_ip(t));
        let names: Vec<String> = groups_of(t, groups).into_iter().map(group_name).collect();
        view.insert(task(&task_id(t), ip, &names));
        if t < local {
            bindings.insert(ip, binding(&local_iface(t), ip));
        }
    }
    (view, bindings)
}

/// Three tasks for the data-plane probe: `a` and `b` share exactly one group
/// and it is the LAST one either task's chain looks up (the chain orders its
/// lookups by group id), `c` shares no group with `a`. Each has 3 groups.
pub fn probes(groups: usize) -> (usize, usize, usize) {
    let n = task_count(groups);
    let full = |t: usize| groups_of(t, groups).len() == GROUPS_PER_TASK;
    let last_is = |t: usize, k: usize| {
        groups_of(t, groups)
            .into_iter()
            .max_by_key(|g| group_id(&group_name(*g)))
            == Some(k)
    };
    for k in 0..groups {
        // The first two members of group k (slots k and k + G).
        let (a, b) = (k / GROUPS_PER_TASK, (k + groups) / GROUPS_PER_TASK);
        let shared: BTreeSet<usize> = groups_of(a, groups)
            .into_iter()
            .filter(|g| groups_of(b, groups).contains(g))
            .collect();
        if a == b || !full(a) || !full(b) || shared.len() != 1 {
            continue;
        }
        if !(last_is(a, k) && last_is(b, k)) {
            continue;
        }
        let disjoint = |t: usize| {
            t != a
                && t != b
                && full(t)
                && groups_of(t, groups)
                    .iter()
                    .all(|g| !groups_of(a, groups).contains(g))
        };
        if let Some(c) = (n / 2..n).chain(0..n / 2).find(|t| disjoint(*t)) {
            return (a, b, c);
        }
    }
    panic!("no probe tasks found for G={groups}");
}

/// The whole cluster as a Marathon `/v2/apps?embed=apps.tasks` document
/// (for groupd's file source). One app per task: groups are per app (version) in Marathon.
pub fn marathon_doc(g: usize) -> String {
    let mut s = String::from("{\"apps\":[");
    for t in 0..task_count(g) {
        let groups: Vec<String> = groups_of(t, g)
            .into_iter()
            .map(|k| format!("\"{}\"", group_name(k)))
            .collect();
        let _ = write!(
            s,
            "{}{{\"id\":\"/app{t}\",\"version\":\"v1\",\"ipAddress\":{{\"groups\":[{}]}},\
             \"tasks\":[{{\"id\":\"{}\",\"appId\":\"/app{t}\",\"version\":\"v1\",\"state\":\"TASK_RUNNING\",\
             \"ipAddresses\":[{{\"ipAddress\":\"{}\",\"protocol\":\"IPv4\"}}]}}]}}",
            if t == 0 { "" } else { "," },
            groups.join(","),
            task_id(t),
            task_ip(t)
        );
    }
    s.push_str("]}\n");
    s
}
