//! Connections of the simulated master: routing, auth, leadership,
//! misbehaviour, and the `SUBSCRIBE` RecordIO stream. HTTP parsing and the
//! redirect, hang and reset helpers are the Marathon simulator's.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};

use super::super::http::{self, ReadError, Request, Response};
use super::super::marathon::lock;
use super::super::server::{hang, redirect_location};
use super::{
    control, render, Auth, BusItem, Endpoint, Leadership, MesosController, Mode, Shared,
    StreamFault,
};

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, shared.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("mesos-sim: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        let request = match http::read_request(&mut stream, &mut buf).await {
            Ok(request) => request,
            Err(ReadError::Closed | ReadError::Io) => return,
            Err(ReadError::TooLarge) => {
                let r = Response::new(431, "text/plain", "request too large");
                let _ = stream.write_all(&r.to_bytes()).await;
                return;
            }
            Err(ReadError::Bad(why)) => {
                let r = Response::new(400, "text/plain", why).header("Connection", "close");
                let _ = stream.write_all(&r.to_bytes()).await;
                return;
            }
        };
        shared.requests.fetch_add(1, Ordering::Relaxed);
        let keep_alive = request.keep_alive();
        match handle(stream, &request, &shared).await {
            Some(s) if keep_alive => stream = s,
            Some(mut s) => {
                let _ = s.shutdown().await;
                return;
            }
            None => return,
        }
    }
}

/// What a request is for, once its body (the v1 call type) is known.
enum Target {
    Subscribe,
    Call(String),
    /// A v1 body that is not a call: 400 with Mesos' complaint.
    BadCall(String),
    State,
    Redirect,
    NotFound,
}

fn classify(request: &Request) -> Target {
    let path = request.path.trim_end_matches('/');
    match path {
        "/api/v1" | "/master/api/v1" => {
            let call: Result<Value, _> = serde_json::from_slice(&request.body);
            match call
                .as_ref()
                .ok()
                .and_then(|v| v.get("type"))
                .and_then(Value::as_str)
            {
                Some("SUBSCRIBE") => Target::Subscribe,
                Some(kind) => Target::Call(kind.to_string()),
                None => Target::BadCall(match call {
                    Err(e) => format!("Failed to parse body into JSON: {e}"),
                    Ok(_) => "Expecting 'type' to be present".to_string(),
                }),
            }
        }
        "/master/state" | "/state" | "/state.json" | "/master/state.json" => Target::State,
        "/master/redirect" | "/redirect" => Target::Redirect,
        _ => Target::NotFound,
    }
}

/// Serve one request; gives the stream back when it may carry another.
async fn handle(stream: TcpStream, request: &Request, shared: &Arc<Shared>) -> Option<TcpStream> {
    if request.path == "/_sim" || request.path.starts_with("/_sim/") {
        let controller = MesosController {
            shared: shared.clone(),
        };
        return write(stream, &control::handle(&controller, request)).await;
    }
    let target = classify(request);
    let endpoint = match target {
        Target::Subscribe => Some(Endpoint::Subscribe),
        Target::Call(_) | Target::BadCall(_) => Some(Endpoint::Api),
        Target::State => Some(Endpoint::State),
        Target::Redirect | Target::NotFound => None,
    };
    let mode = endpoint.and_then(|e| shared.take_mode(e));
    let subscribe = matches!(target, Target::Subscribe);
    match &mode {
        None => {}
        Some(Mode::Hang) => return hang_none(stream).await,
        Some(Mode::Silence) if !subscribe => return hang_none(stream).await,
        Some(Mode::Reset) => {
            reset(stream);
            return None;
        }
        Some(Mode::Status(code)) => return write(stream, &status(*code)).await,
        Some(Mode::RedirectTo(base)) => {
            return write(stream, &redirect(base, &request.target)).await
        }
        Some(Mode::GarbageRecord) if !subscribe => {
            return write(stream, &Response::new(200, "application/json", GARBAGE)).await;
        }
        Some(Mode::CutRecord | Mode::LyingLength) if !subscribe => {
            let full = respond(&target, request, shared);
            let mut bytes = full.head_bytes(Some(full.body.len().max(1) * 2));
            bytes.extend_from_slice(&full.body[..full.body.len() / 2]);
            let mut stream = stream;
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
            return None;
        }
        Some(_) => {}
    }
    if let Some(denied) = check_auth(request, shared) {
        return write(stream, &denied).await;
    }
    if endpoint.is_some() || matches!(target, Target::Redirect) {
        let leadership = lock(&shared.leadership).clone();
        match leadership {
            Leadership::Leader => {}
            Leadership::Redirect(base) => {
                return write(stream, &redirect(&base, &request.target)).await
            }
            Leadership::NoLeader => return write(stream, &status(503)).await,
        }
    }
    let api = matches!(
        target,
        Target::Subscribe | Target::Call(_) | Target::BadCall(_)
    );
    if api && shared.old_mesos.load(Ordering::Relaxed) {
        return write(stream, &Response::new(404, "text/plain", Vec::new())).await;
    }
    if subscribe {
        if let Some(refused) = check_call(request) {
            return write(stream, &refused).await;
        }
        subscription(stream, shared.clone(), mode).await;
        return None;
    }
    let response = respond(&target, request, shared);
    write(stream, &response).await
}

/// Something that is not JSON: what a misconfigured proxy sends.
const GARBAGE: &[u8] =
    b"<html><body><h1>502 Bad Gateway</h1></body></html>\n\x00\xff\xfe{\"type\":";

async fn hang_none(stream: TcpStream) -> Option<TcpStream> {
    hang(stream).await;
    None
}

fn reset(stream: TcpStream) {
    // SO_LINGER 0: close sends RST instead of FIN.
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn write(mut stream: TcpStream, response: &Response) -> Option<TcpStream> {
    match http::write_paced(&mut stream, &response.to_bytes(), None).await {
        Ok(()) => Some(stream),
        Err(_) => None,
    }
}

fn redirect(base: &str, target: &str) -> Response {
    Response::new(307, "text/plain", Vec::new())
        .header("Location", &redirect_location(base, target))
}

fn status(code: u16) -> Response {
    let text = match code {
        503 => "No leader elected",
        _ => http::reason(code),
    };
    let response = Response::new(code, "text/plain", text);
    if code == 401 {
        return response.header("WWW-Authenticate", "Basic realm=\"mesos\"");
    }
    response
}

fn check_auth(request: &Request, shared: &Shared) -> Option<Response> {
    let auth = shared.options.auth.as_ref()?;
    let given = request.header("authorization").unwrap_or("").trim();
    let ok = match auth {
        Auth::Basic { username, password } => {
            let expected = http::base64(format!("{username}:{password}").as_bytes());
            given.split_once(' ').is_some_and(|(scheme, value)| {
                scheme.eq_ignore_ascii_case("basic") && value.trim() == expected
            })
        }
        Auth::Token(token) => given
            .strip_prefix("token=")
            .is_some_and(|t| t.trim() == token),
    };
    (!ok).then(|| status(401))
}

/// The v1 API speaks JSON here; protobuf clients get 406 like from a
/// master that cannot serve the media type, non-POSTs 405.
fn check_call(request: &Request) -> Option<Response> {
    if request.method != "POST" {
        return Some(
            Response::new(
                405,
                "text/plain",
                "Expecting 'POST', received a different method",
            )
            .header("Allow", "POST"),
        );
    }
    let accept = request.header("accept").unwrap_or("application/json");
    if !(accept.contains("application/json") || accept.contains("*/*")) {
        return Some(Response::new(
            406,
            "text/plain",
            format!("Expecting 'Accept' to allow 'application/json'; got {accept:?}"),
        ));
    }
    None
}

fn respond(target: &Target, request: &Request, shared: &Shared) -> Response {
    match target {
        Target::State => {
            if request.method != "GET" && request.method != "POST" {
                return Response::new(405, "text/plain", "Expecting 'GET'");
            }
            let locked = lock(&shared.state);
            let body = render::master_state(&locked.cluster, shared.local_addr, &shared.master_id);
            Response::new(200, "application/json", body)
        }
        Target::Redirect => redirect(&format!("//{}", shared.local_addr), "/master"),
        Target::BadCall(why) => Response::new(400, "text/plain", why.clone()),
        Target::Call(kind) => {
            if let Some(refused) = check_call(request) {
                return refused;
            }
            match kind.as_str() {
                "GET_STATE" => {
                    let locked = lock(&shared.state);
                    Response::new(
                        200,
                        "application/json",
                        render::get_state_response(&locked.cluster),
                    )
                }
                other => Response::new(
                    400,
                    "text/plain",
                    format!("mesos-sim does not serve {other:?} (SUBSCRIBE and GET_STATE only)"),
                ),
            }
        }
        Target::Subscribe | Target::NotFound => Response::new(404, "text/plain", Vec::new()),
    }
}

/// `<len>\n<json>`, in a chunk of its own.
fn record(json: &[u8], declared: usize) -> Vec<u8> {
    let mut data = format!("{declared}\n").into_bytes();
    data.extend_from_slice(json);
    http::chunk(&data)
}

const HEARTBEAT: &[u8] = b"{\"type\":\"HEARTBEAT\"}";
/// How much a lying length line overstates.
const LIE: usize = 16;

/// Counts open streams for [`MesosController::subscribers`].
struct Subscriber<'a>(&'a Shared);

impl Drop for Subscriber<'_> {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn subscription(stream: TcpStream, shared: Arc<Shared>, mode: Option<Mode>) {
    let heartbeat = shared.options.heartbeat.max(Duration::from_millis(1));
    // Snapshot and bus membership under one lock: nothing missed or doubled.
    let (snapshot, mut rx) = {
        let locked = lock(&shared.state);
        (
            render::subscribed(&locked.cluster, heartbeat.as_secs_f64()),
            shared.bus.subscribe(),
        )
    };
    shared.subscribers.fetch_add(1, Ordering::Relaxed);
    let _count = Subscriber(&shared);
    let (mut reader, mut writer) = stream.into_split();
    let mut out =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    let snapshot = snapshot.into_bytes();
    match mode {
        Some(Mode::CutRecord) => {
            out.extend(format!("{:x}\r\n{}\n", snapshot.len() + 8, snapshot.len()).into_bytes());
            out.extend_from_slice(&snapshot[..snapshot.len() / 2]);
            let _ = writer.write_all(&out).await;
            let _ = writer.shutdown().await;
            return;
        }
        Some(Mode::GarbageRecord) => {
            out.extend(record(GARBAGE, GARBAGE.len()));
            out.extend(record(&snapshot, snapshot.len()));
        }
        Some(Mode::LyingLength) => out.extend(record(&snapshot, snapshot.len() + LIE)),
        _ => out.extend(record(&snapshot, snapshot.len())),
    }
    if writer.write_all(&out).await.is_err() {
        return;
    }
    let mut silent = matches!(mode, Some(Mode::Silence));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let mut sink = [0u8; 1024];
    let end = loop {
        tokio::select! {
            read = reader.read(&mut sink) => match read {
                // The client went away (anything it sends is ignored).
                Ok(0) | Err(_) => break End::Over,
                Ok(_) => {}
            },
            _ = ticker.tick(), if !silent => {
                if writer.write_all(&record(HEARTBEAT, HEARTBEAT.len())).await.is_err() {
                    break End::Over;
                }
            }
            item = rx.recv() => match item {
                Ok(item) => match &*item {
                    BusItem::Event { .. } if silent => {}
                    BusItem::Event { seq, kind, json } => {
                        if writer.write_all(&record(json.as_bytes(), json.len())).await.is_err() {
                            break End::Over;
                        }
                        shared.record_written(*seq, kind);
                    }
                    BusItem::Fault(StreamFault::Silence) => silent = true,
                    BusItem::Fault(fault) => match apply_fault(&mut writer, *fault).await {
                        End::Continue => {}
                        end => break end,
                    },
                },
                // A master drops subscribers that cannot keep up.
                Err(broadcast::error::RecvError::Lagged(_)) => break End::Over,
                Err(broadcast::error::RecvError::Closed) => break End::Over,
            }
        }
    };
    if let End::Reset = end {
        // Dropping a write half shuts it down (FIN) first; an RST needs
        // the whole socket back.
        if let Ok(stream) = reader.reunite(writer) {
            reset(stream);
        }
    }
}

enum End {
    Continue,
    Over,
    Reset,
}

/// Write a fault into an open stream.
async fn apply_fault(writer: &mut OwnedWriteHalf, fault: StreamFault) -> End {
    let bytes = match fault {
        StreamFault::Silence => return End::Continue,
        StreamFault::Garbage => record(GARBAGE, GARBAGE.len()),
        StreamFault::LyingLength => record(HEARTBEAT, HEARTBEAT.len() + LIE),
        StreamFault::Cut => {
            // The chunk and the record both promise more than is sent.
            let mut b = format!("{:x}\r\n{}\n", HEARTBEAT.len() + 8, HEARTBEAT.len()).into_bytes();
            b.extend_from_slice(&HEARTBEAT[..HEARTBEAT.len() / 2]);
            let _ = writer.write_all(&b).await;
            let _ = writer.shutdown().await;
            return End::Over;
        }
        StreamFault::Close => {
            let _ = writer.write_all(b"0\r\n\r\n").await;
            let _ = writer.shutdown().await;
            return End::Over;
        }
        StreamFault::Reset => return End::Reset,
    };
    match writer.write_all(&bytes).await {
        Ok(()) => End::Continue,
        Err(_) => End::Over,
    }
}
