//! The metrics server as Prometheus and a load balancer see it: real HTTP on
//! 127.0.0.1 (an ephemeral port), `/metrics`, `/healthz`, `/readyz` before
//! and after the daemon is ready. No root: the drop counters come from a
//! reader given to the server (the daemon's reads the kernel).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use groupd::metrics::{serve, DropReader, Metrics, Shared};

async fn get(client: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = client.get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, kind, r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_health_and_readiness_over_http() {
    let shared: Shared = Arc::new(Metrics::default());
    let kernel_readable = Arc::new(AtomicBool::new(true));
    let readable = kernel_readable.clone();
    let drops: DropReader = Arc::new(move || {
        anyhow::ensure!(readable.load(Ordering::SeqCst), "netlink: table busy");
        let counters = [(groupd::compile::GATED.to_string(), vec![(7u64, 700u64)])]
            .into_iter()
            .collect();
        Ok(groupd::status::drops(&counters))
    });
    let addr = serve(
        "127.0.0.1:0",
        shared.clone(),
        Duration::from_secs(30),
        drops,
    )
    .await
    .expect("serve");
    assert_ne!(addr.port(), 0);
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();

    // Before the first apply: alive enough to answer, neither healthy nor ready.
    let (status, _, body) = get(&client, &format!("{base}/healthz")).await;
    assert_eq!(status, 503, "{body}");
    let (status, _, body) = get(&client, &format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: "), "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");
    let (status, kind, text) = get(&client, &format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    for want in [
        "groupd_ready 0\n",
        "groupd_dropped_packets_total{reason=\"r9_not_discovery_port\"} 7\n",
        "groupd_dropped_bytes_total{reason=\"r9_not_discovery_port\"} 700\n",
        "groupd_apply_duration_seconds_count 0\n",
        "# TYPE groupd_build_info gauge\n",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }

    // The daemon applied a complete view and read the kernel back.
    if let Ok(mut s) = shared.snapshot.lock() {
        s.health.ready = true;
        s.health.source_state = "in-sync".into();
        s.health.generation = 9;
        s.health.transactions = 2;
        s.last_good = Some(Instant::now());
    }
    shared.apply_duration.observe(0.003);
    shared.event_to_kernel.observe(0.004);
    assert_eq!(
        get(&client, &format!("{base}/healthz")).await,
        (200, "text/plain; charset=utf-8".into(), "ok\n".into())
    );
    assert_eq!(get(&client, &format!("{base}/readyz")).await.0, 200);
    let (_, _, text) = get(&client, &format!("{base}/metrics")).await;
    for want in [
        "groupd_ready 1\n",
        "groupd_generation 9\n",
        "groupd_transactions_total 2\n",
        "groupd_apply_duration_seconds_count 1\n",
        "groupd_event_to_kernel_seconds_bucket{le=\"0.004\"} 1\n",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }

    // Counters the kernel cannot give now are left out, not reported as 0.
    kernel_readable.store(false, Ordering::SeqCst);
    let (status, _, text) = get(&client, &format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    assert!(!text.contains("groupd_dropped_"), "{text}");
    assert!(text.contains("groupd_ready 1\n"), "{text}");

    // A request head larger than one read, and an unknown path.
    let (status, _, _) = {
        let r = client
            .get(format!("{base}/metrics"))
            .header("x-padding", "p".repeat(8 * 1024))
            .send()
            .await
            .expect("GET with a large header");
        (r.status().as_u16(), (), ())
    };
    assert_eq!(status, 200);
    let (status, _, body) = get(&client, &format!("{base}/nope")).await;
    assert_eq!(status, 404);
    assert!(body.contains("/readyz"), "{body}");
}

#[tokio::test]
async fn a_bad_listen_address_says_which_setting() {
    let drops: DropReader = Arc::new(|| Ok(Default::default()));
    let e = serve(
        "localhost-9490",
        Arc::new(Metrics::default()),
        Duration::from_secs(1),
        drops,
    )
    .await
    .expect_err("not IP:PORT");
    assert!(format!("{e:#}").contains("metrics.listen"), "{e:#}");
}
