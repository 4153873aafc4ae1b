//! The `mesos` benchmark's agent: a scratch namespace with a few local task
//! interfaces, a simulated Mesos master (`groupd_sim::mesos`) listening
//! inside it with 10,000 running tasks (plus 1,000 running without IPs yet),
//! and a real `groupd` with `kind = "mesos"` pointed at it. Starting the
//! agent measures the snapshot: groupd's start to the kernel commit of the
//! SUBSCRIBE state, and groupd's peak RSS then.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::time::Duration;

use groupd_sim::mesos::{MesosHandle, MesosOptions, MesosSim, NetworkSpec, TaskSpec};

use crate::common::cluster;
use crate::common::groupd::{self as daemon, Groupd};
use crate::common::netns::ScratchNs;
use crate::common::nlwatch::NftWatch;
use crate::common::procstat::peak_rss_mb;
use crate::common::stats::fmt_s;

/// Apps of 10 tasks; app `a` is in the 3 groups `cluster::groups_of(a, G)`
/// (as `network_infos[].groups`), so each of the G = 300 groups has 10
/// apps (100 tasks). The same cluster as the `marathon` benchmark.
pub const APPS: usize = 1_000;
pub const TASKS_PER_APP: usize = 10;
const GROUPS: usize = 300;
/// Running tasks (with IPs) in the SUBSCRIBE snapshot.
pub const KNOWN: usize = APPS * TASKS_PER_APP;
/// Running tasks of one more app without IPs yet, brought up one by one.
pub const NEW: usize = 1_000;
/// The tasks of app 0 run on this agent (task interfaces veth-b1…).
const LOCAL: usize = TASKS_PER_APP;
/// Remote tasks are spread over this many Mesos agents.
const AGENTS: usize = 100;

/// Address of the i-th new task.
pub fn new_ip(i: usize) -> Ipv4Addr {
    cluster::task_ip(KNOWN + i)
}

pub fn new_task_id(i: usize) -> String {
    format!("new.{i}")
}

/// What starting groupd against the snapshot cost.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// groupd spawned -> the transaction holding the last snapshot task's
    /// `endpoints4` element committed (nf_tables notification).
    pub commit: Duration,
    /// groupd spawned -> `groupctl status` in-sync with every endpoint.
    pub in_sync: Duration,
    /// VmHWM right after the commit, MiB.
    pub peak_mb: f64,
    /// Notification datagrams the kernel dropped (ENOBUFS).
    pub overruns: u64,
}

pub struct Agent {
    // Dropped in this order: groupd, the master, then the namespace.
    daemon: Groupd,
    pub sim: MesosHandle,
    pub ns: ScratchNs,
    pub snapshot: Snapshot,
}

impl Agent {
    pub fn start(dir: &Path) -> Agent {
        let ns = ScratchNs::new("mesos");
        let local: Vec<Ipv4Addr> = (0..LOCAL).map(cluster::task_ip).collect();
        daemon::task_interfaces(&ns, dir, &local);
        let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").expect("bind the simulator"));
        let sim =
            MesosSim::start_blocking(listener, MesosOptions::default()).expect("start the master");
        load(&sim);
        // Subscribed before groupd starts: every element of its first
        // transaction is announced.
        let mut watch = NftWatch::start(&ns, "endpoints4");
        let source = format!("kind = \"mesos\"\nurls = [{:?}]\n", sim.url());
        let daemon = Groupd::spawn(&ns, dir, &daemon::config(&source, dir));
        let last = cluster::task_ip(KNOWN - 1);
        let committed = watch.wait_for(last, Duration::from_secs(120));
        let peak_mb = peak_rss_mb(daemon.pid()).expect("read groupd's VmHWM");
        daemon.wait_in_sync(KNOWN, Duration::from_secs(120));
        let in_sync = daemon.started.elapsed();
        let overruns = watch.stop();
        let commit = match committed {
            Some(at) => at.saturating_duration_since(daemon.started),
            None => panic!("{last} never reached the kernel ({overruns} notification overruns)"),
        };
        // The kernel holds exactly the snapshot's addresses.
        let listing = daemon::kernel_set(&ns, "endpoints4");
        let held = listing.matches("10.233.").count();
        assert_eq!(held, KNOWN, "endpoints4 holds {held} addresses");
        let snapshot = Snapshot {
            commit,
            in_sync,
            peak_mb,
            overruns,
        };
        eprintln!(
            "[mesos] snapshot of {KNOWN} tasks committed {} after groupd's start (in sync per groupctl after {}), peak RSS {:.1} MiB",
            fmt_s(commit.as_secs_f64()),
            fmt_s(in_sync.as_secs_f64()),
            peak_mb
        );
        Agent {
            daemon,
            sim,
            ns,
            snapshot,
        }
    }

    pub fn wait_in_sync(&self, endpoints: usize, within: Duration) {
        self.daemon.wait_in_sync(endpoints, within)
    }
}

fn group_names(app: usize) -> Vec<String> {
    cluster::groups_of(app, GROUPS)
        .into_iter()
        .map(cluster::group_name)
        .collect()
}

fn spec(id: String, agent: String, groups: Vec<String>, ip: Option<Ipv4Addr>) -> TaskSpec {
    TaskSpec {
        id,
        agent,
        network_infos: vec![NetworkSpec {
            name: Some("dcos".into()),
            groups,
            ip_addresses: ip.into_iter().map(Into::into).collect(),
            ..NetworkSpec::default()
        }],
        ..TaskSpec::default()
    }
}

/// 1,000 apps × 10 running tasks with IPs, then the 1,000 `new.*` tasks
/// (the groups of app 0, whose tasks are local) running without IPs.
fn load(sim: &MesosHandle) {
    for a in 0..APPS {
        let groups = group_names(a);
        for k in 0..TASKS_PER_APP {
            let t = a * TASKS_PER_APP + k;
            let agent = if t < LOCAL {
                "local".to_string()
            } else {
                format!("S{}", a % AGENTS)
            };
            sim.launch_task(spec(
                format!("app{a}.{k}"),
                agent,
                groups.clone(),
                Some(cluster::task_ip(t)),
            ))
            .expect("launch");
        }
    }
    let groups = group_names(0);
    for i in 0..NEW {
        sim.launch_task(spec(new_task_id(i), "S0".into(), groups.clone(), None))
            .expect("launch new");
    }
}
