//! A credential in a master URL never reaches a log line or a degraded
//! reason (what `groupctl status` shows), wherever it sits in the URL: the
//! real Marathon source runs against a master on loopback that redirects to
//! a dead one, and everything it logs (at trace level) is captured.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use groupd::config::{GroupsConfig, SourceConfig, SourceKind};
use groupd::source::http::Timeouts;
use groupd::source::marathon::{run_with, Tuning};
use groupd::source::SourceUpdate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const SECRETS: [&str; 3] = ["query-secret-1", "userinfo-secret-2", "redirect-secret-3"];

/// Log output collected in memory.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("capture lock")).into_owned()
    }
}

/// A master that answers every request with a redirect to `location`.
async fn redirecting_master(location: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let location = location.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

/// A loopback port nobody listens on.
async fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn url_secrets_never_reach_the_log_or_the_degraded_reason() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded: every task of the source is
    // polled on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let dead = dead_port().await;
    let port = redirecting_master(format!(
        "http://127.0.0.1:{dead}/v2/apps?Access_Token={}",
        SECRETS[2]
    ))
    .await;
    let cfg = SourceConfig {
        kind: SourceKind::Marathon,
        urls: vec![format!(
            "http://ops:{}@127.0.0.1:{port}/marathon?token={}",
            SECRETS[1], SECRETS[0]
        )],
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
    };
    let tuning = Tuning {
        timeouts: Timeouts {
            connect: Duration::from_millis(500),
            headers: Duration::from_millis(500),
            body: Duration::from_millis(500),
            stall: Duration::from_millis(500),
            max_body: 1024 * 1024,
        },
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(50),
        ..Tuning::default()
    };
    let (tx, mut rx) = mpsc::channel(16);
    let source = tokio::spawn(run_with(cfg, GroupsConfig::default(), tx, tuning));

    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(SourceUpdate::Degraded(reason))) => break reason,
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => panic!("no degraded update; log:\n{}", capture.text()),
        }
    };
    source.abort();
    let log = capture.text();

    // The paths that name URLs did run: the start line, the redirect, the
    // failure.
    assert!(log.contains("marathon source: starting"), "{log}");
    assert!(log.contains("following redirect"), "{log}");
    assert!(log.contains("Access_Token=***"), "{log}");
    assert!(log.contains("token=***"), "{log}");
    assert!(log.contains("***@127.0.0.1"), "{log}");
    for secret in SECRETS {
        assert!(!log.contains(secret), "{secret} logged:\n{log}");
        assert!(!reason.contains(secret), "{secret} in the reason: {reason}");
    }
}
