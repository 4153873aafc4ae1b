//! The Prometheus text of `/metrics` (format 0.0.4), built with
//! `prometheus-client` from what the daemon published, its histograms and
//! the drop counters read from the kernel for this scrape.
//!
//! The registry is built anew for each scrape: everything but the
//! histograms is a value copied from the daemon's [`Snapshot`], so constant
//! metrics say exactly what the daemon published, with no second copy of
//! its counters to keep in step.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::{Drops, Metrics, Snapshot};

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The text of `/metrics`. `drops` is `None` when the kernel's counters
/// could not be read: the drop metrics are left out rather than reported
/// as zero.
pub fn render(metrics: &Metrics, drops: Option<&Drops>) -> String {
    let s = metrics.snapshot();
    let mut r = Registry::with_prefix("groupd");
    register_snapshot(&mut r, &s);
    r.register_with_unit(
        "apply_duration",
        "Duration of committed nftables transactions (deltas and full reconciles)",
        Unit::Seconds,
        metrics.apply_duration.clone(),
    );
    r.register_with_unit(
        "event_to_kernel",
        "From a source update's arrival in the daemon loop to the commit of the transaction enforcing it",
        Unit::Seconds,
        metrics.event_to_kernel.clone(),
    );
    if let Some(drops) = drops {
        register_drops(&mut r, drops);
    }
    r.register(
        "build",
        "groupd's version",
        Info::new([("version", env!("CARGO_PKG_VERSION"))]),
    );
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in
    // a name, which the tests catch.
    let _ = prometheus_text::encode(&mut out, &r);
    out
}

fn register_snapshot(r: &mut Registry, s: &Snapshot) {
    let h = &s.health;
    let counter = |v: u64| ConstCounter::new(v);
    let gauge = |v: usize| ConstGauge::new(v as i64);
    r.register(
        "transactions",
        "nftables transactions committed",
        counter(h.transactions),
    );
    r.register(
        "transaction_errors",
        "nftables transactions the kernel rejected",
        counter(h.transaction_errors),
    );
    r.register(
        "drift_repairs",
        "Times the kernel table differed from groupd's state and was repaired",
        counter(h.drift_repairs),
    );
    r.register(
        "table_owned",
        "1 when the kernel refuses changes to groupd's tables by other processes (table_guard owner), 0 in notify mode",
        ConstGauge::new(i64::from(h.table_guard == "owner")),
    );
    r.register(
        "tamper_notifications",
        "Notify mode: bursts of changes to groupd's tables by other processes",
        counter(h.tamper_notifications),
    );
    r.register(
        "tamper_repairs",
        "Notify mode: changes by other processes undone at once by a repair",
        counter(h.tamper_repairs),
    );
    r.register_with_unit(
        "last_apply",
        "Duration of the last transaction",
        Unit::Seconds,
        ConstGauge::new(h.last_apply_ms / 1000.0),
    );
    r.register(
        "source_up",
        "1 when the source delivered its last update, 0 when degraded",
        ConstGauge::new(i64::from(h.source_state != "degraded")),
    );
    r.register_with_unit(
        "last_sync_timestamp",
        "Unix time of the last complete view from the source",
        Unit::Seconds,
        ConstGauge::new(h.last_sync_unix.unwrap_or(0.0)),
    );
    r.register(
        "ip_conflicts",
        "IPs claimed by more than one live task",
        gauge(h.conflicts.len()),
    );
    r.register("tasks", "Tasks in the cluster view", gauge(s.tasks));
    r.register(
        "endpoints",
        "Endpoints (tasks with IPs of their own) in the cluster",
        gauge(s.endpoints),
    );
    r.register(
        "local_endpoints",
        "Endpoints bound to interfaces of this agent",
        gauge(s.local_endpoints),
    );
    r.register(
        "set_elements",
        "Set and map elements groupd keeps in the kernel",
        gauge(s.elements),
    );
    r.register(
        "generation",
        "Generation of the cluster view groupd holds (stamped into the table)",
        ConstGauge::new(i64::try_from(h.generation).unwrap_or(i64::MAX)),
    );
    r.register(
        "ready",
        "1 once a complete cluster view (from the source or the persisted view) is in the kernel",
        ConstGauge::new(i64::from(h.ready)),
    );
}

fn register_drops(r: &mut Registry, drops: &Drops) {
    r.register_collector(Box::new(DropCounters(drops.clone())));
}

/// The drop counters of one scrape, one sample per reason in the order of
/// their ids (a metric family would list them in hash order).
#[derive(Debug)]
struct DropCounters(Drops);

impl Collector for DropCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, what, pick) in [
            ("dropped_packets", "Packets", 0),
            ("dropped_bytes", "Bytes", 1),
        ] {
            let help = format!("{what} groupd's rules dropped, by reason (R1..R9 of the policy)");
            let mut family = encoder.encode_descriptor(name, &help, None, MetricType::Counter)?;
            for (id, (packets, bytes)) in &self.0 {
                let value = if pick == 0 { *packets } else { *bytes };
                let labels = [("reason", *id)];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample line's metric name (before `{` or the value).
    fn sample_names(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap_or(""))
            .collect()
    }

    fn type_of<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        let prefix = format!("# TYPE {name} ");
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str()))
    }

    #[test]
    fn every_metric_has_its_name_and_type() {
        let m = Metrics::default();
        if let Ok(mut s) = m.snapshot.lock() {
            s.health.transactions = 3;
            s.health.source_state = "in-sync".into();
            s.health.generation = 42;
            s.health.last_apply_ms = 1.5;
            s.local_endpoints = 2;
        }
        m.apply_duration.observe(0.0004);
        m.event_to_kernel.observe(0.002);
        let drops: Drops = crate::status::drops(&Default::default());
        let text = render(&m, Some(&drops));
        for (name, kind) in [
            ("groupd_transactions_total", "counter"),
            ("groupd_transaction_errors_total", "counter"),
            ("groupd_drift_repairs_total", "counter"),
            ("groupd_last_apply_seconds", "gauge"),
            ("groupd_source_up", "gauge"),
            ("groupd_last_sync_timestamp_seconds", "gauge"),
            ("groupd_ip_conflicts", "gauge"),
            ("groupd_tasks", "gauge"),
            ("groupd_endpoints", "gauge"),
            ("groupd_local_endpoints", "gauge"),
            ("groupd_set_elements", "gauge"),
            ("groupd_generation", "gauge"),
            ("groupd_ready", "gauge"),
            ("groupd_apply_duration_seconds", "histogram"),
            ("groupd_event_to_kernel_seconds", "histogram"),
            ("groupd_dropped_packets_total", "counter"),
            ("groupd_dropped_bytes_total", "counter"),
            ("groupd_build_info", "gauge"),
        ] {
            assert_eq!(type_of(&text, name), Some(kind), "{name} in:\n{text}");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has help:\n{text}"
            );
        }
        for want in [
            "groupd_transactions_total 3\n",
            "groupd_local_endpoints 2\n",
            "groupd_source_up 1\n",
            "groupd_generation 42\n",
            "groupd_last_apply_seconds 0.0015\n",
            "groupd_apply_duration_seconds_count 1\n",
            "groupd_apply_duration_seconds_bucket{le=\"0.0005\"} 1\n",
            "groupd_event_to_kernel_seconds_count 1\n",
            "groupd_event_to_kernel_seconds_bucket{le=\"+Inf\"} 1\n",
            &format!(
                "groupd_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            ),
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
        // Prometheus naming: one prefix, base units, counters end in _total.
        for name in sample_names(&text) {
            assert!(name.starts_with("groupd_"), "{name}");
            assert!(!name.contains("_ms"), "{name}");
        }
    }

    #[test]
    fn drops_are_labelled_by_stable_reason_ids() {
        let m = Metrics::default();
        let counters = [
            (crate::compile::EGRESS.to_string(), vec![(5, 420), (1, 80)]),
            (crate::compile::SOURCE_CHECK.to_string(), vec![(2, 100)]),
        ]
        .into_iter()
        .collect();
        let drops = crate::status::drops(&counters);
        let text = render(&m, Some(&drops));
        for want in [
            "groupd_dropped_packets_total{reason=\"r1_r4_egress_denied\"} 6\n",
            "groupd_dropped_bytes_total{reason=\"r1_r4_egress_denied\"} 500\n",
            "groupd_dropped_packets_total{reason=\"r7_spoofed_source\"} 2\n",
            "groupd_dropped_packets_total{reason=\"r8_unknown_interface\"} 0\n",
            "groupd_dropped_packets_total{reason=\"r1_r5_ingress_denied\"} 0\n",
            "groupd_dropped_bytes_total{reason=\"r9_not_discovery_port\"} 0\n",
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
        // Every reason, and only the known ones, appear as labels.
        let labels: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("groupd_dropped_packets_total{"))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        let ids: Vec<&str> = crate::status::DROP_REASONS.iter().map(|r| r.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(labels, sorted);
        for id in ids {
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{id}"
            );
        }
        // Unreadable counters: no drop metrics rather than zeros.
        let text = render(&m, None);
        assert!(!text.contains("groupd_dropped_"), "{text}");
    }
}
