//! The simulated cluster: apps, every version ever deployed, live tasks, and
//! the scripted changes that turn into Marathon events. Pure: no I/O, no
//! clock other than [`render::now_millis`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::marathon::{
    AppSpec, Network, PodInstanceSpec, PodSpec, SimError, TaskSpec, VersionChange,
};
use super::pods::Pods;
use super::render::{self, IpEntry, SimTask};

/// Agent id of tasks whose spec names none.
const DEFAULT_AGENT: &str = "sim-S0";

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub event_type: String,
    pub data: String,
}

fn emitted(event_type: &str, data: String) -> Emitted {
    Emitted {
        event_type: event_type.to_string(),
        data,
    }
}

type Outcome = Result<(Vec<String>, Vec<Emitted>), SimError>;

#[derive(Debug, Default)]
pub struct Cluster {
    apps: BTreeMap<String, SimApp>,
    /// Versions are timestamps; two changes in one millisecond still get
    /// distinct, increasing versions.
    last_version_ms: u64,
    next_host_port: u16,
    /// Pods (Marathon 1.4+).
    pub pods: Pods,
}

#[derive(Debug)]
struct SimApp {
    id: String,
    /// The definition without `id`, `version`, `versionInfo` and anything
    /// derived from tasks.
    def: Map<String, Value>,
    version: String,
    last_config_change_at: String,
    last_scaling_at: String,
    /// Every version ever deployed → its definition as served then.
    versions: BTreeMap<String, Value>,
    /// Live tasks, oldest first.
    tasks: Vec<SimTask>,
    /// A rolling deployment waiting for these old tasks to go.
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    plan: Value,
    old_tasks: BTreeSet<String>,
}

impl SimApp {
    fn definition(&self) -> Value {
        let mut def = self.def.clone();
        def.insert("id".into(), json!(self.id));
        def.insert("version".into(), json!(self.version));
        def.insert(
            "versionInfo".into(),
            json!({"lastScalingAt": self.last_scaling_at,
                   "lastConfigChangeAt": self.last_config_change_at}),
        );
        Value::Object(def)
    }

    fn record_version(&mut self) {
        self.versions
            .insert(self.version.clone(), self.definition());
    }

    /// The app as `/v2/apps` and `/v2/apps/{id}` show it.
    fn served(&self, embed_tasks: bool) -> Value {
        let mut app = self.definition();
        let count = |states: &[&str]| {
            self.tasks
                .iter()
                .filter(|t| states.contains(&t.state.as_str()))
                .count()
        };
        let deployments: Vec<Value> = self
            .pending
            .iter()
            .map(|p| json!({"id": p.plan["id"]}))
            .collect();
        if let Value::Object(map) = &mut app {
            map.insert(
                "tasksStaged".into(),
                json!(count(&["TASK_STAGING", "TASK_STARTING"])),
            );
            map.insert("tasksRunning".into(), json!(count(&["TASK_RUNNING"])));
            map.insert("tasksHealthy".into(), json!(0));
            map.insert("tasksUnhealthy".into(), json!(0));
            map.insert("deployments".into(), Value::Array(deployments));
            if embed_tasks {
                map.insert("tasks".into(), json!(self.tasks));
            }
        }
        app
    }

    fn set_instances(&mut self, n: usize) {
        self.def.insert("instances".into(), json!(n));
    }
}

/// `/prod/web` for `prod/web`, `/prod/web/` and `/prod/web`.
fn normalise_app_id(id: &str) -> Result<String, SimError> {
    let trimmed = id.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Err(SimError::Invalid("an app id must not be empty".into()));
    }
    Ok(format!("/{trimmed}"))
}

/// Whether a Mesos task state is terminal (the task no longer holds its
/// IPs). The simulator's own list, from the Mesos protobuf, not groupd's:
/// a bug in groupd's notion must not be mirrored here.
fn terminal(status: &str) -> bool {
    matches!(
        status,
        "TASK_FINISHED"
            | "TASK_FAILED"
            | "TASK_KILLED"
            | "TASK_ERROR"
            | "TASK_LOST"
            | "TASK_DROPPED"
            | "TASK_GONE"
            | "TASK_GONE_BY_OPERATOR"
    )
}

impl Cluster {
    fn next_version(&mut self) -> String {
        let ms = render::now_millis().max(self.last_version_ms + 1);
        self.last_version_ms = ms;
        render::iso_millis(ms)
    }

    fn host_port(&mut self) -> u16 {
        // 31000–32000 is Mesos' default port range.
        let port = 31_000 + self.next_host_port % 1000;
        self.next_host_port = self.next_host_port.wrapping_add(1);
        port
    }

    pub fn deploy_pod(&mut self, spec: PodSpec) -> Outcome {
        let version = self.next_version();
        let Cluster { apps, pods, .. } = self;
        let app_task = |id: &str| apps.values().any(|a| a.tasks.iter().any(|t| t.id == id));
        if let Some(clash) = apps.get(&format!("/{}", spec.id.trim().trim_matches('/'))) {
            return Err(SimError::AppExists(clash.id.clone()));
        }
        pods.deploy(spec, version, &app_task)
    }

    pub fn add_pod_instance(&mut self, pod: &str, spec: PodInstanceSpec) -> Outcome {
        let Cluster { apps, pods, .. } = self;
        let app_task = |id: &str| apps.values().any(|a| a.tasks.iter().any(|t| t.id == id));
        pods.add_instance(pod, spec, &app_task)
    }

    pub fn counts(&self) -> (usize, usize) {
        let tasks = self.apps.values().map(|a| a.tasks.len()).sum();
        (self.apps.len(), tasks)
    }

    fn app_mut(&mut self, id: &str) -> Result<&mut SimApp, SimError> {
        let id = normalise_app_id(id)?;
        self.apps.get_mut(&id).ok_or(SimError::UnknownApp(id))
    }

    fn task_exists(&self, id: &str) -> bool {
        self.apps
            .values()
            .any(|a| a.tasks.iter().any(|t| t.id == id))
    }

    fn locate_task(&self, id: &str) -> Result<(String, usize), SimError> {
        self.apps
            .values()
            .find_map(|a| {
                let index = a.tasks.iter().position(|t| t.id == id)?;
                Some((a.id.clone(), index))
            })
            .ok_or_else(|| SimError::UnknownTask(id.to_string()))
    }

    /// Reject duplicate task ids before anything changes.
    fn check_task_ids(&self, specs: &[TaskSpec]) -> Result<(), SimError> {
        let mut seen = BTreeSet::new();
        for id in specs.iter().filter_map(|s| s.id.as_deref()) {
            if id.is_empty() {
                return Err(SimError::Invalid("a task id must not be empty".into()));
            }
            if !seen.insert(id) || self.task_exists(id) {
                return Err(SimError::DuplicateTask(id.to_string()));
            }
        }
        Ok(())
    }

    /// A task of `app` launched by `version`: running with its IPs, or
    /// staging (no `ipAddresses`) when it has none yet.
    fn launch(&mut self, app: &SimApp, spec: TaskSpec, version: &str, now: &str) -> SimTask {
        let id = spec.id.unwrap_or_else(|| {
            // Marathon ≤ 1.4: the app path with `/` → `_`, a dot, a UUID.
            format!(
                "{}.{}",
                app.id.trim_start_matches('/').replace('/', "_"),
                render::uuid()
            )
        });
        let agent = if spec.agent.is_empty() {
            DEFAULT_AGENT.to_string()
        } else {
            spec.agent
        };
        let ports = if render::uses_host_ports(&app.def) {
            vec![self.host_port()]
        } else {
            Vec::new()
        };
        let running = !spec.ips.is_empty();
        SimTask {
            ip_addresses: spec.ips.into_iter().map(IpEntry::from).collect(),
            staged_at: now.to_string(),
            state: if running {
                "TASK_RUNNING"
            } else {
                "TASK_STAGING"
            }
            .to_string(),
            ports,
            started_at: running.then(|| now.to_string()),
            version: version.to_string(),
            id,
            app_id: app.id.clone(),
            host: spec.host.unwrap_or_else(|| agent.clone()),
            slave_id: agent,
            service_ports: Vec::new(),
            extra: Map::new(),
        }
    }

    /// Launch `specs` into app `app_id` at its current version; a status
    /// update for each that is running (Mesos sends none for staging).
    fn launch_all(
        &mut self,
        app_id: &str,
        specs: Vec<TaskSpec>,
        now: &str,
    ) -> (Vec<String>, Vec<Emitted>) {
        let mut ids = Vec::new();
        let mut events = Vec::new();
        let Some(mut app) = self.apps.remove(app_id) else {
            return (ids, events);
        };
        let version = app.version.clone();
        for spec in specs {
            let task = self.launch(&app, spec, &version, now);
            if task.state == "TASK_RUNNING" {
                events.push(emitted(
                    "status_update_event",
                    render::status_update_event(&task, "TASK_RUNNING", now),
                ));
            }
            ids.push(task.id.clone());
            app.tasks.push(task);
        }
        self.apps.insert(app.id.clone(), app);
        (ids, events)
    }

    pub fn deploy(&mut self, spec: AppSpec) -> Outcome {
        let id = normalise_app_id(&spec.id)?;
        if self.apps.contains_key(&id) {
            return Err(SimError::AppExists(id));
        }
        self.check_task_ids(&spec.tasks)?;
        let version = match spec.version {
            Some(v) if !v.trim().is_empty() => v,
            _ => self.next_version(),
        };
        let now = render::now_iso();
        let mut def = render::base_definition(spec.tasks.len(), &json!(spec.labels));
        for (key, value) in render::network_fields(&spec.network, &spec.groups, &spec.discovery) {
            def.insert(key.into(), value);
        }
        let mut app = SimApp {
            id: id.clone(),
            def,
            version: version.clone(),
            last_config_change_at: version.clone(),
            last_scaling_at: version.clone(),
            versions: BTreeMap::new(),
            tasks: Vec::new(),
            pending: None,
        };
        app.record_version();
        let plan = render::plan(&render::uuid(), "StartApplication", &id, &version);
        let mut events = vec![
            emitted(
                "api_post_event",
                render::api_post_event("/v2/apps", &app.definition(), &now),
            ),
            emitted(
                "group_change_success",
                render::group_change_success(&version, &now),
            ),
            deployment_info(&plan, "StartApplication", &id, &now),
        ];
        self.apps.insert(id.clone(), app);
        let (tasks, updates) = self.launch_all(&id, spec.tasks, &now);
        events.extend(updates);
        events.extend(deployment_done(&plan, "StartApplication", &id, &now));
        Ok((tasks, events))
    }

    pub fn scale(&mut self, app_id: &str, instances: usize, specs: Vec<TaskSpec>) -> Outcome {
        self.check_task_ids(&specs)?;
        let version = self.next_version();
        let app = self.app_mut(app_id)?;
        let live = app.tasks.len();
        if instances > live && specs.len() != instances - live {
            return Err(SimError::Invalid(format!(
                "scaling {} from {live} to {instances} tasks needs {} task specs, got {}",
                app.id,
                instances - live,
                specs.len()
            )));
        }
        if instances <= live && !specs.is_empty() {
            return Err(SimError::Invalid(format!(
                "scaling {} from {live} to {instances} tasks launches none; got {} task specs",
                app.id,
                specs.len()
            )));
        }
        let now = render::now_iso();
        let id = app.id.clone();
        app.version = version.clone();
        app.last_scaling_at = version.clone();
        app.set_instances(instances);
        app.record_version();
        let plan = render::plan(&render::uuid(), "ScaleApplication", &id, &version);
        let mut events = vec![
            emitted(
                "api_post_event",
                render::api_post_event(&format!("/v2/apps{id}"), &app.definition(), &now),
            ),
            emitted(
                "group_change_success",
                render::group_change_success(&version, &now),
            ),
            deployment_info(&plan, "ScaleApplication", &id, &now),
        ];
        let mut tasks = Vec::new();
        if instances > live {
            let (launched, updates) = self.launch_all(&id, specs, &now);
            tasks = launched;
            events.extend(updates);
        } else {
            // KillSelection YOUNGEST_FIRST, Marathon's default.
            for _ in instances..live {
                let (ended, updates) = self.end_task(&id, usize::MAX, "TASK_KILLED", &now);
                tasks.extend(ended);
                events.extend(updates);
            }
        }
        events.extend(deployment_done(&plan, "ScaleApplication", &id, &now));
        Ok((tasks, events))
    }

    pub fn new_version(&mut self, app_id: &str, change: VersionChange) -> Outcome {
        self.check_task_ids(&change.tasks)?;
        let version = self.next_version();
        let app = self.app_mut(app_id)?;
        let now = render::now_iso();
        let id = app.id.clone();
        apply_change(&mut app.def, &change);
        if !change.tasks.is_empty() || change.replace_old {
            app.set_instances(change.tasks.len());
        }
        app.version = version.clone();
        app.last_config_change_at = version.clone();
        app.last_scaling_at = version.clone();
        app.record_version();
        let old_tasks: BTreeSet<String> = app.tasks.iter().map(|t| t.id.clone()).collect();
        let plan = render::plan(&render::uuid(), "RestartApplication", &id, &version);
        let mut events = vec![
            emitted(
                "api_post_event",
                render::api_post_event(&format!("/v2/apps{id}"), &app.definition(), &now),
            ),
            emitted(
                "group_change_success",
                render::group_change_success(&version, &now),
            ),
            deployment_info(&plan, "RestartApplication", &id, &now),
        ];
        // A newer deployment supersedes a pending one (Marathon cancels it).
        app.pending = Some(Pending {
            plan: plan.clone(),
            old_tasks: old_tasks.clone(),
        });
        let (mut tasks, updates) = self.launch_all(&id, change.tasks, &now);
        events.extend(updates);
        if change.replace_old {
            for old in &old_tasks {
                let Ok((_, index)) = self.locate_task(old) else {
                    continue;
                };
                let (ended, updates) = self.end_task(&id, index, "TASK_KILLED", &now);
                tasks.extend(ended);
                events.extend(updates);
            }
        }
        events.extend(self.finish_deployment_if_done(&id, &now));
        Ok((tasks, events))
    }

    /// Kill/lose a task by id.
    pub fn end_task_by_id(&mut self, task_id: &str, status: &str) -> Outcome {
        let (app_id, index) = self.locate_task(task_id)?;
        let now = render::now_iso();
        let (tasks, mut events) = self.end_task(&app_id, index, status, &now);
        events.extend(self.finish_deployment_if_done(&app_id, &now));
        Ok((tasks, events))
    }

    /// Remove task `index` (`usize::MAX`: the youngest) of `app_id` with a
    /// terminal status update.
    fn end_task(
        &mut self,
        app_id: &str,
        index: usize,
        status: &str,
        now: &str,
    ) -> (Vec<String>, Vec<Emitted>) {
        let Some(app) = self.apps.get_mut(app_id) else {
            return (Vec::new(), Vec::new());
        };
        if app.tasks.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let index = index.min(app.tasks.len() - 1);
        let mut task = app.tasks.remove(index);
        task.state = status.to_string();
        let event = render::status_update_event(&task, status, now);
        (vec![task.id], vec![emitted("status_update_event", event)])
    }

    /// `deployment_step_success` + `deployment_success` once the last task
    /// of the versions a rolling deployment replaces is gone.
    fn finish_deployment_if_done(&mut self, app_id: &str, now: &str) -> Vec<Emitted> {
        let Some(app) = self.apps.get_mut(app_id) else {
            return Vec::new();
        };
        let done = app
            .pending
            .as_ref()
            .is_some_and(|p| !app.tasks.iter().any(|t| p.old_tasks.contains(&t.id)));
        if !done {
            return Vec::new();
        }
        match app.pending.take() {
            Some(p) => deployment_done(&p.plan, "RestartApplication", app_id, now),
            None => Vec::new(),
        }
    }

    pub fn update_task(
        &mut self,
        task_id: &str,
        status: &str,
        ips: Option<Vec<IpAddr>>,
    ) -> Outcome {
        let status = status.trim();
        if status.is_empty() {
            return Err(SimError::Invalid("a task status must not be empty".into()));
        }
        let (app_id, index) = self.locate_task(task_id)?;
        let now = render::now_iso();
        let Some(app) = self.apps.get_mut(&app_id) else {
            return Err(SimError::UnknownApp(app_id));
        };
        let task = &mut app.tasks[index];
        if let Some(ips) = ips {
            task.ip_addresses = ips.into_iter().map(IpEntry::from).collect();
        }
        if terminal(status) {
            return self.end_task_by_id(task_id, status);
        }
        task.state = status.to_string();
        if status == "TASK_RUNNING" && task.started_at.is_none() {
            task.started_at = Some(now.clone());
        }
        let event = render::status_update_event(task, status, &now);
        Ok((
            vec![task_id.to_string()],
            vec![emitted("status_update_event", event)],
        ))
    }

    pub fn remove_app(&mut self, app_id: &str) -> Outcome {
        let id = self.app_mut(app_id)?.id.clone();
        let version = self.next_version();
        let now = render::now_iso();
        let plan = render::plan(&render::uuid(), "StopApplication", &id, &version);
        let mut events = vec![
            emitted(
                "group_change_success",
                render::group_change_success(&version, &now),
            ),
            deployment_info(&plan, "StopApplication", &id, &now),
        ];
        let mut tasks = Vec::new();
        while self.apps.get(&id).is_some_and(|a| !a.tasks.is_empty()) {
            let (ended, updates) = self.end_task(&id, 0, "TASK_KILLED", &now);
            tasks.extend(ended);
            events.extend(updates);
        }
        self.apps.remove(&id);
        events.push(emitted(
            "app_terminated_event",
            render::app_terminated_event(&id, &now),
        ));
        events.extend(deployment_done(&plan, "StopApplication", &id, &now));
        Ok((tasks, events))
    }

    /// `GET /v2/apps[?embed=apps.tasks]`.
    pub fn apps_json(&self, embed_tasks: bool) -> String {
        let apps: Vec<Value> = self.apps.values().map(|a| a.served(embed_tasks)).collect();
        json!({ "apps": apps }).to_string()
    }

    /// `GET /v2/apps/{id}`: `{"app": …}` with tasks (Marathon embeds them
    /// for a single app).
    pub fn app_json(&self, id: &str) -> Option<String> {
        let app = self.apps.get(&normalise_app_id(id).ok()?)?;
        Some(json!({ "app": app.served(true) }).to_string())
    }

    /// `GET /v2/apps/{id}/tasks`.
    pub fn app_tasks_json(&self, id: &str) -> Option<String> {
        let app = self.apps.get(&normalise_app_id(id).ok()?)?;
        Some(json!({ "tasks": app.tasks }).to_string())
    }

    /// `GET /v2/apps/{id}/versions`: newest first.
    pub fn app_versions_json(&self, id: &str) -> Option<String> {
        let app = self.apps.get(&normalise_app_id(id).ok()?)?;
        let versions: Vec<&String> = app.versions.keys().rev().collect();
        Some(json!({ "versions": versions }).to_string())
    }

    /// `GET /v2/apps/{id}/versions/{version}`: the bare definition.
    pub fn app_version_json(&self, id: &str, version: &str) -> Option<String> {
        let app = self.apps.get(&normalise_app_id(id).ok()?)?;
        app.versions.get(version).map(Value::to_string)
    }

    /// `GET /v2/tasks`.
    pub fn tasks_json(&self) -> String {
        let tasks: Vec<&SimTask> = self.apps.values().flat_map(|a| &a.tasks).collect();
        json!({ "tasks": tasks }).to_string()
    }

    /// Replace everything with the apps of a document.
    pub fn load_fixture(&mut self, bytes: &[u8]) -> Result<usize, SimError> {
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|e| SimError::Fixture(e.to_string()))?;
        let mut found = Vec::new();
        collect_apps(&doc, &mut found);
        if found.is_empty() && doc.get("apps").is_none() {
            return Err(SimError::Fixture(
                "no apps: expected a /v2/apps, /v2/groups or /v2/apps/{id} document".into(),
            ));
        }
        let mut apps = BTreeMap::new();
        for raw in found {
            let app = self.fixture_app(raw)?;
            if apps.contains_key(&app.id) {
                return Err(SimError::Fixture(format!("app {} appears twice", app.id)));
            }
            apps.insert(app.id.clone(), app);
        }
        let count = apps.len();
        self.apps = apps;
        Ok(count)
    }

    fn fixture_app(&mut self, raw: &Map<String, Value>) -> Result<SimApp, SimError> {
        let mut def = raw.clone();
        let id = def
            .remove("id")
            .and_then(|v| v.as_str().map(str::to_string))
            .ok_or_else(|| SimError::Fixture("an app without a string id".into()))?;
        let id = normalise_app_id(&id)?;
        let version = match def
            .remove("version")
            .and_then(|v| v.as_str().map(str::to_string))
        {
            Some(v) => v,
            None => self.next_version(),
        };
        let info = def.remove("versionInfo").unwrap_or(Value::Null);
        let info_field = |key: &str| info[key].as_str().map(str::to_string);
        let last_config_change_at =
            info_field("lastConfigChangeAt").unwrap_or_else(|| version.clone());
        let last_scaling_at = info_field("lastScalingAt").unwrap_or_else(|| version.clone());
        let raw_tasks = def.remove("tasks").unwrap_or(Value::Null);
        for derived in [
            "tasksStaged",
            "tasksRunning",
            "tasksHealthy",
            "tasksUnhealthy",
            "deployments",
            "lastTaskFailure",
            "taskStats",
        ] {
            def.remove(derived);
        }
        let tasks = match raw_tasks {
            Value::Null => Vec::new(),
            value => Vec::<FixtureTask>::deserialize(value)
                .map_err(|e| SimError::Fixture(format!("tasks of {id}: {e}")))?
                .into_iter()
                .map(|t| t.into_sim(&id, &version))
                .collect(),
        };
        let mut app = SimApp {
            id,
            def,
            version: version.clone(),
            last_config_change_at: last_config_change_at.clone(),
            last_scaling_at,
            versions: BTreeMap::new(),
            tasks,
            pending: None,
        };
        app.record_version();
        // Tasks launched by a scaling version since the last configuration
        // change ran this same configuration: serve those versions too. Older
        // ones are unknown (a fixture holds only the newest definition).
        let scaled: BTreeSet<String> = app
            .tasks
            .iter()
            .map(|t| t.version.clone())
            .filter(|v| *v >= last_config_change_at && *v != version)
            .collect();
        for v in scaled {
            if let Value::Object(mut def) = app.definition() {
                def.insert("version".into(), json!(v));
                app.versions.insert(v, Value::Object(def));
            }
        }
        Ok(app)
    }
}

/// Apps of `/v2/apps` (`apps`), `/v2/groups` (`apps` + nested `groups`),
/// `/v2/apps/{id}` (`app`) or a bare app.
fn collect_apps<'a>(doc: &'a Value, out: &mut Vec<&'a Map<String, Value>>) {
    if let Some(app) = doc.get("app").and_then(Value::as_object) {
        out.push(app);
        return;
    }
    let listed = doc.get("apps").and_then(Value::as_array);
    let groups = doc.get("groups").and_then(Value::as_array);
    if listed.is_none() && groups.is_none() {
        if let Some(app) = doc.as_object().filter(|o| o.get("id").is_some()) {
            out.push(app);
        }
        return;
    }
    out.extend(listed.into_iter().flatten().filter_map(Value::as_object));
    for group in groups.into_iter().flatten() {
        collect_apps(group, out);
    }
}

/// A task of a fixture document.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixtureTask {
    id: String,
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    slave_id: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    ip_addresses: Option<Vec<IpEntry>>,
    #[serde(default)]
    ports: Option<Vec<u16>>,
    #[serde(default)]
    service_ports: Option<Vec<u16>>,
    #[serde(default)]
    staged_at: Option<String>,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl FixtureTask {
    fn into_sim(self, app_id: &str, app_version: &str) -> SimTask {
        // Marathon before ~1.1 sent no state: a started task is running.
        let state = self.state.unwrap_or_else(|| {
            if self.started_at.is_some() {
                "TASK_RUNNING"
            } else {
                "TASK_STAGING"
            }
            .to_string()
        });
        SimTask {
            ip_addresses: self.ip_addresses.unwrap_or_default(),
            staged_at: self.staged_at.unwrap_or_default(),
            state,
            ports: self.ports.unwrap_or_default(),
            started_at: self.started_at,
            version: self.version.unwrap_or_else(|| app_version.to_string()),
            id: self.id,
            app_id: self.app_id.unwrap_or_else(|| app_id.to_string()),
            host: self.host.unwrap_or_default(),
            slave_id: self.slave_id.unwrap_or_default(),
            service_ports: self.service_ports.unwrap_or_default(),
            extra: self.extra,
        }
    }
}

/// Change a definition the way a PUT with these fields would.
fn apply_change(def: &mut Map<String, Value>, change: &VersionChange) {
    if let Some(network) = &change.network {
        let groups = change.groups.clone().unwrap_or_else(|| current_groups(def));
        let discovery = change.discovery.clone().unwrap_or_default();
        for key in render::NETWORK_KEYS {
            def.remove(key);
        }
        for (key, value) in render::network_fields(network, &groups, &discovery) {
            def.insert(key.into(), value);
        }
    } else if let Some(Value::Object(ip)) = def.get_mut("ipAddress") {
        // Only the 0.14–1.4 API carries groups; 1.5+ drops them on input.
        if let Some(groups) = &change.groups {
            ip.insert("groups".into(), json!(groups));
        }
        if let Some(discovery) = &change.discovery {
            let fields = render::network_fields(&Network::IpPerTask, &[], discovery);
            if let Some((_, Value::Object(rendered))) = fields.into_iter().next() {
                if let Some(d) = rendered.get("discovery") {
                    ip.insert("discovery".into(), d.clone());
                }
            }
        }
    }
    if let Some(labels) = &change.labels {
        def.insert("labels".into(), json!(labels));
    }
}

fn current_groups(def: &Map<String, Value>) -> Vec<String> {
    def.get("ipAddress")
        .and_then(|ip| ip.get("groups"))
        .and_then(Value::as_array)
        .map(|groups| {
            groups
                .iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn deployment_info(plan: &Value, action: &str, app_id: &str, now: &str) -> Emitted {
    emitted(
        "deployment_info",
        render::deployment_step(
            "deployment_info",
            plan,
            &render::current_step(action, app_id),
            now,
        ),
    )
}

fn deployment_done(plan: &Value, action: &str, app_id: &str, now: &str) -> Vec<Emitted> {
    vec![
        emitted(
            "deployment_step_success",
            render::deployment_step(
                "deployment_step_success",
                plan,
                &render::current_step(action, app_id),
                now,
            ),
        ),
        emitted("deployment_success", render::deployment_success(plan, now)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, ips: &[&str]) -> AppSpec {
        AppSpec {
            id: id.into(),
            groups: vec!["web".into()],
            tasks: ips
                .iter()
                .map(|ip| TaskSpec {
                    ips: vec![ip.parse().expect("ip")],
                    agent: "a1".into(),
                    ..TaskSpec::default()
                })
                .collect(),
            ..AppSpec::default()
        }
    }

    fn types(events: &[Emitted]) -> Vec<&str> {
        events.iter().map(|e| e.event_type.as_str()).collect()
    }

    #[test]
    fn deploy_emits_the_marathon_sequence() {
        let mut c = Cluster::default();
        let (tasks, events) = c.deploy(spec("web", &["10.233.0.2"])).expect("deploy");
        assert_eq!(tasks.len(), 1);
        assert!(tasks[0].starts_with("web."), "{tasks:?}");
        assert_eq!(
            types(&events),
            [
                "api_post_event",
                "group_change_success",
                "deployment_info",
                "status_update_event",
                "deployment_step_success",
                "deployment_success"
            ]
        );
        assert!(c.deploy(spec("/web", &[])).is_err(), "same app twice");
    }

    #[test]
    fn rolling_version_keeps_old_tasks_until_killed() {
        let mut c = Cluster::default();
        let (old, _) = c.deploy(spec("/web", &["10.233.0.2"])).expect("deploy");
        let change = VersionChange {
            groups: Some(vec!["db".into()]),
            tasks: spec("/x", &["10.233.0.3"]).tasks,
            ..VersionChange::default()
        };
        let (new, events) = c.new_version("/web", change).expect("new version");
        assert!(!types(&events).contains(&"deployment_success"));
        let app = &c.apps["/web"];
        let versions: Vec<&str> = app.tasks.iter().map(|t| t.version.as_str()).collect();
        assert_ne!(versions[0], versions[1], "each task keeps its own version");
        assert_eq!(app.versions.len(), 2);
        assert_eq!(app.version, versions[1]);
        let (_, events) = c.end_task_by_id(&old[0], "TASK_KILLED").expect("kill");
        assert_eq!(
            types(&events),
            [
                "status_update_event",
                "deployment_step_success",
                "deployment_success"
            ]
        );
        assert_eq!(c.apps["/web"].tasks[0].id, new[0]);
    }

    #[test]
    fn scale_checks_task_specs_and_kills_youngest() {
        let mut c = Cluster::default();
        let (ids, _) = c
            .deploy(spec("/web", &["10.233.0.2", "10.233.0.3"]))
            .expect("deploy");
        assert!(c.scale("/web", 3, Vec::new()).is_err());
        let (killed, _) = c.scale("/web", 1, Vec::new()).expect("scale down");
        assert_eq!(killed, vec![ids[1].clone()]);
        assert_eq!(c.apps["/web"].versions.len(), 2);
    }

    #[test]
    fn staging_task_gets_running_with_ips() {
        let mut c = Cluster::default();
        let mut s = spec("/web", &[]);
        s.tasks.push(TaskSpec {
            id: Some("t1".into()),
            ..TaskSpec::default()
        });
        let (_, events) = c.deploy(s).expect("deploy");
        assert!(!types(&events).contains(&"status_update_event"));
        assert!(!c.tasks_json().contains("ipAddresses"));
        let (_, events) = c
            .update_task(
                "t1",
                "TASK_RUNNING",
                Some(vec!["fd00:233::5".parse().expect("ip")]),
            )
            .expect("update");
        assert!(events[0]
            .data
            .contains(r#""ipAddresses":[{"ipAddress":"fd00:233::5","protocol":"IPv6"}]"#));
        assert!(c.tasks_json().contains("TASK_RUNNING"));
    }
}
