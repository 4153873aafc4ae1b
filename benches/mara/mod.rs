//! The `marathon` benchmark's agent: a scratch namespace with a few local
//! task interfaces, a simulated Marathon listening inside it with 10,000
//! running tasks (plus 1,000 staging ones to bring up), and a real `groupd`
//! with `kind = "marathon"` pointed at it.

pub mod converge;
pub mod nlwatch;
pub mod procstat;
pub mod soak;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use groupd::sim::{AppSpec, MarathonSim, SimHandle, SimOptions, TaskSpec};

use crate::common::cluster;
use crate::common::netns::ScratchNs;

const GROUPD: &str = env!("CARGO_BIN_EXE_groupd");
const GROUPCTL: &str = env!("CARGO_BIN_EXE_groupctl");

/// Apps of 10 tasks; app `a` is in the 3 groups `cluster::groups_of(a, G)`,
/// so each of the G = 300 groups has 10 apps (100 tasks).
pub const APPS: usize = 1_000;
pub const TASKS_PER_APP: usize = 10;
const GROUPS: usize = 300;
/// Running tasks the agent knows before anything is measured.
pub const KNOWN: usize = APPS * TASKS_PER_APP;
/// Staging tasks (no IPs yet) of one more app, brought up one by one.
pub const NEW: usize = 1_000;
/// The tasks of app 0 run on this agent (task interfaces veth-b1…).
const LOCAL: usize = TASKS_PER_APP;

/// Address of the i-th new task, and the one it moves to during the soak.
pub fn new_ip(i: usize) -> Ipv4Addr {
    cluster::task_ip(KNOWN + i)
}

pub fn moved_ip(i: usize) -> Ipv4Addr {
    cluster::task_ip(KNOWN + NEW + i)
}

/// Kills groupd when the benchmark ends, however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Agent {
    // Dropped in this order: groupd, the simulator, then the namespace.
    daemon: Daemon,
    pub sim: SimHandle,
    pub ns: ScratchNs,
    /// Marathon ids of the staging tasks, in `new_ip` order.
    pub new_tasks: Vec<String>,
    dir: PathBuf,
    pub startup: Duration,
}

impl Agent {
    pub fn start(dir: &Path) -> Agent {
        let ns = ScratchNs::new("mara");
        task_interfaces(&ns, dir);
        let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").expect("bind the simulator"));
        let sim = MarathonSim::start_blocking(listener, SimOptions::default()).expect("start sim");
        let new_tasks = load(&sim);
        let socket = dir.join("groupd.sock");
        let config = dir.join("groupd.toml");
        std::fs::write(
            &config,
            format!(
                "[source]\nkind = \"marathon\"\nurls = [{:?}]\n[interfaces]\nmatch = [\"veth*\"]\n\
                 [daemon]\nsocket = {socket:?}\nstate_dir = {:?}\n[metrics]\nlisten = \"\"\n",
                sim.url(),
                dir.join("state")
            ),
        )
        .expect("write config");
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
        let mut agent = Agent {
            daemon: Daemon(child),
            sim,
            ns,
            new_tasks,
            dir: dir.to_path_buf(),
            startup: Duration::ZERO,
        };
        agent.wait_in_sync(KNOWN, Duration::from_secs(120));
        agent.startup = started.elapsed();
        agent
    }

    pub fn pid(&self) -> u32 {
        self.daemon.0.id()
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

    /// Elements of `set` in the kernel, read with the nft CLI.
    pub fn kernel_set(&self, set: &str) -> String {
        let args = ["list", "set", "inet", "groupd", set].map(String::from);
        let out = self
            .ns
            .run(move || Command::new("nft").args(&args).output().expect("run nft"));
        assert!(out.status.success(), "nft list set {set}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// veth-b<i> (peer vp-b<i> in the same namespace) with a /32 route to the
/// i-th task of app 0: routed task interfaces as groupd's binding sees them.
fn task_interfaces(ns: &ScratchNs, dir: &Path) {
    let mut batch = String::new();
    for t in 0..LOCAL {
        let (i, ip) = (t + 1, cluster::task_ip(t));
        let _ = writeln!(batch, "link add veth-b{i} type veth peer name vp-b{i}");
        let _ = writeln!(batch, "link set veth-b{i} up");
        let _ = writeln!(batch, "link set vp-b{i} up");
        let _ = writeln!(batch, "route add {ip}/32 dev veth-b{i} scope link");
    }
    let path = dir.join("links.batch");
    std::fs::write(&path, batch).expect("write ip batch");
    ns.ip(&["-batch", path.to_str().expect("utf-8 path")]);
}

fn group_names(app: usize) -> Vec<String> {
    cluster::groups_of(app, GROUPS)
        .into_iter()
        .map(cluster::group_name)
        .collect()
}

/// 1,000 running apps of 10 tasks, then `/new` (the groups of app 0, whose
/// tasks are local) with 1,000 staging tasks. Returns the staging ids.
fn load(sim: &SimHandle) -> Vec<String> {
    let task = |ips: Vec<IpAddr>, agent: &str| TaskSpec {
        ips,
        agent: agent.into(),
        ..TaskSpec::default()
    };
    for a in 0..APPS {
        let tasks = (0..TASKS_PER_APP)
            .map(|k| {
                let t = a * TASKS_PER_APP + k;
                let agent = if t < LOCAL { "local" } else { "remote" };
                task(vec![cluster::task_ip(t).into()], agent)
            })
            .collect();
        sim.deploy_app(AppSpec {
            id: format!("/app{a}"),
            groups: group_names(a),
            tasks,
            ..AppSpec::default()
        })
        .expect("deploy");
    }
    let change = sim
        .deploy_app(AppSpec {
            id: "/new".into(),
            groups: group_names(0),
            tasks: (0..NEW).map(|_| task(Vec::new(), "remote")).collect(),
            ..AppSpec::default()
        })
        .expect("deploy /new");
    assert_eq!(change.tasks.len(), NEW);
    change.tasks
}
