//! Serde models of what the masters serve, and the rules that turn one task
//! of either master into a [`Task`](crate::model::Task).
//!
//! The models are tolerant: unknown fields are ignored (never deserialized, so
//! odd numbers or 64-bit nanoseconds elsewhere in a payload cannot fail a
//! parse), fields that real payloads omit are optional, and `null` is read as
//! "absent" everywhere. Fields we do read have to have the right JSON type: a
//! document where they do not is rejected as a whole (fail-static) rather than
//! half-understood.
//!
//! The rules shared by both masters live here: groups(T) (design §1) and the
//! endpoint classification.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};

use crate::config::GroupsConfig;
use crate::model::{GroupOrigin, Interned, NotEnforced, Task, TaskState, VecMap};

pub mod marathon;
pub mod mesos;

/// How a task is attached to the network, as far as enforcement is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkKind {
    /// The task shares the agent's network namespace and IP.
    Host,
    /// A NAT bridge (Docker `BRIDGE`, `mesos-bridge`): the IP is private to
    /// the agent and reused on other agents, so it cannot identify the task.
    NatBridge,
    /// An IP of its own on a container network (IP-per-task): an endpoint.
    PerTask,
    /// No network at all (Docker `NONE`), or not decidable yet.
    Unknown,
}

/// Why `kind`/`state`/`ips` do not make an endpoint (`None` = endpoint).
/// A terminal state wins over everything: its IPs may already be reused.
pub fn classify(kind: NetworkKind, state: &TaskState, has_ips: bool) -> Option<NotEnforced> {
    if state.is_terminal() {
        return Some(NotEnforced::Terminal);
    }
    match kind {
        NetworkKind::Host => Some(NotEnforced::HostNetwork),
        NetworkKind::NatBridge => Some(NotEnforced::NatBridge),
        NetworkKind::PerTask if has_ips => None,
        NetworkKind::PerTask | NetworkKind::Unknown => Some(NotEnforced::NoAddress),
    }
}

/// A task with nothing but its identity; the converters fill in the rest.
/// The agent id is interned: an agent runs many tasks.
pub(crate) fn new_task(id: &str, app: Arc<str>, agent: Option<&str>, state: TaskState) -> Task {
    Task {
        id: id.into(),
        app,
        agent: agent.map(Interned::new),
        state,
        ips: Default::default(),
        groups: Default::default(),
        labels: Default::default(),
        discovery_ports: Default::default(),
        not_enforced: None,
        note: None,
    }
}

/// The entries of a comma-separated group label value: trimmed, empty ones
/// dropped, otherwise verbatim (any string is a valid group name).
pub fn split_group_label(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|g| !g.is_empty())
}

/// Everything groups(T) is computed from, already pulled out of one task's
/// wire form. Labels are `(key, value)` pairs so both masters' label shapes fit.
#[derive(Debug, Default)]
pub(crate) struct GroupInputs<'a> {
    /// Plain group lists with where they came from (Mesos
    /// `network_infos[].groups`, Marathon `ipAddress.groups`).
    pub lists: Vec<(&'a str, GroupOrigin)>,
    /// Labels of the task's NetworkInfos.
    pub network_labels: Vec<(&'a str, &'a str)>,
    /// Labels of the task (Mesos) or app (Marathon).
    pub task_labels: Vec<(&'a str, &'a str)>,
}

/// groups(T), design §1: the union of the NetworkInfo group lists and the
/// `label_key` label of the NetworkInfos or, only when no NetworkInfo label
/// carries the key at all, of the task. A NetworkInfo label that is present
/// but empty still wins: whoever set it on the network meant "no groups here".
pub(crate) fn assign_groups(task: &mut Task, inputs: &GroupInputs<'_>, config: &GroupsConfig) {
    for (group, origin) in &inputs.lists {
        let group = group.trim();
        if !group.is_empty() {
            task.add_group(group, *origin);
        }
    }
    let key = config.label_key.as_str();
    let mut network_carries_key = false;
    for (k, v) in &inputs.network_labels {
        if *k == key {
            network_carries_key = true;
            for group in split_group_label(v) {
                task.add_group(group, GroupOrigin::NetworkLabel);
            }
        }
    }
    if network_carries_key {
        return;
    }
    for (k, v) in &inputs.task_labels {
        if *k == key {
            for group in split_group_label(v) {
                task.add_group(group, GroupOrigin::TaskLabel);
            }
        }
    }
}

/// An IP as the masters write it. Unparseable strings are reported by the
/// caller (in `Task::note`), never guessed at.
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

/// Collects diagnostics for `Task::note`, deduplicated and in order.
#[derive(Debug, Default)]
pub(crate) struct Notes(Vec<String>);

impl Notes {
    pub fn push(&mut self, note: String) {
        if !self.0.contains(&note) {
            self.0.push(note);
        }
    }

    pub fn into_note(self) -> Option<Box<str>> {
        if self.0.is_empty() {
            None
        } else {
            Some(self.0.join("; ").into())
        }
    }
}

/// Labels as a map for `Task::labels`; with repeated keys the last one wins
/// (the labels are informational; groups use every occurrence).
pub(crate) fn label_map<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> VecMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `#[serde(deserialize_with)]` helper: `null` reads as the default value,
/// because both masters write `null` and "absent" interchangeably.
pub(crate) fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// A port number as written in discovery info: any JSON number, kept only when
/// it is a valid non-zero port (0 means "assign one", not a real port).
pub(crate) fn port_number(number: &serde_json::Number) -> Option<u16> {
    number
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskState;

    fn task() -> Task {
        new_task("t1", "/app".into(), None, TaskState::Running)
    }

    #[test]
    fn group_label_is_split_on_commas_trimmed_and_empty_entries_dropped() {
        let groups: Vec<&str> = split_group_label(" a, b ,,c ,  ,").collect();
        assert_eq!(groups, vec!["a", "b", "c"]);
        assert_eq!(split_group_label("").count(), 0);
        assert_eq!(split_group_label(" , ").count(), 0);
    }

    #[test]
    fn network_label_wins_over_task_label_even_when_empty() {
        let config = GroupsConfig::default();
        let mut t = task();
        let inputs = GroupInputs {
            lists: vec![],
            network_labels: vec![("network-groups", "")],
            task_labels: vec![("network-groups", "web")],
        };
        assign_groups(&mut t, &inputs, &config);
        assert!(t.groups.is_empty(), "{:?}", t.groups);
    }

    #[test]
    fn task_label_is_used_when_no_network_label_has_the_key() {
        let config = GroupsConfig::default();
        let mut t = task();
        let inputs = GroupInputs {
            lists: vec![
                (" dev ", GroupOrigin::NetworkInfo),
                ("", GroupOrigin::NetworkInfo),
            ],
            network_labels: vec![("other", "x")],
            task_labels: vec![("network-groups", "web, db")],
        };
        assign_groups(&mut t, &inputs, &config);
        let names: Vec<&str> = t.groups.keys().map(|g| g.as_str()).collect();
        assert_eq!(names, vec!["db", "dev", "web"]);
        assert!(t.groups["dev"].contains(&GroupOrigin::NetworkInfo));
        assert!(t.groups["web"].contains(&GroupOrigin::TaskLabel));
    }

    #[test]
    fn same_group_from_two_origins_keeps_both_origins() {
        let config = GroupsConfig::default();
        let mut t = task();
        let inputs = GroupInputs {
            lists: vec![("dev", GroupOrigin::AppVersion)],
            network_labels: vec![("network-groups", "dev")],
            task_labels: vec![],
        };
        assign_groups(&mut t, &inputs, &config);
        assert_eq!(t.groups["dev"].len(), 2);
    }

    #[test]
    fn odd_group_names_are_kept_verbatim() {
        let config = GroupsConfig::default();
        let mut t = task();
        let long = "x".repeat(10_000);
        let odd = ["\"quoted\"", "semi;colon", "} ; drop table", long.as_str()];
        let inputs = GroupInputs {
            lists: odd.iter().map(|g| (*g, GroupOrigin::NetworkInfo)).collect(),
            ..Default::default()
        };
        assign_groups(&mut t, &inputs, &config);
        for g in odd {
            assert!(t.groups.contains_key(g), "{g:?} missing");
        }
    }

    #[test]
    fn terminal_state_wins_over_network_kind() {
        let state = TaskState::Killed;
        assert_eq!(
            classify(NetworkKind::PerTask, &state, true),
            Some(NotEnforced::Terminal)
        );
        assert_eq!(
            classify(NetworkKind::Host, &state, true),
            Some(NotEnforced::Terminal)
        );
    }

    #[test]
    fn per_task_network_without_ips_has_no_address() {
        let running = TaskState::Running;
        assert_eq!(
            classify(NetworkKind::PerTask, &running, false),
            Some(NotEnforced::NoAddress)
        );
        assert_eq!(classify(NetworkKind::PerTask, &running, true), None);
        assert_eq!(
            classify(NetworkKind::NatBridge, &running, true),
            Some(NotEnforced::NatBridge)
        );
        assert_eq!(
            classify(NetworkKind::Unknown, &running, true),
            Some(NotEnforced::NoAddress)
        );
    }

    #[test]
    fn port_numbers_outside_1_to_65535_are_dropped() {
        let n = |s: &str| serde_json::from_str::<serde_json::Number>(s).expect("number");
        assert_eq!(port_number(&n("8080")), Some(8080));
        assert_eq!(port_number(&n("0")), None);
        assert_eq!(port_number(&n("65536")), None);
        assert_eq!(port_number(&n("-1")), None);
        assert_eq!(port_number(&n("80.5")), None);
    }
}
