//! `groupd --log-format json`: the real daemon, run in a simulated agent's
//! network namespace (its nftables table lives and dies there), writes one
//! JSON object per line with the event's fields as keys.

mod common;
#[path = "netns/mod.rs"]
mod netns;

use std::process::Command;
use std::time::{Duration, Instant};

use netns::Cluster;

#[test]
#[ignore = "needs root: runs groupd in a network namespace it creates"]
fn json_lines_carry_fields_as_keys() {
    let mut cluster = Cluster::new("log_json");
    let agent = cluster.add_agent("json");
    let ns = cluster.agent(agent).ns.clone();
    let dir = common::GroupdDir::new("logjson");
    let doc = dir.0.join("cluster.json");
    let config = dir.file_source_config("");
    let log_path = dir.0.join("groupd.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_groupd"));
    cmd.arg("--config")
        .arg(&config)
        .args(["--log-format", "json", "run"])
        .env("GROUPD_LOG", "info")
        // Under a systemd-run test harness the variable may be inherited:
        // the flag must win anyway.
        .env("JOURNAL_STREAM", "0:0")
        .stderr(std::fs::File::create(&log_path).expect("log file"));
    let daemon = cluster.spawn_in(&ns, &mut cmd);

    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("file source: watching") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    daemon.terminate().expect("stop groupd");
    let _ = daemon.wait_timeout(Duration::from_secs(5));

    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log output");
    let mut watching = None;
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{log}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        assert!(v["message"].is_string(), "{line}");
        if v["message"] == "file source: watching" {
            watching = Some(v);
        }
    }
    let watching = watching.unwrap_or_else(|| panic!("no 'watching' line:\n{log}"));
    assert_eq!(watching["level"], "INFO");
    assert_eq!(watching["path"], doc.display().to_string(), "{watching}");
    assert!(!log.contains('\u{1b}'), "colour codes: {log:?}");
}
