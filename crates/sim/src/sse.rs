//! `GET /v2/events`: the event stream as Marathon's Jetty EventSourceServlet
//! writes it. Chunked transfer encoding, one chunk per frame
//! (`event: <type>\r\ndata: <json>\r\n\r\n`, no `id:` lines), a bare `\r\n`
//! chunk as keep-alive, and `event_stream_attached` published on the bus
//! when a client attaches (so every attached client sees it, and
//! `event_type` filters apply to it, as in Marathon).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;

use super::cluster::Emitted;
use super::http::{self, Request};
use super::marathon::{BusEvent, Shared};
use super::render;

/// Status line and headers of an event stream.
pub fn stream_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\n\
      Content-Type: text/event-stream;charset=utf-8\r\n\
      Cache-Control: no-cache, no-store, must-revalidate\r\n\
      Transfer-Encoding: chunked\r\n\r\n"
        .to_vec()
}

/// One SSE frame. Multi-line data becomes several `data:` lines, which
/// clients join with `\n`.
fn frame(event_type: &str, data: &str) -> Vec<u8> {
    let mut out = format!("event: {event_type}\r\n");
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.trim_end_matches('\r'));
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Counts attached streams for as long as it lives.
struct Attached(Arc<Shared>);

impl Attached {
    fn new(shared: Arc<Shared>) -> Attached {
        shared.sse_clients.fetch_add(1, Ordering::Relaxed);
        Attached(shared)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.sse_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serve the stream until the client leaves, the sim stops, a write fails
/// or a [`super::marathon::Mode::DropStream`] budget runs out. `budget`:
/// frames left before the connection is dropped.
pub async fn stream(
    stream: TcpStream,
    request: &Request,
    peer: SocketAddr,
    shared: Arc<Shared>,
    pace: Option<u32>,
    mut budget: Option<u32>,
) {
    let filter: Vec<String> = request
        .query_all("event_type")
        .map(str::to_string)
        .collect();
    let wanted = |event: &BusEvent| {
        event.raw.is_some() || filter.is_empty() || filter.contains(&event.event_type)
    };
    // Subscribe before attaching so this client sees its own attach event.
    let mut events = shared.bus.subscribe();
    let mut drops = shared.drop_signal.subscribe();
    drops.borrow_and_update();
    let (mut reader, mut writer) = stream.into_split();
    if http::write_paced(&mut writer, &stream_head(), pace)
        .await
        .is_err()
    {
        return;
    }
    if budget == Some(0) {
        return;
    }
    shared.publish(vec![Emitted {
        event_type: "event_stream_attached".into(),
        data: render::event_stream_attached(&peer.ip().to_string(), &render::now_iso()),
    }]);
    // Counted only now: whoever waits for a client to attach (and then
    // emits) must find the attach event already in the stream.
    let _attached = Attached::new(shared.clone());
    let period = shared
        .options
        .keepalive
        .max(std::time::Duration::from_millis(1));
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // After a slow (trickled) write, one keep-alive, not a burst of them.
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sink = [0u8; 512];
    loop {
        tokio::select! {
            received = events.recv() => {
                let event = match received {
                    Ok(event) => event,
                    Err(RecvError::Lagged(missed)) => {
                        // Marathon closes slow receivers too ("Buffer is full").
                        tracing::warn!("marathon-sim: event stream to {peer} fell {missed} events behind; closing it");
                        return;
                    }
                    Err(RecvError::Closed) => return,
                };
                if !wanted(&event) {
                    continue;
                }
                let bytes = match (&event.raw, &event.data) {
                    (Some(raw), _) => raw.clone(),
                    (None, data) => frame(&event.event_type, data.as_deref().unwrap_or("")),
                };
                if http::write_paced(&mut writer, &http::chunk(&bytes), pace).await.is_err() {
                    return;
                }
                shared.record_written(event.seq, &event.event_type);
                if let Some(left) = budget.as_mut() {
                    *left = left.saturating_sub(1);
                    if *left == 0 {
                        return;
                    }
                }
            }
            _ = keepalive.tick() => {
                if http::write_paced(&mut writer, &http::chunk(b"\r\n"), pace).await.is_err() {
                    return;
                }
            }
            changed = drops.changed() => {
                if changed.is_err() {
                    return;
                }
                let after = drops.borrow_and_update().after_events;
                let left = budget.map_or(after, |b| b.min(after));
                if left == 0 {
                    return;
                }
                budget = Some(left);
            }
            read = reader.read(&mut sink) => {
                // The client sends nothing on a stream; EOF means it left.
                if matches!(read, Ok(0) | Err(_)) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_crlf_terminated_and_split_multiline_data() {
        assert_eq!(frame("x", "{}"), b"event: x\r\ndata: {}\r\n\r\n");
        assert_eq!(
            frame("x", "a\nb"),
            b"event: x\r\ndata: a\r\ndata: b\r\n\r\n"
        );
    }
}
