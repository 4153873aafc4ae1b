//! The fuzz harnesses, one function per target. `tests/fuzz_regressions.rs`
//! includes this file too (`#[path]`), so the committed seeds and crashers
//! run through exactly the same checks in `cargo test`. Only `groupd` and
//! `serde_json` are used here.

use groupd::config::GroupsConfig;
use groupd::source::document::parse_document;
use groupd::source::recordio::RecordIoParser;
use groupd::source::sse::SseParser;
use groupd::source::wire::marathon::{convert_app, VersionCache};
use groupd::source::wire::mesos::{convert_task, view_from_get_state, Context, V1Message};

/// Small limits so the fuzzer reaches the "too large" paths too.
const MAX_RECORD: usize = 4096;
const MAX_LINE: usize = 4096;

/// Chunk boundaries derived from the first bytes of the input; the input
/// proper is what follows them.
fn split(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let (head, body) = data.split_at(data.len().min(3));
    let mut cuts: Vec<usize> = head
        .iter()
        .enumerate()
        .map(|(i, &b)| (b as usize * (i + 7)) % (body.len() + 1))
        .collect();
    cuts.sort_unstable();
    (cuts, body)
}

fn chunks<'a>(body: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    for &cut in cuts {
        out.push(&body[at..cut]);
        at = cut;
    }
    out.push(&body[at..]);
    out
}

type RecordIoOutcome = Result<(Vec<Vec<u8>>, Result<(), String>), String>;

/// What a RecordIO stream frames to: all records and how it ended, or the
/// first error (records completed in the failing feed are not returned, so
/// on error only the error is compared).
fn recordio_frame<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> RecordIoOutcome {
    let mut parser = RecordIoParser::new(MAX_RECORD);
    let mut records = Vec::new();
    for part in parts {
        records.extend(parser.feed(part).map_err(|e| e.to_string())?);
        assert!(parser.pending() <= MAX_RECORD);
    }
    // Empty records count (liveness) but carry nothing and are not returned.
    assert!(parser.records() >= records.len() as u64);
    for r in &records {
        assert!(r.len() <= MAX_RECORD);
    }
    let end = parser.finish().map_err(|e| e.to_string());
    Ok((records, end))
}

/// RecordIO: the same records (or the same error) whole, split at the
/// derived positions, and byte by byte.
pub fn recordio(data: &[u8]) {
    let (cuts, body) = split(data);
    let whole = recordio_frame([body]);
    let split = recordio_frame(chunks(body, &cuts));
    assert_eq!(whole, split, "cuts {cuts:?}");
    if body.len() <= 2048 {
        let bytes = recordio_frame(body.chunks(1));
        assert_eq!(whole, bytes, "byte by byte");
    }
}

type SseOutcome = Result<Vec<(String, String)>, String>;

fn sse_parse<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> SseOutcome {
    let mut parser = SseParser::new(MAX_LINE);
    let mut events = Vec::new();
    for part in parts {
        for e in parser.feed(part).map_err(|e| e.to_string())? {
            assert!(e.data.len() <= MAX_LINE);
            events.push((e.event, e.data));
        }
    }
    parser.finish();
    Ok(events)
}

/// SSE: the same events (or the same error) whole, split at the derived
/// positions, and byte by byte.
pub fn sse(data: &[u8]) {
    let (cuts, body) = split(data);
    let whole = sse_parse([body]);
    let split = sse_parse(chunks(body, &cuts));
    assert_eq!(whole, split, "cuts {cuts:?}");
    if body.len() <= 2048 {
        let bytes = sse_parse(body.chunks(1));
        assert_eq!(whole, bytes, "byte by byte");
    }
}

/// Marathon: the input as a document (`/v2/apps`, `/v2/groups`, an app, a
/// pod, `/v2/tasks`); and as an event, `name\ndata`, through `parse_event`
/// and, for a posted app, the task conversion.
pub fn marathon_json(data: &[u8]) {
    let groups = GroupsConfig::default();
    let mut versions = VersionCache::default();
    let _ = parse_document(data, &groups, &mut versions);
    // Twice: the second parse sees the versions the first one learnt.
    let _ = parse_document(data, &groups, &mut versions);

    let text = String::from_utf8_lossy(data);
    let (name, body) = text.split_once('\n').unwrap_or(("message", &text));
    for name in [name, "message"] {
        if let Ok(groupd::source::marathon::Event::ApiPost { app: Some(app) }) =
            groupd::source::marathon::parse_event(name, body)
        {
            let _ = convert_app(&app, &groups, &mut versions);
        }
    }
}

/// Mesos: the input as a document (`/master/state`, `GET_STATE`, …) and as
/// a v1 operator API message, converted the way the SUBSCRIBE stream is.
pub fn mesos_json(data: &[u8]) {
    let groups = GroupsConfig::default();
    let _ = parse_document(data, &groups, &mut VersionCache::default());

    let Ok(message) = serde_json::from_slice::<V1Message>(data) else {
        return;
    };
    let state = message
        .subscribed
        .as_ref()
        .and_then(|s| s.get_state.as_ref())
        .or(message.get_state.as_ref());
    let ctx = match state {
        Some(state) => {
            let _ = view_from_get_state(state, &groups);
            Context::from_get_state(state)
        }
        None => Context::default(),
    };
    if let Some(added) = &message.task_added {
        let mut task = added.task.clone();
        let _ = convert_task(&task, &ctx, &groups);
        if let Some(updated) = &message.task_updated {
            for _ in 0..3 {
                task.apply_update(updated);
            }
            let _ = convert_task(&task, &ctx, &groups);
        }
    }
}
