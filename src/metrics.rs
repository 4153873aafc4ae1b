//! Prometheus metrics, `/healthz` and `/readyz` on `metrics.listen`.
//!
//! Health follows programming progress, not mere liveness (an agent that
//! stopped programming but answers would look healthy otherwise): it is OK
//! only while the last read-back of the kernel succeeded recently.
//! Readiness is reached once: when a complete view (from the source or the
//! persisted view) is first in the kernel.
//!
//! - [`exposition`]: the Prometheus text (names, types, labels).
//! - [`server`]: the HTTP server (hyper).

pub mod exposition;
pub mod server;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::daemon::Health;
use crate::nft::Nft;
use crate::ruleset::Family;

pub use exposition::render;
pub use server::serve;

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

/// Shared between the daemon loop (which writes) and the server (which reads).
#[derive(Debug)]
pub struct Metrics {
    pub snapshot: Mutex<Snapshot>,
    /// Every committed kernel transaction (delta or reconcile).
    pub apply_duration: Histogram,
    /// From a source update's arrival in the daemon loop to the commit of
    /// the transaction that enforces it.
    pub event_to_kernel: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        // 0.25 ms .. ~4 s: a delta takes well under a millisecond, a full
        // reconcile of a large cluster hundreds of milliseconds.
        let buckets = || exponential_buckets(0.000_25, 2.0, 15);
        Metrics {
            snapshot: Mutex::default(),
            apply_duration: Histogram::new(buckets()),
            event_to_kernel: Histogram::new(buckets()),
        }
    }
}

impl Metrics {
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

pub type Shared = Arc<Metrics>;

/// Packets and bytes dropped, by [`crate::status::DropReason::id`].
pub type Drops = BTreeMap<&'static str, (u64, u64)>;

/// Reads the drop counters from the kernel; called on each scrape.
pub type DropReader = Arc<dyn Fn() -> anyhow::Result<Drops> + Send + Sync>;

/// A [`DropReader`] over a netlink socket of its own: it reads the rules of
/// groupd's inet table only (their counters), never the sets, so a scrape
/// costs the same whatever the size of the cluster. The socket is opened on
/// the first scrape and again after an error, so a failure there costs the
/// drop metrics of one scrape, never the daemon.
pub fn kernel_drops(table: &str) -> DropReader {
    let socket: Mutex<Option<Nft>> = Mutex::new(None);
    let table = table.to_string();
    Arc::new(move || {
        let mut socket = socket
            .lock()
            .map_err(|_| anyhow::anyhow!("the drop counter reader panicked before"))?;
        let nft = match socket.as_mut() {
            Some(nft) => nft,
            None => socket.insert(Nft::open().context(
                "cannot open a netfilter netlink socket for the drop counters (groupd needs CAP_NET_ADMIN)",
            )?),
        };
        match nft.counters(Family::Inet, &table) {
            Ok(counters) => Ok(crate::status::drops(&counters)),
            Err(e) => {
                *socket = None;
                Err(anyhow::anyhow!(
                    "cannot read the rule counters of table inet {table}: {e}"
                ))
            }
        }
    })
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

/// `(status, body)` of `/readyz`: 200 once a complete view is in the
/// kernel, 503 with a one-line reason before.
pub fn ready(s: &Snapshot) -> (u16, String) {
    let h = &s.health;
    if h.ready {
        return (200, "ready\n".into());
    }
    let why = match (h.source_state.as_str(), h.degraded_reason.as_deref()) {
        ("degraded", Some(reason)) => format!("the source is degraded ({reason})"),
        (state, _) => format!("the source has not answered yet ({state})"),
    };
    let why: String = why.chars().filter(|c| !c.is_control()).collect();
    (
        503,
        format!("not ready: no complete cluster view is in the kernel yet; {why}\n"),
    )
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
    fn readiness_says_why_in_one_line() {
        let mut s = Snapshot::default();
        s.health.source_state = "starting (kernel table kept)".into();
        let (status, body) = ready(&s);
        assert_eq!(status, 503);
        assert!(body.contains("starting (kernel table kept)"), "{body}");
        s.health.source_state = "degraded".into();
        s.health.degraded_reason = Some("GET /v2/apps: 503\nsecond line".into());
        let (status, body) = ready(&s);
        assert_eq!(status, 503);
        assert!(
            body.contains("degraded (GET /v2/apps: 503second line)"),
            "{body}"
        );
        assert_eq!(body.lines().count(), 1, "{body}");
        s.health.ready = true;
        assert_eq!(ready(&s), (200, "ready\n".into()));
    }
}
