//! One whole master document → [`ClusterView`], with the format detected
//! from the content (docs/design.md §2, `file` source; also usable by the remote
//! sources for their snapshots).
//!
//! Accepted: Marathon `/v2/apps?embed=apps.tasks` (and `/v2/groups` with
//! embedded tasks, `/v2/apps/{id}`, a bare app with `tasks`), Mesos
//! `/master/state`, and the v1 operator API `SUBSCRIBED` event, `GET_STATE`
//! and `GET_TASKS` responses. Everything else is rejected with an error that
//! says what the input looks like and what to use instead; nothing on any
//! input panics.
//!
//! Duplicate IPs among live endpoints do not fail the parse: they are listed
//! in [`ClusterView::conflicts`] and the tasks are left as the master
//! described them, for the daemon to resolve with its previous state.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::error::Category;

use super::wire::marathon::{self, App, AppGroup, SingleApp, VersionCache};
use super::wire::mesos::{self, MasterState, V1Message};
use crate::config::GroupsConfig;
use crate::model::ClusterView;

const WANTED: &str =
    "a Marathon /v2/apps?embed=apps.tasks, Mesos /master/state or SUBSCRIBE snapshot document";

/// Which kind of document was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// `GET /v2/apps?embed=apps.tasks`.
    MarathonApps,
    /// `GET /v2/groups?embed=group.apps.tasks` (nested groups).
    MarathonGroups,
    /// `GET /v2/apps/{id}` (`{"app": …}`) or a bare app object with tasks.
    MarathonApp,
    /// `GET /master/state`.
    MesosMasterState,
    /// The first event of a v1 `SUBSCRIBE` stream.
    MesosSubscribed,
    /// A v1 `GET_STATE` response.
    MesosGetState,
    /// A v1 `GET_TASKS` response.
    MesosGetTasks,
}

impl fmt::Display for DocumentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DocumentKind::MarathonApps => "Marathon /v2/apps document",
            DocumentKind::MarathonGroups => "Marathon /v2/groups document",
            DocumentKind::MarathonApp => "Marathon single-app document",
            DocumentKind::MesosMasterState => "Mesos /master/state document",
            DocumentKind::MesosSubscribed => "Mesos SUBSCRIBED event",
            DocumentKind::MesosGetState => "Mesos GET_STATE response",
            DocumentKind::MesosGetTasks => "Mesos GET_TASKS response",
        })
    }
}

/// Why a document was not turned into a view. The texts read well after
/// "file X: " and say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("empty document (nothing but whitespace); write {WANTED} there")]
    Empty,
    #[error("not JSON: starts with {start:?}; expected {WANTED}")]
    NotJson { start: String },
    #[error("a server-sent event stream (Marathon /v2/events), not a snapshot; expected {WANTED}")]
    EventStream,
    #[error(
        "a RecordIO-framed Mesos SUBSCRIBE stream; keep only the first record (the SUBSCRIBED event) without its length line"
    )]
    RecordIo,
    #[error(
        "more than one JSON document (the second starts at line {line} column {column}), e.g. an event stream; the file must hold exactly one snapshot, such as only the SUBSCRIBED event"
    )]
    MultipleDocuments { line: usize, column: usize },
    #[error("truncated JSON: the input ends at line {line} column {column} before the document is complete (half-written file?)")]
    Truncated { line: usize, column: usize },
    #[error("malformed JSON at line {line} column {column}: {message} (half-written file?)")]
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("not {WANTED}: {reason}")]
    Unsupported { reason: String },
    #[error("{kind} with an unexpected value at line {line} column {column}: {message}")]
    Invalid {
        kind: DocumentKind,
        line: usize,
        column: usize,
        message: String,
    },
}

/// A parsed document: what it was and the view it describes.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub kind: DocumentKind,
    /// `conflicts` is filled in.
    pub view: ClusterView,
}

/// Parse one document. `versions` carries what earlier Marathon documents
/// showed (see [`VersionCache`]); Mesos documents do not use it.
/// Duplicate IPs are reported in `view.conflicts`, never as an error.
pub fn parse_document(
    bytes: &[u8],
    groups: &GroupsConfig,
    versions: &mut VersionCache,
) -> Result<ClusterView, DocumentError> {
    parse_document_kind(bytes, groups, versions).map(|parsed| parsed.view)
}

/// [`parse_document`], also saying which kind of document it was.
pub fn parse_document_kind(
    bytes: &[u8],
    groups: &GroupsConfig,
    versions: &mut VersionCache,
) -> Result<Parsed, DocumentError> {
    match prepare_document(bytes, groups, versions)? {
        Prepared::Parsed(parsed) => Ok(parsed),
        Prepared::MarathonApps(apps) => apps.convert_slice(strip_bom(bytes), groups, versions),
    }
}

/// A document checked in full, possibly not yet converted.
#[derive(Debug)]
pub enum Prepared {
    Parsed(Parsed),
    /// A valid Marathon app list, converted by a second read of the same
    /// bytes (see [`prepare_document`]).
    MarathonApps(MarathonApps),
}

/// A Marathon app list (`/v2/apps`, `/v2/groups`) that passed every check.
#[derive(Debug)]
pub struct MarathonApps {
    kind: DocumentKind,
    apps: usize,
    /// The checked bytes started with a UTF-8 byte order mark.
    bom: bool,
}

/// [`parse_document_kind`], except that a Marathon app list (the largest
/// documents) is only checked: the caller converts it with
/// [`MarathonApps::convert`] from a second read of the same bytes, so that
/// it need not hold the whole document while the view is built. The version
/// cache is only touched by the conversion.
pub fn prepare_document(
    bytes: &[u8],
    groups: &GroupsConfig,
    versions: &mut VersionCache,
) -> Result<Prepared, DocumentError> {
    let bom = bytes.starts_with(BOM);
    let bytes = strip_bom(bytes);
    check_single_json_value(bytes)?;
    let keys = top_level_keys(bytes)?;
    let (kind, mut view) = match dispatch(bytes, &keys, groups, versions)? {
        Routed::Converted(converted) => converted,
        Routed::MarathonApps { kind, apps } => {
            return Ok(Prepared::MarathonApps(MarathonApps { kind, apps, bom }))
        }
    };
    view.conflicts = view.ip_conflicts();
    Ok(Prepared::Parsed(Parsed { kind, view }))
}

impl MarathonApps {
    /// Convert the document from `reader`, which must give the bytes that
    /// [`prepare_document`] checked (compare a hash: if they differ, the
    /// view describes whatever was read, or this fails).
    pub fn convert(
        self,
        reader: impl std::io::Read,
        groups: &GroupsConfig,
        versions: &mut VersionCache,
    ) -> Result<Parsed, DocumentError> {
        let mut reader = reader;
        if self.bom {
            // Skipped as `prepare_document` skipped it; other bytes there
            // are the caller's to notice (its hash differs).
            let mut bom = [0u8; BOM.len()];
            reader
                .read_exact(&mut bom)
                .map_err(|e| unsupported(format!("cannot read the document again: {e}")))?;
        }
        let body = std::io::BufReader::with_capacity(64 << 10, reader);
        self.convert_with(
            serde_json::Deserializer::from_reader(body),
            groups,
            versions,
        )
    }

    fn convert_slice(
        self,
        bytes: &[u8],
        groups: &GroupsConfig,
        versions: &mut VersionCache,
    ) -> Result<Parsed, DocumentError> {
        self.convert_with(
            serde_json::Deserializer::from_slice(bytes),
            groups,
            versions,
        )
    }

    fn convert_with<'de, R: serde_json::de::Read<'de>>(
        self,
        de: serde_json::Deserializer<R>,
        groups: &GroupsConfig,
        versions: &mut VersionCache,
    ) -> Result<Parsed, DocumentError> {
        let mut conversion = marathon::Conversion::new(true, groups, versions);
        conversion.reserve(self.apps);
        walk_apps(de, self.kind, &mut |app| conversion.add(&app))?;
        let mut view = conversion.finish();
        view.conflicts = view.ip_conflicts();
        Ok(Parsed {
            kind: self.kind,
            view,
        })
    }
}

/// The UTF-8 byte order mark some editors write first.
const BOM: &[u8] = b"\xEF\xBB\xBF";

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(BOM).unwrap_or(bytes)
}

/// Syntax first, so a half-written file is reported as such and not as a
/// document of the wrong shape.
fn check_single_json_value(bytes: &[u8]) -> Result<(), DocumentError> {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or(DocumentError::Empty)?;
    let rest = bytes.get(start..).unwrap_or_default();
    if looks_like_event_stream(rest) {
        return Err(DocumentError::EventStream);
    }
    if looks_like_recordio(rest) {
        return Err(DocumentError::RecordIo);
    }
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<IgnoredAny>();
    match values.next() {
        None => return Err(DocumentError::Empty),
        Some(Err(e)) => return Err(syntax_error(&e, bytes, start)),
        Some(Ok(_)) => {}
    }
    let end = values.byte_offset();
    match values.next() {
        None => Ok(()),
        // Garbage after the document (not a second document).
        Some(Err(e)) => Err(syntax_error(&e, bytes, start)),
        Some(Ok(_)) => {
            let second = bytes
                .get(end..)
                .unwrap_or_default()
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(0)
                + end;
            let (line, column) = position_of(bytes, second);
            Err(DocumentError::MultipleDocuments { line, column })
        }
    }
}

fn syntax_error(e: &serde_json::Error, bytes: &[u8], start: usize) -> DocumentError {
    let (line, column) = (e.line(), e.column());
    if e.classify() == Category::Eof {
        return DocumentError::Truncated { line, column };
    }
    // A first character that cannot start any JSON value: not JSON at all.
    let first = bytes.get(start).copied().unwrap_or_default();
    if !(matches!(first, b'{' | b'[' | b'"' | b'-' | b't' | b'f' | b'n') || first.is_ascii_digit())
    {
        return DocumentError::NotJson {
            start: preview(bytes.get(start..).unwrap_or_default()),
        };
    }
    DocumentError::Malformed {
        line,
        column,
        message: strip_position(&e.to_string()),
    }
}

/// Marathon's `/v2/events` framing (`event:`/`data:` lines, `:` comments).
fn looks_like_event_stream(rest: &[u8]) -> bool {
    [b"event:".as_slice(), b"data:", b"id:", b"retry:", b":"]
        .iter()
        .any(|p| rest.starts_with(p))
}

/// `<decimal length>\n{…`: Mesos RecordIO.
fn looks_like_recordio(rest: &[u8]) -> bool {
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0
        && matches!(
            rest.get(digits..),
            Some([b'\n', b'{', ..]) | Some([b'\r', b'\n', b'{', ..])
        )
}

/// 1-based (line, column) of byte `offset`, as serde_json counts them.
fn position_of(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = bytes.get(..offset).unwrap_or(bytes);
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    (line, column)
}

/// The first characters of non-JSON input, for the error message.
fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes.get(..40).unwrap_or(bytes));
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(30).collect()
}

/// serde_json's message without the " at line L column C" it appends (the
/// errors here carry those separately), with a hint where serde_json's own
/// words are obscure.
fn strip_position(message: &str) -> String {
    let bare = strip_position_suffix(message);
    if bare.contains("hex escape") || bare.contains("surrogate") {
        return format!(
            "{bare} (a \\uD800-\\uDFFF escape that is not half of a surrogate pair is not valid Unicode)"
        );
    }
    bare
}

fn strip_position_suffix(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i)
            if message
                .get(i..)
                .is_some_and(|tail| tail.contains(" column ")) =>
        {
            message.get(..i).unwrap_or(message).to_string()
        }
        _ => message.to_string(),
    }
}

/// The top-level keys (values not decoded), or what the document is instead
/// of an object.
fn top_level_keys(bytes: &[u8]) -> Result<BTreeMap<String, IgnoredAny>, DocumentError> {
    serde_json::from_slice::<BTreeMap<String, IgnoredAny>>(bytes).map_err(|e| {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
        let what = match first {
            // An object whose keys cannot be read (a lone surrogate escape).
            Some(b'{') => {
                return DocumentError::Malformed {
                    line: e.line(),
                    column: e.column(),
                    message: strip_position(&e.to_string()),
                }
            }
            Some(b'[') => "a JSON array",
            Some(b'"') => "a JSON string",
            Some(b't' | b'f') => "a JSON boolean",
            Some(b'n') => "JSON null",
            _ => "a JSON number",
        };
        unsupported(format!("the document is {what}, not an object"))
    })
}

fn unsupported(reason: impl Into<String>) -> DocumentError {
    DocumentError::Unsupported {
        reason: reason.into(),
    }
}

/// The `type` of a v1 message or the `eventType` of a Marathon event, when
/// it is a string.
#[derive(Deserialize, Default)]
struct TypeProbe {
    #[serde(default, rename = "type")]
    kind: Option<MaybeString>,
    #[serde(default, rename = "eventType")]
    event_type: Option<MaybeString>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MaybeString {
    Text(String),
    Other(IgnoredAny),
}

impl MaybeString {
    fn text(&self) -> Option<&str> {
        match self {
            MaybeString::Text(s) => Some(s.as_str()),
            MaybeString::Other(_) => None,
        }
    }
}

type Converted = (DocumentKind, ClusterView);

/// What [`dispatch`] made of a document.
enum Routed {
    Converted(Converted),
    /// A checked app list of `apps` apps in document order, not converted
    /// yet ([`MarathonApps`]).
    MarathonApps {
        kind: DocumentKind,
        apps: usize,
    },
}

impl From<Converted> for Routed {
    fn from(converted: Converted) -> Routed {
        Routed::Converted(converted)
    }
}

fn dispatch(
    bytes: &[u8],
    keys: &BTreeMap<String, IgnoredAny>,
    groups: &GroupsConfig,
    versions: &mut VersionCache,
) -> Result<Routed, DocumentError> {
    let has = |k: &str| keys.contains_key(k);
    let probe: TypeProbe = serde_json::from_slice(bytes).unwrap_or_default();
    // v1 message types are protobuf enum names (`SUBSCRIBED`, `GET_STATE`);
    // other documents use `type` for other things (CNI: `"bridge"`).
    let v1_type = probe
        .kind
        .as_ref()
        .and_then(MaybeString::text)
        .filter(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(str::to_string);
    if has("$schema") || (has("properties") && has("type")) {
        return Err(unsupported(
            "this is a JSON Schema (like Marathon's AppDefinition.json), not a document",
        ));
    }
    if let Some(event) = probe.event_type.as_ref().and_then(MaybeString::text) {
        return Err(unsupported(format!(
            "this is a single Marathon event ({event:?}); events only hint that something changed, the snapshot is /v2/apps?embed=apps.tasks"
        )));
    }
    if has("frameworks") && (has("master_hostname") || has("completed_executors")) {
        return Err(unsupported(
            "this is a Mesos agent's /state (tasks of one agent only); use the master's /master/state",
        ));
    }
    if has("args") && has("type") && (has("cniVersion") || has("name")) {
        return Err(unsupported(
            "this is a CNI network configuration (what Mesos hands to a CNI plugin), not a master document",
        ));
    }
    if has("apps") {
        return marathon_group(bytes, has("groups"), groups, versions);
    }
    if has("app") {
        let single: SingleApp = typed(bytes, DocumentKind::MarathonApp)?;
        return marathon_single(&single.app, groups, versions).map(Routed::from);
    }
    if has("frameworks") {
        let state: MasterState = typed(bytes, DocumentKind::MesosMasterState)?;
        return Ok(Routed::from((
            DocumentKind::MesosMasterState,
            mesos::view_from_master_state(&state, groups),
        )));
    }
    if v1_type.is_some() || has("subscribed") || has("get_state") || has("get_tasks") {
        return mesos_v1(bytes, v1_type.as_deref(), keys, groups).map(Routed::from);
    }
    if has("tasks") {
        return Err(unsupported(
            "this is a Marathon task list (/v2/tasks or /v2/apps/{id}/tasks), which has no app definitions and so no groups or network mode; use /v2/apps?embed=apps.tasks",
        ));
    }
    if has("containers") && has("id") {
        return Err(unsupported(
            "this is a Marathon pod definition; pods are not part of /v2/apps, run groupd with the Mesos source to cover pod tasks",
        ));
    }
    if has("id")
        && [
            "cmd",
            "args",
            "container",
            "ipAddress",
            "networks",
            "instances",
            "version",
            "cpus",
            "mem",
        ]
        .iter()
        .any(|k| has(k))
    {
        let app: App = typed(bytes, DocumentKind::MarathonApp)?;
        return marathon_single(&app, groups, versions).map(Routed::from);
    }
    Err(unsupported(format!(
        "top-level keys are {} (expected \"apps\", \"frameworks\", or a v1 \"type\" of SUBSCRIBED/GET_STATE/GET_TASKS)",
        describe_keys(keys)
    )))
}

/// A short, safe rendering of the top-level keys for an error message.
fn describe_keys(keys: &BTreeMap<String, IgnoredAny>) -> String {
    if keys.is_empty() {
        return "none (an empty object)".into();
    }
    let shown: Vec<String> = keys
        .keys()
        .take(10)
        .map(|k| format!("{:?}", k.chars().take(40).collect::<String>()))
        .collect();
    let more = if keys.len() > 10 {
        format!(" and {} more", keys.len() - 10)
    } else {
        String::new()
    };
    format!("[{}]{more}", shown.join(", "))
}

/// Deserialize the recognised shape; a type mismatch names the kind and place.
fn typed<T: DeserializeOwned>(bytes: &[u8], kind: DocumentKind) -> Result<T, DocumentError> {
    serde_json::from_slice(bytes).map_err(|e| invalid(kind, &e))
}

fn invalid(kind: DocumentKind, e: &serde_json::Error) -> DocumentError {
    DocumentError::Invalid {
        kind,
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    }
}

/// Check an app list; convert it only if its order needs the typed
/// document (converting the usual one is left to the caller: see
/// [`MarathonApps`]).
fn marathon_group(
    bytes: &[u8],
    nested: bool,
    groups: &GroupsConfig,
    versions: &mut VersionCache,
) -> Result<Routed, DocumentError> {
    let kind = if nested {
        DocumentKind::MarathonGroups
    } else {
        DocumentKind::MarathonApps
    };
    // Read twice, converting each app as it is read, so that the whole
    // document never exists in memory as typed values (a large cluster's
    // document is several times its JSON size that way). This first pass
    // only checks it: an invalid or task-less document must leave the
    // version cache as it was.
    let (mut apps, mut with_tasks) = (0usize, 0usize);
    let de = serde_json::Deserializer::from_slice(bytes);
    let in_order = walk_apps(de, kind, &mut |app| {
        apps += 1;
        with_tasks += usize::from(app.tasks.is_some());
    })?;
    // Without embedded tasks every app would look empty and all endpoints
    // would vanish from the view: refuse instead (fail-static).
    if apps > 0 && with_tasks == 0 {
        return Err(unsupported(format!(
            "the {apps} apps are listed without their tasks (no app has a \"tasks\" list); fetch /v2/apps?embed=apps.tasks (or /v2/groups?embed=group.apps.tasks)"
        )));
    }
    if !in_order {
        // Some group lists nested groups before its own apps: convert in the
        // order of `all_apps` (what matters when an app or task id repeats).
        let doc: AppGroup = typed(bytes, kind)?;
        return Ok(Routed::from((
            kind,
            marathon::convert_apps(doc.all_apps(), true, groups, versions),
        )));
    }
    Ok(Routed::MarathonApps { kind, apps })
}

/// [`marathon::walk_app_group`] over the whole document; a type mismatch
/// names the kind and place like [`typed`].
fn walk_apps<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    kind: DocumentKind,
    sink: &mut dyn FnMut(App),
) -> Result<bool, DocumentError> {
    marathon::walk_app_group(&mut de, sink)
        .and_then(|in_order| de.end().map(|()| in_order))
        .map_err(|e| invalid(kind, &e))
}

fn marathon_single(
    app: &App,
    groups: &GroupsConfig,
    versions: &mut VersionCache,
) -> Result<Converted, DocumentError> {
    if app.tasks.is_none() {
        return Err(unsupported(format!(
            "this is the Marathon app definition {:?} without tasks; fetch /v2/apps?embed=apps.tasks",
            app.id
        )));
    }
    Ok((
        DocumentKind::MarathonApp,
        marathon::convert_apps([app], false, groups, versions),
    ))
}

fn mesos_v1(
    bytes: &[u8],
    v1_type: Option<&str>,
    keys: &BTreeMap<String, IgnoredAny>,
    groups: &GroupsConfig,
) -> Result<Converted, DocumentError> {
    let kind = match v1_type {
        Some("SUBSCRIBED") => DocumentKind::MesosSubscribed,
        Some("GET_STATE") => DocumentKind::MesosGetState,
        Some("GET_TASKS") => DocumentKind::MesosGetTasks,
        None if keys.contains_key("subscribed") => DocumentKind::MesosSubscribed,
        None if keys.contains_key("get_state") => DocumentKind::MesosGetState,
        None if keys.contains_key("get_tasks") => DocumentKind::MesosGetTasks,
        Some(other) => {
            return Err(unsupported(format!(
                "this is a single Mesos {:?} message; use the SUBSCRIBED event (the first record of a SUBSCRIBE stream) or a GET_STATE response",
                other.chars().take(40).collect::<String>()
            )))
        }
        None => return Err(unsupported("a Mesos v1 message without a type")),
    };
    let message: V1Message = typed(bytes, kind)?;
    let agent_side = "this is an agent's response (get_tasks.launched_tasks: the tasks of one agent only); ask the master";
    match kind {
        DocumentKind::MesosSubscribed => {
            let Some(state) = message.subscribed.and_then(|s| s.get_state) else {
                return Err(unsupported(
                    "this SUBSCRIBED event has no get_state (a scheduler API subscription?); subscribe to the master's operator API (/api/v1)",
                ));
            };
            Ok((kind, mesos::view_from_get_state(&state, groups)))
        }
        DocumentKind::MesosGetState => {
            let state = message.get_state.unwrap_or_default();
            if state.get_tasks.launched_tasks.is_some() {
                return Err(unsupported(agent_side));
            }
            Ok((kind, mesos::view_from_get_state(&state, groups)))
        }
        _ => {
            let tasks = message.get_tasks.unwrap_or_default();
            if tasks.launched_tasks.is_some() {
                return Err(unsupported(agent_side));
            }
            Ok((
                kind,
                mesos::view_from_get_tasks(&tasks, &mesos::Context::default(), groups),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterView, DocumentError> {
        parse_document(
            text.as_bytes(),
            &GroupsConfig::default(),
            &mut VersionCache::default(),
        )
    }

    #[test]
    fn empty_and_whitespace_documents_are_errors() {
        assert_eq!(parse(""), Err(DocumentError::Empty));
        assert_eq!(parse(" \n\t "), Err(DocumentError::Empty));
    }

    #[test]
    fn truncated_document_is_reported_as_truncated() {
        let err = parse("{\"apps\": [").expect_err("truncated");
        assert!(
            matches!(err, DocumentError::Truncated { line: 1, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("half-written"), "{err}");
    }

    #[test]
    fn malformed_document_names_line_and_column() {
        let err = parse("{\"apps\": [}\n").expect_err("malformed");
        let DocumentError::Malformed { line, column, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!((*line, *column), (1, 11));
        assert!(
            err.to_string()
                .starts_with("malformed JSON at line 1 column 11: "),
            "{err}"
        );
    }

    #[test]
    fn text_that_is_not_json_is_named() {
        let err = parse("### GET_STATE\n").expect_err("markdown");
        assert_eq!(
            err,
            DocumentError::NotJson {
                start: "### GET_STATE".into()
            }
        );
    }

    #[test]
    fn event_stream_and_recordio_are_recognised() {
        assert_eq!(
            parse("event: event_stream_attached\r\ndata: {}\r\n\r\n"),
            Err(DocumentError::EventStream)
        );
        assert_eq!(
            parse("20\n{\"type\":\"HEARTBEAT\"}"),
            Err(DocumentError::RecordIo)
        );
    }

    #[test]
    fn two_documents_are_rejected_with_the_position_of_the_second() {
        let err = parse("{\"type\":\"HEARTBEAT\"}\n{\"type\":\"HEARTBEAT\"}\n").expect_err("two");
        assert_eq!(err, DocumentError::MultipleDocuments { line: 2, column: 1 });
    }

    #[test]
    fn non_object_documents_are_rejected() {
        for (text, what) in [
            ("[]", "array"),
            ("\"x\"", "string"),
            ("null", "null"),
            ("42", "number"),
            ("true", "boolean"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.to_string().contains(what), "{err}");
        }
    }

    #[test]
    fn unknown_object_lists_its_keys() {
        let err = parse("{\"hello\": 1, \"world\": [1e400]}").expect_err("unknown");
        let text = err.to_string();
        assert!(text.starts_with("not a Marathon /v2/apps?embed=apps.tasks, Mesos /master/state or SUBSCRIBE snapshot document: "), "{text}");
        assert!(text.contains("\"hello\", \"world\""), "{text}");
    }

    #[test]
    fn wrong_type_in_a_recognised_document_names_kind_and_place() {
        let err = parse("{\"apps\": [{\"id\": 5}]}").expect_err("bad id");
        let DocumentError::Invalid {
            kind, line, column, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!((*kind, *line), (DocumentKind::MarathonApps, 1));
        assert!(*column > 1);
    }

    #[test]
    fn empty_cluster_documents_give_empty_views() {
        for text in [
            "{\"apps\": []}",
            "{\"frameworks\": []}",
            "{\"type\":\"SUBSCRIBED\",\"subscribed\":{\"get_state\":{\"get_tasks\":{}}}}",
            "{\"get_state\":{},\"type\":\"GET_STATE\"}",
        ] {
            let view = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(view.tasks.is_empty());
        }
    }

    #[test]
    fn utf8_byte_order_mark_is_skipped() {
        assert!(parse("\u{feff}{\"apps\": []}").is_ok());
    }

    #[test]
    fn duplicate_ips_become_conflicts_not_errors() {
        let doc = r#"{"apps":[{"id":"/a","ipAddress":{},"tasks":[
            {"id":"a.1","state":"TASK_RUNNING","ipAddresses":[{"ipAddress":"9.0.0.1"}]},
            {"id":"a.2","state":"TASK_RUNNING","ipAddresses":[{"ipAddress":"9.0.0.1"},{"ipAddress":"9.0.0.2"}]},
            {"id":"a.3","state":"TASK_KILLED","ipAddresses":[{"ipAddress":"9.0.0.2"}]}]}]}"#;
        let view = parse(doc).expect("parses");
        assert_eq!(view.tasks.len(), 3);
        assert_eq!(view.conflicts.len(), 1, "{:?}", view.conflicts);
        let conflict = &view.conflicts[0];
        assert_eq!(conflict.ip.to_string(), "9.0.0.1");
        assert_eq!(conflict.tasks, vec!["a.1".to_string(), "a.2".to_string()]);
        assert!(conflict.to_string().contains("a.1, a.2"));
    }

    #[test]
    fn marathon_apps_without_embedded_tasks_are_refused() {
        let err = parse("{\"apps\": [{\"id\": \"/a\", \"instances\": 3}]}").expect_err("no tasks");
        assert!(err.to_string().contains("embed=apps.tasks"), "{err}");
    }

    #[test]
    fn agent_side_get_state_is_refused() {
        let err =
            parse("{\"type\":\"GET_STATE\",\"get_state\":{\"get_tasks\":{\"launched_tasks\":[]}}}")
                .expect_err("agent");
        assert!(err.to_string().contains("one agent"), "{err}");
    }

    #[test]
    fn single_mesos_event_is_refused_with_advice() {
        let err = parse("{\"type\":\"HEARTBEAT\"}").expect_err("event");
        assert!(err.to_string().contains("SUBSCRIBED event"), "{err}");
    }

    /// What `/v2/apps` and `/v2/groups` documents gave when they were
    /// deserialized whole, before they were read app by app.
    fn whole_document(
        text: &str,
        versions: &mut VersionCache,
    ) -> Result<ClusterView, DocumentError> {
        let keys = top_level_keys(text.as_bytes())?;
        let kind = if keys.contains_key("groups") {
            DocumentKind::MarathonGroups
        } else {
            DocumentKind::MarathonApps
        };
        let doc: AppGroup = typed(text.as_bytes(), kind)?;
        let apps = doc.all_apps();
        if !apps.is_empty() && apps.iter().all(|a| a.tasks.is_none()) {
            return Err(unsupported(format!(
                "the {} apps are listed without their tasks (no app has a \"tasks\" list); fetch /v2/apps?embed=apps.tasks (or /v2/groups?embed=group.apps.tasks)",
                apps.len()
            )));
        }
        let mut view = marathon::convert_apps(apps, true, &GroupsConfig::default(), versions);
        view.conflicts = view.ip_conflicts();
        Ok(view)
    }

    #[test]
    fn reading_app_by_app_gives_what_the_whole_document_gave() {
        let app = |id: &str, version: &str, group: &str, task: &str, ip: &str| {
            format!(
                r#"{{"id":"{id}","version":"{version}","ipAddress":{{"groups":["{group}"]}},"tasks":[{{"id":"{task}","version":"v1","state":"TASK_RUNNING","ipAddresses":[{{"ipAddress":"{ip}"}}]}}]}}"#
            )
        };
        let a = app("/a", "v1", "ga", "t.1", "9.0.0.1");
        let b = app("/b", "v1", "gb", "t.2", "9.0.0.2");
        // Same task id as `a`, other groups: the order of conversion shows.
        let a2 = app("/a2", "v1", "gz", "t.1", "9.0.0.1");
        let bare = r#"{"id":"/n","instances":1}"#;
        let docs = [
            format!(r#"{{"apps":[{a},{b},{a2}]}}"#),
            format!(r#"{{"apps":[{a}],"groups":[{{"apps":[{a2}],"groups":[{{"apps":[{b}]}}]}}]}}"#),
            format!(r#"{{"groups":[{{"apps":[{a2}]}}],"apps":[{a}]}}"#),
            format!(r#"{{"groups":[],"apps":[{a}],"groups":[]}}"#),
            format!(r#"{{"apps":[{a}],"apps":[{b}]}}"#),
            format!(r#"{{"apps":null,"groups":[[[{a}],[[[{a2}]]]],null]}}"#),
            format!(r#"{{"apps":[{a}],"groups":[[[{b}],[],[]]]}}"#),
            format!(r#"{{"\u0061pps":[{a}],"x":{{"apps":5}}}}"#),
            format!(r#"{{"apps":[{bare}],"groups":[{{"apps":[{bare}]}}]}}"#),
            format!(r#"{{"apps":[{bare},{a}]}}"#),
            format!(r#"{{"apps":[{a},{{"id":"/x","tasks":[{{"id":1}}]}}]}}"#),
            format!(r#"{{"apps":[{a}],"groups":5}}"#),
            format!(r#"{{"apps":[{a}],"groups":[5]}}"#),
            format!(r#"{{"apps":[{a}],"groups":[{{"apps":{{}}}}]}}"#),
            r#"{"apps":{}}"#.to_string(),
        ];
        let follow_up = format!(
            r#"{{"apps":[{}]}}"#,
            app("/a", "v2", "new", "t.1", "9.0.0.1")
                .replace("\"v2\",\"ipAddress", "\"v2\",\"x\":0,\"ipAddress")
        );
        for doc in &docs {
            let (mut old, mut new) = (VersionCache::default(), VersionCache::default());
            let expected = whole_document(doc, &mut old);
            let got = parse_document(doc.as_bytes(), &GroupsConfig::default(), &mut new);
            assert_eq!(got, expected, "{doc}");
            assert_eq!(new.len(), old.len(), "{doc}");
            // The caches remember the same versions.
            let expected = whole_document(&follow_up, &mut old);
            let got = parse_document(follow_up.as_bytes(), &GroupsConfig::default(), &mut new);
            assert_eq!(got, expected, "{doc} then {follow_up}");
        }
    }

    #[test]
    fn reading_app_by_app_agrees_on_the_marathon_fixtures() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut checked = 0;
        for dir in ["tests/fixtures/marathon/apps", "fuzz/seeds/marathon_json"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(text) = std::fs::read_to_string(entry.path()) else {
                    continue;
                };
                let Ok(keys) = top_level_keys(text.as_bytes()) else {
                    continue;
                };
                if !keys.contains_key("apps") || check_single_json_value(text.as_bytes()).is_err() {
                    continue;
                }
                let expected = whole_document(&text, &mut VersionCache::default());
                let got = parse_document(
                    text.as_bytes(),
                    &GroupsConfig::default(),
                    &mut VersionCache::default(),
                );
                assert_eq!(got, expected, "{}", entry.path().display());
                checked += 1;
            }
        }
        assert!(checked > 0, "no Marathon fixtures found");
    }

    /// Gives its bytes `step` at a time (a file read in small pieces).
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.bytes.len());
            let (now, rest) = self.bytes.split_at(n);
            buf[..n].copy_from_slice(now);
            self.bytes = rest;
            Ok(n)
        }
    }

    #[test]
    fn an_app_list_converted_from_a_second_read_is_the_parsed_document() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let fixture = std::fs::read(root.join(
            "tests/fixtures/marathon/apps/apps-embed-tasks-1.5-container-bridge.marathon-lb.json",
        ))
        .expect("fixture");
        let mut with_bom = b"\xEF\xBB\xBF".to_vec();
        with_bom.extend_from_slice(&fixture);
        let docs: [&[u8]; 4] = [
            &fixture,
            &with_bom,
            b" {\"apps\":[]} ",
            b"\xEF\xBB\xBF{\"apps\":[]}",
        ];
        let groups = GroupsConfig::default();
        for doc in docs {
            let expected = parse_document_kind(doc, &groups, &mut VersionCache::default())
                .expect("a valid document");
            for step in [1, 2, 3, 7, 1 << 20] {
                let mut versions = VersionCache::default();
                let Ok(Prepared::MarathonApps(apps)) =
                    prepare_document(doc, &groups, &mut versions)
                else {
                    panic!("an app list is left to convert");
                };
                assert!(versions.is_empty(), "checking learns nothing");
                let got = apps
                    .convert(Trickle { bytes: doc, step }, &groups, &mut versions)
                    .expect("the same bytes convert");
                assert_eq!(got.kind, expected.kind);
                assert_eq!(got.view, expected.view, "step {step}");
            }
        }
        // Anything else is parsed at once.
        let mesos = br#"{"frameworks":[]}"#;
        assert!(matches!(
            prepare_document(mesos, &groups, &mut VersionCache::default()),
            Ok(Prepared::Parsed(_))
        ));
        // Other bytes on the second read: an error, not a panic.
        let Ok(Prepared::MarathonApps(apps)) =
            prepare_document(b"{\"apps\":[]}", &groups, &mut VersionCache::default())
        else {
            panic!("an app list");
        };
        let other = Trickle {
            bytes: b"{\"apps\":[",
            step: 4,
        };
        assert!(apps
            .convert(other, &groups, &mut VersionCache::default())
            .is_err());
    }

    #[test]
    fn strip_position_only_strips_serde_suffix() {
        assert_eq!(
            strip_position("expected value at line 1 column 2"),
            "expected value"
        );
        assert_eq!(strip_position("look at line up"), "look at line up");
    }
}
