//! The control API under `/_sim/` (documented in [`crate::sim`]): the
//! [`SimController`] methods as POSTed JSON, for shell scripts.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{Request, Response};
use super::marathon::{
    AppSpec, Change, MisbehaveRule, Network, PodInstanceSpec, PodSpec, PortSpec, SimController,
    SimError, TaskSpec, VersionChange,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleRequest {
    app: String,
    instances: usize,
    #[serde(default)]
    tasks: Vec<TaskSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewVersionRequest {
    app: String,
    #[serde(default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    network: Option<Network>,
    #[serde(default)]
    discovery: Option<Vec<PortSpec>>,
    #[serde(default)]
    tasks: Vec<TaskSpec>,
    #[serde(default)]
    replace_old: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskRequest {
    task: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetIpsRequest {
    task: String,
    ips: Vec<IpAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateTaskRequest {
    task: String,
    status: String,
    #[serde(default)]
    ips: Option<Vec<IpAddr>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppRequest {
    app: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PodInstanceRequest {
    pod: String,
    instance: PodInstanceSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceRequest {
    instance: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PodRequest {
    pod: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitRequest {
    event_type: String,
    /// Sent as it is (may be anything, even invalid JSON).
    #[serde(default)]
    data: Option<String>,
    /// Serialised on one line.
    #[serde(default)]
    json: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StandbyRequest {
    leader: Option<String>,
}

pub fn handle(sim: &SimController, request: &Request) -> Response {
    let op = request.path.trim_start_matches("/_sim").trim_matches('/');
    match (request.method.as_str(), op) {
        ("GET", "stats") => ok(json!(sim.stats())),
        ("POST", "deploy") => change(request, |spec: AppSpec| sim.deploy_app(spec)),
        ("POST", "scale") => change(request, |r: ScaleRequest| {
            sim.scale(&r.app, r.instances, r.tasks)
        }),
        ("POST", "new-version") => change(request, |r: NewVersionRequest| {
            let change = VersionChange {
                groups: r.groups,
                labels: r.labels,
                network: r.network,
                discovery: r.discovery,
                tasks: r.tasks,
                replace_old: r.replace_old,
            };
            sim.new_version(&r.app, change)
        }),
        ("POST", "kill") => change(request, |r: TaskRequest| sim.kill_task(&r.task)),
        ("POST", "lose") => change(request, |r: TaskRequest| sim.lose_task(&r.task)),
        ("POST", "set-ips") => change(request, |r: SetIpsRequest| sim.set_task_ips(&r.task, r.ips)),
        ("POST", "update-task") => change(request, |r: UpdateTaskRequest| {
            sim.update_task(&r.task, &r.status, r.ips)
        }),
        ("POST", "remove-app") => change(request, |r: AppRequest| sim.remove_app(&r.app)),
        ("POST", "deploy-pod") => change(request, |spec: PodSpec| sim.deploy_pod(spec)),
        ("POST", "add-pod-instance") => change(request, |r: PodInstanceRequest| {
            sim.add_pod_instance(&r.pod, r.instance)
        }),
        ("POST", "remove-pod-instance") => change(request, |r: InstanceRequest| {
            sim.remove_pod_instance(&r.instance)
        }),
        ("POST", "remove-pod") => change(request, |r: PodRequest| sim.remove_pod(&r.pod)),
        ("POST", "emit") => match parse::<EmitRequest>(request) {
            Err(response) => response,
            Ok(r) => {
                let data = match (r.data, r.json) {
                    (Some(data), None) => data,
                    (None, Some(value)) => value.to_string(),
                    _ => return Response::message(400, "give exactly one of data, json"),
                };
                ok(json!({ "seq": sim.emit_raw(&r.event_type, &data) }))
            }
        },
        ("POST", "misbehave") => match parse::<MisbehaveRule>(request) {
            Err(response) => response,
            Ok(rule) => {
                sim.misbehave_rule(rule);
                ok(json!({}))
            }
        },
        ("POST", "behave") => {
            sim.behave();
            ok(json!({}))
        }
        ("POST", "standby") => match parse::<StandbyRequest>(request) {
            Err(response) => response,
            Ok(r) => {
                sim.set_standby(r.leader);
                ok(json!({}))
            }
        },
        ("POST", "load-fixture") => match sim.load_fixture(&request.body) {
            Ok(apps) => ok(json!({ "apps": apps })),
            Err(e) => error(&e),
        },
        (_, op) => Response::message(
            404,
            &format!(
                "no control operation {} {op:?}; see the docs of groupd_sim",
                request.method
            ),
        ),
    }
}

fn ok(value: Value) -> Response {
    Response::json(200, value.to_string())
}

fn parse<T: DeserializeOwned>(request: &Request) -> Result<T, Response> {
    serde_json::from_slice(&request.body)
        .map_err(|e| Response::message(400, &format!("bad request body: {e}")))
}

fn change<T: DeserializeOwned>(
    request: &Request,
    f: impl FnOnce(T) -> Result<Change, SimError>,
) -> Response {
    match parse(request) {
        Err(response) => response,
        Ok(body) => match f(body) {
            Ok(change) => ok(json!(change)),
            Err(e) => error(&e),
        },
    }
}

fn error(e: &SimError) -> Response {
    let status = match e {
        SimError::UnknownApp(_) | SimError::UnknownTask(_) => 404,
        SimError::AppExists(_) | SimError::DuplicateTask(_) => 409,
        SimError::Invalid(_) | SimError::Fixture(_) => 400,
    };
    Response::message(status, &e.to_string())
}
