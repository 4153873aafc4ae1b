//! `[source] kind = "mesos"`: the v1 operator API event stream
//! (`POST /api/v1 {"type":"SUBSCRIBE"}`, RecordIO-framed JSON), with
//! `GET /master/state` polling for masters without it (docs/design.md §2,
//! docs/FORMATS.md §4, §5, §7, §8).
//!
//! One *session* is one SUBSCRIBE connection. Its first record must be
//! `SUBSCRIBED`, whose `get_state` is the whole cluster: it becomes ONE
//! [`SourceUpdate::Snapshot`] that replaces everything the daemon knew, on
//! the first connection and on every reconnect alike (Mesos has no replay;
//! it re-sends the snapshot instead, docs/FORMATS.md §8.11). Events follow, in order:
//! * `TASK_ADDED` -> the task is kept (raw, for later updates) and upserted.
//!   After a master failover tasks re-appear this way, possibly already
//!   terminal (docs/FORMATS.md §8.12): a terminal one is removed, not upserted.
//! * `TASK_UPDATED` -> the update is applied to the kept task the way the
//!   master applies it ([`MesosTask::apply_update`]; groups come from the
//!   TaskInfo, IPs from the newest status that has any, docs/FORMATS.md §8.2–§8.4) and the
//!   task upserted, or removed when the new state is terminal. An update
//!   for a task never added (filtered out by ACLs) is ignored.
//! * `AGENT_REMOVED` -> nothing. The event does not list the agent's tasks
//!   (docs/FORMATS.md §8.12); each of them gets its own `TASK_UPDATED` (LOST, GONE,
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

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc::Sender;
use tokio::time::Instant;

use super::http::{secs, ByteStream, HttpError, MasterClient, MasterSettings, Timeouts};
use super::live::LiveStream;
use super::outbox::{self, Change};
use super::pipe;
use super::recordio::{
    Piece, RecordIoError, RecordIoParser, DEFAULT_MAX_EVENT, DEFAULT_MAX_RECORD,
};
use super::wire::mesos::{
    convert_task, read_master_state, AgentEntry, Context, FrameworkEntry, FrameworkInfo, Installed,
    KeptState, KeptTask, MesosTask, TaskAdded, TaskUpdated,
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
    /// Largest SUBSCRIBED record accepted (the snapshot of a big cluster;
    /// parsed while it arrives, never held whole).
    pub max_record: usize,
    /// Largest event record accepted after SUBSCRIBED (each is held whole
    /// while it is parsed; real ones are kilobytes).
    pub max_event: usize,
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
            max_event: DEFAULT_MAX_EVENT,
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
    outbox::run_sessions(Source::new(&cfg, groups, tx, tuning)).await;
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
    get_state: Option<KeptState>,
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

impl outbox::SessionEnd for Failure {
    fn is_closed(&self) -> bool {
        matches!(self, Failure::Closed)
    }

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
/// never completes one does not keep it alive. A record is either
/// collected ([`RecordReader::next`], events: small) or handed on piece by
/// piece as it arrives ([`RecordReader::stream_next`], the SUBSCRIBED
/// snapshot: never held whole).
struct RecordReader {
    live: LiveStream,
    parser: RecordIoParser,
    /// The last chunk read and how much of it is framed.
    chunk: Vec<u8>,
    pos: usize,
    /// The record being collected by `next` (kept here: cancel-safe).
    record: Vec<u8>,
    /// Largest record `next` collects.
    max_event: usize,
}

/// One step of framing the buffered chunk.
enum Step {
    /// Bytes `start..end` of `chunk` belong to the current record.
    Bytes(usize, usize),
    /// The current record is complete.
    End,
    /// The chunk is used up.
    Empty,
}

impl RecordReader {
    fn new(stream: ByteStream, tuning: &Tuning, silence: Duration) -> RecordReader {
        RecordReader {
            live: LiveStream::new(stream, silence),
            parser: RecordIoParser::new(tuning.max_record),
            chunk: Vec::new(),
            pos: 0,
            record: Vec::new(),
            max_event: tuning.max_event,
        }
    }

    fn url(&self) -> String {
        self.live.url().to_string()
    }

    /// A new silence allowance (from the SUBSCRIBED heartbeat interval).
    fn set_silence(&mut self, silence: Duration) {
        self.live.set_silence(silence);
    }

    /// The next non-empty record. Cancel-safe: state lives in `self`, and
    /// the only await is the cancel-safe chunk read.
    async fn next(&mut self) -> Result<Vec<u8>, Failure> {
        // Silence counts from now: the time the caller spent on the last
        // record (a daemon slow to take an update) is not the master's.
        self.live.alive();
        loop {
            match self.step()? {
                Step::Bytes(start, end) => {
                    if self.record.is_empty() {
                        let length = self.parser.record_length().unwrap_or_default();
                        if length > self.max_event {
                            return Err(Failure::Framing {
                                url: self.url(),
                                source: RecordIoError::RecordTooLarge {
                                    length: length as u128,
                                    limit: self.max_event,
                                },
                            });
                        }
                        // Grow as bytes arrive, not by the claimed length.
                        self.record.reserve(length.min(64 * 1024));
                    }
                    self.record
                        .extend_from_slice(self.chunk.get(start..end).unwrap_or_default());
                }
                Step::End if self.record.is_empty() => {}
                Step::End => return Ok(std::mem::take(&mut self.record)),
                Step::Empty => self.fill().await?,
            }
        }
    }

    /// Hand the next non-empty record to `feed` piece by piece, holding
    /// none of it. `Ok(false)` when the parser stopped reading before the
    /// end of the record (its result says why). Not cancel-safe: a
    /// cancelled call leaves the stream inside a record (the session ends).
    async fn stream_next(&mut self, feed: &pipe::Feed) -> Result<bool, Failure> {
        self.live.alive();
        let mut sent = 0usize;
        loop {
            match self.step()? {
                Step::Bytes(start, end) => {
                    sent += end - start;
                    let bytes = self.chunk.get(start..end).unwrap_or_default();
                    let waiting = Instant::now();
                    if feed.send(bytes).await.is_err() {
                        return Ok(false);
                    }
                    // Time the parser took to make room is not silence of
                    // the master.
                    self.live.forgive(waiting.elapsed());
                }
                Step::End if sent == 0 => {}
                Step::End => return Ok(true),
                Step::Empty => self.fill().await?,
            }
        }
    }

    /// Frame the next piece of the buffered chunk.
    fn step(&mut self) -> Result<Step, Failure> {
        let mut rest = self.chunk.get(self.pos..).unwrap_or_default();
        let before = rest.len();
        let piece = self
            .parser
            .next_piece(&mut rest)
            .map_err(|source| Failure::Framing {
                url: self.live.url().to_string(),
                source,
            })?;
        self.pos += before - rest.len();
        Ok(match piece {
            // The piece ends where framing stopped (a length line may
            // precede it in the chunk).
            Some(Piece::Bytes(bytes)) => Step::Bytes(self.pos - bytes.len(), self.pos),
            Some(Piece::End) => {
                // Any complete record, even an empty one, is liveness.
                self.live.alive();
                Step::End
            }
            None => Step::Empty,
        })
    }

    /// Read the next chunk of the stream.
    async fn fill(&mut self) -> Result<(), Failure> {
        let chunk = match self.live.next_chunk().await {
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
        self.chunk.clear();
        self.chunk.extend_from_slice(chunk.as_ref());
        self.pos = 0;
        Ok(())
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

/// What the SUBSCRIBED record makes: the snapshot, ready to install.
struct Subscription {
    installed: Installed,
    heartbeat: Duration,
}

/// The SUBSCRIBED record read while it arrives, on the parse thread:
/// every task compacted and kept as it is read ([`KeptTask`]), the record
/// itself never held, then every task converted (the agents and frameworks
/// it needs come after the tasks).
fn read_subscribed(
    mut reader: pipe::PipeReader,
    groups: &GroupsConfig,
) -> Result<Subscription, String> {
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(
        64 << 10,
        &mut reader,
    ));
    let event = Event::deserialize(&mut de).and_then(|event| de.end().map(|()| event));
    drop(de);
    let event = event.map_err(|e| {
        let start = String::from_utf8_lossy(reader.start()).to_string();
        format!("record is not a v1 event ({e}); it starts with {start:?}")
    })?;
    let kind = event.kind.as_deref().unwrap_or("(no type)");
    let Some(subscribed) = event.subscribed.filter(|_| kind == "SUBSCRIBED") else {
        return Err(format!(
            "the stream starts with {kind}, not SUBSCRIBED (not a master's operator API?)"
        ));
    };
    let Some(state) = subscribed.get_state else {
        return Err("SUBSCRIBED without get_state (a scheduler API?)".into());
    };
    Ok(Subscription {
        installed: state.install(groups),
        heartbeat: heartbeat_interval(subscribed.heartbeat_interval_seconds),
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
    /// Live tasks as the master sent them (compacted), for `TASK_UPDATED`.
    tasks: HashMap<String, KeptTask>,
    /// Framework names and agent IPs for converting tasks.
    ctx: Context,
    /// What the daemon was told: the last snapshot plus the events since.
    view: ClusterView,
    /// The polling fallback was announced (once, not every session).
    polling_announced: bool,
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
        Source {
            link: outbox::Link::new("mesos", tx, tuning.backoff_base, tuning.backoff_cap),
            settings: MasterSettings::from_source(cfg, tuning.timeouts),
            groups,
            tuning,
            // Config validation keeps it >= 1 s; a floor guards a hand-made one.
            resync_every: cfg.resync().max(Duration::from_millis(100)),
            tasks: HashMap::new(),
            ctx: Context::default(),
            view: ClusterView::default(),
            polling_announced: false,
        }
    }

    fn client(&mut self) -> Result<std::sync::Arc<MasterClient>, Failure> {
        Ok(self.link.client(&self.settings)?)
    }

    /// One connection's life. Ends only by failure.
    async fn session(&mut self) -> Result<Infallible, Failure> {
        let client = self.client()?;
        let stream = tokio::select! {
            opened = client.post_stream(API_PATH, JSON, SUBSCRIBE) => opened,
            _ = self.link.tx.closed() => return Err(Failure::Closed),
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
        let mut reader = RecordReader::new(stream, &self.tuning, silence);
        tracing::info!(url = %reader.url(), "mesos source: SUBSCRIBE stream open");
        let first = self.read_first(&mut reader).await?;
        self.on_subscribed(&mut reader, first).await?;
        loop {
            let record = self.next_record(&mut reader).await?;
            let change = self.apply(&reader.url(), &record)?;
            self.send_change(change).await?;
        }
    }

    async fn next_record(&self, reader: &mut RecordReader) -> Result<Vec<u8>, Failure> {
        tokio::select! {
            record = reader.next() => record,
            _ = self.link.tx.closed() => Err(Failure::Closed),
        }
    }

    /// The first record, parsed while it arrives ([`read_subscribed`]).
    async fn read_first(&self, reader: &mut RecordReader) -> Result<Subscription, Failure> {
        let groups = self.groups.clone();
        let (feed, parser) = pipe::spawn(move |r| read_subscribed(r, &groups));
        let streamed = tokio::select! {
            streamed = reader.stream_next(&feed) => streamed,
            _ = self.link.tx.closed() => Err(Failure::Closed),
        };
        // The end of the record is the parser's end of input.
        drop(feed);
        streamed?;
        let bad = |detail: String| Failure::BadEvent {
            url: reader.url(),
            detail,
        };
        pipe::join(parser).await.map_err(bad)?.map_err(bad)
    }

    /// The first record: the whole cluster, sent as one snapshot that
    /// replaces everything (kept tasks, context and view).
    async fn on_subscribed(
        &mut self,
        reader: &mut RecordReader,
        first: Subscription,
    ) -> Result<(), Failure> {
        let url = reader.url();
        reader.set_silence(self.tuning.silence_for(first.heartbeat));
        let installed = first.installed;
        self.view = installed.view;
        self.ctx = installed.ctx;
        self.tasks = installed.tasks;
        let view = outbox::snapshot(&self.view);
        tracing::info!(
            url = %url,
            tasks = view.tasks.len(),
            endpoints = view.endpoints().count(),
            heartbeat = %secs(first.heartbeat),
            "mesos source: snapshot (SUBSCRIBED)"
        );
        self.send(SourceUpdate::Snapshot(view)).await?;
        self.healthy();
        Ok(())
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
            let (url, parsed) = tokio::select! {
                parsed = self.read_state(client) => parsed?,
                _ = self.link.tx.closed() => return Err(Failure::Closed),
            };
            let view = parsed.map_err(|detail| Failure::Garbage {
                url: url.clone(),
                detail,
            })?;
            tracing::info!(url = %url, tasks = view.tasks.len(), "mesos source: snapshot (/master/state)");
            // Events never come in this mode; nothing to keep for them.
            self.tasks.clear();
            self.view = view;
            let view = outbox::snapshot(&self.view);
            self.send(SourceUpdate::Snapshot(view)).await?;
            self.healthy();
            tokio::select! {
                _ = tokio::time::sleep(self.resync_every) => {}
                _ = self.link.tx.closed() => return Err(Failure::Closed),
            }
        }
    }

    /// `GET /master/state`, parsed while it arrives: the URL that answered
    /// and the view, or why the body is not a master state document.
    async fn read_state(
        &self,
        client: &MasterClient,
    ) -> Result<(String, Result<ClusterView, String>), Failure> {
        let stream = client.open_stream(STATE_PATH, JSON).await?;
        let url = stream.url().to_string();
        let groups = self.groups.clone();
        let parsed = stream
            .parse_body(client.timeouts(), move |reader| {
                read_master_state(reader, &groups)
            })
            .await?;
        Ok((url, parsed))
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
            // Re-announced after a failover, already dead (docs/FORMATS.md §8.12).
            self.tasks.remove(&id);
            return self.remove_task(&id);
        }
        self.tasks.insert(id, KeptTask::keep(&task));
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
        let Some(mut task) = self.tasks.get(&id).and_then(KeptTask::open) else {
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
        let converted = convert_task(&task, &self.ctx, &self.groups);
        if converted.state.is_terminal() {
            self.tasks.remove(&id);
            return self.remove_task(&id);
        }
        self.tasks.insert(id, KeptTask::keep(&task));
        self.view.insert(converted.clone());
        Change::Upsert(converted)
    }

    fn on_framework_removed(&mut self, framework: &str) -> Change {
        let gone: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, kept)| {
                kept.open()
                    .and_then(|t| t.framework_id)
                    .is_some_and(|f| f.0 == framework)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let before = self.view.tasks.len();
        for id in &gone {
            self.tasks.remove(id);
            self.view.tasks.remove(id.as_str());
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
        self.link.backoff.reset();
        self.link.degraded.clear();
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
    //! Against small raw-TCP masters written here: each speaks just enough
    //! HTTP/1.1 (one request per connection) to misbehave precisely.

    use super::*;
    use crate::config::SourceKind;
    use crate::model::NotEnforced;
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    #[derive(Debug, Clone)]
    struct Req {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
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
        /// A chunked 200 whose HTTP chunks are what the receiver yields;
        /// the body ends properly when the sender goes.
        Stream(mpsc::UnboundedReceiver<Vec<u8>>),
    }

    struct Server {
        base: String,
        port: u16,
        log: Arc<Mutex<Vec<Req>>>,
    }

    impl Server {
        fn requests(&self, path: &str) -> Vec<Req> {
            let log = self.log.lock().expect("log");
            log.iter().filter(|r| r.path == path).cloned().collect()
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
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let text = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = text.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let method = first.next()?.to_string();
        let path = first.next()?.to_string();
        let headers: Vec<(String, String)> = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end..].to_vec();
        while body.len() < length {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        Some(Req {
            method,
            path,
            headers,
            body,
        })
    }

    async fn write_reply(mut sock: TcpStream, reply: Reply) -> std::io::Result<()> {
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
            Reply::Stream(mut rx) => {
                sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").await?;
                while let Some(bytes) = rx.recv().await {
                    if bytes.is_empty() {
                        continue;
                    }
                    sock.write_all(format!("{:x}\r\n", bytes.len()).as_bytes())
                        .await?;
                    sock.write_all(&bytes).await?;
                    sock.write_all(b"\r\n").await?;
                    sock.flush().await?;
                }
                sock.write_all(b"0\r\n\r\n").await?;
            }
        }
        sock.shutdown().await
    }

    /// RecordIO framing of one record.
    fn frame(record: &str) -> Vec<u8> {
        [format!("{}\n", record.len()).as_bytes(), record.as_bytes()].concat()
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mesos");
        std::fs::read(path.join(name)).expect("fixture")
    }

    /// The records of a dcos-net capture (one JSON record per line).
    fn ndjson(name: &str) -> Vec<String> {
        String::from_utf8(fixture(name))
            .expect("utf-8")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The streams a fake master has open; each new one gets `first`.
    #[derive(Clone, Default)]
    struct Hub(Arc<Mutex<Vec<mpsc::UnboundedSender<Vec<u8>>>>>);

    impl Hub {
        fn attach(&self, first: &[Vec<u8>]) -> Reply {
            let (tx, rx) = mpsc::unbounded_channel();
            for chunk in first {
                let _ = tx.send(chunk.clone());
            }
            self.0.lock().expect("hub").push(tx);
            Reply::Stream(rx)
        }

        fn push(&self, bytes: &[u8]) {
            self.0
                .lock()
                .expect("hub")
                .retain(|tx| tx.send(bytes.to_vec()).is_ok());
        }
    }

    /// A leader whose every SUBSCRIBE stream starts with `first` (chunks).
    async fn fake_master(first: Vec<Vec<u8>>) -> (Server, Hub) {
        let hub = Hub::default();
        let h = hub.clone();
        let server = serve(move |req| {
            if req.path == API_PATH && req.method == "POST" {
                h.attach(&first)
            } else {
                Reply::Json(404, "no such path".into())
            }
        })
        .await;
        (server, hub)
    }

    fn config(urls: Vec<String>) -> SourceConfig {
        SourceConfig {
            kind: SourceKind::Mesos,
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
                headers: Duration::from_millis(500),
                body: Duration::from_millis(500),
                stall: Duration::from_millis(500),
                max_body: 1024 * 1024,
            },
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(80),
            heartbeat_misses: 3,
            silence: Some(Duration::from_millis(400)),
            max_record: 1024 * 1024,
            max_event: 64 * 1024,
        }
    }

    fn start(cfg: SourceConfig) -> mpsc::Receiver<SourceUpdate> {
        let (tx, rx) = mpsc::channel(256);
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

    async fn upsert(rx: &mut mpsc::Receiver<SourceUpdate>) -> crate::model::Task {
        match next(rx).await {
            SourceUpdate::Upsert(task) => task,
            other => panic!("expected an upsert, got {other:?}"),
        }
    }

    async fn silence(rx: &mut mpsc::Receiver<SourceUpdate>, for_: Duration) {
        if let Ok(Some(update)) = tokio::time::timeout(for_, rx.recv()).await {
            panic!("expected nothing, got {update:?}");
        }
    }

    fn ips(task: &crate::model::Task) -> Vec<String> {
        task.ips.iter().map(ToString::to_string).collect()
    }

    fn groups_of(task: &crate::model::Task) -> Vec<String> {
        task.groups.keys().map(|g| g.to_string()).collect()
    }

    const FW: &str = "fw-marathon";

    /// A v1 task on the `dcos` overlay with `groups` (Marathon <= 1.4
    /// `ipAddress.groups`, carried in the TaskInfo's NetworkInfo).
    fn task_json(id: &str, state: &str, ip: &str, groups: &[&str]) -> String {
        let groups: Vec<String> = groups.iter().map(|g| format!("{g:?}")).collect();
        format!(
            r#"{{"task_id":{{"value":"{id}"}},"name":"web","framework_id":{{"value":"{FW}"}},"agent_id":{{"value":"S1"}},"state":"{state}","container":{{"type":"MESOS","network_infos":[{{"name":"dcos","groups":[{}]}}]}},"statuses":[{{"task_id":{{"value":"{id}"}},"state":"{state}","container_status":{{"network_infos":[{{"name":"dcos","ip_addresses":[{{"ip_address":"{ip}"}}]}}]}}}}]}}"#,
            groups.join(",")
        )
    }

    /// SUBSCRIBED with `tasks`; `type` last, as Mesos 1.9 writes it.
    fn subscribed(tasks: &[String], heartbeat: f64) -> String {
        format!(
            r#"{{"subscribed":{{"get_state":{{"get_tasks":{{"tasks":[{}]}},"get_frameworks":{{"frameworks":[{{"framework_info":{{"id":{{"value":"{FW}"}},"name":"marathon"}}}}]}},"get_agents":{{}}}},"heartbeat_interval_seconds":{heartbeat}}},"type":"SUBSCRIBED"}}"#,
            tasks.join(",")
        )
    }

    fn task_added(task: &str) -> String {
        format!(r#"{{"type":"TASK_ADDED","task_added":{{"task":{task}}}}}"#)
    }

    fn task_updated(id: &str, state: &str) -> String {
        format!(
            r#"{{"type":"TASK_UPDATED","task_updated":{{"framework_id":{{"value":"{FW}"}},"state":"{state}","status":{{"task_id":{{"value":"{id}"}},"agent_id":{{"value":"S1"}},"state":"{state}","uuid":"AAEC\/w=="}}}}}}"#
        )
    }

    const HEARTBEAT: &str = r#"{"type":"HEARTBEAT"}"#;

    #[tokio::test]
    async fn subscribed_capture_is_one_snapshot_then_events_upsert_and_remove() {
        let records =
            ndjson("operator-api/mesos-1.5.0-subscribe-stream-sdk-hello-world.dcos-net.ndjson");
        let (server, hub) = fake_master(vec![frame(&records[0])]).await;
        let mut rx = start(config(vec![server.base.clone()]));
        let view = snapshot(&mut rx).await;
        let req = &server.requests(API_PATH)[0];
        assert_eq!(req.method, "POST");
        assert_eq!(req.body, SUBSCRIBE);
        assert_eq!(req.header("content-type"), Some(JSON));
        assert_eq!(req.header("accept"), Some(JSON));
        assert_eq!(view.tasks.len(), 4);
        let hello = &view.tasks["hello-world.e26a1fe7-28d9-11e8-964a-70b3d5800003"];
        assert_eq!(&*hello.app, "marathon:hello-world");
        assert_eq!(ips(hello), ["172.17.0.4"]);
        // Host networking in the capture: shown, not enforced, no groups.
        assert_eq!(hello.not_enforced, Some(NotEnforced::HostNetwork));
        assert!(view.tasks.values().all(|t| t.groups.is_empty()));
        assert_eq!(
            &*view.tasks["world-0-server__deb2e5df-d33e-43cd-a41b-10f1ea5c88b3"].app,
            "hello-world:world-0-server"
        );

        for r in &records[1..] {
            hub.push(&frame(r));
        }
        let killing = upsert(&mut rx).await;
        assert_eq!(killing.state, TaskState::Killing);
        let expect_remove = |u: SourceUpdate, id: &str| match u {
            SourceUpdate::Remove(got) => assert_eq!(got, id),
            other => panic!("expected Remove({id}), got {other:?}"),
        };
        expect_remove(next(&mut rx).await, &killing.id);
        let staging = upsert(&mut rx).await;
        assert_eq!(
            (&*staging.id, &staging.state),
            (
                "hello-world.60bcc4e8-28dc-11e8-964a-70b3d5800003",
                &TaskState::Staging
            )
        );
        assert!(staging.ips.is_empty(), "no IP at STAGING (§8.3)");
        expect_remove(
            next(&mut rx).await,
            "hello-0-server__7830c08b-f769-45d8-8be2-0004ff825dea",
        );
        assert_eq!(upsert(&mut rx).await.state, TaskState::Starting);
        let running = upsert(&mut rx).await;
        assert_eq!(
            (&running.state, ips(&running)),
            (&TaskState::Running, vec!["172.17.0.3".to_string()])
        );
        expect_remove(
            next(&mut rx).await,
            "world-1-server__25f16dc3-0494-4bcf-a9d7-318d75f58c15",
        );
        expect_remove(
            next(&mut rx).await,
            "world-0-server__deb2e5df-d33e-43cd-a41b-10f1ea5c88b3",
        );
        // FRAMEWORK_REMOVED of hello-world: its tasks are already gone.
        assert_eq!(upsert(&mut rx).await.state, TaskState::Killing);
        expect_remove(next(&mut rx).await, &running.id);
        silence(&mut rx, Duration::from_millis(200)).await;
    }

    #[tokio::test]
    async fn mixed_capture_split_into_odd_chunks_converges() {
        // The whole RecordIO capture, re-chunked every 13 bytes: lengths
        // and records split everywhere (docs/FORMATS.md §8.11: parse by length, not chunk).
        let bytes =
            fixture("operator-api/mesos-1.5.0-subscribe-stream-mixed-networking.DERIVED.recordio");
        let chunks: Vec<Vec<u8>> = bytes.chunks(13).map(<[u8]>::to_vec).collect();
        let (server, _hub) = fake_master(chunks).await;
        let mut rx = start(config(vec![server.base.clone()]));
        assert!(snapshot(&mut rx).await.tasks.is_empty(), "get_tasks: {{}}");
        let mut tasks = std::collections::BTreeMap::new();
        for _ in 0..36 {
            let task = upsert(&mut rx).await;
            tasks.insert(task.id.clone(), task);
        }
        silence(&mut rx, Duration::from_millis(200)).await;
        let get = |prefix: &str| {
            tasks
                .values()
                .find(|t| t.id.starts_with(prefix))
                .expect("task")
        };
        // docs/FORMATS.md §8.3: the Docker user-network task's STARTING status reports the
        // agent's IP; only RUNNING has the container's.
        assert_eq!(ips(get("docker-on-dcos.")), ["9.0.2.130"]);
        assert!(get("docker-on-dcos.").is_endpoint());
        // docs/FORMATS.md §8.4: IPv4 and IPv6 from several NetworkInfos.
        assert_eq!(
            ips(get("docker-on-ipv6.")),
            ["172.19.0.2", "fd01:b::2:8000:0:2"]
        );
        assert!(get("ucr-on-dcos.").is_endpoint());
        assert!(get("pod-on-dcos.").is_endpoint());
        // docs/FORMATS.md §8.7: host and NAT bridge networking are not endpoints.
        assert_eq!(
            get("docker-on-bridge.").not_enforced,
            Some(NotEnforced::NatBridge)
        );
        assert_eq!(
            get("ucr-on-host.").not_enforced,
            Some(NotEnforced::HostNetwork)
        );
        assert_eq!(tasks.len(), 12);
    }

    #[tokio::test]
    async fn failover_capture_drops_tasks_re_added_as_terminal() {
        // docs/FORMATS.md §8.12: after a master failover a dead task re-appears as a
        // TASK_ADDED in TASK_FAILED; it is never upserted. AGENT_ADDED,
        // FRAMEWORK_* and HEARTBEAT change nothing by themselves.
        let records = ndjson(
            "operator-api/mesos-1.9.0-subscribe-stream-recovered-agents-heartbeat.dcos-net.ndjson",
        );
        let framed: Vec<Vec<u8>> = records.iter().map(|r| frame(r)).collect();
        let (server, _hub) = fake_master(framed).await;
        let mut rx = start(config(vec![server.base.clone()]));
        assert!(snapshot(&mut rx).await.tasks.is_empty());
        let states: Vec<(String, TaskState)> = [
            upsert(&mut rx).await,
            upsert(&mut rx).await,
            upsert(&mut rx).await,
        ]
        .into_iter()
        .map(|t| (t.id.to_string(), t.state))
        .collect();
        let id = "web.instance-8b38cc52-c951-11e9-8d5b-70b3d5800001._app.2".to_string();
        assert_eq!(
            states,
            [
                (id.clone(), TaskState::Staging),
                (id.clone(), TaskState::Starting),
                (id, TaskState::Running)
            ]
        );
        silence(&mut rx, Duration::from_millis(200)).await;
    }

    #[tokio::test]
    async fn task_events_with_groups_and_an_ip_handover() {
        let a = task_json("web.a", "TASK_RUNNING", "10.233.0.1", &["web"]);
        let (server, hub) = fake_master(vec![frame(&subscribed(&[a], 15.0))]).await;
        let mut rx = start(config(vec![server.base.clone()]));
        let view = snapshot(&mut rx).await;
        assert_eq!(groups_of(&view.tasks["web.a"]), ["web"]);
        assert_eq!(ips(&view.tasks["web.a"]), ["10.233.0.1"]);
        assert_eq!(&*view.tasks["web.a"].app, "marathon:web");

        let b = task_json("db.b", "TASK_RUNNING", "10.233.0.2", &["db", "public"]);
        hub.push(&frame(&task_added(&b)));
        let added = upsert(&mut rx).await;
        assert_eq!(
            (&*added.id, groups_of(&added), ips(&added)),
            (
                "db.b",
                vec!["db".to_string(), "public".to_string()],
                vec!["10.233.0.2".to_string()]
            )
        );
        // An update without IPs keeps the task's groups and its IP (the
        // master's status history does).
        hub.push(&frame(&task_updated("db.b", "TASK_KILLING")));
        let killing = upsert(&mut rx).await;
        assert_eq!(killing.state, TaskState::Killing);
        assert_eq!(ips(&killing), ["10.233.0.2"]);
        assert_eq!(groups_of(&killing), ["db", "public"]);
        hub.push(&frame(&task_updated("db.b", "TASK_FAILED")));
        assert!(matches!(next(&mut rx).await, SourceUpdate::Remove(id) if id == "db.b"));
        // Unknown tasks' updates and AGENT_REMOVED: nothing.
        hub.push(&frame(&task_updated("nobody", "TASK_RUNNING")));
        hub.push(&frame(
            r#"{"type":"AGENT_REMOVED","agent_removed":{"agent_id":{"value":"S1"}}}"#,
        ));
        hub.push(&frame(HEARTBEAT));
        silence(&mut rx, Duration::from_millis(150)).await;

        // A new task reports web.a's IP; web.a dies: one snapshot moves it.
        let c = task_json("web.c", "TASK_RUNNING", "10.233.0.1", &["web2"]);
        hub.push(&frame(&task_added(&c)));
        assert_eq!(&*upsert(&mut rx).await.id, "web.c");
        hub.push(&frame(&task_updated("web.a", "TASK_KILLED")));
        let view = snapshot(&mut rx).await;
        assert_eq!(
            view.tasks.keys().map(|k| &**k).collect::<Vec<_>>(),
            ["web.c"]
        );
        assert!(view.conflicts.is_empty());
        // The framework goes: all its tasks in one snapshot.
        hub.push(&frame(&format!(
            r#"{{"type":"FRAMEWORK_REMOVED","framework_removed":{{"framework_info":{{"id":{{"value":"{FW}"}},"name":"marathon"}}}}}}"#
        )));
        assert!(snapshot(&mut rx).await.tasks.is_empty());
    }

    #[tokio::test]
    async fn silence_resubscribes_and_replaces_the_view() {
        // heartbeat_interval_seconds 0.2: dead after 3 x 0.2 s without a record.
        let a = task_json("web.a", "TASK_RUNNING", "10.233.0.1", &["web"]);
        let (server, hub) = fake_master(vec![frame(&subscribed(&[a], 0.2))]).await;
        let (tx, mut rx) = mpsc::channel(64);
        let tuning = Tuning {
            silence: None,
            ..fast()
        };
        tokio::spawn(run_with(
            config(vec![server.base.clone()]),
            GroupsConfig::default(),
            tx,
            tuning,
        ));
        assert_eq!(snapshot(&mut rx).await.tasks.len(), 1);
        // Heartbeats keep it alive well past 0.6 s.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(80)).await;
            hub.push(&frame(HEARTBEAT));
        }
        assert!(rx.try_recv().is_err(), "nothing while heartbeats come");
        assert_eq!(server.requests(API_PATH).len(), 1);
        // A task added meanwhile is forgotten by the next SUBSCRIBED.
        let b = task_json("web.b", "TASK_RUNNING", "10.233.0.2", &["web"]);
        hub.push(&frame(&task_added(&b)));
        assert_eq!(&*upsert(&mut rx).await.id, "web.b");
        let reason = degraded(&mut rx).await;
        assert!(
            reason.contains("no event or heartbeat for 0.6 s"),
            "{reason}"
        );
        let view = snapshot(&mut rx).await;
        assert_eq!(
            view.tasks.keys().map(|k| &**k).collect::<Vec<_>>(),
            ["web.a"]
        );
        assert_eq!(server.requests(API_PATH).len(), 2);
    }

    #[tokio::test]
    async fn leader_redirect_with_protocol_relative_location_is_followed() {
        let a = task_json("web.a", "TASK_RUNNING", "10.233.0.1", &["web"]);
        let (leader, _hub) = fake_master(vec![frame(&subscribed(&[a], 15.0))]).await;
        let port = leader.port;
        let follower =
            serve(move |_| Reply::Redirect(format!("//127.0.0.1:{port}{API_PATH}"))).await;
        let mut rx = start(config(vec![follower.base.clone()]));
        assert_eq!(snapshot(&mut rx).await.tasks.len(), 1);
        let req = &leader.requests(API_PATH)[0];
        assert_eq!(
            (req.method.as_str(), req.body.as_slice()),
            ("POST", SUBSCRIBE)
        );
    }

    #[tokio::test]
    async fn a_503_master_hands_over_to_the_next_url() {
        let a = task_json("web.a", "TASK_RUNNING", "10.233.0.1", &["web"]);
        let (leader, _hub) = fake_master(vec![frame(&subscribed(&[a], 15.0))]).await;
        let standby = serve(|_| Reply::Json(503, "not the leader".into())).await;
        let mut rx = start(config(vec![standby.base.clone(), leader.base.clone()]));
        assert_eq!(snapshot(&mut rx).await.tasks.len(), 1);
        assert_eq!(standby.requests(API_PATH).len(), 1);
    }

    #[tokio::test]
    async fn masters_without_the_operator_api_are_polled() {
        let state = String::from_utf8(fixture(
            "master-state/mesos-1.8.0-master-state.dcos-net.json",
        ))
        .expect("utf-8");
        for status in [404, 405, 501] {
            let doc = state.clone();
            let server = serve(move |req| match req.path.as_str() {
                STATE_PATH => Reply::Json(200, doc.clone()),
                _ => Reply::Json(status, "no such endpoint".into()),
            })
            .await;
            let mut cfg = config(vec![server.base.clone()]);
            cfg.resync_interval = Duration::from_millis(200);
            let mut rx = start(cfg);
            let first = snapshot(&mut rx).await;
            assert!(!first.tasks.is_empty(), "{status}");
            assert_eq!(snapshot(&mut rx).await, first, "{status}: polled again");
            assert!(server.requests(STATE_PATH).len() >= 2);
            assert_eq!(server.requests(API_PATH).len(), 1, "{status}");
        }
    }

    #[tokio::test]
    async fn garbage_and_truncated_records_are_degraded_never_applied() {
        let good = subscribed(
            &[task_json("a", "TASK_RUNNING", "10.233.0.1", &["x"])],
            15.0,
        );
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"<html>proxy error</html>".to_vec(), "non-digit"),
            (frame("this is not json"), "not a v1 event"),
            (frame(HEARTBEAT), "not SUBSCRIBED"),
            (
                frame(r#"{"type":"SUBSCRIBED","subscribed":{}}"#),
                "without get_state",
            ),
            // The SUBSCRIBED record cut short, then the body ends.
            (frame(&good)[..200].to_vec(), "ended inside a record"),
            (b"2000000\n{".to_vec(), "exceeds the limit"),
            // A 1 GiB length line: refused before a byte is buffered.
            (
                b"1073741824\n{".to_vec(),
                "1073741824 bytes exceeds the limit",
            ),
        ];
        for (bytes, want) in cases {
            // These bytes, then the end of the body.
            let server = serve(move |_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = tx.send(bytes.clone());
                Reply::Stream(rx)
            })
            .await;
            let (tx, mut rx) = mpsc::channel(64);
            let tuning = Tuning {
                max_record: 1024 * 1024,
                ..fast()
            };
            tokio::spawn(run_with(
                config(vec![server.base.clone()]),
                GroupsConfig::default(),
                tx,
                tuning,
            ));
            let reason = degraded(&mut rx).await;
            assert!(reason.contains(want), "{want}: {reason}");
            // Retries keep failing the same way: reported once, nothing applied.
            silence(&mut rx, Duration::from_millis(300)).await;
            assert!(server.requests(API_PATH).len() >= 2, "{want}: retried");
        }
    }

    #[tokio::test]
    async fn an_event_record_over_max_event_is_refused_before_it_is_read() {
        let good = subscribed(
            &[task_json("a", "TASK_RUNNING", "10.233.0.1", &["x"])],
            15.0,
        );
        // The snapshot (larger than `max_event` is fine for it), then an
        // event record claiming 70,000 bytes, more than `max_event`.
        let bytes = [frame(&good), b"70000\n{".to_vec()].concat();
        let server = serve(move |_| {
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = tx.send(bytes.clone());
            Reply::Stream(rx)
        })
        .await;
        let (tx, mut rx) = mpsc::channel(64);
        let tuning = Tuning {
            max_event: good.len() / 2,
            ..fast()
        };
        tokio::spawn(run_with(
            config(vec![server.base.clone()]),
            GroupsConfig::default(),
            tx,
            tuning,
        ));
        snapshot(&mut rx).await;
        let reason = degraded(&mut rx).await;
        let want = format!(
            "RecordIO record of 70000 bytes exceeds the limit of {} bytes",
            good.len() / 2
        );
        assert!(reason.contains(&want), "{reason}");
    }

    #[tokio::test]
    async fn credentials_are_sent_and_never_reported() {
        let dir = std::env::temp_dir().join(format!("groupd-mesos-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let pw = dir.join("pw");
        std::fs::write(&pw, "hunter22-secret\n").expect("write");
        let server = serve(|_| Reply::Json(401, "unauthorized".into())).await;
        let mut cfg = config(vec![server
            .base
            .replace("http://", "http://ops:hunter22-secret@")]);
        cfg.username = Some("ops".into());
        cfg.password_file = Some(pw);
        let mut rx = start(cfg);
        let reason = degraded(&mut rx).await;
        assert!(reason.contains("401"), "{reason}");
        assert!(!reason.contains("hunter22"), "{reason}");
        let req = &server.requests(API_PATH)[0];
        assert!(req
            .header("authorization")
            .is_some_and(|h| h.starts_with("Basic ")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
