//! The control-plane measurements of the `apply` benchmark.

pub mod changes;
pub mod full;
pub mod incremental;
pub mod rss;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use groupd::nft::Nft;
use groupd::state::DesiredState;

use crate::common::netns::ScratchNs;

/// A private temporary directory, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("{}-files", crate::common::netns::prefix()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch { dir }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The largest G's state left in the kernel after the full applies: groupd's
/// table in one namespace, the flat `nft -f` table in another.
pub struct Loaded {
    pub groups: usize,
    pub state: DesiredState,
    pub nft: Nft,
    /// Held so the namespace (and the table in it) lives as long as this.
    pub _ns: ScratchNs,
    pub flat_ns: ScratchNs,
}

/// Run `nft ARGS…` inside `ns` (spawned from a thread in the namespace, so
/// no `ip netns exec` overhead is counted) and return its wall time.
pub fn nft_cli(ns: &ScratchNs, args: &[&str]) -> Duration {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let shown = args.join(" ");
    let (elapsed, out) = ns.run(move || {
        let t = Instant::now();
        let out = Command::new("nft").args(&args).output().expect("run nft");
        (t.elapsed(), out)
    });
    assert!(
        out.status.success(),
        "nft {}: {}",
        shown.chars().take(200).collect::<String>(),
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// Run `nft ARGS…` inside `ns`; did it succeed?
pub fn nft_status(ns: &ScratchNs, args: &[&str]) -> bool {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    ns.run(move || {
        Command::new("nft")
            .args(&args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

pub fn nft_file(ns: &ScratchNs, path: &Path) -> Duration {
    nft_cli(ns, &["-f", path.to_str().expect("utf-8 path")])
}

/// Deleting a table with 100k elements leaves work to the kernel's cleanup
/// workers; let it finish so it is not charged to the next measurement.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}
