//! The control API under `/_sim/` (documented in [`crate::mesos`]):
//! the [`MesosController`] methods as POSTed JSON, for shell scripts.

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::http::{Request, Response};
use super::{
    AgentSpec, Change, Leadership, MesosController, MisbehaveRule, SimError, StreamFault, TaskSpec,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentRequest {
    agent: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrameworkSpec {
    id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrameworkRequest {
    framework: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskRequest {
    task: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    task: String,
    state: String,
    #[serde(default)]
    ips: Option<Vec<IpAddr>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisruptRequest {
    fault: StreamFault,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OldMesosRequest {
    enabled: bool,
}

pub fn handle(sim: &MesosController, request: &Request) -> Response {
    let op = request.path.trim_start_matches("/_sim").trim_matches('/');
    match (request.method.as_str(), op) {
        ("GET", "stats") => ok(json!(sim.stats())),
        ("POST", "add-agent") => change(request, |a: AgentSpec| sim.add_agent(a)),
        ("POST", "remove-agent") => change(request, |r: AgentRequest| sim.remove_agent(&r.agent)),
        ("POST", "add-framework") => change(request, |f: FrameworkSpec| {
            sim.add_framework(&f.id, &f.name)
        }),
        ("POST", "remove-framework") => change(request, |r: FrameworkRequest| {
            sim.remove_framework(&r.framework)
        }),
        ("POST", "launch") => change(request, |t: TaskSpec| sim.launch_task(t)),
        ("POST", "update-task") => change(request, |r: UpdateRequest| {
            sim.update_task(&r.task, &r.state, r.ips)
        }),
        ("POST", "kill") => change(request, |r: TaskRequest| sim.kill_task(&r.task)),
        ("POST", "lose") => change(request, |r: TaskRequest| sim.lose_task(&r.task)),
        ("POST", "misbehave") => done(request, |rule: MisbehaveRule| sim.misbehave(rule)),
        ("POST", "behave") => {
            sim.behave();
            ok(json!({}))
        }
        ("POST", "disrupt") => done(request, |r: DisruptRequest| sim.disrupt_streams(r.fault)),
        ("POST", "leader") => done(request, |l: Leadership| sim.set_leadership(l)),
        ("POST", "old-mesos") => done(request, |r: OldMesosRequest| sim.set_old_mesos(r.enabled)),
        ("POST", "load-fixture") => match sim.load_fixture(&request.body) {
            Ok(tasks) => ok(json!({ "tasks": tasks })),
            Err(e) => error(&e),
        },
        (_, op) => Response::message(
            404,
            &format!(
                "no control operation {} {op:?}; see the docs of groupd_sim::mesos",
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

fn done<T: DeserializeOwned>(request: &Request, f: impl FnOnce(T)) -> Response {
    match parse(request) {
        Err(response) => response,
        Ok(body) => {
            f(body);
            ok(json!({}))
        }
    }
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
        SimError::UnknownAgent(_) | SimError::UnknownFramework(_) | SimError::UnknownTask(_) => 404,
        SimError::AgentExists(_) | SimError::FrameworkExists(_) | SimError::DuplicateTask(_) => 409,
        SimError::Invalid(_) | SimError::Fixture(_) => 400,
    };
    Response::message(status, &e.to_string())
}
