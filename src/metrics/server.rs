//! The HTTP server of `metrics.listen` (hyper, HTTP/1.1): `/metrics`,
//! `/healthz`, `/readyz`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use super::{exposition, health, ready, DropReader, Shared};

/// A client that sends no complete request head within this is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

struct Endpoints {
    shared: Shared,
    /// `/healthz` fails when the kernel was last confirmed longer ago.
    max_age: Duration,
    drops: DropReader,
    /// The last read of the drop counters failed (logged once per outage).
    drops_failing: AtomicBool,
}

/// Listen on `listen` ("IP:PORT"; port 0 picks a free one) and serve in the
/// background. Returns the address bound.
pub async fn serve(
    listen: &str,
    shared: Shared,
    max_age: Duration,
    drops: DropReader,
) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("metrics.listen = {listen:?} is not IP:PORT"))?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?;
    let bound = listener.local_addr()?;
    let endpoints = Arc::new(Endpoints {
        shared,
        max_age,
        drops,
        drops_failing: AtomicBool::new(false),
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: don't spin.
                    warn!("metrics listener: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let endpoints = endpoints.clone();
            let http = http.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let endpoints = endpoints.clone();
                    async move { Ok::<_, Infallible>(endpoints.respond(req).await) }
                });
                if let Err(e) = http.serve_connection(TokioIo::new(stream), service).await {
                    debug!("metrics connection: {e}");
                }
            });
        }
    });
    Ok(bound)
}

impl Endpoints {
    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        const TEXT: &str = "text/plain; charset=utf-8";
        match req.uri().path() {
            "/metrics" => {
                let drops = self.read_drops().await;
                let body = exposition::render(&self.shared, drops.as_ref());
                reply(200, exposition::CONTENT_TYPE, body)
            }
            "/healthz" => {
                let (status, body) = health(&self.shared.snapshot(), self.max_age);
                reply(status, TEXT, body)
            }
            "/readyz" => {
                let (status, body) = ready(&self.shared.snapshot());
                reply(status, TEXT, body)
            }
            _ => reply(404, TEXT, "try /metrics, /healthz or /readyz\n".into()),
        }
    }

    /// The kernel's drop counters, read off the async threads (a netlink
    /// dump); `None` when they cannot be read.
    async fn read_drops(&self) -> Option<super::Drops> {
        let reader = self.drops.clone();
        let result = match tokio::task::spawn_blocking(move || reader()).await {
            Ok(result) => result,
            Err(e) => Err(anyhow::anyhow!("the drop counter reader failed: {e}")),
        };
        match result {
            Ok(drops) => {
                self.drops_failing.store(false, Ordering::Relaxed);
                Some(drops)
            }
            Err(e) => {
                if !self.drops_failing.swap(true, Ordering::Relaxed) {
                    warn!("/metrics leaves out the drop counters until they can be read: {e:#}");
                }
                None
            }
        }
    }
}

fn reply(status: u16, kind: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}
