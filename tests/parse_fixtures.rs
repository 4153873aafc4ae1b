//! The master document parsers against every real payload in
//! `tests/fixtures/` (see `tests/fixtures/SOURCES.md`), bad input of every
//! kind, and the `file` source watching a real file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use groupd::config::GroupsConfig;
use groupd::model::{
    ClusterView, GroupName, GroupOrigin, NotEnforced, OriginSet, Protocol, Task, TaskState,
};
use groupd::source::document::{parse_document, parse_document_kind, DocumentError, DocumentKind};
use groupd::source::wire::marathon::{self, App, AppGroup, MarathonTask, VersionCache};
use groupd::source::wire::mesos::{self, Context, MesosTask, NetworkInfo, V1Message};
use groupd::source::wire::NetworkKind;
use groupd::source::SourceUpdate;
use serde::Deserialize;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------- helpers

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(rel: &str) -> Vec<u8> {
    let path = fixtures_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_text(rel: &str) -> String {
    String::from_utf8(fixture(rel)).expect("fixture is UTF-8")
}

fn parse(bytes: &[u8]) -> Result<ClusterView, DocumentError> {
    parse_document(
        bytes,
        &GroupsConfig::default(),
        &mut VersionCache::default(),
    )
}

fn parse_ok(rel: &str) -> ClusterView {
    parse(&fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn with_label_key(key: &str) -> GroupsConfig {
    GroupsConfig {
        label_key: key.into(),
        ..GroupsConfig::default()
    }
}

fn ips(task: &Task) -> Vec<String> {
    task.ips.iter().map(IpAddr::to_string).collect()
}

fn group_names(task: &Task) -> Vec<&str> {
    task.groups.keys().map(|g| g.as_str()).collect()
}

fn only_task(view: &ClusterView) -> &Task {
    assert_eq!(view.tasks.len(), 1, "{:?}", view.tasks.keys());
    view.tasks.values().next().expect("one task")
}

fn task_starting<'a>(view: &'a ClusterView, prefix: &str) -> &'a Task {
    view.tasks
        .values()
        .find(|t| t.id.starts_with(prefix))
        .unwrap_or_else(|| panic!("no task {prefix}"))
}

fn app_fixture(rel: &str) -> App {
    serde_json::from_slice(&fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every file under tests/fixtures/{marathon,mesos}, relative, sorted.
fn all_fixture_files() -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if let Ok(rel) = path.strip_prefix(base) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let base = fixtures_dir();
    let mut out = Vec::new();
    for top in ["marathon", "mesos"] {
        walk(&base.join(top), &base, &mut out);
    }
    out.sort();
    out
}

/// The non-empty lines of an NDJSON capture.
fn ndjson_lines(rel: &str) -> Vec<String> {
    fixture_text(rel)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The JSON body of the "... Response (JSON):" block of a docs excerpt.
fn docs_response_json(text: &str) -> String {
    let after = text
        .split_once("Response (JSON):")
        .map(|(_, rest)| rest)
        .expect("response block");
    let body: Vec<&str> = after
        .lines()
        .skip_while(|l| !l.starts_with('{'))
        .take_while(|l| !l.starts_with("```"))
        .collect();
    body.join("\n")
}

/// The JSON bodies after each `<event-length>` line of the events docs.
fn docs_event_blocks(text: &str) -> Vec<String> {
    text.split("<event-length>")
        .skip(1)
        .map(|block| {
            block
                .lines()
                .take_while(|l| !l.starts_with("```"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .map(|b| b.trim().to_string())
        .filter(|b| b.starts_with('{'))
        .collect()
}

/// A Mesos agent's `/state` (docs/FORMATS.md §6): not a document groupd accepts,
/// but its tasks are the task JSON of docs/FORMATS.md §4.
#[derive(Deserialize)]
struct AgentState {
    #[serde(default)]
    frameworks: Vec<AgentFramework>,
}

#[derive(Deserialize)]
struct AgentFramework {
    #[serde(default)]
    executors: Vec<AgentExecutor>,
}

#[derive(Deserialize)]
struct AgentExecutor {
    #[serde(default)]
    tasks: Vec<MesosTask>,
}

fn agent_state_tasks(rel: &str) -> Vec<Task> {
    let state: AgentState =
        serde_json::from_slice(&fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let tasks = state
        .frameworks
        .iter()
        .flat_map(|f| &f.executors)
        .flat_map(|e| &e.tasks);
    tasks
        .map(|t| mesos::convert_task(t, &Context::default(), &GroupsConfig::default()))
        .collect()
}

// ---------------------------------------------------------------- provenance

#[test]
fn fixture_tree_matches_sources_md_entries_and_checksums() {
    let sources = fixture_text("SOURCES.md");
    assert!(sources.contains("## Licenses of the source repositories"));
    let mut listed = BTreeMap::new();
    let (mut dir, mut file) = (String::new(), String::new());
    for line in sources.lines() {
        if let Some(d) = line.strip_prefix("## ").filter(|d| d.ends_with('/')) {
            dir = d.to_string();
        } else if let Some(f) = line.strip_prefix("### `").and_then(|f| f.strip_suffix('`')) {
            file = format!("{dir}{f}");
        } else if let Some((_, hash)) = line.split_once("sha256 `") {
            listed.insert(file.clone(), hash.trim_end_matches('`').to_string());
        }
    }
    let files = all_fixture_files();
    assert_eq!(
        listed.keys().cloned().collect::<Vec<_>>(),
        files,
        "SOURCES.md and the fixture tree disagree"
    );
    for (rel, expected) in &listed {
        let digest = Sha256::digest(fixture(rel));
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        assert_eq!(&hex, expected, "{rel} differs from its upstream copy");
    }
}

// ---------------------------------------------------------------- every fixture

enum Expect {
    /// Parses as this kind with this many tasks and endpoints.
    Doc(DocumentKind, usize, usize),
    /// Rejected; the message contains this.
    Rejected(&'static str),
}

fn expectations() -> Vec<(&'static str, Expect)> {
    use DocumentKind::*;
    use Expect::*;
    vec![
        ("marathon/apps/app-0.14.0-ipaddress-groups-labels-discovery.marathon-docs.json", Rejected("app definition \"/foo\" without tasks")),
        ("marathon/apps/app-1.5-networks-container-dcos-ucr.marathon-lb.json", Rejected("without tasks")),
        ("marathon/apps/app-1.5-networks-container-ipv6.marathon-systemtest.json", Rejected("without tasks")),
        ("marathon/apps/app-definition-1.4.13.schema.json", Rejected("JSON Schema")),
        ("marathon/apps/app-ipaddress-networkname-labels-test.calico-docs.json", Rejected("without tasks")),
        ("marathon/apps/app-legacy-ipaddress-networkname-dcos.marathon-systemtest.json", Rejected("without tasks")),
        ("marathon/apps/app-master-docs-example-legacy-ipaddress.marathon-docs.json", Rejected("without tasks")),
        ("marathon/apps/app-mesos-container-ipaddress-networkname-labels-frontend.calico-docs.json", Rejected("without tasks")),
        ("marathon/apps/apps-embed-tasks-1.5-container-bridge.marathon-lb.json", Doc(MarathonApps, 1, 0)),
        ("marathon/apps/apps-embed-tasks-1.x-docker-bridge-ipaddress-null.marathon-lb.json", Doc(MarathonApps, 4, 0)),
        ("marathon/apps/apps-list-1.4.13.marathon-docs.json", Rejected("listed without their tasks")),
        ("marathon/apps/groups-dump-1.5.5-100-apps-host-network.marathon-benchmark.json", Rejected("100 apps are listed without their tasks")),
        ("marathon/apps/pod-container-network-unnamed.marathon-systemtest.json", Rejected("pod definition")),
        ("marathon/apps/pod-definition-networks-container-labels.marathon-docs.json", Rejected("pod definition")),
        ("marathon/events/event-bus-doc-examples-1.10.jsonl", Rejected("more than one JSON document")),
        ("marathon/events/event-bus-doc-examples-1.4.13.jsonl", Rejected("more than one JSON document")),
        ("marathon/events/sse-single-event-crlf.async-worker.txt", Rejected("server-sent event stream")),
        ("marathon/events/sse-stream-docs-example.marathon-docs.txt", Rejected("server-sent event stream")),
        ("marathon/pods/pod-status-dcos-two-containers.istio-test.json", Rejected("without tasks; fetch /v2/apps?embed=apps.tasks")),
        ("marathon/tasks/app-tasks-instance-style-ids.marathon-docs.json", Rejected("task list")),
        ("marathon/tasks/app-tasks-internal-instance-format-2017.marathon-docs.json", Rejected("task list")),
        ("marathon/tasks/tasks-list.marathon-docs.json", Rejected("task list")),
        ("mesos/agent-state/cni-network-config-args-network-info.mesos-docs.json", Rejected("CNI network configuration")),
        ("mesos/agent-state/mesos-0.28.1-agent-state.dcos-net.json", Rejected("agent's /state")),
        ("mesos/agent-state/mesos-0.29.0-agent-state.dcos-net.json", Rejected("agent's /state")),
        ("mesos/agent-state/mesos-1.4.0-agent-state-ucr-bridge-with-netinfo.dcos-net.json", Rejected("agent's /state")),
        ("mesos/agent-state/mesos-1.5.0-agent-state-ipv6-dcos6.dcos-net.json", Rejected("agent's /state")),
        ("mesos/agent-state/mesos-1.5.0-agent-state.dcos-net.json", Rejected("agent's /state")),
        ("mesos/agent-state/mesos-agent-state-2015-minimal.datadog.json", Rejected("agent's /state")),
        ("mesos/agent-state/mesos-docs-agent-get-containers.txt", Rejected("not JSON: starts with \"### GET_CONTAINERS\"")),
        ("mesos/agent-state/mesos-docs-agent-get-state.txt", Rejected("not JSON")),
        ("mesos/master-state/mesos-0.25.0-master-state-vips.dcos-net.json", Doc(MesosMasterState, 4, 0)),
        ("mesos/master-state/mesos-0.26.0-master-state-no-tasks.dcos-net.json", Doc(MesosMasterState, 0, 0)),
        ("mesos/master-state/mesos-0.27.0-master-state-docker.dcos-net.json", Doc(MesosMasterState, 1, 0)),
        ("mesos/master-state/mesos-0.28.0-master-state.dcos-net.json", Doc(MesosMasterState, 2, 0)),
        ("mesos/master-state/mesos-1.0.1-master-state-overlay.dcos-net.json", Doc(MesosMasterState, 1, 1)),
        ("mesos/master-state/mesos-1.1.0-master-state-docker-bridge.sts-agent.json", Doc(MesosMasterState, 1, 0)),
        ("mesos/master-state/mesos-1.2.0-master-state-dcos-overlay.dcos-net.json", Doc(MesosMasterState, 1, 1)),
        ("mesos/master-state/mesos-1.8.0-master-state.dcos-net.json", Doc(MesosMasterState, 1, 1)),
        ("mesos/operator-api/mesos-1.5.0-subscribe-stream-mixed-networking.DERIVED.recordio", Rejected("RecordIO")),
        ("mesos/operator-api/mesos-1.5.0-subscribe-stream-mixed-networking.dcos-net.ndjson", Rejected("more than one JSON document")),
        ("mesos/operator-api/mesos-1.5.0-subscribe-stream-sdk-hello-world.dcos-net.ndjson", Rejected("more than one JSON document")),
        ("mesos/operator-api/mesos-1.8.0-get-state-tcp-and-udp.dcos-net.json", Doc(MesosGetState, 1, 0)),
        ("mesos/operator-api/mesos-1.8.0-get-state-unhealthy.dcos-net.json", Doc(MesosGetState, 1, 1)),
        ("mesos/operator-api/mesos-1.9.0-subscribe-stream-recovered-agents-heartbeat.dcos-net.ndjson", Rejected("more than one JSON document")),
        ("mesos/operator-api/mesos-docs-master-get-agents.txt", Rejected("not JSON")),
        ("mesos/operator-api/mesos-docs-master-get-state.txt", Rejected("not JSON")),
        ("mesos/operator-api/mesos-docs-master-get-tasks.txt", Rejected("not JSON")),
        ("mesos/operator-api/mesos-docs-master-subscribe-and-events.txt", Rejected("not JSON")),
        ("mesos/operator-api/mesos-docs-recordio-format.txt", Rejected("not JSON")),
        ("mesos/operator-api/mesos-get-state-dns-hostname.dcos-net.json", Rejected("one agent only")),
    ]
}

#[test]
fn every_fixture_file_is_parsed_or_rejected_with_a_clear_error() {
    let table = expectations();
    let covered: Vec<String> = table.iter().map(|(rel, _)| rel.to_string()).collect();
    assert_eq!(
        covered,
        all_fixture_files(),
        "every fixture needs an expectation here"
    );
    for (rel, expect) in table {
        let result = parse_document_kind(
            &fixture(rel),
            &GroupsConfig::default(),
            &mut VersionCache::default(),
        );
        match (expect, result) {
            (Expect::Doc(kind, tasks, endpoints), Ok(parsed)) => {
                assert_eq!(parsed.kind, kind, "{rel}");
                assert_eq!(parsed.view.tasks.len(), tasks, "{rel}: tasks");
                assert_eq!(
                    parsed.view.endpoints().count(),
                    endpoints,
                    "{rel}: endpoints"
                );
                assert!(
                    parsed.view.conflicts.is_empty(),
                    "{rel}: {:?}",
                    parsed.view.conflicts
                );
            }
            (Expect::Rejected(needle), Err(e)) => {
                let text = e.to_string();
                assert!(text.contains(needle), "{rel}: {text:?} lacks {needle:?}");
            }
            (Expect::Doc(..), Err(e)) => panic!("{rel}: expected a document, got {e}"),
            (Expect::Rejected(needle), Ok(p)) => {
                panic!("{rel}: expected rejection ({needle}), got {}", p.kind)
            }
        }
    }
}

// ---------------------------------------------------------------- Marathon

#[test]
fn marathon_0_14_docs_app_has_group_dev_label_and_discovery_port() {
    let mut app = app_fixture(
        "marathon/apps/app-0.14.0-ipaddress-groups-labels-discovery.marathon-docs.json",
    );
    let config = app.config(&GroupsConfig::default());
    assert_eq!(&*config.ip_groups, [GroupName::new("dev")]);
    assert_eq!(
        config.network_labels,
        vec![("environment".to_string(), "dev".to_string())]
    );
    // The docs example combines ipAddress with Docker BRIDGE: Docker ignores
    // the NetworkInfo, the IP is a NAT bridge IP.
    assert_eq!(config.network, NetworkKind::NatBridge);
    // A task launched from it gets the groups, but no rules of its own.
    app.tasks = Some(vec![serde_json::from_str::<MarathonTask>(
        r#"{"id":"foo.1","appId":"/foo","ipAddresses":[{"ipAddress":"172.17.0.2","protocol":"IPv4"}],"state":"TASK_RUNNING"}"#,
    )
    .expect("task")]);
    let tasks = marathon::convert_app(&app, &GroupsConfig::default(), &mut VersionCache::default());
    let task = tasks.first().expect("one task");
    assert_eq!(group_names(task), vec!["dev"]);
    assert!(task.groups["dev"].contains(&GroupOrigin::AppVersion));
    assert_eq!(task.not_enforced, Some(NotEnforced::NatBridge));
    assert_eq!(task.labels.get("owner").map(String::as_str), Some("zeus"));

    // The same app on a user network is IP-per-task, with its discovery port.
    let user = String::from_utf8(fixture(
        "marathon/apps/app-0.14.0-ipaddress-groups-labels-discovery.marathon-docs.json",
    ))
    .expect("utf8")
    .replace("\"BRIDGE\"", "\"USER\"");
    let user: App = serde_json::from_str(&user).expect("app");
    let config = user.config(&GroupsConfig::default());
    assert_eq!(config.network, NetworkKind::PerTask);
    let ports: Vec<(u16, Protocol, Option<&str>)> = config
        .discovery_ports
        .iter()
        .map(|p| (p.number, p.protocol, p.name.as_deref()))
        .collect();
    assert_eq!(ports, vec![(8080, Protocol::Tcp, Some("rest_endpoint"))]);
}

#[test]
fn marathon_final_docs_app_still_shows_legacy_ip_address_groups() {
    let app =
        app_fixture("marathon/apps/app-master-docs-example-legacy-ipaddress.marathon-docs.json");
    assert_eq!(
        &*app.config(&GroupsConfig::default()).ip_groups,
        [GroupName::new("dev")]
    );
    assert_eq!(&*app.id, "/foo");
}

#[test]
fn calico_apps_get_groups_from_ip_address_labels_via_label_key() {
    let cases = [
        ("marathon/apps/app-ipaddress-networkname-labels-test.calico-docs.json", "development"),
        ("marathon/apps/app-mesos-container-ipaddress-networkname-labels-frontend.calico-docs.json", "production"),
    ];
    for (rel, group) in cases {
        let mut app = app_fixture(rel);
        assert_eq!(app.network_kind(), NetworkKind::PerTask, "{rel}");
        assert_eq!(
            app.ip_address
                .as_ref()
                .and_then(|i| i.network_name.as_deref()),
            Some("calico-net-1")
        );
        app.tasks = Some(vec![serde_json::from_str(
            r#"{"id":"t1","ipAddresses":[{"ipAddress":"10.233.0.9"}]}"#,
        )
        .expect("task")]);
        // Calico's policy keys on the label "group"; groupd can use the same.
        let tasks =
            marathon::convert_app(&app, &with_label_key("group"), &mut VersionCache::default());
        let task = tasks.first().expect("task");
        assert_eq!(group_names(task), vec![group], "{rel}");
        assert!(task.groups[group].contains(&GroupOrigin::NetworkLabel));
        assert_eq!(task.not_enforced, None);
    }
}

#[test]
fn marathon_container_network_apps_are_ip_per_task() {
    let ucr = app_fixture("marathon/apps/app-1.5-networks-container-dcos-ucr.marathon-lb.json");
    assert_eq!(ucr.network_kind(), NetworkKind::PerTask);
    assert_eq!(
        ucr.networks.first().and_then(|n| n.name.as_deref()),
        Some("dcos")
    );
    let ipv6 =
        app_fixture("marathon/apps/app-1.5-networks-container-ipv6.marathon-systemtest.json");
    assert_eq!(ipv6.network_kind(), NetworkKind::PerTask);
    let ports: Vec<u16> = ipv6
        .config(&GroupsConfig::default())
        .discovery_ports
        .iter()
        .map(|p| p.number)
        .collect();
    assert_eq!(ports, vec![8080], "container side of the port mapping");
    let legacy =
        app_fixture("marathon/apps/app-legacy-ipaddress-networkname-dcos.marathon-systemtest.json");
    assert_eq!(legacy.network_kind(), NetworkKind::PerTask);
    let ports: Vec<(u16, Protocol)> = legacy
        .config(&GroupsConfig::default())
        .discovery_ports
        .iter()
        .map(|p| (p.number, p.protocol))
        .collect();
    assert_eq!(ports, vec![(7777, Protocol::Tcp)]);
}

#[test]
fn marathon_apps_listed_without_tasks_still_parse_as_app_models() {
    let list: AppGroup = serde_json::from_slice(&fixture(
        "marathon/apps/apps-list-1.4.13.marathon-docs.json",
    ))
    .expect("apps");
    let apps = list.all_apps();
    assert_eq!(apps.len(), 1);
    assert!(apps
        .iter()
        .all(|a| a.tasks.is_none() && a.network_kind() == NetworkKind::Host));

    let dump: AppGroup = serde_json::from_slice(&fixture(
        "marathon/apps/groups-dump-1.5.5-100-apps-host-network.marathon-benchmark.json",
    ))
    .expect("groups dump");
    let apps = dump.all_apps();
    assert_eq!(apps.len(), 100);
    for app in apps {
        let config = app.config(&GroupsConfig::default());
        assert_eq!(config.network, NetworkKind::Host, "{}", app.id);
        assert!(
            config.ip_groups.is_empty() && config.network_labels.is_empty(),
            "{}",
            app.id
        );
    }
}

#[test]
fn marathon_pod_definitions_are_not_apps() {
    for rel in [
        "marathon/apps/pod-container-network-unnamed.marathon-systemtest.json",
        "marathon/apps/pod-definition-networks-container-labels.marathon-docs.json",
    ] {
        let err = parse(&fixture(rel)).expect_err(rel);
        assert!(err.to_string().contains("Mesos source"), "{err}");
    }
}

#[test]
fn marathon_docker_bridge_tasks_are_nat_bridge_not_endpoints() {
    let view = parse_ok("marathon/apps/apps-embed-tasks-1.5-container-bridge.marathon-lb.json");
    let task = only_task(&view);
    assert_eq!(
        &*task.id,
        "pywebserver.8cad6a69-6ca8-11e7-beb2-0e2beceebfcc"
    );
    assert_eq!(&*task.app, "/pywebserver");
    assert_eq!(
        task.agent.as_deref(),
        Some("db7b40e2-791c-445f-b373-183e2a648a86-S1")
    );
    assert_eq!(ips(task), vec!["172.17.0.2"]);
    assert_eq!(task.not_enforced, Some(NotEnforced::NatBridge));
    assert_eq!(task.state, TaskState::Running);
}

#[test]
fn marathon_tasks_launched_after_the_last_config_change_use_the_current_config() {
    // zdd fixture: no `state` (older Marathon), tasks launched at versions
    // between lastConfigChangeAt and the scaling version of their app.
    let view = parse_ok(
        "marathon/apps/apps-embed-tasks-1.x-docker-bridge-ipaddress-null.marathon-lb.json",
    );
    assert_eq!(view.tasks.len(), 4);
    for task in view.tasks.values() {
        assert_eq!(
            task.state,
            TaskState::Running,
            "{}: started, so running",
            task.id
        );
        assert_eq!(task.note, None, "{}: its version is known", task.id);
        assert_eq!(task.not_enforced, Some(NotEnforced::NatBridge));
        assert_eq!(
            task.labels.get("HAPROXY_GROUP").map(String::as_str),
            Some("external")
        );
    }
    let green = task_starting(&view, "nginx-green.0dbabba6");
    assert_eq!(ips(green), vec!["172.17.1.71"]);
}

#[test]
fn marathon_version_cache_keeps_old_groups_across_documents() {
    let doc = |app_version: &str, group: &str, tasks: &[(&str, &str, &str)]| {
        let tasks: Vec<String> = tasks
            .iter()
            .map(|(id, ip, v)| {
                format!(r#"{{"id":"{id}","state":"TASK_RUNNING","version":"{v}","ipAddresses":[{{"ipAddress":"{ip}"}}]}}"#)
            })
            .collect();
        format!(
            r#"{{"apps":[{{"id":"/web","version":"{app_version}","versionInfo":{{"lastConfigChangeAt":"{app_version}"}},
                "networks":[{{"mode":"container","name":"n","labels":{{"network-groups":"{group}"}}}}],"tasks":[{}]}}]}}"#,
            tasks.join(",")
        )
    };
    let (v1, v2) = ("2020-01-01T00:00:00.000Z", "2020-02-01T00:00:00.000Z");
    let groups = GroupsConfig::default();
    let mut cache = VersionCache::default();
    let first = parse_document(
        doc(v1, "blue", &[("web.1", "10.233.0.1", v1)]).as_bytes(),
        &groups,
        &mut cache,
    )
    .expect("doc 1");
    assert_eq!(group_names(only_task(&first)), vec!["blue"]);
    // Rolling deployment: the new version has another group, the old task keeps its own.
    let mid = doc(
        v2,
        "green",
        &[("web.1", "10.233.0.1", v1), ("web.2", "10.233.0.2", v2)],
    );
    let second = parse_document(mid.as_bytes(), &groups, &mut cache).expect("doc 2");
    assert_eq!(group_names(&second.tasks["web.1"]), vec!["blue"]);
    assert_eq!(group_names(&second.tasks["web.2"]), vec!["green"]);
    // A groupd that missed v1 cannot know: the old task is ungrouped, with a note.
    let cold = parse_document(mid.as_bytes(), &groups, &mut VersionCache::default()).expect("cold");
    assert!(cold.tasks["web.1"].groups.is_empty());
    assert!(cold.tasks["web.1"]
        .note
        .as_deref()
        .unwrap_or_default()
        .contains("treated as ungrouped"));
    // Once the old task is gone the cache forgets v1.
    parse_document(
        doc(v2, "green", &[("web.2", "10.233.0.2", v2)]).as_bytes(),
        &groups,
        &mut cache,
    )
    .expect("doc 3");
    assert_eq!(cache.len(), 1);
}

#[test]
fn marathon_task_lists_parse_as_task_models() {
    #[derive(Deserialize)]
    struct TaskList {
        tasks: Vec<MarathonTask>,
    }
    let list: TaskList =
        serde_json::from_slice(&fixture("marathon/tasks/tasks-list.marathon-docs.json"))
            .expect("tasks");
    let ids: Vec<&str> = list.tasks.iter().map(|t| &*t.id).collect();
    assert_eq!(
        ids,
        vec![
            "frontend-foosball.083be411-5d1f-11e5-88f7-56b91e7a505b",
            "tools_docker_registry.002b4d28-46b9-11e5-b731-525400cce7ed"
        ]
    );
    assert!(
        list.tasks.iter().all(|t| t.ip_addresses.is_empty()),
        "ipAddresses omitted"
    );
    let instance: TaskList = serde_json::from_slice(&fixture(
        "marathon/tasks/app-tasks-instance-style-ids.marathon-docs.json",
    ))
    .expect("tasks");
    let task = instance.tasks.first().expect("task");
    assert_eq!(task.app_id.as_deref(), Some("/minecraft/survival-world"));
    assert_eq!(task.state.as_deref(), Some("TASK_STAGING"));
    assert_eq!(task.slave_id.as_deref(), Some("agent0"));
    // Marathon's internal instance JSON is not the public task shape.
    let internal = serde_json::from_slice::<TaskList>(&fixture(
        "marathon/tasks/app-tasks-internal-instance-format-2017.marathon-docs.json",
    ));
    assert!(internal.is_err());
}

#[test]
fn marathon_events_are_rejected_one_by_one_and_posted_app_definitions_parse() {
    for rel in [
        "marathon/events/event-bus-doc-examples-1.10.jsonl",
        "marathon/events/event-bus-doc-examples-1.4.13.jsonl",
    ] {
        let mut definitions = 0;
        for line in ndjson_lines(rel) {
            let err = parse(line.as_bytes()).expect_err(&line);
            assert!(
                err.to_string().contains("single Marathon event"),
                "{rel}: {err}"
            );
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct ApiPost {
                app_definition: Option<App>,
            }
            let post: ApiPost = serde_json::from_str(&line).expect("event object");
            if let Some(app) = post.app_definition {
                assert_eq!(&*app.id, "/my-app");
                assert_eq!(app.network_kind(), NetworkKind::Host);
                definitions += 1;
            }
        }
        assert_eq!(definitions, 1, "{rel}: one api_post_event");
    }
}

#[test]
fn marathon_sse_frames_hold_events_not_snapshots() {
    for rel in [
        "marathon/events/sse-single-event-crlf.async-worker.txt",
        "marathon/events/sse-stream-docs-example.marathon-docs.txt",
    ] {
        let text = fixture_text(rel);
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert!(!data.is_empty(), "{rel}");
        for json in data {
            let err = parse(json.trim_end_matches('\r').as_bytes()).expect_err(json);
            assert!(err.to_string().contains("single Marathon event"), "{err}");
        }
    }
}

// ---------------------------------------------------------------- Mesos /master/state

#[test]
fn mesos_0_25_legacy_ip_address_tasks_are_host_network() {
    let view = parse_ok("mesos/master-state/mesos-0.25.0-master-state-vips.dcos-net.json");
    assert_eq!(view.tasks.len(), 4);
    for task in view.tasks.values() {
        assert_eq!(ips(task), vec!["33.33.33.1"], "{}", task.id);
        assert_eq!(
            task.not_enforced,
            Some(NotEnforced::HostNetwork),
            "{}",
            task.id
        );
        assert!(task.app.starts_with("marathon:"), "{}", task.app);
    }
    assert!(
        view.conflicts.is_empty(),
        "host-network tasks sharing the agent IP are not conflicts"
    );
    let state = parse_ok("mesos/master-state/mesos-0.28.0-master-state.dcos-net.json");
    assert!(
        state
            .tasks
            .values()
            .all(|t| ips(t) == vec!["10.10.0.109"]
                && t.not_enforced == Some(NotEnforced::HostNetwork))
    );
}

#[test]
fn mesos_task_labels_give_groups_when_no_network_label_has_the_key() {
    let bytes = fixture("mesos/master-state/mesos-0.25.0-master-state-vips.dcos-net.json");
    let view = parse_document(
        &bytes,
        &with_label_key("vip_PORT0"),
        &mut VersionCache::default(),
    )
    .expect("parses");
    let greg = task_starting(&view, "greg.c92049c2");
    assert_eq!(group_names(greg), vec!["tcp://4.3.2.2:1234"]);
    assert!(greg.groups["tcp://4.3.2.2:1234"].contains(&GroupOrigin::TaskLabel));
}

#[test]
fn mesos_1x_master_states_report_container_network_ips_as_endpoints() {
    let cases = [
        (
            "mesos/master-state/mesos-1.0.1-master-state-overlay.dcos-net.json",
            "9.0.1.130",
        ),
        (
            "mesos/master-state/mesos-1.2.0-master-state-dcos-overlay.dcos-net.json",
            "9.0.2.59",
        ),
        (
            "mesos/master-state/mesos-1.8.0-master-state.dcos-net.json",
            "9.0.2.2",
        ),
    ];
    for (rel, ip) in cases {
        let view = parse_ok(rel);
        let task = only_task(&view);
        assert_eq!(ips(task), vec![ip], "{rel}");
        assert!(task.is_endpoint(), "{rel}: {task:?}");
        assert!(task.groups.is_empty(), "{rel}: no groups set");
        assert_eq!(task.state, TaskState::Running);
    }
    // 1.8: the only discovery port is the host side of a port mapping.
    let view = parse_ok("mesos/master-state/mesos-1.8.0-master-state.dcos-net.json");
    let task = only_task(&view);
    assert!(task.discovery_ports.is_empty());
    assert_eq!(
        task.agent.as_deref(),
        Some("31953f3e-15f7-4f83-8d94-c2384f40b723-S1")
    );
    assert_eq!(
        task.labels.get("DCOS_SPACE").map(String::as_str),
        Some("/test")
    );
}

#[test]
fn mesos_network_info_labels_give_network_label_groups() {
    // 1.8: container.network_infos[].labels is {"labels":[...]}, the status
    // copy an array; both carry DCOS_SPACE=/test (and so does the task).
    let bytes = fixture("mesos/master-state/mesos-1.8.0-master-state.dcos-net.json");
    let view = parse_document(
        &bytes,
        &with_label_key("DCOS_SPACE"),
        &mut VersionCache::default(),
    )
    .expect("parses");
    let task = only_task(&view);
    assert_eq!(group_names(task), vec!["/test"]);
    assert_eq!(
        task.groups["/test"],
        OriginSet::from([GroupOrigin::NetworkLabel])
    );
}

#[test]
fn mesos_docker_bridge_tasks_are_nat_bridge() {
    for (rel, ip) in [
        (
            "mesos/master-state/mesos-0.27.0-master-state-docker.dcos-net.json",
            "172.17.0.5",
        ),
        (
            "mesos/master-state/mesos-1.1.0-master-state-docker-bridge.sts-agent.json",
            "172.17.0.8",
        ),
    ] {
        let view = parse_ok(rel);
        let task = only_task(&view);
        assert_eq!(ips(task), vec![ip], "{rel}");
        assert_eq!(task.not_enforced, Some(NotEnforced::NatBridge), "{rel}");
    }
}

// ---------------------------------------------------------------- Mesos v1

#[test]
fn mesos_get_state_responses_parse() {
    let view = parse_ok("mesos/operator-api/mesos-1.8.0-get-state-tcp-and-udp.dcos-net.json");
    let task = only_task(&view);
    assert_eq!(
        task.not_enforced,
        Some(NotEnforced::HostNetwork),
        "docker HOST"
    );
    assert_eq!(&*task.app, "marathon:app");

    let view = parse_ok("mesos/operator-api/mesos-1.8.0-get-state-unhealthy.dcos-net.json");
    let task = only_task(&view);
    assert_eq!(ips(task), vec!["9.0.1.6"]);
    assert!(task.is_endpoint());
}

#[test]
fn mesos_agent_get_state_is_refused_but_its_tasks_parse() {
    let bytes = fixture("mesos/operator-api/mesos-get-state-dns-hostname.dcos-net.json");
    assert!(parse(&bytes).is_err());
    #[derive(Deserialize)]
    struct Agent {
        get_state: AgentGetState,
    }
    #[derive(Deserialize)]
    struct AgentGetState {
        get_tasks: AgentTasks,
    }
    #[derive(Deserialize)]
    struct AgentTasks {
        launched_tasks: Vec<MesosTask>,
    }
    let agent: Agent = serde_json::from_slice(&bytes).expect("agent GET_STATE");
    let task = agent
        .get_state
        .get_tasks
        .launched_tasks
        .first()
        .expect("task");
    let task = mesos::convert_task(task, &Context::default(), &GroupsConfig::default());
    assert_eq!(task.not_enforced, Some(NotEnforced::HostNetwork));
    assert_eq!(ips(&task), vec!["127.0.0.1"]);
}

#[test]
fn mesos_subscribed_events_are_snapshots() {
    let first = |rel: &str| ndjson_lines(rel).into_iter().next().expect("first line");
    let kind_and_view = |line: &str| {
        let parsed = parse_document_kind(
            line.as_bytes(),
            &GroupsConfig::default(),
            &mut VersionCache::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (parsed.kind, parsed.view)
    };
    let (kind, view) = kind_and_view(&first(
        "mesos/operator-api/mesos-1.5.0-subscribe-stream-mixed-networking.dcos-net.ndjson",
    ));
    assert_eq!(
        (kind, view.tasks.len()),
        (DocumentKind::MesosSubscribed, 0),
        "\"get_tasks\":{{}}"
    );

    // 1.9 serialises `type` last; still a SUBSCRIBED event.
    let (kind, view) =
        kind_and_view(&first("mesos/operator-api/mesos-1.9.0-subscribe-stream-recovered-agents-heartbeat.dcos-net.ndjson"));
    assert_eq!((kind, view.tasks.len()), (DocumentKind::MesosSubscribed, 0));

    let (_, view) = kind_and_view(&first(
        "mesos/operator-api/mesos-1.5.0-subscribe-stream-sdk-hello-world.dcos-net.ndjson",
    ));
    assert_eq!(view.tasks.len(), 4);
    for task in view.tasks.values() {
        assert_eq!(
            task.not_enforced,
            Some(NotEnforced::HostNetwork),
            "{}",
            task.id
        );
        assert_eq!(task.ips.len(), 1, "{}", task.id);
    }
    let apps: BTreeSet<&str> = view
        .tasks
        .values()
        .map(|t| t.app.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(apps, BTreeSet::from(["hello-world", "marathon"]));
}

#[test]
fn mesos_stream_events_after_subscribed_are_not_snapshots() {
    for rel in [
        "mesos/operator-api/mesos-1.5.0-subscribe-stream-mixed-networking.dcos-net.ndjson",
        "mesos/operator-api/mesos-1.5.0-subscribe-stream-sdk-hello-world.dcos-net.ndjson",
        "mesos/operator-api/mesos-1.9.0-subscribe-stream-recovered-agents-heartbeat.dcos-net.ndjson",
    ] {
        for line in ndjson_lines(rel).iter().skip(1) {
            let err = parse(line.as_bytes()).expect_err(line);
            assert!(err.to_string().contains("single Mesos"), "{rel}: {err}");
            // And every event is a valid v1 message for the Mesos source.
            serde_json::from_str::<V1Message>(line).unwrap_or_else(|e| panic!("{rel}: {e}"));
        }
    }
}

/// Replays a SUBSCRIBE stream the way the master keeps its task list.
struct Replay {
    ctx: Context,
    tasks: BTreeMap<String, MesosTask>,
}

impl Replay {
    fn apply(&mut self, message: &V1Message) -> Option<String> {
        if let Some(added) = &message.task_added {
            let id = added.task.id.0.clone();
            self.tasks.insert(id.clone(), added.task.clone());
            return Some(id);
        }
        let updated = message.task_updated.as_ref()?;
        let id = updated.status.as_ref()?.task_id.as_ref()?.0.clone();
        self.tasks.get_mut(&id)?.apply_update(updated);
        Some(id)
    }

    fn convert(&self, id: &str) -> Task {
        mesos::convert_task(&self.tasks[id], &self.ctx, &GroupsConfig::default())
    }
}

#[test]
fn mesos_subscribe_stream_replay_classifies_every_networking_mode() {
    let lines = ndjson_lines(
        "mesos/operator-api/mesos-1.5.0-subscribe-stream-mixed-networking.dcos-net.ndjson",
    );
    let subscribed: V1Message = serde_json::from_str(&lines[0]).expect("SUBSCRIBED");
    let state = subscribed
        .subscribed
        .and_then(|s| s.get_state)
        .expect("get_state");
    let mut replay = Replay {
        ctx: Context::from_get_state(&state),
        tasks: BTreeMap::new(),
    };
    // How docker-on-dcos looks after each of its events (docs/FORMATS.md §8.3).
    let mut docker_on_dcos = Vec::new();
    for line in &lines[1..] {
        let message: V1Message = serde_json::from_str(line).expect("event");
        if let Some(id) = replay.apply(&message) {
            if id.starts_with("docker-on-dcos.") {
                let task = replay.convert(&id);
                docker_on_dcos.push((task.state.clone(), task.not_enforced.clone(), ips(&task)));
            }
        }
    }
    assert_eq!(
        docker_on_dcos,
        vec![
            (TaskState::Staging, Some(NotEnforced::NoAddress), vec![]),
            // STARTING reports the agent's 172.17.0.4 without a network name: ignored.
            (TaskState::Starting, Some(NotEnforced::NoAddress), vec![]),
            (TaskState::Running, None, vec!["9.0.2.130".to_string()]),
        ]
    );

    let expected: [(&str, Option<NotEnforced>, &[&str]); 12] = [
        (
            "docker-on-bridge.",
            Some(NotEnforced::NatBridge),
            &["172.18.0.2"],
        ),
        ("docker-on-dcos.", None, &["9.0.2.130"]),
        (
            "docker-on-host.",
            Some(NotEnforced::HostNetwork),
            &["172.17.0.4"],
        ),
        (
            "docker-on-ipv6.",
            None,
            &["172.19.0.2", "fd01:b::2:8000:0:2"],
        ),
        ("none-on-dcos.", None, &["9.0.2.5"]),
        (
            "none-on-host.",
            Some(NotEnforced::HostNetwork),
            &["172.17.0.4"],
        ),
        (
            "pod-on-bridge.",
            Some(NotEnforced::NatBridge),
            &["172.31.254.4"],
        ),
        ("pod-on-dcos.", None, &["9.0.1.3"]),
        (
            "pod-on-host.",
            Some(NotEnforced::HostNetwork),
            &["172.17.0.4"],
        ),
        (
            "ucr-on-bridge.",
            Some(NotEnforced::NatBridge),
            &["172.31.254.3"],
        ),
        ("ucr-on-dcos.", None, &["9.0.1.6"]),
        (
            "ucr-on-host.",
            Some(NotEnforced::HostNetwork),
            &["172.17.0.3"],
        ),
    ];
    assert_eq!(replay.tasks.len(), expected.len());
    let mut view = ClusterView::default();
    for (id, (prefix, not_enforced, want_ips)) in replay.tasks.keys().zip(expected) {
        assert!(id.starts_with(prefix), "{id} vs {prefix}");
        let task = replay.convert(id);
        assert_eq!(task.state, TaskState::Running, "{id}");
        assert_eq!(task.not_enforced, not_enforced, "{id}");
        assert_eq!(ips(&task), want_ips, "{id}");
        view.insert(task);
    }
    assert!(view.ip_conflicts().is_empty());
}

#[test]
fn mesos_recordio_capture_frames_the_same_events_as_the_ndjson() {
    let framed = fixture(
        "mesos/operator-api/mesos-1.5.0-subscribe-stream-mixed-networking.DERIVED.recordio",
    );
    let mut records = Vec::new();
    let mut rest = framed.as_slice();
    while !rest.is_empty() {
        let newline = rest.iter().position(|b| *b == b'\n').expect("length line");
        let len: usize = std::str::from_utf8(&rest[..newline])
            .expect("ascii")
            .parse()
            .expect("length");
        let body = &rest[newline + 1..newline + 1 + len];
        records.push(String::from_utf8(body.to_vec()).expect("utf8"));
        rest = &rest[newline + 1 + len..];
    }
    let lines = ndjson_lines(
        "mesos/operator-api/mesos-1.5.0-subscribe-stream-mixed-networking.dcos-net.ndjson",
    );
    assert_eq!(records, lines);
    let first = parse_document_kind(
        records[0].as_bytes(),
        &GroupsConfig::default(),
        &mut VersionCache::default(),
    )
    .expect("first record is the SUBSCRIBED snapshot");
    assert_eq!(first.kind, DocumentKind::MesosSubscribed);
}

#[test]
fn mesos_docs_examples_parse_or_are_rejected_clearly() {
    let get_state = docs_response_json(&fixture_text(
        "mesos/operator-api/mesos-docs-master-get-state.txt",
    ));
    let view = parse(get_state.as_bytes()).expect("docs GET_STATE");
    assert!(
        view.tasks.is_empty(),
        "the example only has completed tasks"
    );

    let get_tasks = docs_response_json(&fixture_text(
        "mesos/operator-api/mesos-docs-master-get-tasks.txt",
    ));
    let parsed = parse_document_kind(
        get_tasks.as_bytes(),
        &GroupsConfig::default(),
        &mut VersionCache::default(),
    )
    .expect("docs GET_TASKS");
    assert_eq!(parsed.kind, DocumentKind::MesosGetTasks);
    let task = only_task(&parsed.view);
    assert_eq!((&*task.id, ips(task)), ("1", vec!["127.0.1.1".to_string()]));

    // The docs' GET_AGENTS example opens with "{{".
    let get_agents = docs_response_json(&fixture_text(
        "mesos/operator-api/mesos-docs-master-get-agents.txt",
    ));
    assert!(matches!(
        parse(get_agents.as_bytes()),
        Err(DocumentError::Malformed { .. })
    ));

    let containers = docs_response_json(&fixture_text(
        "mesos/agent-state/mesos-docs-agent-get-containers.txt",
    ));
    assert!(parse(containers.as_bytes())
        .expect_err("agent call")
        .to_string()
        .contains("GET_CONTAINERS"));
    let agent_state = docs_response_json(&fixture_text(
        "mesos/agent-state/mesos-docs-agent-get-state.txt",
    ));
    assert!(parse(agent_state.as_bytes())
        .expect_err("agent")
        .to_string()
        .contains("one agent only"));

    // Event examples: "{...}" placeholders and trailing commas are malformed,
    // the rest single events. The TASK_ADDED example is still a task.
    let events = docs_event_blocks(&fixture_text(
        "mesos/operator-api/mesos-docs-master-subscribe-and-events.txt",
    ));
    assert_eq!(events.len(), 9);
    let mut malformed = 0;
    for block in &events {
        match parse(block.as_bytes()) {
            Err(DocumentError::Malformed { .. }) => malformed += 1,
            Err(e) => assert!(e.to_string().contains("single Mesos"), "{e}"),
            Ok(_) => panic!("an event example parsed as a snapshot: {block}"),
        }
    }
    assert_eq!(
        malformed, 3,
        "SUBSCRIBED {{...}}, HEARTBEAT and AGENT_ADDED trailing commas"
    );
    let added: V1Message = serde_json::from_str(&events[2]).expect("TASK_ADDED example");
    let task = added.task_added.expect("task_added").task;
    assert_eq!(task.id.0, "d40f3f3e-bbe3-44af-a230-4cb1eae72f67");

    let recordio = fixture_text("mesos/operator-api/mesos-docs-recordio-format.txt");
    let example = recordio
        .lines()
        .skip_while(|l| !l.starts_with("128"))
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(parse(example.as_bytes()).is_err(), "{example}");
}

#[test]
fn mesos_agent_state_tasks_parse_with_the_task_model() {
    let ipv6 =
        agent_state_tasks("mesos/agent-state/mesos-1.5.0-agent-state-ipv6-dcos6.dcos-net.json");
    let task = ipv6.first().expect("task");
    assert_eq!(ips(task), vec!["172.18.0.2", "fd01:b::2:8000:0:2"]);
    assert!(task.ips.iter().any(IpAddr::is_ipv6));
    assert!(task.is_endpoint());

    let legacy = agent_state_tasks("mesos/agent-state/mesos-0.29.0-agent-state.dcos-net.json");
    assert_eq!(legacy.len(), 2);
    assert!(legacy
        .iter()
        .all(|t| ips(t) == vec!["10.10.0.38"] && t.not_enforced == Some(NotEnforced::HostNetwork)));

    let bridge = agent_state_tasks(
        "mesos/agent-state/mesos-1.4.0-agent-state-ucr-bridge-with-netinfo.dcos-net.json",
    );
    assert_eq!(
        bridge.first().map(|t| t.not_enforced.clone()),
        Some(Some(NotEnforced::NatBridge))
    );

    let dcos = agent_state_tasks("mesos/agent-state/mesos-1.5.0-agent-state.dcos-net.json");
    assert_eq!(dcos.first().map(ips), Some(vec!["9.0.1.130".to_string()]));

    let old = agent_state_tasks("mesos/agent-state/mesos-0.28.1-agent-state.dcos-net.json");
    assert_eq!(
        old.first().map(|t| t.not_enforced.clone()),
        Some(Some(NotEnforced::HostNetwork))
    );

    // No container_status at all: nothing known, host networking.
    let minimal =
        agent_state_tasks("mesos/agent-state/mesos-agent-state-2015-minimal.datadog.json");
    let task = minimal.first().expect("task");
    assert!(task.ips.is_empty());
    assert_eq!(task.not_enforced, Some(NotEnforced::HostNetwork));
}

#[test]
fn cni_network_info_parses_with_object_form_labels() {
    #[derive(Deserialize)]
    struct Cni {
        args: HashMap<String, MesosArgs>,
    }
    #[derive(Deserialize)]
    struct MesosArgs {
        network_info: NetworkInfo,
    }
    let cni: Cni = serde_json::from_slice(&fixture(
        "mesos/agent-state/cni-network-config-args-network-info.mesos-docs.json",
    ))
    .expect("cni");
    let info = &cni.args["org.apache.mesos"].network_info;
    assert_eq!(info.name.as_deref(), Some("mynet"));
    let labels: Vec<(&str, &str)> = info.labels.pairs().collect();
    assert_eq!(labels, vec![("app", "myapp"), ("env", "prod")]);
}

// ---------------------------------------------------------------- bad input

#[test]
fn every_prefix_of_real_documents_is_an_error_not_a_panic() {
    let hello_world = ndjson_lines(
        "mesos/operator-api/mesos-1.5.0-subscribe-stream-sdk-hello-world.dcos-net.ndjson",
    )
    .into_iter()
    .next()
    .expect("line");
    let documents = [
        fixture("marathon/apps/apps-embed-tasks-1.x-docker-bridge-ipaddress-null.marathon-lb.json"),
        fixture("mesos/master-state/mesos-1.8.0-master-state.dcos-net.json"),
        fixture("mesos/operator-api/mesos-1.8.0-get-state-unhealthy.dcos-net.json"),
        hello_world.into_bytes(),
    ];
    for document in documents {
        // Trailing whitespace after the document would make a "prefix" whole.
        let whole = document.trim_ascii_end().len();
        // Every 97th byte, plus the last few (a missing final brace).
        let cuts = (0..whole).step_by(97).chain(whole.saturating_sub(3)..whole);
        for cut in cuts {
            let prefix = &document[..cut];
            let err = parse(prefix).expect_err("a prefix is never a whole document");
            assert!(
                matches!(
                    err,
                    DocumentError::Empty
                        | DocumentError::Truncated { .. }
                        | DocumentError::Malformed { .. }
                ),
                "cut at {cut}: {err:?}"
            );
            assert!(!err.to_string().is_empty());
        }
        assert!(parse(&document).is_ok());
    }
}

#[test]
fn unknown_fields_everywhere_are_ignored() {
    let junk =
        r#""zz_unknown": {"deep": [1e400, 18446744073709551616123, -0.0, "\/x", null, {"a": []}]}"#;
    let marathon = format!(
        r#"{{{junk}, "apps": [{{{junk}, "id": "/a", "ipAddress": {{{junk}, "groups": ["g"]}},
            "tasks": [{{{junk}, "id": "a.1", "ipAddresses": [{{{junk}, "ipAddress": "10.233.0.1"}}]}}]}}]}}"#
    );
    let view = parse(marathon.as_bytes()).expect("marathon with unknown fields");
    assert_eq!(group_names(&view.tasks["a.1"]), vec!["g"]);
    let mesos = format!(
        r#"{{{junk}, "frameworks": [{{{junk}, "id": "F", "name": "fw", "tasks": [{{{junk}, "id": "t", "state": "TASK_RUNNING",
            "container": {{{junk}, "type": "MESOS", "network_infos": [{{{junk}, "name": "n", "groups": ["g"]}}]}},
            "statuses": [{{{junk}, "container_status": {{{junk}, "network_infos": [{{{junk}, "name": "n",
                "ip_addresses": [{{{junk}, "ip_address": "10.233.0.2"}}]}}]}}}}]}}]}}]}}"#
    );
    let view = parse(mesos.as_bytes()).expect("mesos with unknown fields");
    let task = &view.tasks["t"];
    assert!(task.is_endpoint());
    assert_eq!(group_names(task), vec!["g"]);
    // Mesos escapes "/" as "\/": the values read are unescaped.
    let escaped = r#"{"frameworks":[{"id":"F","name":"fw","tasks":[{"id":"a\/b","name":"x\/y","labels":[{"key":"network-groups","value":"g\/1"}]}]}]}"#;
    let view = parse(escaped.as_bytes()).expect("escaped slashes");
    let task = &view.tasks["a/b"];
    assert_eq!(&*task.app, "fw:x/y");
    assert_eq!(group_names(task), vec!["g/1"]);
}

#[test]
fn absurd_group_names_are_kept_verbatim_or_rejected_clearly() {
    let long = "g".repeat(10_000);
    let names = [
        "\"quoted\"".to_string(),
        "semi;colon".to_string(),
        "'; drop table groups; --".to_string(),
        "{} [] \\ / \u{0}".to_string(),
        "\u{1F600}".to_string(),
        "g".repeat(256),
    ];
    let json_names: Vec<String> = names
        .iter()
        .map(|n| serde_json::to_string(n).expect("json"))
        .collect();
    let doc = format!(
        r#"{{"apps":[{{"id":"/a","ipAddress":{{"groups":["", "   ", {}],"labels":{{"network-groups":" , ,x;y , \ud83d\ude00 "}}}},
            "tasks":[{{"id":"a.1","ipAddresses":[{{"ipAddress":"10.233.0.3"}}]}}]}}]}}"#,
        json_names.join(",")
    );
    let view = parse(doc.as_bytes()).expect("odd names parse");
    let task = &view.tasks["a.1"];
    for name in &names {
        assert!(
            task.groups.contains_key(name.as_str()),
            "{:?} missing",
            name.chars().take(20).collect::<String>()
        );
    }
    assert!(task.groups.contains_key("x;y"));
    assert!(
        !task.groups.contains_key("") && !task.groups.contains_key("   "),
        "empty names are dropped"
    );
    assert_eq!(
        task.groups.len(),
        names.len() + 1,
        "{:?}",
        group_names(task)
    );

    // Longer than groups.max_name_len (256 by default): the task's data is
    // rejected, with the reason, never truncated.
    let doc = format!(
        r#"{{"apps":[{{"id":"/a","ipAddress":{{"groups":["ok", "{long}"]}},
            "tasks":[{{"id":"a.1","ipAddresses":[{{"ipAddress":"10.233.0.3"}}]}}]}}]}}"#
    );
    let view = parse(doc.as_bytes()).expect("a long name is not a parse error");
    let task = &view.tasks["a.1"];
    assert!(!task.is_endpoint() && task.groups.is_empty() && task.ips.is_empty());
    let why = task.invalid.as_deref().unwrap_or_default();
    assert!(
        why.contains("is 10000 bytes, longer than groups.max_name_len = 256"),
        "{why}"
    );

    // A lone surrogate cannot be a Rust string: the document is refused with
    // the place named, not altered.
    let lone = r#"{"apps":[{"id":"/a","ipAddress":{"groups":["x\ud800"]},"tasks":[]}]}"#;
    let err = parse(lone.as_bytes()).expect_err("lone surrogate");
    let text = err.to_string();
    assert!(
        text.contains("surrogate") && text.contains("line 1"),
        "{text}"
    );
    // In a field groupd does not read it does not matter.
    let ignored = r#"{"apps":[{"id":"/a","cmd":"x\ud800","tasks":[]}]}"#;
    assert!(parse(ignored.as_bytes()).is_ok());
}

#[test]
fn duplicate_ips_across_live_endpoints_are_listed_as_conflicts() {
    let doc = r#"{"frameworks":[{"id":"F","name":"marathon","tasks":[
        {"id":"old","state":"TASK_RUNNING","container":{"type":"MESOS","network_infos":[{"name":"n"}]},
         "statuses":[{"container_status":{"network_infos":[{"name":"n","ip_addresses":[{"ip_address":"10.233.0.7"}]}]}}]},
        {"id":"new","state":"TASK_STARTING","container":{"type":"MESOS","network_infos":[{"name":"n"}]},
         "statuses":[{"container_status":{"network_infos":[{"name":"n","ip_addresses":[{"ip_address":"10.233.0.7"}]}]}}]},
        {"id":"dead","state":"TASK_FAILED","container":{"type":"MESOS","network_infos":[{"name":"n"}]},
         "statuses":[{"container_status":{"network_infos":[{"name":"n","ip_addresses":[{"ip_address":"10.233.0.7"}]}]}}]}
    ]}]}"#;
    let view = parse(doc.as_bytes()).expect("duplicates are not an error");
    assert_eq!(view.tasks.len(), 3);
    assert_eq!(view.conflicts.len(), 1);
    assert_eq!(
        view.conflicts[0].tasks,
        vec!["new".to_string(), "old".to_string()],
        "the terminal task is not a claimant"
    );
    assert_eq!(view.tasks["dead"].not_enforced, Some(NotEnforced::Terminal));
}

#[test]
fn empty_file_is_an_error() {
    assert_eq!(parse(b""), Err(DocumentError::Empty));
    assert_eq!(parse(b"\n\n  \r\n"), Err(DocumentError::Empty));
    assert!(DocumentError::Empty.to_string().contains("empty document"));
}

#[test]
fn garbage_binary_and_deep_nesting_are_errors_not_panics() {
    let mut inputs: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, 0x00, 0x01],
        b"{\"apps\": [{\"id\": \"\xff\xfe\"}]}".to_vec(),
        "[".repeat(100_000).into_bytes(),
        format!("{}{}", "{\"a\":".repeat(50_000), "1").into_bytes(),
        b"{\"apps\": \"not a list\"}".to_vec(),
        b"{\"frameworks\": {}}".to_vec(),
        b"{\"type\": \"SUBSCRIBED\", \"subscribed\": 5}".to_vec(),
        b"{\"type\": 7}".to_vec(),
        b"{\"apps\": [{\"id\": \"/a\", \"tasks\": [{\"id\": \"t\", \"ipAddresses\": [{\"ipAddress\": 5}]}]}]}".to_vec(),
        b"{\"apps\": [{\"id\": \"/a\", \"ipAddress\": {\"discovery\": {\"ports\": [{\"number\": 1e400}]}}, \"tasks\": []}]}".to_vec(),
        b"\xef\xbb\xbf".to_vec(),
        b"{} trailing".to_vec(),
        b"{}".to_vec(),
    ];
    // Every single byte value as a one-byte document.
    inputs.extend((0u8..=255).map(|b| vec![b]));
    for input in inputs {
        let result = parse(&input);
        assert!(
            result.is_err(),
            "{:?} parsed",
            String::from_utf8_lossy(&input[..input.len().min(40)])
        );
    }
}

// ---------------------------------------------------------------- file source

struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> ScratchDir {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("groupd-file-source-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Wait for the first update that satisfies `want`, skipping others (a rewrite
/// in place may be seen half-written first: Degraded, then the Snapshot).
async fn wait_for(
    rx: &mut tokio::sync::mpsc::Receiver<SourceUpdate>,
    what: &str,
    want: impl Fn(&SourceUpdate) -> bool,
) -> SourceUpdate {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(update)) if want(&update) => return update,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("file source stopped while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

fn snapshot_with(task: &'static str) -> impl Fn(&SourceUpdate) -> bool {
    move |u| matches!(u, SourceUpdate::Snapshot(view) if view.tasks.contains_key(task))
}

fn marathon_doc(task: &str, ip: &str) -> String {
    format!(
        r#"{{"apps":[{{"id":"/web","ipAddress":{{"groups":["web"]}},
            "tasks":[{{"id":"{task}","state":"TASK_RUNNING","ipAddresses":[{{"ipAddress":"{ip}"}}]}}]}}]}}"#
    )
}

#[tokio::test]
async fn file_source_follows_writes_renames_and_garbage() {
    let started = Instant::now();
    let dir = ScratchDir::new();
    let path = dir.0.join("state.json");
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let watcher = tokio::spawn(groupd::source::file::run(
        path.clone(),
        GroupsConfig::default(),
        tx,
    ));

    let missing = wait_for(&mut rx, "missing file", |u| {
        matches!(u, SourceUpdate::Degraded(_))
    })
    .await;
    let SourceUpdate::Degraded(reason) = missing else {
        unreachable!()
    };
    assert!(reason.contains("does not exist yet; waiting"), "{reason}");

    std::fs::write(&path, marathon_doc("web.1", "10.233.0.1")).expect("write");
    let first = wait_for(&mut rx, "first snapshot", snapshot_with("web.1")).await;
    let SourceUpdate::Snapshot(view) = first else {
        unreachable!()
    };
    assert!(view.tasks["web.1"].groups.contains_key("web"));

    // Rewritten in place.
    std::fs::write(&path, marathon_doc("web.22", "10.233.0.22")).expect("rewrite");
    wait_for(&mut rx, "snapshot after rewrite", snapshot_with("web.22")).await;

    // Garbage: degraded, with the reason.
    std::fs::write(&path, b"{\"apps\": [ this is not json").expect("garbage");
    let bad = wait_for(
        &mut rx,
        "degraded on garbage",
        |u| matches!(u, SourceUpdate::Degraded(r) if r.contains("malformed JSON")),
    )
    .await;
    let SourceUpdate::Degraded(reason) = bad else {
        unreachable!()
    };
    assert!(reason.contains(&path.display().to_string()), "{reason}");

    // A good file renamed over it (what careful writers do).
    let staged = dir.0.join("state.json.tmp");
    std::fs::write(&staged, marathon_doc("web.333", "10.233.0.33")).expect("stage");
    std::fs::rename(&staged, &path).expect("rename");
    wait_for(&mut rx, "snapshot after rename", snapshot_with("web.333")).await;

    // The watcher stops when the receiver goes away.
    drop(rx);
    tokio::time::timeout(Duration::from_secs(2), watcher)
        .await
        .expect("watcher stops")
        .expect("no panic");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
