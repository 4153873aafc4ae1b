//! A simulated Mesos master for the tests, `make demo` and the benchmarks.
//!
//! It serves the v1 operator API (`POST /api/v1`: `SUBSCRIBE` as a chunked
//! RecordIO stream, `GET_STATE`) and `/master/state` in the real wire
//! shapes (docs/FORMATS.md §4, §5; the captures under `tests/fixtures/mesos/`),
//! changes them on command (agents, frameworks, task launches with the
//! `TASK_STAGING` → `TASK_STARTING` → `TASK_RUNNING` updates, kills,
//! losses), and misbehaves on demand. It shares the Marathon simulator's
//! raw-tokio HTTP/1.1 pieces ([`super::http`]) and its redirect, hang and
//! reset helpers.
//!
//! ```no_run
//! use groupd_sim::mesos::{MesosSim, MesosOptions, NetworkSpec, TaskSpec};
//! let sim = MesosSim::start("127.0.0.1:0".parse().unwrap(), MesosOptions::default()).unwrap();
//! let change = sim.launch_task(TaskSpec {
//!     id: "web.1".into(),
//!     agent: "S1".into(),
//!     network_infos: vec![NetworkSpec {
//!         name: Some("dcos".into()),
//!         groups: vec!["frontend".into()],
//!         ip_addresses: vec!["10.233.1.2".parse().unwrap()],
//!         ..Default::default()
//!     }],
//!     ..Default::default()
//! }).unwrap();
//! let written = sim.wait_written(change.last_seq, std::time::Duration::from_secs(5));
//! ```
//!
//! # Served endpoints
//!
//! | request | answer |
//! |---|---|
//! | `POST /api/v1` `{"type":"SUBSCRIBE"}` | 200, `Content-Type: application/json`, chunked RecordIO (`<len>\n<json>`, one record per chunk): `SUBSCRIBED` (the state, `heartbeat_interval_seconds`), then `TASK_ADDED`, `TASK_UPDATED`, `AGENT_ADDED`, `AGENT_REMOVED`, `FRAMEWORK_ADDED`, `FRAMEWORK_REMOVED` as changes happen, `HEARTBEAT` every [`MesosOptions::heartbeat`] |
//! | `POST /api/v1` `{"type":"GET_STATE"}` | `{"type":"GET_STATE","get_state":{…}}` |
//! | `GET /master/state`, `/state`, `/state.json`, `/master/state.json` | the `/master/state` document |
//! | `GET /master/redirect`, `/redirect` | 307 to the leader (itself when leading) |
//!
//! `/api/v1` is also served as `/master/api/v1`. Records keep Mesos' key
//! order (`type` first, as 1.5) and `\/` escapes. A stream that falls
//! [`MesosOptions::stream_buffer`] events behind is closed.
//!
//! **Auth** ([`MesosOptions::auth`]): every request except `/_sim/*` needs
//! `Authorization: Basic …`; otherwise 401 with
//! `WWW-Authenticate: Basic realm="mesos"`.
//!
//! **Leadership** ([`Leadership`]): a follower answers every API request
//! with 307 and a protocol-relative `Location: //leader:port/<target>`
//! (two simulators following each other make a redirect loop); with no
//! leader it answers 503.
//!
//! **Old Mesos** ([`MesosController::set_old_mesos`]): `/api/v1` answers
//! 404, as masters before 1.0 do, so clients fall back to `/master/state`.
//!
//! **Misbehaviour** ([`Mode`], per [`Endpoint`] or everywhere, optionally
//! for `times` requests): `hang`, `reset`, `{"status": 503}`,
//! `{"redirect_to": "//h:p"}`; for `SUBSCRIBE`: `silence` (`SUBSCRIBED`,
//! then nothing, not even heartbeats), `cut_record` (half of the
//! `SUBSCRIBED` record, then close), `garbage_record` (a well-framed record
//! that is not JSON first), `lying_length` (`SUBSCRIBED` with a length line
//! 16 bytes too long, then records as usual). Open streams are disrupted
//! with [`MesosController::disrupt_streams`] ([`StreamFault`]).
//!
//! # Control API (`/_sim/…`, no auth, never misbehaves)
//!
//! Changes answer `{"tasks": [ids], "first_seq": n, "last_seq": m}`;
//! errors `{"message": …}` with 400, 404 (unknown) or 409 (exists).
//!
//! | request | body |
//! |---|---|
//! | `POST /_sim/add-agent` | `{"id": "S1", "hostname"?: "10.0.0.1"}` |
//! | `POST /_sim/remove-agent` | `{"agent": "S1"}` |
//! | `POST /_sim/add-framework` | `{"id": "…-0001", "name": "marathon"}` |
//! | `POST /_sim/remove-framework` | `{"framework": "…-0001"}` |
//! | `POST /_sim/launch` | a [`TaskSpec`]: `{"id", "framework"?, "agent", "name"?, "network_infos": [{"name"?, "groups": [], "labels": {}, "ip_addresses": []}], "docker_network"?: "USER", "discovery": [{"number", "protocol"?, "name"?}], "labels": {}}` |
//! | `POST /_sim/update-task` | `{"task": "id", "state": "TASK_RUNNING", "ips"?: ["10.233.1.3"]}` |
//! | `POST /_sim/kill`, `/_sim/lose` | `{"task": "id"}` |
//! | `POST /_sim/misbehave` | `{"endpoint"?: "subscribe" \| "api" \| "state", "mode": "hang" \| "reset" \| "silence" \| "cut_record" \| "garbage_record" \| "lying_length" \| {"status": 503} \| {"redirect_to": "//h:p"}, "times"?: 1}` |
//! | `POST /_sim/behave` | forget all misbehaviour |
//! | `POST /_sim/disrupt` | `{"fault": "silence" \| "cut" \| "garbage" \| "lying_length" \| "close" \| "reset"}` (open streams) |
//! | `POST /_sim/leader` | `"leader"`, `"no_leader"` or `{"redirect": "//10.0.0.9:5050"}` |
//! | `POST /_sim/old-mesos` | `{"enabled": true}` |
//! | `POST /_sim/load-fixture` | a `/master/state` document or a RecordIO (or one-record-per-line) SUBSCRIBE capture: replaces the state, emits nothing |
//! | `GET /_sim/stats` | counters (below) |

mod cluster;
mod control;
mod fixture;
mod json;
mod render;
mod server;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::marathon::lock;
pub use super::marathon::{Auth, Change, PortSpec, WriteRecord};
use cluster::{Cluster, Emitted};

/// `version` of the master and its agents (the 1.5 captures' shape).
pub(crate) const MESOS_VERSION: &str = "1.5.0";

/// One requested NetworkInfo of a task and the IPs it will get.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSpec {
    /// `dcos`, `calico`, `mesos-bridge`…; none for Docker's default network.
    pub name: Option<String>,
    /// `container.network_infos[].groups` (Marathon ≤ 1.4 `ipAddress.groups`).
    pub groups: Vec<String>,
    /// Served as `{"labels": […]}` in ContainerInfo and v1 statuses, as an
    /// array in `/master/state` statuses.
    pub labels: BTreeMap<String, String>,
    /// Reported in `statuses[].container_status` (IPv4 and IPv6).
    pub ip_addresses: Vec<IpAddr>,
}

/// A task to launch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSpec {
    /// Generated when empty.
    pub id: String,
    /// Framework id; registered (as `marathon`) when unknown. Default
    /// `sim-0000-0001`.
    pub framework: Option<String>,
    /// Agent id; registered (hostname = id) when unknown. Default `sim-S0`.
    pub agent: String,
    /// The task name; the id when absent.
    pub name: Option<String>,
    pub network_infos: Vec<NetworkSpec>,
    /// `container.docker.network` (`USER`, `BRIDGE`, `HOST`): a Docker
    /// task, which reports the agent's IP at `TASK_STARTING`.
    pub docker_network: Option<String>,
    pub discovery: Vec<PortSpec>,
    /// Task labels.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSpec {
    pub id: String,
    /// The id when absent. An IP here is what Docker tasks report while
    /// starting.
    pub hostname: Option<String>,
}

/// Which requests a misbehaviour applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    /// `POST /api/v1` `SUBSCRIBE`.
    Subscribe,
    /// Every other `/api/v1` call.
    Api,
    /// `/master/state` and its aliases.
    State,
}

/// A way to misbehave, for requests that arrive after it is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Read the request, never answer (until the client closes).
    Hang,
    /// Close right after reading the request, with a TCP RST.
    Reset,
    /// Answer with this status (503: "No leader elected").
    Status(u16),
    /// 307 with this `Location`; a bare base (`//h:p`) gets the target.
    RedirectTo(String),
    /// `SUBSCRIBED`, then nothing at all: no heartbeats, no events
    /// (elsewhere: like `Hang`).
    Silence,
    /// Half of the `SUBSCRIBED` record, then close (elsewhere: a body
    /// shorter than its `Content-Length`).
    CutRecord,
    /// A well-framed first record that is not JSON, then the stream as usual
    /// (elsewhere: a 200 body that is not JSON).
    GarbageRecord,
    /// `SUBSCRIBED` behind a length line 16 bytes too long, then the
    /// stream as usual (elsewhere: like `CutRecord`).
    LyingLength,
}

/// A misbehaviour rule; the newest matching rule wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MisbehaveRule {
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    pub mode: Mode,
    #[serde(default)]
    pub times: Option<u32>,
}

/// What open `SUBSCRIBE` streams do next (after the events already queued).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamFault {
    /// Stop writing (events and heartbeats); keep the connection.
    Silence,
    /// A length line and half a record, then close.
    Cut,
    /// A well-framed record that is not JSON; the stream goes on.
    Garbage,
    /// A record whose length line is 16 bytes too long; the stream goes on.
    LyingLength,
    /// End the chunked body cleanly.
    Close,
    /// Close with a TCP RST.
    Reset,
}

/// Who leads, from this master's point of view.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leadership {
    #[default]
    Leader,
    /// Follower: 307 to this base (`//host:port`, the target is appended).
    Redirect(String),
    /// An election is under way: 503.
    NoLeader,
}

#[derive(Debug, Clone)]
pub struct MesosOptions {
    /// `HEARTBEAT` period (and `heartbeat_interval_seconds`).
    pub heartbeat: Duration,
    /// HTTP basic credentials (`Auth::Token` is accepted as DC/OS's
    /// Admin Router would).
    pub auth: Option<Auth>,
    pub stream_buffer: usize,
    /// Start in "old Mesos" mode (no `/api/v1`).
    pub old_mesos: bool,
}

impl Default for MesosOptions {
    fn default() -> MesosOptions {
        MesosOptions {
            heartbeat: Duration::from_secs(15),
            auth: None,
            stream_buffer: 16_384,
            old_mesos: false,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimError {
    #[error("agent {0} does not exist")]
    UnknownAgent(String),
    #[error("agent {0} already exists")]
    AgentExists(String),
    #[error("framework {0} does not exist")]
    UnknownFramework(String),
    #[error("framework {0} already exists")]
    FrameworkExists(String),
    #[error("task {0} does not exist")]
    UnknownTask(String),
    #[error("task id {0} is already in use")]
    DuplicateTask(String),
    #[error("{0}")]
    Invalid(String),
    #[error("fixture: {0}")]
    Fixture(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub agents: usize,
    pub frameworks: usize,
    pub tasks: usize,
    pub events_emitted: u64,
    pub events_sent: u64,
    pub subscribers: usize,
    pub requests: u64,
    pub last_written_seq: u64,
    pub last_written_ms_ago: Option<u64>,
}

/// One item on the internal bus.
#[derive(Debug)]
pub(crate) enum BusItem {
    Event {
        seq: u64,
        kind: &'static str,
        json: String,
    },
    Fault(StreamFault),
}

#[derive(Debug)]
struct ActiveRule {
    rule: MisbehaveRule,
    remaining: Option<u32>,
}

/// The cluster and the event sequence, under one lock: a subscriber takes
/// its snapshot and joins the bus under it, so it misses nothing and sees
/// nothing twice.
pub(crate) struct Locked {
    pub cluster: Cluster,
    seq: u64,
}

pub(crate) struct Shared {
    pub options: MesosOptions,
    pub local_addr: SocketAddr,
    pub master_id: String,
    pub state: Mutex<Locked>,
    pub bus: broadcast::Sender<Arc<BusItem>>,
    rules: Mutex<Vec<ActiveRule>>,
    pub leadership: Mutex<Leadership>,
    pub old_mesos: AtomicBool,
    pub events_emitted: AtomicU64,
    pub events_sent: AtomicU64,
    pub requests: AtomicU64,
    pub subscribers: AtomicUsize,
    last_written: Mutex<Option<WriteRecord>>,
    written_cv: Condvar,
}

impl Shared {
    fn publish(&self, locked: &mut Locked, events: Vec<Emitted>) -> (u64, u64) {
        let first = locked.seq + 1;
        for event in events {
            locked.seq += 1;
            self.events_emitted.fetch_add(1, Ordering::Relaxed);
            // No subscriber is fine: a master does not replay either.
            let _ = self.bus.send(Arc::new(BusItem::Event {
                seq: locked.seq,
                kind: event.kind,
                json: event.json,
            }));
        }
        if locked.seq < first {
            (0, 0)
        } else {
            (first, locked.seq)
        }
    }

    /// Called by a stream after an event record went out.
    pub fn record_written(&self, seq: u64, kind: &str) {
        self.events_sent.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_written) = Some(WriteRecord {
            seq,
            event_type: kind.to_string(),
            at: Instant::now(),
        });
        self.written_cv.notify_all();
    }

    /// The mode for a request to `endpoint`, consuming one use of a counted
    /// rule (the same rule semantics as the Marathon simulator's).
    pub fn take_mode(&self, endpoint: Endpoint) -> Option<Mode> {
        let mut rules = lock(&self.rules);
        let index = rules
            .iter()
            .rposition(|r| r.rule.endpoint.map_or(true, |e| e == endpoint))?;
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

/// Starts simulated masters.
pub struct MesosSim;

impl MesosSim {
    /// Bind `bind` (port 0: ephemeral) and serve on a runtime thread of its own.
    pub fn start(bind: SocketAddr, options: MesosOptions) -> io::Result<MesosHandle> {
        MesosSim::start_blocking(StdTcpListener::bind(bind)?, options)
    }

    /// Serve on an already bound listener (e.g. bound inside a network
    /// namespace). Returns once the server runs.
    pub fn start_blocking(
        listener: StdTcpListener,
        options: MesosOptions,
    ) -> io::Result<MesosHandle> {
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let (bus, _) = broadcast::channel(options.stream_buffer.max(16));
        let shared = Arc::new(Shared {
            old_mesos: AtomicBool::new(options.old_mesos),
            options,
            local_addr,
            master_id: cluster::uuid_text(),
            state: Mutex::new(Locked {
                cluster: Cluster::default(),
                seq: 0,
            }),
            bus,
            rules: Mutex::new(Vec::new()),
            leadership: Mutex::new(Leadership::Leader),
            events_emitted: AtomicU64::new(0),
            events_sent: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            subscribers: AtomicUsize::new(0),
            last_written: Mutex::new(None),
            written_cv: Condvar::new(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mesos-sim")
            .enable_all()
            .build()?;
        let listener = {
            let _enter = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let (stop, stopped) = watch::channel(false);
        let server_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("mesos-sim".into())
            .spawn(move || {
                runtime.block_on(server::serve(listener, server_shared, stopped));
                // Dropping the runtime aborts every connection task.
            })?;
        Ok(MesosHandle {
            controller: MesosController { shared },
            stop,
            thread: Some(thread),
        })
    }
}

/// A running simulator; stops it when dropped. Derefs to its controller.
pub struct MesosHandle {
    controller: MesosController,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl MesosHandle {
    pub fn controller(&self) -> MesosController {
        self.controller.clone()
    }
}

impl std::ops::Deref for MesosHandle {
    type Target = MesosController;
    fn deref(&self) -> &MesosController {
        &self.controller
    }
}

impl Drop for MesosHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Drives a simulated master. Cloneable, `Send + Sync`, synchronous.
#[derive(Clone)]
pub struct MesosController {
    pub(crate) shared: Arc<Shared>,
}

type Outcome = Result<(Vec<String>, Vec<Emitted>), SimError>;

impl MesosController {
    pub fn addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.shared.local_addr)
    }

    /// Apply a change and publish its events under one lock.
    fn change(&self, f: impl FnOnce(&mut Cluster) -> Outcome) -> Result<Change, SimError> {
        let mut locked = lock(&self.shared.state);
        let (tasks, events) = f(&mut locked.cluster)?;
        let (first_seq, last_seq) = self.shared.publish(&mut locked, events);
        Ok(Change {
            tasks,
            first_seq,
            last_seq,
        })
    }

    /// `AGENT_ADDED`.
    pub fn add_agent(&self, spec: AgentSpec) -> Result<Change, SimError> {
        self.change(|c| c.add_agent(spec))
    }

    /// `TASK_UPDATED` `TASK_LOST` per task on it, then `AGENT_REMOVED`.
    pub fn remove_agent(&self, id: &str) -> Result<Change, SimError> {
        self.change(|c| c.remove_agent(id))
    }

    /// `FRAMEWORK_ADDED`.
    pub fn add_framework(&self, id: &str, name: &str) -> Result<Change, SimError> {
        self.change(|c| c.add_framework(id, name))
    }

    /// `TASK_UPDATED` `TASK_KILLED` per task, then `FRAMEWORK_REMOVED`.
    pub fn remove_framework(&self, id: &str) -> Result<Change, SimError> {
        self.change(|c| c.remove_framework(id))
    }

    /// `TASK_ADDED` (`TASK_STAGING`), `TASK_UPDATED` `TASK_STARTING`, then
    /// `TASK_RUNNING` (with the container IPs; see [`TaskSpec`]).
    pub fn launch_task(&self, spec: TaskSpec) -> Result<Change, SimError> {
        self.change(|c| c.launch(spec))
    }

    /// [`MesosController::launch_task`] for each of `specs`, without
    /// publishing the events (like [`MesosController::load_fixture`]): a
    /// big cluster for a benchmark, loaded before anyone subscribes.
    /// Returns the number of tasks launched.
    pub fn load_tasks(&self, specs: Vec<TaskSpec>) -> Result<usize, SimError> {
        let mut locked = lock(&self.shared.state);
        Ok(locked.cluster.launch_many(specs)?.len())
    }

    /// One `TASK_UPDATED`; `ips` replace the first NetworkInfo's IPs.
    pub fn update_task(
        &self,
        id: &str,
        state: &str,
        ips: Option<Vec<IpAddr>>,
    ) -> Result<Change, SimError> {
        self.change(|c| c.update(id, state, ips))
    }

    /// `TASK_KILLED`.
    pub fn kill_task(&self, id: &str) -> Result<Change, SimError> {
        self.update_task(id, "TASK_KILLED", None)
    }

    /// `TASK_LOST`.
    pub fn lose_task(&self, id: &str) -> Result<Change, SimError> {
        self.update_task(id, "TASK_LOST", None)
    }

    /// Replace the state with a fixture (`/master/state` or a SUBSCRIBE
    /// capture); emits nothing. Returns the number of live tasks.
    pub fn load_fixture(&self, bytes: &[u8]) -> Result<usize, SimError> {
        let cluster = fixture::load(bytes)?;
        let tasks = cluster.tasks.len();
        lock(&self.shared.state).cluster = cluster;
        Ok(tasks)
    }

    pub fn misbehave(&self, rule: MisbehaveRule) {
        let remaining = rule.times;
        lock(&self.shared.rules).push(ActiveRule { rule, remaining });
    }

    pub fn behave(&self) {
        lock(&self.shared.rules).clear();
    }

    /// Disrupt every open `SUBSCRIBE` stream (after what is queued).
    pub fn disrupt_streams(&self, fault: StreamFault) {
        let _locked = lock(&self.shared.state);
        let _ = self.shared.bus.send(Arc::new(BusItem::Fault(fault)));
    }

    pub fn set_leadership(&self, leadership: Leadership) {
        *lock(&self.shared.leadership) = leadership;
    }

    /// `/api/v1` answers 404 (a master older than 1.0).
    pub fn set_old_mesos(&self, old: bool) {
        self.shared.old_mesos.store(old, Ordering::Relaxed);
    }

    /// Open `SUBSCRIBE` streams.
    pub fn subscribers(&self) -> usize {
        self.shared.subscribers.load(Ordering::Relaxed)
    }

    pub fn wait_subscribers(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.subscribers() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// The last event record written to a stream (handed to the kernel).
    pub fn last_written(&self) -> Option<WriteRecord> {
        lock(&self.shared.last_written).clone()
    }

    /// Wait until an event with sequence number ≥ `seq` was written to a
    /// stream; its write time is the start of a latency measurement.
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

    pub fn stats(&self) -> Stats {
        let (agents, frameworks, tasks) = {
            let locked = lock(&self.shared.state);
            let c = &locked.cluster;
            (c.agents.len(), c.frameworks.len(), c.tasks.len())
        };
        let last = self.last_written();
        Stats {
            agents,
            frameworks,
            tasks,
            events_emitted: self.shared.events_emitted.load(Ordering::Relaxed),
            events_sent: self.shared.events_sent.load(Ordering::Relaxed),
            subscribers: self.subscribers(),
            requests: self.shared.requests.load(Ordering::Relaxed),
            last_written_seq: last.as_ref().map_or(0, |r| r.seq),
            last_written_ms_ago: last.map(|r| r.at.elapsed().as_millis() as u64),
        }
    }
}
