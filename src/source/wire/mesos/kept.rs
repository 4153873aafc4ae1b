//! Mesos tasks kept while a snapshot is read and between events, in the
//! least memory that still converts exactly.
//!
//! A snapshot's tasks cannot be converted the moment they are read: the
//! agents and frameworks they need (agent addresses, framework names) may
//! come after them (`get_state` lists `get_tasks` first). And the live
//! source must keep every task's TaskInfo for later `TASK_UPDATED`s, which
//! carry only the new status. A [`KeptTask`] is one compacted
//! [`MesosTask`] (one synthetic status, see [`MesosTask::compact`]) written
//! as compact JSON: a single allocation of a few hundred bytes instead of
//! dozens of small ones, which at 100,000 tasks is the difference between
//! about 40 MB and 190 MB. Reading one back costs microseconds, paid once
//! per snapshot and once per event of the task.

use std::collections::HashMap;
use std::io::Read;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};

use super::{
    convert, null_as_default, Context, GetAgents, GetFrameworks, Id, MesosTask, Slave, ViewBuilder,
};
use crate::config::GroupsConfig;
use crate::model::ClusterView;

/// A compacted [`MesosTask`] as compact JSON (see the module docs).
#[derive(Debug, Clone)]
pub struct KeptTask(Box<[u8]>);

impl KeptTask {
    /// Keep `task`, compacted.
    pub fn keep(task: &MesosTask) -> KeptTask {
        // Writing these types cannot fail (no maps with non-string keys, no
        // failing Serialize impls); an empty memo would only read back as
        // "unknown task".
        KeptTask(serde_json::to_vec(task).unwrap_or_default().into())
    }

    /// The task back (`None` only if [`KeptTask::keep`] failed).
    pub fn open(&self) -> Option<MesosTask> {
        serde_json::from_slice(&self.0).ok()
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Read as a [`MesosTask`] (compacted as it is read) and kept at once.
impl<'de> Deserialize<'de> for KeptTask {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        MesosTask::deserialize(de).map(|task| KeptTask::keep(&task))
    }
}

/// `get_state` (of `SUBSCRIBED` or `GET_STATE`) with its tasks kept as
/// they are read.
#[derive(Debug, Default, Deserialize)]
pub struct KeptState {
    #[serde(default, deserialize_with = "null_as_default")]
    pub get_tasks: KeptTasks,
    #[serde(default, deserialize_with = "null_as_default")]
    pub get_frameworks: GetFrameworks,
    #[serde(default, deserialize_with = "null_as_default")]
    pub get_agents: GetAgents,
}

#[derive(Debug, Default, Deserialize)]
pub struct KeptTasks {
    #[serde(default, deserialize_with = "null_as_default")]
    pub tasks: Vec<KeptTask>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub unreachable_tasks: Vec<KeptTask>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub orphan_tasks: Vec<KeptTask>,
    // `completed_tasks` is not read: those tasks are terminal.
}

/// What a snapshot becomes for the live source: the view, the context for
/// later events, and every task kept by id (the first listing of a task
/// wins, as in the view).
pub struct Installed {
    pub view: ClusterView,
    pub ctx: Context,
    pub tasks: HashMap<String, KeptTask>,
}

impl KeptState {
    /// Convert every task (each read back once), keeping them by id.
    pub fn install(self, groups: &GroupsConfig) -> Installed {
        let ctx = Context::from_parts(&self.get_frameworks, &self.get_agents);
        let all = self.get_tasks;
        let listed = all
            .tasks
            .into_iter()
            .chain(all.unreachable_tasks)
            .chain(all.orphan_tasks);
        let mut view = ViewBuilder::default();
        let mut tasks = HashMap::new();
        for kept in listed {
            let Some(task) = kept.open() else { continue };
            if view.contains(task.id.0.as_str()) {
                continue;
            }
            view.insert(convert(&task, None, &ctx, groups));
            tasks.insert(task.id.0, kept);
        }
        Installed {
            view: view.finish(),
            ctx,
            tasks,
        }
    }
}

/// A `/master/state` body read from `reader` while it arrives (each task
/// compacted and kept as it is read, the body never held whole) -> its
/// view; `Err` says why the body is not a master state document.
pub fn read_master_state(reader: impl Read, groups: &GroupsConfig) -> Result<ClusterView, String> {
    let reader = std::io::BufReader::with_capacity(64 << 10, reader);
    let mut de = serde_json::Deserializer::from_reader(reader);
    let doc = StreamedMasterState::deserialize(&mut de)
        .and_then(|doc| de.end().map(|()| doc))
        .map_err(|e| format!("not a usable /master/state document: {e}"))?;
    if doc.completed_executors.is_some() || doc.master_hostname.is_some() {
        return Err("this is a Mesos agent's /state (tasks of one agent only), not the master's /master/state: check source.urls".into());
    }
    let Some(frameworks) = doc.frameworks else {
        return Err("the document has no \"frameworks\": not a Mesos /master/state (an error page or another service?)".into());
    };
    let state = KeptMasterState {
        frameworks,
        slaves: doc.slaves.unwrap_or_default(),
        orphan_tasks: doc.orphan_tasks.unwrap_or_default(),
    };
    Ok(state.view(groups))
}

/// A `/master/state` whose tasks were kept as they were read.
#[derive(Debug, Default)]
pub struct KeptMasterState {
    pub frameworks: Vec<KeptFramework>,
    pub slaves: Vec<Slave>,
    pub orphan_tasks: Vec<KeptTask>,
}

impl KeptMasterState {
    /// The view, exactly as `view_from_master_state` makes it from the
    /// whole document: live tasks, unreachable ones, orphans; a task
    /// listed under a framework belongs to it; the first listing wins.
    /// Each kept task is freed as soon as it is converted, so the view
    /// grows into the memory they leave (not beside it, which would leave
    /// the heap full of holes afterwards).
    pub fn view(self, groups: &GroupsConfig) -> ClusterView {
        let mut ctx = Context::default();
        for fw in &self.frameworks {
            ctx.add_framework(fw.id.as_ref(), fw.name.as_deref());
        }
        for slave in &self.slaves {
            ctx.add_agent(
                slave.id.as_ref(),
                slave.hostname.as_deref(),
                slave.pid.as_deref(),
            );
        }
        let mut live = Vec::new();
        let mut unreachable = Vec::new();
        for fw in self.frameworks {
            let id: Option<std::sync::Arc<Id>> = fw.id.map(std::sync::Arc::new);
            live.push((fw.tasks, id.clone()));
            unreachable.push((fw.unreachable_tasks, id));
        }
        let orphans = (self.orphan_tasks, None);
        let lists = live
            .into_iter()
            .chain(unreachable)
            .chain(std::iter::once(orphans));
        let mut view = ViewBuilder::default();
        for (tasks, framework) in lists {
            for kept in tasks {
                let Some(task) = kept.open() else { continue };
                drop(kept);
                if !view.contains(task.id.0.as_str()) {
                    view.insert(convert(&task, framework.as_deref(), &ctx, groups));
                }
            }
        }
        view.finish()
    }
}

/// `/master/state` with its tasks kept as they are read, plus what tells
/// it from the documents it could be mistaken for (absent and `null` are
/// told apart).
#[derive(Deserialize)]
struct StreamedMasterState {
    #[serde(default)]
    frameworks: Option<Vec<KeptFramework>>,
    #[serde(default)]
    slaves: Option<Vec<Slave>>,
    #[serde(default)]
    orphan_tasks: Option<Vec<KeptTask>>,
    /// Only an agent's `/state` has these.
    #[serde(default)]
    completed_executors: Option<IgnoredAny>,
    #[serde(default)]
    master_hostname: Option<IgnoredAny>,
}

/// One framework of `/master/state`, its tasks kept as they are read.
#[derive(Debug, Deserialize)]
pub struct KeptFramework {
    #[serde(default)]
    pub id: Option<Id>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tasks: Vec<KeptTask>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub unreachable_tasks: Vec<KeptTask>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::wire::mesos::{view_from_get_state, view_from_master_state, MasterState};
    use std::path::Path;

    fn fixture(rel: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mesos");
        std::fs::read(path.join(rel)).expect("fixture")
    }

    /// A reader that gives at most 7 bytes at a time.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(7);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    const MASTER_STATES: &[&str] = &[
        "master-state/mesos-0.25.0-master-state-vips.dcos-net.json",
        "master-state/mesos-0.26.0-master-state-no-tasks.dcos-net.json",
        "master-state/mesos-0.27.0-master-state-docker.dcos-net.json",
        "master-state/mesos-0.28.0-master-state.dcos-net.json",
        "master-state/mesos-1.0.1-master-state-overlay.dcos-net.json",
        "master-state/mesos-1.1.0-master-state-docker-bridge.sts-agent.json",
        "master-state/mesos-1.2.0-master-state-dcos-overlay.dcos-net.json",
        "master-state/mesos-1.8.0-master-state.dcos-net.json",
    ];

    #[test]
    fn streamed_master_state_gives_the_tasks_of_the_whole_document_parse() {
        let groups = GroupsConfig::default();
        for rel in MASTER_STATES {
            let bytes = fixture(rel);
            let whole: MasterState = serde_json::from_slice(&bytes).expect("master state");
            let want = view_from_master_state(&whole, &groups);
            // Read in 7-byte pieces: nothing depends on how bytes arrive.
            let got = read_master_state(Trickle(&bytes), &groups).expect(rel);
            assert_eq!(
                format!("{:?}", got.tasks),
                format!("{:?}", want.tasks),
                "{rel}"
            );
        }
    }

    #[test]
    fn kept_get_state_installs_the_view_of_the_whole_parse() {
        let groups = GroupsConfig::default();
        for rel in [
            "operator-api/mesos-1.8.0-get-state-tcp-and-udp.dcos-net.json",
            "operator-api/mesos-1.8.0-get-state-unhealthy.dcos-net.json",
            "operator-api/mesos-get-state-dns-hostname.dcos-net.json",
        ] {
            let bytes = fixture(rel);
            let value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            let state = &value["get_state"];
            let whole: super::super::GetState =
                serde_json::from_value(state.clone()).expect("get_state");
            let kept: KeptState = serde_json::from_value(state.clone()).expect("kept");
            let want = view_from_get_state(&whole, &groups);
            let installed = kept.install(&groups);
            assert_eq!(
                format!("{:?}", installed.view.tasks),
                format!("{:?}", want.tasks),
                "{rel}"
            );
            assert_eq!(installed.tasks.len(), want.tasks.len(), "{rel}");
            for (id, kept) in &installed.tasks {
                let task = kept.open().expect("reads back");
                assert_eq!(&task.id.0, id);
                // Kept once more: the same bytes (compaction is idempotent).
                assert_eq!(KeptTask::keep(&task).0, kept.0, "{rel} {id}");
            }
        }
    }

    #[test]
    fn agent_state_and_other_documents_are_not_master_states() {
        let groups = GroupsConfig::default();
        let agent = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/mesos/agent-state/mesos-1.5.0-agent-state.dcos-net.json"),
        )
        .expect("fixture");
        let why = read_master_state(agent.as_slice(), &groups).expect_err("agent");
        assert!(why.contains("agent's /state"), "{why}");
        let why = read_master_state(&b"{\"apps\": []}"[..], &groups).expect_err("marathon");
        assert!(why.contains("no \"frameworks\""), "{why}");
        let why = read_master_state(&b"{\"frameworks\": [}"[..], &groups).expect_err("bad");
        assert!(why.contains("not a usable /master/state"), "{why}");
    }
}
