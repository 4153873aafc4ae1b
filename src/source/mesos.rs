//! `[source] kind = "mesos"`: the v1 operator API event stream
//! (`POST /api/v1 {"type":"SUBSCRIBE"}`, RecordIO-framed JSON), with
//! `GET /master/state` polling for masters without it (design §2,
//! FORMATS.md §4, §5, §7, §8).
//!
//! One *session* is one SUBSCRIBE connection. Its first record must be
//! `SUBSCRIBED`, whose `get_state` is the whole cluster: it becomes ONE
//! [`SourceUpdate::Snapshot`] that replaces everything the daemon knew, on
//! the first connection and on every reconnect alike (Mesos has no replay;
//! it re-sends the snapshot instead, §8.11). Events follow, in order:
//! * `TASK_ADDED` -> the task is kept (raw, for later updates) and upserted.
//!   After a master failover tasks re-appear this way, possibly already
//!   terminal (§8.12): a terminal one is removed, not upserted.
//! * `TASK_UPDATED` -> the update is applied to the kept task the way the
//!   master applies it ([`MesosTask::apply_update`]; groups come from the
//!   TaskInfo, IPs from the newest status that has any, §8.2–§8.4) and the
//!   task upserted, or removed when the new state is terminal. An update
//!   for a task never added (filtered out by ACLs) is ignored.
//! * `AGENT_REMOVED` -> nothing. The event does not list the agent's tasks
//!   (§8.12); each of them gets its own `TASK_UPDATED` (LOST, GONE,
//!   UNREACHABLE…) or comes back with the agent. Guessing from `agent_id`
//!   would tear down rules of tasks that are merely partitioned.
//! * `AGENT_ADDED`, `FRAMEWORK_ADDED`/`_UPDATED` -> the agent's IPs and the
//!   framework's name are learnt for tasks converted later.
//! * `FRAMEWORK_REMOVED` -> every task of that framework goes, in one
//!   snapshot (one transaction).
//! * `HEARTBEAT` -> only liveness. The stream is dead after
//!   [`Tuning::heartbeat_misses`] heartbeat intervals without a complete
//!   record; the session then ends and a new one re-subscribes.
//!
//! A master that answers `/api/v1` with 404, 405 or 501 predates the
//! operator API: the session polls `/master/state` every `resync_interval`
//! instead, each document becoming one `Snapshot`. Every new session tries
//! the operator API again, so an upgraded master is picked up.
//!
//! Failures (unreachable, 5xx, 401, garbage, a truncated or oversized
//! record, silence) end the session exactly like the Marathon source:
//! [`SourceUpdate::Degraded`] once per distinct reason, backoff with jitter,
//! a new session; the last applied rules stay (fail-static). A snapshot is
//! sent only when its whole record was framed and parsed.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc::Sender;
use tokio::time::Instant;

use super::document::{parse_document_kind, DocumentKind};
use super::http::{secs, Backoff, ByteStream, HttpError, MasterClient, MasterSettings, Timeouts};
use super::recordio::{RecordIoError, RecordIoParser, DEFAULT_MAX_RECORD};
use super::wire::marathon::VersionCache;
use super::wire::mesos::{
    convert_task, view_from_get_state, AgentEntry, Context, FrameworkEntry, FrameworkInfo,
    GetState, MesosTask, TaskAdded, TaskUpdated,
};
use super::SourceUpdate;
use crate::config::{GroupsConfig, SourceConfig};
use crate::model::{ClusterView, TaskState};

/// The operator API endpoint.
pub const API_PATH: &str = "/api/v1";
/// The fallback document for masters without the operator API.
pub const STATE_PATH: &str = "/master/state";
const SUBSCRIBE: &[u8] = br#"{"type":"SUBSCRIBE"}"#;
const JSON: &str = "application/json";
/// What every capture announces; used until `SUBSCRIBED` says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Timing knobs; the defaults are for production, tests shrink them.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub timeouts: Timeouts,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Heartbeat intervals without a record before the stream counts as dead.
    pub heartbeat_misses: u32,
    /// Replaces `heartbeat_misses` × the announced interval (tests).
    pub silence: Option<Duration>,
    /// Largest record accepted (a SUBSCRIBED snapshot of a big cluster).
    pub max_record: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            timeouts: Timeouts::default(),
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(30),
            heartbeat_misses: 3,
            silence: None,
            max_record: DEFAULT_MAX_RECORD,
        }
    }
}

impl Tuning {
    /// How long the stream may be silent, given the announced interval.
    fn silence_for(&self, heartbeat: Duration) -> Duration {
        self.silence
            .unwrap_or_else(|| heartbeat.saturating_mul(self.heartbeat_misses.max(1)))
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
    tracing::info!(urls = ?cfg.urls.iter().map(|u| super::http::redact_url(u)).collect::<Vec<_>>(), "mesos source: starting");
    if !cfg.tls_verify {
        tracing::warn!("mesos source: source.tls_verify = false: the masters' TLS certificates are NOT checked");
    }
    Source::new(&cfg, groups, tx, tuning).run().await;
    tracing::debug!("mesos source: receiver gone, stopping");
}

// ---------------------------------------------------------------------------
// Events

/// One v1 event, as far as groupd cares. Sections of other types are
/// skipped unparsed; key order does not matter (1.9 writes `type` last).
#[derive(Debug, Default, Deserialize)]
struct Event {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    subscribed: Option<SubscribedEvent>,
    #[serde(default)]
    task_added: Option<TaskAdded>,
    #[serde(default)]
    task_updated: Option<TaskUpdated>,
    #[serde(default)]
    agent_added: Option<AgentAdded>,
    #[serde(default)]
    framework_added: Option<FrameworkChanged>,
    #[serde(default)]
    framework_updated: Option<FrameworkChanged>,
    #[serde(default)]
    framework_removed: Option<FrameworkRemoved>,
}

#[derive(Debug, Default, Deserialize)]
struct SubscribedEvent {
    /// Absent would mean a scheduler-API SUBSCRIBED: not a snapshot.
    #[serde(default)]
    get_state: Option<GetState>,
    #[serde(default)]
    heartbeat_interval_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct AgentAdded {
    #[serde(default)]
    agent: Option<AgentEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct FrameworkChanged {
    #[serde(default)]
    framework: Option<FrameworkEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct FrameworkRemoved {
    #[serde(default)]
    framework_info: Option<FrameworkInfo>,
}

fn parse_event(record: &[u8]) -> Result<Event, String> {
    serde_json::from_slice(record).map_err(|e| {
        let start = String::from_utf8_lossy(&record[..record.len().min(40)]).to_string();
        format!("record is not a v1 event ({e}); it starts with {start:?}")
    })
}

/// `heartbeat_interval_seconds` as a duration, when it is a sane one.
fn heartbeat_interval(seconds: Option<f64>) -> Duration {
    seconds
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 3600.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_HEARTBEAT)
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
    #[error("{url}: SUBSCRIBE stream ended (master restarted, lost leadership or dropped the connection)")]
    StreamEnded { url: String },
    #[error("{url}: SUBSCRIBE stream broken: {source}")]
    Framing { url: String, source: RecordIoError },
    #[error("{url}: unreadable event: {detail}")]
    BadEvent { url: String, detail: String },
    #[error("{url}: no event or heartbeat for {} (stream silent); re-subscribing", secs(*.after))]
    Silent { url: String, after: Duration },
    /// The daemon stopped listening.
    #[error("the daemon stopped")]
    Closed,
}

impl Failure {
    fn is_auth(&self) -> bool {
        matches!(self, Failure::Http(e) if e.is_auth())
    }

    /// The master answered but its stream misbehaved: start with another
    /// master next time.
    fn blames_the_stream(&self) -> bool {
        matches!(
            self,
            Failure::Silent { .. }
                | Failure::Framing { .. }
                | Failure::BadEvent { .. }
                | Failure::Garbage { .. }
        )
    }
}

/// 404/405/501 on `/api/v1`: a master older than the operator API (< 1.0).
fn lacks_operator_api(e: &HttpError) -> bool {
    matches!(e.status(), Some(404 | 405 | 501))
}

// ---------------------------------------------------------------------------
// The record reader

/// Records from an open SUBSCRIBE response. The stream is dead when no
/// complete record arrives within `silence`, so a trickle of bytes that
/// never completes one does not keep it alive.
struct RecordReader {
    stream: ByteStream,
    parser: RecordIoParser,
    queue: VecDeque<Vec<u8>>,
    silence: Duration,
}

impl RecordReader {
    fn new(stream: ByteStream, max_record: usize, silence: Duration) -> RecordReader {
        RecordReader {
            stream,
            parser: RecordIoParser::new(max_record),
            queue: VecDeque::new(),
            silence,
        }
    }

    fn url(&self) -> String {
        self.stream.url().to_string()
    }

    /// The next record. Cancel-safe: state lives in `self`, and the only
    /// await is the cancel-safe chunk read.
    async fn next(&mut self) -> Result<Vec<u8>, Failure> {
        let mut deadline = Instant::now() + self.silence;
        loop {
            if let Some(record) = self.queue.pop_front() {
                return Ok(record);
            }
            let before = self.parser.records();
            let chunk = match self.stream.next_chunk(deadline, self.silence).await {
                Ok(chunk) => chunk,
                Err(HttpError::Stalled { after, .. }) => {
                    return Err(Failure::Silent {
                        url: self.url(),
                        after,
                    })
                }
                Err(e) => return Err(e.into()),
            };
            let Some(chunk) = chunk else {
                return Err(self.ended());
            };
            let records = self
                .parser
                .feed(chunk.as_ref())
                .map_err(|source| Failure::Framing {
                    url: self.url(),
                    source,
                })?;
            self.queue.extend(records);
            // Empty records count as liveness too.
            if self.parser.records() > before {
                deadline = Instant::now() + self.silence;
            }
        }
    }

    /// The end of the body: clean between records, broken inside one.
    fn ended(&self) -> Failure {
        match self.parser.finish() {
            Ok(()) => Failure::StreamEnded { url: self.url() },
            Err(source) => Failure::Framing {
                url: self.url(),
                source,
            },
        }
    }
}

// ---------------------------------------------------------------------------
// The source

/// What one event changes, for the daemon.
#[derive(Debug)]
enum Change {
    None,
    Upsert(crate::model::Task),
    Remove(String),
    /// Several tasks at once: send the whole view (one transaction).
    Whole,
}

struct Source {
    settings: MasterSettings,
    groups: GroupsConfig,
    tuning: Tuning,
    resync_every: Duration,
    tx: Sender<SourceUpdate>,
    /// Built lazily, rebuilt after refused credentials (a rotated password
    /// or token file is read again).
    client: Option<std::sync::Arc<MasterClient>>,
    /// Live tasks as the master sent them, for `TASK_UPDATED`.
    tasks: HashMap<String, MesosTask>,
    /// Framework names and agent IPs for converting tasks.
    ctx: Context,
    /// What the daemon was told: the last snapshot plus the events since.
    view: ClusterView,
    backoff: Backoff,
    /// The last reason reported as degraded (without the retry delay).
    reported: Option<String>,
    /// The polling fallback was announced (once, not every session).
    polling_announced: bool,
}

impl Source {
    fn new(
        cfg: &SourceConfig,
        groups: GroupsConfig,
        tx: Sender<SourceUpdate>,
        tuning: Tuning,
    ) -> Source {
        Source {
            settings: MasterSettings::from_source(cfg, tuning.timeouts),
            groups,
            backoff: Backoff::new(tuning.backoff_base, tuning.backoff_cap),
            tuning,
            // Config validation keeps it >= 1 s; a floor guards a hand-made one.
            resync_every: cfg.resync().max(Duration::from_millis(100)),
            tx,
            client: None,
            tasks: HashMap::new(),
            ctx: Context::default(),
            view: ClusterView::default(),
            reported: None,
            polling_announced: false,
        }
    }

    async fn run(mut self) {
        loop {
            let failure = match self.session().await {
                Ok(never) => match never {},
                Err(failure) => failure,
            };
            if matches!(failure, Failure::Closed) {
                return;
            }
            let delay = if failure.is_auth() {
                self.backoff.next_auth_delay()
            } else {
                self.backoff.next_delay()
            };
            if !self.report(&failure, delay).await {
                return;
            }
            if failure.is_auth() {
                self.client = None;
            } else if let (true, Some(client)) = (failure.blames_the_stream(), &self.client) {
                client.demote();
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.tx.closed() => return,
            }
        }
    }

    fn client(&mut self) -> Result<std::sync::Arc<MasterClient>, Failure> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = std::sync::Arc::new(MasterClient::new(&self.settings)?);
        self.client = Some(client.clone());
        Ok(client)
    }

    /// One connection's life. Ends only by failure.
    async fn session(&mut self) -> Result<Infallible, Failure> {
        let client = self.client()?;
        let stream = tokio::select! {
            opened = client.post_stream(API_PATH, JSON, SUBSCRIBE) => opened,
            _ = self.tx.closed() => return Err(Failure::Closed),
        };
        match stream {
            Ok(stream) => self.stream_session(stream).await,
            Err(e) if !e.is_auth() && lacks_operator_api(&e) => {
                self.poll_session(&client, &e).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// SUBSCRIBED first, then events until the stream fails.
    async fn stream_session(&mut self, stream: ByteStream) -> Result<Infallible, Failure> {
        let silence = self.tuning.silence_for(DEFAULT_HEARTBEAT);
        let mut reader = RecordReader::new(stream, self.tuning.max_record, silence);
        tracing::info!(url = %reader.url(), "mesos source: SUBSCRIBE stream open");
        let first = self.next_record(&mut reader).await?;
        self.on_subscribed(&mut reader, &first).await?;
        loop {
            let record = self.next_record(&mut reader).await?;
            let change = self.apply(&reader.url(), &record)?;
            self.send_change(change).await?;
        }
    }

    async fn next_record(&self, reader: &mut RecordReader) -> Result<Vec<u8>, Failure> {
        tokio::select! {
            record = reader.next() => record,
            _ = self.tx.closed() => Err(Failure::Closed),
        }
    }

    /// The first record: the whole cluster, sent as one snapshot.
    async fn on_subscribed(
        &mut self,
        reader: &mut RecordReader,
        record: &[u8],
    ) -> Result<(), Failure> {
        let url = reader.url();
        let bad = |detail: String| Failure::BadEvent {
            url: url.clone(),
            detail,
        };
        let event = parse_event(record).map_err(bad)?;
        let kind = event.kind.as_deref().unwrap_or("(no type)");
        let Some(subscribed) = event.subscribed.filter(|_| kind == "SUBSCRIBED") else {
            return Err(bad(format!(
                "the stream starts with {kind}, not SUBSCRIBED (not a master's operator API?)"
            )));
        };
        let Some(state) = subscribed.get_state else {
            return Err(bad("SUBSCRIBED without get_state (a scheduler API?)".into()));
        };
        let heartbeat = heartbeat_interval(subscribed.heartbeat_interval_seconds);
        reader.silence = self.tuning.silence_for(heartbeat);
        self.install_subscribed(state);
        let view = self.current_view();
        tracing::info!(
            url = %url,
            tasks = view.tasks.len(),
            endpoints = view.endpoints().count(),
            heartbeat = %secs(heartbeat),
            "mesos source: snapshot (SUBSCRIBED)"
        );
        self.send(SourceUpdate::Snapshot(view)).await?;
        self.healthy();
        Ok(())
    }

    /// Replace everything with `state`: the kept tasks, context and view.
    fn install_subscribed(&mut self, state: GetState) {
        self.view = view_from_get_state(&state, &self.groups);
        self.ctx = Context::from_get_state(&state);
        let tasks = state.get_tasks;
        let mut kept = HashMap::new();
        // Same precedence as the view: the first listing of a task wins.
        for task in tasks
            .tasks
            .into_iter()
            .chain(tasks.unreachable_tasks)
            .chain(tasks.orphan_tasks)
        {
            kept.entry(task.id.0.clone()).or_insert(task);
        }
        self.tasks = kept;
    }

    /// Masters without the operator API: `/master/state` every
    /// `resync_interval`, each a whole snapshot.
    async fn poll_session(
        &mut self,
        client: &MasterClient,
        why: &HttpError,
    ) -> Result<Infallible, Failure> {
        if !self.polling_announced {
            tracing::warn!(
                "mesos source: {why}: no v1 operator API (Mesos < 1.0?); polling {STATE_PATH} every {}",
                secs(self.resync_every)
            );
            self.polling_announced = true;
        }
        loop {
            let body = tokio::select! {
                body = client.get(STATE_PATH, JSON) => body?,
                _ = self.tx.closed() => return Err(Failure::Closed),
            };
            let view = parse_master_state(&body.bytes, &self.groups).map_err(|detail| {
                Failure::Garbage {
                    url: body.url.clone(),
                    detail,
                }
            })?;
            tracing::info!(url = %body.url, tasks = view.tasks.len(), "mesos source: snapshot (/master/state)");
            // Events never come in this mode; nothing to keep for them.
            self.tasks.clear();
            self.view = view;
            let view = self.current_view();
            self.send(SourceUpdate::Snapshot(view)).await?;
            self.healthy();
            tokio::select! {
                _ = tokio::time::sleep(self.resync_every) => {}
                _ = self.tx.closed() => return Err(Failure::Closed),
            }
        }
    }

    /// Update the kept state for one event and say what changed.
    fn apply(&mut self, url: &str, record: &[u8]) -> Result<Change, Failure> {
        let bad = |detail: String| Failure::BadEvent {
            url: url.to_string(),
            detail,
        };
        let event = parse_event(record).map_err(bad)?;
        let kind = event.kind.as_deref().unwrap_or("");
        let missing = |section: &str| bad(format!("{kind} without {section}"));
        Ok(match kind {
            "TASK_ADDED" => {
                let added = event.task_added.ok_or_else(|| missing("task_added"))?;
                self.on_task_added(added.task)
            }
            "TASK_UPDATED" => {
                let updated = event.task_updated.ok_or_else(|| missing("task_updated"))?;
                self.on_task_updated(&updated)
            }
            "AGENT_ADDED" => {
                if let Some(agent) = event.agent_added.and_then(|a| a.agent) {
                    if let Some(info) = &agent.agent_info {
                        self.ctx.add_agent(
                            info.id.as_ref(),
                            info.hostname.as_deref(),
                            agent.pid.as_deref(),
                        );
                    }
                }
                Change::None
            }
            "FRAMEWORK_ADDED" | "FRAMEWORK_UPDATED" => {
                let changed = event.framework_added.or(event.framework_updated);
                if let Some(info) = changed
                    .and_then(|c| c.framework)
                    .and_then(|f| f.framework_info)
                {
                    self.ctx
                        .add_framework(info.id.as_ref(), info.name.as_deref());
                }
                Change::None
            }
            "FRAMEWORK_REMOVED" => {
                let info = event.framework_removed.and_then(|f| f.framework_info);
                match info.and_then(|i| i.id) {
                    Some(id) => self.on_framework_removed(&id.0),
                    None => return Err(missing("framework_removed.framework_info.id")),
                }
            }
            // AGENT_REMOVED: see the module documentation. HEARTBEAT: the
            // record itself was the liveness. Anything else: not ours.
            _ => Change::None,
        })
    }

    fn on_task_added(&mut self, task: MesosTask) -> Change {
        let id = task.id.0.clone();
        let converted = convert_task(&task, &self.ctx, &self.groups);
        if converted.state.is_terminal() {
            // Re-announced after a failover, already dead (§8.12).
            self.tasks.remove(&id);
            return self.remove_task(&id);
        }
        self.tasks.insert(id, task);
        self.view.insert(converted.clone());
        Change::Upsert(converted)
    }

    fn on_task_updated(&mut self, update: &TaskUpdated) -> Change {
        let Some(id) = update
            .status
            .as_ref()
            .and_then(|s| s.task_id.as_ref())
            .map(|id| id.0.clone())
        else {
            tracing::debug!("mesos source: TASK_UPDATED without status.task_id ignored");
            return Change::None;
        };
        let Some(task) = self.tasks.get_mut(&id) else {
            // Never added (ACL-filtered, or a terminal one removed already).
            if update
                .state
                .as_deref()
                .is_some_and(|s| TaskState::parse(s).is_terminal())
            {
                return self.remove_task(&id);
            }
            tracing::debug!(task = %id, "mesos source: TASK_UPDATED for an unknown task ignored");
            return Change::None;
        };
        task.apply_update(update);
        let converted = convert_task(task, &self.ctx, &self.groups);
        if converted.state.is_terminal() {
            self.tasks.remove(&id);
            return self.remove_task(&id);
        }
        self.view.insert(converted.clone());
        Change::Upsert(converted)
    }

    fn on_framework_removed(&mut self, framework: &str) -> Change {
        let gone: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.framework_id.as_ref().is_some_and(|f| f.0 == framework))
            .map(|(id, _)| id.clone())
            .collect();
        let before = self.view.tasks.len();
        for id in &gone {
            self.tasks.remove(id);
            self.view.tasks.remove(id);
        }
        if self.view.tasks.len() == before {
            Change::None
        } else {
            Change::Whole
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

    /// A snapshot went out: the next failure is news again.
    fn healthy(&mut self) {
        self.backoff.reset();
        self.reported = None;
    }

    fn current_view(&self) -> ClusterView {
        let mut view = self.view.clone();
        view.conflicts = view.ip_conflicts();
        view
    }

    async fn send_change(&mut self, change: Change) -> Result<(), Failure> {
        match change {
            Change::None => Ok(()),
            Change::Upsert(task) => self.send(SourceUpdate::Upsert(task)).await,
            Change::Remove(id) => self.send(SourceUpdate::Remove(id)).await,
            Change::Whole => {
                let view = self.current_view();
                self.send(SourceUpdate::Snapshot(view)).await
            }
        }
    }

    async fn send(&self, update: SourceUpdate) -> Result<(), Failure> {
        self.tx.send(update).await.map_err(|_| Failure::Closed)
    }

    /// Tell the daemon once per distinct reason; `false` when it is gone.
    async fn report(&mut self, failure: &Failure, delay: Duration) -> bool {
        let text = failure.to_string();
        let base = match &self.client {
            Some(client) => client.scrub(&text),
            None => super::http::redact_url(&text),
        };
        if self.reported.as_deref() == Some(base.as_str()) {
            tracing::debug!("mesos source: still failing: {base}");
            return true;
        }
        let reason = format!("{base}; retrying in {:.1} s", delay.as_secs_f64());
        tracing::warn!("mesos source: {reason}; the last applied rules stay in force");
        self.reported = Some(base);
        self.tx.send(SourceUpdate::Degraded(reason)).await.is_ok()
    }
}

/// A `/master/state` body -> its view, via the document parser; anything
/// but a master state document (a Marathon, an error page) is refused.
fn parse_master_state(bytes: &[u8], groups: &GroupsConfig) -> Result<ClusterView, String> {
    let parsed = parse_document_kind(bytes, groups, &mut VersionCache::default())
        .map_err(|e| e.to_string())?;
    if parsed.kind != DocumentKind::MesosMasterState {
        return Err(format!(
            "{STATE_PATH} answered with a {}, not a master state document",
            parsed.kind
        ));
    }
    Ok(parsed.view)
}
