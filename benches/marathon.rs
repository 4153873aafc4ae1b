//! Marathon source benchmark (not a test; root): a real `groupd` with
//! `kind = "marathon"` against the simulated Marathon, 10,000 tasks known.
//!
//! 1. Convergence: `status_update_event` written by the simulator -> the
//!    task's element committed in the kernel, p50/p99 over 1,000 events.
//! 2. Soak: 1,000 events/s for 60 s; groupd's CPU and RSS every second.
//!
//! Env: GROUPD_BENCH_EVENTS (1000), GROUPD_BENCH_RATE (1000 per second),
//! GROUPD_BENCH_SOAK (60 s), GROUPD_BENCH_ROWS (markdown rows file).

mod common;
mod mara;

use common::stats::fmt_s;
use common::{is_root, pass, Rows};

const TARGET_P99: f64 = 0.010;
const WARMUP_S: u64 = 10;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !is_root() {
        eprintln!(
            "marathon: skipped: needs root (it creates network namespaces); run `sudo make bench`"
        );
        return;
    }
    // `make test` (cargo test --all-targets) runs bench binaries too, built
    // without optimisation: then a short smoke run only checks that the
    // pieces work together. Measurements come from `cargo bench` / run.sh.
    let smoke = cfg!(debug_assertions);
    let (events, rate, soak_s, warmup) = if smoke {
        (50, 200, 3, 1)
    } else {
        (
            env_usize("GROUPD_BENCH_EVENTS", mara::NEW).clamp(1, mara::NEW),
            env_usize("GROUPD_BENCH_RATE", 1000).max(1),
            env_usize("GROUPD_BENCH_SOAK", 60).max(WARMUP_S as usize + 1) as u64,
            WARMUP_S,
        )
    };
    let scratch = common::groupd::Scratch::new("mara");
    let dir = scratch.0.clone();
    {
        eprintln!("[marathon] loading the simulator and starting groupd");
        let agent = mara::Agent::start(&dir);
        eprintln!(
            "[marathon] groupd in sync with {} tasks after {}",
            mara::KNOWN,
            fmt_s(agent.startup.as_secs_f64())
        );
        let c = mara::converge::run(&agent, events);
        agent.wait_in_sync(mara::KNOWN + events, std::time::Duration::from_secs(30));
        let s = mara::soak::run(&agent, events, rate, soak_s, warmup);
        if smoke {
            assert!(
                s.final_state_ok && s.requests == 0,
                "smoke run: groupd did not keep up"
            );
            eprintln!("[marathon] smoke run of a debug build passed; measure with `cargo bench --bench marathon`");
        } else {
            report(&c, &s, events);
        }
    }
}

fn report(c: &common::converge::Result, s: &mara::soak::Result, events: usize) {
    let mut rows = Rows::open();
    rows.row([
            &format!(
                "Marathon event -> kernel, {} tasks known: `status_update_event` with the IP of a new remote task \
                 (in the groups of a local one) written to the stream -> its `endpoints4` element committed \
                 (nf_tables notification), one at a time 10 ms apart, {} events{}",
                mara::KNOWN,
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
    let kept_up = s.final_state_ok && s.requests == 0;
    rows.row([
            &format!(
                "groupd CPU under {} `status_update_event`/s for {} s ({} events, each moving a task's IP; {} tasks known)",
                s.rate, s.secs, s.events, mara::KNOWN + events
            ),
            &format!("mean {:.1} % of one core (highest second {:.1} %)", s.cpu_mean, s.cpu_max),
            &format!(
                "{} transactions; last applied {} after the last event; generator at most {} late; {}",
                s.transactions,
                fmt_s(s.drain.as_secs_f64()),
                fmt_s(s.late.as_secs_f64()),
                if kept_up { "stream never reconnected, kernel holds every final address" } else { "FELL BEHIND (reconnects or wrong final state)" }
            ),
            "",
            "keeps up",
            pass(kept_up),
        ]);
    let grew = s.rss_end > s.rss_warm * 1.10;
    rows.row([
        &format!(
            "groupd RSS over the same {} s (sampled every second)",
            s.secs
        ),
        &format!(
            "start {:.1} MiB, after {} s {:.1} MiB, end {:.1} MiB, max {:.1} MiB",
            s.rss_start, s.warmup, s.rss_warm, s.rss_end, s.rss_max
        ),
        "",
        &format!("{:.2}", s.rss_end / s.rss_warm),
        &format!(
            "no growth: end within 10 % of the value after {} s",
            s.warmup
        ),
        pass(!grew),
    ]);
}
