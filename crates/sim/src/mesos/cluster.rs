//! The simulated master's state (agents, frameworks, tasks with their
//! status history) and the scripted changes, each returning the events a
//! real master would publish to `SUBSCRIBE` streams.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;

use super::json::J;
use super::{AgentSpec, SimError, TaskSpec};

/// The framework tasks launch under when their spec names none.
pub(crate) const DEFAULT_FRAMEWORK: &str = "sim-0000-0001";
/// The name an auto-registered framework gets (tasks of a framework called
/// `marathon` are the ones groupd reads app ids from).
pub(crate) const DEFAULT_FRAMEWORK_NAME: &str = "marathon";
pub(crate) const DEFAULT_AGENT: &str = "sim-S0";
/// `--max_completed_tasks_per_framework` default, applied cluster-wide.
const MAX_COMPLETED: usize = 1000;

/// One event for the bus: its `type` and its rendered record.
#[derive(Debug, Clone)]
pub(crate) struct Emitted {
    pub kind: &'static str,
    pub json: String,
}

impl Emitted {
    fn new(kind: &'static str, body_key: &'static str, body: J) -> Emitted {
        let record = J::Obj(vec![("type", J::Str(kind.into())), (body_key, body)]);
        Emitted {
            kind,
            json: record.render(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Agent {
    pub id: String,
    pub hostname: String,
}

#[derive(Debug, Clone)]
pub(crate) struct FrameworkRec {
    pub id: String,
    pub name: String,
}

/// A `container_status.network_infos[]` entry as reported by the agent.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReportedNet {
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Clone)]
pub(crate) struct Status {
    pub state: String,
    pub timestamp: f64,
    /// base64 of 16 random bytes, as Mesos renders `bytes` fields.
    pub uuid: String,
    pub networks: Vec<ReportedNet>,
}

#[derive(Debug, Clone)]
pub(crate) struct TaskRec {
    /// `framework` and `name` are filled in.
    pub spec: TaskSpec,
    pub state: String,
    /// Oldest first, as in `/master/state`.
    pub statuses: Vec<Status>,
    pub container_id: String,
}

impl TaskRec {
    pub fn framework(&self) -> &str {
        self.spec.framework.as_deref().unwrap_or(DEFAULT_FRAMEWORK)
    }

    pub fn name(&self) -> &str {
        self.spec.name.as_deref().unwrap_or(&self.spec.id)
    }
}

pub(crate) fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "TASK_FINISHED"
            | "TASK_FAILED"
            | "TASK_KILLED"
            | "TASK_LOST"
            | "TASK_ERROR"
            | "TASK_DROPPED"
            | "TASK_GONE"
            | "TASK_GONE_BY_OPERATOR"
    )
}

const STATES: &[&str] = &[
    "TASK_STAGING",
    "TASK_STARTING",
    "TASK_RUNNING",
    "TASK_KILLING",
    "TASK_UNREACHABLE",
    "TASK_UNKNOWN",
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
];

type Outcome = Result<(Vec<String>, Vec<Emitted>), SimError>;

#[derive(Debug, Default)]
pub(crate) struct Cluster {
    pub agents: Vec<Agent>,
    pub frameworks: Vec<FrameworkRec>,
    /// Live tasks (unreachable ones included), in launch order.
    pub tasks: Vec<TaskRec>,
    pub completed: Vec<TaskRec>,
    /// Last timestamp handed out: status timestamps strictly increase.
    clock: f64,
}

impl Cluster {
    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.id == id)
    }

    fn task_index(&self, id: &str) -> Result<usize, SimError> {
        // From the end: the task changed most often is the newest (a launch
        // updates the task it just added), and loading a big cluster task
        // by task must not be quadratic.
        self.tasks
            .iter()
            .rposition(|t| t.spec.id == id)
            .ok_or_else(|| SimError::UnknownTask(id.to_string()))
    }

    pub(crate) fn now(&mut self) -> f64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        // Microsecond resolution like the captures, strictly increasing.
        let t = ((wall * 1e6).round() / 1e6).max(self.clock + 1e-6);
        self.clock = t;
        t
    }

    pub fn add_agent(&mut self, spec: AgentSpec) -> Outcome {
        if spec.id.is_empty() {
            return Err(SimError::Invalid("an agent needs an id".into()));
        }
        if self.agent(&spec.id).is_some() {
            return Err(SimError::AgentExists(spec.id));
        }
        let agent = Agent {
            hostname: spec.hostname.unwrap_or_else(|| spec.id.clone()),
            id: spec.id,
        };
        let event = Emitted::new(
            "AGENT_ADDED",
            "agent_added",
            J::Obj(vec![("agent", super::render::agent_v1(&agent))]),
        );
        self.agents.push(agent);
        Ok((Vec::new(), vec![event]))
    }

    /// Like a master that removes an agent: its tasks go `TASK_LOST` (one
    /// `TASK_UPDATED` each), then `AGENT_REMOVED`, which names no task.
    pub fn remove_agent(&mut self, id: &str) -> Outcome {
        let index = self
            .agents
            .iter()
            .position(|a| a.id == id)
            .ok_or_else(|| SimError::UnknownAgent(id.to_string()))?;
        let on_agent: Vec<String> = self
            .tasks
            .iter()
            .filter(|t| t.spec.agent == id)
            .map(|t| t.spec.id.clone())
            .collect();
        let mut events = Vec::new();
        for task in &on_agent {
            events.extend(self.update(task, "TASK_LOST", None)?.1);
        }
        self.agents.remove(index);
        events.push(Emitted::new(
            "AGENT_REMOVED",
            "agent_removed",
            J::Obj(vec![("agent_id", super::json::id(id))]),
        ));
        Ok((on_agent, events))
    }

    pub fn add_framework(&mut self, id: &str, name: &str) -> Outcome {
        if self.frameworks.iter().any(|f| f.id == id) {
            return Err(SimError::FrameworkExists(id.to_string()));
        }
        let framework = FrameworkRec {
            id: id.to_string(),
            name: name.to_string(),
        };
        let event = Emitted::new(
            "FRAMEWORK_ADDED",
            "framework_added",
            J::Obj(vec![("framework", super::render::framework_v1(&framework))]),
        );
        self.frameworks.push(framework);
        Ok((Vec::new(), vec![event]))
    }

    /// A framework torn down: its tasks are killed (`TASK_UPDATED`
    /// `TASK_KILLED` each), then `FRAMEWORK_REMOVED`.
    pub fn remove_framework(&mut self, id: &str) -> Outcome {
        let index = self
            .frameworks
            .iter()
            .position(|f| f.id == id)
            .ok_or_else(|| SimError::UnknownFramework(id.to_string()))?;
        let owned: Vec<String> = self
            .tasks
            .iter()
            .filter(|t| t.framework() == id)
            .map(|t| t.spec.id.clone())
            .collect();
        let mut events = Vec::new();
        for task in &owned {
            events.extend(self.update(task, "TASK_KILLED", None)?.1);
        }
        let framework = self.frameworks.remove(index);
        events.push(Emitted::new(
            "FRAMEWORK_REMOVED",
            "framework_removed",
            J::Obj(vec![(
                "framework_info",
                super::render::framework_info(&framework),
            )]),
        ));
        Ok((owned, events))
    }

    /// `TASK_ADDED` (`TASK_STAGING`), then `TASK_UPDATED` `TASK_STARTING`
    /// and `TASK_RUNNING`. Unknown agents and frameworks are registered
    /// first (`AGENT_ADDED`, `FRAMEWORK_ADDED`).
    pub fn launch(&mut self, spec: TaskSpec) -> Outcome {
        if self
            .tasks
            .iter()
            .chain(&self.completed)
            .any(|t| t.spec.id == spec.id)
        {
            return Err(SimError::DuplicateTask(spec.id));
        }
        self.launch_new(spec)
    }

    /// [`Cluster::launch`] of many tasks, for a big cluster (benchmarks
    /// load 100,000): duplicates are found with one set, not a scan of
    /// every task per task. The events are dropped as they are made (for
    /// 100,000 tasks they would be 300 MB): nobody is told.
    pub fn launch_many(&mut self, specs: Vec<TaskSpec>) -> Result<Vec<String>, SimError> {
        let mut known: HashSet<String> = self
            .tasks
            .iter()
            .chain(&self.completed)
            .map(|t| t.spec.id.clone())
            .collect();
        if let Some(dup) = specs
            .iter()
            .find(|s| !s.id.is_empty() && !known.insert(s.id.clone()))
        {
            return Err(SimError::DuplicateTask(dup.id.clone()));
        }
        let mut ids = Vec::new();
        for spec in specs {
            ids.extend(self.launch_new(spec)?.0);
        }
        Ok(ids)
    }

    /// `launch` of a task whose id is known to be new (or empty).
    fn launch_new(&mut self, mut spec: TaskSpec) -> Outcome {
        if spec.id.is_empty() {
            spec.id = format!("sim-task.{}", uuid_text());
        }
        if spec.agent.is_empty() {
            spec.agent = DEFAULT_AGENT.to_string();
        }
        let framework = spec
            .framework
            .get_or_insert_with(|| DEFAULT_FRAMEWORK.to_string())
            .clone();
        let mut events = Vec::new();
        if self.agent(&spec.agent).is_none() {
            events.extend(
                self.add_agent(AgentSpec {
                    id: spec.agent.clone(),
                    hostname: None,
                })?
                .1,
            );
        }
        if !self.frameworks.iter().any(|f| f.id == framework) {
            events.extend(self.add_framework(&framework, DEFAULT_FRAMEWORK_NAME)?.1);
        }
        let id = spec.id.clone();
        let task = TaskRec {
            spec,
            state: "TASK_STAGING".into(),
            statuses: Vec::new(),
            container_id: uuid_text(),
        };
        events.push(Emitted::new(
            "TASK_ADDED",
            "task_added",
            J::Obj(vec![("task", super::render::task_v1(&task, false))]),
        ));
        self.tasks.push(task);
        for state in ["TASK_STARTING", "TASK_RUNNING"] {
            events.extend(self.update(&id, state, None)?.1);
        }
        Ok((vec![id], events))
    }

    /// One status update: `TASK_UPDATED` with the new state and a status
    /// carrying the reported networks. `ips` replace the IPs of the task's
    /// first NetworkInfo (one is added when it has none). Terminal states
    /// move the task to the completed tasks.
    pub fn update(&mut self, id: &str, state: &str, ips: Option<Vec<IpAddr>>) -> Outcome {
        if !STATES.contains(&state) {
            return Err(SimError::Invalid(format!("unknown task state {state:?}")));
        }
        let index = self.task_index(id)?;
        let timestamp = self.now();
        let agent_ip = self
            .agent(&self.tasks[index].spec.agent)
            .and_then(|a| a.hostname.parse::<IpAddr>().ok());
        let task = &mut self.tasks[index];
        if let Some(ips) = ips {
            if task.spec.network_infos.is_empty() {
                task.spec.network_infos.push(Default::default());
            }
            task.spec.network_infos[0].ip_addresses = ips;
        }
        let status = Status {
            state: state.to_string(),
            timestamp,
            uuid: super::super::http::base64(&random_bytes()),
            networks: reported_networks(&task.spec, state, agent_ip),
        };
        task.state = state.to_string();
        task.statuses.push(status);
        let event = Emitted::new(
            "TASK_UPDATED",
            "task_updated",
            super::render::task_updated(task),
        );
        if is_terminal(state) {
            let done = self.tasks.remove(index);
            self.completed.push(done);
            let excess = self.completed.len().saturating_sub(MAX_COMPLETED);
            self.completed.drain(..excess);
        }
        Ok((vec![id.to_string()], vec![event]))
    }
}

/// What the agent reports for a task in `state` (docs/FORMATS.md §8.2–§8.3): nothing
/// while staging; Docker on a user network reports the agent's IP, without
/// a network name, at `TASK_STARTING`, and the container's IPs from
/// `TASK_RUNNING` on; UCR reports the container's IPs from `TASK_STARTING`;
/// host networking reports the agent's IP.
fn reported_networks(spec: &TaskSpec, state: &str, agent_ip: Option<IpAddr>) -> Vec<ReportedNet> {
    let agent = || {
        vec![ReportedNet {
            ips: agent_ip.into_iter().collect(),
            ..Default::default()
        }]
    };
    if state == "TASK_STAGING" {
        return Vec::new();
    }
    let docker_user = spec
        .docker_network
        .as_deref()
        .is_some_and(|n| n.eq_ignore_ascii_case("USER"));
    if spec.network_infos.is_empty() || (docker_user && state == "TASK_STARTING") {
        return agent();
    }
    spec.network_infos
        .iter()
        .map(|n| ReportedNet {
            name: n.name.clone(),
            labels: n.labels.clone(),
            ips: n.ip_addresses.clone(),
        })
        .collect()
}

fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// A version-4 UUID in text form (container ids, generated task ids).
pub(crate) fn uuid_text() -> String {
    let mut b = random_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
