//! The cluster view: which task has which IPs and which groups.
//!
//! Pure data, no I/O. Sources (file, marathon, mesos) produce a [`ClusterView`];
//! the compiler turns it plus the local interface bindings into a ruleset.
//! State is keyed by task ID, never by IP alone (an IP can move between tasks).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod compact;
mod group_name;

pub use compact::{VecMap, VecSet};
pub use group_name::{GroupName, Interned};

/// A task's id: shared by the view's index, the task and everything that
/// refers to the task (one copy of each id, however many indexes hold it).
pub type TaskId = Arc<str>;

/// Where a task's membership of a group came from (shown by `groupctl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupOrigin {
    /// Mesos `container.network_infos[].groups` (Marathon 0.14–1.4 `ipAddress.groups`).
    NetworkInfo,
    /// The label `groups.label_key` on a NetworkInfo (`ipAddress.labels`, `networks[].labels`).
    NetworkLabel,
    /// The label `groups.label_key` on the task or app (used when no NetworkInfo label has it).
    TaskLabel,
    /// Marathon `ipAddress.groups` of the app version that launched the task.
    AppVersion,
    /// `groups.ungrouped = "group:NAME"` applied to a task with no groups.
    Ungrouped,
}

impl GroupOrigin {
    /// Every origin in ascending order.
    pub const ALL: [GroupOrigin; 5] = [
        GroupOrigin::NetworkInfo,
        GroupOrigin::NetworkLabel,
        GroupOrigin::TaskLabel,
        GroupOrigin::AppVersion,
        GroupOrigin::Ungrouped,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`GroupOrigin`]s in one byte. Iterates, compares, prints and
/// serializes like the `BTreeSet<GroupOrigin>` it replaces (a sorted array).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct OriginSet(u8);

impl OriginSet {
    pub fn new() -> OriginSet {
        OriginSet(0)
    }

    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub fn contains(&self, origin: &GroupOrigin) -> bool {
        self.0 & origin.bit() != 0
    }

    /// Adds `origin`; false if it was already there.
    pub fn insert(&mut self, origin: GroupOrigin) -> bool {
        let new = !self.contains(&origin);
        self.0 |= origin.bit();
        new
    }

    /// Removes `origin`; false if it was not there.
    pub fn remove(&mut self, origin: &GroupOrigin) -> bool {
        let had = self.contains(origin);
        self.0 &= !origin.bit();
        had
    }

    /// The origins in ascending order.
    pub fn iter(&self) -> Origins {
        Origins(self.0)
    }

    pub fn first(&self) -> Option<GroupOrigin> {
        self.iter().next()
    }
}

impl PartialOrd for OriginSet {
    fn partial_cmp(&self, other: &OriginSet) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OriginSet {
    /// Lexicographic over the sorted origins, as for `BTreeSet`.
    fn cmp(&self, other: &OriginSet) -> std::cmp::Ordering {
        self.iter().cmp(other.iter())
    }
}

impl fmt::Debug for OriginSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<GroupOrigin> for OriginSet {
    fn from_iter<I: IntoIterator<Item = GroupOrigin>>(iter: I) -> OriginSet {
        let mut set = OriginSet::new();
        set.extend(iter);
        set
    }
}

impl Extend<GroupOrigin> for OriginSet {
    fn extend<I: IntoIterator<Item = GroupOrigin>>(&mut self, iter: I) {
        for origin in iter {
            self.insert(origin);
        }
    }
}

impl<const N: usize> From<[GroupOrigin; N]> for OriginSet {
    fn from(origins: [GroupOrigin; N]) -> OriginSet {
        origins.into_iter().collect()
    }
}

impl IntoIterator for OriginSet {
    type Item = GroupOrigin;
    type IntoIter = Origins;
    fn into_iter(self) -> Origins {
        Origins(self.0)
    }
}

impl IntoIterator for &OriginSet {
    type Item = GroupOrigin;
    type IntoIter = Origins;
    fn into_iter(self) -> Origins {
        Origins(self.0)
    }
}

/// Iterator over the origins of an [`OriginSet`], ascending.
#[derive(Clone, Debug)]
pub struct Origins(u8);

impl Iterator for Origins {
    type Item = GroupOrigin;
    fn next(&mut self) -> Option<GroupOrigin> {
        let origin = *GroupOrigin::ALL.get(self.0.trailing_zeros() as usize)?;
        self.0 &= !origin.bit();
        Some(origin)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.0.count_ones() as usize;
        (n, Some(n))
    }
}

impl DoubleEndedIterator for Origins {
    fn next_back(&mut self) -> Option<GroupOrigin> {
        let top = 7usize.checked_sub(self.0.leading_zeros() as usize)?;
        let origin = GroupOrigin::ALL[top];
        self.0 &= !origin.bit();
        Some(origin)
    }
}

impl ExactSizeIterator for Origins {}

impl Serialize for OriginSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for OriginSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<OriginSet, D::Error> {
        Vec::<GroupOrigin>::deserialize(deserializer).map(OriginSet::from_iter)
    }
}

/// Transport protocol of a discovery port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A port the task declares in its discovery info (R9).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DiscoveryPort {
    pub number: u16,
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Mesos task state, as reported by the master. Unknown names are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    Staging,
    Starting,
    Running,
    Killing,
    Finished,
    Failed,
    Killed,
    Error,
    Lost,
    Dropped,
    Unreachable,
    Gone,
    GoneByOperator,
    Unknown,
    Other(Box<str>),
}

impl TaskState {
    /// Parse a Mesos state name (`TASK_RUNNING`) or a Marathon condition (`Running`).
    pub fn parse(name: &str) -> TaskState {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("TASK_").unwrap_or(&upper);
        match bare {
            "STAGING" => TaskState::Staging,
            "STARTING" => TaskState::Starting,
            "RUNNING" => TaskState::Running,
            "KILLING" => TaskState::Killing,
            "FINISHED" => TaskState::Finished,
            "FAILED" => TaskState::Failed,
            "KILLED" => TaskState::Killed,
            "ERROR" => TaskState::Error,
            "LOST" => TaskState::Lost,
            "DROPPED" => TaskState::Dropped,
            "UNREACHABLE" => TaskState::Unreachable,
            "GONE" => TaskState::Gone,
            "GONE_BY_OPERATOR" => TaskState::GoneByOperator,
            "UNKNOWN" => TaskState::Unknown,
            _ => TaskState::Other(name.into()),
        }
    }

    /// A terminal task no longer owns its IPs; its rules are removed.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Dropped
                | TaskState::Gone
                | TaskState::GoneByOperator
        )
    }

    pub fn as_str(&self) -> &str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Error => "TASK_ERROR",
            TaskState::Lost => "TASK_LOST",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
            TaskState::GoneByOperator => "TASK_GONE_BY_OPERATOR",
            TaskState::Unknown => "TASK_UNKNOWN",
            TaskState::Other(s) => s,
        }
    }
}

/// Why a task gets no rules of its own (shown as "not enforced" by groupctl).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotEnforced {
    /// Host networking: the task uses the agent's IP.
    HostNetwork,
    /// A NAT bridge (Docker BRIDGE, mesos-bridge): the IP is not unique in the cluster.
    NatBridge,
    /// No IP reported yet (e.g. TASK_STAGING).
    NoAddress,
    /// The task is in a terminal state.
    Terminal,
    /// What the master says about the task is unusable (an unparseable IP,
    /// a group name or label longer than the configured maximum): see
    /// [`Task::invalid`]. Nothing of it was kept.
    Invalid,
}

/// One task as the master describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Mesos task ID (== Marathon task id). Any string; never becomes nft syntax.
    pub id: TaskId,
    /// Marathon app id or, for other frameworks, the framework name + task name.
    pub app: Arc<str>,
    /// Agent ID (Mesos slave_id / Marathon slaveId), when known; interned
    /// (an agent runs many tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Interned>,
    pub state: TaskState,
    /// Every IP of every NetworkInfo of the task (IPv4 and IPv6), deduplicated.
    pub ips: VecSet<IpAddr>,
    /// groups(T) with where each came from (R1). Empty = ungrouped (R3).
    pub groups: VecMap<GroupName, OriginSet>,
    /// Task/app labels (informational; groups from labels are already in `groups`).
    #[serde(default)]
    pub labels: VecMap<String, String>,
    /// Discovery ports (R9).
    #[serde(default)]
    pub discovery_ports: VecSet<DiscoveryPort>,
    /// `None` when the task is an endpoint (has IPs of its own); otherwise why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_enforced: Option<NotEnforced>,
    /// A diagnostic for operators (shown by groupctl), e.g. why a task that
    /// should have groups was treated as ungrouped. Never affects rules by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<Box<str>>,
    /// Why the master's latest data for this task was rejected, when it was.
    /// With `not_enforced == Some(Invalid)` the task has no data at all;
    /// otherwise the rest of the task is its last good data, still enforced
    /// (see `DesiredState::upsert_task`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<Box<str>>,
}

impl Task {
    /// A running task with IPs of its own in `groups` (origin NetworkInfo):
    /// the shape simulators, benchmarks and tests need most.
    pub fn running(
        id: &str,
        app: &str,
        ips: impl IntoIterator<Item = IpAddr>,
        groups: &[&str],
    ) -> Task {
        let mut t = Task {
            id: id.into(),
            app: app.into(),
            agent: None,
            state: TaskState::Running,
            ips: ips.into_iter().collect(),
            groups: VecMap::new(),
            labels: VecMap::new(),
            discovery_ports: VecSet::new(),
            not_enforced: None,
            note: None,
            invalid: None,
        };
        for g in groups {
            t.add_group(g, GroupOrigin::NetworkInfo);
        }
        t
    }

    /// An endpoint is a live task with IPs of its own.
    pub fn is_endpoint(&self) -> bool {
        self.not_enforced.is_none() && !self.ips.is_empty() && !self.state.is_terminal()
    }

    pub fn add_group(&mut self, name: &str, origin: GroupOrigin) {
        self.groups
            .get_or_insert_with(name, || GroupName::new(name), OriginSet::new)
            .insert(origin);
    }
}

/// Several live endpoints claim the same IP in one view (the master is
/// mid-update, or a NAT network was misclassified). The source reports it and
/// leaves the tasks as they are; the daemon decides whom to believe.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IpConflict {
    pub ip: IpAddr,
    /// IDs of the endpoints that all report `ip`, sorted, at least two.
    pub tasks: Vec<String>,
}

impl std::fmt::Display for IpConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is claimed by {} live endpoints: {}",
            self.ip,
            self.tasks.len(),
            self.tasks.join(", ")
        )
    }
}

/// The whole cluster as one source saw it at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Tasks by task ID.
    pub tasks: BTreeMap<TaskId, Task>,
    /// IPs claimed by more than one live endpoint of `tasks`, sorted by IP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<IpConflict>,
}

impl ClusterView {
    pub fn insert(&mut self, task: Task) {
        self.tasks.insert(task.id.clone(), task);
    }

    /// Rebuilds `tasks` with full B-tree nodes. Inserting tasks one by one
    /// leaves the nodes half to two-thirds full, and a node entry (the task
    /// itself, ~200 bytes) is most of a task's memory: at 33,334 tasks this
    /// takes the view from 17.8 MB to 12.7 MB. Call it once a whole view is
    /// built; the contents do not change.
    pub fn repack(&mut self) {
        // `append` of two non-empty maps rebuilds the tree from both sorted
        // sequences in full nodes, freeing the old nodes as it goes (unlike
        // `collect`, which holds every entry in a Vec first). Were that ever
        // to change, only the memory saving would be lost.
        if let Some((id, task)) = self.tasks.pop_last() {
            let mut last = BTreeMap::from([(id, task)]);
            self.tasks.append(&mut last);
        }
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values().filter(|t| t.is_endpoint())
    }

    /// Every IP that more than one live endpoint claims, sorted by IP
    /// (recomputed from `tasks`; does not read or change `conflicts`).
    /// Sorts one flat list of claims: a map of every IP to its claimants
    /// would cost a table and a list per IP of the cluster, for the few
    /// conflicts there are.
    pub fn ip_conflicts(&self) -> Vec<IpConflict> {
        let mut claims: Vec<(IpAddr, &str)> =
            Vec::with_capacity(self.endpoints().map(|task| task.ips.len()).sum());
        claims.extend(
            self.endpoints()
                .flat_map(|task| task.ips.iter().map(|ip| (*ip, &*task.id))),
        );
        claims.sort_unstable();
        claims
            .chunk_by(|a, b| a.0 == b.0)
            .filter(|claims| claims.len() > 1)
            .filter_map(|claims| {
                let (ip, _) = claims.first()?;
                Some(IpConflict {
                    ip: *ip,
                    tasks: claims.iter().map(|(_, id)| id.to_string()).collect(),
                })
            })
            .collect()
    }
}

/// Builds a view of a whole document task by task, its B-tree kept nearly
/// full: it is repacked (see [`ClusterView::repack`]) each time it has grown
/// by a quarter, so that a large view under construction is not mostly half
/// empty nodes (that was the peak memory of a snapshot). The sizes grow
/// geometrically, so this costs a few rebuilds of the tree in all.
#[derive(Debug, Default)]
pub struct ViewBuilder {
    view: ClusterView,
    repack_at: usize,
}

/// Below this size half empty nodes do not matter.
const REPACK_FROM: usize = 1024;

impl ViewBuilder {
    pub fn insert(&mut self, task: Task) {
        self.view.insert(task);
        let len = self.view.tasks.len();
        if len >= self.repack_at.max(REPACK_FROM) {
            self.view.repack();
            self.repack_at = len + len / 4;
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.view.tasks.contains_key(id)
    }

    /// The view, packed.
    pub fn finish(mut self) -> ClusterView {
        self.view.repack();
        self.view
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn origin_set_behaves_like_btreeset() {
        use GroupOrigin::*;
        let items = [Ungrouped, NetworkInfo, AppVersion, NetworkInfo];
        let mut ours: OriginSet = items.into_iter().collect();
        let mut theirs: BTreeSet<GroupOrigin> = items.into_iter().collect();
        assert!(ours.iter().eq(theirs.iter().copied()));
        assert!(ours.iter().rev().eq(theirs.iter().rev().copied()));
        assert_eq!(ours.insert(TaskLabel), theirs.insert(TaskLabel));
        assert_eq!(ours.insert(TaskLabel), theirs.insert(TaskLabel));
        assert_eq!(ours.remove(&NetworkInfo), theirs.remove(&NetworkInfo));
        assert_eq!(ours.remove(&NetworkInfo), theirs.remove(&NetworkInfo));
        assert_eq!(ours.len(), theirs.len());
        assert_eq!(ours.contains(&Ungrouped), theirs.contains(&Ungrouped));
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        let json = serde_json::to_string(&ours).unwrap();
        assert_eq!(json, serde_json::to_string(&theirs).unwrap());
        assert_eq!(serde_json::from_str::<OriginSet>(&json).unwrap(), ours);
        let a = OriginSet::from([NetworkInfo, Ungrouped]);
        let b = OriginSet::from([NetworkLabel]);
        let (sa, sb) = (
            BTreeSet::from([NetworkInfo, Ungrouped]),
            BTreeSet::from([NetworkLabel]),
        );
        assert_eq!(a.cmp(&b), sa.cmp(&sb));
        assert_eq!(OriginSet::new().cmp(&a), BTreeSet::new().cmp(&sa));
    }

    #[test]
    fn repack_keeps_the_view() {
        let mut view = ClusterView::default();
        for i in (0..500).rev().chain(500..1000) {
            let ip = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            view.insert(Task::running(&format!("t{i}"), "app", [ip], &["g"]));
        }
        let before = view.clone();
        view.repack();
        assert_eq!(view, before);
        assert!(view.tasks.keys().eq(before.tasks.keys()));
        let mut one = ClusterView::default();
        one.insert(Task::running("only", "app", [], &[]));
        let before = one.clone();
        one.repack();
        assert_eq!(one, before);
        ClusterView::default().repack();
    }

    #[test]
    fn builder_gives_the_view_insert_gives() {
        let mut plain = ClusterView::default();
        let mut built = ViewBuilder::default();
        for i in (0..3000).map(|i| (i * 7919) % 5000) {
            let ip = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            let task = Task::running(&format!("t{i}"), "app", [ip], &["g"]);
            plain.insert(task.clone());
            built.insert(task);
        }
        // The same id again replaces the task, as `insert` does.
        plain.insert(Task::running("t0", "other", [], &[]));
        built.insert(Task::running("t0", "other", [], &[]));
        assert!(built.contains("t0") && !built.contains("t5000"));
        assert_eq!(built.finish(), plain);
    }
}
