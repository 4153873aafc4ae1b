//! The chaos suite (`make chaos`, not part of `make test`): groupd on one
//! agent with an 8-task "stars" cluster (file source), every ordered pair
//! probed continuously with TCP while groupd is killed, its table tampered
//! with, veths churned next to an unknown task, IPs reused across groups,
//! hostile documents written, and restarts made without a source. Each
//! probe is judged against what the document said at that moment (either
//! side of a change is accepted between writing it and groupd showing it);
//! the suite fails on any open window (a denied pair reached) or broken
//! flow (an allowed pair cut) outside the measured tamper repairs, and
//! prints a table per phase.
//!
//! A second run puts the same cluster behind two simulated Marathons (a
//! standby that redirects to the leader) and takes the masters away: an
//! outage with groupd killed and restarted in the middle of it, then a
//! leader failover.
//!
//! `GROUPD_CHAOS_SEED=N` replays a run; `GROUPD_CHAOS_GUARD=notify|owner|auto`
//! picks the table guard.

mod common;
#[path = "netns/mod.rs"]
mod netns;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use groupd_sim::{Endpoint as SimEndpoint, MarathonSim, Mode, SimHandle, SimOptions};
use netns::probe::{ContinuousProbe, Proto};
use netns::{AgentId, Cluster, ManagedChild, TaskId};

const GROUPD: &str = env!("CARGO_BIN_EXE_groupd");
const GROUPCTL: &str = env!("CARGO_BIN_EXE_groupctl");

/// Groups of the 8 tasks: four "stars" of two, one task in two stars, one
/// in `public`, one ungrouped.
const STARS: [&[&str]; 8] = [
    &["star-1"],
    &["star-1"],
    &["star-2"],
    &["star-2", "star-3"],
    &["star-3"],
    &["star-4"],
    &["public"],
    &[],
];

/// Which pairs may talk, for one document.
type Matrix = Vec<Vec<bool>>;

/// A moment the expected matrix changed: from `at` until `settled` either
/// side is accepted (the change is on its way into the kernel).
struct Change {
    at: Instant,
    settled: Instant,
    before: Matrix,
    after: Matrix,
}

/// A tamper, from the `nft` command to the repaired table: violations in
/// this window are counted as the measured repair, not as failures.
struct Tamper {
    what: &'static str,
    at: Instant,
    repaired: Instant,
}

struct Phase {
    name: String,
    from: Instant,
    to: Instant,
}

/// A tiny deterministic generator, so a run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct World {
    cluster: Cluster,
    agent: AgentId,
    tasks: Vec<TaskId>,
    /// A task interface whose task the master never mentions (R8).
    ghost: TaskId,
    groups: Vec<BTreeSet<String>>,
    /// App name per task slot (changes when its IP is reused).
    app: Vec<String>,
    incarnation: Vec<u32>,
    dir: PathBuf,
    daemon: Option<ManagedChild>,
    changes: Vec<Change>,
    tampers: Vec<Tamper>,
    phases: Vec<Phase>,
    guard: String,
    /// The simulated Marathons (standby first, then the leader), when the
    /// source is `marathon`; the file source otherwise.
    marathons: Vec<SimHandle>,
}

impl World {
    fn build(name: &str) -> World {
        let mut cluster = Cluster::new(name);
        cluster.set_probe_timeout(Duration::from_millis(300));
        let agent = cluster.add_agent("a1");
        let tasks: Vec<TaskId> = (0..STARS.len())
            .map(|i| {
                let name = format!("s{i}");
                if i % 3 == 2 {
                    cluster.add_bridged_task(agent, &name)
                } else {
                    cluster.add_routed_task(agent, &name)
                }
            })
            .collect();
        let ghost = cluster.add_routed_task(agent, "ghost");
        cluster.wait_ready();
        let dir = std::env::temp_dir().join(format!("{}-chaos", cluster.prefix()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        World {
            groups: STARS
                .iter()
                .map(|g| g.iter().map(|s| s.to_string()).collect())
                .collect(),
            app: (0..STARS.len()).map(|i| format!("s{i}")).collect(),
            incarnation: vec![1; STARS.len()],
            cluster,
            agent,
            tasks,
            ghost,
            dir,
            daemon: None,
            changes: Vec::new(),
            tampers: Vec::new(),
            phases: Vec::new(),
            guard: std::env::var("GROUPD_CHAOS_GUARD").unwrap_or_else(|_| "auto".into()),
            marathons: Vec::new(),
        }
    }

    /// Serve the cluster from two simulated Marathons in the agent's
    /// namespace instead of the file.
    fn with_marathons(mut self) -> World {
        let a = self.cluster.agent(self.agent).clone();
        let options = || SimOptions {
            keepalive: Duration::from_secs(1),
            ..SimOptions::default()
        };
        let leader = MarathonSim::start_blocking(listen_in(&a.ns, a.ipv4), options())
            .expect("start the leader");
        let standby = MarathonSim::start_blocking(listen_in(&a.ns, a.ipv4), options())
            .expect("start the standby");
        standby.set_standby(Some(leader.url()));
        self.marathons = vec![standby, leader];
        self
    }

    fn ns(&self) -> String {
        self.cluster.agent(self.agent).ns.clone()
    }

    fn task_id(&self, i: usize) -> String {
        format!("{}.instance-{}", self.app[i], self.incarnation[i])
    }

    fn doc_path(&self) -> PathBuf {
        self.dir.join("apps.json")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("groupd.sock")
    }

    fn document(&self) -> serde_json::Value {
        let apps: Vec<serde_json::Value> = (0..STARS.len())
            .map(|i| {
                let ip: IpAddr = self.cluster.task(self.tasks[i]).ipv4.into();
                let groups: Vec<&str> = self.groups[i].iter().map(String::as_str).collect();
                common::marathon_app(&self.app[i], &groups, &self.task_id(i), &[ip])
            })
            .collect();
        serde_json::json!({ "apps": apps })
    }

    fn write_bytes(&self, bytes: &[u8]) {
        if !self.marathons.is_empty() {
            // Both masters hold the same state (Marathon's is in ZooKeeper).
            for sim in &self.marathons {
                sim.load_fixture(bytes).expect("load the document");
            }
            return;
        }
        let tmp = self.dir.join("apps.json.tmp");
        std::fs::write(&tmp, bytes).expect("write doc");
        std::fs::rename(&tmp, self.doc_path()).expect("rename doc");
    }

    fn matrix(&self) -> Matrix {
        let n = STARS.len();
        (0..n)
            .map(|s| {
                (0..n)
                    .map(|d| {
                        s != d
                            && (self.groups[d].contains("public")
                                || !self.groups[s].is_disjoint(&self.groups[d]))
                    })
                    .collect()
            })
            .collect()
    }

    /// Write the document for the current state and wait until groupd
    /// shows it; the probes accept either side meanwhile.
    fn publish(&mut self, before: Matrix) {
        let at = Instant::now();
        self.write_bytes(&serde_json::to_vec(&self.document()).expect("json"));
        self.wait_shown();
        // The transaction is sent before groupctl is answered again; a
        // little slack for probes that started just before it.
        let settled = Instant::now() + Duration::from_millis(350);
        self.changes.push(Change {
            at,
            settled,
            before,
            after: self.matrix(),
        });
    }

    fn config(&self) -> PathBuf {
        let path = self.dir.join("groupd.toml");
        let source = if self.marathons.is_empty() {
            format!("kind = \"file\"\npath = {:?}", self.doc_path())
        } else {
            let urls: Vec<String> = self.marathons.iter().map(|s| s.url()).collect();
            format!("kind = \"marathon\"\nurls = {urls:?}\nresync_interval = 2")
        };
        let text = format!(
            "[source]\n{source}\n[interfaces]\nmatch = [\"veth*\"]\n[daemon]\nsocket = {:?}\nstate_dir = {:?}\nverify_interval = 1.0\n{}[metrics]\nlisten = \"\"\n",
            self.socket(),
            self.state_dir(),
            if self.guard == "auto" {
                String::new()
            } else {
                format!("table_guard = {:?}\n", self.guard)
            },
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    fn start(&mut self) {
        let config = self.config();
        let mut cmd = Command::new(GROUPD);
        cmd.args(["--config", config.to_str().expect("utf8 path"), "run"]);
        cmd.env("GROUPD_LOG", "info");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("groupd.log"))
            .expect("log file");
        cmd.stderr(log);
        let ns = self.ns();
        self.daemon = Some(self.cluster.spawn_in(&ns, &mut cmd));
    }

    fn kill9(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.kill9().expect("kill -9 groupd");
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("groupd.log")).unwrap_or_default()
    }

    /// Until `groupctl show --all` lists exactly the document's tasks with
    /// their groups, all enforced.
    fn wait_shown(&self) {
        let want: BTreeSet<(String, Vec<String>)> = (0..STARS.len())
            .map(|i| {
                let mut g: Vec<String> = self.groups[i].iter().cloned().collect();
                g.sort();
                (self.task_id(i), g)
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got: Option<BTreeSet<(String, Vec<String>)>> = Command::new(GROUPCTL)
                .arg("--socket")
                .arg(self.socket())
                .args(["--json", "show", "--all"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                .and_then(|v| {
                    v.as_array().map(|rows| {
                        rows.iter()
                            .filter(|r| r["enforcement"] == "enforced")
                            .map(|r| {
                                let mut g: Vec<String> = r["groups"]
                                    .as_array()
                                    .map(|a| {
                                        a.iter()
                                            .filter_map(|x| x.as_str().map(String::from))
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                g.sort();
                                (r["task"].as_str().unwrap_or("").to_string(), g)
                            })
                            .collect()
                    })
                });
            // Ungrouped tasks show as such; compare ids when groups differ
            // only by the ungrouped convention.
            if got.as_ref().is_some_and(|g| {
                g.len() == want.len()
                    && g.iter()
                        .zip(&want)
                        .all(|(a, b)| a.0 == b.0 && (a.1 == b.1 || b.1.is_empty()))
            }) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "groupd did not show the document within 20 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn nft(&self, args: &str) -> std::process::Output {
        let ns = self.ns();
        let argv: Vec<&str> = std::iter::once("nft")
            .chain(args.split_whitespace())
            .collect();
        self.cluster.exec(&ns, &argv)
    }

    /// The inet table as `nft` lists it, counters left out.
    fn table_text(&self) -> Option<Vec<String>> {
        let out = self.nft("list table inet groupd");
        out.status
            .success()
            .then(|| common::normalise(&String::from_utf8_lossy(&out.stdout)))
    }

    fn phase(&mut self, name: &str, run: impl FnOnce(&mut World)) {
        let from = Instant::now();
        run(self);
        // Let the probes see the end state before the next phase.
        std::thread::sleep(Duration::from_millis(700));
        self.phases.push(Phase {
            name: name.to_string(),
            from,
            to: Instant::now(),
        });
    }

    /// Run a tamper command and wait until the table is whole again (or
    /// the kernel refused the command: owner mode).
    fn tamper(&mut self, what: &'static str, command: &str) {
        let whole = self.table_text().expect("table before the tamper");
        let at = Instant::now();
        let out = self.nft(command);
        let refused = !out.status.success();
        let deadline = at + Duration::from_secs(15);
        while self.table_text().as_ref() != Some(&whole) {
            assert!(
                Instant::now() < deadline,
                "{what}: the table was not repaired within 15 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let repaired = Instant::now();
        if refused {
            eprintln!("[chaos] tamper {what:<34} refused by the kernel; the table never changed");
        } else {
            eprintln!(
                "[chaos] tamper {what:<34} accepted; repaired after {:?}",
                repaired - at
            );
        }
        self.tampers.push(Tamper { what, at, repaired });
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn listen_in(ns: &str, ip: std::net::Ipv4Addr) -> std::net::TcpListener {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        common::enter_netns(&path);
        std::net::TcpListener::bind((ip, 0)).expect("bind the simulator's listener")
    })
    .join()
    .expect("bind thread")
}

/// The verdicts a probe of (s, d) started at `t` may see.
fn allowed_at(w: &World, first: &Matrix, s: usize, d: usize, t: Instant) -> (bool, bool) {
    let mut current = first[s][d];
    let mut either = false;
    for c in &w.changes {
        if t >= c.settled {
            current = c.after[s][d];
        } else if t >= c.at {
            either |= c.before[s][d] != c.after[s][d];
            current = c.after[s][d];
        }
    }
    (current, either)
}

/// Every ordered pair of tasks, and every task to and from the unknown task.
struct Probes {
    pairs: Vec<(usize, usize, ContinuousProbe)>,
    ghost: Vec<ContinuousProbe>,
}

fn start_probes(w: &World) -> Probes {
    let n = STARS.len();
    let ghost_ip: IpAddr = w.cluster.task(w.ghost).ipv4.into();
    let mut pairs = Vec::new();
    for s in 0..n {
        for d in 0..n {
            if s != d {
                let to: IpAddr = w.cluster.task(w.tasks[d]).ipv4.into();
                pairs.push((
                    s,
                    d,
                    ContinuousProbe::start(&w.cluster, w.tasks[s], to, Proto::Tcp, 150),
                ));
            }
        }
    }
    let mut ghost = Vec::new();
    for s in 0..n {
        ghost.push(ContinuousProbe::start(
            &w.cluster,
            w.tasks[s],
            ghost_ip,
            Proto::Tcp,
            300,
        ));
        let to: IpAddr = w.cluster.task(w.tasks[s]).ipv4.into();
        ghost.push(ContinuousProbe::start(
            &w.cluster,
            w.ghost,
            to,
            Proto::Tcp,
            300,
        ));
    }
    std::thread::sleep(Duration::from_millis(500));
    Probes { pairs, ghost }
}

fn seed() -> u64 {
    let seed = std::env::var("GROUPD_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(1)
        });
    eprintln!("[chaos] GROUPD_CHAOS_SEED={seed}");
    seed
}

/// Judge every probe against the documents of its moment, print the table
/// per phase, and fail on any violation outside a measured tamper repair.
fn judge(w: &World, first: &Matrix, probes: Probes) {
    let mut report: Vec<(String, usize, usize, usize, usize)> = w
        .phases
        .iter()
        .map(|p| (p.name.clone(), 0, 0, 0, 0))
        .collect();
    let phase_of = |t: Instant| w.phases.iter().position(|p| t >= p.from && t < p.to);
    let in_tamper = |t: Instant| {
        w.tampers
            .iter()
            .any(|x| t + Duration::from_millis(300) >= x.at && t <= x.repaired)
    };
    let mut failures = Vec::new();
    for (s, d, probe) in probes.pairs {
        for (t, ok) in probe.stop() {
            let Some(p) = phase_of(t) else { continue };
            report[p].1 += 1;
            let (allowed, either) = allowed_at(w, first, s, d, t);
            if either || ok == allowed {
                continue;
            }
            if in_tamper(t) {
                report[p].4 += 1;
                continue;
            }
            if ok {
                report[p].2 += 1;
            } else {
                report[p].3 += 1;
            }
            if failures.len() < 20 {
                failures.push(format!(
                    "{}: s{s} -> s{d} {} at +{:?}",
                    w.phases[p].name,
                    if ok { "OPEN WINDOW" } else { "BROKEN FLOW" },
                    t - w.phases[0].from
                ));
            }
        }
    }
    for probe in probes.ghost {
        for (t, ok) in probe.stop() {
            let Some(p) = phase_of(t) else { continue };
            report[p].1 += 1;
            if !ok {
                continue;
            }
            if in_tamper(t) {
                report[p].4 += 1;
            } else {
                report[p].2 += 1;
                failures.push(format!(
                    "{}: the unknown task was reached or reached out",
                    w.phases[p].name
                ));
            }
        }
    }
    println!("\n| phase | probes | open windows | broken flows | during measured tamper repair |");
    println!("|---|---|---|---|---|");
    for (name, probes, open, broken, tamper) in &report {
        println!("| {name} | {probes} | {open} | {broken} | {tamper} |");
    }
    for t in &w.tampers {
        println!(
            "tamper `{}`: repaired {:?} after the nft command",
            t.what,
            t.repaired - t.at
        );
    }
    println!("guard: {}", w.guard);
    assert!(
        failures.is_empty(),
        "{} violations (first 20):\n{}\nlog:\n{}",
        report.iter().map(|r| r.2 + r.3).sum::<usize>(),
        failures.join("\n"),
        w.log()
    );
}

#[test]
#[ignore = "chaos suite: needs root, runs for minutes; `make chaos`"]
fn chaos_every_pair_probed_under_faults() {
    common::require_nft();
    let mut rng = Rng(seed());
    let mut w = World::build("chaos");
    w.write_bytes(&serde_json::to_vec(&w.document()).expect("json"));
    w.start();
    w.wait_shown();
    let first = w.matrix();
    let probes = start_probes(&w);
    w.phase("baseline", |_| std::thread::sleep(Duration::from_secs(2)));

    w.phase("kill -9 at random moments (x20, 8 mid-rewrite)", |w| {
        for round in 0..20 {
            if round % 5 < 2 {
                // Mid-rewrite: a re-group written just before the kill.
                let before = w.matrix();
                let slot = rng.below(6) as usize;
                let star = format!("star-{}", 1 + rng.below(4));
                w.groups[slot] = [star].into();
                let at = Instant::now();
                w.write_bytes(&serde_json::to_vec(&w.document()).expect("json"));
                std::thread::sleep(Duration::from_millis(rng.below(40)));
                w.kill9();
                w.start();
                w.wait_shown();
                w.changes.push(Change {
                    at,
                    settled: Instant::now() + Duration::from_millis(350),
                    before,
                    after: w.matrix(),
                });
            } else {
                std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
                w.kill9();
                std::thread::sleep(Duration::from_millis(rng.below(300)));
                w.start();
                w.wait_shown();
            }
        }
        // Back to the stars for the phases that follow.
        let before = w.matrix();
        w.groups = STARS
            .iter()
            .map(|g| g.iter().map(|s| s.to_string()).collect())
            .collect();
        w.publish(before);
    });

    w.phase("veth churn next to an unknown task (20/s, 5 s)", |w| {
        let ns = w.ns();
        for i in 0..100 {
            let name = format!("vethc{}", i % 7);
            let _ = w.cluster.exec(
                &ns,
                &[
                    "ip",
                    "link",
                    "add",
                    &name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &format!("pc{}", i % 7),
                ],
            );
            let _ = w.cluster.exec(&ns, &["ip", "link", "set", &name, "up"]);
            std::thread::sleep(Duration::from_millis(25));
            let _ = w.cluster.exec(&ns, &["ip", "link", "del", &name]);
            std::thread::sleep(Duration::from_millis(25));
        }
    });

    w.phase("IP reuse across groups (x30)", |w| {
        for _ in 0..30 {
            let before = w.matrix();
            let slot = rng.below(6) as usize;
            // The task dies and a new task of another app gets its IP.
            w.app[slot] = format!("reuse{}", rng.below(1000));
            w.incarnation[slot] += 1;
            w.groups[slot] = [format!("star-{}", 1 + rng.below(4))].into();
            w.publish(before);
        }
    });

    w.phase("hostile documents (x7)", |w| {
        let good = serde_json::to_vec(&w.document()).expect("json");
        let mut dup = w.document();
        let stolen = dup["apps"][0].clone();
        let mut thief = stolen.clone();
        thief["id"] = serde_json::json!("/thief");
        thief["ipAddress"]["groups"] = serde_json::json!(["public"]);
        thief["tasks"][0]["id"] = serde_json::json!("thief.1");
        thief["tasks"][0]["appId"] = serde_json::json!("/thief");
        if let Some(apps) = dup["apps"].as_array_mut() {
            apps.push(thief);
        }
        let hostile: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"{\"apps\": [".to_vec(),
            b"\xff\xfe not json".to_vec(),
            b"{\"apps\": 42}".to_vec(),
            b"[]".to_vec(),
            br#"{"apps": [{"id": 7, "tasks": "x"}]}"#.to_vec(),
            serde_json::to_vec(&dup).expect("json"),
        ];
        for doc in hostile {
            w.write_bytes(&doc);
            std::thread::sleep(Duration::from_millis(600));
            w.write_bytes(&good);
            std::thread::sleep(Duration::from_millis(300));
        }
        w.wait_shown();
    });

    w.phase(
        "degraded restarts (source gone; with, then without state_dir)",
        |w| {
            std::fs::remove_file(w.doc_path()).expect("remove document");
            std::thread::sleep(Duration::from_millis(300));
            for lose_state in [false, true] {
                w.kill9();
                if lose_state {
                    let _ = std::fs::remove_dir_all(w.state_dir());
                }
                w.start();
                std::thread::sleep(Duration::from_millis(2500));
            }
            w.write_bytes(&serde_json::to_vec(&w.document()).expect("json"));
            w.wait_shown();
        },
    );

    w.phase("tampering (measured repair)", |w| {
        w.tamper("table deleted", "delete table inet groupd");
        w.tamper(
            "accept inserted at the top of forward",
            "insert rule inet groupd forward accept",
        );
        let ip = w.cluster.task(w.tasks[1]).ipv4;
        w.tamper(
            "element deleted",
            &format!("delete element inet groupd endpoints4 {{ {ip} }}"),
        );
        w.tamper(
            "element added",
            "add element inet groupd open4 { 10.233.250.250 }",
        );
        w.tamper("chain flushed", "flush chain inet groupd egress");
    });

    judge(&w, &first, probes);
}

/// The masters go away and come back, and the leader changes, while every
/// pair is probed: nothing may change.
#[test]
#[ignore = "chaos suite: needs root, runs for minutes; `make chaos`"]
fn chaos_master_outage_and_failover() {
    common::require_nft();
    let mut rng = Rng(seed());
    let mut w = World::build("chaosm").with_marathons();
    w.write_bytes(&serde_json::to_vec(&w.document()).expect("json"));
    w.start();
    w.wait_shown();
    let first = w.matrix();
    let probes = start_probes(&w);
    w.phase("baseline", |_| std::thread::sleep(Duration::from_secs(2)));
    w.phase(
        "master outage (10 s; groupd killed and restarted in it)",
        |w| {
            for sim in &w.marathons {
                sim.misbehave_on(SimEndpoint::Events, Mode::DropStream { after_events: 0 });
                sim.misbehave(Mode::Hang);
            }
            std::thread::sleep(Duration::from_millis(3000 + rng.below(2000)));
            w.kill9();
            w.start();
            std::thread::sleep(Duration::from_secs(5));
            for sim in &w.marathons {
                sim.behave();
            }
            w.wait_shown();
        },
    );
    w.phase("leader failover", |w| {
        let (standby, leader) = (&w.marathons[0], &w.marathons[1]);
        standby.set_standby(None);
        leader.set_standby(Some(standby.url()));
        leader.misbehave_on(SimEndpoint::Events, Mode::DropStream { after_events: 0 });
        let deadline = Instant::now() + Duration::from_secs(20);
        while !standby.wait_sse_clients(1, Duration::from_millis(200)) {
            assert!(
                Instant::now() < deadline,
                "groupd did not follow the new leader; log:\n{}",
                w.log()
            );
        }
        leader.behave();
        std::thread::sleep(Duration::from_secs(3));
        w.wait_shown();
    });
    w.phase("a re-group through the new leader", |w| {
        let before = w.matrix();
        w.groups[0] = ["star-2".to_string()].into();
        w.publish(before);
    });
    judge(&w, &first, probes);
}
