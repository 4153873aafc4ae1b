//! The whole daemon on a simulated cluster, checked with real packets.
//!
//! Two agent namespaces joined by a routed link, each running its own
//! `groupd` from the `file` source (a Marathon `/v2/apps?embed=apps.tasks`
//! document), with routed and bridged tasks. For every ordered pair of tasks
//! the verdict R1–R8 predict is checked with ICMP, TCP and UDP over IPv4 and
//! IPv6; then the file is rewritten, a source address is spoofed, an
//! unknown task interface is probed, groupd is killed with -9 and restarted
//! while probes run, and `nft` reads the kernel back as the oracle.

mod common;
#[path = "common/matrix.rs"]
mod matrix;
#[path = "netns/mod.rs"]
mod netns;

use common::{
    blocks, first_difference, nft_json_objects, normalise, sort_set_elements, zero_counters,
};

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use netns::probe::{ContinuousProbe, Probe, Proto};
use netns::{AgentId, Cluster, ManagedChild, TaskId};

const GROUPD: &str = env!("CARGO_BIN_EXE_groupd");
const GROUPCTL: &str = env!("CARGO_BIN_EXE_groupctl");

/// One simulated task: where it runs and what the master says about it.
struct Spec {
    name: &'static str,
    bridged: bool,
    agent: usize,
    groups: &'static [&'static str],
}

/// 10 tasks over two agents, routed and bridged, with 0–3 groups, one in the
/// open group `public` and one ungrouped.
const SPECS: &[Spec] = &[
    Spec {
        name: "web1",
        bridged: false,
        agent: 0,
        groups: &["web"],
    },
    Spec {
        name: "web2",
        bridged: true,
        agent: 1,
        groups: &["web", "db"],
    },
    Spec {
        name: "db1",
        bridged: false,
        agent: 1,
        groups: &["db"],
    },
    Spec {
        name: "db2",
        bridged: true,
        agent: 0,
        groups: &["db", "cache", "ops"],
    },
    Spec {
        name: "cache1",
        bridged: false,
        agent: 0,
        groups: &["cache"],
    },
    Spec {
        name: "lb",
        bridged: true,
        agent: 0,
        groups: &["public"],
    },
    Spec {
        name: "lonely",
        bridged: false,
        agent: 1,
        groups: &[],
    },
    Spec {
        name: "ops1",
        bridged: true,
        agent: 1,
        groups: &["ops"],
    },
    Spec {
        name: "odd",
        bridged: false,
        agent: 1,
        groups: &["a\"b;c}", ""],
    },
    Spec {
        name: "odd2",
        bridged: true,
        agent: 0,
        groups: &["a\"b;c}"],
    },
];

struct World {
    cluster: Cluster,
    agents: Vec<AgentId>,
    tasks: Vec<TaskId>,
    /// Current groups per task index (what the file says now).
    groups: Vec<BTreeSet<String>>,
    /// Task indices present in the file.
    present: BTreeSet<usize>,
    /// App version per task index.
    version: Vec<u32>,
    /// Marathon app id (without the leading /) per task index.
    app: Vec<String>,
    /// Discovery ports (number, "tcp"/"udp") per task index.
    ports: BTreeMap<usize, Vec<(u16, &'static str)>>,
    /// `policy.enforce_discovery_ports` (R9).
    enforce_ports: bool,
    dir: PathBuf,
    daemons: Vec<Option<ManagedChild>>,
}

impl World {
    fn build(name: &str) -> World {
        let mut cluster = Cluster::new(name);
        let agents = vec![cluster.add_agent("a1"), cluster.add_agent("a2")];
        cluster.link_agents(agents[0], agents[1]);
        let tasks: Vec<TaskId> = SPECS
            .iter()
            .map(|s| {
                if s.bridged {
                    cluster.add_bridged_task(agents[s.agent], s.name)
                } else {
                    cluster.add_routed_task(agents[s.agent], s.name)
                }
            })
            .collect();
        cluster.wait_ready();
        let dir = std::env::temp_dir().join(format!("{}-files", cluster.prefix()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        World {
            groups: SPECS
                .iter()
                .map(|s| s.groups.iter().map(|g| g.to_string()).collect())
                .collect(),
            present: (0..SPECS.len()).collect(),
            version: vec![1; SPECS.len()],
            app: SPECS.iter().map(|s| s.name.to_string()).collect(),
            ports: BTreeMap::new(),
            enforce_ports: false,
            cluster,
            agents,
            tasks,
            dir,
            daemons: vec![None, None],
        }
    }

    fn task_id(&self, i: usize) -> String {
        format!("{}.task-{}", self.app[i], self.version[i])
    }

    fn doc_path(&self) -> PathBuf {
        self.dir.join("apps.json")
    }

    fn socket(&self, agent: usize) -> PathBuf {
        self.dir.join(format!("a{agent}.sock"))
    }

    /// The Marathon `/v2/apps?embed=apps.tasks` document for the current state.
    fn document(&self) -> serde_json::Value {
        let apps: Vec<serde_json::Value> = self
            .present
            .iter()
            .map(|&i| {
                let t = self.cluster.task(self.tasks[i]);
                let version = format!("2026-11-25T00:00:{:02}.000Z", self.version[i]);
                serde_json::json!({
                    "id": format!("/{}", self.app[i]),
                    "version": version,
                    "ipAddress": {
                        "groups": self.groups[i].iter().collect::<Vec<_>>(),
                        "discovery": { "ports": self.ports.get(&i).map(|ps| ps.iter().map(|(n, p)| serde_json::json!({"number": n, "name": format!("p{n}"), "protocol": p})).collect::<Vec<_>>()).unwrap_or_default() },
                    },
                    "tasks": [{
                        "id": self.task_id(i),
                        "appId": format!("/{}", self.app[i]),
                        "version": version,
                        "state": "TASK_RUNNING",
                        "ipAddresses": [
                            { "ipAddress": t.ipv4.to_string(), "protocol": "IPv4" },
                            { "ipAddress": t.ipv6.to_string(), "protocol": "IPv6" },
                        ],
                    }],
                })
            })
            .collect();
        serde_json::json!({ "apps": apps })
    }

    /// Replace the file atomically (write + rename), as an operator would.
    fn write_document(&self) {
        let tmp = self.dir.join("apps.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&self.document()).expect("json"),
        )
        .expect("write doc");
        std::fs::rename(&tmp, self.doc_path()).expect("rename doc");
    }

    fn config(&self, agent: usize) -> PathBuf {
        let path = self.dir.join(format!("a{agent}.toml"));
        let text = format!(
            "[source]\nkind = \"file\"\npath = {:?}\n[interfaces]\nmatch = [\"veth*\"]\n[daemon]\nsocket = {:?}\nstate_dir = {:?}\nverify_interval = 1.0\n[policy]\nenforce_discovery_ports = {}\n[metrics]\nlisten = \"127.0.0.1:9490\"\n",
            self.doc_path(),
            self.socket(agent),
            self.dir.join(format!("state-a{agent}")),
            self.enforce_ports,
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    fn start(&mut self, agent: usize) {
        let config = self.config(agent);
        let ns = self.cluster.agent(self.agents[agent]).ns.clone();
        let mut cmd = Command::new(GROUPD);
        cmd.args(["--config", config.to_str().expect("utf8 path"), "run"]);
        cmd.env("GROUPD_LOG", "info");
        let log = std::fs::File::create(self.dir.join(format!("a{agent}.log"))).expect("log file");
        cmd.stderr(log);
        self.daemons[agent] = Some(self.cluster.spawn_in(&ns, &mut cmd));
    }

    /// `groupctl --json ARGS`; `status` may exit 1 (degraded, not in sync).
    fn groupctl(&self, agent: usize, args: &[&str]) -> serde_json::Value {
        let out = Command::new(GROUPCTL)
            .arg("--socket")
            .arg(self.socket(agent))
            .arg("--json")
            .args(args)
            .output()
            .expect("run groupctl");
        let ok = match out.status.code() {
            Some(0) => true,
            Some(1) => args.first() == Some(&"status"),
            _ => false,
        };
        assert!(
            ok,
            "groupctl {args:?} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("groupctl json")
    }

    /// `groupctl status` (for people) against `socket`: exit code and stderr.
    fn status_exit(socket: &std::path::Path) -> (Option<i32>, String) {
        let out = Command::new(GROUPCTL)
            .arg("--socket")
            .arg(socket)
            .arg("status")
            .output()
            .expect("run groupctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Wait until every agent's groupd enforces exactly `present` as in the file.
    fn wait_converged(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let want: BTreeSet<String> = self.present.iter().map(|&i| self.task_id(i)).collect();
        for agent in 0..2 {
            loop {
                let ok = Command::new(GROUPCTL)
                    .arg("--socket")
                    .arg(self.socket(agent))
                    .args(["--json", "show", "--all"])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                    .map(|v| {
                        let got: BTreeSet<String> = v
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|r| r["task"].as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let local_enforced = v
                            .as_array()
                            .map(|a| a.iter().filter(|r| r["enforcement"] == "enforced").count())
                            .unwrap_or(0);
                        let local_want = self
                            .present
                            .iter()
                            .filter(|&&i| SPECS[i].agent == agent)
                            .count();
                        got == want && local_enforced == local_want
                    })
                    .unwrap_or(false);
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "agent {agent} did not converge; log:\n{}",
                    self.log(agent)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // The verdict is in the kernel once groupctl shows it: the apply is
        // synchronous in the daemon loop before it answers again.
    }

    /// GET `path` from the agent's metrics listener (inside its namespace).
    fn http(&self, agent: usize, path: &str) -> String {
        let ns = self.cluster.agent(self.agents[agent]).ns.clone();
        let script = format!("exec 3<>/dev/tcp/127.0.0.1/9490; printf 'GET {path} HTTP/1.1\\r\\nHost: groupd\\r\\nConnection: close\\r\\n\\r\\n' >&3; cat <&3");
        let out = self.cluster.exec(&ns, &["bash", "-c", &script]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self, agent: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("a{agent}.log"))).unwrap_or_default()
    }

    /// R1–R3 for two known endpoints: share a group, or dst is in `public`.
    fn expected(&self, src: usize, dst: usize) -> bool {
        if !self.present.contains(&src) || !self.present.contains(&dst) {
            return false;
        }
        matrix::allowed_by_groups(&self.groups[src], &self.groups[dst], &["public"])
    }

    /// R9: with enforcement on, a task that declares ports accepts peers only
    /// there (the probes use TCP 7001 and UDP 7002) and ICMP.
    fn port_open(&self, dst: usize, proto: Proto) -> bool {
        let Some(ports) = self
            .ports
            .get(&dst)
            .filter(|p| self.enforce_ports && !p.is_empty())
        else {
            return true;
        };
        match proto {
            Proto::Icmp => true,
            Proto::Tcp => ports.contains(&(netns::TCP_PORT, "tcp")),
            Proto::Udp => ports.contains(&(netns::UDP_PORT, "udp")),
        }
    }

    /// Probe every ordered pair with ICMP, TCP, UDP over IPv4 and IPv6 and
    /// return the mismatches against `expected`.
    fn matrix_mismatches(&self, among: &[usize]) -> Vec<String> {
        let nodes: Vec<(&str, TaskId)> = among
            .iter()
            .map(|&i| (SPECS[i].name, self.tasks[i]))
            .collect();
        matrix::mismatches(&self.cluster, &nodes, |s, d, proto| {
            self.expected(among[s], among[d]) && self.port_open(among[d], proto)
        })
    }

    fn assert_matrix(&self, among: &[usize], when: &str) {
        let bad = self.matrix_mismatches(among);
        assert!(
            bad.is_empty(),
            "{when}: {} wrong verdicts:\n{}\nlog a1:\n{}\nlog a2:\n{}",
            bad.len(),
            bad.join("\n"),
            self.log(0),
            self.log(1)
        );
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

fn all() -> Vec<usize> {
    (0..SPECS.len()).collect()
}

fn idx(name: &str) -> usize {
    SPECS
        .iter()
        .position(|s| s.name == name)
        .expect("known task")
}

fn assert_kernel_matches_intent(w: &World, agent: usize) {
    // `groupctl ruleset` prints the inet table, then the bridge table, each
    // as `nft list table` does (`--json` is the `nft -j` schema).
    let out = Command::new(GROUPCTL)
        .arg("--socket")
        .arg(w.socket(agent))
        .arg("ruleset")
        .output()
        .expect("run groupctl ruleset");
    assert!(out.status.success(), "groupctl ruleset failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let ns = w.cluster.agent(w.agents[agent]).ns.clone();
    // Byte for byte what nft lists, but for the kernel's element order and
    // counter values.
    let listed: String = ["inet", "bridge"]
        .iter()
        .map(|family| {
            let out = w
                .cluster
                .exec(&ns, &["nft", "list", "table", family, "groupd"]);
            zero_counters(&String::from_utf8_lossy(&out.stdout))
        })
        .collect();
    if let Some(d) = first_difference(&sort_set_elements(&listed), &sort_set_elements(&text)) {
        panic!("agent {agent}: groupctl ruleset is not what nft lists: {d}");
    }
    // `--json` is `nft -j list table` (without handles and counter values).
    let json = w.groupctl(agent, &["ruleset"]);
    for family in ["inet", "bridge"] {
        let out = w
            .cluster
            .exec(&ns, &["nft", "-j", "list", "table", family, "groupd"]);
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft -j output");
        let (theirs, mine) = (
            nft_json_objects(&listed, family),
            nft_json_objects(&json, family),
        );
        assert!(
            !mine.is_empty(),
            "groupctl --json ruleset has the {family} table"
        );
        assert!(
            theirs == mine,
            "agent {agent} {family}: groupctl ruleset --json differs from nft -j"
        );
    }
    let split = text.find("table bridge ").unwrap_or(text.len());
    let (inet, bridge) = text.split_at(split);
    for family in ["inet", "bridge"] {
        let out = w
            .cluster
            .exec(&ns, &["nft", "list", "table", family, "groupd"]);
        assert!(
            out.status.success(),
            "nft list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = blocks(normalise(&String::from_utf8_lossy(&out.stdout)));
        let want = blocks(normalise(if family == "inet" { inet } else { bridge }));
        let only_kernel: Vec<_> = got
            .iter()
            .filter(|(k, v)| want.get(*k) != Some(v))
            .collect();
        let only_intent: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .collect();
        assert!(
            got == want,
            "agent {agent} {family}: kernel differs from groupd's intent\nonly in kernel: {only_kernel:#?}\nonly in intent: {only_intent:#?}"
        );
    }
}

fn require_tools() {
    for (tool, pkg) in [("nft", "nftables"), ("ip", "iproute2")] {
        let ok = Command::new(tool).arg("-V").output().is_ok()
            || Command::new(tool).arg("--version").output().is_ok();
        assert!(
            ok,
            "{tool} missing: run `make deps` (apt-get install {pkg})"
        );
    }
}

#[test]
#[ignore = "needs root: runs groupd in network namespaces it creates and sends real packets"]
fn group_policy_end_to_end_with_real_packets() {
    require_tools();
    let mut w = World::build("e2e");
    // A group name as long as allowed (groups.max_name_len = 256 bytes)
    // with quotes, semicolons and braces, shared by a bridged task on each
    // agent: hashed into the kernel, never syntax.
    let huge = format!("x;\"}}{{{}Z", "0123456789".repeat(25));
    assert_eq!(huge.len(), 256);
    w.groups[idx("odd2")].insert(huge.clone());
    w.groups[idx("ops1")].insert(huge);
    w.write_document();
    w.start(0);
    w.start(1);
    w.wait_converged();

    // 1. Every ordered pair, every protocol, both families.
    let t0 = Instant::now();
    w.assert_matrix(&all(), "initial policy");
    eprintln!(
        "matrix of {} tasks checked in {:?}",
        SPECS.len(),
        t0.elapsed()
    );

    // 2. The kernel, read by nft, holds what groupd intended.
    assert_kernel_matches_intent(&w, 0);
    assert_kernel_matches_intent(&w, 1);

    // 2a. groupctl: groups with their members, and the human tables.
    let groups = w.groupctl(0, &["show", "groups"]);
    let web = groups
        .as_array()
        .and_then(|g| g.iter().find(|r| r["group"] == "web"))
        .expect("group web listed");
    assert_eq!(
        web["members"].as_array().map(|m| m.len()),
        Some(2),
        "web1 and web2: {web}"
    );
    assert_eq!(
        web["local_members"],
        serde_json::json!(["web1.task-1"]),
        "only web1 is on a1: {web}"
    );
    let public = groups
        .as_array()
        .and_then(|g| g.iter().find(|r| r["group"] == "public"))
        .expect("public");
    assert_eq!(public["open"], true);
    // The denied probes of the matrix were counted, by reason.
    let st = w.groupctl(0, &["status"]);
    let drops = &st["dropped_packets_bytes"];
    let denied: u64 = ["r1_r4_egress_denied", "r1_r5_ingress_denied"]
        .iter()
        .filter_map(|reason| drops[*reason][0].as_u64())
        .sum();
    assert!(denied > 0, "no drop counted: {st}");
    for args in [
        &["show"][..],
        &["show", "groups"],
        &["show", "--all"],
        &["status"],
        &["ruleset"],
    ] {
        let out = Command::new(GROUPCTL)
            .arg("--socket")
            .arg(w.socket(0))
            .args(args)
            .output()
            .expect("groupctl");
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "groupctl {args:?}"
        );
    }
    let table = Command::new(GROUPCTL)
        .arg("--socket")
        .arg(w.socket(0))
        .arg("show")
        .output()
        .expect("groupctl");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.starts_with("TASK")
            && table.contains("web1.task-1")
            && !table.contains("web2.task-1"),
        "{table}"
    );

    // 2c. explain: the verdict, the deciding rule and the reason, in groups.
    let e = w.groupctl(
        0,
        &["explain", "web1.task-1", "web2.task-1", "--port", "7001"],
    );
    assert_eq!(e["verdict"], "accept", "{e}");
    assert!(
        e["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("R1") && r.contains("\"web\"")),
        "{e}"
    );
    let e = w.groupctl(0, &["explain", "web1.task-1", "db1.task-1"]);
    assert_eq!(e["verdict"], "drop", "{e}");
    assert_eq!(e["deciding_rule"]["chain"], "egress", "{e}");
    assert!(
        e["reason"].as_str().is_some_and(|r| r.starts_with("R1")),
        "{e}"
    );
    let e = w.groupctl(0, &["explain", "host", "web1.task-1"]);
    assert_eq!(e["verdict"], "accept", "{e}");
    let human = Command::new(GROUPCTL)
        .arg("--socket")
        .arg(w.socket(0))
        .args(["explain", "cache1.task-1", "lb.task-1", "--proto", "udp"])
        .output()
        .expect("groupctl");
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.starts_with("ACCEPT\nR2"), "{human}");

    // 2b. Health follows programming; metrics count what is enforced.
    for agent in 0..2 {
        let health = w.http(agent, "/healthz");
        assert!(
            health.starts_with("HTTP/1.1 200"),
            "agent {agent} healthz: {health}"
        );
        let metrics = w.http(agent, "/metrics");
        let local = SPECS.iter().filter(|s| s.agent == agent).count();
        assert!(
            metrics.contains(&format!("groupd_local_endpoints {local}\n")),
            "agent {agent} metrics: {metrics}"
        );
        assert!(
            metrics.contains("groupd_source_up 1\n"),
            "agent {agent} metrics: {metrics}"
        );
        let ready = w.http(agent, "/readyz");
        assert!(ready.starts_with("HTTP/1.1 200"), "agent {agent}: {ready}");
        // The kernel's counters of the denied probes, by stable reason id.
        let denied: u64 = metrics
            .lines()
            .filter(|l| {
                l.starts_with("groupd_dropped_packets_total{reason=\"r1_r4_egress_denied\"}")
                    || l.starts_with(
                        "groupd_dropped_packets_total{reason=\"r1_r5_ingress_denied\"}",
                    )
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        if agent == 0 {
            assert!(denied > 0, "agent {agent} metrics: {metrics}");
        }
        for id in groupd::status::DROP_REASONS.iter().map(|r| r.id) {
            assert!(
                metrics.contains(&format!("groupd_dropped_bytes_total{{reason=\"{id}\"}}")),
                "{id} missing in agent {agent} metrics: {metrics}"
            );
        }
    }

    // 3. The host may reach its own endpoints (R5), a remote host may not.
    let (a1, a2) = (w.agents[0], w.agents[1]);
    let web1 = w.cluster.task(w.tasks[idx("web1")]).ipv4.into();
    let r = w.cluster.probe_many(vec![
        Probe::new(a1, web1, Proto::Tcp),
        Probe::new(a2, web1, Proto::Tcp),
    ]);
    assert_eq!(
        r,
        vec![true, false],
        "host -> own endpoint allowed, other host -> endpoint denied"
    );

    // 4. Spoofing: web1 pretends to be db1 (which may talk to db2).
    let db2: IpAddr = w.cluster.task(w.tasks[idx("db2")]).ipv4.into();
    let db1: IpAddr = w.cluster.task(w.tasks[idx("db1")]).ipv4.into();
    let spoofed_from_routed = w.cluster.spoofed_udp(w.tasks[idx("web1")], db1, db2);
    assert!(
        !spoofed_from_routed,
        "a spoofed source address from a routed task must be dropped"
    );
    let web2_ip: IpAddr = w.cluster.task(w.tasks[idx("web2")]).ipv4.into();
    let spoofed_from_bridged = w.cluster.spoofed_udp(w.tasks[idx("odd2")], web2_ip, db2);
    assert!(
        !spoofed_from_bridged,
        "a spoofed source address from a bridged task must be dropped"
    );

    // 5. Rewrites take effect: web1 moves to db through a new app version...
    let web1_i = idx("web1");
    w.groups[web1_i] = BTreeSet::from(["db".to_string()]);
    w.version[web1_i] += 1;
    // ... cache1 disappears ...
    w.present.remove(&idx("cache1"));
    w.write_document();
    w.wait_converged();
    w.assert_matrix(&all(), "after re-grouping web1 and removing cache1");

    // ... and, in ONE rewrite, cache1 is replaced by a task of another app
    // in another group (ops) that got the same IP on the same interface: the
    // old membership goes in the transaction that adds the new one.
    w.present.insert(idx("cache1"));
    w.write_document();
    w.wait_converged();
    let cache1 = idx("cache1");
    w.app[cache1] = "metrics-agent".into();
    w.groups[cache1] = BTreeSet::from(["ops".to_string()]);
    w.write_document();
    w.wait_converged();
    w.assert_matrix(
        &all(),
        "after cache1's IP moved to a task of another app in group ops",
    );

    // 6. A task interface with no known task drops everything (R8).
    let ghost = idx("ops1");
    w.present.remove(&ghost);
    w.write_document();
    w.wait_converged();
    w.assert_matrix(&all(), "with ops1 unknown to the master");
    w.present.insert(ghost);
    w.write_document();
    w.wait_converged();

    // 7. kill -9 and restart: no moment of open traffic, re-convergence.
    let denied = (idx("lonely"), idx("web2"));
    let allowed = (idx("db1"), idx("web2"));
    assert!(!w.expected(denied.0, denied.1) && w.expected(allowed.0, allowed.1));
    let to_denied = w.cluster.task(w.tasks[denied.1]).ipv4.into();
    let to_allowed = w.cluster.task(w.tasks[allowed.1]).ipv4.into();
    // Short timeouts so the denied flow is sampled often across the restart.
    w.cluster.set_probe_timeout(Duration::from_millis(60));
    let deny_probe =
        ContinuousProbe::start(&w.cluster, w.tasks[denied.0], to_denied, Proto::Udp, 20);
    let allow_probe =
        ContinuousProbe::start(&w.cluster, w.tasks[allowed.0], to_allowed, Proto::Tcp, 20);
    std::thread::sleep(Duration::from_millis(300));
    let killed_at = Instant::now();
    for agent in 0..2 {
        if let Some(d) = w.daemons[agent].take() {
            d.kill9().expect("kill -9 groupd");
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    w.start(0);
    w.start(1);
    w.wait_converged();
    let restarted_at = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let denied_samples = deny_probe.stop();
    let allowed_samples = allow_probe.stop();
    w.cluster.set_probe_timeout(netns::DEFAULT_TIMEOUT);
    let during = denied_samples
        .iter()
        .filter(|(t, _)| *t >= killed_at && *t <= restarted_at)
        .count();
    assert!(
        during >= 5,
        "the denied flow was probed while groupd was down and restarting ({during} samples)"
    );
    assert!(
        denied_samples.iter().all(|(_, ok)| !ok),
        "a denied flow got through during the restart"
    );
    assert!(
        allowed_samples.iter().filter(|(_, ok)| *ok).count() * 10 >= allowed_samples.len() * 9,
        "the allowed flow kept working across the restart"
    );
    w.assert_matrix(&all(), "after kill -9 and restart");
    assert_kernel_matches_intent(&w, 0);
    assert_kernel_matches_intent(&w, 1);

    // 7b. Reboot without a master: the tables are gone and the source is
    // unreadable; groupd re-applies the view it persisted in state_dir.
    for agent in 0..2 {
        if let Some(d) = w.daemons[agent].take() {
            d.kill9().expect("kill -9 groupd");
        }
        let ns = w.cluster.agent(w.agents[agent]).ns.clone();
        for family in ["inet", "bridge"] {
            let out = w
                .cluster
                .exec(&ns, &["nft", "delete", "table", family, "groupd"]);
            assert!(
                out.status.success(),
                "simulate reboot: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    std::fs::write(w.doc_path(), b"{\"apps\": [").expect("half-written document");
    w.start(0);
    w.start(1);
    for agent in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = Command::new(GROUPCTL)
                .arg("--socket")
                .arg(w.socket(agent))
                .args(["--json", "status"])
                .output();
            let degraded = st
                .ok()
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                .is_some_and(|v| v["health"]["source_state"] == "degraded");
            if degraded {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "agent {agent} did not start degraded; log:\n{}",
                w.log(agent)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    w.assert_matrix(
        &all(),
        "after a reboot with the master unreachable (persisted view)",
    );
    // Ready from the persisted view, though the source is degraded.
    for agent in 0..2 {
        let ready = w.http(agent, "/readyz");
        assert!(ready.starts_with("HTTP/1.1 200"), "agent {agent}: {ready}");
    }
    w.write_document();
    w.wait_converged();

    // 8. Drift: somebody deletes an element; groupd repairs it, or, where
    // the kernel lets groupd own its table (tests/table_guard.rs covers
    // both modes), the kernel refuses the edit.
    let owned = w.groupctl(0, &["status"])["health"]["table_guard"] == "owner";
    let ns = w.cluster.agent(w.agents[0]).ns.clone();
    let web1_v4 = w.cluster.task(w.tasks[web1_i]).ipv4.to_string();
    let out = w.cluster.exec(
        &ns,
        &[
            "nft",
            "delete",
            "element",
            "inet",
            "groupd",
            "endpoints4",
            &format!("{{ {web1_v4} }}"),
        ],
    );
    if owned {
        assert!(
            !out.status.success(),
            "the kernel let another process edit groupd's owned table"
        );
        assert_kernel_matches_intent(&w, 0);
        return;
    }
    assert!(
        out.status.success(),
        "nft delete element: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = w.groupctl(0, &["status"]);
        if st["health"]["drift_repairs"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "drift was not repaired: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_kernel_matches_intent(&w, 0);
}

/// Bad input never loses the last good state.
#[test]
#[ignore = "needs root: runs groupd in network namespaces it creates and sends real packets"]
fn malformed_rewrites_keep_the_last_good_rules() {
    require_tools();
    let mut w = World::build("badinput");
    w.write_document();
    w.start(0);
    w.start(1);
    w.wait_converged();
    let some = vec![
        idx("web1"),
        idx("web2"),
        idx("db2"),
        idx("lb"),
        idx("lonely"),
    ];
    w.assert_matrix(&some, "initial");
    // `groupctl status` exit codes: 0 in sync, 1 degraded, 2 unreachable.
    assert_eq!(World::status_exit(&w.socket(0)), (Some(0), String::new()));
    let (code, stderr) = World::status_exit(&w.dir.join("no-such.sock"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("is groupd running?"), "{stderr}");
    let garbage: &[&[u8]] = &[
        b"",
        b"{\"apps\": [",
        b"\xff\xfe not json",
        b"{\"apps\": 42}",
        b"[]",
    ];
    for g in garbage {
        std::fs::write(w.doc_path(), g).expect("write garbage");
        std::thread::sleep(Duration::from_millis(600));
        let st = w.groupctl(0, &["status"]);
        assert_eq!(
            st["health"]["source_state"],
            "degraded",
            "garbage {:?} marks the source degraded: {st}",
            String::from_utf8_lossy(g)
        );
        assert!(st["health"]["degraded_reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()));
        let (code, stderr) = World::status_exit(&w.socket(0));
        assert_eq!(code, Some(1), "degraded: {stderr}");
        assert!(
            stderr.starts_with("groupctl: not in sync: the source is degraded ("),
            "{stderr}"
        );
    }
    w.assert_matrix(&some, "after garbage rewrites");
    // Duplicate IP across live tasks: the previous owner keeps it.
    let mut doc = w.document();
    let dup = doc["apps"][0].clone();
    let mut stolen = dup.clone();
    stolen["id"] = serde_json::json!("/thief");
    stolen["ipAddress"]["groups"] = serde_json::json!(["public"]);
    stolen["tasks"][0]["id"] = serde_json::json!("thief.1");
    stolen["tasks"][0]["appId"] = serde_json::json!("/thief");
    if let Some(apps) = doc["apps"].as_array_mut() {
        apps.push(stolen);
    }
    std::fs::write(w.doc_path(), serde_json::to_vec(&doc).expect("json")).expect("write dup");
    std::thread::sleep(Duration::from_millis(800));
    let st = w.groupctl(0, &["status"]);
    assert!(
        st["health"]["conflicts"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "the conflict is reported: {st}"
    );
    w.assert_matrix(&some, "after a duplicate IP claim");
    // A valid document again: in sync (a conflict is reported, not a fault).
    assert_eq!(World::status_exit(&w.socket(0)).0, Some(0));
}

/// `make demo`: the same simulated cluster, shown to a human: what groupctl
/// says on each agent and who can talk to whom (measured, with the reason).
#[test]
#[ignore = "needs root: runs groupd in network namespaces it creates and sends real packets"]
fn demo_shows_groupctl_and_a_measured_matrix() {
    require_tools();
    let mut w = World::build("demo");
    w.write_document();
    w.start(0);
    w.start(1);
    w.wait_converged();
    let mut report = String::new();
    let order = all();
    let nodes: Vec<(&str, TaskId)> = order.iter().map(|&i| (SPECS[i].name, w.tasks[i])).collect();
    let grid = matrix::tcp_grid(&w.cluster, &nodes);
    report.push_str("\nTCP connectivity measured with real packets (row = from, column = to; Y allowed, . blocked):\n");
    let labels: Vec<&str> = nodes.iter().map(|n| n.0).collect();
    report.push_str(&matrix::render(&labels, &grid, None));
    let mut mismatches = Vec::new();
    for (row, &s) in order.iter().enumerate() {
        for (col, &d) in order.iter().enumerate() {
            if s != d && grid[row][col] != w.expected(s, d) {
                mismatches.push(format!("{} -> {}", SPECS[s].name, SPECS[d].name));
            }
        }
    }
    report.push_str("\nWhy: ");
    for &s in &order {
        let g: Vec<&str> = SPECS[s]
            .groups
            .iter()
            .copied()
            .filter(|g| !g.is_empty())
            .collect();
        report.push_str(&format!("{}={:?} ", SPECS[s].name, g));
    }
    report.push_str("\nTasks that share a group talk; everyone reaches `public` (lb); `lonely` has no group and is reached by nobody.\n");
    // After the traffic, so the counters (new flows, drops) have something to show.
    for agent in 0..2 {
        let out = Command::new(GROUPCTL)
            .arg("--socket")
            .arg(w.socket(agent))
            .arg("show")
            .output()
            .expect("groupctl");
        report.push_str(&format!(
            "\n$ groupctl show    # on agent a{}\n{}",
            agent + 1,
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    println!("{report}");
    assert!(
        mismatches.is_empty(),
        "measured matrix differs from R1-R3: {mismatches:?}"
    );
}

/// R9: with `enforce_discovery_ports`, peers reach a task that declares
/// discovery ports only on those ports (and ICMP).
#[test]
#[ignore = "needs root: runs groupd in network namespaces it creates and sends real packets"]
fn discovery_ports_limit_what_peers_reach() {
    require_tools();
    let mut w = World::build("r9");
    w.enforce_ports = true;
    w.ports.insert(idx("lb"), vec![(netns::TCP_PORT, "tcp")]);
    w.ports
        .insert(idx("db2"), vec![(netns::UDP_PORT, "udp"), (9999, "tcp")]);
    w.write_document();
    w.start(0);
    w.start(1);
    w.wait_converged();
    let some = vec![
        idx("web2"),
        idx("db1"),
        idx("db2"),
        idx("lb"),
        idx("cache1"),
        idx("lonely"),
    ];
    w.assert_matrix(&some, "discovery ports enforced");
    let e = w.groupctl(
        0,
        &["explain", "db1.task-1", "db2.task-1", "--port", "7001"],
    );
    assert_eq!(e["verdict"], "drop", "{e}");
    assert!(
        e["reason"].as_str().is_some_and(|r| r.contains("R9")),
        "{e}"
    );
}

/// `nft list table inet groupd` in an agent's namespace, counters left out.
fn kernel_text(w: &World, agent: usize) -> Vec<String> {
    let ns = w.cluster.agent(w.agents[agent]).ns.clone();
    let out = w
        .cluster
        .exec(&ns, &["nft", "list", "table", "inet", "groupd"]);
    assert!(out.status.success(), "nft list failed");
    normalise(&String::from_utf8_lossy(&out.stdout))
}

/// Copy a flat directory (groupd's state_dir).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read state_dir").flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// Restarts while the source cannot answer never change the kernel: with
/// the state_dir lost (regression: every element was removed 0.25 s after
/// start) and with a persisted view older than the table (regression: the
/// old view was re-applied, re-opening a flow a re-group had closed).
#[test]
#[ignore = "needs root: runs groupd in network namespaces it creates and sends real packets"]
fn degraded_restarts_keep_the_kernel_table() {
    require_tools();
    let mut w = World::build("degraded");
    w.write_document();
    w.start(0);
    w.start(1);
    w.wait_converged();
    let (db2, cache1, web1, lb) = (idx("db2"), idx("cache1"), idx("web1"), idx("lb"));
    let local = vec![db2, cache1, web1, lb];
    w.assert_matrix(&local, "initial");
    let state_dir = w.dir.join("state-a0");
    let older = w.dir.join("state-a0-older");
    copy_dir(&state_dir, &older);

    // Re-group cache1 out of "cache": db2 -> cache1 is cut.
    w.groups[cache1] = ["web".to_string()].into();
    w.version[cache1] += 1;
    w.write_document();
    w.wait_converged();
    assert!(!w.expected(db2, cache1) && w.expected(web1, cache1));
    w.assert_matrix(&local, "after the re-group");

    let to_cache1: IpAddr = w.cluster.task(w.tasks[cache1]).ipv4.into();
    let restart_without_source = |w: &mut World, case: &str| {
        let before = kernel_text(w, 0);
        let allowed = ContinuousProbe::start(&w.cluster, w.tasks[web1], to_cache1, Proto::Tcp, 20);
        let denied = ContinuousProbe::start(&w.cluster, w.tasks[db2], to_cache1, Proto::Udp, 20);
        std::thread::sleep(Duration::from_millis(300));
        if let Some(d) = w.daemons[0].take() {
            d.kill9().expect("kill -9 groupd");
        }
        w.start(0);
        // Several read-backs (verify_interval = 1.0) while the source is silent.
        std::thread::sleep(Duration::from_millis(3500));
        let allowed = allowed.stop();
        let denied = denied.stop();
        let log = w.log(0);
        // A probe may time out on a loaded machine; the bug cut every one
        // after 0.25 s. The table's text below is the exact check.
        assert!(
            allowed.iter().filter(|(_, ok)| *ok).count() * 10 >= allowed.len() * 9,
            "{case}: an allowed flow broke ({} of {} probes failed); log:\n{log}",
            allowed.iter().filter(|(_, ok)| !ok).count(),
            allowed.len()
        );
        assert!(
            denied.iter().all(|(_, ok)| !ok),
            "{case}: a cut flow re-opened ({} of {} probes passed); log:\n{log}",
            denied.iter().filter(|(_, ok)| *ok).count(),
            denied.len()
        );
        assert_eq!(
            kernel_text(w, 0),
            before,
            "{case}: the table changed; log:\n{log}"
        );
        let st = w.groupctl(0, &["status"]);
        assert!(
            st["health"]["source_state"] == "degraded"
                || st["health"]["source_state"] == "starting (kernel table kept)",
            "{case}: {st}"
        );
        // A kept table is no complete view groupd applied: not ready, not in sync.
        let ready = w.http(0, "/readyz");
        assert!(
            ready.starts_with("HTTP/1.1 503") && ready.contains("\r\n\r\nnot ready: "),
            "{case}: {ready}"
        );
        let (code, stderr) = World::status_exit(&w.socket(0));
        assert_eq!(code, Some(1), "{case}: {stderr}");
    };

    // The source cannot answer from now on.
    std::fs::remove_file(w.doc_path()).expect("remove the document");

    // 1. state_dir lost.
    std::fs::remove_dir_all(&state_dir).expect("lose state_dir");
    restart_without_source(&mut w, "state_dir lost");

    // 2. A persisted view older than the kernel's table.
    copy_dir(&older, &state_dir);
    restart_without_source(&mut w, "stale persisted view");

    // The source answers again: the re-group is still what is enforced.
    w.write_document();
    w.wait_converged();
    w.assert_matrix(&local, "after the source answered");
    let ready = w.http(0, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert_eq!(World::status_exit(&w.socket(0)).0, Some(0));
}
