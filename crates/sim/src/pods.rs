//! Simulated Marathon pods (1.4+): definitions, instances whose containers
//! share the instance's addresses, the status documents (`/v2/pods`,
//! `/v2/pods/::status`, `/v2/pods/{id}::status`, `::versions/{v}`) in the
//! shape of the captured status under `tests/fixtures/marathon/pods/`, and
//! the events a change emits. Pure: no I/O.
//!
//! Events: creating a pod emits `pod_created_event` (`{clientIp, uri}`) and
//! a `status_update_event` per container of each running instance (task id
//! `<instance>.<container>`, `appId` = the pod id, the instance's
//! `ipAddresses`); removing an instance a `TASK_KILLED` per container;
//! deleting a pod kills every instance, then `pod_deleted_event`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::cluster::Emitted;
use super::marathon::{PodInstanceSpec, PodSpec, SimError};
use super::render::{self, IpEntry, SimTask};

/// Agent id of instances whose spec names none.
const DEFAULT_AGENT: &str = "sim-S0";

#[derive(Debug, Default)]
pub struct Pods {
    pods: BTreeMap<String, SimPod>,
}

#[derive(Debug)]
struct SimPod {
    id: String,
    version: String,
    labels: BTreeMap<String, String>,
    network_labels: BTreeMap<String, String>,
    containers: Vec<String>,
    instances: Vec<SimInstance>,
}

#[derive(Debug)]
struct SimInstance {
    id: String,
    agent: String,
    host: String,
    ips: Vec<IpEntry>,
    since: String,
}

fn emitted(event_type: &str, data: String) -> Emitted {
    Emitted {
        event_type: event_type.to_string(),
        data,
    }
}

type Outcome = Result<(Vec<String>, Vec<Emitted>), SimError>;

/// `/a/b` for `a/b`, `/a/b/`.
fn normalise_id(id: &str) -> Result<String, SimError> {
    let trimmed = id.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Err(SimError::Invalid("a pod id must not be empty".into()));
    }
    Ok(format!("/{trimmed}"))
}

impl SimPod {
    fn definition(&self) -> Value {
        let containers: Vec<Value> = self
            .containers
            .iter()
            .map(|name| {
                json!({"name": name, "resources": {"cpus": 0.1, "mem": 32, "disk": 0, "gpus": 0},
                       "exec": {"command": {"shell": "sleep 1000"}}})
            })
            .collect();
        json!({
            "id": self.id,
            "version": self.version,
            "labels": self.labels,
            "containers": containers,
            "networks": [{"name": "dcos", "mode": "container", "labels": self.network_labels}],
            "scaling": {"kind": "fixed", "instances": self.instances.len()},
            "scheduling": {"backoff": {"backoff": 1, "backoffFactor": 1.15, "maxLaunchDelay": 3600},
                           "upgrade": {"minimumHealthCapacity": 1, "maximumOverCapacity": 1},
                           "killSelection": "YOUNGEST_FIRST"},
            "executorResources": {"cpus": 0.1, "mem": 32, "disk": 10}
        })
    }

    fn spec_reference(&self) -> String {
        format!(
            "/v2/pods/{}::versions/{}",
            self.id.trim_start_matches('/'),
            self.version
        )
    }

    fn instance_status(&self, instance: &SimInstance, now: &str) -> Value {
        let running = !instance.ips.is_empty();
        let container_state = if running {
            "TASK_RUNNING"
        } else {
            "TASK_STAGING"
        };
        let containers: Vec<Value> = self
            .containers
            .iter()
            .map(|name| {
                json!({"name": name, "status": container_state, "statusSince": instance.since,
                       "conditions": [], "containerId": format!("{}.{name}", instance.id),
                       "endpoints": [], "resources": {"cpus": 0.1, "mem": 32, "disk": 0, "gpus": 0},
                       "lastUpdated": now, "lastChanged": instance.since})
            })
            .collect();
        let addresses: Vec<&str> = instance.ips.iter().map(|e| e.ip_address.as_str()).collect();
        let networks = if running {
            json!([{"name": "dcos", "addresses": addresses}])
        } else {
            json!([])
        };
        json!({
            "id": instance.id,
            "status": if running { "STABLE" } else { "STAGING" },
            "statusSince": instance.since,
            "conditions": [],
            "agentHostname": instance.host,
            "agentId": instance.agent,
            "resources": {"cpus": 0.3, "mem": 96, "disk": 10, "gpus": 0},
            "networks": networks,
            "containers": containers,
            "specReference": self.spec_reference(),
            "localVolumes": [],
            "lastUpdated": now,
            "lastChanged": instance.since
        })
    }

    fn status(&self, now: &str) -> Value {
        let instances: Vec<Value> = self
            .instances
            .iter()
            .map(|i| self.instance_status(i, now))
            .collect();
        let stable = self.instances.iter().all(|i| !i.ips.is_empty());
        json!({
            "id": self.id,
            "spec": self.definition(),
            "status": if stable { "STABLE" } else { "DEGRADED" },
            "statusSince": self.version,
            "instances": instances,
            "terminationHistory": [],
            "lastUpdated": now,
            "lastChanged": now
        })
    }

    /// A `status_update_event` per container of `instance`.
    fn container_events(&self, instance: &SimInstance, status: &str, now: &str) -> Vec<Emitted> {
        self.containers
            .iter()
            .map(|name| {
                let task = SimTask {
                    ip_addresses: instance.ips.clone(),
                    staged_at: instance.since.clone(),
                    state: status.to_string(),
                    ports: Vec::new(),
                    started_at: None,
                    version: self.version.clone(),
                    id: format!("{}.{name}", instance.id),
                    app_id: self.id.clone(),
                    slave_id: instance.agent.clone(),
                    host: instance.host.clone(),
                    service_ports: Vec::new(),
                    extra: Default::default(),
                };
                emitted(
                    "status_update_event",
                    render::status_update_event(&task, status, now),
                )
            })
            .collect()
    }
}

fn pod_event(event_type: &str, pod_id: &str, now: &str) -> Emitted {
    emitted(
        event_type,
        render::ordered(&[
            ("clientIp", json!("0:0:0:0:0:0:0:1")),
            ("uri", json!(format!("/v2/pods{pod_id}"))),
            ("eventType", json!(event_type)),
            ("timestamp", json!(now)),
        ]),
    )
}

impl Pods {
    fn instance_exists(&self, id: &str) -> bool {
        self.pods
            .values()
            .any(|p| p.instances.iter().any(|i| i.id == id))
    }

    /// `version` is the cluster's next version (strictly increasing).
    pub fn deploy(
        &mut self,
        spec: PodSpec,
        version: String,
        task_exists: &dyn Fn(&str) -> bool,
    ) -> Outcome {
        let id = normalise_id(&spec.id)?;
        if self.pods.contains_key(&id) {
            return Err(SimError::AppExists(id));
        }
        let containers = if spec.containers.is_empty() {
            vec!["main".to_string()]
        } else {
            spec.containers
        };
        if let Some(bad) = containers.iter().find(|c| c.is_empty() || c.contains('.')) {
            return Err(SimError::Invalid(format!(
                "container name {bad:?}: names are non-empty and have no dots (Marathon's rule)"
            )));
        }
        let now = render::now_iso();
        self.pods.insert(
            id.clone(),
            SimPod {
                id: id.clone(),
                version: spec
                    .version
                    .filter(|v| !v.trim().is_empty())
                    .unwrap_or(version),
                labels: spec.labels,
                network_labels: spec.network_labels,
                containers,
                instances: Vec::new(),
            },
        );
        let mut events = vec![pod_event("pod_created_event", &id, &now)];
        let mut ids = Vec::new();
        for instance in spec.instances {
            match self.add_instance(&id, instance, task_exists) {
                Ok((launched, more)) => {
                    ids.extend(launched);
                    events.extend(more);
                }
                Err(e) => {
                    self.pods.remove(&id);
                    return Err(e);
                }
            }
        }
        Ok((ids, events))
    }

    pub fn add_instance(
        &mut self,
        pod_id: &str,
        spec: PodInstanceSpec,
        task_exists: &dyn Fn(&str) -> bool,
    ) -> Outcome {
        let id = normalise_id(pod_id)?;
        let instance_id = spec.id.unwrap_or_else(|| {
            format!(
                "{}.instance-{}",
                id.trim_start_matches('/').replace('/', "_"),
                render::uuid()
            )
        });
        if instance_id.is_empty() || self.instance_exists(&instance_id) || task_exists(&instance_id)
        {
            return Err(SimError::DuplicateTask(instance_id));
        }
        let pod = self
            .pods
            .get_mut(&id)
            .ok_or_else(|| SimError::UnknownApp(id.clone()))?;
        let agent = if spec.agent.is_empty() {
            DEFAULT_AGENT.to_string()
        } else {
            spec.agent
        };
        let now = render::now_iso();
        let instance = SimInstance {
            id: instance_id.clone(),
            host: spec.host.unwrap_or_else(|| agent.clone()),
            agent,
            ips: spec.ips.into_iter().map(IpEntry::from).collect(),
            since: now.clone(),
        };
        let events = if instance.ips.is_empty() {
            Vec::new()
        } else {
            pod.container_events(&instance, "TASK_RUNNING", &now)
        };
        pod.instances.push(instance);
        Ok((vec![instance_id], events))
    }

    /// Kill an instance: `TASK_KILLED` for each of its containers.
    pub fn remove_instance(&mut self, instance_id: &str) -> Outcome {
        let now = render::now_iso();
        for pod in self.pods.values_mut() {
            if let Some(index) = pod.instances.iter().position(|i| i.id == instance_id) {
                let instance = pod.instances.remove(index);
                let events = pod.container_events(&instance, "TASK_KILLED", &now);
                return Ok((vec![instance.id], events));
            }
        }
        Err(SimError::UnknownTask(instance_id.to_string()))
    }

    /// Delete a pod: every instance killed, then `pod_deleted_event`.
    pub fn remove_pod(&mut self, pod_id: &str) -> Outcome {
        let id = normalise_id(pod_id)?;
        let pod = self
            .pods
            .remove(&id)
            .ok_or(SimError::UnknownApp(id.clone()))?;
        let now = render::now_iso();
        let mut ids = Vec::new();
        let mut events = Vec::new();
        for instance in &pod.instances {
            events.extend(pod.container_events(instance, "TASK_KILLED", &now));
            ids.push(instance.id.clone());
        }
        events.push(pod_event("pod_deleted_event", &id, &now));
        Ok((ids, events))
    }

    /// `GET /v2/pods`.
    pub fn pods_json(&self) -> String {
        let defs: Vec<Value> = self.pods.values().map(SimPod::definition).collect();
        Value::Array(defs).to_string()
    }

    /// `GET /v2/pods/::status`.
    pub fn statuses_json(&self) -> String {
        let now = render::now_iso();
        let all: Vec<Value> = self.pods.values().map(|p| p.status(&now)).collect();
        Value::Array(all).to_string()
    }

    /// `GET /v2/pods/{id}`, `/v2/pods/{id}::status`,
    /// `/v2/pods/{id}::versions/{v}`; `None`: no such pod (or version).
    pub fn route(&self, rest: &str) -> Option<String> {
        let (id, what) = match rest.split_once("::") {
            Some((id, what)) => (id, Some(what)),
            None => (rest, None),
        };
        let pod = self.pods.get(&normalise_id(id).ok()?)?;
        match what {
            None => Some(pod.definition().to_string()),
            Some("status") => Some(pod.status(&render::now_iso()).to_string()),
            Some("versions") => Some(json!([pod.version]).to_string()),
            Some(other) => {
                let version = other.strip_prefix("versions/")?;
                (version == pod.version).then(|| pod.definition().to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PodSpec {
        PodSpec {
            id: "web-pod".into(),
            network_labels: [("network-groups".to_string(), "web".to_string())].into(),
            containers: vec!["app".into(), "sidecar".into()],
            instances: vec![PodInstanceSpec {
                id: Some("web-pod.instance-1".into()),
                ips: vec!["10.233.9.9".parse().expect("ip")],
                agent: "a1".into(),
                host: None,
            }],
            ..PodSpec::default()
        }
    }

    #[test]
    fn a_pod_instance_has_one_address_and_a_status_per_container() {
        let mut pods = Pods::default();
        let (ids, events) = pods
            .deploy(spec(), "2024-01-01T00:00:00.000Z".into(), &|_| false)
            .expect("deploy");
        assert_eq!(ids, ["web-pod.instance-1"]);
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "pod_created_event",
                "status_update_event",
                "status_update_event"
            ]
        );
        assert!(events[1]
            .data
            .contains(r#""taskId":"web-pod.instance-1.app""#));
        assert!(events[2].data.contains(r#""appId":"/web-pod""#));
        let status: Value =
            serde_json::from_str(&pods.route("web-pod::status").expect("status")).expect("json");
        assert_eq!(
            status["instances"][0]["networks"][0]["addresses"][0],
            "10.233.9.9"
        );
        assert_eq!(
            status["instances"][0]["containers"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        let (_, events) = pods.remove_pod("/web-pod").expect("remove");
        assert_eq!(
            events.last().map(|e| e.event_type.as_str()),
            Some("pod_deleted_event")
        );
        assert_eq!(pods.statuses_json(), "[]");
        assert!(pods.route("web-pod::status").is_none());
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut pods = Pods::default();
        let mut dotted = spec();
        dotted.containers = vec!["a.b".into()];
        assert!(pods.deploy(dotted, "v".into(), &|_| false).is_err());
        pods.deploy(spec(), "v".into(), &|_| false).expect("deploy");
        assert!(
            pods.deploy(spec(), "v".into(), &|_| false).is_err(),
            "twice"
        );
        let again = spec().instances.remove(0);
        assert!(pods.add_instance("/web-pod", again, &|_| false).is_err());
        assert!(pods.remove_instance("nope").is_err());
    }
}
