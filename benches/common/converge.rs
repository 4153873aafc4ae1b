//! Event -> kernel latency of a source benchmark: one event at a time, each
//! giving a new task an IPv4 address; from the simulator's write of the
//! event to the NEWSETELEM nf_tables notification for the address's
//! `endpoints4` element ([`super::nlwatch`]).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::netns::ScratchNs;
use super::nlwatch::NftWatch;
use super::stats::{fmt_s, summary, Summary};

pub struct Result {
    /// Event written -> element committed.
    pub latency: Summary,
    /// Controller call (the change is made) -> element committed.
    pub from_call: Summary,
    pub overruns: u64,
}

/// `events` samples; `fire(i)` makes the i-th change in the simulator and
/// returns the address it brings up and when its event was written.
pub fn measure(
    ns: &ScratchNs,
    tag: &str,
    events: usize,
    mut fire: impl FnMut(usize) -> (Ipv4Addr, Instant),
) -> Result {
    // Only while measuring: a listener makes the kernel build a notification
    // for every element of every transaction, a soak should not pay that.
    let mut watch = NftWatch::start(ns, "endpoints4");
    let mut latency = Vec::with_capacity(events);
    let mut from_call = Vec::with_capacity(events);
    for i in 0..events {
        let called = Instant::now();
        let (ip, written) = fire(i);
        let committed = watch
            .wait_for(ip, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{ip} never reached the kernel"));
        latency.push(committed.saturating_duration_since(written).as_secs_f64());
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
        "[{tag}] convergence over {}: p50 {} p99 {} max {} (from the call: p50 {} p99 {})",
        r.latency.n,
        fmt_s(r.latency.median),
        fmt_s(r.latency.p99),
        fmt_s(r.latency.max),
        fmt_s(r.from_call.median),
        fmt_s(r.from_call.p99)
    );
    r
}
