//! A group of 5,000 members with local members, and `ungrouped =
//! "group:everyone"`, on two agents with real packets (issue: kernel state
//! bounded by the cluster, not by local members x group size).
//!
//! Most members of `big` are in the document only (no interface anywhere):
//! they make the group large, as in a real cluster, while the tasks that
//! exist send the probes. Every ordered pair of real tasks is checked with
//! ICMP, TCP and UDP over IPv4 and IPv6 against R1–R3, and the elements of
//! groupd's tables, read back with `nft`, must stay within one per address
//! of the cluster plus a few per local endpoint — with address pairs they
//! would be local members x 5,000 per direction.

mod common;
#[path = "common/matrix.rs"]
mod matrix;
#[path = "netns/mod.rs"]
mod netns;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use netns::{AgentId, Cluster, ManagedChild, TaskId};

const GROUPD: &str = env!("CARGO_BIN_EXE_groupd");
const GROUPCTL: &str = env!("CARGO_BIN_EXE_groupctl");
/// Members of `big` that exist only in the document.
const PHANTOMS: u32 = 5_000;
/// Ungrouped tasks in the document only: `everyone` is wide as well.
const UNGROUPED_PHANTOMS: u32 = 30;

/// (name, agent, bridged, groups)
const REAL: &[(&str, usize, bool, &[&str])] = &[
    ("big1", 0, false, &["big"]),
    ("big2", 0, true, &["big"]),
    ("bigsmall", 0, false, &["big", "small"]),
    ("small1", 0, false, &["small"]),
    ("lone1", 0, false, &[]),
    ("big3", 1, false, &["big"]),
    ("small2", 1, false, &["small"]),
    ("lone2", 1, true, &[]),
    ("other", 1, false, &["other"]),
];

struct World {
    cluster: Cluster,
    agents: Vec<AgentId>,
    tasks: Vec<TaskId>,
    dir: PathBuf,
    daemons: Vec<ManagedChild>,
}

impl World {
    fn build() -> World {
        let mut cluster = Cluster::new("biggroup");
        let agents = vec![cluster.add_agent("b1"), cluster.add_agent("b2")];
        cluster.link_agents(agents[0], agents[1]);
        let tasks = REAL
            .iter()
            .map(|(name, agent, bridged, _)| {
                if *bridged {
                    cluster.add_bridged_task(agents[*agent], name)
                } else {
                    cluster.add_routed_task(agents[*agent], name)
                }
            })
            .collect();
        cluster.wait_ready();
        let dir = std::env::temp_dir().join(format!("{}-files", cluster.prefix()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        World {
            cluster,
            agents,
            tasks,
            dir,
            daemons: Vec::new(),
        }
    }

    fn app(id: &str, groups: &[&str], ips: &[String]) -> serde_json::Value {
        let addresses: Vec<serde_json::Value> = ips
            .iter()
            .map(|ip| {
                let protocol = if ip.contains(':') { "IPv6" } else { "IPv4" };
                serde_json::json!({ "ipAddress": ip, "protocol": protocol })
            })
            .collect();
        serde_json::json!({
            "id": format!("/{id}"),
            "version": "2026-12-02T00:00:00.000Z",
            "ipAddress": { "groups": groups },
            "tasks": [{
                "id": format!("{id}.task-1"),
                "appId": format!("/{id}"),
                "version": "2026-12-02T00:00:00.000Z",
                "state": "TASK_RUNNING",
                "ipAddresses": addresses,
            }],
        })
    }

    fn write_document(&self) -> PathBuf {
        let mut apps = Vec::new();
        for (i, (name, _, _, groups)) in REAL.iter().enumerate() {
            let t = self.cluster.task(self.tasks[i]);
            let ips = [t.ipv4.to_string(), t.ipv6.to_string()];
            apps.push(Self::app(name, groups, &ips));
        }
        for i in 0..PHANTOMS {
            let ip = format!("10.233.{}.{}", 100 + i / 200, 1 + i % 200);
            apps.push(Self::app(&format!("phantom{i}"), &["big"], &[ip]));
        }
        for i in 0..UNGROUPED_PHANTOMS {
            let ip = format!("10.233.99.{}", 1 + i);
            apps.push(Self::app(&format!("stray{i}"), &[], &[ip]));
        }
        let path = self.dir.join("apps.json");
        let doc = serde_json::json!({ "apps": apps });
        std::fs::write(&path, serde_json::to_vec(&doc).expect("json")).expect("write doc");
        path
    }

    fn socket(&self, agent: usize) -> PathBuf {
        self.dir.join(format!("b{agent}.sock"))
    }

    fn log(&self, agent: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("b{agent}.log"))).unwrap_or_default()
    }

    fn start(&mut self, doc: &std::path::Path) {
        for agent in 0..2 {
            let config = self.dir.join(format!("b{agent}.toml"));
            let text = format!(
                "[source]\nkind = \"file\"\npath = {doc:?}\n[interfaces]\nmatch = [\"veth*\"]\n[groups]\nungrouped = \"group:everyone\"\n[daemon]\nsocket = {:?}\nstate_dir = {:?}\n",
                self.socket(agent),
                self.dir.join(format!("state-b{agent}")),
            );
            std::fs::write(&config, text).expect("config");
            let ns = self.cluster.agent(self.agents[agent]).ns.clone();
            let mut cmd = Command::new(GROUPD);
            cmd.args(["--config", config.to_str().expect("utf8"), "run"]);
            let log = std::fs::File::create(self.dir.join(format!("b{agent}.log"))).expect("log");
            cmd.stderr(log);
            self.daemons.push(self.cluster.spawn_in(&ns, &mut cmd));
        }
    }

    /// Until both agents enforce every local task of the document.
    fn wait_enforced(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for agent in 0..2 {
            let want = REAL.iter().filter(|r| r.1 == agent).count();
            loop {
                let enforced = Command::new(GROUPCTL)
                    .arg("--socket")
                    .arg(self.socket(agent))
                    .args(["--json", "show"])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                    .and_then(|v| {
                        v.as_array()
                            .map(|a| a.iter().filter(|r| r["enforcement"] == "enforced").count())
                    })
                    .unwrap_or(0);
                if enforced == want {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "agent {agent}: {enforced} of {want} local tasks enforced; log:\n{}",
                    self.log(agent)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Elements of each of groupd's inet sets and maps on `agent`, as nft
    /// reads them back (set by set: nft 1.0.x cannot list the chains while
    /// they hold identity lookups).
    fn kernel_elements(&self, agent: usize) -> Vec<(String, usize)> {
        let ns = self.cluster.agent(self.agents[agent]).ns.clone();
        let policy = groupd::compile::Policy::from_config(
            &groupd::config::Config::parse("[source]\nkind = \"file\"\npath = \"/x\"\n")
                .expect("config"),
        );
        let (inet, _) = groupd::compile::skeleton_for(&policy, true);
        inet.sets
            .iter()
            .map(|(name, (def, _))| {
                let kind = if def.is_map() { "map" } else { "set" };
                let out = self
                    .cluster
                    .exec(&ns, &["nft", "-j", "list", kind, "inet", "groupd", name]);
                let v: serde_json::Value =
                    serde_json::from_slice(&out.stdout).expect("nft -j json");
                let count = v["nftables"]
                    .as_array()
                    .and_then(|items| items.iter().find_map(|i| i[kind]["elem"].as_array()))
                    .map_or(0, Vec::len);
                (name.clone(), count)
            })
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for d in self.daemons.drain(..) {
            let _ = d.kill9();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
#[ignore = "needs root: builds network namespaces, runs groupd in them and probes with real packets"]
fn a_group_of_five_thousand_is_enforced_with_bounded_kernel_state() {
    common::require_nft();
    let mut w = World::build();
    let doc = w.write_document();
    w.start(&doc);
    w.wait_enforced();

    // R1–R3 with real packets; ungrouped tasks are in `everyone` (R3).
    let groups: Vec<BTreeSet<String>> = REAL
        .iter()
        .map(|r| {
            if r.3.is_empty() {
                ["everyone".to_string()].into()
            } else {
                r.3.iter().map(|g| g.to_string()).collect()
            }
        })
        .collect();
    let nodes: Vec<(&str, TaskId)> = REAL.iter().zip(&w.tasks).map(|(r, t)| (r.0, *t)).collect();
    let bad = matrix::mismatches(&w.cluster, &nodes, |s, d, _| {
        matrix::allowed_by_groups(&groups[s], &groups[d], &[])
    });
    assert!(
        bad.is_empty(),
        "{} wrong verdicts:\n{}\nlog b1:\n{}",
        bad.len(),
        bad.join("\n"),
        w.log(0)
    );

    // Bounded kernel state: one element per address of the cluster in each
    // of endpoints4 and ident4, plus a few per local endpoint.
    let addresses = (PHANTOMS + UNGROUPED_PHANTOMS) as usize + 2 * REAL.len();
    for agent in 0..2 {
        let sets = w.kernel_elements(agent);
        let total: usize = sets.iter().map(|(_, n)| n).sum();
        println!("agent {agent}: {total} elements for {addresses} addresses: {sets:?}");
        let of = |name: &str| sets.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c);
        assert!(of("ident4") >= PHANTOMS as usize, "{sets:?}");
        assert!(of("wide_egress4") > 0, "{sets:?}");
        assert!(
            total <= 2 * addresses + 100,
            "agent {agent}: {total} elements for {addresses} addresses: {sets:?}"
        );
    }
}
