//! Convergence latency: from the moment the simulator has written a
//! `status_update_event` (TASK_RUNNING with the task's IP) to groupd's event
//! stream, to the moment the kernel commits the task's endpoint element.
//!
//! One event at a time, 1,000 of them, each for a staging task of `/new`
//! (a remote task in the groups of local app 0, so the transaction also
//! adds its group memberships), with 10,000 running tasks known. Start:
//! `WriteRecord.at` of the event (taken right after the write to the socket
//! returned). End: reception of the NEWSETELEM notification for
//! `endpoints4` carrying the task's address ([`super::nlwatch`]).

use std::time::{Duration, Instant};

use super::nlwatch::NftWatch;
use super::{new_ip, Agent};
use crate::common::stats::{fmt_s, summary, Summary};

pub struct Result {
    /// Event written -> element committed.
    pub latency: Summary,
    /// Controller call (the change is made) -> element committed.
    pub from_call: Summary,
    pub overruns: u64,
}

pub fn run(agent: &Agent, events: usize) -> Result {
    // Only while measuring: a listener makes the kernel build a notification
    // for every element of every transaction, the soak should not pay that.
    let mut watch = NftWatch::start(&agent.ns, "endpoints4");
    let mut latency = Vec::with_capacity(events);
    let mut from_call = Vec::with_capacity(events);
    for i in 0..events.min(agent.new_tasks.len()) {
        let ip = new_ip(i);
        let called = Instant::now();
        let change = agent
            .sim
            .set_task_ips(&agent.new_tasks[i], vec![ip.into()])
            .expect("set_task_ips");
        let written = agent
            .sim
            .wait_written(change.last_seq, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("event {} was not written to the stream", change.last_seq));
        let committed = watch
            .wait_for(ip, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{ip} never reached the kernel"));
        latency.push(
            committed
                .saturating_duration_since(written.at)
                .as_secs_f64(),
        );
        from_call.push(committed.saturating_duration_since(called).as_secs_f64());
        // Independent samples: the next event comes after this one settled.
        // 10 ms apart, 1,000 events span more than one verify_interval
        // (10 s), so the periodic read-back and persistence of the view
        // compete with some of them, as they do in production.
        std::thread::sleep(Duration::from_millis(10));
    }
    let overruns = watch.stop();
    let r = Result {
        latency: summary(&latency),
        from_call: summary(&from_call),
        overruns,
    };
    eprintln!(
        "[marathon] convergence over {}: p50 {} p99 {} max {} (from the call: p50 {} p99 {})",
        r.latency.n,
        fmt_s(r.latency.median),
        fmt_s(r.latency.p99),
        fmt_s(r.latency.max),
        fmt_s(r.from_call.median),
        fmt_s(r.from_call.p99)
    );
    r
}
