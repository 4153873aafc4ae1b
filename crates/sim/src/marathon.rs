//! The simulated Marathon: public types, [`MarathonSim`] (start it) and
//! [`SimController`] (drive it). The module docs of [`crate::sim`] describe
//! the behaviour and the HTTP control API.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::cluster::{Cluster, Emitted};

/// How an app is networked; decides which JSON the app definition carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    /// Marathon 0.14–1.4 `ipAddress: {groups, labels, discovery}`; the task
    /// IPs are its own. The only kind that carries `groups`.
    #[default]
    IpPerTask,
    /// `ipAddress: null`, port definitions; tasks report the agent's IP.
    Host,
    /// Docker `BRIDGE` (≤ 1.4 style); tasks report a non-unique 172.17.x.x IP.
    DockerBridge,
    /// Marathon 1.5+ `networks: [{mode: container, name: dcos, labels}]`.
    /// Marathon 1.5 drops `ipAddress.groups`, so `groups` are not served:
    /// put them in a label (`network-groups`) of `labels` or of the app.
    #[serde(rename = "networks")]
    Networks1_5 {
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
}

/// A discovery port (`ipAddress.discovery.ports`, or a port mapping).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub number: u16,
    /// `tcp` (default), `udp` or `udp,tcp`.
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// One task to launch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSpec {
    /// Generated (`app_path.uuid`, the Marathon ≤ 1.4 form) when absent.
    pub id: Option<String>,
    /// Empty: the task stays `TASK_STAGING` without `ipAddresses` until
    /// [`SimController::set_task_ips`].
    pub ips: Vec<IpAddr>,
    /// The Mesos agent id (`slaveId`); `sim-S0` when empty.
    pub agent: String,
    /// The agent's hostname (`host`); the agent id when absent.
    pub host: Option<String>,
}

/// An app to deploy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppSpec {
    /// `/prod/web`; a missing leading `/` is added.
    pub id: String,
    /// An ISO timestamp; generated (now, strictly increasing) when absent.
    pub version: Option<String>,
    /// `ipAddress.groups` (only served for [`Network::IpPerTask`]).
    pub groups: Vec<String>,
    /// App labels.
    pub labels: BTreeMap<String, String>,
    pub network: Network,
    pub discovery: Vec<PortSpec>,
    pub tasks: Vec<TaskSpec>,
}

/// A pod (Marathon 1.4+): containers that share each instance's network
/// namespace, on the `dcos` container network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PodSpec {
    /// `/prod/db`; a missing leading `/` is added.
    pub id: String,
    /// An ISO timestamp; generated when absent.
    pub version: Option<String>,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Labels of the pod's network (`network-groups` says its groups).
    pub network_labels: BTreeMap<String, String>,
    /// Container names (no dots); `["main"]` when empty.
    pub containers: Vec<String>,
    pub instances: Vec<PodInstanceSpec>,
}

/// One pod instance: every container of the pod, sharing `ips`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PodInstanceSpec {
    /// Generated (`pod_path.instance-<uuid>`) when absent.
    pub id: Option<String>,
    /// Empty: the instance stays staging (no addresses, no status events).
    pub ips: Vec<IpAddr>,
    /// The Mesos agent id (`agentId`); `sim-S0` when empty.
    pub agent: String,
    /// `agentHostname`; the agent id when absent.
    pub host: Option<String>,
}

/// A new app version (a configuration change, rolling restart).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VersionChange {
    /// New `ipAddress.groups`; unchanged when `None`.
    pub groups: Option<Vec<String>>,
    /// New app labels; unchanged when `None`.
    pub labels: Option<BTreeMap<String, String>>,
    /// New network (re-rendered with the groups and discovery ports).
    pub network: Option<Network>,
    pub discovery: Option<Vec<PortSpec>>,
    /// Tasks launched by the new version. The old tasks keep running with
    /// their own `version` until killed (the deployment completes, with
    /// `deployment_success`, when the last of them is gone).
    pub tasks: Vec<TaskSpec>,
    /// Kill every old task right away, finishing the deployment.
    pub replace_old: bool,
}

/// Which endpoint a misbehaviour applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    /// `/v2/apps` (the list).
    Apps,
    /// `/v2/apps/{id}`, `/v2/apps/{id}/versions[/{v}]`, `/v2/apps/{id}/tasks`.
    App,
    /// `/v2/tasks`.
    Tasks,
    /// `/v2/info`, `/v2/leader`.
    Info,
    /// `/ping`.
    Ping,
    /// `/v2/events`.
    Events,
    /// `/v2/pods`, `/v2/pods/::status`, `/v2/pods/{id}[::…]`.
    Pods,
}

/// A way to misbehave. Applies to requests that arrive after it is set,
/// except [`Mode::DropStream`], which also affects open event streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Read the request, never answer (until the client closes).
    Hang,
    /// Event streams only: close the connection (no terminating chunk) after
    /// `after_events` more event frames (0: now). Open streams count from
    /// when the mode is set, new ones from their first frame (the
    /// `event_stream_attached`).
    DropStream {
        #[serde(default)]
        after_events: u32,
    },
    /// Answer with this status and a Marathon-style `{"message": …}` body
    /// (401 also carries `WWW-Authenticate`).
    Status(u16),
    /// 200 with a body that is not JSON (event streams: not SSE, then close).
    Garbage,
    /// Announce more bytes than are sent (Content-Length, or a chunk size for
    /// event streams), send half the body, close.
    Truncated,
    /// Send every byte of the response (or stream) at this rate.
    Trickle { bytes_per_sec: u32 },
    /// 307 with this `Location`. A bare base (`http://h:p`, `//h:p`, with no
    /// path or `/`) gets the request's path and query appended; a URL with
    /// a path is sent verbatim.
    RedirectTo(String),
    /// Close right after reading the request, with a TCP RST.
    Reset,
}

/// A misbehaviour rule: on one endpoint (or all), for `times` requests (or
/// until [`SimController::behave`]). The newest matching rule wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MisbehaveRule {
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    pub mode: Mode,
    #[serde(default)]
    pub times: Option<u32>,
}

/// Credentials every `/v2/*` and `/ping` request must carry (`/_sim/*` is
/// exempt so scripts can drive the simulator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `--http_credentials user:pass`: `Authorization: Basic …`.
    Basic { username: String, password: String },
    /// DC/OS: `Authorization: token=<token>`.
    Token(String),
}

#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Bare CRLF keep-alives on event streams (Jetty's default is ~10 s).
    pub keepalive: Duration,
    pub auth: Option<Auth>,
    /// Events an event stream may fall behind before it is closed (Marathon
    /// closes slow receivers too).
    pub stream_buffer: usize,
    /// `version` in `/v2/info`.
    pub marathon_version: String,
    /// Serve `/v2/pods*` (Marathon 1.4+); `false` answers them 404 like an
    /// older Marathon.
    pub pods: bool,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            keepalive: Duration::from_secs(10),
            auth: None,
            stream_buffer: 16_384,
            marathon_version: "1.4.13".to_string(),
            pods: true,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    #[error("app {0} does not exist")]
    UnknownApp(String),
    #[error("app {0} already exists")]
    AppExists(String),
    #[error("task {0} does not exist")]
    UnknownTask(String),
    #[error("task id {0} is already in use")]
    DuplicateTask(String),
    #[error("{0}")]
    Invalid(String),
    #[error("fixture: {0}")]
    Fixture(String),
}

/// What a scripted change did: the tasks it launched or ended, and the
/// sequence numbers of the events it emitted (0, 0 when none; sequence
/// numbers start at 1 and count every event emitted, stream-attached ones
/// included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Change {
    pub tasks: Vec<String>,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// One event frame written to one event-stream socket (after the write
/// returned, i.e. handed to the kernel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    pub seq: u64,
    pub event_type: String,
    pub at: Instant,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub apps: usize,
    pub tasks: usize,
    pub events_emitted: u64,
    pub events_sent: u64,
    pub sse_clients: usize,
    pub requests: u64,
    /// Sequence number of the last event written to a stream (0: none).
    pub last_written_seq: u64,
    pub last_written_ms_ago: Option<u64>,
}

/// One event on the internal bus.
#[derive(Debug)]
pub(crate) struct BusEvent {
    pub seq: u64,
    pub event_type: String,
    /// The `data:` payload; `None` for raw bytes.
    pub data: Option<String>,
    /// Written verbatim (as one chunk) instead of a frame; never filtered.
    pub raw: Option<Vec<u8>>,
}

/// What open event streams learn when [`Mode::DropStream`] is set.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DropSignal {
    pub generation: u64,
    pub after_events: u32,
}

#[derive(Debug)]
struct ActiveRule {
    rule: MisbehaveRule,
    remaining: Option<u32>,
}

/// Everything the server tasks and the controller share.
pub(crate) struct Shared {
    pub options: SimOptions,
    pub local_addr: SocketAddr,
    pub cluster: Mutex<Cluster>,
    /// Held while assigning a sequence number and sending, so streams see
    /// events in sequence order.
    seq: Mutex<u64>,
    pub bus: broadcast::Sender<Arc<BusEvent>>,
    rules: Mutex<Vec<ActiveRule>>,
    pub drop_signal: watch::Sender<DropSignal>,
    pub standby: Mutex<Option<String>>,
    pub events_emitted: AtomicU64,
    pub events_sent: AtomicU64,
    pub requests: AtomicU64,
    pub sse_clients: AtomicUsize,
    last_written: Mutex<Option<WriteRecord>>,
    written_cv: Condvar,
    write_watchers: Mutex<Vec<mpsc::Sender<WriteRecord>>>,
}

/// A poisoned lock only means another thread panicked mid-update; the data
/// is still the best there is, and the simulator must keep serving.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn new(options: SimOptions, local_addr: SocketAddr) -> Shared {
        let (bus, _) = broadcast::channel(options.stream_buffer.max(16));
        Shared {
            options,
            local_addr,
            cluster: Mutex::new(Cluster::default()),
            seq: Mutex::new(0),
            bus,
            rules: Mutex::new(Vec::new()),
            drop_signal: watch::Sender::new(DropSignal::default()),
            standby: Mutex::new(None),
            events_emitted: AtomicU64::new(0),
            events_sent: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            sse_clients: AtomicUsize::new(0),
            last_written: Mutex::new(None),
            written_cv: Condvar::new(),
            write_watchers: Mutex::new(Vec::new()),
        }
    }

    /// Put events on the bus; returns their first and last sequence numbers.
    pub fn publish(&self, events: Vec<Emitted>) -> (u64, u64) {
        let mut seq = lock(&self.seq);
        let first = *seq + 1;
        for event in events {
            *seq += 1;
            self.events_emitted.fetch_add(1, Ordering::Relaxed);
            // No subscriber is fine: Marathon does not replay either.
            let _ = self.bus.send(Arc::new(BusEvent {
                seq: *seq,
                event_type: event.event_type,
                data: Some(event.data),
                raw: None,
            }));
        }
        if *seq < first {
            (0, 0)
        } else {
            (first, *seq)
        }
    }

    pub fn publish_raw(&self, bytes: Vec<u8>) -> u64 {
        let mut seq = lock(&self.seq);
        *seq += 1;
        self.events_emitted.fetch_add(1, Ordering::Relaxed);
        let _ = self.bus.send(Arc::new(BusEvent {
            seq: *seq,
            event_type: String::new(),
            data: None,
            raw: Some(bytes),
        }));
        *seq
    }

    /// Called by a stream after an event frame went out.
    pub fn record_written(&self, seq: u64, event_type: &str) {
        self.events_sent.fetch_add(1, Ordering::Relaxed);
        let record = WriteRecord {
            seq,
            event_type: event_type.to_string(),
            at: Instant::now(),
        };
        lock(&self.write_watchers).retain(|tx| tx.send(record.clone()).is_ok());
        *lock(&self.last_written) = Some(record);
        self.written_cv.notify_all();
    }

    /// The mode for a request to `endpoint`, consuming one use of a counted
    /// rule.
    pub fn take_mode(&self, endpoint: Endpoint) -> Option<Mode> {
        let mut rules = lock(&self.rules);
        let index = rules.iter().rposition(|r| {
            r.rule.endpoint.map_or(true, |e| e == endpoint)
                && (endpoint == Endpoint::Events || !matches!(r.rule.mode, Mode::DropStream { .. }))
        })?;
        let mode = rules[index].rule.mode.clone();
        if let Some(left) = rules[index].remaining.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                rules.remove(index);
            }
        }
        Some(mode)
    }
}

/// Starts simulators.
pub struct MarathonSim;

impl MarathonSim {
    /// Bind `bind` (port 0 for an ephemeral port) and serve on a runtime
    /// thread of its own.
    pub fn start(bind: SocketAddr, options: SimOptions) -> io::Result<SimHandle> {
        MarathonSim::start_blocking(StdTcpListener::bind(bind)?, options)
    }

    /// Serve on an already bound listener, e.g. one bound inside a network
    /// namespace by a thread that did `setns`: the socket stays in its
    /// namespace whichever thread serves it. Returns once the server runs.
    pub fn start_blocking(listener: StdTcpListener, options: SimOptions) -> io::Result<SimHandle> {
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(options, local_addr));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("marathon-sim")
            .enable_all()
            .build()?;
        let listener = {
            let _enter = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let (stop, stopped) = watch::channel(false);
        let server_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("marathon-sim".into())
            .spawn(move || {
                runtime.block_on(super::server::serve(listener, server_shared, stopped));
                // Dropping the runtime aborts every connection task.
            })?;
        Ok(SimHandle {
            controller: SimController { shared },
            stop,
            thread: Some(thread),
        })
    }
}

/// A running simulator; stops it (closing every connection) when dropped.
/// Derefs to its [`SimController`].
pub struct SimHandle {
    controller: SimController,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// A controller that outlives nothing: cloneable, for other threads.
    pub fn controller(&self) -> SimController {
        self.controller.clone()
    }

    pub fn shutdown(self) {}
}

impl std::ops::Deref for SimHandle {
    type Target = SimController;
    fn deref(&self) -> &SimController {
        &self.controller
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Drives a simulator: scripted changes, misbehaviour, observation. Every
/// method is synchronous and thread-safe.
#[derive(Clone)]
pub struct SimController {
    pub(crate) shared: Arc<Shared>,
}

impl SimController {
    pub fn addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.local_addr)
    }

    /// Run a scripted change and publish its events in one step, so the
    /// served state and the stream never disagree about order.
    fn change(
        &self,
        f: impl FnOnce(&mut Cluster) -> Result<(Vec<String>, Vec<Emitted>), SimError>,
    ) -> Result<Change, SimError> {
        let mut cluster = lock(&self.shared.cluster);
        let (tasks, events) = f(&mut cluster)?;
        let (first_seq, last_seq) = self.shared.publish(events);
        Ok(Change {
            tasks,
            first_seq,
            last_seq,
        })
    }

    /// Create an app and launch its tasks: `api_post_event`,
    /// `group_change_success`, `deployment_info`, a `status_update_event`
    /// (`TASK_RUNNING`) per task with IPs, `deployment_step_success`,
    /// `deployment_success`.
    pub fn deploy_app(&self, spec: AppSpec) -> Result<Change, SimError> {
        self.change(|c| c.deploy(spec))
    }

    /// Scale to `instances` (a new app version, as Marathon makes one).
    /// Scaling up needs exactly one [`TaskSpec`] per new task; scaling down
    /// kills the youngest tasks (`TASK_KILLED`).
    pub fn scale(
        &self,
        app: &str,
        instances: usize,
        new_tasks: Vec<TaskSpec>,
    ) -> Result<Change, SimError> {
        self.change(|c| c.scale(app, instances, new_tasks))
    }

    /// A new configuration version, rolling: see [`VersionChange`].
    pub fn new_version(&self, app: &str, change: VersionChange) -> Result<Change, SimError> {
        self.change(|c| c.new_version(app, change))
    }

    /// `TASK_KILLED`; the task disappears from the served state.
    pub fn kill_task(&self, task: &str) -> Result<Change, SimError> {
        self.change(|c| c.end_task_by_id(task, "TASK_KILLED"))
    }

    /// `TASK_LOST`; the task disappears from the served state.
    pub fn lose_task(&self, task: &str) -> Result<Change, SimError> {
        self.change(|c| c.end_task_by_id(task, "TASK_LOST"))
    }

    /// The task is running with these IPs (from staging, or a change of IPs).
    pub fn set_task_ips(&self, task: &str, ips: Vec<IpAddr>) -> Result<Change, SimError> {
        self.change(|c| c.update_task(task, "TASK_RUNNING", Some(ips)))
    }

    /// Any status update (`TASK_STARTING` with the agent's IP,
    /// `TASK_UNREACHABLE`, `TASK_FAILED`...). Terminal states (as groupd
    /// defines them) remove the task; `ips: None` keeps its IPs.
    pub fn update_task(
        &self,
        task: &str,
        status: &str,
        ips: Option<Vec<IpAddr>>,
    ) -> Result<Change, SimError> {
        self.change(|c| c.update_task(task, status, ips))
    }

    /// Delete an app: its tasks are killed, then `app_terminated_event`.
    pub fn remove_app(&self, app: &str) -> Result<Change, SimError> {
        self.change(|c| c.remove_app(app))
    }

    /// Create a pod and launch its instances: `pod_created_event`, then a
    /// `status_update_event` (`TASK_RUNNING`) per container of each instance
    /// with IPs. `tasks` of the answer are the instance ids.
    pub fn deploy_pod(&self, spec: PodSpec) -> Result<Change, SimError> {
        self.change(|c| c.deploy_pod(spec))
    }

    /// Launch one more instance of `pod`: every container of the pod shares
    /// `spec.ips`; a `status_update_event` per container.
    pub fn add_pod_instance(&self, pod: &str, spec: PodInstanceSpec) -> Result<Change, SimError> {
        self.change(|c| c.add_pod_instance(pod, spec))
    }

    /// Kill a pod instance: `TASK_KILLED` for each of its containers.
    pub fn remove_pod_instance(&self, instance: &str) -> Result<Change, SimError> {
        self.change(|c| c.pods.remove_instance(instance))
    }

    /// Delete a pod: its instances are killed, then `pod_deleted_event`.
    pub fn remove_pod(&self, pod: &str) -> Result<Change, SimError> {
        self.change(|c| c.pods.remove_pod(pod))
    }

    /// Emit any event: `event: <event_type>` and `data: <data>` (one `data:`
    /// line per line of `data`; it need not be JSON). Returns its sequence.
    pub fn emit_raw(&self, event_type: &str, data: &str) -> u64 {
        let (seq, _) = self.shared.publish(vec![Emitted {
            event_type: event_type.to_string(),
            data: data.to_string(),
        }]);
        seq
    }

    /// Write these bytes to every event stream as they are (one chunk).
    pub fn emit_bytes(&self, bytes: &[u8]) -> u64 {
        self.shared.publish_raw(bytes.to_vec())
    }

    /// Replace the whole state with a `/v2/apps` (or `/v2/groups`, or single
    /// app) document. Emits nothing. Returns the number of apps.
    pub fn load_fixture(&self, document: &[u8]) -> Result<usize, SimError> {
        lock(&self.shared.cluster).load_fixture(document)
    }

    /// The body `/v2/apps?embed=apps.tasks` serves right now.
    pub fn apps_document(&self) -> String {
        lock(&self.shared.cluster).apps_json(true)
    }

    /// Misbehave on every endpoint until [`SimController::behave`].
    pub fn misbehave(&self, mode: Mode) {
        self.misbehave_rule(MisbehaveRule {
            endpoint: None,
            mode,
            times: None,
        });
    }

    /// Misbehave on one endpoint until [`SimController::behave`].
    pub fn misbehave_on(&self, endpoint: Endpoint, mode: Mode) {
        self.misbehave_rule(MisbehaveRule {
            endpoint: Some(endpoint),
            mode,
            times: None,
        });
    }

    pub fn misbehave_rule(&self, rule: MisbehaveRule) {
        if let Mode::DropStream { after_events } = rule.mode {
            if rule.endpoint.map_or(true, |e| e == Endpoint::Events) {
                self.shared.drop_signal.send_modify(|s| {
                    s.generation += 1;
                    s.after_events = after_events;
                });
            }
        }
        // `times: 0` would never apply; treat it as "once".
        let remaining = rule.times.map(|t| t.max(1));
        lock(&self.shared.rules).push(ActiveRule { rule, remaining });
    }

    /// Forget every misbehaviour rule (hung connections stay hung).
    pub fn behave(&self) {
        lock(&self.shared.rules).clear();
    }

    /// Standby mode (Marathon 1.7+): every `/v2/*` request answers 307 to
    /// `leader` + the request's path and query (a real standby proxies all
    /// but `/v2/events`; redirecting keeps the simulator stateless about
    /// the leader). `None`: leader again.
    pub fn set_standby(&self, leader: Option<String>) {
        *lock(&self.shared.standby) = leader;
    }

    pub fn events_emitted(&self) -> u64 {
        self.shared.events_emitted.load(Ordering::Relaxed)
    }

    /// Event frames written to event-stream sockets, summed over streams.
    pub fn events_sent(&self) -> u64 {
        self.shared.events_sent.load(Ordering::Relaxed)
    }

    pub fn sse_clients(&self) -> usize {
        self.shared.sse_clients.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// The last event frame written to any stream.
    pub fn last_event_written_at(&self) -> Option<WriteRecord> {
        lock(&self.shared.last_written).clone()
    }

    /// Every event frame written from now on, as it is written.
    pub fn watch_writes(&self) -> mpsc::Receiver<WriteRecord> {
        let (tx, rx) = mpsc::channel();
        lock(&self.shared.write_watchers).push(tx);
        rx
    }

    /// Wait until an event with sequence `seq` or later was written to a
    /// stream; its record, or `None` after `timeout`.
    pub fn wait_written(&self, seq: u64, timeout: Duration) -> Option<WriteRecord> {
        let deadline = Instant::now() + timeout;
        let mut last = lock(&self.shared.last_written);
        loop {
            if let Some(record) = last.as_ref().filter(|r| r.seq >= seq) {
                return Some(record.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            last = self
                .shared
                .written_cv
                .wait_timeout(last, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wait until at least `n` event streams are attached.
    pub fn wait_sse_clients(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.sse_clients() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    pub fn stats(&self) -> Stats {
        let (apps, tasks) = lock(&self.shared.cluster).counts();
        let last = self.last_event_written_at();
        Stats {
            apps,
            tasks,
            events_emitted: self.events_emitted(),
            events_sent: self.events_sent(),
            sse_clients: self.sse_clients(),
            requests: self.requests(),
            last_written_seq: last.as_ref().map_or(0, |r| r.seq),
            last_written_ms_ago: last.map(|r| r.at.elapsed().as_millis() as u64),
        }
    }
}
