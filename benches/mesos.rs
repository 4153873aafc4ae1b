//! Mesos source benchmark (not a test; root): a real `groupd` with
//! `kind = "mesos"` against the simulated Mesos master, 10,000 tasks known.
//!
//! 1. Snapshot: groupd's start -> the SUBSCRIBE state (10,000 running
//!    tasks) committed to the kernel, and groupd's peak RSS (VmHWM) then;
//!    median of 3 fresh agents.
//! 2. Convergence: `TASK_UPDATED` (TASK_RUNNING with the IP of a new remote
//!    task) written by the master -> the task's element committed in the
//!    kernel, p50/p99 over 1,000 events.
//!
//! Env: GROUPD_BENCH_EVENTS (1000), GROUPD_BENCH_SNAPSHOTS (3),
//! GROUPD_BENCH_ROWS (markdown rows file).

mod common;
#[path = "mesos/mod.rs"]
mod meso;

use std::time::Duration;

use common::groupd::Scratch;
use common::stats::{fmt_s, summary};
use common::{is_root, pass, Rows};

const TARGET_P99: f64 = 0.010;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !is_root() {
        eprintln!(
            "mesos: skipped: needs root (it creates network namespaces); run `sudo make bench`"
        );
        return;
    }
    // `make test` (cargo test --all-targets) runs bench binaries too, built
    // without optimisation: then a short smoke run only checks that the
    // pieces work together. Measurements come from `cargo bench` / run.sh.
    let smoke = cfg!(debug_assertions);
    let (events, runs) = if smoke {
        (50, 1)
    } else {
        (
            env_usize("GROUPD_BENCH_EVENTS", meso::NEW).clamp(1, meso::NEW),
            env_usize("GROUPD_BENCH_SNAPSHOTS", 3).max(1),
        )
    };
    let scratch = Scratch::new("mesos");
    let dir = scratch.0.clone();
    let mut snapshots = Vec::new();
    let mut agent = None;
    for run in 1..=runs {
        // A fresh namespace, master and state directory each time: groupd
        // leaves its table in place when it stops (fail-static), and a
        // persisted view would not be a cold start.
        drop(agent.take());
        eprintln!("[mesos] snapshot {run}/{runs}: loading the master, starting groupd");
        let run_dir = dir.join(format!("run{run}"));
        std::fs::create_dir_all(&run_dir).expect("create run dir");
        let a = meso::Agent::start(&run_dir);
        snapshots.push(a.snapshot);
        agent = Some(a);
    }
    let agent = agent.expect("at least one run");
    let c = common::converge::measure(&agent.ns, "mesos", events, |i| {
        let ip = meso::new_ip(i);
        let change = agent
            .sim
            .update_task(&meso::new_task_id(i), "TASK_RUNNING", Some(vec![ip.into()]))
            .expect("update_task");
        let written = agent
            .sim
            .wait_written(change.last_seq, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("event {} was not written to the stream", change.last_seq));
        (ip, written.at)
    });
    agent.wait_in_sync(meso::KNOWN + events, Duration::from_secs(30));
    if smoke {
        eprintln!(
            "[mesos] smoke run of a debug build passed; measure with `cargo bench --bench mesos`"
        );
    } else {
        report(&snapshots, &c);
    }
}

fn report(snapshots: &[meso::Snapshot], c: &common::converge::Result) {
    let commit = summary(
        &snapshots
            .iter()
            .map(|s| s.commit.as_secs_f64())
            .collect::<Vec<_>>(),
    );
    let in_sync = summary(
        &snapshots
            .iter()
            .map(|s| s.in_sync.as_secs_f64())
            .collect::<Vec<_>>(),
    );
    let peak = summary(&snapshots.iter().map(|s| s.peak_mb).collect::<Vec<_>>());
    let overruns: u64 = snapshots.iter().map(|s| s.overruns).sum();
    let mut rows = Rows::open();
    rows.row([
        &format!(
            "Mesos snapshot: {} running tasks (1,000 apps × 10, groups in `network_infos[].groups`, each in 3 of 300 groups, \
             10 local) in the SUBSCRIBE stream; groupd start -> the transaction holding them committed (nf_tables \
             notification; kernel holds all {} addresses), median of {}{}",
            meso::KNOWN,
            meso::KNOWN,
            commit.n,
            if overruns > 0 { format!("; {overruns} notification overruns") } else { String::new() }
        ),
        &format!(
            "{} [{}–{}]; peak RSS (VmHWM) then {:.1} MiB [{:.1}–{:.1}]",
            fmt_s(commit.median),
            fmt_s(commit.min),
            fmt_s(commit.max),
            peak.median,
            peak.min,
            peak.max
        ),
        &format!(
            "`groupctl status` in-sync after {} (polled every 100 ms)",
            fmt_s(in_sync.median)
        ),
        "",
        "",
        "",
    ]);
    rows.row([
        &format!(
            "Mesos event -> kernel, {} tasks known: `TASK_UPDATED` (TASK_RUNNING with the IP of a new remote task in the \
             groups of a local one) written to the SUBSCRIBE stream -> its `endpoints4` element committed (nf_tables \
             notification), one at a time 10 ms apart, {} events{}",
            meso::KNOWN,
            c.latency.n,
            if c.overruns > 0 { format!("; {} notification overruns", c.overruns) } else { String::new() }
        ),
        &format!(
            "p50 {}, p99 {} (max {})",
            fmt_s(c.latency.median),
            fmt_s(c.latency.p99),
            fmt_s(c.latency.max)
        ),
        &format!(
            "from the simulator call: p50 {}, p99 {}",
            fmt_s(c.from_call.median),
            fmt_s(c.from_call.p99)
        ),
        "",
        "p99 < 10 ms",
        pass(c.latency.p99 < TARGET_P99),
    ]);
}
