//! The `marathon` benchmark's agent: a scratch namespace with a few local
//! task interfaces, a simulated Marathon listening inside it with 10,000
//! running tasks (plus 1,000 staging ones to bring up), and a real `groupd`
//! with `kind = "marathon"` pointed at it.

pub mod converge;
pub mod soak;

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::Path;
use std::time::Duration;

use groupd_sim::{AppSpec, MarathonSim, SimHandle, SimOptions, TaskSpec};

use crate::common::cluster;
use crate::common::groupd::{self as daemon, Groupd};
use crate::common::netns::ScratchNs;

/// Apps of 10 tasks; app `a` is in the 3 groups `cluster::groups_of(a, G)`,
/// so each of the G = 300 groups has 10 apps (100 tasks).
pub const APPS: usize = 1_000;
pub const TASKS_PER_APP: usize = 10;
pub const GROUPS: usize = 300;
/// Running tasks the agent knows before anything is measured.
pub const KNOWN: usize = APPS * TASKS_PER_APP;
/// Staging tasks (no IPs yet) of one more app, brought up one by one.
pub const NEW: usize = 1_000;
/// The tasks of app 0 run on this agent (task interfaces veth-b1…).
pub const LOCAL: usize = TASKS_PER_APP;

/// Address of the i-th new task, and the one it moves to during the soak.
pub fn new_ip(i: usize) -> Ipv4Addr {
    cluster::task_ip(KNOWN + i)
}

pub fn moved_ip(i: usize) -> Ipv4Addr {
    cluster::task_ip(KNOWN + NEW + i)
}

/// Addresses of the local tasks (app 0).
pub fn local_ips() -> Vec<Ipv4Addr> {
    (0..LOCAL).map(cluster::task_ip).collect()
}

pub struct Agent {
    // Dropped in this order: groupd, the simulator, then the namespace.
    daemon: Groupd,
    pub sim: SimHandle,
    pub ns: ScratchNs,
    /// Marathon ids of the staging tasks, in `new_ip` order.
    pub new_tasks: Vec<String>,
    pub startup: Duration,
}

impl Agent {
    pub fn start(dir: &Path) -> Agent {
        let ns = ScratchNs::new("mara");
        daemon::task_interfaces(&ns, dir, &local_ips());
        let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").expect("bind the simulator"));
        let sim = MarathonSim::start_blocking(listener, SimOptions::default()).expect("start sim");
        let new_tasks = load(&sim);
        let source = format!("kind = \"marathon\"\nurls = [{:?}]\n", sim.url());
        let daemon = Groupd::spawn(&ns, dir, &daemon::config(&source, dir));
        let mut agent = Agent {
            daemon,
            sim,
            ns,
            new_tasks,
            startup: Duration::ZERO,
        };
        agent.wait_in_sync(KNOWN, Duration::from_secs(120));
        agent.startup = agent.daemon.started.elapsed();
        agent
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        self.daemon.status()
    }

    /// Until groupd is in sync and holds `endpoints` endpoints.
    pub fn wait_in_sync(&self, endpoints: usize, within: Duration) {
        self.daemon.wait_in_sync(endpoints, within)
    }

    /// Elements of `set` in the kernel, read with the nft CLI.
    pub fn kernel_set(&self, set: &str) -> String {
        daemon::kernel_set(&self.ns, set)
    }
}

/// The 3 group names of app `app` (of [`GROUPS`]).
pub fn group_names(app: usize) -> Vec<String> {
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
