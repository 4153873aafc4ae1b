//! One log line per change of what groupd enforces for a task of this
//! agent, naming the task and its app, so "when and why did task X lose
//! access?" can be answered from the journal:
//!
//! * `task enforced` (interfaces, IPs, groups), again when any of them changes;
//! * `task groups changed` (old -> new);
//! * `task removed` (gone from the master's view);
//! * `task not enforced` with the reason (terminal, no IP, host networking,
//!   or its IPs no longer on an interface of this agent).
//!
//! Only tasks bound to this agent's interfaces are followed: every agent
//! logging every task of the cluster would drown the lines that matter. The
//! daemon calls [`TaskLog::observe`] before each apply; the cost is in the
//! number of local tasks, not the cluster's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::binding::Bindings;
use crate::compile::effective_groups;
use crate::model::TaskId;
use crate::state::DesiredState;

/// What a local task was last logged as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Enforced {
    app: Arc<str>,
    interfaces: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
    groups: BTreeSet<String>,
}

/// One change to log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Enforced(TaskId, Enforced),
    GroupsChanged {
        task: TaskId,
        app: Arc<str>,
        old: BTreeSet<String>,
        new: BTreeSet<String>,
    },
    Removed(TaskId, Arc<str>),
    NotEnforced {
        task: TaskId,
        app: Arc<str>,
        reason: &'static str,
    },
}

/// The local tasks as last logged.
#[derive(Debug, Default)]
pub struct TaskLog {
    last: HashMap<TaskId, Enforced>,
}

impl TaskLog {
    /// Log what changed for local tasks since the last call.
    pub fn observe(&mut self, state: &DesiredState, bindings: &Bindings) {
        let bound = bindings
            .interfaces
            .values()
            .flat_map(|i| i.ips.iter().map(move |ip| (i.name.as_str(), *ip)));
        for event in self.changes(state, bound) {
            log(&event);
        }
    }

    /// The events since the last call, given the (interface, IP) pairs
    /// bound on this agent; remembers the new state.
    fn changes<'a>(
        &mut self,
        state: &DesiredState,
        bound: impl Iterator<Item = (&'a str, IpAddr)>,
    ) -> Vec<Event> {
        let view = state.view();
        let mut now: BTreeMap<TaskId, Enforced> = BTreeMap::new();
        for (iface, ip) in bound {
            let Some(task) = state.owner_of(&ip).and_then(|id| view.tasks.get(id)) else {
                continue;
            };
            if !task.is_endpoint() {
                continue;
            }
            let entry = now.entry(task.id.clone()).or_insert_with(|| Enforced {
                app: task.app.clone(),
                interfaces: BTreeSet::new(),
                ips: BTreeSet::new(),
                groups: effective_groups(task, state.policy())
                    .iter()
                    .map(|g| g.to_string())
                    .collect(),
            });
            entry.interfaces.insert(iface.to_string());
            entry.ips.insert(ip);
        }
        let mut events = Vec::new();
        for (id, before) in &self.last {
            if now.contains_key(id) {
                continue;
            }
            events.push(match view.tasks.get(id) {
                None => Event::Removed(id.clone(), before.app.clone()),
                Some(task) => Event::NotEnforced {
                    task: id.clone(),
                    app: task.app.clone(),
                    reason: match &task.not_enforced {
                        Some(n) => crate::status::reason(n),
                        None if task.state.is_terminal() => "terminal state",
                        None if task.ips.is_empty() => "no IP yet",
                        None => "its IPs are not on an interface of this agent any more",
                    },
                },
            });
        }
        for (id, current) in &now {
            match self.last.get(id) {
                Some(before) if before == current => {}
                Some(before) if before.groups != current.groups => {
                    events.push(Event::GroupsChanged {
                        task: id.clone(),
                        app: current.app.clone(),
                        old: before.groups.clone(),
                        new: current.groups.clone(),
                    });
                    if before.interfaces != current.interfaces || before.ips != current.ips {
                        events.push(Event::Enforced(id.clone(), current.clone()));
                    }
                }
                _ => events.push(Event::Enforced(id.clone(), current.clone())),
            }
        }
        self.last = now.into_iter().collect();
        events
    }
}

fn log(event: &Event) {
    let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
    match event {
        Event::Enforced(task, e) => tracing::info!(
            task = %task,
            app = %e.app,
            interfaces = %list(&e.interfaces),
            ips = %e.ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(","),
            groups = %list(&e.groups),
            "task enforced"
        ),
        Event::GroupsChanged {
            task,
            app,
            old,
            new,
        } => tracing::info!(
            task = %task,
            app = %app,
            old = %list(old),
            new = %list(new),
            "task groups changed"
        ),
        Event::Removed(task, app) => tracing::info!(task = %task, app = %app, "task removed"),
        Event::NotEnforced { task, app, reason } => {
            tracing::info!(task = %task, app = %app, reason, "task not enforced")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{LocalBinding, Policy};
    use crate::config::Config;
    use crate::model::{ClusterView, NotEnforced, Task, TaskState};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn state_with(tasks: Vec<Task>, bound: &[(&str, &str)]) -> DesiredState {
        let config =
            Config::parse("[source]\nkind = \"file\"\npath = \"/x.json\"\n").expect("config");
        let mut state = DesiredState::new(Policy::from_config(&config));
        let mut view = ClusterView::default();
        for t in tasks {
            view.insert(t);
        }
        state.set_view(view);
        let map = bound
            .iter()
            .map(|(iface, a)| {
                (
                    ip(a),
                    LocalBinding {
                        iface: iface.to_string(),
                        ip: ip(a),
                        bridge: None,
                    },
                )
            })
            .collect();
        state.set_bindings(map, BTreeSet::new(), BTreeSet::new());
        state
    }

    fn changes(log: &mut TaskLog, state: &DesiredState, bound: &[(&str, &str)]) -> Vec<Event> {
        log.changes(state, bound.iter().map(|(i, a)| (*i, ip(a))))
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn enforced_changed_and_removed() {
        let bound = [("veth1", "10.233.1.2")];
        let mut log = TaskLog::default();
        let web = |groups: &[&str]| Task::running("web.1", "/web", [ip("10.233.1.2")], groups);
        let remote = Task::running("db.1", "/db", [ip("10.233.9.9")], &["db"]);

        let s = state_with(vec![web(&["a"]), remote.clone()], &bound);
        let events = changes(&mut log, &s, &bound);
        assert_eq!(
            events,
            [Event::Enforced(
                "web.1".into(),
                Enforced {
                    app: "/web".into(),
                    interfaces: set(&["veth1"]),
                    ips: [ip("10.233.1.2")].into(),
                    groups: set(&["a"]),
                }
            )],
            "only the local task"
        );
        // Nothing changed: nothing logged.
        assert!(changes(&mut log, &s, &bound).is_empty());

        let s = state_with(vec![web(&["a", "b"]), remote.clone()], &bound);
        assert_eq!(
            changes(&mut log, &s, &bound),
            [Event::GroupsChanged {
                task: "web.1".into(),
                app: "/web".into(),
                old: set(&["a"]),
                new: set(&["a", "b"]),
            }]
        );

        let s = state_with(vec![remote], &bound);
        assert_eq!(
            changes(&mut log, &s, &bound),
            [Event::Removed("web.1".into(), "/web".into())]
        );
        assert!(changes(&mut log, &s, &bound).is_empty());
    }

    #[test]
    fn not_enforced_says_why() {
        let bound = [("veth1", "10.233.1.2")];
        let mut log = TaskLog::default();
        let t = Task::running("web.1", "/web", [ip("10.233.1.2")], &["a"]);
        let s = state_with(vec![t.clone()], &bound);
        assert_eq!(changes(&mut log, &s, &bound).len(), 1);

        let mut killed = t.clone();
        killed.state = TaskState::parse("TASK_KILLED");
        let s = state_with(vec![killed], &bound);
        assert_eq!(
            changes(&mut log, &s, &bound),
            [Event::NotEnforced {
                task: "web.1".into(),
                app: "/web".into(),
                reason: "terminal state",
            }]
        );

        // Back, then host networking.
        let s = state_with(vec![t.clone()], &bound);
        assert_eq!(changes(&mut log, &s, &bound).len(), 1);
        let mut host = t.clone();
        host.not_enforced = Some(NotEnforced::HostNetwork);
        let s = state_with(vec![host], &bound);
        assert_eq!(
            changes(&mut log, &s, &bound),
            [Event::NotEnforced {
                task: "web.1".into(),
                app: "/web".into(),
                reason: "host networking",
            }]
        );

        // Back, then its veth is gone.
        let s = state_with(vec![t.clone()], &bound);
        assert_eq!(changes(&mut log, &s, &bound).len(), 1);
        let s = state_with(vec![t], &[]);
        assert_eq!(
            changes(&mut log, &s, &[]),
            [Event::NotEnforced {
                task: "web.1".into(),
                app: "/web".into(),
                reason: "its IPs are not on an interface of this agent any more",
            }]
        );
    }

    #[test]
    fn a_new_interface_is_logged_as_enforced_again() {
        let mut log = TaskLog::default();
        let t = Task::running(
            "web.1",
            "/web",
            [ip("10.233.1.2"), ip("fd00:233::2")],
            &["a"],
        );
        let one = [("veth1", "10.233.1.2")];
        let s = state_with(vec![t.clone()], &one);
        assert_eq!(changes(&mut log, &s, &one).len(), 1);
        let two = [("veth1", "10.233.1.2"), ("veth1", "fd00:233::2")];
        let s = state_with(vec![t], &two);
        let events = changes(&mut log, &s, &two);
        assert!(
            matches!(&events[..], [Event::Enforced(id, e)] if &**id == "web.1" && e.ips.len() == 2),
            "{events:?}"
        );
    }
}
