//! groupd and groupctl on the agents of a simulated cluster, shared by the
//! end-to-end suites of the remote sources (Marathon, Mesos).
//!
//! Include next to the harness, from a test crate that has `mod netns` and
//! `mod common`: `#[path = "common/daemons.rs"] mod daemons;`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::netns::{Cluster, ManagedChild};

pub const GROUPD: &str = env!("CARGO_BIN_EXE_groupd");
pub const GROUPCTL: &str = env!("CARGO_BIN_EXE_groupctl");

pub fn socket(dir: &Path, agent: usize) -> PathBuf {
    dir.join(format!("a{agent}.sock"))
}

/// Start groupd in agent `agent`'s namespace with `[source]` = `source`
/// (TOML lines), its socket, state and log under `dir`.
pub fn start_groupd(
    cluster: &Cluster,
    ns: &str,
    dir: &Path,
    agent: usize,
    source: &str,
) -> ManagedChild {
    start_groupd_with(cluster, ns, dir, agent, source, "verify_interval = 1.0")
}

/// [`start_groupd`] with `daemon` (TOML lines) in `[daemon]`.
pub fn start_groupd_with(
    cluster: &Cluster,
    ns: &str,
    dir: &Path,
    agent: usize,
    source: &str,
    daemon: &str,
) -> ManagedChild {
    let config = dir.join(format!("a{agent}.toml"));
    let text = format!(
        "[source]\n{source}\n[interfaces]\nmatch = [\"veth*\"]\n\
         [daemon]\nsocket = {:?}\nstate_dir = {:?}\n{daemon}\n\
         [metrics]\nlisten = \"\"\n",
        socket(dir, agent),
        dir.join(format!("state-a{agent}")),
    );
    std::fs::write(&config, text).expect("write config");
    let mut cmd = Command::new(GROUPD);
    cmd.args(["--config", config.to_str().expect("utf8 path"), "run"]);
    cmd.env("GROUPD_LOG", "info");
    let log = std::fs::File::create(dir.join(format!("a{agent}.log"))).expect("log");
    cmd.stderr(log);
    cluster.spawn_in(ns, &mut cmd)
}

/// `groupctl --json ARGS` against agent `agent`; `None` if it fails
/// (`status` answers with exit code 1 while degraded: that is an answer).
pub fn groupctl(dir: &Path, agent: usize, args: &[&str]) -> Option<serde_json::Value> {
    let answered = |code: Option<i32>| match code {
        Some(0) => true,
        Some(1) => args.first() == Some(&"status"),
        _ => false,
    };
    let out = Command::new(GROUPCTL)
        .arg("--socket")
        .arg(socket(dir, agent))
        .arg("--json")
        .args(args)
        .output()
        .ok()
        .filter(|o| answered(o.status.code()))?;
    serde_json::from_slice(&out.stdout).ok()
}

pub fn log(dir: &Path, agent: usize) -> String {
    std::fs::read_to_string(dir.join(format!("a{agent}.log"))).unwrap_or_default()
}

/// What groupctl should show for one task: its enforcement column (`None`:
/// not listed) and its groups.
pub struct Expect<'a> {
    pub id: &'a str,
    pub enforcement: Option<&'static str>,
    pub groups: Option<&'a BTreeSet<String>>,
}

/// The first difference between `groupctl show --all` (plus an in-sync
/// source) on `agent` and the expectations.
pub fn difference(dir: &Path, agent: usize, expect: &[Expect]) -> Option<String> {
    let Some(rows) = groupctl(dir, agent, &["show", "--all"]) else {
        return Some("groupctl show --all failed".into());
    };
    let rows = rows.as_array().cloned().unwrap_or_default();
    let row = |id: &str| rows.iter().find(|r| r["task"] == id);
    for e in expect {
        let got = row(e.id).and_then(|r| r["enforcement"].as_str());
        if got != e.enforcement {
            return Some(format!(
                "{}: enforcement {got:?}, want {:?}",
                e.id, e.enforcement
            ));
        }
        let got_groups: Option<BTreeSet<String>> = row(e.id).map(|r| {
            r["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str().map(String::from))
                .collect()
        });
        if let Some(want) = e.groups {
            if got_groups.as_ref() != Some(want) {
                return Some(format!("{}: groups {got_groups:?}, want {want:?}", e.id));
            }
        }
    }
    let state = groupctl(dir, agent, &["status"]).map(|s| s["health"]["source_state"].clone());
    match state {
        Some(s) if s == "in-sync" => None,
        other => Some(format!("source_state {other:?}")),
    }
}

/// `nft list table inet groupd` and `bridge groupd` in `ns`, with counters
/// and element order normalised.
pub fn tables(cluster: &Cluster, ns: &str) -> Vec<String> {
    try_tables(cluster, ns).unwrap_or_else(|e| panic!("{e}"))
}

/// [`tables`], or why `nft` could not list them (e.g. a table deleted by a
/// tamper and not repaired yet).
pub fn try_tables(cluster: &Cluster, ns: &str) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    for family in ["inet", "bridge"] {
        let out = cluster.exec(ns, &["nft", "list", "table", family, "groupd"]);
        if !out.status.success() {
            return Err(format!(
                "nft list table {family} groupd: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        lines.extend(crate::common::normalise(&String::from_utf8_lossy(
            &out.stdout,
        )));
    }
    Ok(lines)
}

/// Lines only in `a` / only in `b`, for messages.
pub fn diff(a: &[String], b: &[String]) -> String {
    let only = |x: &[String], y: &[String]| -> Vec<String> {
        x.iter()
            .filter(|l| !y.contains(l))
            .take(5)
            .cloned()
            .collect()
    };
    format!("before only: {:?}\nnow only: {:?}", only(a, b), only(b, a))
}
