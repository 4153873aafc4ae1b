//! JSON the simulator serves and streams: app definitions, tasks and events,
//! in the shapes of the fixtures under `tests/fixtures/marathon/`.
//!
//! Events are written with a fixed key order (the fields of the event first,
//! `eventType` and `timestamp` last, as in the real stream captures
//! `sse-stream-docs-example` and `sse-single-event-crlf`): serde_json's `Map`
//! sorts keys, so event objects are assembled by [`ordered`] instead.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::marathon::{Network, PortSpec};

/// Marathon's timestamp format: `2017-07-19T17:34:41.967Z` (UTC, milliseconds).
pub fn iso_millis(unix_millis: u64) -> String {
    let secs = unix_millis / 1000;
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        unix_millis % 1000
    )
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_iso() -> String {
    iso_millis(now_millis())
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`; no date crate is a dependency).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A JSON object with its keys in the given order.
pub fn ordered(fields: &[(&str, Value)]) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Serialising a str or a Value cannot fail.
        out.push_str(&serde_json::to_string(key).unwrap_or_default());
        out.push(':');
        out.push_str(&serde_json::to_string(value).unwrap_or_default());
    }
    out.push('}');
    out
}

/// One entry of `task.ipAddresses` / `status_update_event.ipAddresses`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpEntry {
    pub ip_address: String,
    #[serde(default = "ipv4")]
    pub protocol: String,
}

fn ipv4() -> String {
    "IPv4".to_string()
}

impl From<IpAddr> for IpEntry {
    fn from(ip: IpAddr) -> IpEntry {
        IpEntry {
            ip_address: ip.to_string(),
            protocol: if ip.is_ipv4() { "IPv4" } else { "IPv6" }.to_string(),
        }
    }
}

/// One task as `/v2/apps?embed=apps.tasks` and `/v2/tasks` list it. Field
/// order as in `apps-embed-tasks-1.5-container-bridge`; `extra` keeps fields
/// of fixture tasks the simulator does not model (healthCheckResults...).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimTask {
    /// Omitted while no IP is known, like Marathon does (docs/FORMATS.md §2).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<IpEntry>,
    pub staged_at: String,
    pub state: String,
    pub ports: Vec<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The app version that launched this task.
    pub version: String,
    pub id: String,
    pub app_id: String,
    pub slave_id: String,
    pub host: String,
    pub service_ports: Vec<u16>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The parts of an app definition that are not about networking, as a
/// Marathon 1.4 app without a command runner would show them.
pub fn base_definition(instances: usize, labels: &Value) -> Map<String, Value> {
    let base = json!({
        "cmd": "python3 -m http.server 8080",
        "args": null,
        "user": null,
        "env": {},
        "instances": instances,
        "cpus": 0.1,
        "mem": 32,
        "disk": 0,
        "gpus": 0,
        "executor": "",
        "constraints": [],
        "uris": [],
        "fetch": [],
        "storeUrls": [],
        "backoffSeconds": 1,
        "backoffFactor": 1.15,
        "maxLaunchDelaySeconds": 3600,
        "healthChecks": [],
        "readinessChecks": [],
        "dependencies": [],
        "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 1},
        "labels": labels,
        "acceptedResourceRoles": null,
        "requirePorts": false,
        "killSelection": "YOUNGEST_FIRST",
        "unreachableStrategy": {"inactiveAfterSeconds": 300, "expungeAfterSeconds": 600},
    });
    match base {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The keys that say how an app is networked; replaced as a whole when a new
/// version changes the network.
pub const NETWORK_KEYS: [&str; 5] = [
    "ipAddress",
    "networks",
    "container",
    "portDefinitions",
    "ports",
];

/// The networking keys of a definition for `network`.
///
/// `groups` become `ipAddress.groups` only for [`Network::IpPerTask`] (the
/// Marathon 0.14–1.4 API). Marathon 1.5+ (`networks[]`) accepts groups but
/// never returns them (docs/FORMATS.md §1.2): they are dropped here too, and a
/// 1.5 app says its groups with labels.
pub fn network_fields(
    network: &Network,
    groups: &[String],
    discovery: &[PortSpec],
) -> Vec<(&'static str, Value)> {
    let protocol = |p: &PortSpec| p.protocol.clone().unwrap_or_else(|| "tcp".into());
    match network {
        Network::IpPerTask => {
            let ports: Vec<Value> = discovery
                .iter()
                .map(|p| json!({"number": p.number, "name": p.name, "protocol": protocol(p)}))
                .collect();
            vec![
                (
                    "ipAddress",
                    json!({"groups": groups, "labels": {}, "discovery": {"ports": ports}}),
                ),
                ("container", Value::Null),
                ("portDefinitions", json!([])),
                ("ports", json!([])),
            ]
        }
        Network::Host => {
            let defs: Vec<Value> = service_ports(discovery)
                .map(|(i, p)| {
                    json!({"port": 10_000 + i, "protocol": protocol(p), "name": p.name, "labels": {}})
                })
                .collect();
            let ports: Vec<Value> = (0..defs.len()).map(|i| json!(10_000 + i)).collect();
            vec![
                ("ipAddress", Value::Null),
                ("container", Value::Null),
                ("portDefinitions", Value::Array(defs)),
                ("ports", Value::Array(ports)),
            ]
        }
        Network::DockerBridge => {
            let mappings: Vec<Value> = service_ports(discovery)
                .map(|(i, p)| {
                    json!({"containerPort": p.number, "hostPort": 0, "servicePort": 10_000 + i,
                           "protocol": protocol(p)})
                })
                .collect();
            vec![
                ("ipAddress", Value::Null),
                (
                    "container",
                    json!({"type": "DOCKER", "volumes": [], "docker": {
                        "image": "python:3", "network": "BRIDGE", "portMappings": mappings,
                        "privileged": false, "parameters": [], "forcePullImage": false}}),
                ),
                ("portDefinitions", json!([])),
                ("ports", json!([])),
            ]
        }
        Network::Networks1_5 { labels } => {
            let mappings: Vec<Value> = discovery
                .iter()
                .map(|p| {
                    json!({"containerPort": p.number, "hostPort": 0, "labels": {},
                           "name": p.name, "protocol": protocol(p), "networkNames": ["dcos"]})
                })
                .collect();
            vec![
                (
                    "networks",
                    json!([{"mode": "container", "name": "dcos", "labels": labels}]),
                ),
                (
                    "container",
                    json!({"type": "MESOS", "volumes": [], "portMappings": mappings}),
                ),
                ("portDefinitions", json!([])),
            ]
        }
    }
}

/// Host and bridge apps always have at least one port (Marathon's default is
/// one port definition).
fn service_ports(discovery: &[PortSpec]) -> impl Iterator<Item = (usize, &PortSpec)> {
    static DEFAULT: PortSpec = PortSpec {
        number: 8080,
        protocol: None,
        name: None,
    };
    let list: Vec<&PortSpec> = if discovery.is_empty() {
        vec![&DEFAULT]
    } else {
        discovery.iter().collect()
    };
    list.into_iter().enumerate()
}

/// Does this definition give tasks host ports (host networking or a NAT
/// bridge), as opposed to an IP of their own?
pub fn uses_host_ports(def: &Map<String, Value>) -> bool {
    let per_task_ip = def.get("ipAddress").is_some_and(Value::is_object)
        || def
            .get("networks")
            .and_then(Value::as_array)
            .is_some_and(|nets| nets.iter().any(|n| n["mode"] == "container"));
    !per_task_ip
}

/// The plan of a deployment, in the light format of the fixtures
/// (`event-bus-doc-examples-1.10.jsonl`).
pub fn plan(id: &str, action: &str, app_id: &str, version: &str) -> Value {
    json!({"id": id, "steps": [{"action": action, "app": app_id}], "version": version})
}

pub fn current_step(action: &str, app_id: &str) -> Value {
    json!({"actions": [{"type": action, "app": app_id}]})
}

/// `status_update_event`, keys in the order of the real stream capture.
pub fn status_update_event(task: &SimTask, status: &str, timestamp: &str) -> String {
    ordered(&[
        ("slaveId", json!(task.slave_id)),
        ("taskId", json!(task.id)),
        ("taskStatus", json!(status)),
        ("message", json!("")),
        ("appId", json!(task.app_id)),
        ("host", json!(task.host)),
        ("ipAddresses", json!(task.ip_addresses)),
        ("ports", json!(task.ports)),
        ("version", json!(task.version)),
        ("eventType", json!("status_update_event")),
        ("timestamp", json!(timestamp)),
    ])
}

pub fn api_post_event(uri: &str, definition: &Value, timestamp: &str) -> String {
    ordered(&[
        ("clientIp", json!("0:0:0:0:0:0:0:1")),
        ("uri", json!(uri)),
        ("appDefinition", definition.clone()),
        ("eventType", json!("api_post_event")),
        ("timestamp", json!(timestamp)),
    ])
}

pub fn app_terminated_event(app_id: &str, timestamp: &str) -> String {
    ordered(&[
        ("appId", json!(app_id)),
        ("eventType", json!("app_terminated_event")),
        ("timestamp", json!(timestamp)),
    ])
}

pub fn group_change_success(version: &str, timestamp: &str) -> String {
    ordered(&[
        ("groupId", json!("/")),
        ("version", json!(version)),
        ("eventType", json!("group_change_success")),
        ("timestamp", json!(timestamp)),
    ])
}

/// `deployment_info` and `deployment_step_success` share this shape.
pub fn deployment_step(event_type: &str, plan: &Value, step: &Value, timestamp: &str) -> String {
    ordered(&[
        ("plan", plan.clone()),
        ("currentStep", step.clone()),
        ("eventType", json!(event_type)),
        ("timestamp", json!(timestamp)),
    ])
}

pub fn deployment_success(plan: &Value, timestamp: &str) -> String {
    ordered(&[
        ("id", plan["id"].clone()),
        ("plan", plan.clone()),
        ("eventType", json!("deployment_success")),
        ("timestamp", json!(timestamp)),
    ])
}

pub fn event_stream_attached(remote: &str, timestamp: &str) -> String {
    ordered(&[
        ("remoteAddress", json!(remote)),
        ("eventType", json!("event_stream_attached")),
        ("timestamp", json!(timestamp)),
    ])
}

/// A version-1-looking UUID (`8cad6a69-6ca8-11e7-beb2-0e2beceebfcc`), as in
/// Marathon ≤ 1.4 task ids; also used for deployment ids.
pub fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let hex =
        |r: std::ops::Range<usize>| -> String { b[r].iter().map(|x| format!("{x:02x}")).collect() };
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_marathons() {
        assert_eq!(iso_millis(0), "1970-01-01T00:00:00.000Z");
        // 2017-07-19T17:34:41.967Z, from the bridge fixture.
        assert_eq!(iso_millis(1_500_485_681_967), "2017-07-19T17:34:41.967Z");
        assert_eq!(iso_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn ordered_objects_keep_their_key_order_and_escape() {
        let text = ordered(&[("b", json!(1)), ("a", json!("x\"y"))]);
        assert_eq!(text, r#"{"b":1,"a":"x\"y"}"#);
    }
}
