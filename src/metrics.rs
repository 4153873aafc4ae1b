//! Prometheus metrics and `/healthz` on `metrics.listen`.
//!
//! Health follows programming progress, not mere liveness (an agent that
//! stopped programming but answers would look healthy otherwise): it is OK
//! only while the last read-back of the kernel succeeded recently.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::warn;

use crate::daemon::Health;

/// What the daemon publishes after every change.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub health: Health,
    pub tasks: usize,
    pub endpoints: usize,
    pub local_endpoints: usize,
    pub elements: usize,
    /// When the kernel was last confirmed to hold the desired state.
    pub last_good: Option<Instant>,
}

pub type Shared = Arc<Mutex<Snapshot>>;

pub fn render(s: &Snapshot) -> String {
    let h = &s.health;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "groupd_transactions_total",
        "counter",
        "nftables transactions committed.",
        h.transactions as f64,
    );
    metric(
        "groupd_transaction_errors_total",
        "counter",
        "nftables transactions the kernel rejected.",
        h.transaction_errors as f64,
    );
    metric(
        "groupd_drift_repairs_total",
        "counter",
        "Times the kernel table differed from groupd's state and was repaired.",
        h.drift_repairs as f64,
    );
    metric(
        "groupd_table_owned",
        "gauge",
        "1 when the kernel refuses changes to groupd's tables by other processes (table_guard owner), 0 in notify mode.",
        if h.table_guard == "owner" { 1.0 } else { 0.0 },
    );
    metric(
        "groupd_tamper_notifications_total",
        "counter",
        "Notify mode: bursts of changes to groupd's tables by other processes.",
        h.tamper_notifications as f64,
    );
    metric(
        "groupd_tamper_repairs_total",
        "counter",
        "Notify mode: changes by other processes undone at once by a repair.",
        h.tamper_repairs as f64,
    );
    metric(
        "groupd_last_apply_seconds",
        "gauge",
        "Duration of the last transaction.",
        h.last_apply_ms / 1000.0,
    );
    metric(
        "groupd_source_up",
        "gauge",
        "1 when the source delivered its last update, 0 when degraded.",
        if h.source_state == "degraded" {
            0.0
        } else {
            1.0
        },
    );
    metric(
        "groupd_last_sync_timestamp_seconds",
        "gauge",
        "Unix time of the last complete view from the source.",
        h.last_sync_unix.unwrap_or(0.0),
    );
    metric(
        "groupd_ip_conflicts",
        "gauge",
        "IPs claimed by more than one live task.",
        h.conflicts.len() as f64,
    );
    metric(
        "groupd_tasks",
        "gauge",
        "Tasks in the cluster view.",
        s.tasks as f64,
    );
    metric(
        "groupd_endpoints",
        "gauge",
        "Endpoints (tasks with IPs of their own) in the cluster.",
        s.endpoints as f64,
    );
    metric(
        "groupd_local_endpoints",
        "gauge",
        "Endpoints bound to interfaces of this agent.",
        s.local_endpoints as f64,
    );
    metric(
        "groupd_set_elements",
        "gauge",
        "Set and map elements groupd keeps in the kernel.",
        s.elements as f64,
    );
    out
}

/// `(status, body)` of `/healthz`.
pub fn health(s: &Snapshot, max_age: Duration) -> (u16, String) {
    match s.last_good {
        Some(t) if t.elapsed() <= max_age => (200, "ok\n".into()),
        Some(t) => (
            503,
            format!(
                "the kernel table was last confirmed {:?} ago\n",
                t.elapsed()
            ),
        ),
        None => (503, "the tables have not been programmed yet\n".into()),
    }
}

pub async fn serve(listen: &str, shared: Shared, max_age: Duration) -> anyhow::Result<()> {
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("metrics.listen = {listen:?}"))?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?;
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let snapshot = shared.lock().map(|s| s.clone()).unwrap_or_default();
                let (status, kind, body) = match path {
                    "/metrics" => (200, "text/plain; version=0.0.4", render(&snapshot)),
                    "/healthz" => {
                        let (status, body) = health(&snapshot, max_age);
                        (status, "text/plain", body)
                    }
                    _ => (404, "text/plain", "try /metrics or /healthz\n".to_string()),
                };
                let reason = match status {
                    200 => "OK",
                    404 => "Not Found",
                    _ => "Service Unavailable",
                };
                let response = format!(
                    "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                if let Err(e) = stream.write_all(response.as_bytes()).await {
                    warn!("metrics connection: {e}");
                }
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reflects_programming_progress() {
        let mut s = Snapshot::default();
        assert_eq!(health(&s, Duration::from_secs(30)).0, 503);
        s.last_good = Some(Instant::now());
        assert_eq!(health(&s, Duration::from_secs(30)).0, 200);
        s.last_good = Instant::now().checked_sub(Duration::from_secs(60));
        assert_eq!(health(&s, Duration::from_secs(30)).0, 503);
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let mut s = Snapshot::default();
        s.health.transactions = 3;
        s.local_endpoints = 2;
        let text = render(&s);
        assert!(text
            .contains("# TYPE groupd_transactions_total counter\ngroupd_transactions_total 3\n"));
        assert!(text.contains("groupd_local_endpoints 2\n"));
    }
}
