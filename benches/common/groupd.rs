//! A real `groupd` inside a scratch namespace, for the source benchmarks
//! (`marathon`, `mesos`): its scratch directory, routed task interfaces,
//! the daemon (killed however the benchmark ends), `groupctl status` and
//! the kernel's view of a set.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::netns::ScratchNs;

const GROUPD: &str = env!("CARGO_BIN_EXE_groupd");
const GROUPCTL: &str = env!("CARGO_BIN_EXE_groupctl");

/// The run's files (config, log, state) under `/tmp/<prefix>-<role>`;
/// removed however the run ends (`run.sh` removes what a kill left).
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(role: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("{}-{role}", super::netns::prefix()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `[source]` lines + the rest of a benchmark config: task interfaces
/// `veth*`, socket and state under `dir`, no metrics listener.
pub fn config(source: &str, dir: &Path) -> String {
    format!(
        "[source]\n{source}[interfaces]\nmatch = [\"veth*\"]\n\
         [daemon]\nsocket = {:?}\nstate_dir = {:?}\n[metrics]\nlisten = \"\"\n",
        dir.join("groupd.sock"),
        dir.join("state")
    )
}

/// A running groupd; SIGTERM (then SIGKILL after 5 s) when dropped.
pub struct Groupd {
    child: Child,
    dir: PathBuf,
    /// When the process was spawned.
    pub started: Instant,
}

impl Groupd {
    /// Write `config_text` to `dir/groupd.toml` and start groupd inside `ns`
    /// (log in `dir/groupd.log`).
    pub fn spawn(ns: &ScratchNs, dir: &Path, config_text: &str) -> Groupd {
        let config = dir.join("groupd.toml");
        std::fs::write(&config, config_text).expect("write config");
        let log = std::fs::File::create(dir.join("groupd.log")).expect("create log");
        let started = Instant::now();
        let child = ns.run(move || {
            Command::new(GROUPD)
                .arg("--config")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start groupd")
        });
        Groupd {
            child,
            dir: dir.to_path_buf(),
            started,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        let socket = self.dir.join("groupd.sock");
        let out = Command::new(GROUPCTL)
            .args(["--socket", socket.to_str()?, "--json", "status"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Until groupd is in sync and holds `endpoints` endpoints.
    pub fn wait_in_sync(&self, endpoints: usize, within: Duration) {
        let started = Instant::now();
        loop {
            if let Some(v) = self.status() {
                if v["endpoints"].as_u64() == Some(endpoints as u64)
                    && v["health"]["source_state"] == "in-sync"
                {
                    return;
                }
            }
            let log = std::fs::read_to_string(self.dir.join("groupd.log")).unwrap_or_default();
            assert!(
                started.elapsed() < within,
                "groupd did not hold {endpoints} endpoints in sync within {within:?}; its log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Groupd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Elements of `set` in the kernel of `ns`, read with the nft CLI.
pub fn kernel_set(ns: &ScratchNs, set: &str) -> String {
    let args = ["list", "set", "inet", "groupd", set].map(String::from);
    let out = ns.run(move || Command::new("nft").args(&args).output().expect("run nft"));
    assert!(out.status.success(), "nft list set {set}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// veth-b<i> (peer vp-b<i> in the same namespace) with a /32 route to
/// `ips[i-1]`: routed task interfaces as groupd's binding sees them.
pub fn task_interfaces(ns: &ScratchNs, dir: &Path, ips: &[Ipv4Addr]) {
    let mut batch = String::new();
    for (t, ip) in ips.iter().enumerate() {
        let i = t + 1;
        let _ = writeln!(batch, "link add veth-b{i} type veth peer name vp-b{i}");
        let _ = writeln!(batch, "link set veth-b{i} up");
        let _ = writeln!(batch, "link set vp-b{i} up");
        let _ = writeln!(batch, "route add {ip}/32 dev veth-b{i} scope link");
    }
    let path = dir.join("links.batch");
    std::fs::write(&path, batch).expect("write ip batch");
    ns.ip(&["-batch", path.to_str().expect("utf-8 path")]);
}
