//! Connections: the accept loop, routing of `/v2/*`, auth, misbehaviour.
//! The event stream is in [`super::sse`], the control API in
//! [`super::control`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::http::{self, ReadError, Request, Response};
use super::marathon::{lock, Auth, Endpoint, Mode, Shared, SimController};
use super::{control, sse};

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, peer, shared.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("marathon-sim: accept failed: {e}");
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

/// What to do with the connection after a request.
enum Next {
    KeepAlive,
    Close,
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        let request = match http::read_request(&mut stream, &mut buf).await {
            Ok(request) => request,
            Err(ReadError::Closed | ReadError::Io) => return,
            Err(ReadError::TooLarge) => {
                let r = Response::message(431, "request too large");
                let _ = stream.write_all(&r.to_bytes()).await;
                return;
            }
            Err(ReadError::Bad(why)) => {
                let r = Response::message(400, &why).header("Connection", "close");
                let _ = stream.write_all(&r.to_bytes()).await;
                return;
            }
        };
        shared.requests.fetch_add(1, Ordering::Relaxed);
        let keep_alive = request.keep_alive();
        let next = match handle(stream, &request, peer, &shared).await {
            Some((s, Next::KeepAlive)) if keep_alive => s,
            Some((mut s, _)) => {
                let _ = s.shutdown().await;
                return;
            }
            None => return,
        };
        stream = next;
    }
}

/// Serve one request. Gives the stream back when the connection may carry
/// another request; `None` when it was consumed (stream, hang, reset).
async fn handle(
    mut stream: TcpStream,
    request: &Request,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Option<(TcpStream, Next)> {
    if request.path == "/_sim" || request.path.starts_with("/_sim/") {
        let controller = SimController {
            shared: shared.clone(),
        };
        let response = control::handle(&controller, request);
        return write(stream, &response, None).await;
    }
    let endpoint = classify(&request.path);
    let mode = endpoint.and_then(|e| shared.take_mode(e));
    let events = endpoint == Some(Endpoint::Events);
    let mut pace = None;
    let mut budget = None;
    match mode {
        None => {}
        Some(Mode::Hang) => {
            hang(stream).await;
            return None;
        }
        Some(Mode::Reset) => {
            // SO_LINGER 0: close sends RST instead of FIN.
            let _ = stream.set_zero_linger();
            drop(stream);
            return None;
        }
        Some(Mode::Status(code)) => {
            return write(stream, &status_response(code, shared), None).await;
        }
        Some(Mode::RedirectTo(base)) => {
            let location = redirect_location(&base, &request.target);
            let response =
                Response::new(307, "text/plain", Vec::new()).header("Location", &location);
            return write(stream, &response, None).await;
        }
        Some(Mode::Garbage) if events => {
            let mut bytes = sse::stream_head();
            bytes.extend(http::chunk(GARBAGE));
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
            return None;
        }
        Some(Mode::Garbage) => {
            let response = Response::json(200, GARBAGE.to_vec());
            return write(stream, &response, None).await;
        }
        Some(Mode::Truncated) if events => {
            // A chunk that promises 1 KiB and delivers a half frame.
            let mut bytes = sse::stream_head();
            bytes.extend_from_slice(b"400\r\nevent: event_stream_attached\r\ndata: {\"remoteAdd");
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
            return None;
        }
        Some(Mode::Truncated) => {
            let response = respond(request, shared);
            let mut bytes = response.head_bytes(Some(response.body.len().max(1) * 2));
            bytes.extend_from_slice(&response.body[..response.body.len() / 2]);
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
            return None;
        }
        Some(Mode::Trickle { bytes_per_sec }) => pace = Some(bytes_per_sec),
        Some(Mode::DropStream { after_events }) => budget = Some(after_events),
    }
    if let Some(denied) = check_auth(request, shared) {
        return write(stream, &denied, pace).await;
    }
    // A standby Marathon 1.7+ proxies every API request to the leader (and
    // redirects `/v2/events`). The simulator redirects them all: clients
    // follow redirects, and a standby that answered from its own (empty)
    // state would tell them every task is gone.
    if request.path == "/v2" || request.path.starts_with("/v2/") {
        let standby = lock(&shared.standby).clone();
        if let Some(leader) = standby {
            let location = redirect_location(&leader, &request.target);
            let response =
                Response::new(307, "text/plain", Vec::new()).header("Location", &location);
            return write(stream, &response, pace).await;
        }
    }
    if events {
        let accepts = request
            .header("accept")
            .is_some_and(|a| a.to_ascii_lowercase().contains("text/event-stream"));
        if request.method != "GET" || !accepts {
            let response = Response::message(
                405,
                "the event stream needs GET with Accept: text/event-stream",
            );
            return write(stream, &response, pace).await;
        }
        sse::stream(stream, request, peer, shared.clone(), pace, budget).await;
        return None;
    }
    let response = respond(request, shared);
    write(stream, &response, pace).await
}

/// Something that is clearly not JSON (nor SSE): what a misconfigured proxy
/// in front of Marathon sends.
const GARBAGE: &[u8] =
    b"<html><body><h1>502 Bad Gateway</h1></body></html>\n\x00\xff\xfe{\"apps\":[";

async fn write(
    mut stream: TcpStream,
    response: &Response,
    pace: Option<u32>,
) -> Option<(TcpStream, Next)> {
    match http::write_paced(&mut stream, &response.to_bytes(), pace).await {
        Ok(()) => Some((stream, Next::KeepAlive)),
        Err(_) => Some((stream, Next::Close)),
    }
}

/// Hold the connection without answering until the client gives up.
pub(crate) async fn hang(mut stream: TcpStream) {
    let mut sink = [0u8; 1024];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            return;
        }
    }
}

fn classify(path: &str) -> Option<Endpoint> {
    let path = path.trim_end_matches('/');
    match path {
        "/ping" => Some(Endpoint::Ping),
        "/v2/info" | "/v2/leader" => Some(Endpoint::Info),
        "/v2/apps" => Some(Endpoint::Apps),
        "/v2/tasks" => Some(Endpoint::Tasks),
        "/v2/events" => Some(Endpoint::Events),
        p if p.starts_with("/v2/apps/") => Some(Endpoint::App),
        p if p == "/v2/pods" || p.starts_with("/v2/pods/") => Some(Endpoint::Pods),
        _ => None,
    }
}

/// A bare base (no path, or `/`) gets the request target appended, as a
/// standby Marathon or Mesos master does; a URL with a path is used as is.
pub(crate) fn redirect_location(base: &str, target: &str) -> String {
    let authority_and_path = match base.strip_prefix("//") {
        Some(rest) => rest,
        None => match base.split_once("://") {
            Some((_, rest)) => rest,
            // A relative reference: nothing to append to.
            None => return base.to_string(),
        },
    };
    match authority_and_path.find('/') {
        Some(i) if &authority_and_path[i..] != "/" => base.to_string(),
        _ => format!("{}{}", base.trim_end_matches('/'), target),
    }
}

fn status_response(code: u16, shared: &Shared) -> Response {
    let message = match code {
        503 => "Could not determine the current leader".to_string(),
        401 => "Invalid username or password.".to_string(),
        _ => http::reason(code).to_string(),
    };
    let response = Response::message(code, &message);
    if code == 401 {
        return response.header("WWW-Authenticate", &challenge(shared));
    }
    response
}

fn challenge(shared: &Shared) -> String {
    match shared.options.auth {
        Some(Auth::Token(_)) => "acsjwt".to_string(),
        _ => "Basic realm=\"Mesosphere\"".to_string(),
    }
}

/// 401 unless the request carries the configured credentials.
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
    if ok {
        None
    } else {
        Some(status_response(401, shared))
    }
}

/// The answer to a `/v2/*` or `/ping` request when all is well.
fn respond(request: &Request, shared: &Shared) -> Response {
    let response = route(request, shared);
    // Real Marathon names the leader on every answer.
    response.header(
        "X-Marathon-Leader",
        &format!("http://{}", shared.local_addr),
    )
}

fn route(request: &Request, shared: &Shared) -> Response {
    if request.method != "GET" {
        return Response::message(405, "the simulator serves GET only (drive it with /_sim/*)");
    }
    let path = request.path.trim_end_matches('/');
    let cluster = lock(&shared.cluster);
    match path {
        "/ping" => Response::new(200, "text/plain", "pong\n"),
        "/v2/info" => Response::json(200, info(shared).to_string()),
        "/v2/leader" => Response::json(
            200,
            json!({"leader": shared.local_addr.to_string()}).to_string(),
        ),
        "/v2/apps" => {
            let embed = request
                .query_all("embed")
                .any(|e| e == "apps.tasks" || e == "app.tasks");
            Response::json(200, cluster.apps_json(embed))
        }
        "/v2/tasks" => Response::json(200, cluster.tasks_json()),
        p if (p == "/v2/pods" || p.starts_with("/v2/pods/")) && !shared.options.pods => {
            Response::message(404, &format!("{p} not found"))
        }
        "/v2/pods" => Response::json(200, cluster.pods.pods_json()),
        "/v2/pods/::status" => Response::json(200, cluster.pods.statuses_json()),
        _ if path.starts_with("/v2/pods/") => {
            let rest = &path["/v2/pods/".len()..];
            match cluster.pods.route(rest) {
                Some(body) => Response::json(200, body),
                None => Response::message(
                    404,
                    &format!(
                        "Pod '/{}' does not exist",
                        rest.split("::").next().unwrap_or(rest).trim_matches('/')
                    ),
                ),
            }
        }
        _ => match path.strip_prefix("/v2/apps/") {
            Some(rest) => app_route(rest, &cluster),
            None => Response::message(404, &format!("{path} not found")),
        },
    }
}

/// `/v2/apps/{id}[/tasks|/versions[/{version}]]`; app ids contain slashes.
fn app_route(rest: &str, cluster: &super::cluster::Cluster) -> Response {
    let missing = |id: &str| {
        Response::message(
            404,
            &format!("App '/{}' does not exist", id.trim_start_matches('/')),
        )
    };
    if let Some((id, version)) = rest.rsplit_once("/versions/") {
        return match cluster.app_version_json(id, version) {
            Some(body) => Response::json(200, body),
            None => missing(id),
        };
    }
    let found = if let Some(id) = rest.strip_suffix("/versions") {
        (id, cluster.app_versions_json(id))
    } else if let Some(id) = rest.strip_suffix("/tasks") {
        (id, cluster.app_tasks_json(id))
    } else {
        (rest, cluster.app_json(rest))
    };
    match found {
        (_, Some(body)) => Response::json(200, body),
        (id, None) => missing(id),
    }
}

fn info(shared: &Shared) -> serde_json::Value {
    let leader = shared.local_addr.to_string();
    json!({
        "name": "marathon",
        "version": shared.options.marathon_version,
        "buildref": "marathon-sim",
        "elected": true,
        "leader": leader,
        "frameworkId": "sim-framework-0000",
        "marathon_config": {
            "master": "zk://127.0.0.1:2181/mesos",
            "hostname": shared.local_addr.ip().to_string(),
            "http_port": shared.local_addr.port(),
            "mesos_role": null
        },
        "http_config": {"http_port": shared.local_addr.port(), "https_port": 8443},
        "event_subscriber": null,
        "zookeeper_config": {"zk": "zk://127.0.0.1:2181/marathon"}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_append_the_target_to_bare_bases_only() {
        let t = "/v2/events?event_type=status_update_event";
        assert_eq!(
            redirect_location("//10.233.0.9:8080", t),
            format!("//10.233.0.9:8080{t}")
        );
        assert_eq!(
            redirect_location("http://m2:8080/", t),
            format!("http://m2:8080{t}")
        );
        assert_eq!(
            redirect_location("http://m2:8080/other", t),
            "http://m2:8080/other"
        );
        assert_eq!(
            redirect_location("//m2:8080/v2/apps", t),
            "//m2:8080/v2/apps"
        );
        assert_eq!(redirect_location("/relative", t), "/relative");
    }

    #[test]
    fn endpoints_are_classified_with_or_without_a_trailing_slash() {
        assert_eq!(classify("/v2/apps/"), Some(Endpoint::Apps));
        assert_eq!(
            classify("/v2/apps/prod/web/versions/x"),
            Some(Endpoint::App)
        );
        assert_eq!(classify("/v2/events"), Some(Endpoint::Events));
        assert_eq!(classify("/v2/queue"), None);
    }
}
