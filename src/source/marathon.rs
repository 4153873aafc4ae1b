//! `[source] kind = "marathon"`: `/v2/apps?embed=apps.tasks` snapshots and
//! the `/v2/events` stream (docs/design.md §2, docs/FORMATS.md §1–§3, §7).
//!
//! One *session* is: open the event stream, then take a snapshot while
//! buffering the events that arrive meanwhile, fold those into the snapshot
//! and send it as ONE [`SourceUpdate::Snapshot`] (one transaction), then
//! apply events as they come, with a full resync every `resync_interval`.
//! Opening the stream first means no change between snapshot and stream is
//! lost. Marathon does not guarantee event order and has no replay, so the
//! stream is a hint channel: every reconnect and every resync re-reads the
//! whole state.
//!
//! Any failure (a master that hangs, resets, trickles, sends garbage, a
//! truncated body, 5xx, 401...) ends the session: the source reports
//! [`SourceUpdate::Degraded`] once per distinct reason, waits with backoff
//! and jitter, and starts a new session; the daemon keeps the last applied
//! rules meanwhile (fail-static). A snapshot is sent only when it was parsed
//! whole, together with every app version it needed.
//!
//! Events:
//! * `status_update_event`: terminal state -> the task is removed; otherwise
//!   the task is rebuilt from the event with the app version that launched it
//!   (fetched from `/v2/apps/{id}/versions/{v}` when unknown) and upserted. A
//!   status without IPs (staging) binds nothing; a later status without IPs
//!   for a task that had some keeps them (the container still has them).
//! * `app_terminated_event`: every task of the app goes.
//! * `api_post_event`: the posted definition is learnt as the app's newest
//!   version (no request), so its tasks' events need no fetch.
//! * `deployment_success`, `unknown_instance_terminated_event`, and an
//!   `instance_changed_event` with a terminal condition: a full resync soon
//!   (debounced: one per burst, at most one per [`Tuning::hint_min_gap`]).
//! * `deployment_info` and everything else: nothing (status events follow).
//!
//! Pods (Marathon 1.4+, [`pods`]): every snapshot also reads `/v2/pods` and
//! `/v2/pods/::status` (404 = a Marathon without pods: no pods). Each pod
//! instance is one task keyed by its instance id (its containers share its
//! address). `pod_created_event` / `pod_updated_event` / `pod_deleted_event`
//! (they carry only the pod's uri), a `status_update_event` of a pod's
//! container task and an `instance_changed_event` of a pod re-read that
//! pod's status (`/v2/pods/{id}::status`; 404 = deleted) and send the
//! source's view as one `Snapshot` when its instances changed.
//!
//! Changes that touch several tasks at once (an app deleted; a dead task
//! whose IP another task already reports) are sent as one `Snapshot` of the
//! source's own current view, so the daemon applies them in one transaction:
//! the IP moves from the dead task to the new one with no window between.

mod pods;

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc::Sender;
use tokio::time::Instant;

use super::http::{ByteStream, HttpError, MasterClient, MasterSettings, Timeouts};
use super::live::LiveStream;
use super::outbox::{self, Change};
use super::pipe::PipeReader;
use super::sse::{SseError, SseEvent, SseParser, DEFAULT_MAX_LINE};
use super::wire::marathon::pods::pod_id_from_uri;
use super::wire::marathon::VersionCache;
use super::wire::marathon::{
    convert_app, convert_event_task, walk_app_list, App, Conversion, MarathonTask, TaskIpAddress,
};
use super::wire::null_as_default;
use super::SourceUpdate;
use crate::config::{GroupsConfig, SourceConfig};
use crate::model::{ClusterView, NotEnforced, Task, TaskState};

/// The snapshot.
pub const APPS_PATH: &str = "/v2/apps?embed=apps.tasks";
/// The events groupd uses (Marathon 1.3.7+ filters server-side).
pub const EVENTS_FILTERED_PATH: &str = "/v2/events?event_type=status_update_event&event_type=app_terminated_event&event_type=api_post_event&event_type=deployment_success&event_type=deployment_info&event_type=instance_changed_event&event_type=unknown_instance_terminated_event&event_type=pod_created_event&event_type=pod_updated_event&event_type=pod_deleted_event";
pub use pods::{PODS_PATH, PODS_STATUS_PATH};
/// Older Marathons: every event.
pub const EVENTS_PATH: &str = "/v2/events";

const JSON: &str = "application/json";
const EVENT_STREAM: &str = "text/event-stream";

/// Timing knobs; the defaults are for production, tests shrink them.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub timeouts: Timeouts,
    /// Backoff after a failure: full jitter from `backoff_base` doubling to
    /// `backoff_cap`.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// An event that asks for a resync waits this long, so a burst of them
    /// makes one resync.
    pub hint_delay: Duration,
    /// Least time from one snapshot to an event-triggered resync.
    pub hint_min_gap: Duration,
    /// Events buffered while a snapshot is read; more means the snapshot is
    /// too slow for the cluster's churn, and the session starts over.
    pub max_buffered: usize,
    /// App versions fetched at once.
    pub version_fetches: usize,
    /// Largest SSE line or event accepted (each is held whole while it is
    /// read; Marathon's largest carry one app definition).
    pub max_event: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            timeouts: Timeouts::default(),
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(30),
            hint_delay: Duration::from_secs(1),
            hint_min_gap: Duration::from_secs(10),
            max_buffered: 100_000,
            version_fetches: 4,
            max_event: DEFAULT_MAX_LINE,
        }
    }
}

/// Run the source until the daemon goes away; master errors never end it.
pub async fn run(cfg: SourceConfig, groups: GroupsConfig, tx: Sender<SourceUpdate>) {
    run_with(cfg, groups, tx, Tuning::default()).await
}

/// [`run`] with explicit timing.
pub async fn run_with(
    cfg: SourceConfig,
    groups: GroupsConfig,
    tx: Sender<SourceUpdate>,
    tuning: Tuning,
) {
    tracing::info!(urls = ?cfg.urls.iter().map(|u| super::http::redact_url(u)).collect::<Vec<_>>(), "marathon source: starting");
    if !cfg.tls_verify {
        tracing::warn!("marathon source: source.tls_verify = false: the masters' TLS certificates are NOT checked");
    }
    outbox::run_sessions(Source::new(&cfg, groups, tx, tuning)).await;
    tracing::debug!("marathon source: receiver gone, stopping");
}

// ---------------------------------------------------------------------------
// Events

/// One Marathon event, as far as groupd cares.
#[derive(Debug, Clone)]
pub enum Event {
    Attached,
    StatusUpdate(Box<StatusUpdate>),
    AppTerminated {
        app_id: String,
    },
    /// The posted definition, when it parses as an app with an id.
    ApiPost {
        app: Option<Box<App>>,
    },
    DeploymentSuccess,
    DeploymentInfo,
    InstanceChanged {
        condition: Option<String>,
        /// The app or pod of the instance.
        run_spec_id: Option<String>,
    },
    UnknownInstanceTerminated,
    /// `pod_created_event`, `pod_updated_event`, `pod_deleted_event`: the
    /// pod id from the event's `uri` (`None` when it names no pod).
    PodChanged {
        pod_id: Option<String>,
    },
    /// Any other event type (ignored).
    Other(String),
}

/// `status_update_event` (docs/FORMATS.md §3).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdate {
    pub task_id: String,
    pub task_status: String,
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub slave_id: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// `[]` or absent while no IP is known.
    #[serde(default, deserialize_with = "null_as_default")]
    pub ip_addresses: Vec<TaskIpAddress>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppTerminated {
    app_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiPost {
    #[serde(default)]
    app_definition: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstanceChanged {
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    run_spec_id: Option<String>,
}

#[derive(Deserialize)]
struct PodEvent {
    #[serde(default)]
    uri: Option<String>,
}

/// Types whose body is read; others are skipped unparsed.
const HANDLED: &[&str] = &[
    "event_stream_attached",
    "status_update_event",
    "app_terminated_event",
    "api_post_event",
    "deployment_success",
    "deployment_info",
    "instance_changed_event",
    "unknown_instance_terminated_event",
    "pod_created_event",
    "pod_updated_event",
    "pod_deleted_event",
];

/// Parse one event body. `name` is the SSE `event:` field; when it is the
/// default (`message`) the body's `eventType` decides.
pub fn parse_event(name: &str, data: &str) -> Result<Event, String> {
    if name != "message" && !HANDLED.contains(&name) {
        return Ok(Event::Other(name.to_string()));
    }
    let value: serde_json::Value =
        serde_json::from_str(data).map_err(|e| format!("body is not JSON: {e}"))?;
    let kind = match name {
        "message" => value
            .get("eventType")
            .and_then(|v| v.as_str())
            .unwrap_or("message")
            .to_string(),
        _ => name.to_string(),
    };
    let typed = |what: &str| format!("{kind} body does not match Marathon's: {what}");
    Ok(match kind.as_str() {
        "event_stream_attached" => Event::Attached,
        "status_update_event" => Event::StatusUpdate(Box::new(
            serde_json::from_value(value).map_err(|e| typed(&e.to_string()))?,
        )),
        "app_terminated_event" => {
            let t: AppTerminated =
                serde_json::from_value(value).map_err(|e| typed(&e.to_string()))?;
            Event::AppTerminated { app_id: t.app_id }
        }
        "api_post_event" => {
            let p: ApiPost = serde_json::from_value(value).map_err(|e| typed(&e.to_string()))?;
            // Lenient: a definition we cannot read only costs a fetch later.
            let app = p
                .app_definition
                .and_then(|v| serde_json::from_value::<App>(v).ok())
                .map(Box::new);
            Event::ApiPost { app }
        }
        "deployment_success" => Event::DeploymentSuccess,
        "deployment_info" => Event::DeploymentInfo,
        "instance_changed_event" => {
            let i: InstanceChanged =
                serde_json::from_value(value).map_err(|e| typed(&e.to_string()))?;
            Event::InstanceChanged {
                condition: i.condition,
                run_spec_id: i.run_spec_id,
            }
        }
        "unknown_instance_terminated_event" => Event::UnknownInstanceTerminated,
        "pod_created_event" | "pod_updated_event" | "pod_deleted_event" => {
            let p: PodEvent = serde_json::from_value(value).map_err(|e| typed(&e.to_string()))?;
            Event::PodChanged {
                pod_id: p.uri.as_deref().and_then(pod_id_from_uri),
            }
        }
        _ => Event::Other(kind),
    })
}

/// Marathon instance conditions after which the instance is gone.
fn condition_is_terminal(condition: &str) -> bool {
    matches!(
        condition.trim().to_ascii_lowercase().as_str(),
        "killed" | "failed" | "finished" | "error" | "gone" | "dropped" | "unknown"
    )
}

// ---------------------------------------------------------------------------
// Failures

/// Why a session ended. Texts name the master (redacted) and what failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{url}: {detail}; not applied, the last rules stay")]
    Garbage { url: String, detail: String },
    #[error(
        "{url}: event stream ended (master restarted, lost leadership or dropped the connection)"
    )]
    StreamEnded { url: String },
    #[error("{url}: {source}")]
    Sse { url: String, source: SseError },
    #[error("{url}: unreadable event: {detail}")]
    BadEvent { url: String, detail: String },
    #[error("{url}: more than {limit} events arrived while the snapshot was read; starting over")]
    Overrun { url: String, limit: usize },
    /// The daemon stopped listening.
    #[error("the daemon stopped")]
    Closed,
}

impl outbox::SessionEnd for Failure {
    fn is_closed(&self) -> bool {
        matches!(self, Failure::Closed)
    }

    fn is_auth(&self) -> bool {
        matches!(self, Failure::Http(e) if e.is_auth())
    }

    /// The master answered but its stream misbehaved: start with another
    /// master next time, or a master that stalls every stream would be
    /// tried first forever.
    fn blames_the_stream(&self) -> bool {
        matches!(
            self,
            Failure::Http(HttpError::Stalled { .. })
                | Failure::Sse { .. }
                | Failure::BadEvent { .. }
        )
    }
}

// ---------------------------------------------------------------------------
// The event stream reader

/// SSE events from an open stream, with stall detection: the stream is dead
/// when no complete line (an event or a keep-alive) arrives within `stall`,
/// so a trickle of bytes without line ends does not keep it alive.
struct EventReader {
    live: LiveStream,
    parser: SseParser,
    queue: VecDeque<SseEvent>,
}

impl EventReader {
    fn new(stream: ByteStream, stall: Duration, max_event: usize) -> EventReader {
        EventReader {
            live: LiveStream::new(stream, stall),
            parser: SseParser::new(max_event),
            queue: VecDeque::new(),
        }
    }

    fn url(&self) -> String {
        self.live.url().to_string()
    }

    /// The next event. Cancel-safe: state lives in `self`, and the only
    /// await is the cancel-safe chunk read.
    async fn next(&mut self) -> Result<SseEvent, Failure> {
        self.live.alive();
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(event);
            }
            let lines = self.parser.lines();
            let chunk = self.live.next_chunk().await?;
            let Some(chunk) = chunk else {
                self.parser.finish();
                return Err(Failure::StreamEnded { url: self.url() });
            };
            let events = self
                .parser
                .feed(chunk.as_ref())
                .map_err(|source| Failure::Sse {
                    url: self.url(),
                    source,
                })?;
            self.queue.extend(events);
            if self.parser.lines() > lines {
                self.live.alive();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Snapshots

/// A whole, parsed snapshot, not yet installed.
struct Snapshot {
    url: String,
    view: ClusterView,
    /// Current app definitions, tasks stripped.
    apps: HashMap<String, App>,
    /// Versions the master no longer has (404).
    missing: HashSet<(String, String)>,
}

/// What the parse thread made of `/v2/apps?embed=apps.tasks`.
struct ReadApps {
    /// Every app converted as it was read; tasks launched by a version
    /// the cache did not know are ungrouped here until `deferred` is
    /// converted again.
    view: ClusterView,
    /// Current app definitions, tasks stripped.
    apps: Vec<App>,
    /// Apps with a task launched by a version the cache did not know, with
    /// their tasks: converted again once those versions are fetched.
    deferred: Vec<App>,
    /// The cache after the conversion.
    versions: VersionCache,
}

/// `/v2/apps?embed=apps.tasks` read from `reader` while it arrives, each
/// app converted the moment it is read (the body is never held whole, nor
/// are the apps' tasks, but for apps still waiting for a launching
/// version). An `apps` key is required and every app must carry `tasks`:
/// a body that lacks them (a proxy's error page in JSON, a server that
/// ignored `embed`) would otherwise read as "no tasks" and remove every
/// rule. `versions` is a copy: the source's own cache is only replaced by
/// a conversion that succeeded.
fn read_apps(
    mut reader: PipeReader,
    groups: &GroupsConfig,
    mut versions: VersionCache,
) -> Result<ReadApps, String> {
    let mut sink = AppSink {
        conversion: Conversion::new(true, groups, &mut versions),
        apps: Vec::new(),
        deferred: Vec::new(),
        without_tasks: None,
    };
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(
        64 << 10,
        &mut reader,
    ));
    let read = serde::Deserializer::deserialize_map(&mut de, AppsDocument(&mut sink))
        .and_then(|()| de.end());
    drop(de);
    read.map_err(|e| describe_apps_error(&e, reader.start()))?;
    if let Some(id) = sink.without_tasks {
        return Err(format!(
            "app {id:?} has no `tasks`: the master ignored embed=apps.tasks"
        ));
    }
    let AppSink {
        conversion,
        apps,
        deferred,
        ..
    } = sink;
    let view = conversion.finish();
    Ok(ReadApps {
        view,
        apps,
        deferred,
        versions,
    })
}

/// Where the apps of the document go as they are read.
struct AppSink<'a> {
    conversion: Conversion<'a>,
    apps: Vec<App>,
    deferred: Vec<App>,
    /// The first app without `tasks` (the document is refused).
    without_tasks: Option<String>,
}

impl AppSink<'_> {
    fn add(&mut self, mut app: App) {
        if app.tasks.is_none() {
            self.without_tasks.get_or_insert_with(|| app.id.clone());
            return;
        }
        self.conversion.add(&app);
        let versions = self.conversion.versions();
        let waits = app
            .tasks
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.version.as_deref())
            .any(|v| app.version.as_deref() != Some(v) && !versions.knows(&app.id, v));
        if waits {
            self.deferred.push(app);
        } else {
            app.tasks = None;
            self.apps.push(app);
        }
    }
}

/// The top-level object of `/v2/apps`: its `apps`, each handed to the sink
/// as it is read; other keys are skipped.
struct AppsDocument<'s, 'a>(&'s mut AppSink<'a>);

impl<'de> serde::de::Visitor<'de> for AppsDocument<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("struct AppsDocument")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let sink = self.0;
        let mut seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "apps" && !seen {
                seen = true;
                map.next_value_seed(AppList(&mut *sink))?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        if !seen {
            return Err(serde::de::Error::missing_field("apps"));
        }
        Ok(())
    }
}

/// The `apps` array.
struct AppList<'s, 'a>(&'s mut AppSink<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for AppList<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        let sink = self.0;
        walk_app_list(de, &mut |app| sink.add(app))
    }
}

/// Why a body is not an apps document; `start` is its first bytes.
fn describe_apps_error(e: &serde_json::Error, start: &[u8]) -> String {
    use serde_json::error::Category;
    if e.classify() == Category::Eof && start.iter().all(u8::is_ascii_whitespace) {
        return "empty body instead of the apps document".into();
    }
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Eof => {
            format!("truncated JSON: the body ends at {at} before the apps document is complete")
        }
        Category::Syntax if e.line() == 1 && e.column() <= 1 => format!(
            "not JSON: the body starts with {:?}",
            String::from_utf8_lossy(start)
        ),
        Category::Syntax | Category::Io => format!("malformed JSON at {at}: {e}"),
        Category::Data => format!("not a Marathon /v2/apps document ({e})"),
    }
}

/// `/v2/apps/{id}/versions/{version}`, with characters outside the ones app
/// ids and timestamps use percent-encoded.
fn version_path(app_id: &str, version: &str) -> String {
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z'
                | b'A'..=b'Z'
                | b'0'..=b'9'
                | b'-'
                | b'.'
                | b'_'
                | b'~'
                | b'/'
                | b':'
                | b'+' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let id = app_id.trim_start_matches('/');
    format!("/v2/apps/{}/versions/{}", encode(id), encode(version))
}

/// One app version from the master: `Some` when found, `None` when the
/// master no longer has it (404: Marathon keeps a limited history).
async fn fetch_version(
    client: &MasterClient,
    app_id: &str,
    version: &str,
) -> Result<Option<App>, Failure> {
    let body = match client.get(&version_path(app_id, version), JSON).await {
        Ok(body) => body,
        Err(e) if e.status() == Some(404) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut app: App = serde_json::from_slice(&body.bytes).map_err(|e| Failure::Garbage {
        url: body.url.clone(),
        detail: format!("not an app definition: {e}"),
    })?;
    // Key it exactly as the tasks name it.
    app.id = app_id.to_string();
    app.version = Some(version.to_string());
    app.tasks = None;
    Ok(Some(app))
}

/// `(app, version)` pairs that the tasks of `deferred` were launched with
/// and the cache does not cover yet.
fn unknown_versions(deferred: &[App], versions: &VersionCache) -> Vec<(String, String)> {
    let mut wanted = Vec::new();
    let mut seen = HashSet::new();
    for app in deferred {
        for task in app.tasks.as_deref().unwrap_or_default() {
            let Some(v) = task.version.as_deref() else {
                continue;
            };
            if app.version.as_deref() == Some(v) || versions.knows(&app.id, v) {
                continue;
            }
            if seen.insert((app.id.clone(), v.to_string())) {
                wanted.push((app.id.clone(), v.to_string()));
            }
        }
    }
    wanted
}

/// Read and convert a whole snapshot, fetching every launching version it
/// needs first. Nothing is kept from a failed attempt but what the version
/// cache learnt (which is true either way).
async fn fetch_snapshot(
    client: &MasterClient,
    groups: &GroupsConfig,
    versions: &mut VersionCache,
    pods: &mut pods::Pods,
    concurrency: usize,
) -> Result<Snapshot, Failure> {
    let stream = client.open_stream(APPS_PATH, JSON).await?;
    let url = stream.url().to_string();
    let (limits, copy) = (groups.clone(), versions.clone());
    let parsed = stream
        .parse_body(client.timeouts(), move |reader| {
            read_apps(reader, &limits, copy)
        })
        .await?;
    let read = parsed.map_err(|detail| {
        // Well-formed HTTP, useless answer: prefer another master next time.
        client.demote();
        Failure::Garbage {
            url: url.clone(),
            detail,
        }
    })?;
    *versions = read.versions;
    let (mut view, mut apps, deferred) = (read.view, read.apps, read.deferred);
    let wanted = unknown_versions(&deferred, versions);
    let fetched: Vec<_> = futures::stream::iter(wanted)
        .map(|(id, v)| async move {
            let found = fetch_version(client, &id, &v).await;
            (id, v, found)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut missing = HashSet::new();
    for (id, v, found) in fetched {
        match found? {
            Some(app) => versions.learn(&app, groups),
            None => {
                tracing::info!(app = %id, version = %v, "marathon source: launching version no longer on the master; its tasks are treated as ungrouped");
                missing.insert((id, v));
            }
        }
    }
    // The waiting apps' tasks again, with the versions now known (or still
    // ungrouped when the master no longer has them).
    for mut app in deferred {
        for task in convert_app(&app, groups, versions) {
            view.insert(task);
        }
        app.tasks = None;
        apps.push(app);
    }
    for task in pods.fetch_all(client, groups).await? {
        view.insert(task);
    }
    view.conflicts = view.ip_conflicts();
    let apps = apps.into_iter().map(|app| (app.id.clone(), app)).collect();
    Ok(Snapshot {
        url,
        view,
        apps,
        missing,
    })
}

// ---------------------------------------------------------------------------
// The source

/// What one event changes, for the daemon.
#[derive(Debug)]

struct Source {
    settings: MasterSettings,
    groups: GroupsConfig,
    tuning: Tuning,
    resync_every: Duration,
    /// Channel, client, backoff and degraded state: what the retry loop shares.
    link: outbox::Link,
    versions: VersionCache,
    pods: pods::Pods,
    /// Current app definitions (from the snapshot and `api_post_event`).
    apps: HashMap<String, App>,
    /// What the daemon was told: the last snapshot plus the events since.
    view: ClusterView,
    missing: HashSet<(String, String)>,
    /// The master accepts `event_type` filters (until a 4xx says otherwise).
    filters: bool,
    last_snapshot: Instant,
    next_resync: Instant,
}

impl outbox::Sessions for Source {
    type End = Failure;

    fn session(&mut self) -> impl std::future::Future<Output = Result<Infallible, Failure>> + Send {
        Source::session(self)
    }

    fn link(&mut self) -> &mut outbox::Link {
        &mut self.link
    }
}

impl Source {
    fn new(
        cfg: &SourceConfig,
        groups: GroupsConfig,
        tx: Sender<SourceUpdate>,
        tuning: Tuning,
    ) -> Source {
        let now = Instant::now();
        Source {
            link: outbox::Link::new("marathon", tx, tuning.backoff_base, tuning.backoff_cap),
            settings: MasterSettings::from_source(cfg, tuning.timeouts),
            groups,
            tuning,
            // Config validation keeps it >= 1 s; a floor guards a hand-made one.
            resync_every: cfg.resync().max(Duration::from_millis(100)),
            versions: VersionCache::default(),
            pods: pods::Pods::default(),
            apps: HashMap::new(),
            view: ClusterView::default(),
            missing: HashSet::new(),
            filters: true,
            last_snapshot: now,
            next_resync: now,
        }
    }

    /// One connection's life: stream, snapshot, events, resyncs. Ends only
    /// by failure.
    async fn session(&mut self) -> Result<Infallible, Failure> {
        let client = self.client()?;
        let mut events = self.open_events(&client).await?;
        tracing::info!(url = %events.url(), "marathon source: event stream open");
        self.resync(&client, &mut events).await?;
        loop {
            enum Step {
                Event(Result<SseEvent, Failure>),
                Resync,
                Closed,
            }
            let step = tokio::select! {
                event = events.next() => Step::Event(event),
                _ = tokio::time::sleep_until(self.next_resync) => Step::Resync,
                _ = self.link.tx.closed() => Step::Closed,
            };
            match step {
                Step::Event(event) => {
                    let change = self.apply(&client, &events.url(), event?).await?;
                    self.send_change(change).await?;
                }
                Step::Resync => self.resync(&client, &mut events).await?,
                Step::Closed => return Err(Failure::Closed),
            }
        }
    }

    fn client(&mut self) -> Result<std::sync::Arc<MasterClient>, Failure> {
        Ok(self.link.client(&self.settings)?)
    }

    /// `/v2/events`, filtered when the master takes filters.
    async fn open_events(&mut self, client: &MasterClient) -> Result<EventReader, Failure> {
        let (stall, max) = (self.tuning.timeouts.stall, self.tuning.max_event);
        if self.filters {
            match client.open_stream(EVENTS_FILTERED_PATH, EVENT_STREAM).await {
                Ok(stream) => return Ok(EventReader::new(stream, stall, max)),
                Err(e) if !e.is_auth() && e.status().is_some_and(|s| (400..500).contains(&s)) => {
                    tracing::warn!("marathon source: {e}; this Marathon does not take event_type filters, subscribing to every event");
                    self.filters = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let stream = client.open_stream(EVENTS_PATH, EVENT_STREAM).await?;
        Ok(EventReader::new(stream, stall, max))
    }

    /// Take a snapshot while buffering events, fold the buffered events in,
    /// and send the result as one `Snapshot`.
    async fn resync(
        &mut self,
        client: &MasterClient,
        events: &mut EventReader,
    ) -> Result<(), Failure> {
        let limit = self.tuning.max_buffered;
        let mut buffered = Vec::new();
        let snapshot = {
            let fetch = fetch_snapshot(
                client,
                &self.groups,
                &mut self.versions,
                &mut self.pods,
                self.tuning.version_fetches,
            );
            tokio::pin!(fetch);
            loop {
                tokio::select! {
                    biased;
                    snapshot = &mut fetch => break snapshot?,
                    event = events.next() => {
                        buffered.push(event?);
                        if buffered.len() > limit {
                            return Err(Failure::Overrun { url: events.url(), limit });
                        }
                    }
                }
            }
        };
        let url = snapshot.url.clone();
        self.view = snapshot.view;
        self.apps = snapshot.apps;
        self.missing = snapshot.missing;
        let folded = buffered.len();
        for event in buffered {
            // The whole view is sent below; single changes do not matter.
            self.apply(client, &events.url(), event).await?;
        }
        let view = outbox::snapshot(&self.view);
        tracing::info!(
            url = %url,
            tasks = view.tasks.len(),
            endpoints = view.endpoints().count(),
            events_folded_in = folded,
            "marathon source: snapshot"
        );
        self.send(SourceUpdate::Snapshot(view)).await?;
        self.link.backoff.reset();
        self.link.degraded.clear();
        let now = Instant::now();
        self.last_snapshot = now;
        self.next_resync = now + self.resync_every;
        Ok(())
    }

    /// Update the local view for one event and say what changed.
    async fn apply(
        &mut self,
        client: &MasterClient,
        url: &str,
        event: SseEvent,
    ) -> Result<Change, Failure> {
        let parsed =
            parse_event(&event.event, &event.data).map_err(|detail| Failure::BadEvent {
                url: url.to_string(),
                detail,
            })?;
        Ok(match parsed {
            Event::StatusUpdate(status) => self.on_status(client, *status).await?,
            Event::AppTerminated { app_id } => self.on_app_terminated(&app_id),
            Event::ApiPost { app: Some(app) } => {
                self.learn_definition(*app);
                Change::None
            }
            Event::DeploymentSuccess | Event::UnknownInstanceTerminated => {
                self.resync_soon();
                Change::None
            }
            Event::InstanceChanged {
                run_spec_id: Some(pod_id),
                ..
            } if self.pods.is_pod(&pod_id) => self.on_pod_changed(client, &pod_id).await?,
            Event::InstanceChanged { condition, .. } => {
                if condition.as_deref().is_some_and(condition_is_terminal) {
                    self.resync_soon();
                }
                Change::None
            }
            Event::PodChanged {
                pod_id: Some(pod_id),
            } => self.on_pod_changed(client, &pod_id).await?,
            Event::PodChanged { pod_id: None } => {
                self.resync_soon();
                Change::None
            }
            Event::ApiPost { app: None }
            | Event::DeploymentInfo
            | Event::Attached
            | Event::Other(_) => Change::None,
        })
    }

    async fn on_status(
        &mut self,
        client: &MasterClient,
        status: StatusUpdate,
    ) -> Result<Change, Failure> {
        // A container of a pod instance: the instance is the task, and its
        // state and address are in the pod's status.
        if let Some(pod_id) = self.pod_of_status(&status) {
            return self.on_pod_changed(client, &pod_id).await;
        }
        if TaskState::parse(&status.task_status).is_terminal() {
            return Ok(self.remove_task(&status.task_id));
        }
        let Some(app_id) = status.app_id.clone() else {
            tracing::debug!(task = %status.task_id, "marathon source: status without appId; resyncing soon");
            self.resync_soon();
            return Ok(Change::None);
        };
        if !self
            .ensure_version(client, &app_id, status.version.as_deref())
            .await?
        {
            // Not an app: a pod created since the snapshot (whose created
            // event has not arrived), or an app deleted since.
            if let Some(change) = self.try_new_pod(client, &app_id).await? {
                return Ok(change);
            }
            tracing::debug!(task = %status.task_id, app = %app_id, "marathon source: status of an unknown app ignored");
            return Ok(Change::None);
        }
        let Some(app) = self.apps.get(&app_id) else {
            return Ok(Change::None);
        };
        let wire = MarathonTask {
            id: status.task_id,
            app_id: Some(app_id),
            host: status.host,
            slave_id: status.slave_id,
            state: Some(status.task_status),
            started_at: None,
            version: status.version,
            ip_addresses: status.ip_addresses,
        };
        let mut task = convert_event_task(app, &wire, &self.groups, &self.versions);
        self.keep_known_ips(&mut task);
        self.view.insert(task.clone());
        Ok(Change::Upsert(task))
    }

    /// The pod a status is about: its `appId` when that is a known pod,
    /// else (no `appId`) the pod of a known instance whose id starts the
    /// task id (`<instance id>.<container>`; task ids are never split on
    /// dots to guess an app).
    fn pod_of_status(&self, status: &StatusUpdate) -> Option<String> {
        if let Some(id) = status.app_id.as_deref() {
            return self.pods.is_pod(id).then(|| id.to_string());
        }
        self.view
            .tasks
            .values()
            .filter(|t| self.pods.is_pod(&t.app))
            .find(|t| {
                status
                    .task_id
                    .strip_prefix(&*t.id)
                    .is_some_and(|rest| rest.starts_with('.'))
            })
            .map(|t| t.app.to_string())
    }

    /// A live task's status without IPs does not mean the container lost
    /// them (only staging tasks have none): keep what was known.
    fn keep_known_ips(&self, task: &mut Task) {
        if task.not_enforced != Some(NotEnforced::NoAddress) {
            return;
        }
        if let Some(old) = self.view.tasks.get(&task.id) {
            if !old.ips.is_empty() && !old.state.is_terminal() {
                task.ips = old.ips.clone();
                task.not_enforced = old.not_enforced.clone();
            }
        }
    }

    /// Make sure `app_id` at `version` can be converted: the app is known
    /// and the version learnt (or known to be gone). `false` when the master
    /// has no such app at all.
    async fn ensure_version(
        &mut self,
        client: &MasterClient,
        app_id: &str,
        version: Option<&str>,
    ) -> Result<bool, Failure> {
        let known = self.apps.contains_key(app_id);
        let Some(version) = version else {
            return Ok(known);
        };
        let key = (app_id.to_string(), version.to_string());
        if known && (self.versions.knows(app_id, version) || self.missing.contains(&key)) {
            return Ok(true);
        }
        match fetch_version(client, app_id, version).await? {
            Some(app) => {
                self.versions.learn(&app, &self.groups);
                self.apps.entry(app_id.to_string()).or_insert(app);
                Ok(true)
            }
            None => {
                self.missing.insert(key);
                Ok(known)
            }
        }
    }

    /// Forget a task. When another task already reports one of its IPs the
    /// whole view goes out, so the IP changes hands in one transaction.
    fn remove_task(&mut self, id: &str) -> Change {
        let Some(old) = self.view.tasks.remove(id) else {
            return Change::None;
        };
        let handover = old.is_endpoint()
            && self
                .view
                .endpoints()
                .any(|t| t.ips.iter().any(|ip| old.ips.contains(ip)));
        if handover {
            Change::Whole
        } else {
            Change::Remove(id.to_string())
        }
    }

    /// Re-read pod `pod_id` and put its instances in the view in place of
    /// the ones known; a pod that is gone takes its instances with it. The
    /// whole view goes out (one transaction), so an address moving between
    /// instances never has a window.
    async fn on_pod_changed(
        &mut self,
        client: &MasterClient,
        pod_id: &str,
    ) -> Result<Change, Failure> {
        let fresh = self
            .pods
            .fetch_one(client, &self.groups, pod_id)
            .await?
            .unwrap_or_default();
        Ok(self.replace_pod_instances(pod_id, fresh))
    }

    /// A status of something that is neither a known app nor a known pod:
    /// `Some` when the master knows it as a pod.
    async fn try_new_pod(
        &mut self,
        client: &MasterClient,
        id: &str,
    ) -> Result<Option<Change>, Failure> {
        match self.pods.fetch_one(client, &self.groups, id).await? {
            Some(fresh) => Ok(Some(self.replace_pod_instances(id, fresh))),
            None => Ok(None),
        }
    }

    fn replace_pod_instances(&mut self, pod_id: &str, fresh: Vec<Task>) -> Change {
        let old: Vec<Task> = self
            .view
            .tasks
            .values()
            .filter(|t| *t.app == *pod_id)
            .cloned()
            .collect();
        let mut fresh = fresh;
        fresh.sort_by(|a, b| a.id.cmp(&b.id));
        for task in &mut fresh {
            self.keep_known_ips(task);
        }
        if old == fresh {
            return Change::None;
        }
        self.view.tasks.retain(|_, t| *t.app != *pod_id);
        for task in fresh {
            self.view.insert(task);
        }
        Change::Whole
    }

    fn on_app_terminated(&mut self, app_id: &str) -> Change {
        self.apps.remove(app_id);
        let before = self.view.tasks.len();
        self.view.tasks.retain(|_, t| *t.app != *app_id);
        if self.view.tasks.len() == before {
            Change::None
        } else {
            Change::Whole
        }
    }

    /// `api_post_event`: the definition is the app's newest version.
    fn learn_definition(&mut self, mut app: App) {
        if app.version.is_none() {
            return;
        }
        app.tasks = None;
        self.versions.learn(&app, &self.groups);
        self.apps.insert(app.id.clone(), app);
    }

    /// Schedule a full resync soon, debounced.
    fn resync_soon(&mut self) {
        let at = (Instant::now() + self.tuning.hint_delay)
            .max(self.last_snapshot + self.tuning.hint_min_gap);
        if at < self.next_resync {
            self.next_resync = at;
        }
    }

    async fn send_change(&mut self, change: Change) -> Result<(), Failure> {
        (self.link.send_change(change, &self.view).await).map_err(|_| Failure::Closed)
    }

    async fn send(&self, update: SourceUpdate) -> Result<(), Failure> {
        self.link.send(update).await.map_err(|_| Failure::Closed)
    }
}

#[cfg(test)]
mod tests {
    //! Against small raw-TCP Marathons written here: each speaks just enough
    //! HTTP/1.1 (one request per connection) to misbehave precisely.

    use super::*;
    use crate::config::SourceKind;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    const V0: &str = "2023-12-01T00:00:00.000Z";
    const V1: &str = "2024-01-01T00:00:00.000Z";
    const V2: &str = "2024-02-01T00:00:00.000Z";

    #[derive(Debug, Clone)]
    struct Req {
        path: String,
        headers: Vec<(String, String)>,
    }

    impl Req {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }
    }

    enum Reply {
        Json(u16, String),
        Redirect(String),
        Sse(mpsc::UnboundedReceiver<Vec<u8>>),
        /// These bytes (head included), then close.
        Raw(Vec<u8>),
        Hang,
        /// The head at once, then the body one byte per interval.
        Trickle(String, Duration),
        Delayed(Duration, Box<Reply>),
    }

    struct Server {
        base: String,
        port: u16,
        log: Arc<Mutex<Vec<Req>>>,
    }

    impl Server {
        fn requests(&self, prefix: &str) -> Vec<Req> {
            self.log
                .lock()
                .expect("log")
                .iter()
                .filter(|r| r.path.starts_with(prefix))
                .cloned()
                .collect()
        }
    }

    async fn serve(handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let conn_log = log.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (handler, log) = (handler.clone(), conn_log.clone());
                tokio::spawn(async move {
                    let mut sock = sock;
                    let Some(req) = read_request(&mut sock).await else {
                        return;
                    };
                    log.lock().expect("log").push(req.clone());
                    let _ = write_reply(sock, handler(&req)).await;
                });
            }
        });
        Server {
            base: format!("http://127.0.0.1:{port}"),
            port,
            log,
        }
    }

    async fn read_request(sock: &mut TcpStream) -> Option<Req> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let text = String::from_utf8_lossy(&buf).to_string();
        let mut lines = text.split("\r\n");
        let path = lines.next()?.split(' ').nth(1)?.to_string();
        let headers = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Some(Req { path, headers })
    }

    fn write_reply(
        mut sock: TcpStream,
        reply: Reply,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>> {
        Box::pin(async move {
            match reply {
                Reply::Json(status, body) => {
                    let head = format!("HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    sock.write_all(head.as_bytes()).await?;
                    sock.write_all(body.as_bytes()).await?;
                }
                Reply::Redirect(location) => {
                    let head = format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    sock.write_all(head.as_bytes()).await?;
                }
                Reply::Sse(mut rx) => {
                    sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n").await?;
                    while let Some(bytes) = rx.recv().await {
                        sock.write_all(&bytes).await?;
                    }
                }
                Reply::Raw(bytes) => sock.write_all(&bytes).await?,
                Reply::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
                Reply::Trickle(body, every) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    sock.write_all(head.as_bytes()).await?;
                    for b in body.bytes() {
                        sock.write_all(&[b]).await?;
                        tokio::time::sleep(every).await;
                    }
                }
                Reply::Delayed(delay, inner) => {
                    tokio::time::sleep(delay).await;
                    return write_reply(sock, *inner).await;
                }
            }
            sock.shutdown().await
        })
    }

    /// The event streams a fake Marathon has open.
    #[derive(Clone, Default)]
    struct Hub(Arc<Mutex<Vec<mpsc::UnboundedSender<Vec<u8>>>>>);

    impl Hub {
        fn attach(&self) -> Reply {
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = tx.send(b"event: event_stream_attached\r\ndata: {\"remoteAddress\":\"127.0.0.1\",\"eventType\":\"event_stream_attached\",\"timestamp\":\"2024-01-01T00:00:00.000Z\"}\r\n\r\n".to_vec());
            self.0.lock().expect("hub").push(tx);
            Reply::Sse(rx)
        }

        fn push(&self, frame: &str) {
            self.0
                .lock()
                .expect("hub")
                .retain(|tx| tx.send(frame.as_bytes().to_vec()).is_ok());
        }

        /// Close every stream (the server ends the response).
        fn drop_streams(&self) {
            self.0.lock().expect("hub").clear();
        }
    }

    /// A well-behaved Marathon: `/v2/events`, `/v2/apps?embed=apps.tasks`
    /// and `/v2/apps/{id}/versions/{v}` from `versions`.
    struct Fake {
        server: Server,
        hub: Hub,
        apps: Arc<Mutex<String>>,
    }

    async fn fake_marathon(apps: String, versions: Vec<(String, String)>) -> Fake {
        fake_with(apps, versions, Duration::ZERO).await
    }

    async fn fake_with(
        apps: String,
        versions: Vec<(String, String)>,
        apps_delay: Duration,
    ) -> Fake {
        let hub = Hub::default();
        let doc = Arc::new(Mutex::new(apps));
        let (h, d) = (hub.clone(), doc.clone());
        let server = serve(move |req| {
            if req.path.starts_with("/v2/events") {
                return h.attach();
            }
            if req.path == APPS_PATH {
                let body = d.lock().expect("doc").clone();
                return Reply::Delayed(apps_delay, Box::new(Reply::Json(200, body)));
            }
            match versions.iter().find(|(p, _)| *p == req.path) {
                Some((_, body)) => Reply::Json(200, body.clone()),
                None => Reply::Json(404, r#"{"message":"not found"}"#.into()),
            }
        })
        .await;
        Fake {
            server,
            hub,
            apps: doc,
        }
    }

    fn app(version: &str, groups: &str, tasks: &[String]) -> String {
        format!(
            r#"{{"id":"/web","version":"{version}","ipAddress":{{"groups":[{groups}]}},"tasks":[{}]}}"#,
            tasks.join(",")
        )
    }

    fn apps_doc(apps: &[String]) -> String {
        format!(r#"{{"apps":[{}]}}"#, apps.join(","))
    }

    fn task(id: &str, ip: &str, version: &str) -> String {
        format!(
            r#"{{"id":"{id}","appId":"/web","host":"10.0.0.1","state":"TASK_RUNNING","version":"{version}","ipAddresses":[{{"ipAddress":"{ip}","protocol":"IPv4"}}]}}"#
        )
    }

    async fn read_doc(doc: String, versions: VersionCache) -> Result<ReadApps, String> {
        let (feed, parser) =
            crate::source::pipe::spawn(move |r| read_apps(r, &GroupsConfig::default(), versions));
        for piece in doc.as_bytes().chunks(5) {
            if feed.send(piece).await.is_err() {
                break;
            }
        }
        drop(feed);
        crate::source::pipe::join(parser).await.expect("parser")
    }

    #[tokio::test]
    async fn apps_are_converted_as_read_and_only_those_waiting_for_a_version_keep_tasks() {
        let v1 = "2017-01-01T00:00:00.000Z";
        let v2 = "2017-02-01T00:00:00.000Z";
        let current = app(v2, r#""g2""#, &[task("t-new", "10.233.0.2", v2)]);
        let rolling = app(
            v2,
            r#""g2""#,
            &[task("t-a", "10.233.0.3", v2), task("t-b", "10.233.0.4", v1)],
        )
        .replace("/web", "/rolling");
        let read = read_doc(apps_doc(&[current, rolling]), VersionCache::default())
            .await
            .expect("a document");
        let ids = |apps: &[App]| apps.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&read.apps), vec!["/web"]);
        assert!(read.apps.iter().all(|a| a.tasks.is_none()), "tasks dropped");
        assert_eq!(ids(&read.deferred), vec!["/rolling"]);
        assert_eq!(read.view.tasks.len(), 3);
        // Waiting for v1: ungrouped until it is fetched and converted again.
        assert!(read.view.tasks["t-b"].groups.is_empty());
        assert!(read.view.tasks["t-a"].groups.contains_key("g2"));
        assert_eq!(
            unknown_versions(&read.deferred, &read.versions),
            vec![("/rolling".to_string(), v1.to_string())]
        );
        // A task-less app refuses the document.
        let bare = apps_doc(&[r#"{"id":"/bare","version":"x"}"#.to_string()]);
        let why = read_doc(bare, VersionCache::default())
            .await
            .err()
            .unwrap_or_default();
        assert!(why.contains("ignored embed=apps.tasks"), "{why}");
    }

    fn status(id: &str, state: &str, ip: Option<&str>, version: &str) -> String {
        let ips = ip
            .map(|ip| format!(r#","ipAddresses":[{{"ipAddress":"{ip}","protocol":"IPv4"}}]"#))
            .unwrap_or_default();
        format!(
            "event: status_update_event\r\ndata: {{\"eventType\":\"status_update_event\",\"taskId\":\"{id}\",\"taskStatus\":\"{state}\",\"appId\":\"/web\",\"host\":\"10.0.0.1\",\"slaveId\":\"S1\",\"version\":\"{version}\"{ips}}}\r\n\r\n"
        )
    }

    fn one_app_one_task() -> String {
        apps_doc(&[app(V1, r#""web""#, &[task("web.1", "10.233.0.1", V1)])])
    }

    fn config(urls: Vec<String>) -> SourceConfig {
        SourceConfig {
            kind: SourceKind::Marathon,
            urls,
            path: None,
            resync_interval: Duration::from_secs(300),
            username: None,
            password_file: None,
            token_file: None,
            ca_file: None,
            tls_verify: true,
            prefix: "/groupd/v1".into(),
            cert_file: None,
            key_file: None,
        }
    }

    fn fast() -> Tuning {
        Tuning {
            timeouts: Timeouts {
                connect: Duration::from_millis(500),
                // Shorter than the stall: a snapshot failure must not race
                // the stream's stall timer in the tests that expect it.
                headers: Duration::from_millis(300),
                body: Duration::from_millis(300),
                stall: Duration::from_millis(500),
                max_body: 1024 * 1024,
            },
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(80),
            hint_delay: Duration::from_millis(20),
            hint_min_gap: Duration::from_millis(50),
            max_buffered: 1000,
            version_fetches: 2,
            max_event: 4096,
        }
    }

    fn start(cfg: SourceConfig) -> mpsc::Receiver<SourceUpdate> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(run_with(cfg, GroupsConfig::default(), tx, fast()));
        rx
    }

    async fn next(rx: &mut mpsc::Receiver<SourceUpdate>) -> SourceUpdate {
        tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .expect("an update in time")
            .expect("the source is running")
    }

    async fn snapshot(rx: &mut mpsc::Receiver<SourceUpdate>) -> ClusterView {
        match next(rx).await {
            SourceUpdate::Snapshot(view) => view,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    async fn degraded(rx: &mut mpsc::Receiver<SourceUpdate>) -> String {
        match next(rx).await {
            SourceUpdate::Degraded(reason) => reason,
            other => panic!("expected degraded, got {other:?}"),
        }
    }

    async fn silence(rx: &mut mpsc::Receiver<SourceUpdate>, for_: Duration) {
        if let Ok(Some(update)) = tokio::time::timeout(for_, rx.recv()).await {
            panic!("expected nothing, got {update:?}");
        }
    }

    fn groups_of(view: &ClusterView, id: &str) -> Vec<String> {
        view.tasks[id]
            .groups
            .keys()
            .map(|g| g.to_string())
            .collect()
    }

    #[tokio::test]
    async fn snapshot_then_events_upsert_and_remove() {
        let m = fake_marathon(one_app_one_task(), vec![]).await;
        let mut rx = start(config(vec![m.server.base.clone()]));
        let view = snapshot(&mut rx).await;
        assert!(view.tasks["web.1"].is_endpoint());
        assert_eq!(groups_of(&view, "web.1"), ["web"]);

        m.hub.push(&status("web.2", "TASK_STAGING", None, V1));
        match next(&mut rx).await {
            SourceUpdate::Upsert(t) => {
                assert_eq!(&*t.id, "web.2");
                assert!(
                    t.ips.is_empty() && !t.is_endpoint(),
                    "staging binds nothing"
                );
            }
            other => panic!("{other:?}"),
        }
        m.hub
            .push(&status("web.2", "TASK_RUNNING", Some("10.233.0.2"), V1));
        match next(&mut rx).await {
            SourceUpdate::Upsert(t) => {
                assert!(t.is_endpoint(), "{t:?}");
                assert!(t.groups.contains_key("web"));
            }
            other => panic!("{other:?}"),
        }
        // A later status without IPs keeps them (health update, killing).
        m.hub.push(&status("web.2", "TASK_KILLING", None, V1));
        match next(&mut rx).await {
            SourceUpdate::Upsert(t) => assert_eq!(t.ips.len(), 1, "{t:?}"),
            other => panic!("{other:?}"),
        }
        m.hub.push(&status("web.2", "TASK_KILLED", None, V1));
        assert!(matches!(next(&mut rx).await, SourceUpdate::Remove(id) if id == "web.2"));

        let events = m.server.requests("/v2/events");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].path, EVENTS_FILTERED_PATH);
        assert_eq!(events[0].header("accept"), Some("text/event-stream"));
        let apps = m.server.requests("/v2/apps");
        assert_eq!(apps[0].header("accept"), Some("application/json"));
    }

    #[tokio::test]
    async fn ip_taken_over_by_a_new_task_moves_in_one_snapshot() {
        let m = fake_marathon(one_app_one_task(), vec![]).await;
        let mut rx = start(config(vec![m.server.base.clone()]));
        snapshot(&mut rx).await;
        // The newcomer reports the IP before the old task's end arrives.
        m.hub
            .push(&status("web.9", "TASK_RUNNING", Some("10.233.0.1"), V1));
        assert!(matches!(next(&mut rx).await, SourceUpdate::Upsert(t) if &*t.id == "web.9"));
        m.hub.push(&status("web.1", "TASK_FAILED", None, V1));
        let view = snapshot(&mut rx).await;
        assert!(!view.tasks.contains_key("web.1"));
        assert!(view.tasks["web.9"].is_endpoint());
        assert!(view.conflicts.is_empty());
    }

    #[tokio::test]
    async fn app_terminated_removes_its_tasks_in_one_snapshot() {
        let doc = apps_doc(&[
            app(V1, r#""web""#, &[task("web.1", "10.233.0.1", V1), task("web.2", "10.233.0.2", V1)]),
            r#"{"id":"/db","version":"v","ipAddress":{},"tasks":[{"id":"db.1","appId":"/db","ipAddresses":[{"ipAddress":"10.233.0.3"}]}]}"#.to_string(),
        ]);
        let m = fake_marathon(doc, vec![]).await;
        let mut rx = start(config(vec![m.server.base.clone()]));
        assert_eq!(snapshot(&mut rx).await.tasks.len(), 3);
        m.hub.push("event: app_terminated_event\r\ndata: {\"eventType\":\"app_terminated_event\",\"appId\":\"/web\"}\r\n\r\n");
        let view = snapshot(&mut rx).await;
        assert_eq!(
            view.tasks.keys().map(|k| &**k).collect::<Vec<_>>(),
            ["db.1"]
        );
    }

    #[tokio::test]
    async fn stream_drop_reconnects_and_resyncs() {
        let m = fake_marathon(one_app_one_task(), vec![]).await;
        let mut rx = start(config(vec![m.server.base.clone()]));
        snapshot(&mut rx).await;
        *m.apps.lock().expect("doc") = apps_doc(&[app(
            V1,
            r#""web""#,
            &[
                task("web.1", "10.233.0.1", V1),
                task("web.2", "10.233.0.2", V1),
            ],
        )]);
        m.hub.drop_streams();
        let reason = degraded(&mut rx).await;
        assert!(reason.contains("event stream ended"), "{reason}");
        assert!(
            reason.contains(&m.server.base) && reason.contains("retrying in"),
            "{reason}"
        );
        let view = snapshot(&mut rx).await;
        assert_eq!(view.tasks.len(), 2);
        assert_eq!(m.server.requests("/v2/events").len(), 2);
    }

    #[tokio::test]
    async fn stalled_stream_reconnects_and_resyncs() {
        let m = fake_marathon(one_app_one_task(), vec![]).await;
        let mut rx = start(config(vec![m.server.base.clone()]));
        snapshot(&mut rx).await;
        // Bytes without a line end do not count as life.
        m.hub.push(": x");
        let reason = degraded(&mut rx).await;
        assert!(
            reason.contains("no data for 0.5 s (stream stalled)"),
            "{reason}"
        );
        snapshot(&mut rx).await;
    }

    #[tokio::test]
    async fn an_oversized_event_is_refused_and_the_source_resyncs() {
        let m = fake_marathon(one_app_one_task(), vec![]).await;
        let mut rx = start(config(vec![m.server.base.clone()]));
        snapshot(&mut rx).await;
        // A data line over `fast().max_event` (4096 bytes): never buffered
        // further.
        let huge = format!(
            "event: status_update_event\r\ndata: {{\"x\":\"{}\"}}\r\n\r\n",
            "y".repeat(5000)
        );
        m.hub.push(&huge);
        let reason = degraded(&mut rx).await;
        assert!(
            reason.contains("longer than 4096 bytes") && reason.contains("reconnects"),
            "{reason}"
        );
        snapshot(&mut rx).await;
    }

    #[tokio::test]
    async fn events_during_the_snapshot_are_folded_into_it() {
        let m = fake_with(one_app_one_task(), vec![], Duration::from_millis(150)).await;
        let mut rx = start(config(vec![m.server.base.clone()]));
        // Wait until the snapshot request is in flight, then send an event.
        while m.server.requests(APPS_PATH).is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        m.hub
            .push(&status("web.2", "TASK_RUNNING", Some("10.233.0.2"), V1));
        let view = snapshot(&mut rx).await;
        assert!(view.tasks["web.2"].is_endpoint(), "{view:?}");
        silence(&mut rx, Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn tasks_keep_the_groups_of_their_launching_version() {
        let old = format!(r#"{{"id":"/web","version":"{V1}","ipAddress":{{"groups":["old"]}}}}"#);
        let doc = apps_doc(&[app(
            V2,
            r#""new""#,
            &[
                task("web.1", "10.233.0.1", V1),
                task("web.2", "10.233.0.2", V2),
            ],
        )]);
        let m = fake_marathon(doc, vec![(version_path("/web", V1), old)]).await;
        let mut rx = start(config(vec![m.server.base.clone()]));
        let view = snapshot(&mut rx).await;
        assert_eq!(groups_of(&view, "web.1"), ["old"]);
        assert_eq!(groups_of(&view, "web.2"), ["new"]);
        assert_eq!(m.server.requests("/v2/apps/web/versions/").len(), 1);

        // An event of the old version needs no fetch any more.
        m.hub
            .push(&status("web.3", "TASK_RUNNING", Some("10.233.0.3"), V1));
        match next(&mut rx).await {
            SourceUpdate::Upsert(t) => assert!(t.groups.contains_key("old"), "{t:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.server.requests("/v2/apps/web/versions/").len(), 1);
        // A version the master no longer has: ungrouped, with a note.
        m.hub
            .push(&status("web.4", "TASK_RUNNING", Some("10.233.0.4"), V0));
        match next(&mut rx).await {
            SourceUpdate::Upsert(t) => {
                assert!(t.groups.is_empty(), "{t:?}");
                assert!(t.note.unwrap_or_default().contains("unknown"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn api_post_teaches_a_new_apps_definition() {
        let m = fake_marathon(apps_doc(&[]), vec![]).await;
        let mut rx = start(config(vec![m.server.base.clone()]));
        assert!(snapshot(&mut rx).await.tasks.is_empty());
        let def = format!(
            r#"{{"id":"/web","version":"{V1}","labels":{{"network-groups":"a,b"}},"networks":[{{"mode":"container","name":"n"}}]}}"#
        );
        m.hub.push(&format!("event: api_post_event\r\ndata: {{\"eventType\":\"api_post_event\",\"appDefinition\":{def}}}\r\n\r\n"));
        m.hub
            .push(&status("web.1", "TASK_RUNNING", Some("10.233.0.1"), V1));
        match next(&mut rx).await {
            SourceUpdate::Upsert(t) => {
                assert_eq!(t.groups.keys().collect::<Vec<_>>(), ["a", "b"]);
                assert!(t.is_endpoint());
            }
            other => panic!("{other:?}"),
        }
        assert!(m.server.requests("/v2/apps/web/versions/").is_empty());
    }

    #[tokio::test]
    async fn deployment_success_and_resync_interval_resync() {
        let m = fake_marathon(one_app_one_task(), vec![]).await;
        let mut cfg = config(vec![m.server.base.clone()]);
        cfg.resync_interval = Duration::from_millis(300);
        let mut rx = start(cfg);
        snapshot(&mut rx).await;
        snapshot(&mut rx).await; // resync_interval
        m.hub.push("event: deployment_success\r\ndata: {\"eventType\":\"deployment_success\",\"id\":\"d\"}\r\n\r\n");
        let started = Instant::now();
        snapshot(&mut rx).await;
        assert!(started.elapsed() < Duration::from_millis(250));
        assert_eq!(m.server.requests("/v2/events").len(), 1, "no reconnect");
    }

    #[tokio::test]
    async fn unfiltered_stream_when_filters_are_refused() {
        let hub = Hub::default();
        let h = hub.clone();
        let server = serve(move |req| {
            if req.path == EVENTS_FILTERED_PATH {
                Reply::Json(400, r#"{"message":"unknown event type"}"#.into())
            } else if req.path == EVENTS_PATH {
                h.attach()
            } else if req.path.starts_with("/v2/pods") {
                Reply::Json(404, r#"{"message":"not found"}"#.into())
            } else {
                Reply::Json(200, one_app_one_task())
            }
        })
        .await;
        let mut rx = start(config(vec![server.base.clone()]));
        snapshot(&mut rx).await;
        let paths: Vec<String> = server
            .requests("/v2/events")
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(paths, [EVENTS_FILTERED_PATH, EVENTS_PATH]);
    }

    #[tokio::test]
    async fn a_503_master_hands_over_to_the_next_url() {
        let down = serve(|_| Reply::Json(503, "{}".into())).await;
        let m = fake_marathon(one_app_one_task(), vec![]).await;
        let mut rx = start(config(vec![down.base.clone(), m.server.base.clone()]));
        snapshot(&mut rx).await;
        assert_eq!(down.requests("/v2/events").len(), 1);
        // Remembered: the snapshot went straight to the working master.
        assert!(down.requests(APPS_PATH).is_empty());
        assert_eq!(m.server.requests(APPS_PATH).len(), 1);
    }

    #[tokio::test]
    async fn only_failing_masters_are_reported_once() {
        let down = serve(|_| Reply::Json(503, "{}".into())).await;
        let mut rx = start(config(vec![down.base.clone()]));
        let reason = degraded(&mut rx).await;
        assert!(reason.contains("503 Service Unavailable"), "{reason}");
        silence(&mut rx, Duration::from_millis(300)).await;
        assert!(down.requests("/").len() > 2, "kept retrying");
    }

    #[tokio::test]
    async fn protocol_relative_redirect_is_followed() {
        let m = fake_marathon(one_app_one_task(), vec![]).await;
        let port = m.server.port;
        let standby =
            serve(move |req| Reply::Redirect(format!("//127.0.0.1:{port}{}", req.path))).await;
        let mut rx = start(config(vec![standby.base.clone()]));
        snapshot(&mut rx).await;
        m.hub.push(&status("web.1", "TASK_KILLED", None, V1));
        assert!(matches!(next(&mut rx).await, SourceUpdate::Remove(_)));
        assert_eq!(m.server.requests("/v2/events").len(), 1);
    }

    #[tokio::test]
    async fn redirect_loop_is_named_and_fails_over() {
        let looping = serve(|req| Reply::Redirect(req.path.clone())).await;
        let mut rx = start(config(vec![looping.base.clone()]));
        let reason = degraded(&mut rx).await;
        assert!(reason.contains("redirect loop"), "{reason}");

        let m = fake_marathon(one_app_one_task(), vec![]).await;
        let mut rx = start(config(vec![looping.base.clone(), m.server.base.clone()]));
        snapshot(&mut rx).await;
    }

    fn secret_file(name: &str, contents: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "groupd-marathon-unit-{name}-{}",
            std::process::id()
        ));
        std::fs::write(&path, contents).expect("write");
        path
    }

    #[tokio::test]
    async fn refused_credentials_are_degraded_without_the_password() {
        let server =
            serve(|_| Reply::Json(401, r#"{"message":"Invalid username or password."}"#.into()))
                .await;
        let mut cfg = config(vec![format!(
            "http://ops:url-secret@127.0.0.1:{}",
            server.port
        )]);
        cfg.username = Some("ops".into());
        let pw = secret_file("pw", "hunter2-secret\n");
        cfg.password_file = Some(pw.clone());
        let mut rx = start(cfg);
        let reason = degraded(&mut rx).await;
        assert!(reason.contains("401 Unauthorized"), "{reason}");
        assert!(reason.contains("password_file"), "{reason}");
        assert!(
            !reason.contains("hunter2") && !reason.contains("url-secret"),
            "{reason}"
        );
        silence(&mut rx, Duration::from_millis(200)).await;
        let req = &server.requests("/v2/events")[0];
        assert!(req
            .header("authorization")
            .is_some_and(|a| a.starts_with("Basic ")));
        let _ = std::fs::remove_file(pw);
    }

    #[tokio::test]
    async fn dcos_token_is_sent() {
        let m = fake_marathon(one_app_one_task(), vec![]).await;
        let port = m.server.port;
        // A gate in front of the fake: only the right token passes.
        let gate = serve(move |req| {
            if req.header("authorization") == Some("token=tok-123") {
                Reply::Redirect(format!("http://127.0.0.1:{port}{}", req.path))
            } else {
                Reply::Json(401, "{}".into())
            }
        })
        .await;
        let mut cfg = config(vec![gate.base.clone()]);
        let token = secret_file("token", "tok-123\n");
        cfg.token_file = Some(token.clone());
        let mut rx = start(cfg);
        snapshot(&mut rx).await;
        let _ = std::fs::remove_file(token);
    }

    /// Each body: degraded with `expect` in the reason, and never a snapshot.
    #[tokio::test]
    async fn broken_snapshots_are_never_sent() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{\"apps\":[{\"id\":".to_vec(),
                "truncated response",
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"apps\":[{\"id\":\"/web\",\"tasks\":[".to_vec(),
                "truncated JSON",
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n<html>bad gateway</html>".to_vec(),
                "not JSON",
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"message\":\"hi\"}".to_vec(),
                "not a Marathon /v2/apps document",
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"apps\":[{\"id\":\"/web\"}]}".to_vec(),
                "ignored embed=apps.tasks",
            ),
            (b"garbage\r\n\r\n".to_vec(), "request failed"),
        ];
        for (body, expect) in cases {
            let hub = Hub::default();
            let h = hub.clone();
            let server = serve(move |req| {
                if req.path.starts_with("/v2/events") {
                    h.attach()
                } else {
                    Reply::Raw(body.clone())
                }
            })
            .await;
            let mut rx = start(config(vec![server.base.clone()]));
            let reason = degraded(&mut rx).await;
            assert!(reason.contains(expect), "{expect}: {reason}");
            silence(&mut rx, Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn hanging_and_trickling_masters_time_out() {
        for (reply, expect) in [
            (0, "no response within 0.3 s"),
            (1, "body not complete within 0.3 s"),
        ] {
            let hub = Hub::default();
            let h = hub.clone();
            let server = serve(move |req| {
                if req.path.starts_with("/v2/events") {
                    h.attach()
                } else if reply == 0 {
                    Reply::Hang
                } else {
                    Reply::Trickle(one_app_one_task(), Duration::from_millis(20))
                }
            })
            .await;
            let mut rx = start(config(vec![server.base.clone()]));
            let reason = degraded(&mut rx).await;
            assert!(reason.contains(expect), "{reason}");
        }
    }

    #[tokio::test]
    async fn a_pod_container_status_without_app_id_re_reads_its_pod() {
        let def = r#"{"id":"/p","version":"v1","networks":[{"mode":"container","labels":{"network-groups":"g"}}]}"#;
        let instance = r#"{"id":"p.instance-1","status":"STABLE","networks":[{"addresses":["10.233.0.7"]}],
            "containers":[{"name":"app","status":"TASK_RUNNING"},{"name":"log","status":"TASK_RUNNING"}],
            "specReference":"/v2/pods/p::versions/v1"}"#;
        let status = format!(r#"{{"id":"/p","spec":{def},"instances":[{instance}]}}"#);
        let m = fake_marathon(
            apps_doc(&[]),
            vec![
                (PODS_PATH.to_string(), format!("[{def}]")),
                (PODS_STATUS_PATH.to_string(), format!("[{status}]")),
                ("/v2/pods/p::status".to_string(), status.clone()),
            ],
        )
        .await;
        let mut rx = start(config(vec![m.server.base.clone()]));
        let view = snapshot(&mut rx).await;
        assert_eq!(groups_of(&view, "p.instance-1"), ["g"]);
        assert!(view.tasks["p.instance-1"].is_endpoint());
        m.hub.push("event: status_update_event\r\ndata: {\"eventType\":\"status_update_event\",\"taskId\":\"p.instance-1.log\",\"taskStatus\":\"TASK_FINISHED\"}\r\n\r\n");
        // Same status as before: re-read, nothing changed, nothing sent.
        silence(&mut rx, Duration::from_millis(200)).await;
        assert_eq!(m.server.requests("/v2/pods/p::status").len(), 1);
        // An app status without appId still only asks for a resync.
        assert!(m.server.requests("/v2/apps/").is_empty());
    }

    #[tokio::test]
    async fn pod_instances_keep_the_groups_of_their_launching_version() {
        let def = |v: &str, g: &str| {
            format!(
                r#"{{"id":"/p","version":"{v}","networks":[{{"mode":"container","labels":{{"network-groups":"{g}"}}}}]}}"#
            )
        };
        let instance = |id: &str, ip: &str, v: &str| {
            format!(
                r#"{{"id":"{id}","status":"STABLE","networks":[{{"addresses":["{ip}"]}}],
                "containers":[{{"name":"app","status":"TASK_RUNNING"}}],"specReference":"/v2/pods/p::versions/{v}"}}"#
            )
        };
        let status = format!(
            r#"{{"id":"/p","spec":{},"instances":[{},{},{}]}}"#,
            def(V2, "new"),
            instance("p.instance-1", "10.233.0.1", V1),
            instance("p.instance-2", "10.233.0.2", V2),
            instance("p.instance-0", "10.233.0.3", V0),
        );
        let m = fake_marathon(
            apps_doc(&[]),
            vec![
                (PODS_PATH.to_string(), format!("[{}]", def(V2, "new"))),
                (PODS_STATUS_PATH.to_string(), format!("[{status}]")),
                (format!("/v2/pods/p::versions/{V1}"), def(V1, "old")),
            ],
        )
        .await;
        let mut rx = start(config(vec![m.server.base.clone()]));
        let view = snapshot(&mut rx).await;
        assert_eq!(groups_of(&view, "p.instance-1"), ["old"]);
        assert_eq!(groups_of(&view, "p.instance-2"), ["new"]);
        // A version the master no longer has: ungrouped, with a note.
        assert!(view.tasks["p.instance-0"].groups.is_empty());
        assert!(view.tasks["p.instance-0"]
            .note
            .as_deref()
            .unwrap_or("")
            .contains(V0));
        assert_eq!(m.server.requests("/v2/pods/p::versions/").len(), 2);
    }

    #[test]
    fn version_paths_are_encoded() {
        assert_eq!(
            version_path("/prod/web", "2017-07-19T17:34:41.967Z"),
            "/v2/apps/prod/web/versions/2017-07-19T17:34:41.967Z"
        );
        assert_eq!(version_path("/a b", "v?1"), "/v2/apps/a%20b/versions/v%3F1");
    }
}
