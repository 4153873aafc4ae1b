//! Just enough HTTP/1.1 for the simulator, on raw tokio sockets: the point
//! of not using a framework is byte-level control over what goes out
//! (truncated bodies, chunk sizes that lie, trickled bytes, resets).
//!
//! Nothing a client sends can make this code panic: malformed requests get a
//! 400 and the connection is closed.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Request head limit; Marathon's Jetty allows 8 KiB, be generous.
const MAX_HEAD: usize = 64 * 1024;
/// Control API bodies (an app with many tasks) stay well below this.
const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path and query, not decoded).
    pub target: String,
    /// The percent-decoded path.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub http_1_0: bool,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn query_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// HTTP/1.1 keeps the connection unless told otherwise; 1.0 closes it.
    pub fn keep_alive(&self) -> bool {
        let connection = self.header("connection").unwrap_or("").to_ascii_lowercase();
        if self.http_1_0 {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        }
    }
}

#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection between requests.
    Closed,
    TooLarge,
    Bad(String),
    Io,
}

/// Read one request from `stream`, keeping bytes of the next one in `buf`.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Request, ReadError> {
    let head_end = loop {
        if let Some(end) = find_head_end(buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::TooLarge);
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) if buf.iter().all(u8::is_ascii_whitespace) => return Err(ReadError::Closed),
            Ok(0) => return Err(ReadError::Bad("connection closed mid-request".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Err(ReadError::Io),
        }
    };
    let (head_len, sep_len) = head_end;
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    buf.drain(..head_len + sep_len);
    let mut request = parse_head(&head)?;
    if request
        .header("transfer-encoding")
        .is_some_and(|te| !te.eq_ignore_ascii_case("identity"))
    {
        return Err(ReadError::Bad(
            "chunked request bodies are not supported; send Content-Length".into(),
        ));
    }
    let length = match request.header("content-length") {
        None => 0,
        Some(text) => text
            .trim()
            .parse::<usize>()
            .map_err(|_| ReadError::Bad(format!("bad Content-Length {text:?}")))?,
    };
    if length > MAX_BODY {
        return Err(ReadError::TooLarge);
    }
    while buf.len() < length {
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) => return Err(ReadError::Bad("connection closed mid-body".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Err(ReadError::Io),
        }
    }
    request.body = buf.drain(..length).collect();
    Ok(request)
}

/// (end of head, length of the blank line): CRLF CRLF, or bare LF LF from
/// sloppy clients.
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn parse_head(head: &str) -> Result<Request, ReadError> {
    let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
    let request_line = lines.by_ref().find(|l| !l.is_empty()).unwrap_or("");
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(format!("bad request line {request_line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad(format!("unsupported protocol {version:?}")));
    }
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad(format!("bad header line {line:?}")));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    // An absolute-form target (`http://host/path`, sent to proxies) is
    // reduced to its path.
    let origin = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let (raw_path, raw_query) = origin.split_once('?').unwrap_or((origin, ""));
    let query = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect();
    Ok(Request {
        method: method.to_string(),
        target: origin.to_string(),
        path: percent_decode(raw_path, false),
        query,
        http_1_0: version == "HTTP/1.0",
        headers,
        body: Vec::new(),
    })
}

/// `%2F` → `/`; invalid escapes stay as they are. `plus`: `+` is a space
/// (query strings).
pub fn percent_decode(text: &str, plus: bool) -> String {
    let spaced;
    let text = if plus {
        spaced = text.replace('+', " ");
        spaced.as_str()
    } else {
        text
    };
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// A complete (non-streaming) response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status, "application/json; charset=utf-8", body)
    }

    /// Marathon's error shape: `{"message": "..."}`.
    pub fn message(status: u16, message: &str) -> Response {
        Response::json(
            status,
            serde_json::json!({ "message": message }).to_string(),
        )
    }

    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Status line and headers; `Content-Length` is `declared` (a lie for
    /// truncated responses) or the body's length.
    pub fn head_bytes(&self, declared: Option<usize>) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\n\r\n",
            declared.unwrap_or(self.body.len())
        ));
        head.into_bytes()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.head_bytes(None);
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// One chunk of a chunked body.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Write `bytes`, at `pace` bytes per second when set (Trickle). Paced
/// writes go out in pieces of at least one byte every 10 ms or slower.
pub async fn write_paced<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    pace: Option<u32>,
) -> std::io::Result<()> {
    let Some(rate) = pace.filter(|r| *r > 0) else {
        w.write_all(bytes).await?;
        return w.flush().await;
    };
    let rate = u64::from(rate);
    // Piece size and interval: `rate` bytes per second in >= 10 ms steps.
    let interval_ms = (1000 / rate).max(10);
    let piece = ((rate * interval_ms) / 1000).max(1) as usize;
    for part in bytes.chunks(piece) {
        w.write_all(part).await?;
        w.flush().await?;
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
    Ok(())
}

/// Standard base64 (for `Authorization: Basic`).
pub fn base64(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode("%2Fprod%2fweb", false), "/prod/web");
        assert_eq!(percent_decode("a+b%", true), "a b%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
    }

    #[test]
    fn heads_parse_and_garbage_is_rejected() {
        let r = parse_head("GET /v2/apps?embed=apps.tasks&embed=apps.counts HTTP/1.1\r\nAccept: x")
            .expect("valid");
        assert_eq!(r.path, "/v2/apps");
        assert_eq!(r.query_all("embed").count(), 2);
        assert_eq!(r.header("accept"), Some("x"));
        for bad in ["", "GET", "GET / SPDY/3", "GET / HTTP/1.1\r\nno colon"] {
            assert!(parse_head(bad).is_err(), "{bad:?}");
        }
    }
}
