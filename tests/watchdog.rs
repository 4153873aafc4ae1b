//! The systemd watchdog is fed from its own ticker (half of WATCHDOG_USEC),
//! whatever `verify_interval` is: the real daemon, a notify socket of the
//! test's own, `verify_interval = 45` and a 1 s watchdog.

mod common;
#[path = "netns/mod.rs"]
mod netns;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use netns::Cluster;

#[test]
#[ignore = "needs root: runs groupd in a network namespace it creates"]
fn the_watchdog_is_fed_whatever_the_verify_interval() {
    let mut cluster = Cluster::new("watchdog");
    let agent = cluster.add_agent("wd");
    let ns = cluster.agent(agent).ns.clone();
    let dir = common::GroupdDir::new("watchdog");
    std::fs::write(dir.0.join("cluster.json"), br#"{"apps": []}"#).expect("document");
    let config = dir.file_source_config("verify_interval = 45\n");
    let notify = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&notify).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_groupd"));
    cmd.arg("--config")
        .arg(&config)
        .arg("run")
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .stderr(std::fs::File::create(dir.0.join("groupd.log")).expect("log"));
    let _daemon = cluster.spawn_in(&ns, &mut cmd);

    let started = Instant::now();
    let (mut ready, mut pings) = (false, Vec::new());
    let mut buf = [0u8; 256];
    while started.elapsed() < Duration::from_secs(4) {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            ready |= msg.contains("READY=1");
            if msg.contains("WATCHDOG=1") {
                pings.push(started.elapsed());
            }
        }
    }
    let log = std::fs::read_to_string(dir.0.join("groupd.log")).unwrap_or_default();
    assert!(ready, "READY=1 was sent; log:\n{log}");
    // Every 0.5 s for ~4 s (the first read-back is 45 s away).
    assert!(
        pings.len() >= 5,
        "WATCHDOG=1 every half second, got {pings:?}; log:\n{log}"
    );
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(900)),
        "no gap near the 1 s timeout: {gaps:?}"
    );
}
