//! Loading a fixture into the simulated master: a `/master/state` document,
//! or a `SUBSCRIBE` capture (RecordIO, or one record per line as in the
//! dcos-net captures) replayed record by record. Tasks keep what groupd
//! reads (ids, names, labels, Docker network, NetworkInfos with groups and
//! labels, discovery ports, every status with its reported networks);
//! resources, executors and the like are not kept.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

use super::cluster::{uuid_text, Agent, Cluster, FrameworkRec, ReportedNet, Status, TaskRec};
use super::{NetworkSpec, PortSpec, SimError, TaskSpec};

pub(crate) fn load(bytes: &[u8]) -> Result<Cluster, SimError> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    match start.map(|i| bytes[i]) {
        None => Err(SimError::Fixture("empty document".into())),
        Some(b) if b.is_ascii_digit() => replay(&recordio(bytes)?),
        Some(_) => {
            // One JSON document (master state), or one record per line.
            match serde_json::from_slice::<Value>(bytes) {
                Ok(doc) if doc.get("type").is_none() => Ok(master_state(&doc)),
                Ok(record) => replay(&[record]),
                Err(_) => {
                    let records = String::from_utf8_lossy(bytes)
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(serde_json::from_str)
                        .collect::<Result<Vec<Value>, _>>()
                        .map_err(|e| SimError::Fixture(format!("not JSON nor records: {e}")))?;
                    replay(&records)
                }
            }
        }
    }
}

/// Split `<len>\n<json>` records (lengths are bytes).
fn recordio(mut bytes: &[u8]) -> Result<Vec<Value>, SimError> {
    let mut records = Vec::new();
    loop {
        let skip = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
        bytes = &bytes[skip..];
        if bytes.is_empty() {
            return Ok(records);
        }
        let newline = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| SimError::Fixture("record without a length line".into()))?;
        let length: usize = std::str::from_utf8(&bytes[..newline])
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| SimError::Fixture("bad RecordIO length line".into()))?;
        let body = bytes
            .get(newline + 1..newline + 1 + length)
            .ok_or_else(|| SimError::Fixture("RecordIO record shorter than its length".into()))?;
        records.push(
            serde_json::from_slice(body)
                .map_err(|e| SimError::Fixture(format!("record {}: {e}", records.len() + 1)))?,
        );
        bytes = &bytes[newline + 1 + length..];
    }
}

fn master_state(doc: &Value) -> Cluster {
    let mut cluster = Cluster::default();
    for slave in array(doc, "slaves") {
        if let Some(agent) = agent(slave) {
            cluster.agents.push(agent);
        }
    }
    for f in array(doc, "frameworks") {
        let Some(id) = f.get("id").and_then(id_of) else {
            continue;
        };
        cluster.frameworks.push(FrameworkRec {
            name: text(f, "name").unwrap_or_default(),
            id: id.clone(),
        });
        for t in array(f, "tasks").chain(array(f, "unreachable_tasks")) {
            if let Some(task) = task(t, Some(&id)) {
                cluster.tasks.push(task);
            }
        }
    }
    cluster
}

/// Apply records in order: the snapshot, then the events.
fn replay(records: &[Value]) -> Result<Cluster, SimError> {
    let mut cluster = Cluster::default();
    for record in records {
        let kind = record.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "SUBSCRIBED" | "GET_STATE" => {
                let state = record
                    .pointer("/subscribed/get_state")
                    .or_else(|| record.get("get_state"))
                    .unwrap_or(&Value::Null);
                cluster = Cluster::default();
                let agents =
                    array_at(state, "/get_agents/agents").filter_map(|a| a.get("agent_info"));
                // 1.9+: agents known from the registry, bare AgentInfo.
                let recovered = array_at(state, "/get_agents/recovered_agents");
                for a in agents.chain(recovered) {
                    if let Some(agent) = agent(a) {
                        cluster.agents.push(agent);
                    }
                }
                for f in array_at(state, "/get_frameworks/frameworks") {
                    if let Some(framework) = f.get("framework_info").and_then(framework) {
                        cluster.frameworks.push(framework);
                    }
                }
                for t in array_at(state, "/get_tasks/tasks")
                    .chain(array_at(state, "/get_tasks/unreachable_tasks"))
                {
                    if let Some(task) = task(t, None) {
                        cluster.tasks.push(task);
                    }
                }
            }
            "TASK_ADDED" => {
                if let Some(task) = record
                    .pointer("/task_added/task")
                    .and_then(|t| task(t, None))
                {
                    cluster.tasks.retain(|t| t.spec.id != task.spec.id);
                    cluster.tasks.push(task);
                }
            }
            "TASK_UPDATED" => {
                let update = &record["task_updated"];
                let Some(id) = update.pointer("/status/task_id").and_then(id_of) else {
                    continue;
                };
                let Some(index) = cluster.tasks.iter().position(|t| t.spec.id == id) else {
                    continue;
                };
                let status = status(&update["status"]);
                let task = &mut cluster.tasks[index];
                let state =
                    text(update, "state").or_else(|| status.as_ref().map(|s| s.state.clone()));
                task.statuses.extend(status);
                if let Some(state) = state {
                    task.state = state;
                }
                if super::cluster::is_terminal(&task.state) {
                    let done = cluster.tasks.remove(index);
                    cluster.completed.push(done);
                }
            }
            "AGENT_ADDED" => {
                if let Some(a) = record
                    .pointer("/agent_added/agent/agent_info")
                    .and_then(agent)
                {
                    cluster.agents.retain(|x| x.id != a.id);
                    cluster.agents.push(a);
                }
            }
            "AGENT_REMOVED" => {
                if let Some(id) = record.pointer("/agent_removed/agent_id").and_then(id_of) {
                    cluster.agents.retain(|a| a.id != id);
                }
            }
            "FRAMEWORK_ADDED" | "FRAMEWORK_UPDATED" => {
                let key = if kind == "FRAMEWORK_ADDED" {
                    "/framework_added"
                } else {
                    "/framework_updated"
                };
                let info = record.pointer(&format!("{key}/framework/framework_info"));
                if let Some(f) = info.and_then(framework) {
                    cluster.frameworks.retain(|x| x.id != f.id);
                    cluster.frameworks.push(f);
                }
            }
            "FRAMEWORK_REMOVED" => {
                if let Some(f) = record
                    .pointer("/framework_removed/framework_info")
                    .and_then(framework)
                {
                    cluster.frameworks.retain(|x| x.id != f.id);
                }
            }
            // HEARTBEAT and anything newer carry no state.
            _ => {}
        }
    }
    Ok(cluster)
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn array_at<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// `"id"` or `{"value": "id"}`.
fn id_of(v: &Value) -> Option<String> {
    v.as_str()
        .or_else(|| v.get("value").and_then(Value::as_str))
        .map(str::to_string)
}

/// `[{key, value}]` or `{"labels": [{key, value}]}`.
fn labels(v: Option<&Value>) -> BTreeMap<String, String> {
    let list = v.and_then(|v| {
        v.as_array()
            .or_else(|| v.get("labels").and_then(Value::as_array))
    });
    list.into_iter()
        .flatten()
        .filter_map(|l| Some((text(l, "key")?, text(l, "value").unwrap_or_default())))
        .collect()
}

fn agent(v: &Value) -> Option<Agent> {
    let id = v.get("id").and_then(id_of)?;
    Some(Agent {
        hostname: text(v, "hostname").unwrap_or_else(|| id.clone()),
        id,
    })
}

fn framework(info: &Value) -> Option<FrameworkRec> {
    Some(FrameworkRec {
        id: info.get("id").and_then(id_of)?,
        name: text(info, "name").unwrap_or_default(),
    })
}

fn ips(info: &Value) -> Vec<IpAddr> {
    let listed = array(info, "ip_addresses").filter_map(|a| a.get("ip_address"));
    // ≤ 0.29: a top-level `ip_address`.
    listed
        .chain(info.get("ip_address"))
        .filter_map(|a| a.as_str()?.parse().ok())
        .collect()
}

fn status(v: &Value) -> Option<Status> {
    let state = text(v, "state")?;
    let networks = array_at(v, "/container_status/network_infos")
        .map(|n| ReportedNet {
            name: text(n, "name"),
            labels: labels(n.get("labels")),
            ips: ips(n),
        })
        .collect();
    Some(Status {
        state,
        timestamp: v.get("timestamp").and_then(Value::as_f64).unwrap_or(0.0),
        uuid: text(v, "uuid").unwrap_or_default(),
        networks,
    })
}

fn task(v: &Value, framework: Option<&String>) -> Option<TaskRec> {
    let id = v.get("id").or_else(|| v.get("task_id")).and_then(id_of)?;
    let statuses: Vec<Status> = array(v, "statuses").filter_map(status).collect();
    // The latest report of each network gives the IPs to keep serving.
    let latest = statuses.iter().rev().find(|s| !s.networks.is_empty());
    let network_infos = array_at(v, "/container/network_infos")
        .enumerate()
        .map(|(i, n)| {
            let name = text(n, "name");
            let reported = latest.and_then(|s| {
                s.networks
                    .iter()
                    .find(|r| name.is_some() && r.name == name)
                    .or_else(|| s.networks.get(i))
            });
            NetworkSpec {
                groups: array(n, "groups")
                    .filter_map(|g| g.as_str().map(str::to_string))
                    .collect(),
                labels: labels(n.get("labels")),
                ip_addresses: reported.map(|r| r.ips.clone()).unwrap_or_default(),
                name,
            }
        })
        .collect();
    let discovery = array_at(v, "/discovery/ports/ports")
        .filter_map(|p| {
            Some(PortSpec {
                number: u16::try_from(p.get("number")?.as_u64()?).ok()?,
                protocol: text(p, "protocol"),
                name: text(p, "name"),
            })
        })
        .collect();
    let spec = TaskSpec {
        framework: v
            .get("framework_id")
            .and_then(id_of)
            .or_else(|| framework.cloned()),
        agent: v
            .get("slave_id")
            .or_else(|| v.get("agent_id"))
            .and_then(id_of)
            .unwrap_or_default(),
        name: text(v, "name"),
        network_infos,
        docker_network: v
            .pointer("/container/docker/network")
            .and_then(Value::as_str)
            .map(str::to_string),
        discovery,
        labels: labels(v.get("labels")),
        id,
    };
    let container_id = array(v, "statuses")
        .find_map(|s| s.pointer("/container_status/container_id").and_then(id_of))
        .unwrap_or_else(uuid_text);
    Some(TaskRec {
        state: text(v, "state").unwrap_or_else(|| "TASK_RUNNING".into()),
        statuses,
        container_id,
        spec,
    })
}
