//! Serde models of what the masters serve, and the rules that turn one task
//! of either master into a [`Task`].
//!
//! The models are tolerant: unknown fields are ignored (never deserialized, so
//! odd numbers or 64-bit nanoseconds elsewhere in a payload cannot fail a
//! parse), fields that real payloads omit are optional, and `null` is read as
//! "absent" everywhere. Fields we do read have to have the right JSON type: a
//! document where they do not is rejected as a whole (fail-static) rather than
//! half-understood.
//!
//! The rules shared by both masters live here: groups(T) (docs/design.md §1) and the
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
        invalid: None,
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

/// groups(T), docs/design.md §1: the union of the NetworkInfo group lists and the
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
/// caller ([`unparseable_ip`]), never guessed at.
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

/// Why a task whose IP list holds `text` (which [`parse_ip`] refused) is
/// rejected. A task with an IP groupd cannot read is garbage as a whole:
/// enforcing its other IPs alone would guess at what the master meant.
pub(crate) fn unparseable_ip(text: &str) -> String {
    format!("unparseable IP {}", excerpt(text))
}

/// Why each group name of `inputs`, and each label that carries groups
/// (`groups.label_key`), that is longer than the configured maximum makes
/// the task's data unusable (empty if none is). Checked before anything is
/// interned or copied, so an over-long string is never kept;
/// [`assign_groups`] must only be called when this is empty. Other labels
/// are informational: an over-long one is only left out ([`kept_labels`]),
/// since real payloads carry big ones (DC/OS puts a 9 KB package definition
/// in a task label).
pub(crate) fn check_lengths(inputs: &GroupInputs<'_>, config: &GroupsConfig) -> Notes {
    let mut problems = Notes::default();
    for (name, _) in &inputs.lists {
        if let Some(problem) = check_name(name, config) {
            problems.push(problem);
        }
    }
    let group_labels = inputs
        .network_labels
        .iter()
        .chain(&inputs.task_labels)
        .filter(|(key, _)| *key == config.label_key);
    for (key, value) in group_labels {
        if value.len() > config.max_label_len {
            problems.push(format!(
                "label {} is {} bytes, longer than groups.max_label_len = {}",
                excerpt(key),
                value.len(),
                config.max_label_len
            ));
            continue;
        }
        for name in split_group_label(value) {
            if let Some(problem) = check_name(name, config) {
                problems.push(problem);
            }
        }
    }
    problems
}

/// Why `name` is too long to be a group name, if it is.
pub(crate) fn check_name(name: &str, config: &GroupsConfig) -> Option<String> {
    let name = name.trim();
    (name.len() > config.max_name_len).then(|| {
        format!(
            "group name {} is {} bytes, longer than groups.max_name_len = {}",
            excerpt(name),
            name.len(),
            config.max_name_len
        )
    })
}

/// The labels of `pairs` short enough to keep (key and value at most
/// `groups.max_label_len` bytes each), copied; each one left out is noted.
pub(crate) fn kept_labels<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    config: &GroupsConfig,
    notes: &mut Notes,
) -> Vec<(String, String)> {
    let max = config.max_label_len;
    pairs
        .into_iter()
        .filter(|(key, value)| {
            let fits = key.len() <= max && value.len() <= max;
            if !fits {
                notes.push(format!(
                    "label {} not kept: {} bytes, longer than groups.max_label_len = {max}",
                    excerpt(key),
                    key.len().max(value.len())
                ));
            }
            fits
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `text` quoted for a log line or `groupctl show`, cut after a few dozen
/// characters (the text is from the master and may be megabytes).
fn excerpt(text: &str) -> String {
    const SHOWN: usize = 40;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}…", text.get(..cut).unwrap_or_default()),
        None => format!("{text:?}"),
    }
}

/// Reject what the master said about `task` for `problems` (not empty):
/// nothing of its data is kept, and the state keeps its last good data if
/// it has any (`DesiredState::upsert_task`). A terminal task stays terminal:
/// its IPs may already be another task's.
pub(crate) fn reject(task: &mut Task, problems: Notes) {
    let Some(reasons) = problems.into_note() else {
        return;
    };
    task.ips = Default::default();
    task.groups = Default::default();
    task.labels = Default::default();
    task.discovery_ports = Default::default();
    task.not_enforced = Some(if task.state.is_terminal() {
        NotEnforced::Terminal
    } else {
        NotEnforced::Invalid
    });
    task.invalid = Some(reasons);
}

/// Collects diagnostics for `Task::note` (and reasons for `Task::invalid`),
/// deduplicated and in order. At most [`Notes::KEPT`] are kept and the rest
/// only counted: a task with a million bad addresses costs neither a
/// megabyte note nor a quadratic deduplication.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    notes: Vec<String>,
    more: usize,
}

impl Notes {
    const KEPT: usize = 8;

    pub fn push(&mut self, note: String) {
        if self.notes.contains(&note) {
            return;
        }
        if self.notes.len() < Self::KEPT {
            self.notes.push(note);
        } else {
            self.more += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.notes.is_empty()
    }

    /// Appends every note of `other`.
    pub fn extend(&mut self, other: Notes) {
        for note in other.notes {
            self.push(note);
        }
        self.more += other.more;
    }

    pub fn into_note(self) -> Option<Box<str>> {
        if self.notes.is_empty() {
            return None;
        }
        let mut text = self.notes.join("; ");
        if self.more > 0 {
            text.push_str(&format!("; {} more not shown", self.more));
        }
        Some(text.into())
    }
}

/// Labels as a map for `Task::labels`; with repeated keys the last one wins
/// (the labels are informational; groups use every occurrence). Over-long
/// ones are left out, with a note ([`kept_labels`]).
pub(crate) fn label_map<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    config: &GroupsConfig,
    notes: &mut Notes,
) -> VecMap<String, String> {
    kept_labels(pairs, config, notes).into_iter().collect()
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
    fn lengths_are_checked_against_the_configured_caps() {
        let config = GroupsConfig {
            max_name_len: 4,
            max_label_len: 8,
            label_key: "ng".into(),
            ..GroupsConfig::default()
        };
        let ok = GroupInputs {
            lists: vec![(" abcd ", GroupOrigin::NetworkInfo)],
            network_labels: vec![("ng", "abcd,ef")],
            // Only labels that carry groups are checked.
            task_labels: vec![("other", "a,abcde, and more than 8 bytes")],
        };
        assert!(check_lengths(&ok, &config).is_empty());
        let long_name = GroupInputs {
            lists: vec![("abcde", GroupOrigin::NetworkInfo)],
            ..Default::default()
        };
        let long_in_label = GroupInputs {
            task_labels: vec![("ng", "a,abcde")],
            ..Default::default()
        };
        let long_label = GroupInputs {
            network_labels: vec![("ng", "a,b,c,d,e")],
            ..Default::default()
        };
        let reason = |inputs: &GroupInputs<'_>| check_lengths(inputs, &config).into_note();
        assert_eq!(
            reason(&long_name).as_deref(),
            Some("group name \"abcde\" is 5 bytes, longer than groups.max_name_len = 4")
        );
        assert_eq!(reason(&long_in_label), reason(&long_name));
        assert_eq!(
            reason(&long_label).as_deref(),
            Some("label \"ng\" is 9 bytes, longer than groups.max_label_len = 8")
        );
        // A long string is quoted by its first 40 characters only.
        let long = format!("{}\u{fc}", "y".repeat(60));
        let why = check_name(&long, &config).unwrap_or_default();
        assert!(
            why.starts_with(&format!("group name \"{}\"…", "y".repeat(40))),
            "{why}"
        );
        assert_eq!(unparseable_ip("not-an-ip"), "unparseable IP \"not-an-ip\"");
    }

    #[test]
    fn over_long_informational_labels_are_left_out_with_a_note() {
        let config = GroupsConfig {
            max_label_len: 8,
            ..GroupsConfig::default()
        };
        let mut notes = Notes::default();
        let labels = label_map(
            [("k", "12345678"), ("v", "123456789"), ("123456789", "v")],
            &config,
            &mut notes,
        );
        assert_eq!(labels.len(), 1);
        assert_eq!(labels.get("k").map(String::as_str), Some("12345678"));
        assert_eq!(
            notes.into_note().as_deref(),
            Some("label \"v\" not kept: 9 bytes, longer than groups.max_label_len = 8; label \"123456789\" not kept: 9 bytes, longer than groups.max_label_len = 8")
        );
    }

    #[test]
    fn notes_are_deduplicated_and_bounded() {
        let mut notes = Notes::default();
        for i in 0..100_000 {
            notes.push(unparseable_ip(&format!("bad-{}", i % 50_000)));
        }
        let text = notes.into_note().unwrap_or_default();
        assert!(text.starts_with("unparseable IP \"bad-0\"; unparseable IP \"bad-1\""));
        // 8 kept; the rest counted (without memory of them, a repeat after
        // the first 8 cannot be told apart: counted too).
        assert!(text.ends_with("; 99984 more not shown"), "{text}");
        assert!(text.len() < 300);
    }

    #[test]
    fn a_rejected_task_keeps_nothing_and_a_terminal_one_stays_terminal() {
        let mut t = Task::running("t", "/a", ["10.233.0.1".parse().expect("ip")], &["g"]);
        t.labels.insert("k".into(), "v".into());
        reject(&mut t, Notes::default());
        assert_eq!(
            (t.ips.len(), t.invalid.as_deref()),
            (1, None),
            "no problem, no change"
        );
        let mut problems = Notes::default();
        problems.push(unparseable_ip("x"));
        problems.push(unparseable_ip("y"));
        reject(&mut t, problems);
        assert!(t.ips.is_empty() && t.groups.is_empty() && t.labels.is_empty());
        assert_eq!(t.not_enforced, Some(NotEnforced::Invalid));
        assert_eq!(
            t.invalid.as_deref(),
            Some("unparseable IP \"x\"; unparseable IP \"y\"")
        );
        let mut killed = task();
        killed.state = TaskState::Killed;
        let mut problems = Notes::default();
        problems.push(unparseable_ip("x"));
        reject(&mut killed, problems);
        assert_eq!(killed.not_enforced, Some(NotEnforced::Terminal));
    }

    #[test]
    fn odd_group_names_are_kept_verbatim() {
        // The caps are checked before (`check_lengths`): not here.
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
