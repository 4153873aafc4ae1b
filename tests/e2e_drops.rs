//! Drops you can see (`[drops] log`), with real packets: groupd in a scratch
//! agent namespace with two tasks that share no group; a denied TCP and UDP
//! probe between them must show up in `groupctl drops` with both task names
//! and the R1 rule, and with the log off no log rule may exist.

mod common;
#[path = "netns/mod.rs"]
mod netns;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netns::{AgentId, Cluster, ManagedChild, Proto, TaskId, TCP_PORT, UDP_PORT};

const GROUPD: &str = env!("CARGO_BIN_EXE_groupd");
const GROUPCTL: &str = env!("CARGO_BIN_EXE_groupctl");
/// Not the default, so the test proves the configured group is used.
const GROUP: u16 = 4391;

/// (task name, groups): `front` and `vault` share no group; `peer` shares
/// `web` with `front`, so its flows are allowed and never logged; `bridged`
/// sits on a bridge port (its spoofing is dropped in the bridge table).
const TASKS: [(&str, &[&str]); 4] = [
    ("front", &["web"]),
    ("vault", &["secret"]),
    ("peer", &["web"]),
    ("bridged", &["web"]),
];
/// A source address no task has (for the spoofing probes).
const FAKE_SRC: &str = "10.233.99.99";

struct World {
    cluster: Cluster,
    agent: AgentId,
    tasks: Vec<TaskId>,
    dir: PathBuf,
    daemon: Option<ManagedChild>,
}

impl World {
    fn build(name: &str) -> World {
        let mut cluster = Cluster::new(name);
        let agent = cluster.add_agent("a1");
        let tasks = TASKS
            .iter()
            .map(|(n, _)| {
                if *n == "bridged" {
                    cluster.add_bridged_task(agent, n)
                } else {
                    cluster.add_routed_task(agent, n)
                }
            })
            .collect();
        cluster.wait_ready();
        let dir = std::env::temp_dir().join(format!("{}-files", cluster.prefix()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let w = World {
            cluster,
            agent,
            tasks,
            dir,
            daemon: None,
        };
        w.write_document();
        w
    }

    fn task_id(i: usize) -> String {
        format!("{}.task-1", TASKS[i].0)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("groupd.sock")
    }

    /// A Marathon `/v2/apps?embed=apps.tasks` document with the three tasks.
    fn write_document(&self) {
        let apps = TASKS
            .iter()
            .enumerate()
            .map(|(i, (name, groups))| {
                let t = self.cluster.task(self.tasks[i]);
                common::marathon_app(name, groups, &World::task_id(i), &t.ips())
            })
            .collect();
        common::write_marathon_apps(&self.dir.join("apps.json"), apps);
    }

    fn start(&mut self, log: bool) {
        self.start_with(log, "rate = \"100/second\"\n");
    }

    /// Start (or restart) groupd; `drops` is extra `[drops]` lines.
    fn start_with(&mut self, log: bool, drops: &str) {
        if let Some(old) = self.daemon.take() {
            let _ = old.kill9();
        }
        let config = self.dir.join("groupd.toml");
        let text = format!(
            "[source]\nkind = \"file\"\npath = {:?}\n[interfaces]\nmatch = [\"veth*\"]\n\
             [daemon]\nsocket = {:?}\nstate_dir = {:?}\nverify_interval = 1.0\n\
             [metrics]\nlisten = \"\"\n[drops]\nlog = {log}\ngroup = {GROUP}\n{drops}",
            self.dir.join("apps.json"),
            self.socket(),
            self.dir.join("state"),
        );
        std::fs::write(&config, text).expect("write config");
        let log_file = std::fs::File::create(self.dir.join("groupd.log")).expect("log file");
        let mut cmd = Command::new(GROUPD);
        cmd.args(["--config", config.to_str().expect("utf8 path"), "run"])
            .env("GROUPD_LOG", "info")
            .stderr(log_file);
        let ns = self.cluster.agent(self.agent).ns.clone();
        self.daemon = Some(self.cluster.spawn_in(&ns, &mut cmd));
        self.wait_enforced();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("groupd.log")).unwrap_or_default()
    }

    fn groupctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(GROUPCTL)
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("run groupctl")
    }

    fn groupctl_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.groupctl(&all);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Until groupctl shows the three tasks enforced.
    fn wait_enforced(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let enforced = self
                .groupctl_json(&["show"])
                .and_then(|v| v.as_array().cloned())
                .map(|rows| {
                    rows.iter()
                        .filter(|r| r["enforcement"] == "enforced")
                        .count()
                })
                .unwrap_or(0);
            if enforced == TASKS.len() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "groupd did not enforce the tasks; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn nft_inet(&self) -> String {
        let ns = self.cluster.agent(self.agent).ns.clone();
        let out = self
            .cluster
            .exec(&ns, &["nft", "list", "table", "inet", "groupd"]);
        assert!(out.status.success(), "nft list failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `groupctl drops --json` until `pred` holds for one record.
    fn wait_drop(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let drops = self.groupctl_json(&["drops"]).unwrap_or_default();
            if let Some(r) = drops.as_array().and_then(|a| a.iter().find(|r| pred(r))) {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{what} not in groupctl drops: {drops:#}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            let _ = d.kill9();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_drop(r: &serde_json::Value, proto: &str, port: u16) -> bool {
    r["src_task"] == World::task_id(0).as_str()
        && r["dst_task"] == World::task_id(1).as_str()
        && r["proto"] == proto
        && r["dport"] == port
}

fn require_tools() {
    for tool in ["nft", "ip"] {
        assert!(
            Command::new(tool).arg("-V").output().is_ok()
                || Command::new(tool).arg("--version").output().is_ok(),
            "{tool} missing: run `make deps`"
        );
    }
}

#[test]
#[ignore = "needs root: runs groupd in network namespaces it creates and sends real packets"]
fn denied_probes_show_in_groupctl_drops_with_tasks_and_rule() {
    require_tools();
    let mut w = World::build("drops");
    w.start(true);
    let (front, vault, peer) = (w.tasks[0], w.tasks[1], w.tasks[2]);
    let vault_ip = w.cluster.task(vault).ipv4.into();
    let peer_ip = w.cluster.task(peer).ipv4.into();

    // The log rules are in the kernel, with the configured group.
    let inet = w.nft_inet();
    assert!(
        inet.contains(&format!(
            "ip daddr @endpoints4 limit rate 100/second log prefix \"gd-r1-egress\" group {GROUP}"
        )),
        "{inet}"
    );

    // Allowed first (shares `web`), then denied: TCP and UDP.
    assert!(
        w.cluster.probe(front, peer_ip, Proto::Tcp, None),
        "front -> peer is allowed"
    );
    assert!(
        !w.cluster.probe(front, vault_ip, Proto::Tcp, None),
        "front -> vault is denied"
    );
    assert!(
        !w.cluster.probe(front, vault_ip, Proto::Udp, None),
        "front -> vault is denied"
    );

    for (proto, port) in [("tcp", TCP_PORT), ("udp", UDP_PORT)] {
        let r = w.wait_drop(&format!("front -> vault {proto}/{port}"), |r| {
            is_drop(r, proto, port)
        });
        assert_eq!(r["rule"], "gd-r1-egress", "{r:#}");
        assert_eq!(r["chain"], "egress", "{r:#}");
        assert_eq!(r["src_app"], "/front");
        assert_eq!(r["dst_app"], "/vault");
        assert_eq!(r["src"], w.cluster.task(front).ipv4.to_string());
        let reason = r["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("R1: ") && reason.contains("share no group"),
            "{reason}"
        );
        // The same words `groupctl explain` says for that flow.
        let e = w
            .groupctl_json(&[
                "explain",
                &World::task_id(0),
                &World::task_id(1),
                "--proto",
                proto,
                "--port",
                &port.to_string(),
            ])
            .expect("explain");
        assert_eq!(e["reason"], r["reason"]);
    }
    // R7: a spoofed source, at a routed task's interface (inet table) and
    // at a bridge port (bridge table); the source is an address, no task.
    let fake: std::net::IpAddr = FAKE_SRC.parse().expect("ip");
    for (from, rule) in [(front, "gd-r7-source-check"), (w.tasks[3], "gd-r7-port-in")] {
        assert!(
            !w.cluster.spoofed_udp(from, fake, vault_ip),
            "spoofing is dropped"
        );
        let r = w.wait_drop(rule, |r| r["rule"] == rule && r["src"] == FAKE_SRC);
        assert_eq!(r["src_task"], serde_json::Value::Null, "{r:#}");
        assert_eq!(r["dst_task"], World::task_id(1).as_str(), "{r:#}");
        assert_eq!(
            (r["proto"].as_str(), r["dport"].as_u64()),
            (Some("udp"), Some(u64::from(UDP_PORT)))
        );
        assert!(
            r["reason"]
                .as_str()
                .unwrap_or_default()
                .starts_with("R7/R8: "),
            "{r:#}"
        );
    }

    // Allowed flows are never logged.
    let all = w.groupctl_json(&["drops"]).expect("drops");
    assert!(
        !all.as_array()
            .expect("array")
            .iter()
            .any(|r| r["dst_task"] == World::task_id(2).as_str()),
        "an allowed flow was logged: {all:#}"
    );

    // One line per drop for people: time, tasks, protocol/port, rule.
    let out = w.groupctl(&["drops", "--task", &World::task_id(1)]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&format!("tcp/{TCP_PORT}")))
        .unwrap_or_else(|| panic!("no tcp line in:\n{text}"));
    eprintln!("groupctl drops: {line}");
    assert!(
        line.contains("front.task-1 (/front,")
            && line.contains("-> vault.task-1 (/vault,")
            && line.contains("[gd-r1-egress] R1: "),
        "{line}"
    );
    // --task filters: nothing was dropped to or from `peer`.
    let peer_only = w
        .groupctl_json(&["drops", "--task", &World::task_id(2)])
        .expect("drops --task");
    assert_eq!(peer_only, serde_json::json!([]));

    // --follow streams a new drop (one JSON object a line).
    let mut follow = Command::new(GROUPCTL)
        .arg("--socket")
        .arg(w.socket())
        .args(["--json", "drops", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("groupctl drops --follow");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The history comes first; then only what is new.
    std::thread::sleep(Duration::from_millis(500));
    while rx.try_recv().is_ok() {}
    let v6 = w.cluster.task(vault).ipv6.into();
    assert!(!w.cluster.probe(front, v6, Proto::Tcp, None));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut streamed = None;
    while streamed.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let r: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            if r["dst"] == v6.to_string() {
                streamed = Some(r);
            }
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let r = streamed.expect("groupctl drops --follow printed the IPv6 drop");
    assert_eq!(r["rule"], "gd-r1-egress");
    assert!(r["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("ip6 daddr @endpoints6"));

    // Log off (the default): no log rule, and groupctl drops says how to turn it on.
    w.start(false);
    let inet = w.nft_inet();
    assert!(
        !inet.contains(" log ") && !inet.contains("limit rate"),
        "{inet}"
    );
    let out = w.groupctl(&["drops"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[drops] log = true"));
}

/// When another program holds the nflog group, groupd says so (log and
/// `groupctl drops`) and keeps enforcing.
#[test]
#[ignore = "needs root: runs groupd in network namespaces it creates"]
fn a_taken_nflog_group_is_reported_not_fatal() {
    require_tools();
    let mut w = World::build("drops-busy");
    // Another listener on GROUP in the agent's namespace (it lives until the
    // test process ends, like the namespace it keeps a socket in).
    let path = format!("/run/netns/{}", w.cluster.agent(w.agent).ns);
    let holder = std::thread::spawn(move || {
        common::enter_netns(&path);
        groupd::drops::listener::spawn(GROUP)
    })
    .join()
    .expect("holder thread");
    let _holder = holder.expect("the test binds the group first");
    w.start(true);
    let out = w.groupctl(&["--json", "drops"]);
    assert!(out.status.success(), "drops still answers");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on nflog group {GROUP}"))
            && err.contains("set [drops] group to a free one"),
        "{err}"
    );
    assert!(
        w.log().contains("cannot listen on nflog group"),
        "{}",
        w.log()
    );
    // Enforcement is unaffected.
    let vault_ip = w.cluster.task(w.tasks[1]).ipv4.into();
    let peer_ip = w.cluster.task(w.tasks[2]).ipv4.into();
    assert!(!w.cluster.probe(w.tasks[0], vault_ip, Proto::Tcp, None));
    assert!(w.cluster.probe(w.tasks[0], peer_ip, Proto::Tcp, None));
}

/// The log is rate-limited: a flood of denied packets is all dropped, but
/// only the burst (and what the rate refills meanwhile) is logged.
#[test]
#[ignore = "needs root: runs groupd in network namespaces it creates and sends real packets"]
fn a_flood_of_drops_is_logged_only_up_to_the_rate() {
    require_tools();
    let mut w = World::build("drops-rate");
    w.start_with(true, "rate = \"1/minute\"\nburst = 3\n");
    let inet = w.nft_inet();
    assert!(
        inet.contains("limit rate 1/minute burst 3 packets log prefix \"gd-r1-egress\""),
        "{inet}"
    );
    let vault_ip: std::net::IpAddr = w.cluster.task(w.tasks[1]).ipv4.into();
    let probes: Vec<netns::Probe> = (0..30)
        .map(|_| netns::Probe::new(w.tasks[0], vault_ip, Proto::Udp))
        .collect();
    let results = w.cluster.probe_many(probes);
    assert!(results.iter().all(|ok| !ok), "every probe is dropped");
    // Let the listener catch up, then count.
    w.wait_drop("the first logged UDP drop", |r| is_drop(r, "udp", UDP_PORT));
    std::thread::sleep(Duration::from_millis(500));
    let logged = w
        .groupctl_json(&["drops"])
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|r| r["rule"] == "gd-r1-egress")
        .count();
    eprintln!("30 denied probes, {logged} logged (burst 3, 1/minute)");
    assert!(
        (1..=4).contains(&logged),
        "{logged} drops logged for 30 dropped probes with burst 3"
    );
}
