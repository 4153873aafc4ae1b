//! The simulated master's JSON, in the field order and label shapes of the
//! captures (docs/FORMATS.md §4, §5): v1 operator API objects (protobuf-JSON: ids
//! are `{"value": …}`, labels `{"labels": […]}`) and `/master/state`
//! (ids are strings, task and status labels are arrays, but
//! `container.network_infos[].labels` keep the object form).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::cluster::{is_terminal, Agent, Cluster, FrameworkRec, ReportedNet, Status, TaskRec};
use super::json::{id, obj, s, J};

const AGENT_PORT: i64 = 5051;

fn label_list(labels: &BTreeMap<String, String>) -> J {
    J::Arr(
        labels
            .iter()
            .map(|(k, v)| obj(vec![("key", s(k)), ("value", s(v))]))
            .collect(),
    )
}

/// Protobuf `Labels`: `{"labels": [{key, value}]}`.
fn labels_object(labels: &BTreeMap<String, String>) -> J {
    obj(vec![("labels", label_list(labels))])
}

fn protocol(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn ip_addresses(ips: &[IpAddr]) -> J {
    J::Arr(
        ips.iter()
            .map(|ip| {
                obj(vec![
                    ("protocol", s(protocol(ip))),
                    ("ip_address", s(ip.to_string())),
                ])
            })
            .collect(),
    )
}

pub(crate) fn agent_info(agent: &Agent) -> J {
    obj(vec![
        ("hostname", s(&agent.hostname)),
        ("port", J::Int(AGENT_PORT)),
        ("id", id(&agent.id)),
    ])
}

pub(crate) fn agent_v1(agent: &Agent) -> J {
    obj(vec![
        ("agent_info", agent_info(agent)),
        ("active", J::Bool(true)),
        ("version", s(super::MESOS_VERSION)),
        ("pid", s(agent_pid(agent))),
    ])
}

fn agent_pid(agent: &Agent) -> String {
    format!("slave(1)@{}:{AGENT_PORT}", agent.hostname)
}

pub(crate) fn framework_info(framework: &FrameworkRec) -> J {
    obj(vec![
        ("user", s("root")),
        ("name", s(&framework.name)),
        ("id", id(&framework.id)),
        ("failover_timeout", J::Float(604800.0)),
        ("checkpoint", J::Bool(true)),
        ("hostname", s("127.0.0.1")),
    ])
}

pub(crate) fn framework_v1(framework: &FrameworkRec) -> J {
    obj(vec![
        ("framework_info", framework_info(framework)),
        ("active", J::Bool(true)),
        ("connected", J::Bool(true)),
        ("recovered", J::Bool(false)),
    ])
}

/// `ContainerInfo` as the scheduler sent it (the same in both APIs):
/// groups live here, IPs do not (docs/FORMATS.md §8.2). Host-networked tasks
/// without Docker have none.
fn container(task: &TaskRec) -> Option<J> {
    let spec = &task.spec;
    if spec.docker_network.is_none() && spec.network_infos.is_empty() {
        return None;
    }
    let docker = spec.docker_network.is_some();
    let mut out = obj(vec![("type", s(if docker { "DOCKER" } else { "MESOS" }))]);
    if let Some(network) = &spec.docker_network {
        out.push(
            "docker",
            obj(vec![
                ("image", s("mesos-sim/image")),
                ("network", s(network.to_ascii_uppercase())),
                ("privileged", J::Bool(false)),
                ("force_pull_image", J::Bool(false)),
            ]),
        );
    }
    if !spec.network_infos.is_empty() {
        let infos = spec
            .network_infos
            .iter()
            .map(|n| {
                let mut info = obj(Vec::new());
                // UCR requests an address per NetworkInfo (`[{"protocol":
                // "IPv4"}]` in the 1.8 capture); Docker ones carry a name only.
                if !docker {
                    let v6 = n.ip_addresses.iter().any(IpAddr::is_ipv6);
                    let v4 = n.ip_addresses.iter().any(IpAddr::is_ipv4) || !v6;
                    let mut requested = Vec::new();
                    if v4 {
                        requested.push(obj(vec![("protocol", s("IPv4"))]));
                    }
                    if v6 {
                        requested.push(obj(vec![("protocol", s("IPv6"))]));
                    }
                    info.push("ip_addresses", J::Arr(requested));
                }
                if let Some(name) = &n.name {
                    info.push("name", s(name));
                }
                if !n.groups.is_empty() {
                    info.push("groups", J::Arr(n.groups.iter().map(s).collect()));
                }
                if !n.labels.is_empty() {
                    info.push("labels", labels_object(&n.labels));
                }
                info
            })
            .collect();
        out.push("network_infos", J::Arr(infos));
    }
    Some(out)
}

fn discovery(task: &TaskRec) -> Option<J> {
    let spec = &task.spec;
    if spec.discovery.is_empty() {
        return None;
    }
    let network = spec.network_infos.iter().find_map(|n| n.name.clone());
    let ports = spec
        .discovery
        .iter()
        .map(|p| {
            let mut port = obj(vec![("number", J::Int(i64::from(p.number)))]);
            if let Some(name) = &p.name {
                port.push("name", s(name));
            }
            port.push("protocol", s(p.protocol.as_deref().unwrap_or("tcp")));
            let mut labels = BTreeMap::new();
            match &network {
                Some(name) => {
                    labels.insert("network-scope".to_string(), "container".to_string());
                    labels.insert("network-name".to_string(), name.clone());
                }
                None => {
                    labels.insert("network-scope".to_string(), "host".to_string());
                }
            }
            port.push("labels", labels_object(&labels));
            port
        })
        .collect();
    Some(obj(vec![
        ("visibility", s("FRAMEWORK")),
        ("name", s(task.name())),
        ("ports", obj(vec![("ports", J::Arr(ports))])),
    ]))
}

/// `network_infos[]` of a status; `array_labels` for `/master/state`.
fn reported(networks: &[ReportedNet], array_labels: bool) -> J {
    J::Arr(
        networks
            .iter()
            .map(|n| {
                let mut info = obj(Vec::new());
                if array_labels {
                    // 1.0+ masters write `labels: []` even when empty.
                    info.push("labels", label_list(&n.labels));
                }
                if !n.ips.is_empty() {
                    info.push("ip_addresses", ip_addresses(&n.ips));
                }
                if let Some(name) = &n.name {
                    info.push("name", s(name));
                }
                if !array_labels && !n.labels.is_empty() {
                    info.push("labels", labels_object(&n.labels));
                }
                info
            })
            .collect(),
    )
}

fn container_status(task: &TaskRec, status: &Status, array_labels: bool) -> Option<J> {
    if status.state == "TASK_STAGING" {
        return None;
    }
    let mut out = obj(vec![("container_id", id(&task.container_id))]);
    if !status.networks.is_empty() {
        out.push("network_infos", reported(&status.networks, array_labels));
    }
    Some(out)
}

/// A v1 `TaskStatus` (the shape of `task_updated.status`).
fn status_v1(task: &TaskRec, status: &Status) -> J {
    let source = if status.state == "TASK_LOST" || status.state == "TASK_UNREACHABLE" {
        "SOURCE_MASTER"
    } else {
        "SOURCE_EXECUTOR"
    };
    let mut out = obj(vec![
        ("task_id", id(&task.spec.id)),
        ("state", s(&status.state)),
        ("source", s(source)),
        ("agent_id", id(&task.spec.agent)),
        ("timestamp", J::Float(status.timestamp)),
        ("uuid", s(&status.uuid)),
    ]);
    if let Some(cs) = container_status(task, status, false) {
        out.push("container_status", cs);
    }
    out
}

/// `task_updated`: framework id, the status just received, the state.
pub(crate) fn task_updated(task: &TaskRec) -> J {
    let mut out = obj(vec![("framework_id", id(task.framework()))]);
    if let Some(status) = task.statuses.last() {
        out.push("status", status_v1(task, status));
    }
    out.push("state", s(&task.state));
    out
}

/// A v1 `Task` (TASK_ADDED carries no statuses yet; GET_STATE does).
pub(crate) fn task_v1(task: &TaskRec, with_statuses: bool) -> J {
    let mut out = obj(vec![
        ("name", s(task.name())),
        ("task_id", id(&task.spec.id)),
        ("framework_id", id(task.framework())),
        ("agent_id", id(&task.spec.agent)),
        ("state", s(&task.state)),
    ]);
    if with_statuses && !task.statuses.is_empty() {
        let statuses = task.statuses.iter().map(|st| status_v1(task, st)).collect();
        out.push("statuses", J::Arr(statuses));
    }
    if !task.spec.labels.is_empty() {
        out.push("labels", labels_object(&task.spec.labels));
    }
    if let Some(d) = discovery(task) {
        out.push("discovery", d);
    }
    if let Some(c) = container(task) {
        out.push("container", c);
    }
    out
}

/// `GET_STATE`'s `get_state` (also `subscribed.get_state`). Empty repeated
/// fields are omitted, as Mesos does (`"get_tasks":{}`).
pub(crate) fn get_state(cluster: &Cluster) -> J {
    let mut tasks = obj(Vec::new());
    let (unreachable, live): (Vec<&TaskRec>, Vec<&TaskRec>) = cluster
        .tasks
        .iter()
        .partition(|t| t.state == "TASK_UNREACHABLE");
    for (key, list) in [
        ("tasks", live),
        ("unreachable_tasks", unreachable),
        ("completed_tasks", cluster.completed.iter().collect()),
    ] {
        if !list.is_empty() {
            tasks.push(key, J::Arr(list.iter().map(|t| task_v1(t, true)).collect()));
        }
    }
    let mut frameworks = obj(Vec::new());
    if !cluster.frameworks.is_empty() {
        let list = cluster.frameworks.iter().map(framework_v1).collect();
        frameworks.push("frameworks", J::Arr(list));
    }
    let mut agents = obj(Vec::new());
    if !cluster.agents.is_empty() {
        agents.push(
            "agents",
            J::Arr(cluster.agents.iter().map(agent_v1).collect()),
        );
    }
    obj(vec![
        ("get_tasks", tasks),
        ("get_executors", obj(Vec::new())),
        ("get_frameworks", frameworks),
        ("get_agents", agents),
    ])
}

pub(crate) fn subscribed(cluster: &Cluster, heartbeat_secs: f64) -> String {
    obj(vec![
        ("type", s("SUBSCRIBED")),
        (
            "subscribed",
            obj(vec![
                ("get_state", get_state(cluster)),
                ("heartbeat_interval_seconds", J::Float(heartbeat_secs)),
            ]),
        ),
    ])
    .render()
}

pub(crate) fn get_state_response(cluster: &Cluster) -> String {
    obj(vec![
        ("type", s("GET_STATE")),
        ("get_state", get_state(cluster)),
    ])
    .render()
}

fn task_state(task: &TaskRec) -> J {
    let mut out = obj(vec![
        ("id", s(&task.spec.id)),
        ("name", s(task.name())),
        ("framework_id", s(task.framework())),
        ("executor_id", s("")),
        ("slave_id", s(&task.spec.agent)),
        ("state", s(&task.state)),
    ]);
    let statuses = task
        .statuses
        .iter()
        .map(|st| {
            let mut status = obj(vec![
                ("state", s(&st.state)),
                ("timestamp", J::Float(st.timestamp)),
            ]);
            if let Some(cs) = container_status(task, st, true) {
                status.push("container_status", cs);
            }
            status
        })
        .collect();
    out.push("statuses", J::Arr(statuses));
    if !task.spec.labels.is_empty() {
        out.push("labels", label_list(&task.spec.labels));
    }
    if let Some(d) = discovery(task) {
        out.push("discovery", d);
    }
    if let Some(c) = container(task) {
        out.push("container", c);
    }
    out
}

/// `GET /master/state` (1.x shape; what groupd reads plus the fields that
/// identify the master).
pub(crate) fn master_state(cluster: &Cluster, addr: SocketAddr, master_id: &str) -> String {
    let host = addr.ip().to_string();
    let pid = format!("master@{addr}");
    let slaves = cluster
        .agents
        .iter()
        .map(|a| {
            obj(vec![
                ("id", s(&a.id)),
                ("hostname", s(&a.hostname)),
                ("port", J::Int(AGENT_PORT)),
                ("pid", s(agent_pid(a))),
                ("active", J::Bool(true)),
                ("version", s(super::MESOS_VERSION)),
            ])
        })
        .collect();
    let frameworks = cluster
        .frameworks
        .iter()
        .map(|f| {
            let mine = |t: &&TaskRec| t.framework() == f.id;
            let live = |unreachable: bool| {
                J::Arr(
                    cluster
                        .tasks
                        .iter()
                        .filter(mine)
                        .filter(|t| (t.state == "TASK_UNREACHABLE") == unreachable)
                        .map(task_state)
                        .collect(),
                )
            };
            let completed = cluster
                .completed
                .iter()
                .filter(mine)
                .filter(|t| is_terminal(&t.state))
                .map(task_state)
                .collect();
            obj(vec![
                ("id", s(&f.id)),
                ("name", s(&f.name)),
                ("hostname", s("127.0.0.1")),
                ("active", J::Bool(true)),
                ("connected", J::Bool(true)),
                ("recovered", J::Bool(false)),
                ("user", s("root")),
                ("failover_timeout", J::Float(604800.0)),
                ("checkpoint", J::Bool(true)),
                ("tasks", live(false)),
                ("unreachable_tasks", live(true)),
                ("completed_tasks", J::Arr(completed)),
            ])
        })
        .collect();
    obj(vec![
        ("version", s(super::MESOS_VERSION)),
        ("git_sha", s("mesos-sim")),
        ("id", s(master_id)),
        ("pid", s(&pid)),
        ("hostname", s(&host)),
        ("activated_slaves", J::Float(cluster.agents.len() as f64)),
        ("deactivated_slaves", J::Float(0.0)),
        ("leader", s(&pid)),
        (
            "leader_info",
            obj(vec![
                ("id", s(master_id)),
                ("pid", s(&pid)),
                ("port", J::Int(i64::from(addr.port()))),
                ("hostname", s(&host)),
            ]),
        ),
        ("slaves", J::Arr(slaves)),
        ("frameworks", J::Arr(frameworks)),
        ("completed_frameworks", J::Arr(Vec::new())),
        ("orphan_tasks", J::Arr(Vec::new())),
        ("unregistered_frameworks", J::Arr(Vec::new())),
    ])
    .render()
}
