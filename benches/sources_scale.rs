//! Scenario D, sources at scale (not a test; no root needed): groupd's
//! Mesos and Marathon sources against the simulated masters
//! (`groupd_sim`) holding 100,000 running tasks, each Mesos task with a
//! realistic status history (TASK_STARTING and TASK_RUNNING, both with
//! `container_status.network_infos`).
//!
//! Every measurement runs in a child process (this binary again, with
//! `child KIND URL`), so that its peak RSS (VmHWM from /proc/PID/status) is
//! its own: the child sets up the allocator as `groupd` does (one malloc
//! arena; freed memory trimmed after a snapshot, like the daemon), starts
//! the source, waits for the first snapshot, prints the time, and then
//! keeps everything (the source runs on, the
//! snapshot is held as the daemon would) until the parent has read VmHWM
//! and, two seconds later, VmRSS (steady). Peers in the same run, on the
//! same simulator and the same bytes:
//! * `value`: fetch the document and `serde_json::from_slice::<Value>`;
//! * `buffered`: fetch it and run the whole-document parser the `file`
//!   source uses (`parse_document`), the shape of the old live path.
//!
//! Targets (issue 11 §2): snapshot -> view ready <= 2 s, peak RSS <= 100 MB,
//! steady RSS <= 64 MB.
//!
//! Env: GROUPD_BENCH_RUNS (3), GROUPD_BENCH_TASKS (100000),
//! GROUPD_BENCH_ONLY (`mesos` or `marathon`: that half only),
//! GROUPD_BENCH_ROWS (markdown rows file).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::stats::summary;
use common::{pass, Rows};
use groupd_sim::mesos::{MesosOptions, MesosSim, NetworkSpec, TaskSpec};
use groupd_sim::{MarathonSim, SimOptions};

const TARGET_READY_S: f64 = 2.0;
const TARGET_PEAK_MB: f64 = 100.0;
const TARGET_STEADY_MB: f64 = 64.0;
/// Groups in the cluster; each app is in 3 of them.
const GROUPS: usize = 300;
const TASKS_PER_APP: usize = 100;
const AGENTS: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Task `t`'s address: 10.233.0.0/16 while it lasts, then fd00:233::/64
/// (the only ranges the test rules allow; nothing is configured anywhere,
/// the addresses are data).
fn task_ip(t: usize) -> IpAddr {
    const V4: usize = 250 * 250;
    if t < V4 {
        IpAddr::V4(Ipv4Addr::new(10, 233, (t / 250) as u8, (t % 250 + 1) as u8))
    } else {
        let low = (t - V4 + 1) as u64;
        IpAddr::V6(Ipv6Addr::from((0xfd00_0233u128 << 96) | u128::from(low)))
    }
}

fn groups_of(app: usize) -> Vec<String> {
    (0..3)
        .map(|k| format!("g{}", (app * 7 + k * 101) % GROUPS))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let (kind, url) = (
            args.get(2).cloned().unwrap_or_default(),
            args.get(3).cloned().unwrap_or_default(),
        );
        child::run(&kind, &url);
        return;
    }
    // `cargo test --all-targets` runs bench binaries as debug builds: a
    // small smoke run then, real numbers from `cargo bench` / run.sh.
    let smoke = cfg!(debug_assertions);
    let tasks = if smoke {
        2_000
    } else {
        env_usize("GROUPD_BENCH_TASKS", 100_000).max(TASKS_PER_APP)
    };
    let runs = if smoke {
        1
    } else {
        env_usize("GROUPD_BENCH_RUNS", 3).max(1)
    };
    let mut rows = Rows::open();
    let only = std::env::var("GROUPD_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "mesos" {
        mesos(tasks, runs, &mut rows, smoke);
    }
    if only.is_empty() || only == "marathon" {
        marathon(tasks, runs, &mut rows, smoke);
    }
}

// ---------------------------------------------------------------------------
// The scenarios

fn mesos(tasks: usize, runs: usize, rows: &mut Rows, smoke: bool) {
    eprintln!("[sources] Mesos: loading {tasks} tasks into the simulated master");
    let sim = MesosSim::start(
        "127.0.0.1:0".parse().expect("addr"),
        MesosOptions::default(),
    )
    .expect("start the simulated Mesos master");
    let specs = (0..tasks)
        .map(|t| {
            let app = t / TASKS_PER_APP;
            TaskSpec {
                id: format!("app{app}.instance-{t:08}._app.1"),
                agent: format!("S{}", t % AGENTS),
                name: Some(format!("app{app}.prod")),
                network_infos: vec![NetworkSpec {
                    name: Some("dcos".into()),
                    groups: groups_of(app),
                    ip_addresses: vec![task_ip(t)],
                    ..NetworkSpec::default()
                }],
                ..TaskSpec::default()
            }
        })
        .collect();
    sim.load_tasks(specs).expect("load the tasks");
    let url = sim.url();
    let size = fetch_len(&format!("{url}/master/state"));
    let file = scratch_file("master-state", &fetch(&format!("{url}/master/state")));
    let from_file = measure("file", &file.0, runs, tasks);
    let subscribe = measure("mesos", &url, runs, tasks);
    let value = measure("value-mesos", &url, runs, tasks);
    let buffered = measure("buffered-mesos", &url, runs, tasks);
    sim.set_old_mesos(true);
    let polled = measure("mesos", &url, runs, tasks);
    sim.set_old_mesos(false);
    if smoke {
        eprintln!("[sources] smoke run of a debug build passed; measure with `cargo bench --bench sources_scale`");
        return;
    }
    let what = format!(
        "{tasks} running Mesos tasks (2 statuses each with network_infos; /master/state {:.0} MB)",
        size as f64 / 1e6
    );
    report(
        rows,
        &format!("Mesos source, SUBSCRIBE: {what}; source start -> first snapshot (view ready)"),
        &subscribe,
        &value,
        "fetch /master/state + `serde_json::from_slice::<Value>`",
    );
    report(
        rows,
        &format!("Mesos source, /master/state polling: {what}"),
        &polled,
        &buffered,
        "fetch + the whole-document parser (`parse_document`, old live path)",
    );
    report(
        rows,
        &format!(
            "file source, the same /master/state in a file: {what}; source start -> first snapshot"
        ),
        &from_file,
        &buffered,
        "fetch + the whole-document parser",
    );
}

fn marathon(tasks: usize, runs: usize, rows: &mut Rows, smoke: bool) {
    eprintln!("[sources] Marathon: loading {tasks} tasks into the simulated Marathon");
    let sim = MarathonSim::start("127.0.0.1:0".parse().expect("addr"), SimOptions::default())
        .expect("start the simulated Marathon");
    sim.load_fixture(apps_document(tasks).as_bytes())
        .expect("load the apps");
    let url = sim.url();
    let size = fetch_len(&format!("{url}/v2/apps?embed=apps.tasks"));
    let file = scratch_file("apps", &fetch(&format!("{url}/v2/apps?embed=apps.tasks")));
    let from_file = measure("file", &file.0, runs, tasks);
    let source = measure("marathon", &url, runs, tasks);
    let value = measure("value-marathon", &url, runs, tasks);
    let buffered = measure("buffered-marathon", &url, runs, tasks);
    if smoke {
        return;
    }
    let what = format!(
        "{tasks} running Marathon tasks (/v2/apps?embed=apps.tasks {:.0} MB)",
        size as f64 / 1e6
    );
    report(
        rows,
        &format!("Marathon source: {what}; source start -> first snapshot (view ready)"),
        &source,
        &value,
        "fetch + `serde_json::from_slice::<Value>`",
    );
    report(
        rows,
        &format!("Marathon source, the same against the buffered parser: {what}"),
        &source,
        &buffered,
        "fetch + the whole-document parser (`parse_document`)",
    );
    report(
        rows,
        &format!("file source, the same /v2/apps document in a file: {what}; source start -> first snapshot"),
        &from_file,
        &buffered,
        "fetch + the whole-document parser",
    );
}

/// A document in a scratch file, removed when dropped.
struct ScratchFile(String);

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn scratch_file(name: &str, bytes: &[u8]) -> ScratchFile {
    let path = std::env::temp_dir().join(format!(
        "groupd-bench-sources-{}-{name}.json",
        std::process::id()
    ));
    std::fs::write(&path, bytes).expect("write the scratch document");
    ScratchFile(path.to_string_lossy().into_owned())
}

/// A Marathon 1.4 `/v2/apps?embed=apps.tasks` document: apps of
/// [`TASKS_PER_APP`] IP-per-task tasks with `ipAddress.groups`.
fn apps_document(tasks: usize) -> String {
    let version = "2017-05-01T10:00:00.000Z";
    let apps: Vec<serde_json::Value> = (0..tasks.div_ceil(TASKS_PER_APP))
        .map(|app| {
            let list: Vec<serde_json::Value> = (app * TASKS_PER_APP..tasks.min((app + 1) * TASKS_PER_APP))
                .map(|t| {
                    let ip = task_ip(t);
                    serde_json::json!({
                        "id": format!("app{app}.{t:08}-1f3e-11e7-9c6e-70b3d5800001"),
                        "appId": format!("/app{app}"),
                        "host": format!("agent{}.example", t % AGENTS),
                        "slaveId": format!("S{}", t % AGENTS),
                        "state": "TASK_RUNNING",
                        "version": version,
                        "stagedAt": "2017-05-01T10:00:01.000Z",
                        "startedAt": "2017-05-01T10:00:05.000Z",
                        "ports": [],
                        "ipAddresses": [{"ipAddress": ip.to_string(), "protocol": if ip.is_ipv4() { "IPv4" } else { "IPv6" }}],
                        "healthCheckResults": []
                    })
                })
                .collect();
            serde_json::json!({
                "id": format!("/app{app}"),
                "cmd": "sleep 3600",
                "instances": list.len(),
                "cpus": 0.1,
                "mem": 32,
                "version": version,
                "ipAddress": {"groups": groups_of(app), "networkName": "dcos", "labels": {}, "discovery": {"ports": []}},
                "labels": {},
                "tasks": list
            })
        })
        .collect();
    serde_json::json!({ "apps": apps }).to_string()
}

// ---------------------------------------------------------------------------
// Measuring a child

#[derive(Debug, Clone, Copy)]
struct Sample {
    ready_s: f64,
    peak_mb: f64,
    steady_mb: f64,
}

/// `runs` children of `kind` against `url`.
fn measure(kind: &str, url: &str, runs: usize, tasks: usize) -> Vec<Sample> {
    (1..=runs)
        .map(|run| {
            let s = one_child(kind, url, tasks);
            eprintln!(
                "[sources] {kind} {run}/{runs}: ready after {:.3} s, peak RSS {:.1} MiB, steady RSS {:.1} MiB",
                s.ready_s, s.peak_mb, s.steady_mb
            );
            s
        })
        .collect()
}

fn one_child(kind: &str, url: &str, tasks: usize) -> Sample {
    let exe = std::env::current_exe().expect("own executable");
    let mut child = Command::new(exe)
        .args(["child", kind, url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the bench child");
    let pid = child.id();
    let stdout = child.stdout.take().expect("child stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the child's answer");
    let peak_mb = common::procstat::status_mb(pid, "VmHWM:").expect("read the child's VmHWM");
    // Steady: two seconds later (a smoke run of a debug build only checks
    // that the pieces work).
    let settle = if cfg!(debug_assertions) { 200 } else { 2000 };
    std::thread::sleep(Duration::from_millis(settle));
    let steady_mb = common::procstat::status_mb(pid, "VmRSS:").expect("read the child's VmRSS");
    drop(child.stdin.take());
    let status = child.wait().expect("wait for the child");
    assert!(status.success(), "{kind} child failed: {status}");
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("ready"), "{kind} child said {line:?}");
    let ready_s: f64 = words.next().and_then(|w| w.parse().ok()).expect("time");
    let got: usize = words.next().and_then(|w| w.parse().ok()).expect("tasks");
    assert_eq!(got, tasks, "{kind} child saw {got} tasks");
    Sample {
        ready_s,
        peak_mb,
        steady_mb,
    }
}

/// Bytes of a GET, for the table.
fn fetch_len(url: &str) -> usize {
    fetch(url).len()
}

/// The body of a GET (plain HTTP/1.0 to the simulator).
fn fetch(url: &str) -> Vec<u8> {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut sock = std::net::TcpStream::connect(host).expect("connect to the simulator");
    write!(
        sock,
        "GET /{path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\n\r\n"
    )
    .expect("send");
    let mut all = Vec::new();
    sock.read_to_end(&mut all).expect("read");
    let head = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers");
    all.split_off(head + 4)
}

fn report(rows: &mut Rows, what: &str, ours: &[Sample], peer: &[Sample], peer_what: &str) {
    let med = |v: &[Sample], f: fn(&Sample) -> f64| summary(&v.iter().map(f).collect::<Vec<_>>());
    let (ready, peak, steady) = (
        med(ours, |s| s.ready_s),
        med(ours, |s| s.peak_mb),
        med(ours, |s| s.steady_mb),
    );
    let (p_ready, p_peak, p_steady) = (
        med(peer, |s| s.ready_s),
        med(peer, |s| s.peak_mb),
        med(peer, |s| s.steady_mb),
    );
    let ok = ready.median <= TARGET_READY_S
        && peak.median <= TARGET_PEAK_MB
        && steady.median <= TARGET_STEADY_MB;
    rows.row([
        &format!("{what}; median of {}", ready.n),
        &format!(
            "{:.2} s [{:.2}–{:.2}]; peak RSS {:.1} MiB; steady RSS {:.1} MiB",
            ready.median, ready.min, ready.max, peak.median, steady.median
        ),
        &format!(
            "{peer_what}: {:.2} s; peak {:.1} MiB; after {:.1} MiB",
            p_ready.median, p_peak.median, p_steady.median
        ),
        &format!(
            "time ×{:.2}, peak ×{:.2}, steady ×{:.2}",
            ready.median / p_ready.median,
            peak.median / p_peak.median,
            steady.median / p_steady.median
        ),
        &format!(
            "<= {TARGET_READY_S} s, peak <= {TARGET_PEAK_MB} MB, steady <= {TARGET_STEADY_MB} MB"
        ),
        pass(ok),
    ]);
}

// ---------------------------------------------------------------------------
// The child

mod child {
    use std::io::Read;
    use std::time::Instant;

    use groupd::config::{GroupsConfig, SourceConfig, SourceKind};
    use groupd::model::ClusterView;
    use groupd::source::document::parse_document;
    use groupd::source::wire::marathon::VersionCache;
    use groupd::source::SourceUpdate;

    /// Run `kind` against `url`, print `ready SECONDS TASKS`, hold
    /// everything until stdin closes.
    pub fn run(kind: &str, url: &str) {
        // The allocator as groupd's main() sets it (one arena), so that the
        // child's memory is groupd's.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only sets a tunable; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let start = Instant::now();
            let held: Box<dyn std::any::Any + Send> = match kind {
                "mesos" | "marathon" | "file" => {
                    let (view, rx) = source(kind, url).await;
                    report(start, view.tasks.len());
                    Box::new((view, rx))
                }
                "value-mesos" | "value-marathon" => {
                    let bytes = fetch(url, kind).await;
                    let value: serde_json::Value =
                        serde_json::from_slice(&bytes).expect("JSON document");
                    drop(bytes);
                    report(start, count_tasks(&value));
                    Box::new(value)
                }
                "buffered-mesos" | "buffered-marathon" => {
                    let bytes = fetch(url, kind).await;
                    let view = parse_document(
                        &bytes,
                        &GroupsConfig::default(),
                        &mut VersionCache::default(),
                    )
                    .expect("a document");
                    drop(bytes);
                    report(start, view.tasks.len());
                    Box::new(view)
                }
                other => panic!("unknown child kind {other}"),
            };
            // Hold it until the parent has measured.
            tokio::task::spawn_blocking(|| {
                let _ = std::io::stdin().read_to_end(&mut Vec::new());
            })
            .await
            .expect("stdin");
            drop(held);
        });
    }

    /// Print the time, then give freed memory back as the daemon does
    /// after a snapshot replaced its view (`release_free_memory`), so that
    /// the steady RSS is what is held, for groupd and the peers alike.
    fn report(start: Instant, tasks: usize) {
        println!("ready {:.4} {tasks}", start.elapsed().as_secs_f64());
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free heap pages.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    async fn source(
        kind: &str,
        url: &str,
    ) -> (ClusterView, tokio::sync::mpsc::Receiver<SourceUpdate>) {
        let cfg = SourceConfig {
            kind: match kind {
                "mesos" => SourceKind::Mesos,
                "file" => SourceKind::File,
                _ => SourceKind::Marathon,
            },
            urls: vec![url.to_string()],
            path: None,
            resync_interval: std::time::Duration::from_secs(3600),
            username: None,
            password_file: None,
            token_file: None,
            ca_file: None,
            prefix: "/groupd/v1".into(),
            cert_file: None,
            key_file: None,
            tls_verify: true,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let groups = GroupsConfig::default();
        match kind {
            "mesos" => tokio::spawn(groupd::source::mesos::run(cfg, groups, tx)),
            // `url` is the path of the document.
            "file" => tokio::spawn(groupd::source::file::run(url.into(), groups, tx)),
            _ => tokio::spawn(groupd::source::marathon::run(cfg, groups, tx)),
        };
        loop {
            match rx.recv().await.expect("the source runs") {
                SourceUpdate::Snapshot(view) => return (view, rx),
                SourceUpdate::Degraded(why) => eprintln!("[sources] child: degraded: {why}"),
                _ => {}
            }
        }
    }

    async fn fetch(url: &str, kind: &str) -> Vec<u8> {
        let path = if kind.ends_with("mesos") {
            "/master/state"
        } else {
            "/v2/apps?embed=apps.tasks"
        };
        let response = reqwest::Client::new()
            .get(format!("{url}{path}"))
            .header("Accept", "application/json")
            .send()
            .await
            .expect("GET");
        response.bytes().await.expect("body").to_vec()
    }

    /// Tasks in a `/master/state` or `/v2/apps` value.
    fn count_tasks(v: &serde_json::Value) -> usize {
        let list = |v: &serde_json::Value, key: &str| {
            v.get(key)
                .and_then(serde_json::Value::as_array)
                .map(Vec::len)
                .unwrap_or(0)
        };
        let under = |key: &str| {
            v.get(key)
                .and_then(serde_json::Value::as_array)
                .map(|items| items.iter().map(|i| list(i, "tasks")).sum::<usize>())
                .unwrap_or(0)
        };
        under("frameworks") + under("apps")
    }
}
