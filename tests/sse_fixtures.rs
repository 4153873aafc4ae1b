//! The SSE parser against real `/v2/events` byte captures, fed whole, split
//! in two at every byte position, and byte by byte; and the Marathon event
//! model against every documented event body (docs/FORMATS.md §3).

use std::path::PathBuf;

use groupd::source::marathon::{parse_event, Event};
use groupd::source::sse::{SseEvent, SseParser};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/marathon/events")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<SseEvent> {
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(parser.feed(chunk).expect("a valid event stream"));
    }
    parser.finish();
    events
}

/// Whole, every 2-way split, byte by byte: always the same events.
fn assert_split_invariant(bytes: &[u8]) -> Vec<SseEvent> {
    let whole = parse_chunks([bytes]);
    for at in 0..=bytes.len() {
        let (a, b) = bytes.split_at(at);
        assert_eq!(parse_chunks([a, b]), whole, "split at byte {at}");
    }
    let bytewise = parse_chunks(bytes.chunks(1));
    assert_eq!(bytewise, whole, "byte by byte");
    whole
}

#[test]
fn crlf_capture_gives_one_attached_event() {
    let bytes = fixture("sse-single-event-crlf.async-worker.txt");
    assert!(
        bytes.windows(2).any(|w| w == b"\r\n"),
        "the capture is CRLF"
    );
    let events = assert_split_invariant(&bytes);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event, "event_stream_attached");
    assert!(events[0].data.starts_with('{') && events[0].data.ends_with('}'));
    assert!(!events[0].data.contains('\r'));
    assert!(matches!(
        parse_event(&events[0].event, &events[0].data),
        Ok(Event::Attached)
    ));
}

#[test]
fn docs_stream_gives_attached_and_two_status_updates() {
    let bytes = fixture("sse-stream-docs-example.marathon-docs.txt");
    let events = assert_split_invariant(&bytes);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "event_stream_attached",
            "status_update_event",
            "status_update_event"
        ]
    );
    for e in &events[1..] {
        match parse_event(&e.event, &e.data) {
            Ok(Event::StatusUpdate(s)) => {
                assert!(s.app_id.as_deref().is_some_and(|a| a.starts_with('/')));
                assert!(s.task_status.starts_with("TASK_"), "{s:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_same_stream_with_lf_cr_and_extra_blank_lines_parses_alike() {
    // The docs example is LF; rewrite it with the other line ends.
    let original = fixture("sse-stream-docs-example.marathon-docs.txt");
    let base = parse_chunks([original.as_slice()]);
    let lf = String::from_utf8(original)
        .expect("utf-8")
        .replace("\r\n", "\n");
    let variants = [
        lf.replace('\n', "\r\n"),
        lf.replace('\n', "\r"),
        format!(": hello\n\n\n{}\n\n", lf.replace("\n\n", "\n\n\r\n\n")),
    ];
    for v in &variants {
        assert_eq!(assert_split_invariant(v.as_bytes()), base, "{v:?}");
    }
}

#[test]
fn every_documented_event_body_is_accepted() {
    for name in [
        "event-bus-doc-examples-1.10.jsonl",
        "event-bus-doc-examples-1.4.13.jsonl",
    ] {
        let text = String::from_utf8(fixture(name)).expect("utf-8");
        let mut handled = 0;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let ty: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            let ty = ty["eventType"].as_str().expect("eventType").to_string();
            // As the default-named SSE event (body decides) and as named.
            for sse_name in ["message", ty.as_str()] {
                let event = parse_event(sse_name, line)
                    .unwrap_or_else(|e| panic!("{name} line {}: {e}", n + 1));
                let other = matches!(event, Event::Other(_));
                let expect_handled = matches!(
                    ty.as_str(),
                    "status_update_event"
                        | "app_terminated_event"
                        | "api_post_event"
                        | "deployment_success"
                        | "deployment_info"
                        | "instance_changed_event"
                        | "unknown_instance_terminated_event"
                        | "event_stream_attached"
                        | "pod_created_event"
                        | "pod_updated_event"
                        | "pod_deleted_event"
                );
                assert_eq!(!other, expect_handled, "{name} line {}: {event:?}", n + 1);
                if let Event::ApiPost { app } = &event {
                    assert_eq!(app.as_ref().map(|a| &*a.id), Some("/my-app"));
                }
                handled += usize::from(!other);
            }
        }
        assert!(handled >= 4, "{name}: {handled}");
    }
}

#[test]
fn garbage_body_of_a_handled_event_is_an_error() {
    assert!(parse_event("status_update_event", "{not json").is_err());
    assert!(parse_event("status_update_event", r#"{"taskId": 5}"#).is_err());
    assert!(parse_event("message", "nope").is_err());
    // Types groupd does not read are not parsed at all.
    assert!(matches!(
        parse_event("health_status_changed_event", "{not json"),
        Ok(Event::Other(_))
    ));
}
