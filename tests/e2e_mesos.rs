//! The whole daemon against a simulated Mesos master, checked with real
//! packets.
//!
//! Two agent namespaces joined by a routed link, routed and bridged tasks on
//! both. Two simulated Mesos masters listen inside agent a1's namespace on
//! its identity address (a2 reaches them through the uplink): master 1
//! leads, master 2 follows and answers every API request with a 307 and a
//! protocol-relative `Location` to master 1. Each agent runs its own
//! `groupd` with `kind = "mesos"` and `urls = [master 2, master 1]` (the
//! follower first). Every change is applied to both masters, so the
//! follower holds the same state, as a replicated log would.
//!
//! Groups come from `container.network_infos[].groups` for some tasks and
//! from the `network-groups` task label for others; one task is in the open
//! group `public`, one has no group. Scenarios, each checked with ICMP, TCP
//! and UDP over IPv4 and IPv6 for every ordered pair against R1–R3 (R8 for a
//! task running without IPs yet): the SUBSCRIBE snapshot; a task launched
//! without IPs and then reported running with them; a task killed; a leader
//! failover (master 1's stream closes, master 1 now redirects to master 2,
//! which leads with the same state) that must not change a single rule nor
//! a probe's verdict; and a launch on the new leader, which is applied.

mod common;
#[path = "common/daemons.rs"]
mod daemons;
#[path = "common/matrix.rs"]
mod matrix;
#[path = "netns/mod.rs"]
mod netns;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use groupd_sim::mesos::{
    Leadership, MesosHandle, MesosOptions, MesosSim, NetworkSpec, StreamFault, TaskSpec,
};
use netns::probe::{ContinuousProbe, Proto};
use netns::{AgentId, Cluster, ManagedChild, TaskId};

const OPEN: &[&str] = &["public"];
const LABEL_KEY: &str = "network-groups";

/// What the master says about a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    /// Launched and running, but no IPs reported yet.
    NoIps,
    Running,
    /// Killed: gone from the master (its namespace may still exist).
    Gone,
}

/// Where a task's groups are written in its TaskInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// `container.network_infos[].groups`.
    NetworkInfo,
    /// The `network-groups` task label (comma separated).
    Label,
}

struct Task {
    /// Short name for messages and the matrix.
    name: String,
    /// Mesos task id.
    id: String,
    agent: usize,
    node: TaskId,
    groups: BTreeSet<String>,
    via: Via,
    known: Known,
    /// Its namespace was deleted (the container is gone too).
    removed: bool,
}

struct World {
    // Dropped in this order: the masters stop before their namespace goes.
    /// Master 1 (leads first), master 2 (follows first).
    masters: Vec<MesosHandle>,
    daemons: Vec<Option<ManagedChild>>,
    cluster: Cluster,
    agents: Vec<AgentId>,
    tasks: Vec<Task>,
    dir: PathBuf,
}

/// Bind a listener inside `ns` (a thread enters it; the socket stays there).
fn listen_in(ns: &str, ip: Ipv4Addr) -> TcpListener {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        common::enter_netns(&path);
        TcpListener::bind((ip, 0)).expect("bind the simulator's listener")
    })
    .join()
    .expect("bind thread")
}

fn groups(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|g| g.to_string()).collect()
}

/// `//host:port`: where a follower redirects to.
fn base(master: &MesosHandle) -> String {
    format!("//{}", master.addr())
}

impl World {
    fn build(name: &str) -> World {
        common::require_nft();
        let mut cluster = Cluster::new(name);
        let agents = vec![cluster.add_agent("a1"), cluster.add_agent("a2")];
        cluster.link_agents(agents[0], agents[1]);
        let a1 = cluster.agent(agents[0]).clone();
        let options = || MesosOptions {
            heartbeat: Duration::from_secs(1),
            ..MesosOptions::default()
        };
        let m1 = MesosSim::start_blocking(listen_in(&a1.ns, a1.ipv4), options())
            .expect("start master 1");
        let m2 = MesosSim::start_blocking(listen_in(&a1.ns, a1.ipv4), options())
            .expect("start master 2");
        m2.set_leadership(Leadership::Redirect(base(&m1)));
        let dir = std::env::temp_dir().join(format!("{}-mesos", cluster.prefix()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        World {
            masters: vec![m1, m2],
            daemons: vec![None, None],
            cluster,
            agents,
            tasks: Vec::new(),
            dir,
        }
    }

    /// A task namespace on `agent` (not yet known to the masters).
    fn add_task(&mut self, name: &str, app: &str, agent: usize, bridged: bool, via: Via) -> usize {
        let node = if bridged {
            self.cluster.add_bridged_task(self.agents[agent], name)
        } else {
            self.cluster.add_routed_task(self.agents[agent], name)
        };
        self.tasks.push(Task {
            name: name.to_string(),
            id: format!("{app}.{name}"),
            agent,
            node,
            groups: BTreeSet::new(),
            via,
            known: Known::Gone,
            removed: false,
        });
        self.tasks.len() - 1
    }

    fn idx(&self, name: &str) -> usize {
        self.tasks
            .iter()
            .position(|t| t.name == name)
            .unwrap_or_else(|| panic!("no task {name}"))
    }

    fn ips(&self, i: usize) -> Vec<IpAddr> {
        self.cluster.task(self.tasks[i].node).ips().to_vec()
    }

    /// The TaskSpec for task `i` in `group_names`; `with_ips: false`
    /// launches it without container IPs.
    fn spec(&self, i: usize, group_names: &[&str], with_ips: bool) -> TaskSpec {
        let t = &self.tasks[i];
        let list: Vec<String> = group_names.iter().map(|g| g.to_string()).collect();
        let mut labels = BTreeMap::new();
        if t.via == Via::Label && !list.is_empty() {
            labels.insert(LABEL_KEY.to_string(), list.join(","));
        }
        TaskSpec {
            id: t.id.clone(),
            agent: format!("a{}", t.agent + 1),
            network_infos: vec![NetworkSpec {
                name: Some("dcos".into()),
                groups: if t.via == Via::NetworkInfo {
                    list
                } else {
                    Vec::new()
                },
                ip_addresses: if with_ips { self.ips(i) } else { Vec::new() },
                ..NetworkSpec::default()
            }],
            labels,
            ..TaskSpec::default()
        }
    }

    /// Launch task `name` on `on` (master indices), running, with or
    /// without IPs.
    fn launch(&mut self, name: &str, group_names: &[&str], with_ips: bool, on: &[usize]) {
        let i = self.idx(name);
        let spec = self.spec(i, group_names, with_ips);
        for &m in on {
            self.masters[m].launch_task(spec.clone()).expect("launch");
        }
        self.tasks[i].groups = groups(group_names);
        self.tasks[i].known = if with_ips {
            Known::Running
        } else {
            Known::NoIps
        };
    }

    fn start(&mut self, agent: usize) {
        // The follower first: every session starts with a redirect.
        let urls: Vec<String> = self.masters.iter().rev().map(|m| m.url()).collect();
        let source = format!("kind = \"mesos\"\nurls = {urls:?}\nresync_interval = 5");
        let ns = self.cluster.agent(self.agents[agent]).ns.clone();
        self.daemons[agent] = Some(daemons::start_groupd(
            &self.cluster,
            &ns,
            &self.dir,
            agent,
            &source,
        ));
    }

    fn log(&self, agent: usize) -> String {
        daemons::log(&self.dir, agent)
    }

    /// Does `groupctl show --all` on `agent` say exactly what the model says?
    /// Returns the first difference.
    fn difference(&self, agent: usize) -> Option<String> {
        let expect: Vec<daemons::Expect> = self
            .tasks
            .iter()
            .map(|t| daemons::Expect {
                id: &t.id,
                enforcement: match t.known {
                    Known::Gone => None,
                    Known::NoIps => Some("not enforced: no IP yet"),
                    Known::Running if t.agent == agent => Some("enforced"),
                    Known::Running => Some("remote"),
                },
                groups: (t.known != Known::Gone).then_some(&t.groups),
            })
            .collect();
        daemons::difference(&self.dir, agent, &expect)
    }

    /// Wait until both agents show what the model says, in sync.
    fn wait_converged(&self, within: Duration) -> Duration {
        let started = Instant::now();
        for agent in 0..2 {
            while let Some(diff) = self.difference(agent) {
                assert!(
                    started.elapsed() < within,
                    "a{} did not converge within {within:?}: {diff}\nlog:\n{}",
                    agent + 1,
                    self.log(agent)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        started.elapsed()
    }

    /// R1–R3 for running tasks with IPs; anything else is unreachable (R8).
    fn expected(&self, s: usize, d: usize) -> bool {
        let (a, b) = (&self.tasks[s], &self.tasks[d]);
        a.known == Known::Running
            && b.known == Known::Running
            && matrix::allowed_by_groups(&a.groups, &b.groups, OPEN)
    }

    /// Every ordered pair of live namespaces, 3 protocols × 2 families.
    fn assert_matrix(&self, when: &str) {
        let live: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| !self.tasks[i].removed)
            .collect();
        let nodes: Vec<(&str, TaskId)> = live
            .iter()
            .map(|&i| (self.tasks[i].name.as_str(), self.tasks[i].node))
            .collect();
        let started = Instant::now();
        let bad = matrix::mismatches(&self.cluster, &nodes, |s, d, _| {
            self.expected(live[s], live[d])
        });
        assert!(
            bad.is_empty(),
            "{when}: {} wrong verdicts:\n{}\nlog a1:\n{}\nlog a2:\n{}",
            bad.len(),
            bad.join("\n"),
            self.log(0),
            self.log(1)
        );
        eprintln!(
            "[e2e_mesos] {when}: {} tasks, {} probes right in {:?}",
            nodes.len(),
            nodes.len() * (nodes.len() - 1) * 6,
            started.elapsed()
        );
    }

    /// `nft list table inet groupd` and `bridge groupd` on `agent`, with
    /// counters and element order normalised.
    fn tables(&self, agent: usize) -> Vec<String> {
        daemons::tables(&self.cluster, &self.cluster.agent(self.agents[agent]).ns)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for d in self.daemons.iter_mut() {
            if let Some(child) = d.take() {
                let _ = child.kill9();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Both masters.
const BOTH: &[usize] = &[0, 1];

#[test]
#[ignore = "needs root: runs groupd in network namespaces it creates and sends real packets"]
fn mesos_source_end_to_end_with_a_follower_and_a_leader_failover() {
    let test_started = Instant::now();
    let mut w = World::build("mesos");
    for (name, app, agent, bridged, via) in [
        ("web1", "web", 0, false, Via::NetworkInfo),
        ("web2", "web", 1, true, Via::Label),
        ("db1", "db", 1, false, Via::NetworkInfo),
        ("db2", "db", 0, true, Via::Label),
        ("cache1", "cache", 0, false, Via::NetworkInfo),
        ("lb", "lb", 1, true, Via::Label),
        ("lonely", "lonely", 0, true, Via::NetworkInfo),
    ] {
        w.add_task(name, app, agent, bridged, via);
    }
    w.launch("web1", &["web"], true, BOTH);
    w.launch("web2", &["web"], true, BOTH);
    w.launch("db1", &["db"], true, BOTH);
    w.launch("db2", &["db"], true, BOTH);
    w.launch("cache1", &["cache", "web"], true, BOTH);
    w.launch("lb", &["public"], true, BOTH);
    w.launch("lonely", &[], true, BOTH);
    w.start(0);
    w.start(1);

    // 1. The SUBSCRIBED snapshot, reached through the follower's redirect.
    let took = w.wait_converged(Duration::from_secs(20));
    eprintln!("[e2e_mesos] initial convergence {took:?}");
    w.assert_matrix("SUBSCRIBE snapshot");
    assert!(
        w.masters[1].stats().requests > 0 && w.masters[0].subscribers() == 2,
        "both groupd asked the follower first and subscribe to the leader: {:?} / {:?}",
        w.masters[1].stats(),
        w.masters[0].stats()
    );
    assert_eq!(
        w.masters[1].subscribers(),
        0,
        "nobody streams from the follower"
    );

    // 2. A launch: TASK_STAGING, TASK_STARTING, TASK_RUNNING without IPs
    // (its interface exists but is unknown: dropped), then an update with
    // the container's IPs: reachable per its groups.
    let web3 = w.add_task("web3", "web", 1, false, Via::Label);
    w.launch("web3", &["web"], false, BOTH);
    w.wait_converged(Duration::from_secs(10));
    w.assert_matrix("web3 launched, running without IPs");
    let (id, ips) = (w.tasks[web3].id.clone(), w.ips(web3));
    for m in &w.masters {
        m.update_task(&id, "TASK_RUNNING", Some(ips.clone()))
            .expect("update");
    }
    w.tasks[web3].known = Known::Running;
    w.wait_converged(Duration::from_secs(10));
    w.assert_matrix("web3 running with IPs");

    // 3. A kill: its peers lose it at once, and its interface (the
    // container is still there) is cut off.
    let cache1 = w.idx("cache1");
    let id = w.tasks[cache1].id.clone();
    for m in &w.masters {
        m.kill_task(&id).expect("kill");
    }
    w.tasks[cache1].known = Known::Gone;
    w.wait_converged(Duration::from_secs(10));
    w.assert_matrix("cache1 killed, its container still up");
    w.cluster.remove_task(w.tasks[cache1].node);
    w.tasks[cache1].removed = true;
    w.wait_converged(Duration::from_secs(10));

    // 4. Master 1's stream ends; master 2 takes over with the same state.
    failover(&mut w, 0, 1, StreamFault::Close);

    // 5. A change on the new leader is applied.
    let api1 = w.add_task("api1", "api", 0, true, Via::NetworkInfo);
    w.launch("api1", &["db", "public"], true, &[1]);
    let web1 = w.idx("web1");
    let id = w.tasks[web1].id.clone();
    w.masters[1].kill_task(&id).expect("kill on the new leader");
    w.tasks[web1].known = Known::Gone;
    w.wait_converged(Duration::from_secs(10));
    assert!(w.tasks[api1].known == Known::Running);
    w.assert_matrix("api1 launched and web1 killed on the new leader");

    // 6. Fail back, the hard way: master 2 goes silent (a half-open
    // stream, no heartbeats) and master 1, which has caught up, leads. Only
    // heartbeat silence (3 missed 1 s heartbeats) tells the agents; they
    // demote the silent master and subscribe to master 1.
    let spec = w.spec(api1, &["db", "public"], true);
    w.masters[0].launch_task(spec).expect("catch up: launch");
    w.masters[0].kill_task(&id).expect("catch up: kill");
    failover(&mut w, 1, 0, StreamFault::Silence);
    let db2 = w.idx("db2");
    let id = w.tasks[db2].id.clone();
    w.masters[0].kill_task(&id).expect("kill on master 1");
    w.tasks[db2].known = Known::Gone;
    w.wait_converged(Duration::from_secs(10));
    w.assert_matrix("db2 killed on master 1, leading again");

    let total = test_started.elapsed();
    eprintln!("[e2e_mesos] whole scenario {total:?}");
}

/// A leader failover from master `from` to master `to`: `from`'s open
/// streams get `fault` and `from` now redirects to `to`, which leads with
/// the same state. The agents re-subscribe and get a snapshot equal to what
/// they had: no rule changes, no probe changes its verdict.
fn failover(w: &mut World, from: usize, to: usize, fault: StreamFault) {
    let before = [w.tables(0), w.tables(1)];
    let (db1, db2) = (w.idx("db1"), w.idx("db2"));
    let (lonely, web2) = (w.idx("lonely"), w.idx("web2"));
    assert!(w.expected(db2, db1) && !w.expected(lonely, web2));
    let to_db1 = w.cluster.task(w.tasks[db1].node).ipv4.into();
    let to_web2 = w.cluster.task(w.tasks[web2].node).ipv6.into();
    let allowed = ContinuousProbe::start(&w.cluster, w.tasks[db2].node, to_db1, Proto::Tcp, 100);
    let denied = ContinuousProbe::start(&w.cluster, w.tasks[lonely].node, to_web2, Proto::Udp, 100);

    let started = Instant::now();
    let new_leader = base(&w.masters[to]);
    w.masters[to].set_leadership(Leadership::Leader);
    w.masters[from].set_leadership(Leadership::Redirect(new_leader));
    w.masters[from].disrupt_streams(fault);

    // Watch the tables until both agents stream from the new leader and
    // report in sync, and a little longer.
    let mut settled: Option<Instant> = None;
    let mut checks = 0;
    loop {
        for (agent, before) in before.iter().enumerate() {
            let now = w.tables(agent);
            checks += 1;
            assert!(
                &now == before,
                "a{} tables changed {:?} into the failover:\n{}\nlog:\n{}",
                agent + 1,
                started.elapsed(),
                daemons::diff(before, &now),
                w.log(agent)
            );
        }
        let on_new = w.masters[to].subscribers() == 2 && w.masters[from].subscribers() == 0;
        if settled.is_none() && on_new && (0..2).all(|a| w.difference(a).is_none()) {
            settled = Some(Instant::now());
            eprintln!(
                "[e2e_mesos] {fault:?}: both agents on master {}, in sync, {:?} after the failover",
                to + 1,
                started.elapsed()
            );
        }
        if settled.is_some_and(|t| t.elapsed() >= Duration::from_secs(2)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{fault:?}: no re-subscription to master {} within 15 s: {:?} / {:?}\nlog a1:\n{}\nlog a2:\n{}",
            to + 1,
            w.masters[from].stats(),
            w.masters[to].stats(),
            w.log(0),
            w.log(1)
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    let allowed = allowed.stop();
    let denied = denied.stop();
    assert!(
        allowed.len() >= 10 && allowed.iter().all(|(_, ok)| *ok),
        "{fault:?}: db2 -> db1 (allowed) failed {} of {} times during the failover",
        allowed.iter().filter(|(_, ok)| !ok).count(),
        allowed.len()
    );
    assert!(
        denied.len() >= 3 && denied.iter().all(|(_, ok)| !ok),
        "{fault:?}: lonely -> web2 (denied) got through during the failover"
    );
    eprintln!(
        "[e2e_mesos] {fault:?} failover: {checks} table listings unchanged, {} + {} continuous probes kept their verdicts",
        allowed.len(),
        denied.len()
    );
    w.assert_matrix(&format!(
        "after the failover to master {} ({fault:?})",
        to + 1
    ));
}
