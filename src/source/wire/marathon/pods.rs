//! Marathon pods (1.4+): `GET /v2/pods` (definitions), `GET /v2/pods/::status`
//! and `GET /v2/pods/{id}::status` (instances), and their conversion to
//! [`Task`]s. Shapes: Marathon's RAML `pod.raml`, `podStatus.raml`
//! (`PodStatus`, `PodInstanceStatus`, `NetworkStatus`) and the captured
//! status under `tests/fixtures/marathon/pods/`.
//!
//! **One pod instance is ONE task**, keyed by the instance id
//! (`<pod>.instance-<uuid>`). The containers of an instance share its
//! network namespace and therefore its addresses (`instances[].networks[]
//! .addresses`); the Mesos task ids of the containers
//! (`<instance id>.<container>`) only say which container a status event is
//! about. Modelling each container as a task of its own would put several
//! live endpoints on one IP, which the daemon treats as an IP conflict, and
//! an IP would be released only when the last of them was removed; one task
//! per instance keeps "one IP, one owner" and removes the IP exactly when the
//! instance goes.
//!
//! Groups come from the pod version that launched the instance (its
//! `specReference`), like app tasks: the `label_key` label of the pod's
//! `networks[].labels`, falling back to the pod's `labels` (pods never had
//! `ipAddress.groups`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;

use super::super::{
    assign_groups, classify, new_task, null_as_default, parse_ip, port_number, GroupInputs,
    NetworkKind, Notes,
};
use super::{networks_kind, NetworkSpec};
use crate::config::GroupsConfig;
use crate::model::{DiscoveryPort, Protocol, Task, TaskState, VecMap, VecSet};

/// A pod definition (`GET /v2/pods` lists them; `spec` of a status).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub id: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    /// `[{mode: host}]` when absent (Marathon's default).
    #[serde(default, deserialize_with = "null_as_default")]
    pub networks: Vec<NetworkSpec>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub containers: Vec<PodContainer>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodContainer {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoints: Vec<PodEndpoint>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodEndpoint {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub container_port: Option<serde_json::Number>,
    /// `["tcp"]`, `["udp", "tcp"]`, `["http"]`...
    #[serde(default, deserialize_with = "null_as_default")]
    pub protocol: Vec<String>,
}

/// One pod's status (`GET /v2/pods/{id}::status`; `/v2/pods/::status` is an
/// array of them).
#[derive(Debug, Clone, Deserialize)]
pub struct PodStatus {
    pub id: String,
    /// The pod's latest definition.
    #[serde(default)]
    pub spec: Option<Pod>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub instances: Vec<PodInstance>,
}

/// `PodInstanceStatus`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodInstance {
    pub id: String,
    /// `PENDING`, `STAGING`, `STABLE`, `DEGRADED`, `TERMINAL`.
    #[serde(default)]
    pub status: Option<String>,
    /// The Mesos agent id (later releases; 1.4 has only `agent`, a hostname).
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub agent_hostname: Option<String>,
    #[serde(default)]
    pub networks: Vec<NetworkStatus>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub containers: Vec<PodContainerStatus>,
    /// `/v2/pods/{id}::versions/{version}`: the version that launched it.
    #[serde(default)]
    pub spec_reference: Option<String>,
}

/// `NetworkStatus`: the addresses the instance has on one network.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetworkStatus {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub addresses: Vec<String>,
}

/// `ContainerStatus`: one container (one Mesos task) of an instance.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodContainerStatus {
    #[serde(default)]
    pub name: Option<String>,
    /// A Mesos task state (`TASK_RUNNING`...).
    #[serde(default)]
    pub status: Option<String>,
    /// The container's Mesos task id (`<instance id>.<name>`).
    #[serde(default)]
    pub container_id: Option<String>,
}

/// What an instance inherits from the pod version that launched it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodConfig {
    pub network: NetworkKind,
    /// Every `networks[].labels` entry.
    pub network_labels: Vec<(String, String)>,
    pub pod_labels: VecMap<String, String>,
    /// Container ports of the endpoints (R9); only for container networks.
    pub discovery_ports: VecSet<DiscoveryPort>,
}

impl Pod {
    pub fn config(&self) -> PodConfig {
        let network = networks_kind(&self.networks).unwrap_or(NetworkKind::Host);
        PodConfig {
            network,
            network_labels: self
                .networks
                .iter()
                .flat_map(|n| n.labels.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            pod_labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            discovery_ports: if network == NetworkKind::PerTask {
                self.discovery_ports()
            } else {
                VecSet::new()
            },
        }
    }

    fn discovery_ports(&self) -> VecSet<DiscoveryPort> {
        let mut ports = VecSet::new();
        for endpoint in self.containers.iter().flat_map(|c| c.endpoints.iter()) {
            let Some(number) = endpoint.container_port.as_ref().and_then(port_number) else {
                continue;
            };
            // Absent means tcp; `http` is an application protocol over tcp.
            let mut protocols: Vec<Protocol> = endpoint
                .protocol
                .iter()
                .filter_map(|p| match p.trim().to_ascii_lowercase().as_str() {
                    "tcp" | "http" | "https" | "http2" | "grpc" => Some(Protocol::Tcp),
                    "udp" => Some(Protocol::Udp),
                    _ => None,
                })
                .collect();
            if endpoint.protocol.is_empty() {
                protocols.push(Protocol::Tcp);
            }
            for protocol in protocols {
                ports.insert(DiscoveryPort {
                    number,
                    protocol,
                    name: endpoint.name.clone(),
                });
            }
        }
        ports
    }
}

impl PodInstance {
    /// The version named by `specReference`, when it names one.
    pub fn launch_version(&self) -> Option<&str> {
        let reference = self.spec_reference.as_deref()?;
        let (_, version) = reference.rsplit_once("::versions/")?;
        let version = version.trim();
        (!version.is_empty()).then_some(version)
    }

    /// The instance as a whole: live while any container is; without
    /// container statuses (not launched yet) from the instance status.
    fn state(&self) -> TaskState {
        let states: Vec<TaskState> = self
            .containers
            .iter()
            .filter_map(|c| c.status.as_deref())
            .map(TaskState::parse)
            .collect();
        if let Some(running) = states.iter().find(|s| **s == TaskState::Running) {
            return running.clone();
        }
        if let Some(live) = states.iter().find(|s| !s.is_terminal()) {
            return live.clone();
        }
        if let Some(ended) = states.into_iter().next() {
            return ended;
        }
        match self.status.as_deref().map(str::trim) {
            Some("STABLE") | Some("DEGRADED") => TaskState::Running,
            // Shutting down: the containers may still hold the address.
            Some("TERMINAL") => TaskState::Killing,
            _ => TaskState::Staging,
        }
    }
}

/// How a document failed to read, for the degraded reason.
fn describe(e: &serde_json::Error, what: &str, bytes: &[u8]) -> String {
    use serde_json::error::Category;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return format!("empty body instead of {what}");
    }
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Eof => format!("truncated JSON: the body ends at {at} before {what} is complete"),
        Category::Syntax | Category::Io => format!("malformed JSON at {at}: {e}"),
        Category::Data => format!("not {what} ({e})"),
    }
}

/// `GET /v2/pods`: a JSON array of pod definitions.
pub fn parse_pods(bytes: &[u8]) -> Result<Vec<Pod>, String> {
    serde_json::from_slice(bytes).map_err(|e| describe(&e, "a Marathon /v2/pods list", bytes))
}

/// `GET /v2/pods/::status`: a JSON array of pod statuses.
pub fn parse_pod_statuses(bytes: &[u8]) -> Result<Vec<PodStatus>, String> {
    serde_json::from_slice(bytes)
        .map_err(|e| describe(&e, "a Marathon /v2/pods/::status list", bytes))
}

/// `GET /v2/pods/{id}::status`: one pod status.
pub fn parse_pod_status(bytes: &[u8]) -> Result<PodStatus, String> {
    serde_json::from_slice(bytes).map_err(|e| describe(&e, "a Marathon pod status", bytes))
}

/// `/v2/pods/{id}::status` for pod `/a/b` (characters outside the ones pod
/// ids use are percent-encoded).
pub fn pod_status_path(pod_id: &str) -> String {
    format!("/v2/pods/{}::status", encode_id(pod_id))
}

/// `/v2/pods/{id}::versions/{version}`: a pod definition as it was.
pub fn pod_version_path(pod_id: &str, version: &str) -> String {
    format!(
        "/v2/pods/{}::versions/{}",
        encode_id(pod_id),
        encode_id(version)
    )
}

fn encode_id(text: &str) -> String {
    text.trim_start_matches('/')
        .bytes()
        .map(|b| match b {
            b'a'..=b'z'
            | b'A'..=b'Z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'/'
            | b':'
            | b'+' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The pod id a `pod_*_event` is about: its `uri` is `/v2/pods/{id}`
/// (Marathon's event-bus docs: `"uri":"/v2/pods/my-pod"`).
pub fn pod_id_from_uri(uri: &str) -> Option<String> {
    let rest = uri.trim().strip_prefix("/v2/pods/")?;
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let id = rest.split("::").next().unwrap_or(rest).trim_matches('/');
    (!id.is_empty()).then(|| format!("/{id}"))
}

/// The tasks of one pod: one per instance. `current` is the pod's current
/// configuration; `launched` looks up the configuration of an older version
/// (`None`: unknown, the instance is treated as ungrouped with a note).
pub fn convert_pod<'a>(
    pod_id: &str,
    instances: &[PodInstance],
    current_version: Option<&str>,
    current: &PodConfig,
    launched: impl Fn(&str) -> Option<&'a PodConfig>,
    groups: &GroupsConfig,
) -> Vec<Task> {
    let app: Arc<str> = Arc::from(pod_id);
    instances
        .iter()
        .map(|instance| {
            let launch = match instance.launch_version() {
                None => Ok(current),
                Some(v) if Some(v) == current_version.map(str::trim) => Ok(current),
                Some(v) => launched(v).ok_or(v),
            };
            convert_instance(&app, instance, launch, current, current_version, groups)
        })
        .collect()
}

fn convert_instance(
    pod_id: &Arc<str>,
    instance: &PodInstance,
    launch: Result<&PodConfig, &str>,
    current: &PodConfig,
    current_version: Option<&str>,
    groups: &GroupsConfig,
) -> Task {
    let mut out = new_task(
        &instance.id,
        Arc::clone(pod_id),
        instance.agent_id.as_deref(),
        instance.state(),
    );
    let mut notes = Notes::default();
    let config = launch.unwrap_or(current);
    out.ips = instance_ips(instance, config.network, &mut notes);
    out.labels = config.pod_labels.clone();
    match launch {
        Ok(config) => {
            let inputs = GroupInputs {
                lists: Vec::new(),
                network_labels: config
                    .network_labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
                task_labels: config
                    .pod_labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            };
            assign_groups(&mut out, &inputs, groups);
            out.discovery_ports = config.discovery_ports.clone();
        }
        Err(version) => notes.push(format!(
            "launched by pod version {version} whose groups are unknown to groupd (the pod is now at version {}); treated as ungrouped",
            current_version.unwrap_or("unknown")
        )),
    }
    out.not_enforced = classify(config.network, &out.state, !out.ips.is_empty());
    out.note = notes.into_note();
    out
}

/// Every address of every network of the instance. As for app tasks, an
/// address equal to the agent's own (reported before the container network
/// is attached) is dropped on a container network.
fn instance_ips(instance: &PodInstance, network: NetworkKind, notes: &mut Notes) -> VecSet<IpAddr> {
    let agent_ip = instance.agent_hostname.as_deref().and_then(parse_ip);
    let mut ips = VecSet::new();
    for text in instance.networks.iter().flat_map(|n| n.addresses.iter()) {
        match parse_ip(text) {
            Some(ip) if network == NetworkKind::PerTask && Some(ip) == agent_ip => {
                notes.push(format!("ignored {ip}: it is the agent's own address, reported before the container network was attached"));
            }
            Some(ip) => {
                ips.insert(ip);
            }
            None => notes.push(format!("ignored unparseable IP address {text:?}")),
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GroupOrigin, NotEnforced};

    fn status(json: &str) -> PodStatus {
        parse_pod_status(json.as_bytes()).expect("a pod status")
    }

    fn convert(s: &PodStatus) -> Vec<Task> {
        let spec = s.spec.as_ref().expect("spec");
        let current = spec.config();
        convert_pod(
            &s.id,
            &s.instances,
            spec.version.as_deref(),
            &current,
            |_| None,
            &GroupsConfig::default(),
        )
    }

    const LABELLED: &str = r#"{"id":"/p","spec":{"id":"/p","version":"v2","labels":{"network-groups":"pod-level"},
        "networks":[{"mode":"container","name":"dcos","labels":{"network-groups":"web, db"}}],
        "containers":[{"name":"a","endpoints":[{"name":"h","containerPort":8080,"protocol":["http"]}]},{"name":"b"}]},
        "instances":[{"id":"p.instance-1","status":"STABLE","agentId":"S1","agentHostname":"10.0.0.1",
          "networks":[{"name":"dcos","addresses":["10.233.5.5"]}],
          "containers":[{"name":"a","status":"TASK_RUNNING","containerId":"p.instance-1.a"},
                        {"name":"b","status":"TASK_RUNNING","containerId":"p.instance-1.b"}],
          "specReference":"/v2/pods/p::versions/v2"}]}"#;

    #[test]
    fn an_instance_is_one_endpoint_with_the_network_label_groups() {
        let tasks = convert(&status(LABELLED));
        assert_eq!(tasks.len(), 1, "two containers, one instance, one task");
        let t = &tasks[0];
        assert_eq!(&*t.id, "p.instance-1");
        assert_eq!(&*t.app, "/p");
        assert_eq!(t.agent.as_deref(), Some("S1"));
        assert!(t.is_endpoint(), "{t:?}");
        let names: Vec<&str> = t.groups.keys().map(|g| g.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        assert!(t.groups["web"].contains(&GroupOrigin::NetworkLabel));
        assert_eq!(t.discovery_ports.len(), 1);
    }

    #[test]
    fn pod_labels_are_the_fallback_and_host_pods_are_not_endpoints() {
        let fallback =
            LABELLED.replace(r#""labels":{"network-groups":"web, db"}"#, r#""labels":{}"#);
        let t = &convert(&status(&fallback))[0];
        assert!(t.groups["pod-level"].contains(&GroupOrigin::TaskLabel));
        let host = LABELLED.replace(r#""mode":"container","name":"dcos""#, r#""mode":"host""#);
        let t = &convert(&status(&host))[0];
        assert_eq!(t.not_enforced, Some(NotEnforced::HostNetwork));
    }

    #[test]
    fn an_instance_of_an_unknown_older_version_is_ungrouped_with_a_note() {
        let old = LABELLED.replace("::versions/v2", "::versions/v1");
        let t = &convert(&status(&old))[0];
        assert!(t.groups.is_empty());
        assert!(t.note.as_deref().unwrap_or("").contains("pod version v1"));
        assert!(t.is_endpoint(), "its IP is still its own");
    }

    #[test]
    fn instance_state_follows_its_containers() {
        let killed = LABELLED.replace("TASK_RUNNING", "TASK_KILLED");
        let t = &convert(&status(&killed))[0];
        assert_eq!(t.not_enforced, Some(NotEnforced::Terminal));
        let one_left = LABELLED.replacen("TASK_RUNNING", "TASK_FINISHED", 1);
        assert!(convert(&status(&one_left))[0].is_endpoint());
        let pending = r#"{"id":"/p","spec":{"id":"/p","networks":[{"mode":"container"}]},
            "instances":[{"id":"p.instance-2","status":"PENDING"}]}"#;
        let t = &convert(&status(pending))[0];
        assert_eq!(t.state, TaskState::Staging);
        assert_eq!(t.not_enforced, Some(NotEnforced::NoAddress));
    }

    #[test]
    fn the_agents_own_address_and_garbage_addresses_are_dropped() {
        let odd = LABELLED.replace(
            r#""addresses":["10.233.5.5"]"#,
            r#""addresses":["10.0.0.1","nope","fd00:233::5"]"#,
        );
        let t = &convert(&status(&odd))[0];
        assert_eq!(t.ips.len(), 1);
        let note = t.note.as_deref().unwrap_or("");
        assert!(
            note.contains("agent's own address") && note.contains("\"nope\""),
            "{note}"
        );
    }

    #[test]
    fn wrong_types_reject_the_document() {
        assert!(parse_pod_status(br#"{"id":"/p","instances":[{"id":7}]}"#).is_err());
        assert!(parse_pod_statuses(b"{}")
            .unwrap_err()
            .contains("/v2/pods/::status"));
        assert!(parse_pods(b"").unwrap_err().contains("empty body"));
        assert!(parse_pods(b"[{\"id\":\"/p\"")
            .unwrap_err()
            .contains("truncated"));
    }

    #[test]
    fn paths_and_event_uris() {
        assert_eq!(pod_status_path("/prod/web"), "/v2/pods/prod/web::status");
        assert_eq!(
            pod_version_path("/a b", "2019-05-21T10:43:34.737Z"),
            "/v2/pods/a%20b::versions/2019-05-21T10:43:34.737Z"
        );
        assert_eq!(
            pod_id_from_uri("/v2/pods/my-pod").as_deref(),
            Some("/my-pod")
        );
        assert_eq!(
            pod_id_from_uri("/v2/pods/a/b::status").as_deref(),
            Some("/a/b")
        );
        assert_eq!(pod_id_from_uri("/v2/apps/x"), None);
        assert_eq!(pod_id_from_uri("/v2/pods/"), None);
    }
}
