//! Mesos master documents (`GET /master/state`, v1 `SUBSCRIBED` event,
//! `GET_STATE` and `GET_TASKS` responses) and their conversion to [`Task`]s.
//! docs/FORMATS.md §4–§5, §8.
//!
//! One task model serves both JSON dialects: `/master/state` writes ids as
//! strings and labels as arrays, the v1 API writes `{"value": …}` ids and
//! `{"labels": […]}` labels; [`Id`] and [`Labels`] accept either.
//!
//! Network classification of a Mesos task ([`network_kind`]):
//! * A Docker container is decided by `docker.network`: `HOST` (also the
//!   protobuf default when absent) is host networking, `BRIDGE` a NAT bridge,
//!   `USER` IP-per-task, `NONE` has no address.
//! * Otherwise (MESOS containerizer, command tasks, pod tasks) by the
//!   NetworkInfos: the requested ones (`container.network_infos`), named or
//!   not (unnamed ones are the 0.25–0.28 net-modules IP-per-container), and
//!   the *named* reported ones of the status used for the IPs (pod tasks
//!   request nothing themselves; every host-network task reports an unnamed
//!   NetworkInfo with the agent's IP, so unnamed reports prove nothing).
//!   A network named `mesos-bridge` is a NAT bridge; any other makes the task
//!   IP-per-task; none at all is host networking — unless the task is a
//!   nested (pod) container that reported no IP yet, whose network the
//!   executor decides: no address yet.
//!
//! IPs come from the latest status that reports any (statuses are oldest
//! first), union of all its NetworkInfos and addresses. When the task asked
//! for named networks, only reported NetworkInfos with one of those names
//! count: Docker user-network tasks first report the agent's IP with no name
//! (docs/FORMATS.md §8.3). For the same reason an IP-per-task address equal to the
//! agent's own is dropped.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    assign_groups, check_lengths, classify, label_map, new_task, null_as_default, parse_ip,
    port_number, reject, unparseable_ip, GroupInputs, NetworkKind, Notes,
};
use crate::config::GroupsConfig;
use crate::model::{
    ClusterView, DiscoveryPort, GroupOrigin, Protocol, Task, TaskState, VecSet, ViewBuilder,
};

mod kept;
pub use kept::{
    read_master_state, Installed, KeptFramework, KeptMasterState, KeptState, KeptTask, KeptTasks,
};

/// CNI networks that NAT: their addresses repeat on every agent.
pub const NAT_BRIDGE_NETWORKS: &[&str] = &["mesos-bridge"];

/// Statuses kept by [`MesosTask::apply_update`]; the master keeps them all,
/// but only the latest ones with addresses matter.
const MAX_STATUSES: usize = 32;

/// An id: a bare string (`/master/state`) or `{"value": "…"}` (v1 API).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(pub String);

/// Written as a bare string (the `/master/state` form, which
/// [`Id::deserialize`] reads back).
impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl<'de> Visitor<'de> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an id string or {\"value\": \"…\"}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Id, A::Error> {
                let mut value = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "value" {
                        value = Some(map.next_value::<String>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                value
                    .map(Id)
                    .ok_or_else(|| de::Error::missing_field("value"))
            }
        }
        de.deserialize_any(IdVisitor)
    }
}

/// Mesos labels: `[{key, value}]` (`/master/state`, status NetworkInfos) or
/// `{"labels": [{key, value}]}` (everywhere else); `null` and `{}` are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(pub Vec<Label>);

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Label {
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Optional in the protobuf.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Written in the array form, which [`Labels::deserialize`] reads back.
impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// `Some` as an empty object (read back as present), for a field only
/// whose presence matters.
fn present<S: Serializer>(value: &Option<IgnoredAny>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    match value {
        Some(_) => s.serialize_map(Some(0))?.end(),
        None => s.serialize_none(),
    }
}

impl Labels {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .filter_map(|l| Some((l.key.as_deref()?, l.value.as_deref().unwrap_or(""))))
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct LabelsVisitor;
        impl<'de> Visitor<'de> for LabelsVisitor {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("labels as [{key, value}] or {\"labels\": [{key, value}]}")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Labels, E> {
                Ok(Labels::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Labels, E> {
                Ok(Labels::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Labels, A::Error> {
                let mut labels = Vec::new();
                while let Some(label) = seq.next_element::<Label>()? {
                    labels.push(label);
                }
                Ok(Labels(labels))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
                let mut labels = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "labels" {
                        labels = map.next_value::<Option<Vec<Label>>>()?.unwrap_or_default();
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Labels(labels))
            }
        }
        de.deserialize_any(LabelsVisitor)
    }
}

/// `GET /master/state` (alias `/state`, `/state.json`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MasterState {
    #[serde(default, deserialize_with = "null_as_default")]
    pub frameworks: Vec<Framework>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub slaves: Vec<Slave>,
    /// Tasks of frameworks that have not re-registered since a master
    /// failover: still running, still holding their IPs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub orphan_tasks: Vec<MesosTask>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Framework {
    #[serde(default)]
    pub id: Option<Id>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tasks: Vec<MesosTask>,
    /// Partition-aware frameworks: the container may still be running.
    #[serde(default, deserialize_with = "null_as_default")]
    pub unreachable_tasks: Vec<MesosTask>,
    // `completed_tasks` is not read: those tasks are terminal.
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Slave {
    #[serde(default)]
    pub id: Option<Id>,
    #[serde(default)]
    pub hostname: Option<String>,
    /// `slave(1)@10.0.0.40:5051`: carries the agent's IP even when the
    /// hostname is a name.
    #[serde(default)]
    pub pid: Option<String>,
}

/// A v1 operator API object: an event (`SUBSCRIBED`, `TASK_ADDED`, …) or a
/// call response (`GET_STATE`, `GET_TASKS`). Key order is not fixed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct V1Message {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub subscribed: Option<Subscribed>,
    #[serde(default)]
    pub get_state: Option<GetState>,
    #[serde(default)]
    pub get_tasks: Option<GetTasks>,
    #[serde(default)]
    pub task_added: Option<TaskAdded>,
    #[serde(default)]
    pub task_updated: Option<TaskUpdated>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Subscribed {
    /// Absent in the scheduler API's SUBSCRIBED, which is not a snapshot.
    #[serde(default)]
    pub get_state: Option<GetState>,
}

/// `get_state`: empty repeated fields are omitted (`"get_tasks": {}`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GetState {
    #[serde(default, deserialize_with = "null_as_default")]
    pub get_tasks: GetTasks,
    #[serde(default, deserialize_with = "null_as_default")]
    pub get_frameworks: GetFrameworks,
    #[serde(default, deserialize_with = "null_as_default")]
    pub get_agents: GetAgents,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GetTasks {
    #[serde(default, deserialize_with = "null_as_default")]
    pub tasks: Vec<MesosTask>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub unreachable_tasks: Vec<MesosTask>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub orphan_tasks: Vec<MesosTask>,
    /// Only in an *agent's* response: one agent's tasks, not the cluster.
    #[serde(default)]
    pub launched_tasks: Option<IgnoredAny>,
    // `completed_tasks` is not read: those tasks are terminal.
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GetFrameworks {
    #[serde(default, deserialize_with = "null_as_default")]
    pub frameworks: Vec<FrameworkEntry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FrameworkEntry {
    #[serde(default)]
    pub framework_info: Option<FrameworkInfo>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FrameworkInfo {
    #[serde(default)]
    pub id: Option<Id>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GetAgents {
    #[serde(default, deserialize_with = "null_as_default")]
    pub agents: Vec<AgentEntry>,
    /// 1.9+: agents known from the registry but not yet re-registered.
    #[serde(default, deserialize_with = "null_as_default")]
    pub recovered_agents: Vec<AgentInfo>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AgentEntry {
    #[serde(default)]
    pub agent_info: Option<AgentInfo>,
    #[serde(default)]
    pub pid: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AgentInfo {
    #[serde(default)]
    pub id: Option<Id>,
    #[serde(default)]
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TaskAdded {
    pub task: MesosTask,
}

/// `TASK_UPDATED`: the real shape (docs/FORMATS.md §5), not the docs' example.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TaskUpdated {
    #[serde(default)]
    pub framework_id: Option<Id>,
    /// Latest state known to the agent; may be ahead of `status.state`.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub status: Option<TaskStatus>,
}

/// One task, from `/master/state` or the v1 API, as groupd keeps it: its
/// status history is reduced to what [`convert_task`] reads (see
/// [`MesosTask::compact`]), so that a snapshot of 100,000 tasks with long
/// histories costs one short status per task, not the master's copy.
#[derive(Debug, Clone, Serialize)]
pub struct MesosTask {
    pub id: Id,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framework_id: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slave_id: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// The ContainerInfo the task was launched with: the requested networks
    /// and their groups (authoritative per task, docs/FORMATS.md §8.10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerInfo>,
    /// Oldest first; after [`MesosTask::compact`] at most one, plus the
    /// updates applied since.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<TaskStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryInfo>,
}

impl<'de> Deserialize<'de> for MesosTask {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        RawMesosTask::deserialize(de).map(MesosTask::from)
    }
}

/// The wire form of [`MesosTask`]: read one task at a time, then compacted.
#[derive(Deserialize)]
struct RawMesosTask {
    #[serde(alias = "task_id")]
    pub id: Id,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub framework_id: Option<Id>,
    #[serde(default, alias = "agent_id")]
    pub slave_id: Option<Id>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    /// The ContainerInfo the task was launched with: the requested networks
    /// and their groups (authoritative per task, docs/FORMATS.md §8.10).
    #[serde(default)]
    pub container: Option<ContainerInfo>,
    /// Oldest first; only the statuses that can matter are kept.
    #[serde(default)]
    pub statuses: Option<BoundedStatuses>,
    #[serde(default)]
    pub discovery: Option<DiscoveryInfo>,
}

impl From<RawMesosTask> for MesosTask {
    fn from(raw: RawMesosTask) -> MesosTask {
        let task = MesosTask {
            id: raw.id,
            name: raw.name,
            framework_id: raw.framework_id,
            slave_id: raw.slave_id,
            state: raw.state,
            labels: raw.labels,
            container: raw.container,
            statuses: raw.statuses.map(|s| s.0).unwrap_or_default(),
            discovery: raw.discovery,
        };
        task.compact()
    }
}

/// A status history read element by element, keeping only the statuses
/// that can decide a task's addresses (those that report any, the latest
/// [`MAX_STATUSES`] of them) plus one marker with the latest state and
/// whether the task is a nested container. The master sends every status
/// a task ever had; nothing else in them is read.
pub(crate) struct BoundedStatuses(Vec<TaskStatus>);

impl<'de> Deserialize<'de> for BoundedStatuses {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct StatusesVisitor;
        impl<'de> Visitor<'de> for StatusesVisitor {
            type Value = BoundedStatuses;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of task statuses")
            }
            fn visit_unit<E: de::Error>(self) -> Result<BoundedStatuses, E> {
                Ok(BoundedStatuses(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BoundedStatuses, A::Error> {
                let mut kept = std::collections::VecDeque::new();
                let mut latest_state = None;
                let mut nested = false;
                while let Some(mut status) = seq.next_element::<TaskStatus>()? {
                    // Only TASK_UPDATED's status needs its task id.
                    status.task_id = None;
                    if status.state.is_some() {
                        latest_state.clone_from(&status.state);
                    }
                    nested |= status.is_nested();
                    if status.has_address() {
                        kept.push_back(status);
                        if kept.len() > MAX_STATUSES {
                            kept.pop_front();
                        }
                    }
                }
                let mut statuses: Vec<TaskStatus> = kept.into();
                statuses.extend(TaskStatus::synthetic(latest_state, nested, Vec::new()));
                Ok(BoundedStatuses(statuses))
            }
        }
        de.deserialize_any(StatusesVisitor)
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ContainerInfo {
    /// `MESOS` or `DOCKER`.
    #[serde(default, rename = "type")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerInfo>,
    #[serde(default, deserialize_with = "null_as_default")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub network_infos: Vec<NetworkInfo>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct DockerInfo {
    /// `HOST` (protobuf default), `BRIDGE`, `USER`, `NONE`.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct NetworkInfo {
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(default, deserialize_with = "null_as_default")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<IpAddressInfo>,
    /// Mesos 0.25–0.29 legacy single address.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct IpAddressInfo {
    /// Absent in requests (`[{}]`).
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// Often absent (= IPv4); informational, the address itself says which.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

impl NetworkInfo {
    /// Every address string of this NetworkInfo (legacy field included).
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        self.ip_addresses
            .iter()
            .filter_map(|a| a.ip_address.as_deref())
            .chain(self.ip_address.as_deref())
    }

    fn has_address(&self) -> bool {
        self.addresses().any(|a| !a.trim().is_empty())
    }

    /// What the status rules read of a requested NetworkInfo: its name.
    fn name_only(&self) -> NetworkInfo {
        NetworkInfo {
            name: self.name.clone(),
            ..NetworkInfo::default()
        }
    }

    /// What a reported NetworkInfo is read for: name, groups, labels and
    /// addresses (not the protocols, which the address itself says).
    fn reported_part(&self) -> NetworkInfo {
        NetworkInfo {
            ip_addresses: self
                .ip_addresses
                .iter()
                .map(|a| IpAddressInfo {
                    ip_address: a.ip_address.clone(),
                    protocol: None,
                })
                .collect(),
            ..self.clone()
        }
    }

    fn is_nat_bridge(&self) -> bool {
        self.name
            .as_deref()
            .is_some_and(|n| NAT_BRIDGE_NETWORKS.contains(&n))
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct TaskStatus {
    /// Set in `TASK_UPDATED` statuses.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Id>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_status: Option<ContainerStatus>,
}

impl TaskStatus {
    /// The status of a nested container (pod task).
    fn is_nested(&self) -> bool {
        self.container_status
            .as_ref()
            .and_then(|c| c.container_id.as_ref())
            .is_some_and(|id| id.parent.is_some())
    }

    /// Reports at least one address, on any network.
    fn has_address(&self) -> bool {
        self.container_status
            .as_ref()
            .is_some_and(|c| c.network_infos.iter().any(NetworkInfo::has_address))
    }

    /// A status that carries only `state`, the nested-container flag and
    /// `networks`, standing for a history a compaction left out (`None`
    /// when there is nothing to carry).
    fn synthetic(
        state: Option<String>,
        nested: bool,
        networks: Vec<NetworkInfo>,
    ) -> Option<TaskStatus> {
        let container_status = (nested || !networks.is_empty()).then(|| ContainerStatus {
            container_id: nested.then_some(ContainerId {
                value: None,
                parent: Some(IgnoredAny),
            }),
            network_infos: networks,
        });
        if state.is_none() && container_status.is_none() {
            return None;
        }
        Some(TaskStatus {
            task_id: None,
            state,
            container_status,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ContainerStatus {
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<ContainerId>,
    #[serde(default, deserialize_with = "null_as_default")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub network_infos: Vec<NetworkInfo>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ContainerId {
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Set for nested containers (pod tasks).
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "present")]
    pub parent: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct DiscoveryInfo {
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<DiscoveryPorts>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct DiscoveryPorts {
    #[serde(default, deserialize_with = "null_as_default")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Port {
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<serde_json::Number>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// What a task's conversion needs from the rest of the document: framework
/// names (for `Task::app`) and agent addresses (to reject the agent's own IP).
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub framework_names: HashMap<String, String>,
    pub agent_ips: HashMap<String, BTreeSet<IpAddr>>,
}

impl Context {
    pub fn from_master_state(state: &MasterState) -> Context {
        let mut ctx = Context::default();
        for fw in &state.frameworks {
            ctx.add_framework(fw.id.as_ref(), fw.name.as_deref());
        }
        for slave in &state.slaves {
            ctx.add_agent(
                slave.id.as_ref(),
                slave.hostname.as_deref(),
                slave.pid.as_deref(),
            );
        }
        ctx
    }

    pub fn from_get_state(state: &GetState) -> Context {
        Context::from_parts(&state.get_frameworks, &state.get_agents)
    }

    /// The context of a `get_state`'s frameworks and agents.
    pub fn from_parts(frameworks: &GetFrameworks, agents: &GetAgents) -> Context {
        let mut ctx = Context::default();
        for fw in frameworks
            .frameworks
            .iter()
            .filter_map(|f| f.framework_info.as_ref())
        {
            ctx.add_framework(fw.id.as_ref(), fw.name.as_deref());
        }
        for agent in &agents.agents {
            if let Some(info) = &agent.agent_info {
                ctx.add_agent(
                    info.id.as_ref(),
                    info.hostname.as_deref(),
                    agent.pid.as_deref(),
                );
            }
        }
        for info in &agents.recovered_agents {
            ctx.add_agent(info.id.as_ref(), info.hostname.as_deref(), None);
        }
        ctx
    }

    pub fn add_framework(&mut self, id: Option<&Id>, name: Option<&str>) {
        if let (Some(id), Some(name)) = (id, name) {
            self.framework_names.insert(id.0.clone(), name.to_string());
        }
    }

    /// Remember the agent's IPs: its hostname when that is an address, and
    /// the address in its libprocess pid (`slave(1)@10.0.0.40:5051`).
    pub fn add_agent(&mut self, id: Option<&Id>, hostname: Option<&str>, pid: Option<&str>) {
        let Some(id) = id else { return };
        let from_pid = pid
            .and_then(|p| p.rsplit_once('@'))
            .and_then(|(_, addr)| addr.rsplit_once(':'))
            .map(|(host, _)| host);
        let ips = self.agent_ips.entry(id.0.clone()).or_default();
        for text in hostname.into_iter().chain(from_pid) {
            if let Some(ip) = parse_ip(text.trim_start_matches('[').trim_end_matches(']')) {
                ips.insert(ip);
            }
        }
    }
}

/// The view of a `/master/state` document.
pub fn view_from_master_state(state: &MasterState, groups: &GroupsConfig) -> ClusterView {
    let ctx = Context::from_master_state(state);
    // Tasks listed under a framework belong to it even without framework_id.
    let live = state
        .frameworks
        .iter()
        .flat_map(|fw| fw.tasks.iter().map(move |t| (t, fw.id.as_ref())));
    let unreachable = state.frameworks.iter().flat_map(|fw| {
        fw.unreachable_tasks
            .iter()
            .map(move |t| (t, fw.id.as_ref()))
    });
    let orphans = state.orphan_tasks.iter().map(|t| (t, None));
    collect_view(live.chain(unreachable).chain(orphans), &ctx, groups)
}

/// The view of a v1 `get_state` (from `SUBSCRIBED` or `GET_STATE`).
pub fn view_from_get_state(state: &GetState, groups: &GroupsConfig) -> ClusterView {
    let ctx = Context::from_get_state(state);
    view_from_get_tasks(&state.get_tasks, &ctx, groups)
}

/// The view of a v1 `get_tasks` (`GET_TASKS`, or inside `get_state`).
pub fn view_from_get_tasks(tasks: &GetTasks, ctx: &Context, groups: &GroupsConfig) -> ClusterView {
    let all = tasks
        .tasks
        .iter()
        .chain(&tasks.unreachable_tasks)
        .chain(&tasks.orphan_tasks)
        .map(|t| (t, None));
    collect_view(all, ctx, groups)
}

/// A task listed twice (live and unreachable, or orphaned) keeps its first,
/// most current, entry.
fn collect_view<'a>(
    tasks: impl Iterator<Item = (&'a MesosTask, Option<&'a Id>)>,
    ctx: &Context,
    groups: &GroupsConfig,
) -> ClusterView {
    let mut view = ViewBuilder::default();
    for (task, framework) in tasks {
        if !view.contains(task.id.0.as_str()) {
            view.insert(convert(task, framework, ctx, groups));
        }
    }
    view.finish()
}

impl MesosTask {
    /// Apply a `TASK_UPDATED` event the way the master applies the status
    /// update to its own copy of the task, then compact the history again.
    pub fn apply_update(&mut self, update: &TaskUpdated) {
        if let Some(status) = &update.status {
            let mut status = status.clone();
            status.task_id = None;
            if status.state.is_some() {
                self.state.clone_from(&status.state);
            }
            self.statuses.push(status);
            let excess = self.statuses.len().saturating_sub(MAX_STATUSES);
            self.statuses.drain(..excess);
        }
        if update.state.is_some() {
            self.state.clone_from(&update.state);
        }
        let statuses = std::mem::take(&mut self.statuses);
        self.statuses = self.compacted_statuses(statuses);
    }

    /// The task with its status history reduced to at most one status that
    /// [`convert_task`] reads exactly like the whole history: the reported
    /// NetworkInfos it would pick (the accepted ones of the latest status
    /// with an address), the latest status's state and whether the task is
    /// a nested container. Everything else in the history is dropped.
    pub fn compact(mut self) -> MesosTask {
        let statuses = std::mem::take(&mut self.statuses);
        self.statuses = self.compacted_statuses(statuses);
        self
    }

    fn compacted_statuses(&self, statuses: Vec<TaskStatus>) -> Vec<TaskStatus> {
        let with = MesosTask {
            statuses,
            ..self.skeleton()
        };
        let reported: Vec<NetworkInfo> = with
            .reported_networks()
            .into_iter()
            .map(NetworkInfo::reported_part)
            .collect();
        let nested = with.is_nested();
        let state = with.statuses.iter().rev().find_map(|s| s.state.clone());
        TaskStatus::synthetic(state, nested, reported)
            .into_iter()
            .collect()
    }

    /// The task without its statuses (cheap: what the status rules read
    /// from the task itself is its requested networks).
    fn skeleton(&self) -> MesosTask {
        MesosTask {
            id: Id::default(),
            name: None,
            framework_id: None,
            slave_id: None,
            state: None,
            labels: Labels::default(),
            container: self.container.as_ref().map(|c| ContainerInfo {
                kind: None,
                docker: None,
                network_infos: c.network_infos.iter().map(NetworkInfo::name_only).collect(),
            }),
            statuses: Vec::new(),
            discovery: None,
        }
    }

    fn requested_networks(&self) -> &[NetworkInfo] {
        self.container
            .as_ref()
            .map(|c| c.network_infos.as_slice())
            .unwrap_or_default()
    }

    /// `Some(network)` for a Docker container (default `HOST`), else `None`.
    fn docker_network(&self) -> Option<String> {
        let container = self.container.as_ref()?;
        let kind = container
            .kind
            .as_deref()
            .map(|k| k.trim().to_ascii_uppercase());
        let is_docker = match kind.as_deref() {
            Some("DOCKER") => true,
            Some(_) => false,
            None => container.docker.is_some(),
        };
        if !is_docker {
            return None;
        }
        let network = container
            .docker
            .as_ref()
            .and_then(|d| d.network.as_deref())
            .unwrap_or("HOST");
        Some(network.trim().to_ascii_uppercase())
    }

    /// A nested container (pod task): the executor owns the network.
    fn is_nested(&self) -> bool {
        self.statuses
            .iter()
            .filter_map(|s| s.container_status.as_ref()?.container_id.as_ref())
            .any(|id| id.parent.is_some())
    }

    /// The NetworkInfos of the latest status that reports an address, keeping
    /// only the requested networks when the task named any (module docs).
    fn reported_networks(&self) -> Vec<&NetworkInfo> {
        let requested: BTreeSet<&str> = self
            .requested_networks()
            .iter()
            .filter_map(|n| n.name.as_deref())
            .collect();
        for status in self.statuses.iter().rev() {
            let Some(container) = &status.container_status else {
                continue;
            };
            let accepted: Vec<&NetworkInfo> = container
                .network_infos
                .iter()
                .filter(|n| {
                    requested.is_empty()
                        || n.name
                            .as_deref()
                            .is_some_and(|name| requested.contains(name))
                })
                .collect();
            if accepted.iter().any(|n| n.has_address()) {
                return accepted;
            }
        }
        Vec::new()
    }

    fn current_state(&self) -> TaskState {
        let latest_status = self.statuses.iter().rev().find_map(|s| s.state.as_deref());
        match self.state.as_deref().or(latest_status) {
            Some(state) => TaskState::parse(state),
            None => TaskState::Unknown,
        }
    }
}

/// See the module documentation for the rules and why.
pub fn network_kind(task: &MesosTask, reported: &[&NetworkInfo], has_ips: bool) -> NetworkKind {
    if let Some(network) = task.docker_network() {
        return match network.as_str() {
            "HOST" => NetworkKind::Host,
            "BRIDGE" => NetworkKind::NatBridge,
            "USER" => NetworkKind::PerTask,
            _ => NetworkKind::Unknown,
        };
    }
    // Requested NetworkInfos count named or not; reported ones only when
    // named, because every host-network task reports an unnamed one (with
    // the agent's address).
    let reported_named = reported.iter().copied().filter(|n| n.name.is_some());
    let (mut own, mut nat) = (false, false);
    for network in task.requested_networks().iter().chain(reported_named) {
        if network.is_nat_bridge() {
            nat = true;
        } else {
            own = true;
        }
    }
    if own {
        NetworkKind::PerTask
    } else if nat {
        NetworkKind::NatBridge
    } else if task.is_nested() && !has_ips {
        NetworkKind::Unknown
    } else {
        NetworkKind::Host
    }
}

/// One task. Never fails: what cannot be understood is left out and noted.
pub fn convert_task(task: &MesosTask, ctx: &Context, groups: &GroupsConfig) -> Task {
    convert(task, None, ctx, groups)
}

/// [`convert_task`]; `framework` is the id of the framework the task was
/// listed under, used when the task does not name its own.
fn convert(task: &MesosTask, framework: Option<&Id>, ctx: &Context, groups: &GroupsConfig) -> Task {
    let state = task.current_state();
    let agent = task.slave_id.as_ref().map(|id| id.0.as_str());
    let mut out = new_task(
        &task.id.0,
        app_name(task, framework, ctx).into(),
        agent,
        state,
    );
    let mut notes = Notes::default();
    let mut problems = Notes::default();
    let reported = task.reported_networks();
    let has_ips = reported.iter().any(|n| n.has_address());
    let kind = network_kind(task, &reported, has_ips);
    out.ips = task_ips(task, &reported, kind, ctx, &mut notes, &mut problems);
    let inputs = group_inputs(task, &reported);
    problems.extend(check_lengths(&inputs, groups));
    if problems.is_empty() {
        assign_groups(&mut out, &inputs, groups);
        out.labels = label_map(task.labels.pairs(), groups, &mut notes);
        if kind == NetworkKind::PerTask {
            out.discovery_ports = discovery_ports(task);
        }
    }
    out.not_enforced = classify(kind, &out.state, !out.ips.is_empty());
    out.note = notes.into_note();
    reject(&mut out, problems);
    out
}

/// `framework:task-name`; Mesos has no app id (Marathon's task name is the
/// reversed app path, which cannot be reversed reliably: ids may hold dots).
fn app_name(task: &MesosTask, listed_under: Option<&Id>, ctx: &Context) -> String {
    let framework_id = task
        .framework_id
        .as_ref()
        .or(listed_under)
        .map(|id| id.0.as_str());
    let framework = framework_id.map(|id| {
        ctx.framework_names
            .get(id)
            .map(String::as_str)
            .unwrap_or(id)
    });
    let name = task.name.as_deref().unwrap_or(task.id.0.as_str());
    match framework {
        Some(framework) => format!("{framework}:{name}"),
        None => name.to_string(),
    }
}

/// The reported addresses. IP-per-task tasks on a mix of own and NAT
/// networks keep only their own addresses (the NAT ones are not unique).
fn task_ips(
    task: &MesosTask,
    reported: &[&NetworkInfo],
    kind: NetworkKind,
    ctx: &Context,
    notes: &mut Notes,
    problems: &mut Notes,
) -> VecSet<IpAddr> {
    let agent_ips = task
        .slave_id
        .as_ref()
        .and_then(|id| ctx.agent_ips.get(&id.0));
    let mut ips = VecSet::new();
    for network in reported {
        if kind == NetworkKind::PerTask && network.is_nat_bridge() {
            continue;
        }
        // An empty address is no address (some agents write "" for none).
        for text in network.addresses().filter(|a| !a.trim().is_empty()) {
            match parse_ip(text) {
                Some(ip)
                    if kind == NetworkKind::PerTask
                        && agent_ips.is_some_and(|a| a.contains(&ip)) =>
                {
                    notes.push(format!(
                        "ignored {ip}: it is the agent's own address, reported before the container network was attached"
                    ));
                }
                Some(ip) => {
                    ips.insert(ip);
                }
                None => problems.push(unparseable_ip(text)),
            }
        }
    }
    ips
}

/// Groups live on the request (`container.network_infos`); pod tasks only
/// have them on the reported NetworkInfos, so those count too.
fn group_inputs<'a>(task: &'a MesosTask, reported: &[&'a NetworkInfo]) -> GroupInputs<'a> {
    let networks: Vec<&NetworkInfo> = task
        .requested_networks()
        .iter()
        .chain(reported.iter().copied())
        .collect();
    GroupInputs {
        lists: networks
            .iter()
            .flat_map(|n| n.groups.iter())
            .map(|g| (g.as_str(), GroupOrigin::NetworkInfo))
            .collect(),
        network_labels: networks.iter().flat_map(|n| n.labels.pairs()).collect(),
        task_labels: task.labels.pairs().collect(),
    }
}

/// Discovery ports reachable on the task's own address: those labelled
/// `network-scope: container`, or not labelled at all. `network-scope: host`
/// ports are the agent side of a port mapping.
fn discovery_ports(task: &MesosTask) -> VecSet<DiscoveryPort> {
    let ports = task
        .discovery
        .iter()
        .flat_map(|d| d.ports.iter())
        .flat_map(|p| p.ports.iter());
    ports
        .filter(|p| {
            p.labels
                .pairs()
                .all(|(k, v)| k != "network-scope" || v == "container")
        })
        .filter_map(|p| {
            let number = p.number.as_ref().and_then(port_number)?;
            let protocol = match p
                .protocol
                .as_deref()
                .map(|s| s.trim().to_ascii_lowercase())
                .as_deref()
            {
                Some("tcp") | None => Protocol::Tcp,
                Some("udp") => Protocol::Udp,
                Some(_) => return None,
            };
            Some(DiscoveryPort {
                number,
                protocol,
                name: p.name.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NotEnforced;

    fn task(json: &str) -> MesosTask {
        serde_json::from_str(json).expect("valid task JSON")
    }

    fn convert(json: &str) -> Task {
        convert_task(&task(json), &Context::default(), &GroupsConfig::default())
    }

    #[test]
    fn ids_and_labels_accept_both_json_dialects() {
        let a = task(r#"{"id":"t1","slave_id":"S1","labels":[{"key":"k","value":"v"}]}"#);
        let b = task(
            r#"{"task_id":{"value":"t1"},"agent_id":{"value":"S1"},"labels":{"labels":[{"key":"k","value":"v"}]}}"#,
        );
        assert_eq!(a.id, b.id);
        assert_eq!(a.slave_id, b.slave_id);
        assert_eq!(a.labels, b.labels);
        let empty = task(r#"{"id":"t","labels":{}}"#);
        assert!(empty.labels.0.is_empty());
        let null = task(r#"{"id":"t","labels":null}"#);
        assert!(null.labels.0.is_empty());
        let no_value = task(r#"{"id":"t","labels":[{"key":"flag"}]}"#);
        assert_eq!(
            no_value.labels.pairs().collect::<Vec<_>>(),
            vec![("flag", "")]
        );
    }

    #[test]
    fn ips_come_from_the_latest_status_that_has_any() {
        let t = convert(
            r#"{"id":"t","state":"TASK_RUNNING","container":{"type":"MESOS","network_infos":[{"name":"n"}]},
                "statuses":[
                  {"state":"TASK_STARTING","container_status":{"network_infos":[{"name":"n","ip_addresses":[{"ip_address":"9.0.0.1"}]}]}},
                  {"state":"TASK_RUNNING","container_status":{"network_infos":[{"name":"n","ip_addresses":[{"ip_address":"9.0.0.2"},{"protocol":"IPv6","ip_address":"fd00:233::2"}]}]}},
                  {"state":"TASK_RUNNING","container_status":{}}
                ]}"#,
        );
        let ips: Vec<String> = t.ips.iter().map(|ip| ip.to_string()).collect();
        assert_eq!(ips, vec!["9.0.0.2", "fd00:233::2"]);
        assert_eq!(t.not_enforced, None);
    }

    #[test]
    fn bad_ips_and_over_long_names_or_labels_reject_the_task() {
        let limits = GroupsConfig {
            max_name_len: 8,
            max_label_len: 16,
            ..GroupsConfig::default()
        };
        let with = |ip: &str, groups: &str, labels: &str| {
            let json = format!(
                r#"{{"id":"t","state":"TASK_RUNNING","labels":[{labels}],
                    "container":{{"type":"MESOS","network_infos":[{{"name":"n","groups":[{groups}]}}]}},
                    "statuses":[{{"state":"TASK_RUNNING","container_status":{{"network_infos":[{{"name":"n","ip_addresses":[{{"ip_address":"{ip}"}},{{"ip_address":"10.233.0.2"}}]}}]}}}}]}}"#
            );
            convert_task(&task(&json), &Context::default(), &limits)
        };
        let good = with("10.233.0.1", r#""g""#, r#"{"key":"k","value":"v"}"#);
        assert_eq!(
            (good.ips.len(), good.not_enforced, good.invalid),
            (2, None, None)
        );
        let cases = [
            (
                with("not-an-ip", r#""g""#, ""),
                "unparseable IP \"not-an-ip\"",
            ),
            (
                with("10.233.200.999", r#""g""#, ""),
                "unparseable IP \"10.233.200.999\"",
            ),
            (
                with("10.233.0.1", r#""123456789""#, ""),
                "group name \"123456789\" is 9 bytes, longer than groups.max_name_len = 8",
            ),
            (
                with(
                    "10.233.0.1",
                    "",
                    r#"{"key":"network-groups","value":"a,123456789"}"#,
                ),
                "group name \"123456789\" is 9 bytes",
            ),
            (
                with(
                    "10.233.0.1",
                    "",
                    r#"{"key":"network-groups","value":"a,b,c,d,e,f,g,h,i"}"#,
                ),
                "label \"network-groups\" is 17 bytes, longer than groups.max_label_len = 16",
            ),
        ];
        for (t, why) in cases {
            assert_eq!(t.not_enforced, Some(NotEnforced::Invalid), "{t:?}");
            assert!(
                t.invalid.as_deref().unwrap_or_default().starts_with(why),
                "{t:?}"
            );
            assert!(
                t.ips.is_empty() && t.groups.is_empty() && t.labels.is_empty(),
                "{t:?}"
            );
        }
        // Another label too long is only left out.
        let t = with(
            "10.233.0.1",
            "",
            r#"{"key":"k","value":"12345678901234567"}"#,
        );
        assert_eq!((t.ips.len(), t.not_enforced, t.labels.len()), (2, None, 0));
        assert!(t.note.unwrap_or_default().contains("label \"k\" not kept"));
        // A name of megabytes is reported by its first characters, not copied.
        let huge = "x".repeat(5 << 20);
        let t = with("10.233.0.1", &format!("{huge:?}"), "");
        let why = t.invalid.unwrap_or_default();
        assert!(why.len() < 200 && why.contains("5242880 bytes"), "{why}");
    }

    #[test]
    fn legacy_ip_address_field_counts() {
        let t = convert(
            r#"{"id":"t","state":"TASK_RUNNING","container":{"type":"MESOS","network_infos":[{"ip_addresses":[{}],"groups":["a"]}]},
                "statuses":[{"state":"TASK_RUNNING","container_status":{"network_infos":[{"ip_address":"33.33.33.1"}]}}]}"#,
        );
        assert_eq!(t.ips.len(), 1);
        assert_eq!(
            t.not_enforced, None,
            "net-modules IP-per-container is an endpoint"
        );
        assert!(t.groups["a"].contains(&GroupOrigin::NetworkInfo));
    }

    #[test]
    fn unnamed_agent_address_of_a_docker_user_network_task_is_ignored() {
        // docs/FORMATS.md §8.3: STARTING reports the agent IP without a network name.
        let t = convert(
            r#"{"id":"t","state":"TASK_STARTING","container":{"type":"DOCKER","docker":{"network":"USER"},"network_infos":[{"name":"dcos"}]},
                "statuses":[{"state":"TASK_STARTING","container_status":{"network_infos":[{"ip_addresses":[{"ip_address":"172.17.0.4"}]}]}}]}"#,
        );
        assert!(t.ips.is_empty());
        assert_eq!(t.not_enforced, Some(NotEnforced::NoAddress));
    }

    #[test]
    fn agent_own_address_is_never_a_task_address() {
        let mut ctx = Context::default();
        ctx.add_agent(
            Some(&Id("S1".into())),
            Some("agent1.example"),
            Some("slave(1)@10.0.0.40:5051"),
        );
        let t = task(
            r#"{"id":"t","slave_id":"S1","state":"TASK_RUNNING","container":{"type":"MESOS","network_infos":[{}]},
                "statuses":[{"container_status":{"network_infos":[{"ip_addresses":[{"ip_address":"10.0.0.40"}]}]}}]}"#,
        );
        let t = convert_task(&t, &ctx, &GroupsConfig::default());
        assert!(t.ips.is_empty());
        assert!(t.note.unwrap_or_default().contains("agent's own address"));
    }

    #[test]
    fn mixed_own_and_nat_networks_keep_only_own_addresses() {
        let t = convert(
            r#"{"id":"t","state":"TASK_RUNNING","container":{"type":"MESOS","network_infos":[{"name":"dcos"},{"name":"mesos-bridge"}]},
                "statuses":[{"container_status":{"network_infos":[
                    {"name":"dcos","ip_addresses":[{"ip_address":"9.0.0.7"}]},
                    {"name":"mesos-bridge","ip_addresses":[{"ip_address":"172.31.254.3"}]}]}}]}"#,
        );
        let ips: Vec<String> = t.ips.iter().map(|ip| ip.to_string()).collect();
        assert_eq!(ips, vec!["9.0.0.7"]);
        assert_eq!(t.not_enforced, None);
    }

    #[test]
    fn classification_of_container_kinds() {
        // `reported` is the NetworkInfo the agent reports, with the address.
        let kind = |container: &str, reported: &str| {
            let json = format!(
                r#"{{"id":"t","state":"TASK_RUNNING","container":{container},
                     "statuses":[{{"container_status":{{"network_infos":[{{{reported}"ip_addresses":[{{"ip_address":"10.1.2.3"}}]}}]}}}}]}}"#
            );
            convert(&json).not_enforced
        };
        let docker =
            |network: &str| kind(&format!(r#"{{"type":"DOCKER","docker":{network}}}"#), "");
        assert_eq!(
            docker(r#"{"network":"HOST"}"#),
            Some(NotEnforced::HostNetwork)
        );
        assert_eq!(
            docker("{}"),
            Some(NotEnforced::HostNetwork),
            "protobuf default is HOST"
        );
        assert_eq!(
            docker(r#"{"network":"BRIDGE"}"#),
            Some(NotEnforced::NatBridge)
        );
        assert_eq!(docker(r#"{"network":"USER"}"#), None);
        assert_eq!(
            docker(r#"{"network":"NONE"}"#),
            Some(NotEnforced::NoAddress)
        );
        assert_eq!(
            kind(r#"{"type":"MESOS","mesos":{}}"#, ""),
            Some(NotEnforced::HostNetwork)
        );
        assert_eq!(kind("null", ""), Some(NotEnforced::HostNetwork));
        let bridge = r#"{"type":"MESOS","network_infos":[{"name":"mesos-bridge"}]}"#;
        assert_eq!(
            kind(bridge, r#""name":"mesos-bridge","#),
            Some(NotEnforced::NatBridge)
        );
        let calico = r#"{"type":"MESOS","network_infos":[{"name":"calico"}]}"#;
        assert_eq!(kind(calico, r#""name":"calico","#), None);
        // Named network requested, unnamed (agent) address reported: not yet.
        assert_eq!(kind(calico, ""), Some(NotEnforced::NoAddress));
        // Nothing requested, a named network reported (pod tasks).
        assert_eq!(kind(r#"{"type":"MESOS"}"#, r#""name":"dcos","#), None);
    }

    #[test]
    fn terminal_task_is_terminal_whatever_its_network() {
        let t = convert(
            r#"{"id":"t","state":"TASK_KILLED","container":{"type":"MESOS","network_infos":[{"name":"n"}]},
                "statuses":[{"container_status":{"network_infos":[{"name":"n","ip_addresses":[{"ip_address":"9.0.0.1"}]}]}}]}"#,
        );
        assert_eq!(t.not_enforced, Some(NotEnforced::Terminal));
    }

    #[test]
    fn state_falls_back_to_the_latest_status() {
        let t = convert(
            r#"{"id":"t","statuses":[{"state":"TASK_STARTING"},{"state":"TASK_RUNNING"}]}"#,
        );
        assert_eq!(t.state, TaskState::Running);
        let t = convert(r#"{"id":"t"}"#);
        assert_eq!(t.state, TaskState::Unknown);
    }

    #[test]
    fn groups_from_network_infos_network_labels_and_task_labels() {
        let t = convert(
            r#"{"id":"t","state":"TASK_RUNNING","labels":[{"key":"network-groups","value":"task-level"}],
                "container":{"type":"MESOS","network_infos":[{"name":"n","groups":["g1"," g2 "],
                    "labels":{"labels":[{"key":"network-groups","value":"l1,l2"}]}}]}}"#,
        );
        let names: Vec<&str> = t.groups.keys().map(|g| g.as_str()).collect();
        assert_eq!(names, vec!["g1", "g2", "l1", "l2"]);
        assert!(t.groups["l1"].contains(&GroupOrigin::NetworkLabel));

        let t = convert(
            r#"{"id":"t","state":"TASK_RUNNING","labels":[{"key":"network-groups","value":"task-level"}],
                "container":{"type":"MESOS","network_infos":[{"name":"n"}]}}"#,
        );
        assert!(t.groups["task-level"].contains(&GroupOrigin::TaskLabel));
    }

    #[test]
    fn groups_on_reported_network_infos_count_for_pod_tasks() {
        let t = convert(
            r#"{"id":"p","state":"TASK_RUNNING","container":{"type":"MESOS"},
                "statuses":[{"container_status":{"container_id":{"value":"c","parent":{"value":"p"}},
                  "network_infos":[{"name":"dcos","groups":["pods"],"ip_addresses":[{"ip_address":"9.0.1.3"}]}]}}]}"#,
        );
        assert_eq!(t.not_enforced, None);
        assert!(t.groups.contains_key("pods"));
    }

    #[test]
    fn pod_task_without_reported_address_is_not_called_host_network() {
        let t = convert(
            r#"{"id":"p","state":"TASK_STARTING","container":{"type":"MESOS"},
                "statuses":[{"container_status":{"container_id":{"value":"c","parent":{"value":"p"}}}}]}"#,
        );
        assert_eq!(t.not_enforced, Some(NotEnforced::NoAddress));
    }

    #[test]
    fn discovery_ports_on_the_host_side_are_not_task_ports() {
        let t = convert(
            r#"{"id":"t","state":"TASK_RUNNING","container":{"type":"MESOS","network_infos":[{"name":"n"}]},
                "discovery":{"ports":{"ports":[
                    {"number":12564,"protocol":"tcp","labels":{"labels":[{"key":"network-scope","value":"host"}]}},
                    {"number":80,"protocol":"tcp","labels":{"labels":[{"key":"network-scope","value":"container"}]}},
                    {"number":53,"protocol":"udp"},
                    {"number":99999,"protocol":"udp"},
                    {"number":7,"protocol":"sctp"}]}}}"#,
        );
        let ports: Vec<(u16, Protocol)> = t
            .discovery_ports
            .iter()
            .map(|p| (p.number, p.protocol))
            .collect();
        assert_eq!(ports, vec![(53, Protocol::Udp), (80, Protocol::Tcp)]);
    }

    #[test]
    fn apply_update_appends_the_status_and_moves_the_state() {
        let mut t = task(
            r#"{"task_id":{"value":"t"},"state":"TASK_STAGING","container":{"type":"MESOS","network_infos":[{"name":"n"}]}}"#,
        );
        let update: TaskUpdated = serde_json::from_str(
            r#"{"state":"TASK_RUNNING","status":{"state":"TASK_RUNNING","container_status":{"network_infos":[{"name":"n","ip_addresses":[{"ip_address":"9.0.0.9"}]}]}}}"#,
        )
        .expect("update");
        for _ in 0..40 {
            t.apply_update(&update);
        }
        assert!(t.statuses.len() <= MAX_STATUSES);
        let converted = convert_task(&t, &Context::default(), &GroupsConfig::default());
        assert_eq!(converted.state, TaskState::Running);
        assert_eq!(converted.ips.len(), 1);
    }

    /// `json` (one task) with its whole status history, not compacted:
    /// what the conversion read before tasks were compacted while parsed.
    fn uncompacted(json: &serde_json::Value) -> MesosTask {
        let raw: RawMesosTask = serde_json::from_value(json.clone()).expect("task");
        let statuses: Vec<TaskStatus> = json
            .get("statuses")
            .filter(|s| !s.is_null())
            .map(|s| serde_json::from_value(s.clone()).expect("statuses"))
            .unwrap_or_default();
        MesosTask {
            id: raw.id,
            name: raw.name,
            framework_id: raw.framework_id,
            slave_id: raw.slave_id,
            state: raw.state,
            labels: raw.labels,
            container: raw.container,
            statuses,
            discovery: raw.discovery,
        }
    }

    /// Every object in `value` that is a task with a status history.
    fn tasks_in(value: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
        match value {
            serde_json::Value::Object(map) => {
                let is_task = map.contains_key("statuses")
                    && (map.contains_key("id") || map.contains_key("task_id"));
                if is_task {
                    out.push(value.clone());
                }
                map.values().for_each(|v| tasks_in(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| tasks_in(v, out)),
            _ => {}
        }
    }

    #[test]
    fn compacted_tasks_convert_exactly_like_their_whole_history_in_every_fixture() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mesos");
        let mut documents = Vec::new();
        for dir in ["master-state", "operator-api", "agent-state"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("fixture dir") {
                let path = entry.expect("entry").path();
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                // Whole JSON documents and one-event-per-line captures.
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    documents.push(v);
                } else {
                    documents.extend(
                        text.lines()
                            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()),
                    );
                }
            }
        }
        let mut tasks = Vec::new();
        documents.iter().for_each(|d| tasks_in(d, &mut tasks));
        assert!(
            tasks.len() > 50,
            "only {} tasks in the fixtures",
            tasks.len()
        );
        let groups = GroupsConfig::default();
        let mut ctx = Context::default();
        ctx.add_framework(Some(&Id("F".into())), Some("f"));
        for json in &tasks {
            let whole = uncompacted(json);
            let compact: MesosTask = serde_json::from_value(json.clone()).expect("task");
            assert!(compact.statuses.len() <= 1, "{:?}", compact.statuses);
            let (a, b) = (
                convert_task(&whole, &ctx, &groups),
                convert_task(&compact, &ctx, &groups),
            );
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "task {json}");
        }
    }

    #[test]
    fn a_long_history_keeps_one_status_and_converts_the_same() {
        let status = |state: &str, ip: Option<&str>| match ip {
            Some(ip) => format!(
                r#"{{"state":"{state}","container_status":{{"network_infos":[{{"name":"n","ip_addresses":[{{"ip_address":"{ip}"}}]}},{{"name":"other","ip_addresses":[{{"ip_address":"9.9.9.9"}}]}}]}}}}"#
            ),
            None => format!(r#"{{"state":"{state}","labels":[{{"key":"k","value":"v"}}]}}"#),
        };
        let mut history: Vec<String> = (0..1000)
            .map(|i| {
                status(
                    "TASK_RUNNING",
                    Some(&format!("10.233.{}.{}", i / 250, i % 250 + 1)),
                )
            })
            .collect();
        history.push(status("TASK_RUNNING", None));
        let json: serde_json::Value = serde_json::from_str(&format!(
            r#"{{"id":"t","container":{{"type":"MESOS","network_infos":[{{"name":"n","groups":["g"]}}]}},"statuses":[{}]}}"#,
            history.join(",")
        ))
        .expect("json");
        let compact: MesosTask = serde_json::from_value(json.clone()).expect("task");
        assert_eq!(compact.statuses.len(), 1);
        let networks = &compact.statuses[0]
            .container_status
            .as_ref()
            .expect("reported networks kept")
            .network_infos;
        assert_eq!(networks.len(), 1, "only the accepted network is kept");
        let (ctx, groups) = (Context::default(), GroupsConfig::default());
        let a = convert_task(&uncompacted(&json), &ctx, &groups);
        let b = convert_task(&compact, &ctx, &groups);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(ips(&b), vec!["10.233.3.250"]);
    }

    fn ips(t: &Task) -> Vec<String> {
        t.ips.iter().map(|ip| ip.to_string()).collect()
    }

    #[test]
    fn framework_name_and_task_name_make_the_app() {
        let mut ctx = Context::default();
        ctx.add_framework(Some(&Id("F1".into())), Some("marathon"));
        let t = task(r#"{"id":"t","name":"web.prod","framework_id":"F1"}"#);
        assert_eq!(
            &*convert_task(&t, &ctx, &GroupsConfig::default()).app,
            "marathon:web.prod"
        );
        let t = task(r#"{"id":"t","name":"web","framework_id":"F2"}"#);
        assert_eq!(
            &*convert_task(&t, &ctx, &GroupsConfig::default()).app,
            "F2:web"
        );
    }
}
