//! A simulated Marathon for the tests, `make demo` and the benchmarks.
//! (The simulated Mesos master is [`mesos`]; it shares the HTTP pieces.)
//!
//! It serves apps, tasks and an event stream in the real wire shapes
//! (docs/FORMATS.md §1–§3, the fixtures under `tests/fixtures/marathon/`), changes
//! them on command (deploy, scale, new version, kill, lose, IPs known...),
//! emitting the events real Marathon emits, and misbehaves on demand. The
//! HTTP/1.1 server is written on raw tokio sockets so that misbehaviour can
//! be exact to the byte.
//!
//! # In-process
//!
//! ```no_run
//! use groupd_sim::{AppSpec, MarathonSim, SimOptions, TaskSpec};
//! let sim = MarathonSim::start("127.0.0.1:0".parse().unwrap(), SimOptions::default()).unwrap();
//! let change = sim.deploy_app(AppSpec {
//!     id: "/web".into(),
//!     groups: vec!["frontend".into()],
//!     tasks: vec![TaskSpec { ips: vec!["10.233.1.2".parse().unwrap()], agent: "agent-1".into(), ..Default::default() }],
//!     ..Default::default()
//! }).unwrap();
//! // point groupd at sim.url(); time how long the rule takes after:
//! let written = sim.wait_written(change.last_seq, std::time::Duration::from_secs(5));
//! ```
//!
//! [`MarathonSim::start`] binds and serves on a runtime thread of its own;
//! [`MarathonSim::start_blocking`] takes a bound `std::net::TcpListener`
//! (bind it inside a network namespace, hand it over). The [`SimHandle`]
//! stops the server when dropped and derefs to a [`SimController`]
//! (cloneable, `Send + Sync`, all methods synchronous).
//!
//! # Served endpoints
//!
//! | request | answer |
//! |---|---|
//! | `GET /v2/apps[?embed=apps.tasks…]` | `{"apps": […]}`, tasks embedded when `embed` has `apps.tasks` (or `app.tasks`) |
//! | `GET /v2/apps/{id}` | `{"app": …}` with tasks |
//! | `GET /v2/apps/{id}/tasks` | `{"tasks": […]}` |
//! | `GET /v2/apps/{id}/versions` | `{"versions": [newest first]}` |
//! | `GET /v2/apps/{id}/versions/{v}` | the bare definition of every version ever deployed (scaling creates versions too) |
//! | `GET /v2/tasks` | `{"tasks": […]}` |
//! | `GET /v2/pods` | `[pod definitions]` (404 with [`SimOptions::pods`] `false`, like Marathon before 1.4) |
//! | `GET /v2/pods/::status` | `[pod statuses]`: instances with `networks[].addresses` and a status per container |
//! | `GET /v2/pods/{id}::status`, `/v2/pods/{id}`, `/v2/pods/{id}::versions/{v}` | one pod's status, definition, definition at its current version |
//! | `GET /v2/info`, `/v2/leader`, `/ping` | Marathon-like answers |
//! | `GET /v2/events` | SSE (below); 405 without `Accept: text/event-stream` |
//!
//! Apps are served in the Marathon 1.4 shape: `ipAddress.groups` for
//! [`Network::IpPerTask`], `ipAddress: null` for host and Docker bridge
//! apps; [`Network::Networks1_5`] apps are in the 1.5 shape (`networks[]`,
//! no groups: Marathon 1.5 drops them). Tasks carry `version` = the app
//! version that launched them, `ipAddresses` only once IPs are known.
//!
//! **Event stream.** Chunked, one chunk per frame
//! `event: <type>\r\ndata: <one-line JSON>\r\n\r\n`, a bare `\r\n` chunk
//! every [`SimOptions::keepalive`] (default 10 s). On attach an
//! `event_stream_attached` is published to all streams (like Marathon, it
//! is subject to `event_type` filters; unfiltered it is a new stream's first
//! event). Repeated `event_type=` parameters filter. A stream that falls
//! [`SimOptions::stream_buffer`] events behind is closed. Events of a change
//! (fixture shapes, `eventType` and `timestamp` last as in the captures):
//!
//! * deploy: `api_post_event` (appDefinition), `group_change_success`,
//!   `deployment_info`, `status_update_event` `TASK_RUNNING` per task with
//!   IPs (slaveId, taskId, taskStatus, message, appId, host,
//!   ipAddresses[{ipAddress, protocol}], ports, version),
//!   `deployment_step_success`, `deployment_success`;
//! * scale: the same with `ScaleApplication`; scaling down kills the
//!   youngest tasks (`TASK_KILLED`);
//! * new version: the same with `RestartApplication`; old tasks keep their
//!   version and the deployment succeeds when the last of them is gone;
//! * kill / lose / set IPs / any update: one `status_update_event`
//!   (`TASK_KILLED`, `TASK_LOST`, `TASK_RUNNING` with the IPs, …);
//! * remove app: `group_change_success`, `deployment_info`, `TASK_KILLED`
//!   per task, `app_terminated_event`, `deployment_step_success`,
//!   `deployment_success`;
//! * pods: create `pod_created_event` + a `status_update_event` per
//!   container of each running instance (`<instance>.<container>`, `appId`
//!   = the pod); add instance: the status updates; remove instance:
//!   `TASK_KILLED` per container; delete pod: the kills, `pod_deleted_event`.
//!
//! **Auth** ([`SimOptions::auth`]): every request except `/_sim/*` needs
//! `Authorization: Basic …` or `Authorization: token=…`; otherwise 401 with
//! `WWW-Authenticate: Basic realm="Mesosphere"` (or `acsjwt` for tokens).
//!
//! **Misbehaviour** ([`Mode`], per [`Endpoint`] or everywhere, optionally
//! for `times` requests): `Hang`, `DropStream { after_events }`,
//! `Status(code)`, `Garbage`, `Truncated`, `Trickle { bytes_per_sec }`,
//! `RedirectTo(url)`, `Reset`. Standby ([`SimController::set_standby`]):
//! every `/v2/*` request answers 307 to the leader (a real 1.7+ standby
//! redirects `/v2/events` and proxies the rest; a redirect is what a client
//! can tell apart and follow). `/ping` and `/_sim/*` are still served.
//!
//! # Control API (`/_sim/…`, no auth, never misbehaves)
//!
//! POST bodies are JSON; answers are JSON. Changes answer
//! `{"tasks": [ids], "first_seq": n, "last_seq": m}`; errors
//! `{"message": …}` with 400 (bad body), 404 (unknown app/task) or 409
//! (app or task id exists).
//!
//! | request | body |
//! |---|---|
//! | `POST /_sim/deploy` | `{"id": "/web", "version"?: "2017-…Z", "groups": ["g"], "labels": {}, "network": "ip-per-task" \| "host" \| "docker-bridge" \| {"networks": {"labels": {}}}, "discovery": [{"number": 80, "protocol"?: "tcp", "name"?: "http"}], "tasks": [{"id"?: "…", "ips": ["10.233.1.2"], "agent": "agent-1", "host"?: "…"}]}` |
//! | `POST /_sim/scale` | `{"app": "/web", "instances": 3, "tasks": [task specs for the new ones]}` |
//! | `POST /_sim/new-version` | `{"app": "/web", "groups"?: […], "labels"?: {…}, "network"?: …, "discovery"?: […], "tasks": […], "replace_old"?: false}` |
//! | `POST /_sim/kill`, `/_sim/lose` | `{"task": "id"}` |
//! | `POST /_sim/set-ips` | `{"task": "id", "ips": ["10.233.1.3"]}` |
//! | `POST /_sim/update-task` | `{"task": "id", "status": "TASK_STARTING", "ips"?: […]}` |
//! | `POST /_sim/remove-app` | `{"app": "/web"}` |
//! | `POST /_sim/deploy-pod` | `{"id": "/db-pod", "labels"?: {}, "network_labels"?: {"network-groups": "db"}, "containers"?: ["app", "sidecar"], "instances": [{"id"?: "…", "ips": ["10.233.1.7"], "agent": "agent-1", "host"?: "…"}]}` |
//! | `POST /_sim/add-pod-instance` | `{"pod": "/db-pod", "instance": {"ips": ["10.233.1.8"], "agent": "agent-1"}}` (all the pod's containers share the instance's IPs) |
//! | `POST /_sim/remove-pod-instance` | `{"instance": "db-pod.instance-…"}` |
//! | `POST /_sim/remove-pod` | `{"pod": "/db-pod"}` |
//! | `POST /_sim/emit` | `{"event_type": "x", "data": "raw text"}` or `{"event_type": "x", "json": {…}}` → `{"seq": n}` |
//! | `POST /_sim/misbehave` | `{"endpoint"?: "apps" \| "app" \| "tasks" \| "info" \| "ping" \| "events" \| "pods", "mode": "hang" \| "garbage" \| "truncated" \| "reset" \| {"status": 503} \| {"drop_stream": {"after_events": 0}} \| {"trickle": {"bytes_per_sec": 50}} \| {"redirect_to": "//10.233.0.9:8080"}, "times"?: 1}` |
//! | `POST /_sim/behave` | (none) forget all misbehaviour |
//! | `POST /_sim/standby` | `{"leader": "http://10.233.0.9:8080"}` or `{"leader": null}` |
//! | `POST /_sim/load-fixture` | a `/v2/apps` (or `/v2/groups`) document: replaces the state, emits nothing |
//! | `GET /_sim/stats` | `{"apps", "tasks", "events_emitted", "events_sent", "sse_clients", "requests", "last_written_seq", "last_written_ms_ago"}` |
//!
//! Example: `curl -s localhost:8080/_sim/set-ips -d '{"task":"web.1","ips":["10.233.1.9"]}'`.

mod cluster;
mod control;
mod http;
mod marathon;
pub mod mesos;
mod pods;
mod render;
mod server;
mod sse;

pub use marathon::{
    AppSpec, Auth, Change, Endpoint, MarathonSim, MisbehaveRule, Mode, Network, PodInstanceSpec,
    PodSpec, PortSpec, SimController, SimError, SimHandle, SimOptions, Stats, TaskSpec,
    VersionChange, WriteRecord,
};
