//! The fuzz harnesses (`fuzz/src/lib.rs`, included here as is) over every
//! committed seed (`fuzz/seeds/<target>/`) and every crasher kept from the
//! fuzz runs (`tests/fixtures/fuzz/<target>/`). Each harness asserts its own
//! invariants (same records or events however the input is chunked, no
//! panic); this only has to run them. See README "Fuzzing".

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        root.join("fuzz/seeds").join(target),
        root.join("tests/fixtures/fuzz").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn run(target: &str, harness: fn(&[u8])) -> usize {
    let files = inputs(target);
    for path in &files {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| harness(&bytes));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
    }
    files.len()
}

#[test]
fn recordio_seeds_and_crashers() {
    assert!(run("recordio", harness::recordio) > 0, "no recordio seeds");
}

#[test]
fn sse_seeds_and_crashers() {
    assert!(run("sse", harness::sse) > 0, "no sse seeds");
}

#[test]
fn marathon_json_seeds_and_crashers() {
    assert!(
        run("marathon_json", harness::marathon_json) > 0,
        "no marathon seeds"
    );
}

#[test]
fn mesos_json_seeds_and_crashers() {
    assert!(run("mesos_json", harness::mesos_json) > 0, "no mesos seeds");
}
