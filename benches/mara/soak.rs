//! Soak: `rate` status_update_events per second for `secs` seconds, each
//! moving one of the 1,000 `/new` tasks between two addresses (a real
//! change every time: an endpoint and its memberships leave the kernel and
//! others arrive), with 10,000 other tasks known. groupd's CPU time and RSS
//! are sampled every second from /proc.

use std::time::{Duration, Instant};

use super::{moved_ip, new_ip, Agent};
use crate::common::procstat::{cpu_percent, sample, Sample};

pub struct Result {
    pub events: usize,
    pub rate: usize,
    pub secs: u64,
    pub warmup: u64,
    /// Mean and highest per-second CPU, percent of one core.
    pub cpu_mean: f64,
    pub cpu_max: f64,
    pub rss_start: f64,
    pub rss_warm: f64,
    pub rss_end: f64,
    pub rss_max: f64,
    /// Latest an event was emitted after its slot (the generator kept pace).
    pub late: Duration,
    pub transactions: u64,
    /// Requests to the simulator during the soak: 0 means the stream never
    /// broke (a reconnect costs a snapshot).
    pub requests: u64,
    /// From the last event to groupd's last transaction.
    pub drain: Duration,
    /// Every /new task's final address, and only it, is in the kernel.
    pub final_state_ok: bool,
}

fn transactions(agent: &Agent) -> u64 {
    agent
        .status()
        .and_then(|v| v["health"]["transactions"].as_u64())
        .unwrap_or(0)
}

/// `up`: how many `/new` tasks convergence brought up (at `new_ip`); only
/// those are moved.
pub fn run(agent: &Agent, up: usize, rate: usize, secs: u64, warmup: u64) -> Result {
    let pid = agent.pid();
    let tx0 = transactions(agent);
    let requests0 = agent.sim.requests();
    let n = up.clamp(1, agent.new_tasks.len());
    let mut moved = vec![false; n];
    let total = rate * secs as usize;
    let start = Instant::now();
    let mut samples: Vec<Sample> = vec![sample(pid)];
    let mut late = Duration::ZERO;
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            late = late.max(now - due);
        }
        let i = k % n;
        moved[i] = !moved[i];
        let ip = if moved[i] { moved_ip(i) } else { new_ip(i) };
        agent
            .sim
            .update_task(&agent.new_tasks[i], "TASK_RUNNING", Some(vec![ip.into()]))
            .expect("update_task");
        if start.elapsed() >= Duration::from_secs(samples.len() as u64) {
            let s = sample(pid);
            let prev = samples[samples.len() - 1];
            eprintln!(
                "[marathon] soak t={:>2}s cpu {:5.1} % rss {:.1} MiB",
                samples.len(),
                cpu_percent(&prev, &s),
                s.rss_mb
            );
            samples.push(s);
        }
    }
    let last_event = Instant::now();
    samples.push(sample(pid));
    let drain = drain(agent, last_event);
    let requests = agent.sim.requests() - requests0;
    let transactions = transactions(agent) - tx0;
    let final_state_ok = final_state(agent, &moved);

    let per_second: Vec<f64> = samples
        .windows(2)
        .map(|w| cpu_percent(&w[0], &w[1]))
        .collect();
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let warm = samples[(warmup as usize).min(samples.len() - 1)];
    Result {
        events: total,
        rate,
        secs,
        warmup,
        cpu_mean: cpu_percent(&first, &last),
        cpu_max: per_second.iter().copied().fold(0.0, f64::max),
        rss_start: first.rss_mb,
        rss_warm: warm.rss_mb,
        rss_end: last.rss_mb,
        rss_max: samples.iter().map(|s| s.rss_mb).fold(0.0, f64::max),
        late,
        transactions,
        requests,
        drain,
        final_state_ok,
    }
}

/// Wait until groupd's transaction counter has not moved for 500 ms; the
/// time from `since` to its last movement.
fn drain(agent: &Agent, since: Instant) -> Duration {
    let mut count = transactions(agent);
    let mut moved_at = Instant::now();
    while moved_at.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(20));
        let now = transactions(agent);
        if now != count {
            count = now;
            moved_at = Instant::now();
        }
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "groupd still busy two minutes after the soak"
        );
    }
    moved_at.saturating_duration_since(since)
}

/// The kernel holds each /new task at the address of its last event.
fn final_state(agent: &Agent, moved: &[bool]) -> bool {
    let listing = agent.kernel_set("endpoints4");
    let present: std::collections::HashSet<&str> = listing
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .collect();
    let has = |ip: std::net::Ipv4Addr| present.contains(ip.to_string().as_str());
    let wrong = moved
        .iter()
        .enumerate()
        .filter(|&(i, &m)| {
            let (now, before) = if m {
                (moved_ip(i), new_ip(i))
            } else {
                (new_ip(i), moved_ip(i))
            };
            !has(now) || has(before)
        })
        .count();
    if wrong > 0 {
        eprintln!("[marathon] {wrong} tasks have the wrong address in the kernel after the soak");
    }
    wrong == 0
}
