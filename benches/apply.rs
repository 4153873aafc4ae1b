//! Control-plane benchmark (not a test): how fast groupd programs the kernel,
//! next to `nft` doing the same job, and how much memory the daemon needs.
//! Run by `make bench` (benches/run.sh); needs root. Everything happens in
//! scratch network namespaces this process creates and deletes.
//!
//! Env: GROUPD_BENCH_RUNS (full applies per G, default 5),
//! GROUPD_BENCH_CHANGES (incremental changes per kind, default 200),
//! GROUPD_BENCH_GROUPS (default "1000,10000"; the largest G is used for the
//! incremental and memory measurements), GROUPD_BENCH_ROWS (markdown rows file).

mod common;
mod cp;

use common::{is_root, Rows};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !is_root() {
        eprintln!(
            "apply: skipped: needs root (it creates network namespaces); run `sudo make bench`"
        );
        return;
    }
    let runs = env_usize("GROUPD_BENCH_RUNS", 5).max(1);
    let changes = env_usize("GROUPD_BENCH_CHANGES", 200).max(1);
    let mut groups: Vec<usize> = std::env::var("GROUPD_BENCH_GROUPS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|g| g.trim().parse().ok())
        .collect();
    groups.sort_unstable();
    let largest = *groups.last().expect("GROUPD_BENCH_GROUPS is empty");
    let mut rows = Rows::open();
    let scratch = cp::Scratch::new();
    let mut loaded = None;
    let mut drift = None;
    for &g in &groups {
        let l = cp::full::run(g, runs, &scratch, &mut drift, &mut rows);
        if g == largest {
            loaded = Some(l);
        }
    }
    if let Some(mut l) = loaded {
        cp::incremental::run(&mut l, changes, &mut rows);
    }
    cp::rss::run(largest, &scratch, &mut rows);
}
