//! Shared by the benchmark binaries (`apply`, `dp_policy`, `marathon`,
//! `mesos`).
#![allow(dead_code)] // each binary uses a different part

pub mod cluster;
pub mod converge;
pub mod flat;
pub mod groupd;
pub mod netns;
pub mod nlwatch;
pub mod procstat;
pub mod stats;

use std::io::Write as _;

/// Markdown rows of the results table: `| measurement | groupd | nft / no
/// rules | ratio | target | result |`. Written to the file named by
/// GROUPD_BENCH_ROWS (run.sh assembles the table) and echoed to stdout.
pub struct Rows {
    file: Option<std::fs::File>,
}

impl Rows {
    pub fn open() -> Rows {
        let file = std::env::var_os("GROUPD_BENCH_ROWS").map(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .unwrap_or_else(|e| panic!("open {}: {e}", p.to_string_lossy()))
        });
        Rows { file }
    }

    pub fn row(&mut self, cells: [&str; 6]) {
        let line = format!("| {} |", cells.join(" | "));
        println!("{line}");
        if let Some(f) = &mut self.file {
            writeln!(f, "{line}").expect("write rows file");
        }
    }
}

pub fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
