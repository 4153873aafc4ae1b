//! HTTP to the masters (Marathon and Mesos): an ordered URL list with
//! failover, redirects, auth, TLS, timeouts, size caps and backoff.
//!
//! * **Failover.** URLs are tried in order starting with the one that worked
//!   last; a URL that cannot be reached, times out, answers 5xx or loops in
//!   redirects hands over to the next one. 401/403 and other 4xx do not: the
//!   next master would say the same, and hammering it does not help.
//! * **Redirects** are followed here, not by reqwest, so that Mesos'
//!   protocol-relative `Location: //leader:5050/…` works, a loop is named as
//!   such, and credentials never go from https to plain http (max
//!   [`MAX_REDIRECTS`] hops).
//! * **Secrets.** The password and token are read from their files when the
//!   client is built and live only in request headers marked sensitive.
//!   Errors are built from redacted URLs and from reqwest errors stripped of
//!   their URL, and [`MasterClient::scrub`] is a last line of defence for any
//!   text that leaves the source. No `Display` here contains a secret.
//! * **Time and size.** Connect, response headers, whole body and stream
//!   stall each have their own limit ([`Timeouts`]); a body larger than
//!   `max_body` is refused while reading, never buffered whole.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};
use tokio::time::Instant;

use super::pipe::{self, PipeReader};
use crate::config::SourceConfig;

/// Redirect hops followed for one request.
pub const MAX_REDIRECTS: usize = 5;

/// Time and size limits for talking to a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP (and TLS) connection set-up.
    pub connect: Duration,
    /// From sending the request to the response headers.
    pub headers: Duration,
    /// The whole body of a document (snapshots).
    pub body: Duration,
    /// Streams: longest silence before the stream counts as dead.
    pub stall: Duration,
    /// Largest document body accepted, in bytes.
    pub max_body: usize,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            headers: Duration::from_secs(10),
            body: Duration::from_secs(60),
            // Marathon (Jetty) writes a keep-alive every ~10 s: three missed.
            stall: Duration::from_secs(30),
            max_body: 256 * 1024 * 1024,
        }
    }
}

/// What a [`MasterClient`] is built from (a subset of `[source]`).
#[derive(Debug, Clone)]
pub struct MasterSettings {
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub tls_verify: bool,
    pub timeouts: Timeouts,
}

impl MasterSettings {
    pub fn from_source(cfg: &SourceConfig, timeouts: Timeouts) -> MasterSettings {
        MasterSettings {
            urls: cfg.urls.clone(),
            username: cfg.username.clone(),
            password_file: cfg.password_file.clone(),
            token_file: cfg.token_file.clone(),
            ca_file: cfg.ca_file.clone(),
            tls_verify: cfg.tls_verify,
            timeouts,
        }
    }
}

/// `a` seconds as operators read them: "10 s", "0.3 s".
pub fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// Why a request to the masters failed. Every text names the URL (redacted)
/// and says what to check or what happens next; none contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Reading a credential or CA file, or building the TLS client.
    #[error("{0}")]
    Setup(String),
    #[error("{url}: cannot connect: {detail} (is the master up and the URL right?)")]
    Connect { url: String, detail: String },
    /// Connected, but the answer was not usable HTTP (or the connection
    /// was reset before the headers).
    #[error("{url}: request failed: {detail} (not an HTTP master, or the connection was reset)")]
    Protocol { url: String, detail: String },
    #[error("{url}: no response within {} (master hung or overloaded)", secs(*.after))]
    HeadersTimeout { url: String, after: Duration },
    #[error("{url}: body not complete within {} after {got} bytes (master too slow or stuck)", secs(*.after))]
    BodyTimeout {
        url: String,
        after: Duration,
        got: usize,
    },
    #[error(
        "{url}: connection broken after {got} bytes of the body (truncated response): {detail}"
    )]
    Truncated {
        url: String,
        got: usize,
        detail: String,
    },
    #[error("{url}: response larger than {limit} bytes; not read further, the last rules stay (check that source.urls names the master)")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: event stream broken: {detail}")]
    StreamBroken { url: String, detail: String },
    #[error("{url}: no data for {} (stream stalled)", secs(*.after))]
    Stalled { url: String, after: Duration },
    #[error("{url}: HTTP {}{}", status_text(*.status), status_hint(*.status))]
    Status { url: String, status: u16 },
    #[error("{url}: HTTP {}: check source.username/password_file or source.token_file", status_text(*.status))]
    Unauthorized { url: String, status: u16 },
    #[error("{url}: {detail}")]
    Redirect { url: String, detail: String },
    #[error("all {} masters failed: {}", .0.len(), join(.0))]
    AllFailed(Vec<HttpError>),
}

fn join(errors: &[HttpError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn status_text(status: u16) -> String {
    match StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

fn status_hint(status: u16) -> &'static str {
    match status {
        500..=599 => " (master failing, starting or not the leader)",
        404 => " (not found: is this the right kind of master, and the URL without a wrong path?)",
        _ => "",
    }
}

impl HttpError {
    /// Worth trying the next master for: this one is down, slow, broken or
    /// not the leader.
    pub fn is_failover(&self) -> bool {
        match self {
            HttpError::Connect { .. }
            | HttpError::Protocol { .. }
            | HttpError::HeadersTimeout { .. }
            | HttpError::BodyTimeout { .. }
            | HttpError::Truncated { .. }
            | HttpError::Stalled { .. }
            | HttpError::StreamBroken { .. }
            | HttpError::Redirect { .. } => true,
            HttpError::Status { status, .. } => *status >= 500,
            HttpError::Setup(_)
            | HttpError::TooLarge { .. }
            | HttpError::Unauthorized { .. }
            | HttpError::AllFailed(_) => false,
        }
    }

    /// The credentials were refused: back off long, do not hammer.
    pub fn is_auth(&self) -> bool {
        match self {
            HttpError::Unauthorized { .. } => true,
            HttpError::AllFailed(all) => all.iter().any(HttpError::is_auth),
            _ => false,
        }
    }

    /// The HTTP status of a non-2xx answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } | HttpError::Unauthorized { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

pub use crate::redact::redact_url;

/// A URL as errors show it: redacted, and a long query (the event filter
/// list) elided so that the reason stays readable in `groupctl status`.
pub fn shown_url(url: &str) -> String {
    let url = redact_url(url);
    match url.split_once('?') {
        Some((head, query)) if query.len() > 40 => format!("{head}?…"),
        _ => url,
    }
}

/// A secret string that never prints.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone, Debug)]
enum Auth {
    None,
    Basic { user: String, password: Secret },
    Token(HeaderValue, Secret),
}

/// A document body and where it finally came from.
#[derive(Debug)]
pub struct Body {
    /// The URL that answered (after redirects), redacted.
    pub url: String,
    pub bytes: Vec<u8>,
}

/// An open response body read chunk by chunk (event streams).
#[derive(Debug)]
pub struct ByteStream {
    url: String,
    response: reqwest::Response,
}

impl ByteStream {
    /// The URL that answered (after redirects), redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next chunk; `None` at the end of the stream. Waits until
    /// `deadline` at most, then fails as stalled for `period` (the caller's
    /// idea of how long the stream has been silent). Cancel-safe.
    pub async fn next_chunk(
        &mut self,
        deadline: Instant,
        period: Duration,
    ) -> Result<Option<impl AsRef<[u8]>>, HttpError> {
        match tokio::time::timeout_at(deadline, self.response.chunk()).await {
            Err(_) => Err(HttpError::Stalled {
                url: self.url.clone(),
                after: period,
            }),
            Ok(Err(e)) => Err(HttpError::StreamBroken {
                url: self.url.clone(),
                detail: describe(&e),
            }),
            Ok(Ok(chunk)) => Ok(chunk),
        }
    }
}

impl ByteStream {
    /// The whole body, handed to `parse` (on a blocking thread) while it
    /// arrives, so that it is never held whole: within `timeouts.body`, at
    /// most `timeouts.max_body` bytes. When the parser stops reading early
    /// (it failed), the rest is not read and its result is returned.
    pub async fn parse_body<T, F>(mut self, timeouts: &Timeouts, parse: F) -> Result<T, HttpError>
    where
        T: Send + 'static,
        F: FnOnce(PipeReader) -> T + Send + 'static,
    {
        let limit = timeouts.max_body;
        if self
            .response
            .content_length()
            .is_some_and(|n| n > limit as u64)
        {
            return Err(HttpError::TooLarge {
                url: self.url,
                limit,
            });
        }
        let (feed, parser) = pipe::spawn(parse);
        let deadline = Instant::now() + timeouts.body;
        let mut got = 0usize;
        loop {
            let chunk = match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => {
                    return Err(HttpError::BodyTimeout {
                        url: self.url,
                        after: timeouts.body,
                        got,
                    })
                }
                Ok(Err(e)) => {
                    return Err(HttpError::Truncated {
                        url: self.url,
                        got,
                        detail: describe(&e),
                    })
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
            };
            got += chunk.len();
            if got > limit {
                return Err(HttpError::TooLarge {
                    url: self.url,
                    limit,
                });
            }
            if feed.send(&chunk).await.is_err() {
                break;
            }
        }
        drop(feed);
        pipe::join(parser)
            .await
            .map_err(|detail| HttpError::Protocol {
                url: self.url,
                detail,
            })
    }
}

/// The masters of one source. Methods take `&self` so several requests
/// (app versions) can run at once; which URL worked last is shared.
#[derive(Debug)]
pub struct MasterClient {
    bases: Vec<String>,
    preferred: AtomicUsize,
    http: reqwest::Client,
    auth: Auth,
    timeouts: Timeouts,
}

impl MasterClient {
    /// Read the credential and CA files and build the client. Errors name
    /// the file and the fix; they never contain file contents.
    pub fn new(settings: &MasterSettings) -> Result<MasterClient, HttpError> {
        if settings.urls.is_empty() {
            return Err(HttpError::Setup(
                "source.urls is empty; list the masters".into(),
            ));
        }
        let auth = read_auth(settings)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(settings.timeouts.connect)
            .redirect(reqwest::redirect::Policy::none())
            // Masters are reached directly; an http_proxy meant for the
            // internet must not see cluster credentials.
            .no_proxy()
            .user_agent(concat!("groupd/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_file {
            builder = builder.tls_built_in_root_certs(false);
            for cert in read_ca(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if !settings.tls_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|e| {
            HttpError::Setup(format!("cannot set up the HTTP client: {}", describe(&e)))
        })?;
        Ok(MasterClient {
            bases: settings
                .urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            preferred: AtomicUsize::new(0),
            http,
            auth,
            timeouts: settings.timeouts,
        })
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The master tried first (redacted).
    pub fn preferred_url(&self) -> String {
        redact_url(&self.bases[self.preferred_index()])
    }

    /// After an answer that was well-formed HTTP but useless (garbage JSON),
    /// try the next master first next time.
    pub fn demote(&self) {
        let next = (self.preferred_index() + 1) % self.bases.len();
        self.preferred.store(next, Ordering::Relaxed);
    }

    /// Replace any secret that made it into `text` (it should never happen;
    /// this is the last line of defence before logs and groupctl).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = redact_url(text);
        let secrets: Vec<&str> = match &self.auth {
            Auth::None => vec![],
            Auth::Basic { password, .. } => vec![password.0.as_str()],
            Auth::Token(_, token) => vec![token.0.as_str()],
        };
        for s in secrets {
            // Short secrets would mangle ordinary words; they are never
            // formatted anywhere either.
            if s.len() >= 4 {
                out = out.replace(s, "***");
            }
        }
        out
    }

    /// GET a whole document (`path` includes the query), failing over.
    pub async fn get(&self, path: &str, accept: &str) -> Result<Body, HttpError> {
        self.with_failover(|base| async move {
            let (response, url) = self.send(base, path, accept, None).await?;
            let bytes = self.read_body(&url, response).await?;
            Ok(Body { url, bytes })
        })
        .await
    }

    /// GET a stream (`path` includes the query), failing over; the body is
    /// read by the caller.
    pub async fn open_stream(&self, path: &str, accept: &str) -> Result<ByteStream, HttpError> {
        self.with_failover(|base| async move {
            let (response, url) = self.send(base, path, accept, None).await?;
            Ok(ByteStream { url, response })
        })
        .await
    }

    /// POST `json` (`Content-Type: application/json`) and return the body
    /// as a stream read by the caller (Mesos `SUBSCRIBE`), failing over.
    /// Redirects re-send the POST with its body: Mesos redirects to the
    /// leader with 307, which keeps the method.
    pub async fn post_stream(
        &self,
        path: &str,
        accept: &str,
        json: &[u8],
    ) -> Result<ByteStream, HttpError> {
        self.with_failover(|base| async move {
            let (response, url) = self.send(base, path, accept, Some(json)).await?;
            Ok(ByteStream { url, response })
        })
        .await
    }

    fn preferred_index(&self) -> usize {
        self.preferred.load(Ordering::Relaxed) % self.bases.len()
    }

    /// Run `attempt` against each master in turn, starting with the one that
    /// worked last, until one succeeds or fails in a way another master
    /// would not fix.
    async fn with_failover<'a, T, F, Fut>(&'a self, attempt: F) -> Result<T, HttpError>
    where
        F: Fn(&'a str) -> Fut,
        Fut: std::future::Future<Output = Result<T, HttpError>>,
    {
        let first = self.preferred_index();
        let mut failures = Vec::new();
        for k in 0..self.bases.len() {
            let i = (first + k) % self.bases.len();
            match attempt(&self.bases[i]).await {
                Ok(value) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(e) if e.is_failover() => {
                    tracing::debug!("{e}; trying the next master");
                    failures.push(e);
                }
                Err(e) => return Err(e),
            }
        }
        if failures.len() == 1 {
            return Err(failures.remove(0));
        }
        Err(HttpError::AllFailed(failures))
    }

    /// Send one GET (or a POST of `json`) to `base` + `path` and follow
    /// redirects; returns a 2xx response and the redacted URL that gave it.
    async fn send(
        &self,
        base: &str,
        path: &str,
        accept: &str,
        json: Option<&[u8]>,
    ) -> Result<(reqwest::Response, String), HttpError> {
        let text = format!("{base}{path}");
        let mut url = Url::parse(&text).map_err(|e| HttpError::Connect {
            url: shown_url(&text),
            detail: format!("not a valid URL ({e}); fix source.urls"),
        })?;
        let mut chain = vec![url.clone()];
        loop {
            let shown = shown_url(url.as_str());
            let response = self.send_once(&url, &shown, accept, json).await?;
            let status = response.status();
            if !is_followed_redirect(status) {
                return check_status(response, shown);
            }
            let next = self.redirect_target(&url, &shown, &response, &chain)?;
            tracing::debug!(from = %shown, to = %redact_url(next.as_str()), "following redirect");
            chain.push(next.clone());
            url = next;
        }
    }

    async fn send_once(
        &self,
        url: &Url,
        shown: &str,
        accept: &str,
        json: Option<&[u8]>,
    ) -> Result<reqwest::Response, HttpError> {
        let mut request = match json {
            None => self.http.get(url.clone()),
            Some(body) => self
                .http
                .post(url.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_vec()),
        }
        .header(ACCEPT, accept);
        request = match &self.auth {
            Auth::None => request,
            Auth::Basic { user, password } => request.basic_auth(user, Some(&password.0)),
            Auth::Token(header, _) => request.header(AUTHORIZATION, header.clone()),
        };
        match tokio::time::timeout(self.timeouts.headers, request.send()).await {
            Err(_) => Err(HttpError::HeadersTimeout {
                url: shown.to_string(),
                after: self.timeouts.headers,
            }),
            Ok(Err(e)) if e.is_connect() => Err(HttpError::Connect {
                url: shown.to_string(),
                detail: describe(&e),
            }),
            Ok(Err(e)) => Err(HttpError::Protocol {
                url: shown.to_string(),
                detail: describe(&e),
            }),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// Where a redirect points, or why it is not followed.
    fn redirect_target(
        &self,
        url: &Url,
        shown: &str,
        response: &reqwest::Response,
        chain: &[Url],
    ) -> Result<Url, HttpError> {
        let fail = |detail: String| HttpError::Redirect {
            url: shown.to_string(),
            detail,
        };
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| fail(format!("HTTP {status} redirect without a usable Location")))?;
        // `join` resolves `//host:port/path` against our scheme, as Mesos
        // means it.
        let next = url.join(location).map_err(|e| {
            fail(format!(
                "HTTP {status} redirect to an invalid Location {:?}: {e}",
                redact_url(location)
            ))
        })?;
        if url.scheme() == "https" && next.scheme() != "https" && !matches!(self.auth, Auth::None) {
            return Err(fail(format!(
                "refusing to follow a redirect from https to {} with credentials",
                shown_url(next.as_str())
            )));
        }
        if chain.contains(&next) {
            let hops: Vec<String> = chain
                .iter()
                .chain(std::iter::once(&next))
                .map(|u| shown_url(u.as_str()))
                .collect();
            return Err(fail(format!("redirect loop: {}", hops.join(" -> "))));
        }
        if chain.len() > MAX_REDIRECTS {
            return Err(fail(format!(
                "more than {MAX_REDIRECTS} redirects (last to {})",
                shown_url(next.as_str())
            )));
        }
        Ok(next)
    }

    /// The whole body within `timeouts.body`, at most `timeouts.max_body`.
    async fn read_body(
        &self,
        url: &str,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, HttpError> {
        let limit = self.timeouts.max_body;
        let too_large = || HttpError::TooLarge {
            url: url.to_string(),
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let deadline = Instant::now() + self.timeouts.body;
        let mut buf = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, response.chunk()).await {
                Err(_) => {
                    return Err(HttpError::BodyTimeout {
                        url: url.to_string(),
                        after: self.timeouts.body,
                        got: buf.len(),
                    })
                }
                Ok(Err(e)) => {
                    return Err(HttpError::Truncated {
                        url: url.to_string(),
                        got: buf.len(),
                        detail: describe(&e),
                    })
                }
                Ok(Ok(None)) => return Ok(buf),
                Ok(Ok(Some(chunk))) => {
                    if buf.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    buf.extend_from_slice(&chunk);
                }
            }
        }
    }
}

/// 301/302/303/307/308 (304 Not Modified is not a redirect).
fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn check_status(
    response: reqwest::Response,
    url: String,
) -> Result<(reqwest::Response, String), HttpError> {
    let status = response.status();
    if status.is_success() {
        return Ok((response, url));
    }
    let status = status.as_u16();
    if status == 401 || status == 403 {
        return Err(HttpError::Unauthorized { url, status });
    }
    Err(HttpError::Status { url, status })
}

/// A reqwest error as text without its URL (which may carry credentials),
/// with the root causes that say what actually happened.
fn describe(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = current {
        let text = redact_url(&err.to_string());
        // reqwest's own text repeats the URL; the causes do not.
        let text = match err.downcast_ref::<reqwest::Error>() {
            Some(re) if re.url().is_some() => strip_reqwest_url(&text),
            _ => text,
        };
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    if parts.is_empty() {
        "unknown error".into()
    } else {
        parts.join(": ")
    }
}

/// "error sending request for url (http://…)" -> "error sending request".
fn strip_reqwest_url(text: &str) -> String {
    match text.find(" for url (") {
        Some(i) => text[..i].to_string(),
        None => text.to_string(),
    }
}

/// Credentials as configured: basic auth or a DC/OS token, read now.
fn read_auth(settings: &MasterSettings) -> Result<Auth, HttpError> {
    if let Some(path) = &settings.token_file {
        let text = read_secret_file(path, "source.token_file")?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(HttpError::Setup(format!(
                "source.token_file {} is empty; put the DC/OS token in it",
                path.display()
            )));
        }
        let mut header = HeaderValue::from_str(&format!("token={token}")).map_err(|_| {
            HttpError::Setup(format!(
                "source.token_file {} does not hold a valid token (characters not allowed in an HTTP header)",
                path.display()
            ))
        })?;
        header.set_sensitive(true);
        return Ok(Auth::Token(header, Secret(token)));
    }
    match (&settings.username, &settings.password_file) {
        (Some(user), Some(path)) => {
            let text = read_secret_file(path, "source.password_file")?;
            // Only the line end an editor adds: spaces may be part of it.
            let password = text
                .strip_suffix('\n')
                .map(|p| p.strip_suffix('\r').unwrap_or(p))
                .unwrap_or(&text)
                .to_string();
            Ok(Auth::Basic {
                user: user.clone(),
                password: Secret(password),
            })
        }
        (Some(_), None) => Err(HttpError::Setup(
            "source.username is set without source.password_file".into(),
        )),
        _ => Ok(Auth::None),
    }
}

fn read_secret_file(path: &Path, key: &str) -> Result<String, HttpError> {
    std::fs::read_to_string(path).map_err(|e| {
        HttpError::Setup(format!(
            "cannot read {key} {}: {e}; fix the file or the path",
            path.display()
        ))
    })
}

fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, HttpError> {
    let bytes = std::fs::read(path).map_err(|e| {
        HttpError::Setup(format!(
            "cannot read source.ca_file {}: {e}; fix the file or the path",
            path.display()
        ))
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&bytes).map_err(|e| {
        HttpError::Setup(format!(
            "source.ca_file {} is not a PEM certificate bundle: {}",
            path.display(),
            describe(&e)
        ))
    })?;
    if certs.is_empty() {
        return Err(HttpError::Setup(format!(
            "source.ca_file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// Exponential backoff with full jitter: the n-th wait is uniform in
/// `[0, min(cap, base * 2^n)]`, so many agents that lost the same master do
/// not come back in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The upper bound of the next wait.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next wait (full jitter), and one step up.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::thread_rng())
    }

    pub fn next_delay_with(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(rng.gen_range(0.0..=1.0))
    }

    /// Refused credentials will not fix themselves quickly: wait at least
    /// half the cap (jitter in the upper half), and stay at the top.
    pub fn next_auth_delay(&mut self) -> Duration {
        self.attempt = 30;
        let half = self.cap / 2;
        half + half.mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("http://user:s3cret@m1:8080/v2/apps"),
            "http://***@m1:8080/v2/apps"
        );
        assert_eq!(redact_url("https://tok@m1"), "https://***@m1");
        assert_eq!(
            redact_url("a http://u:p@x/ and https://v:q@y?z=1"),
            "a http://***@x/ and https://***@y?z=1"
        );
        // An @ in the path or query is not userinfo.
        assert_eq!(redact_url("http://m1/a@b?c=d@e"), "http://m1/a@b?c=d@e");
        assert_eq!(redact_url("no url here"), "no url here");
        // Passwords with @ or : inside: everything up to the last @ goes.
        assert_eq!(redact_url("http://u:p@ss:w@rd@m1:1/"), "http://***@m1:1/");
    }

    #[test]
    fn long_queries_are_elided_short_ones_kept() {
        assert_eq!(
            shown_url("http://u:p@m1:8080/v2/events?event_type=status_update_event&event_type=app_terminated_event"),
            "http://***@m1:8080/v2/events?…"
        );
        assert_eq!(
            shown_url("http://m1/v2/apps?embed=apps.tasks"),
            "http://m1/v2/apps?embed=apps.tasks"
        );
    }

    #[test]
    fn errors_never_show_redacted_parts() {
        let e = HttpError::AllFailed(vec![
            HttpError::Status {
                url: redact_url("http://u:hunter22@m1/v2/apps"),
                status: 503,
            },
            HttpError::Unauthorized {
                url: "http://m2/v2/apps".into(),
                status: 401,
            },
        ]);
        let text = e.to_string();
        assert!(!text.contains("hunter22"), "{text}");
        assert!(text.contains("503 Service Unavailable"), "{text}");
        assert!(
            text.contains("check source.username/password_file"),
            "{text}"
        );
        assert!(e.is_auth());
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_full_jitter() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            let ceiling = b.ceiling();
            let d = b.next_delay_with(&mut rng);
            assert!(d <= ceiling, "{d:?} > {ceiling:?}");
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(
            &ceilings[..9],
            &[200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000]
        );
        assert!(ceilings[9..].iter().all(|&c| c == 30000));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(200));
    }

    #[test]
    fn backoff_jitter_spreads_and_never_overflows() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..200).map(|_| b.next_delay_with(&mut rng)).collect();
        assert!(delays.iter().any(|d| *d < Duration::from_millis(300)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(700)));
        let mut b = Backoff::new(Duration::from_secs(3600), Duration::from_secs(7200));
        for _ in 0..100 {
            assert!(b.next_delay_with(&mut rng) <= Duration::from_secs(7200));
        }
    }

    #[test]
    fn auth_backoff_stays_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        for _ in 0..50 {
            let d = b.next_auth_delay();
            assert!(d >= Duration::from_secs(15) && d <= Duration::from_secs(30));
        }
    }

    fn settings() -> MasterSettings {
        MasterSettings {
            urls: vec!["http://m1:8080".into()],
            username: None,
            password_file: None,
            token_file: None,
            ca_file: None,
            tls_verify: true,
            timeouts: Timeouts::default(),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("groupd-http-unit-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn password_file_loses_only_its_line_end_and_is_scrubbed() {
        let dir = scratch("pw");
        let path = dir.join("pw");
        std::fs::write(&path, " pass word \r\n").expect("write");
        let mut s = settings();
        s.username = Some("ops".into());
        s.password_file = Some(path);
        let c = MasterClient::new(&s).expect("client");
        match &c.auth {
            Auth::Basic { password, .. } => assert_eq!(password.0, " pass word "),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.scrub("x pass word y"), "x***y");
        assert!(!format!("{c:?}").contains("pass word"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn token_file_becomes_a_sensitive_header() {
        let dir = scratch("tok");
        let path = dir.join("token");
        std::fs::write(&path, "eyJhbGciOi.abc.def\n").expect("write");
        let mut s = settings();
        s.token_file = Some(path.clone());
        let c = MasterClient::new(&s).expect("client");
        match &c.auth {
            Auth::Token(h, _) => {
                assert_eq!(h.to_str().expect("ascii"), "token=eyJhbGciOi.abc.def");
                assert!(h.is_sensitive());
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{c:?}").contains("eyJhbGciOi"));
        std::fs::write(&path, "bad\u{7}token").expect("write");
        let err = MasterClient::new(&s).expect_err("control character");
        assert!(!err.to_string().contains("bad"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_files_are_named_without_contents() {
        let dir = scratch("missing");
        let mut s = settings();
        s.username = Some("ops".into());
        s.password_file = Some(dir.join("nope"));
        let err = MasterClient::new(&s).expect_err("missing").to_string();
        assert!(
            err.contains("source.password_file") && err.contains("nope"),
            "{err}"
        );
        let mut s = settings();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "not a certificate").expect("write");
        s.ca_file = Some(ca);
        let err = MasterClient::new(&s).expect_err("bad CA").to_string();
        assert!(err.contains("source.ca_file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(secs(Duration::from_secs(30)), "30 s");
        assert_eq!(secs(Duration::from_millis(1600)), "1.6 s");
    }
}
