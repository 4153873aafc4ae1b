//! groupd's Marathon pod parser over real pod documents (pure: no sockets).
//! The status is a captured `GET /v2/pods/{id}::status`; the definitions
//! are Marathon's own docs example and system-test pod.

use groupd::config::GroupsConfig;
use groupd::model::{NotEnforced, TaskState};
use groupd::source::wire::marathon::pods::{
    convert_pod, parse_pod_status, parse_pod_statuses, parse_pods,
};
use groupd::source::wire::NetworkKind;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/marathon");

fn read(path: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const STATUS: &str = "pods/pod-status-dcos-two-containers.istio-test.json";

#[test]
fn captured_status_is_one_endpoint_per_instance_with_the_instance_address() {
    let status = parse_pod_status(&read(STATUS)).expect("the captured status parses");
    assert_eq!(status.id, "/productpage");
    assert_eq!(status.instances.len(), 1);
    let instance = &status.instances[0];
    assert_eq!(instance.containers.len(), 2, "two containers");
    for c in &instance.containers {
        let task_id = c.container_id.as_deref().expect("containerId");
        assert!(
            task_id.starts_with(&format!("{}.", instance.id)),
            "container task ids are <instance>.<container>: {task_id}"
        );
    }
    assert_eq!(instance.launch_version(), Some("2019-05-21T10:43:34.737Z"));

    let spec = status.spec.as_ref().expect("spec");
    let current = spec.config();
    assert_eq!(current.network, NetworkKind::PerTask);
    let tasks = convert_pod(
        &status.id,
        &status.instances,
        spec.version.as_deref(),
        &current,
        |_| None,
        &GroupsConfig::default(),
    );
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    assert_eq!(
        &*t.id,
        "productpage.instance-488b3441-7bb5-11e9-b931-8ae30e1b1bb7"
    );
    assert_eq!(
        t.agent.as_deref(),
        Some("e9b2b531-8352-4480-bc46-0b23f79b7cc0-S3")
    );
    assert_eq!(t.state, TaskState::Running);
    let ips: Vec<String> = t.ips.iter().map(|ip| ip.to_string()).collect();
    assert_eq!(ips, ["9.0.6.3"]);
    assert!(t.is_endpoint());
    // No network-groups label anywhere: ungrouped (R3), not dropped.
    assert!(t.groups.is_empty());
    assert_eq!(t.note, None);
    // The productpage endpoint (containerPort 9080, tcp) is a discovery port.
    let ports: Vec<u16> = t.discovery_ports.iter().map(|p| p.number).collect();
    assert_eq!(ports, [9080]);
    assert_eq!(
        t.labels.get("istio").map(String::as_str),
        Some("productpage")
    );
}

#[test]
fn the_all_pods_status_is_an_array_of_the_same() {
    let one = String::from_utf8(read(STATUS)).expect("utf8");
    let all = parse_pod_statuses(format!("[{one},{one}]").as_bytes()).expect("array");
    assert_eq!(all.len(), 2);
    assert!(parse_pod_statuses(b"[]").expect("no pods").is_empty());
}

#[test]
fn documented_pod_definitions_parse_and_classify() {
    let docs = String::from_utf8(read(
        "apps/pod-definition-networks-container-labels.marathon-docs.json",
    ))
    .expect("utf8");
    let system = String::from_utf8(read(
        "apps/pod-container-network-unnamed.marathon-systemtest.json",
    ))
    .expect("utf8");
    let pods = parse_pods(format!("[{docs},{system}]").as_bytes()).expect("/v2/pods list");
    assert_eq!(pods.len(), 2);
    let docs = pods[0].config();
    assert_eq!(docs.network, NetworkKind::PerTask);
    assert_eq!(
        docs.pod_labels.get("owner").map(String::as_str),
        Some("zeus")
    );
    assert!(
        docs.network_labels.is_empty(),
        "labels: {{}} on the network"
    );
    // hostPort 0 + containerPort 80, protocol tcp.
    assert_eq!(
        docs.discovery_ports
            .iter()
            .map(|p| p.number)
            .collect::<Vec<_>>(),
        [80]
    );
    let system = pods[1].config();
    assert_eq!(system.network, NetworkKind::PerTask);
    // `protocol: ["http"]` is tcp.
    assert_eq!(system.discovery_ports.len(), 1);
}

#[test]
fn a_status_whose_containers_all_ended_is_not_enforced() {
    let text = String::from_utf8(read(STATUS))
        .expect("utf8")
        .replace("TASK_RUNNING", "TASK_KILLED");
    let status = parse_pod_status(text.as_bytes()).expect("parses");
    let spec = status.spec.as_ref().expect("spec");
    let tasks = convert_pod(
        &status.id,
        &status.instances,
        spec.version.as_deref(),
        &spec.config(),
        |_| None,
        &GroupsConfig::default(),
    );
    assert_eq!(tasks[0].not_enforced, Some(NotEnforced::Terminal));
}
