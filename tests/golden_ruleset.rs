//! Golden ruleset tests: the text `groupctl ruleset` prints for one small,
//! fixed cluster under every combination of the policy knobs that change the
//! ruleset, compared with the files checked in under `tests/golden/`.
//!
//! The knobs: `policy.egress_non_endpoint` allow / deny (with a CIDR
//! allow-list), `policy.enforce_discovery_ports` on / off,
//! `groups.ungrouped` `"isolated"` / `"group:default"`, and bridged task
//! ports on this agent or none (all interfaces routed). 16 cases, one file
//! each, named after its knobs (`tests/golden/<case>.nft`), and one more
//! with `[drops] log` on (every knob on too: every dropping rule exists).
//!
//! The cluster: local endpoints on a routed veth (IPv4 + IPv6), on a bridge
//! port (or on a routed veth in the no-bridge cases), and one with no groups;
//! remote endpoints sharing a group with them, one in the open group
//! `public`, one with no groups, one with a hostile group name and task id;
//! a task without IPs; and a port of an ignored bridge (`docker0`).
//!
//! The text is produced the way the daemon answers `groupctl ruleset`
//! ([`groupd::status::answer`] on the desired state) and rendered as groupctl
//! renders it ([`groupd::status::ruleset_text`]); only the unix socket is
//! left out. Pure: no root, no kernel.
//!
//! After an intended change of the ruleset, regenerate the files and review
//! the diff before committing them:
//!
//! ```sh
//! GROUPD_UPDATE_GOLDEN=1 cargo test --test golden_ruleset
//! ```

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use groupd::binding::Bindings;
use groupd::compile::{LocalBinding, Policy};
use groupd::config::Config;
use groupd::daemon::Health;
use groupd::model::{ClusterView, DiscoveryPort, Protocol, Task};
use groupd::state::DesiredState;
use groupd::status::{answer, ruleset_text, Request};

/// Set to `1` to rewrite the golden files instead of comparing with them.
const UPDATE_ENV: &str = "GROUPD_UPDATE_GOLDEN";

/// Names from the master that must never show up in the ruleset text.
const HOSTILE_TASK: &str = "evil\"; flush ruleset; #.1";
const HOSTILE_GROUP: &str = "web\"; drop";

#[derive(Debug, Clone, Copy)]
struct Case {
    egress_deny: bool,
    discovery_ports: bool,
    ungrouped_default: bool,
    bridged: bool,
    /// `[drops] log = true`: a rate-limited nflog rule before each drop.
    drop_log: bool,
}

impl Case {
    fn all() -> Vec<Case> {
        let mut out = Vec::new();
        for egress_deny in [false, true] {
            for discovery_ports in [false, true] {
                for ungrouped_default in [false, true] {
                    for bridged in [false, true] {
                        out.push(Case {
                            egress_deny,
                            discovery_ports,
                            ungrouped_default,
                            bridged,
                            drop_log: false,
                        });
                    }
                }
            }
        }
        out.push(Case {
            egress_deny: true,
            discovery_ports: true,
            ungrouped_default: true,
            bridged: true,
            drop_log: true,
        });
        out
    }

    fn name(&self) -> String {
        format!(
            "egress-{}_ports-{}_ungrouped-{}_{}",
            if self.egress_deny { "deny" } else { "allow" },
            if self.discovery_ports { "on" } else { "off" },
            if self.ungrouped_default {
                "default"
            } else {
                "isolated"
            },
            if self.bridged { "bridged" } else { "routed" },
        ) + if self.drop_log { "_drops-log" } else { "" }
    }

    fn config(&self) -> String {
        let mut toml = String::from("[source]\nkind = \"file\"\npath = \"/unused\"\n");
        if self.ungrouped_default {
            toml.push_str("[groups]\nungrouped = \"group:default\"\n");
        }
        toml.push_str("[policy]\n");
        if self.egress_deny {
            toml.push_str("egress_non_endpoint = \"deny\"\n");
            toml.push_str("egress_allow = [\"10.233.200.0/24\", \"fd00:233::200:0/112\"]\n");
        }
        if self.discovery_ports {
            toml.push_str("enforce_discovery_ports = true\n");
        }
        if self.drop_log {
            toml.push_str("[drops]\nlog = true\n");
        }
        toml
    }

    fn policy(&self) -> Policy {
        let text = self.config();
        match Config::parse(&text) {
            Ok(c) => Policy::from_config(&c),
            Err(e) => panic!("case {}: config rejected: {e}\n{text}", self.name()),
        }
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse()
        .unwrap_or_else(|e| panic!("bad IP {text:?} in the test cluster: {e}"))
}

fn task(id: &str, app: &str, ips: &[&str], groups: &[&str]) -> Task {
    Task::running(id, app, ips.iter().map(|i| ip(i)), groups)
}

fn port(number: u16, protocol: Protocol) -> DiscoveryPort {
    DiscoveryPort {
        number,
        protocol,
        name: None,
    }
}

/// The fixed cluster. `reversed` inserts the same tasks in the opposite
/// order (the output must not depend on it).
fn cluster(reversed: bool) -> ClusterView {
    let mut db2 = task("db.2", "/db", &["10.233.1.3"], &["db"]);
    db2.discovery_ports.insert(port(5432, Protocol::Tcp));
    let mut pub1 = task("lb.1", "/lb", &["10.233.2.3", "fd00:233::2:3"], &["public"]);
    pub1.discovery_ports.insert(port(80, Protocol::Tcp));
    pub1.discovery_ports.insert(port(53, Protocol::Udp));
    let mut cache1 = task("cache.1", "/cache", &["10.233.2.5"], &["cache", "web"]);
    cache1.discovery_ports.insert(port(11211, Protocol::Udp));
    let tasks = vec![
        // Local, routed, dual stack, in two groups.
        task(
            "web.1",
            "/web",
            &["10.233.1.2", "fd00:233::1:2"],
            &["web", "db"],
        ),
        // Local, on a bridge port (routed in the no-bridge cases).
        db2,
        // Local, no groups (R3).
        task("lonely.1", "/lonely", &["10.233.1.4"], &[]),
        // Remote peers.
        task("db.1", "/db", &["10.233.2.2"], &["db"]),
        cache1,
        pub1,
        task("batch.1", "/batch", &["10.233.2.4"], &[]),
        task(
            HOSTILE_TASK,
            "/evil",
            &["10.233.2.6"],
            &[HOSTILE_GROUP, "web"],
        ),
        // Not an endpoint: no IP yet.
        task("web.2", "/web", &[], &["web"]),
    ];
    let mut view = ClusterView::default();
    let ordered: Box<dyn Iterator<Item = Task>> = if reversed {
        Box::new(tasks.into_iter().rev())
    } else {
        Box::new(tasks.into_iter())
    };
    for t in ordered {
        view.insert(t);
    }
    view
}

fn binding(address: &str, iface: &str, bridge: Option<&str>) -> (IpAddr, LocalBinding) {
    let ip = ip(address);
    (
        ip,
        LocalBinding {
            iface: iface.into(),
            ip,
            bridge: bridge.map(str::to_string),
        },
    )
}

/// The desired state of the agent for `case`, built like the daemon builds
/// it: view first, then the interface bindings.
fn desired(case: Case, reversed: bool) -> DesiredState {
    let mut state = DesiredState::new(case.policy());
    let conflicts = state.set_view(cluster(reversed));
    assert!(
        conflicts.is_empty(),
        "the test cluster has no IP conflicts: {conflicts:?}"
    );
    let bridge = case.bridged.then_some("br-tasks");
    let mut list = vec![
        binding("10.233.1.2", "veth-web1", None),
        binding("fd00:233::1:2", "veth-web1", None),
        binding("10.233.1.3", "veth-db2", bridge),
        binding("10.233.1.4", "veth-lonely1", None),
    ];
    if reversed {
        list.reverse();
    }
    let bindings: HashMap<IpAddr, LocalBinding> = list.into_iter().collect();
    let bridges: BTreeSet<String> = bridge.into_iter().map(str::to_string).collect();
    let ignored: BTreeSet<String> = case
        .bridged
        .then(|| "veth-dock1".to_string())
        .into_iter()
        .collect();
    state.set_bindings(bindings, bridges, ignored);
    state
}

/// What `groupctl ruleset` prints for `state` (before println's newline).
fn render(state: &DesiredState) -> String {
    let reply = answer(
        &Request::Ruleset,
        state,
        &Bindings::default(),
        &Health::default(),
        &HashMap::new(),
    );
    ruleset_text(&reply)
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn updating() -> bool {
    std::env::var(UPDATE_ENV).is_ok_and(|v| v == "1")
}

/// The first line where `want` and `got` differ, for the failure message.
fn first_difference(want: &str, got: &str) -> String {
    let (mut w, mut g) = (want.lines(), got.lines());
    for n in 1.. {
        match (w.next(), g.next()) {
            (None, None) => break,
            (a, b) if a == b => continue,
            (a, b) => {
                return format!(
                    "line {n}:\n  golden: {}\n  now:    {}",
                    a.unwrap_or("<end of file>"),
                    b.unwrap_or("<end of text>")
                )
            }
        }
    }
    "only in the trailing newline".into()
}

#[test]
fn ruleset_text_matches_the_golden_files() {
    let dir = golden_dir();
    let update = updating();
    if update {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {e}", dir.display());
        }
    }
    let mut failures = Vec::new();
    let mut expected_files = BTreeSet::new();
    for case in Case::all() {
        let file = format!("{}.nft", case.name());
        let path = dir.join(&file);
        expected_files.insert(file.clone());
        let got = render(&desired(case, false));
        if update {
            if let Err(e) = std::fs::write(&path, &got) {
                panic!("cannot write {}: {e}", path.display());
            }
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == got => {}
            Ok(want) => failures.push(format!("{file} differs, {}", first_difference(&want, &got))),
            Err(e) => failures.push(format!("{file}: cannot read it ({e})")),
        }
    }
    // Files no case produces any more would rot unnoticed.
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".nft"))
                .collect()
        })
        .unwrap_or_default();
    for stale in present.difference(&expected_files) {
        if update {
            if let Err(e) = std::fs::remove_file(dir.join(stale)) {
                panic!("cannot remove stale {stale}: {e}");
            }
        } else {
            failures.push(format!("{stale}: no case produces it any more"));
        }
    }
    assert!(
        failures.is_empty(),
        "the ruleset differs from tests/golden/ ({} problem(s)):\n{}\n\
         If the change is intended, run `{UPDATE_ENV}=1 cargo test --test golden_ruleset` \
         and review `git diff tests/golden/`.",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn ruleset_text_does_not_depend_on_insertion_order() {
    for case in Case::all() {
        let a = render(&desired(case, false));
        let b = render(&desired(case, true));
        assert!(
            a == b,
            "case {}: the text depends on the order tasks and bindings were inserted, {}",
            case.name(),
            first_difference(&a, &b)
        );
    }
}

#[test]
fn names_from_the_master_never_reach_the_ruleset_text() {
    for case in Case::all() {
        let text = render(&desired(case, false));
        for name in [HOSTILE_TASK, HOSTILE_GROUP, "flush ruleset", "drop\""] {
            assert!(
                !text.contains(name),
                "case {}: {name:?} from the master appears in the ruleset",
                case.name()
            );
        }
        // The hostile task is still enforced: its address is an endpoint.
        assert!(
            text.contains("10.233.2.6"),
            "case {}: the hostile task's address is missing",
            case.name()
        );
    }
}

#[test]
fn the_knobs_change_the_ruleset_where_they_should() {
    let base = Case {
        egress_deny: false,
        discovery_ports: false,
        ungrouped_default: false,
        bridged: false,
        drop_log: false,
    };
    let text = |c: Case| render(&desired(c, false));
    let plain = text(base);
    let deny = text(Case {
        egress_deny: true,
        ..base
    });
    assert!(!plain.contains("10.233.200.0/24") && deny.contains("10.233.200.0/24"));
    let gated = text(Case {
        discovery_ports: true,
        ..base
    });
    assert!(!plain.contains("5432") && gated.contains("5432"));
    let bridged = text(Case {
        bridged: true,
        ..base
    });
    assert!(!plain.contains("\"br-tasks\"") && bridged.contains("\"br-tasks\""));
    assert!(bridged.contains("\"veth-dock1\""));
    // lonely.1 (10.233.1.4) and batch.1 (10.233.2.4) have no groups: only
    // `group:default` pairs them.
    let pair = "\"veth-lonely1\" . 10.233.1.4 . 10.233.2.4";
    let default = text(Case {
        ungrouped_default: true,
        ..base
    });
    assert!(!plain.contains(pair) && default.contains(pair));
    let logged = text(Case {
        drop_log: true,
        ..base
    });
    assert!(!plain.contains(" log ") && logged.contains("log prefix \"gd-r1-egress\" group 4290"));
}
