//! Agents that watch etcd, fed by `groupd publish`, checked with real
//! packets (docs/design.md §2, the `etcd` row).
//!
//! Two agent namespaces joined by a routed link, routed and bridged tasks
//! on both. Inside agent a1's namespace, on its identity address: the
//! simulated master (Mesos or Marathon), real etcd members (one, or three)
//! and two `groupd publish` (lease TTL 2 s; the first leads). Each agent
//! runs `groupd` with `kind = "etcd"`; a2 reaches etcd over the uplink.
//!
//! * R1–R3, R8 and R9 (`enforce_discovery_ports`, one task declares TCP
//!   only) for every ordered pair, ICMP/TCP/UDP over IPv4 and IPv6; R5
//!   (own host allowed, the other host not) and R7 (spoofed sources);
//!   then a kill and a launch on the master.
//! * The leading publisher is killed (-9): continuous probes keep their
//!   verdicts, and a change made on the master right after reaches both
//!   agents through the standby.
//! * Three etcd members, the raft leader killed while the master streams
//!   task changes: the agents keep converging and continuous probes between
//!   unchanged tasks never change verdict.
//! * The only etcd member killed: both agents report degraded and keep
//!   their tables byte for byte; a change made meanwhile arrives once etcd
//!   is back, by resuming the watch (no second range read).

mod common;
#[path = "common/daemons.rs"]
mod daemons;
#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/etcd_agent.rs"]
mod etcd_agent;
#[path = "common/matrix.rs"]
mod matrix;
#[path = "netns/mod.rs"]
mod netns;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcd_agent::Publisher;
use groupd_sim as msim;
use groupd_sim::mesos::{MesosHandle, MesosOptions, MesosSim, NetworkSpec, PortSpec, TaskSpec};
use groupd_sim::{MarathonSim, SimHandle, SimOptions};
use netns::probe::{ContinuousProbe, Probe, Proto};
use netns::{AgentId, Cluster, ManagedChild, TaskId};

const OPEN: &[&str] = &["public"];
const PREFIX: &str = "/groupd/v1";
const TTL: u32 = 2;

enum Master {
    Mesos(MesosHandle),
    Marathon(SimHandle),
}

impl Master {
    fn url(&self) -> String {
        match self {
            Master::Mesos(m) => m.url(),
            Master::Marathon(m) => m.url(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Master::Mesos(_) => "mesos",
            Master::Marathon(_) => "marathon",
        }
    }

    /// Launch one running task `id` of its own app, with `ips`, `groups`
    /// and discovery ports `ports` (TCP).
    fn launch(&self, id: &str, agent: usize, groups: &[String], ips: Vec<IpAddr>, ports: &[u16]) {
        let ports: Vec<PortSpec> = ports
            .iter()
            .map(|&n| PortSpec {
                number: n,
                protocol: Some("tcp".into()),
                name: Some(format!("p{n}")),
            })
            .collect();
        match self {
            Master::Mesos(m) => {
                m.launch_task(TaskSpec {
                    id: id.into(),
                    agent: format!("a{}", agent + 1),
                    network_infos: vec![NetworkSpec {
                        name: Some("dcos".into()),
                        groups: groups.to_vec(),
                        ip_addresses: ips,
                        ..NetworkSpec::default()
                    }],
                    discovery: ports,
                    ..TaskSpec::default()
                })
                .expect("launch");
            }
            Master::Marathon(m) => {
                m.deploy_app(msim::AppSpec {
                    id: app_of(id),
                    groups: groups.to_vec(),
                    discovery: ports,
                    tasks: vec![msim::TaskSpec {
                        id: Some(id.into()),
                        ips,
                        agent: format!("a{}", agent + 1),
                        host: None,
                    }],
                    ..msim::AppSpec::default()
                })
                .expect("deploy");
            }
        }
    }

    fn kill(&self, id: &str) {
        match self {
            Master::Mesos(m) => {
                m.kill_task(id).expect("kill");
            }
            Master::Marathon(m) => {
                m.remove_app(&app_of(id)).expect("remove app");
            }
        }
    }
}

/// `web1.t` -> `/web1`: one app per task (Marathon).
fn app_of(id: &str) -> String {
    format!("/{}", id.split('.').next().unwrap_or(id))
}

struct Task {
    name: String,
    id: String,
    agent: usize,
    node: Option<TaskId>,
    groups: BTreeSet<String>,
    /// Discovery ports (TCP); with enforcement, peers reach only these.
    ports: Vec<u16>,
    /// Known to the master (running, with IPs).
    known: bool,
    /// Its IPs when it has no namespace (a remote task of the stream).
    ips: Vec<IpAddr>,
}

struct World {
    // Dropped in this order: daemons, publishers, etcd and the master stop
    // before their namespace goes.
    daemons: Vec<Option<ManagedChild>>,
    publishers: Vec<Publisher>,
    etcd: etcd::Etcd,
    master: Master,
    cluster: Cluster,
    agents: Vec<AgentId>,
    tasks: Vec<Task>,
    dir: PathBuf,
}

fn listen_in(ns: &str, ip: Ipv4Addr) -> TcpListener {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        common::enter_netns(&path);
        TcpListener::bind((ip, 0)).expect("bind the simulator's listener")
    })
    .join()
    .expect("bind thread")
}

impl World {
    fn build(name: &str, marathon: bool, members: usize) -> World {
        common::require_nft();
        let mut cluster = Cluster::new(name);
        let agents = vec![cluster.add_agent("a1"), cluster.add_agent("a2")];
        cluster.link_agents(agents[0], agents[1]);
        let a1 = cluster.agent(agents[0]).clone();
        let master = if marathon {
            Master::Marathon(
                MarathonSim::start_blocking(listen_in(&a1.ns, a1.ipv4), SimOptions::default())
                    .expect("start Marathon"),
            )
        } else {
            Master::Mesos(
                MesosSim::start_blocking(
                    listen_in(&a1.ns, a1.ipv4),
                    MesosOptions {
                        heartbeat: Duration::from_secs(1),
                        ..MesosOptions::default()
                    },
                )
                .expect("start Mesos"),
            )
        };
        let etcd = etcd::Etcd::start(name, members, Some(&a1.ns), IpAddr::V4(a1.ipv4));
        let dir = std::env::temp_dir().join(format!("{}-etcd", cluster.prefix()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        World {
            daemons: vec![None, None],
            publishers: Vec::new(),
            etcd,
            master,
            cluster,
            agents,
            tasks: Vec::new(),
            dir,
        }
    }

    fn add_task(&mut self, name: &str, agent: usize, bridged: bool) -> usize {
        let node = if bridged {
            self.cluster.add_bridged_task(self.agents[agent], name)
        } else {
            self.cluster.add_routed_task(self.agents[agent], name)
        };
        self.tasks.push(Task {
            name: name.into(),
            id: format!("{name}.t"),
            agent,
            node: Some(node),
            groups: BTreeSet::new(),
            ports: Vec::new(),
            known: false,
            ips: Vec::new(),
        });
        self.tasks.len() - 1
    }

    fn idx(&self, name: &str) -> usize {
        self.tasks
            .iter()
            .position(|t| t.name == name)
            .unwrap_or_else(|| panic!("no task {name}"))
    }

    fn launch(&mut self, name: &str, groups: &[&str], ports: &[u16]) {
        let i = self.idx(name);
        let t = &mut self.tasks[i];
        t.groups = groups.iter().map(|g| g.to_string()).collect();
        t.ports = ports.to_vec();
        t.known = true;
        let ips = match t.node {
            Some(n) => self.cluster.task(n).ips().to_vec(),
            None => t.ips.clone(),
        };
        let groups: Vec<String> = t.groups.iter().cloned().collect();
        self.master.launch(&t.id, t.agent, &groups, ips, ports);
    }

    fn kill(&mut self, name: &str) {
        let i = self.idx(name);
        self.tasks[i].known = false;
        self.master.kill(&self.tasks[i].id);
    }

    /// A task of the master with no namespace here (its IPs unused).
    fn add_remote(&mut self, name: &str, n: usize) -> usize {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 233, 200, (n % 250 + 1) as u8));
        self.tasks.push(Task {
            name: name.into(),
            id: format!("{name}.t"),
            agent: 1,
            node: None,
            groups: BTreeSet::new(),
            ports: Vec::new(),
            known: false,
            ips: vec![ip],
        });
        self.tasks.len() - 1
    }

    fn start_publisher(&mut self, identity: &str) {
        let ns = self.cluster.agent(self.agents[0]).ns.clone();
        let source = format!(
            "kind = {:?}\nurls = [{:?}]\nresync_interval = 5",
            self.master.kind(),
            self.master.url()
        );
        self.publishers.push(Publisher::start(
            &self.dir,
            identity,
            &source,
            &self.etcd.urls(),
            PREFIX,
            TTL,
            &["ip", "netns", "exec", &ns],
        ));
    }

    fn start_agent(&mut self, agent: usize) {
        let source = format!(
            "kind = \"etcd\"\nurls = {:?}\nprefix = {PREFIX:?}\n[policy]\nenforce_discovery_ports = true",
            self.etcd.urls()
        );
        let ns = self.cluster.agent(self.agents[agent]).ns.clone();
        self.daemons[agent] = Some(daemons::start_groupd(
            &self.cluster,
            &ns,
            &self.dir,
            agent,
            &source,
        ));
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for a in 0..2 {
            out.push_str(&format!(
                "--- a{}:\n{}\n",
                a + 1,
                daemons::log(&self.dir, a)
            ));
        }
        for p in &self.publishers {
            out.push_str(&format!("--- {}:\n{}\n", p.identity, p.log()));
        }
        out
    }

    fn difference(&self, agent: usize) -> Option<String> {
        let expect: Vec<daemons::Expect> = self
            .tasks
            .iter()
            .map(|t| daemons::Expect {
                id: &t.id,
                enforcement: match (t.known, t.node) {
                    (false, _) => None,
                    (true, Some(_)) if t.agent == agent => Some("enforced"),
                    (true, _) => Some("remote"),
                },
                groups: t.known.then_some(&t.groups),
            })
            .collect();
        daemons::difference(&self.dir, agent, &expect)
    }

    fn wait_converged(&self, within: Duration) -> Duration {
        let started = Instant::now();
        for agent in 0..2 {
            while let Some(diff) = self.difference(agent) {
                assert!(
                    started.elapsed() < within,
                    "a{} did not converge within {within:?}: {diff}\n{}",
                    agent + 1,
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        started.elapsed()
    }

    /// R1–R3 and R9 between namespaces; R8 for unknown ones.
    fn expected(&self, s: usize, d: usize, proto: Proto) -> bool {
        let (a, b) = (&self.tasks[s], &self.tasks[d]);
        let port_ok = b.ports.is_empty()
            || match proto {
                Proto::Icmp => true,
                Proto::Tcp => b.ports.contains(&netns::TCP_PORT),
                Proto::Udp => b.ports.contains(&netns::UDP_PORT),
            };
        a.known && b.known && matrix::allowed_by_groups(&a.groups, &b.groups, OPEN) && port_ok
    }

    fn assert_matrix(&self, when: &str) {
        let live: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| self.tasks[i].node.is_some())
            .collect();
        let nodes: Vec<(&str, TaskId)> = live
            .iter()
            .map(|&i| {
                (
                    self.tasks[i].name.as_str(),
                    self.tasks[i].node.expect("node"),
                )
            })
            .collect();
        let bad = matrix::mismatches(&self.cluster, &nodes, |s, d, proto| {
            self.expected(live[s], live[d], proto)
        });
        assert!(
            bad.is_empty(),
            "{when}: {} wrong verdicts:\n{}\n{}",
            bad.len(),
            bad.join("\n"),
            self.logs()
        );
        eprintln!(
            "[e2e_etcd] {when}: {} probes right",
            nodes.len() * (nodes.len() - 1) * 6
        );
    }

    fn node(&self, name: &str) -> TaskId {
        self.tasks[self.idx(name)].node.expect("a namespace")
    }

    fn status(&self, agent: usize) -> serde_json::Value {
        daemons::groupctl(&self.dir, agent, &["status"]).unwrap_or_default()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for d in self.daemons.iter_mut() {
            if let Some(child) = d.take() {
                let _ = child.kill9();
            }
        }
        for p in self.publishers.iter_mut() {
            p.kill9();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The tasks of every scenario, launched, publishers and agents started,
/// converged.
fn standard(w: &mut World) {
    for (name, agent, bridged) in [
        ("web1", 0, false),
        ("web2", 1, true),
        ("db1", 1, false),
        ("db2", 0, true),
        ("lb", 1, true),
        ("lonely", 0, false),
        ("ghost", 1, false),
    ] {
        w.add_task(name, agent, bridged);
    }
    w.launch("web1", &["web"], &[]);
    w.launch("web2", &["web", "db"], &[]);
    // R9: db1 declares TCP only.
    w.launch("db1", &["db"], &[netns::TCP_PORT]);
    w.launch("db2", &["db"], &[]);
    w.launch("lb", &["public"], &[]);
    w.launch("lonely", &[], &[]);
    // ghost: a namespace the master never heard of (R8).
    w.start_publisher("pub-1");
    std::thread::sleep(Duration::from_millis(1500));
    w.start_publisher("pub-2");
    w.start_agent(0);
    w.start_agent(1);
    let took = w.wait_converged(Duration::from_secs(30));
    eprintln!("[e2e_etcd] initial convergence {took:?}");
    for agent in 0..2 {
        let h = &w.status(agent)["health"];
        assert_eq!(h["source"], "etcd", "{h}");
        assert_eq!(h["source_publisher"], "pub-1", "{h}");
        assert!(h["source_revision"].as_i64().is_some_and(|r| r > 0), "{h}");
    }
}

/// R5 and R7 on a converged world.
fn host_and_spoofing(w: &World) {
    let (a1, a2) = (w.agents[0], w.agents[1]);
    let web1: IpAddr = w.cluster.task(w.node("web1")).ipv4.into();
    let r = w.cluster.probe_many(vec![
        Probe::new(a1, web1, Proto::Tcp),
        Probe::new(a2, web1, Proto::Tcp),
    ]);
    assert_eq!(
        r,
        vec![true, false],
        "R5: own host allowed, the other host denied"
    );
    let db1: IpAddr = w.cluster.task(w.node("db1")).ipv4.into();
    let db2: IpAddr = w.cluster.task(w.node("db2")).ipv4.into();
    assert!(
        !w.cluster.spoofed_udp(w.node("web1"), db2, db1),
        "R7: a spoofed source from a routed task must be dropped"
    );
    assert!(
        !w.cluster.spoofed_udp(w.node("lonely"), db2, db1),
        "R7: a spoofed source must be dropped"
    );
}

fn matrix_and_changes(marathon: bool) {
    let mut w = World::build(if marathon { "etcdma" } else { "etcdme" }, marathon, 1);
    standard(&mut w);
    w.assert_matrix("etcd snapshot");
    host_and_spoofing(&w);

    w.kill("web2");
    w.wait_converged(Duration::from_secs(10));
    w.assert_matrix("web2 killed");
    w.add_task("api1", 0, true);
    w.launch("api1", &["db", "public"], &[]);
    w.wait_converged(Duration::from_secs(10));
    w.assert_matrix("api1 launched");
}

#[test]
#[ignore = "needs root: runs groupd, etcd and publishers in network namespaces it creates and sends real packets"]
fn etcd_fed_from_mesos_enforces_r1_to_r9() {
    matrix_and_changes(false);
}

#[test]
#[ignore = "needs root: runs groupd, etcd and publishers in network namespaces it creates and sends real packets"]
fn etcd_fed_from_marathon_enforces_r1_to_r9() {
    matrix_and_changes(true);
}

/// Continuous probes of one allowed and one denied flow between tasks that
/// do not change; returns them started.
fn keep_probing(w: &World) -> (ContinuousProbe, ContinuousProbe) {
    let to_db1 = w.cluster.task(w.node("db1")).ipv4.into();
    let to_web1 = w.cluster.task(w.node("web1")).ipv6.into();
    let allowed = ContinuousProbe::start(&w.cluster, w.node("db2"), to_db1, Proto::Tcp, 100);
    let denied = ContinuousProbe::start(&w.cluster, w.node("lonely"), to_web1, Proto::Udp, 100);
    (allowed, denied)
}

fn assert_no_window(what: &str, allowed: ContinuousProbe, denied: ContinuousProbe) {
    let allowed = allowed.stop();
    let denied = denied.stop();
    assert!(
        allowed.len() >= 10 && allowed.iter().all(|(_, ok)| *ok),
        "{what}: db2 -> db1 (allowed) failed {} of {} times",
        allowed.iter().filter(|(_, ok)| !ok).count(),
        allowed.len()
    );
    assert!(
        denied.len() >= 5 && denied.iter().all(|(_, ok)| !ok),
        "{what}: lonely -> web1 (denied) got through"
    );
    eprintln!(
        "[e2e_etcd] {what}: {} + {} continuous probes kept their verdicts",
        allowed.len(),
        denied.len()
    );
}

#[test]
#[ignore = "needs root: runs groupd, etcd and publishers in network namespaces it creates and sends real packets"]
fn the_standby_publisher_takes_over_when_the_leader_is_killed() {
    let mut w = World::build("etcdpub", false, 1);
    standard(&mut w);
    let (allowed, denied) = keep_probing(&w);
    let killed = Instant::now();
    w.publishers[0].kill9();
    w.add_task("api1", 0, true);
    w.launch("api1", &["db"], &[]);
    w.kill("web2");
    let took = w.wait_converged(Duration::from_secs(TTL as u64 + 15));
    eprintln!(
        "[e2e_etcd] leading publisher killed: a change made at once reached both agents in {:?} (lease TTL {TTL} s)",
        killed.elapsed()
    );
    assert!(took <= Duration::from_secs(TTL as u64 + 10));
    for agent in 0..2 {
        let h = &w.status(agent)["health"];
        assert_eq!(h["source_publisher"], "pub-2", "{h}");
        assert_eq!(h["source_full_reads"], 1, "no re-read of the prefix: {h}");
    }
    assert_no_window("publisher failover", allowed, denied);
    w.assert_matrix("after the publisher failover");
}

#[test]
#[ignore = "needs root: runs groupd, etcd and publishers in network namespaces it creates and sends real packets"]
fn the_etcd_leader_killed_during_a_stream_of_changes() {
    let mut w = World::build("etcdraft", false, 3);
    standard(&mut w);
    let churn: Vec<usize> = (0..40)
        .map(|n| w.add_remote(&format!("churn{n}"), n))
        .collect();
    let (allowed, denied) = keep_probing(&w);
    let mut killed = None;
    for (k, &i) in churn.iter().enumerate() {
        let name = w.tasks[i].name.clone();
        w.launch(&name, &["web"], &[]);
        if k % 3 == 2 {
            let gone = w.tasks[churn[k - 2]].name.clone();
            w.kill(&gone);
        }
        if k == 15 {
            let leader = w.etcd.leader().expect("an etcd leader");
            w.etcd.kill(leader);
            killed = Some((leader, Instant::now()));
            eprintln!("[e2e_etcd] killed etcd member {leader} (the raft leader) mid-stream");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = w.wait_converged(Duration::from_secs(30));
    let (leader, at) = killed.expect("killed");
    eprintln!(
        "[e2e_etcd] both agents equal the master {:?} after the leader was killed ({took:?} after the last change)",
        at.elapsed()
    );
    if std::env::var_os("GROUPD_E2E_LOGS").is_some() {
        eprintln!("{}", w.logs());
    }
    assert_no_window("etcd leader killed", allowed, denied);
    w.assert_matrix("after the etcd leader was killed");
    assert!(w.etcd.leader().is_some_and(|l| l != leader));
}

#[test]
#[ignore = "needs root: runs groupd, etcd and publishers in network namespaces it creates and sends real packets"]
fn losing_every_etcd_member_is_fail_static_and_the_agents_resume() {
    let mut w = World::build("etcdgone", false, 1);
    standard(&mut w);
    let ns: Vec<String> = (0..2)
        .map(|a| w.cluster.agent(w.agents[a]).ns.clone())
        .collect();
    let before: Vec<Vec<String>> = ns.iter().map(|n| daemons::tables(&w.cluster, n)).collect();
    let (allowed, denied) = keep_probing(&w);
    w.etcd.kill(0);
    // A change the agents cannot hear about while etcd is gone.
    w.kill("web2");
    let started = Instant::now();
    for agent in 0..2 {
        while w.status(agent)["health"]["source_state"] != "degraded" {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "a{} never reported etcd gone\n{}",
                agent + 1,
                w.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    for (agent, n) in ns.iter().enumerate() {
        let now = daemons::tables(&w.cluster, n);
        assert!(
            now == before[agent],
            "a{} changed its tables without etcd:\n{}",
            agent + 1,
            daemons::diff(&before[agent], &now)
        );
    }
    let reason = w.status(0)["health"]["degraded_reason"].clone();
    eprintln!("[e2e_etcd] etcd gone: both agents degraded ({reason}), tables unchanged");
    w.etcd.restart(0);
    w.etcd.wait_healthy(Duration::from_secs(20));
    let took = w.wait_converged(Duration::from_secs(40));
    eprintln!("[e2e_etcd] etcd back: the change made meanwhile reached both agents in {took:?}");
    for agent in 0..2 {
        let h = &w.status(agent)["health"];
        assert_eq!(h["source_state"], "in-sync", "{h}");
        assert_eq!(h["source_full_reads"], 1, "resumed, not re-read: {h}");
    }
    assert_no_window("every etcd member down", allowed, denied);
    w.assert_matrix("after etcd came back");
}
