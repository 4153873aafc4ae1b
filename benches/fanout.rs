//! Fan-out benchmark (not a test; root): how much the master spends when
//! N agents follow it through etcd (`groupd publish` + `kind = "etcd"`)
//! versus N direct subscriptions, and how fast an event reaches every
//! agent through etcd.
//!
//! Everything runs inside one scratch network namespace on its loopback:
//! one etcd member, the simulated Mesos master with T running tasks, one
//! `groupd publish`, R real `groupd` agents (`kind = "etcd"`, a table of
//! their own each) and N - R lightweight watchers (one etcd connection and
//! one watch each, in this process).
//!
//! 1. Master cost via etcd: bytes the master sends (counted by a proxy in
//!    front of it) and the CPU time of its threads, for the initial
//!    snapshot and for E events, whatever N.
//! 2. Master cost with direct subscriptions: D SUBSCRIBE streams (raw
//!    readers, no parsing; D = 10 by default): the snapshot each, and the
//!    same E events.
//! 3. Event -> every agent's view: a task launched on the master -> the
//!    moment the last of the N agents holds it (real agents: the revision
//!    their `groupctl status` reports, polled every 5 ms; watchers: the
//!    watch event); p50/p99 over E events sent one at a time.
//! 4. Reconnect storm: the watchers' connections are cut, C changes made,
//!    then all N - R watchers reconnect at once and resume from their
//!    revision: bytes etcd sends them; versus one full range read of the
//!    prefix (bytes, measured once) times N - R.
//!
//! Env: GROUPD_BENCH_FANOUT_TASKS (100000), GROUPD_BENCH_FANOUT_N
//! ("10,100,1000"), GROUPD_BENCH_FANOUT_REAL (10), GROUPD_BENCH_EVENTS
//! (100), GROUPD_BENCH_FANOUT_DIRECT ("10"), GROUPD_BENCH_FANOUT_VERIFY
//! (the agents' verify_interval), GROUPD_BENCH_ROWS; the results also go to
//! benches/results/fanout.md when GROUPD_BENCH_FANOUT_MD names it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::groupd::Scratch;
use common::netns::ScratchNs;
use common::stats::summary;
use common::{is_root, pass, Rows};
use groupd_sim::mesos::{MesosHandle, MesosOptions, MesosSim, NetworkSpec, TaskSpec};

const GROUPD: &str = env!("CARGO_BIN_EXE_groupd");
const PREFIX: &str = "/groupd/v1";
const TARGET_P99: f64 = 0.100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !is_root() {
        eprintln!(
            "fanout: skipped: needs root (it creates a network namespace); run `sudo make bench`"
        );
        return;
    }
    raise_fd_limit();
    let smoke = cfg!(debug_assertions);
    let cfg = Settings {
        tasks: if smoke {
            2_000
        } else {
            env_usize("GROUPD_BENCH_FANOUT_TASKS", 100_000)
        },
        ns: if smoke {
            vec![4]
        } else {
            std::env::var("GROUPD_BENCH_FANOUT_N")
                .unwrap_or_else(|_| "10,100,1000".into())
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        },
        real: if smoke {
            2
        } else {
            env_usize("GROUPD_BENCH_FANOUT_REAL", 10)
        },
        events: if smoke {
            10
        } else {
            env_usize("GROUPD_BENCH_EVENTS", 100)
        },
        // A direct subscriber costs the master a whole snapshot (about
        // 100 MiB and seconds of CPU at 100,000 tasks): 10 by default.
        direct: if smoke {
            vec![2]
        } else {
            std::env::var("GROUPD_BENCH_FANOUT_DIRECT")
                .unwrap_or_else(|_| "10".into())
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        },
    };
    let ns = ScratchNs::new("fanout");
    let scratch = Scratch::new("fanout");
    let dir = scratch.0.clone();
    let lines = ns.run(move || run(cfg, &dir));
    let mut rows = Rows::open();
    for l in &lines.rows {
        rows.row(std::array::from_fn(|i| l[i].as_str()));
    }
    if let Some(md) = std::env::var_os("GROUPD_BENCH_FANOUT_MD") {
        std::fs::write(&md, &lines.markdown).expect("write fanout.md");
        eprintln!("fanout: written to {}", md.to_string_lossy());
    }
    println!("{}", lines.markdown);
}

struct Settings {
    tasks: usize,
    ns: Vec<usize>,
    real: usize,
    events: usize,
    direct: Vec<usize>,
}

struct Output {
    rows: Vec<[String; 6]>,
    markdown: String,
}

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// The cluster's tasks are IPv6-only (fd00:233::/64 has room for them all);
/// the tasks launched as measured events get an IPv4 address of their own
/// from 10.233.240.0/20 too, which the kernel notifications are matched on.
fn ip(i: usize) -> IpAddr {
    IpAddr::V6(std::net::Ipv6Addr::new(
        0xfd00,
        0x233,
        0,
        0,
        0,
        1,
        (i >> 16) as u16,
        (i & 0xffff) as u16,
    ))
}

fn event_ip(e: usize) -> Ipv4Addr {
    let n = 240 * 256 + (e % 4000) + 1;
    Ipv4Addr::new(10, 233, (n / 256) as u8, (n % 256) as u8)
}

/// Base tasks are numbered below `first_event`; event `i - first_event`
/// above it.
static FIRST_EVENT: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(usize::MAX);

fn spec(i: usize) -> TaskSpec {
    let first = FIRST_EVENT.load(Ordering::SeqCst);
    let mut ips = vec![ip(i)];
    if i >= first {
        ips.push(IpAddr::V4(event_ip(i - first)));
    }
    TaskSpec {
        id: format!("app{}.t{i}", i % 500),
        agent: format!("agent{}", i % 1000),
        network_infos: vec![NetworkSpec {
            name: Some("dcos".into()),
            groups: vec![format!("g{}", i % 1000)],
            ip_addresses: ips,
            ..NetworkSpec::default()
        }],
        ..TaskSpec::default()
    }
}

/// CPU seconds of this process's threads named `mesos-sim` (the master).
fn master_cpu() -> f64 {
    let ticks = {
        // SAFETY: sysconf has no preconditions.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            t as f64
        } else {
            100.0
        }
    };
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|s| s.contains("(mesos-sim)"))
        .filter_map(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .sum()
}

// ---------------------------------------------------------------------------
// A byte-counting TCP proxy that can cut its connections.

struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    /// Bytes from the upstream to the clients.
    down: Arc<AtomicU64>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicU64::new(0));
        let (c, k, d) = (cut.clone(), conns.clone(), down.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                if let Ok(mut list) = k.lock() {
                    list.extend(inbound.try_clone());
                    list.extend(outbound.try_clone());
                }
                for (from, to, count) in [
                    (inbound.try_clone(), outbound.try_clone(), None),
                    (outbound.try_clone(), inbound.try_clone(), Some(d.clone())),
                ] {
                    let (Ok(mut from), Ok(mut to)) = (from, to) else {
                        continue;
                    };
                    std::thread::Builder::new()
                        .stack_size(64 * 1024)
                        .spawn(move || {
                            let mut buf = vec![0u8; 32 * 1024];
                            while let Ok(n) = from.read(&mut buf) {
                                if n == 0 {
                                    break;
                                }
                                if let Some(c) = &count {
                                    c.fetch_add(n as u64, Ordering::Relaxed);
                                }
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                            let _ = to.shutdown(Shutdown::Both);
                        })
                        .expect("proxy thread");
                }
            }
        });
        Proxy {
            addr,
            cut,
            conns,
            down,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn bytes(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().expect("lock").drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// Processes

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn start_etcd(dir: &Path) -> (Proc, SocketAddr) {
    let client = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let peer = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log");
    let child = Command::new("etcd")
        .args(["--name", "m0", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &format!("http://{client}")])
        .args(["--advertise-client-urls", &format!("http://{client}")])
        .args(["--listen-peer-urls", &format!("http://{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
        .args(["--initial-cluster", &format!("m0=http://{peer}")])
        .args(["--logger", "zap", "--log-level", "warn"])
        .args(["--quota-backend-bytes", "8589934592"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start etcd (apt-get install etcd-server)");
    let started = Instant::now();
    while TcpStream::connect(client).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "etcd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (Proc(child), client)
}

fn wait_log(path: &Path, needle: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.contains(needle) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{} has no {needle:?} after {within:?}:\n{}",
            path.display(),
            &log[log.len().saturating_sub(3000)..]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real groupd agent reading etcd: its process and status socket.
struct Agent {
    _proc: Proc,
}

impl Agent {
    fn start(dir: &Path, i: usize, etcd: &str) -> Agent {
        let d = dir.join(format!("agent{i}"));
        std::fs::create_dir_all(&d).expect("agent dir");
        let socket = d.join("groupd.sock");
        let config = d.join("groupd.toml");
        // GROUPD_BENCH_FANOUT_VERIFY: the agents' verify_interval (default
        // groupd's own, 10 s; its read-back of a 100,000-element table is
        // what the tail of the real agents' latency meets).
        let verify = std::env::var("GROUPD_BENCH_FANOUT_VERIFY")
            .map(|v| format!("verify_interval = {v}\n"))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "[source]\nkind = \"etcd\"\nurls = [{etcd:?}]\n[interfaces]\nmatch = [\"veth*\"]\n\
                 [daemon]\nsocket = {socket:?}\nstate_dir = {:?}\ntable = \"gdfan{i}\"\n{verify}\
                 [metrics]\nlisten = \"\"\n",
                d.join("state")
            ),
        )
        .expect("config");
        let log = std::fs::File::create(d.join("groupd.log")).expect("log");
        let child = Command::new(GROUPD)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start groupd");
        Agent { _proc: Proc(child) }
    }
}

// ---------------------------------------------------------------------------
// Lightweight watchers: one etcd connection and one watch each.

struct Watchers {
    /// Per watcher: the newest revision it has seen.
    seen: Arc<Vec<AtomicI64>>,
    /// Per watcher: when it saw it (nanoseconds after `base`).
    at: Arc<Vec<AtomicU64>>,
    base: Instant,
    runtime: tokio::runtime::Runtime,
}

impl Watchers {
    fn start(n: usize, url: String, from: i64) -> Watchers {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let seen: Arc<Vec<AtomicI64>> =
            Arc::new((0..n).map(|_| AtomicI64::new(from - 1)).collect());
        let at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let base = Instant::now();
        for i in 0..n {
            let (seen, at, url) = (seen.clone(), at.clone(), url.clone());
            runtime.spawn(async move {
                loop {
                    let Ok(mut client) = etcd_client::Client::connect([url.as_str()], None).await
                    else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    // Resume from the revision after the last one seen.
                    let start = seen[i].load(Ordering::SeqCst) + 1;
                    let options = etcd_client::WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(start);
                    let Ok(mut stream) = client.watch(format!("{PREFIX}/"), Some(options)).await
                    else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    while let Ok(Some(r)) = stream.message().await {
                        if let Some(rev) = r
                            .events()
                            .iter()
                            .filter_map(|e| e.kv())
                            .map(|kv| kv.mod_revision())
                            .max()
                        {
                            at[i].store(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
                            seen[i].store(rev, Ordering::SeqCst);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
        Watchers {
            seen,
            at,
            base,
            runtime,
        }
    }

    /// When the last watcher received its newest event.
    fn last_at(&self) -> Instant {
        let nanos = self
            .at
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .max()
            .unwrap_or(0);
        self.base + Duration::from_nanos(nanos)
    }

    fn min_seen(&self) -> i64 {
        self.seen
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .min()
            .unwrap_or(i64::MAX)
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        let rt = std::mem::replace(
            &mut self.runtime,
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("rt"),
        );
        rt.shutdown_background();
    }
}

fn etcd_revision(url: &str) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([url], None)
            .await
            .expect("connect");
        c.get("/", None)
            .await
            .expect("get")
            .header()
            .map(|h| h.revision())
            .expect("header")
    })
}

/// Bytes of one full range read of the prefix (the snapshot an agent reads
/// at start, or after a compaction), through `proxy`.
fn full_read_bytes(proxy: &Proxy) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let before = proxy.bytes();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([proxy.url()], None)
            .await
            .expect("connect");
        let mut kv = c.kv_client().max_decoding_message_size(1 << 30);
        let r = kv
            .get(
                format!("{PREFIX}/"),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .expect("range");
        let _ = c.status().await;
        r.kvs().len()
    });
    proxy.bytes() - before
}

// ---------------------------------------------------------------------------
// Direct subscriptions: raw SUBSCRIBE readers, bytes discarded.

fn direct_subscribers(
    n: usize,
    to: SocketAddr,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    let Ok(mut s) = TcpStream::connect(to) else { return };
                    let body = br#"{"type":"SUBSCRIBE"}"#;
                    let head = format!(
                        "POST /api/v1 HTTP/1.1\r\nHost: {to}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    if s.write_all(head.as_bytes()).and_then(|_| s.write_all(body)).is_err() {
                        return;
                    }
                    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                    let mut buf = vec![0u8; 64 * 1024];
                    while !stop.load(Ordering::SeqCst) {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                            Err(_) => break,
                        }
                    }
                })
                .expect("subscriber thread")
        })
        .collect()
}

// ---------------------------------------------------------------------------

fn mib(b: u64) -> String {
    match b {
        0..=9_999 => format!("{b} B"),
        10_000..=9_999_999 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
    }
}

fn run(cfg: Settings, dir: &Path) -> Output {
    let mut md = String::new();
    let mut rows: Vec<[String; 6]> = Vec::new();
    let (_etcd, etcd_addr) = start_etcd(dir);
    let etcd_url = format!("http://{etcd_addr}");
    let master: MesosHandle = MesosSim::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        MesosOptions {
            heartbeat: Duration::from_secs(15),
            stream_buffer: 1 << 20,
            ..MesosOptions::default()
        },
    )
    .expect("sim master");
    let t = Instant::now();
    for i in 0..cfg.tasks {
        master.launch_task(spec(i)).expect("launch");
    }
    eprintln!(
        "fanout: {} tasks on the master in {:?}",
        cfg.tasks,
        t.elapsed()
    );

    // The publisher reads the master through a counting proxy.
    let master_proxy = Proxy::start(master.addr());
    let (cpu0, bytes0) = (master_cpu(), master_proxy.bytes());
    let config = dir.join("publish.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"mesos\"\nurls = [{:?}]\n[publish]\netcd_urls = [{etcd_url:?}]\nprefix = {PREFIX:?}\nidentity = \"bench\"\n",
            master_proxy.url()
        ),
    )
    .expect("publish config");
    let publish_log = dir.join("publish.log");
    let _publisher = Proc(
        Command::new(GROUPD)
            .arg("--config")
            .arg(&config)
            .arg("publish")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&publish_log).expect("log"))
            .spawn()
            .expect("start groupd publish"),
    );
    let took = wait_log(&publish_log, "etcd now equals", Duration::from_secs(600));
    let (snap_cpu, snap_bytes) = (master_cpu() - cpu0, master_proxy.bytes() - bytes0);
    let etcd_snapshot_bytes = snap_bytes;
    eprintln!(
        "fanout: publisher filled etcd in {took:?}; master sent {} for it, {snap_cpu:.2} s CPU",
        mib(snap_bytes)
    );

    // Real agents, then watchers up to each N.
    let agents: Vec<Agent> = (0..cfg.real)
        .map(|i| Agent::start(dir, i, &etcd_url))
        .collect();
    for i in 0..cfg.real {
        wait_log(
            &dir.join(format!("agent{i}/groupd.log")),
            "etcd source: watching",
            Duration::from_secs(600),
        );
    }
    let watcher_proxy = Proxy::start(etcd_addr);
    let full_read = full_read_bytes(&watcher_proxy);
    eprintln!(
        "fanout: one full range read of {} tasks: {}",
        cfg.tasks,
        mib(full_read)
    );

    let _ = writeln_md(&mut md, "# fan-out through etcd\n");
    let _ = writeln_md(
        &mut md,
        &format!(
            "{} tasks on the simulated Mesos master, one etcd member, one `groupd publish`, {} real groupd agents + lightweight watchers (one connection and one watch each) up to N. {} events (task launches) sent one at a time. `benches/run.sh fanout` (root); {}.\n",
            cfg.tasks,
            cfg.real,
            cfg.events,
            host_line()
        ),
    );
    let _ = writeln_md(&mut md, &format!("Publisher's initial fill: the master sent {} (its SUBSCRIBE snapshot) and spent {snap_cpu:.2} s CPU, once, whatever N; etcd filled in {:.1} s.\n", mib(snap_bytes), took.as_secs_f64()));
    let _ = writeln_md(
        &mut md,
        "| N agents | master bytes for the events | master CPU for the events | event -> every agent p50 | p99 | target p99 <= 100 ms |\n|---|---|---|---|---|---|",
    );

    let mut reader = Reader::new(&etcd_url);
    let mut next = cfg.tasks;
    FIRST_EVENT.store(next, Ordering::SeqCst);
    // Every real agent's table commits each event's IPv4 address to its
    // endpoints4 set: the R-th notification is the last agent's commit.
    let mut nft = common::nlwatch::NftWatch::start_here("endpoints4");
    let mut watchers: Option<Watchers> = None;
    let mut per_event_bytes_etcd = 0.0;
    let mut detail: Vec<String> = Vec::new();
    for &n in &cfg.ns {
        let light = n.saturating_sub(cfg.real);
        drop(watchers.take());
        let from = etcd_revision(&etcd_url) + 1;
        // Straight to etcd: the proxy (two copying threads per connection)
        // is for the reconnect storm only.
        let w = Watchers::start(light, etcd_url.clone(), from);
        std::thread::sleep(Duration::from_millis(500 + light as u64 * 2));
        let (cpu0, bytes0) = (master_cpu(), master_proxy.bytes());
        let mut latencies = Vec::new();
        let (mut real_lat, mut light_lat) = (Vec::new(), Vec::new());
        for _ in 0..cfg.events {
            let sent = Instant::now();
            master.launch_task(spec(next)).expect("launch");
            let v4 = event_ip(next - cfg.tasks);
            let target = reader.written(next);
            next += 1;
            let real_at = if agents.is_empty() {
                sent
            } else {
                nft.wait_for_n(v4, agents.len(), Duration::from_secs(60))
                    .unwrap_or_else(|| panic!("{v4} did not reach every real agent's table"))
            };
            let started = Instant::now();
            while w.min_seen() < target {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "watchers stuck below {target}"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let light_at = if light == 0 { sent } else { w.last_at() };
            let r = real_at.saturating_duration_since(sent).as_secs_f64();
            let l = light_at.saturating_duration_since(sent).as_secs_f64();
            real_lat.push(r);
            light_lat.push(l);
            latencies.push(r.max(l));
            std::thread::sleep(Duration::from_millis(20));
        }
        let (sr, sl) = (summary(&real_lat), summary(&light_lat));
        detail.push(format!(
            "| {n} | {:.1} / {:.1} ms | {:.1} / {:.1} ms |",
            sr.median * 1e3,
            sr.p99 * 1e3,
            sl.median * 1e3,
            sl.p99 * 1e3
        ));
        let (cpu, bytes) = (master_cpu() - cpu0, master_proxy.bytes() - bytes0);
        per_event_bytes_etcd = bytes as f64 / cfg.events as f64;
        let s = summary(&latencies);
        let ok = s.p99 <= TARGET_P99;
        let _ = writeln_md(
            &mut md,
            &format!(
                "| {n} | {} | {:.3} s | {:.1} ms | {:.1} ms | {} |",
                mib(bytes),
                cpu,
                s.median * 1e3,
                s.p99 * 1e3,
                pass(ok)
            ),
        );
        rows.push([
            format!("fanout: event -> all {n} agents via etcd p50 / p99"),
            format!("{:.1} / {:.1} ms", s.median * 1e3, s.p99 * 1e3),
            String::new(),
            String::new(),
            "p99 <= 100 ms".into(),
            pass(ok).into(),
        ]);
        watchers = Some(w);
    }

    let _ = writeln_md(
        &mut md,
        &format!(
            "\nThe same, split: master -> the {} real groupd (the event's element committed in each agent's table, from nf_tables notifications) and master -> the lightweight watchers (the watch event received):\n\n| N | real groupd p50 / p99 | watchers p50 / p99 |\n|---|---|---|\n{}",
            cfg.real,
            detail.join("\n")
        ),
    );

    // Direct subscriptions: every agent streams from the master itself.
    let _ = writeln_md(
        &mut md,
        "\nDirect subscriptions (each agent its own SUBSCRIBE stream to the master; raw readers that discard the bytes):\n\n| D subscribers | master bytes: snapshots | master CPU: snapshots | master bytes for the events | master CPU for the events |\n|---|---|---|---|---|",
    );
    let direct_proxy = Proxy::start(master.addr());
    let mut per_sub_snapshot = 0.0;
    for &d in &cfg.direct {
        let stop = Arc::new(AtomicBool::new(false));
        let (cpu0, bytes0) = (master_cpu(), direct_proxy.bytes());
        let threads = direct_subscribers(d, direct_proxy.addr, stop.clone());
        // Until every subscriber has its snapshot (the publisher's told
        // its size), then until the byte count settles.
        let want = bytes0 + (etcd_snapshot_bytes as f64 * d as f64 * 0.99) as u64;
        let started = Instant::now();
        while direct_proxy.bytes() < want && started.elapsed() < Duration::from_secs(600) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut last = 0;
        while direct_proxy.bytes() != last {
            last = direct_proxy.bytes();
            std::thread::sleep(Duration::from_millis(500));
        }
        let (snap_cpu, snap_bytes) = (master_cpu() - cpu0, direct_proxy.bytes() - bytes0);
        per_sub_snapshot = snap_bytes as f64 / d as f64;
        let (cpu1, bytes1) = (master_cpu(), direct_proxy.bytes());
        for _ in 0..cfg.events {
            master.launch_task(spec(next)).expect("launch");
            next += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(1000));
        let (ev_cpu, ev_bytes) = (master_cpu() - cpu1, direct_proxy.bytes() - bytes1);
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            let _ = t.join();
        }
        let _ = writeln_md(
            &mut md,
            &format!(
                "| {d} | {} | {snap_cpu:.2} s | {} | {ev_cpu:.3} s |",
                mib(snap_bytes),
                mib(ev_bytes)
            ),
        );
        rows.push([
            format!(
                "fanout: master bytes, {d} direct subscriptions (groupd column) vs any N via etcd (comparison), snapshot + {} events",
                cfg.events
            ),
            mib(snap_bytes + ev_bytes),
            mib(etcd_snapshot_bytes + snap_bytes_with(per_event_bytes_etcd, cfg.events)),
            format!(
                "{:.1}",
                (snap_bytes + ev_bytes) as f64
                    / (etcd_snapshot_bytes + snap_bytes_with(per_event_bytes_etcd, cfg.events)).max(1) as f64
            ),
            "constant in N via etcd".into(),
            "INFO".into(),
        ]);
    }
    let _ = writeln_md(
        &mut md,
        &format!(
            "\nA direct subscription costs the master one snapshot ({}) per agent at every (re)subscription, and every event once per agent: linear in N (1,000 agents: {} of snapshots, extrapolated). Through etcd the master serves one stream per publisher whatever N.\n",
            mib(per_sub_snapshot as u64),
            mib((per_sub_snapshot * 1000.0) as u64)
        ),
    );

    // Reconnect storm: the largest set of watchers again, through the
    // proxy; every connection cut, changes made, all reconnect at once.
    let storm = watchers.take().map(|w| w.seen.len()).unwrap_or(0);
    if storm > 0 {
        let w = &Watchers::start(storm, watcher_proxy.url(), etcd_revision(&etcd_url) + 1);
        std::thread::sleep(Duration::from_millis(500 + storm as u64 * 3));
        let light = storm;
        watcher_proxy.cut();
        std::thread::sleep(Duration::from_millis(500));
        for _ in 0..20 {
            master.launch_task(spec(next)).expect("launch");
            next += 1;
        }
        std::thread::sleep(Duration::from_millis(1000));
        let target = etcd_revision(&etcd_url);
        let before = watcher_proxy.bytes();
        let started = Instant::now();
        watcher_proxy.restore();
        while w.min_seen() < target {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "watchers did not catch up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = started.elapsed();
        let resumed = watcher_proxy.bytes() - before;
        let _ = writeln_md(
            &mut md,
            &format!(
                "Reconnect storm: {light} watchers cut off while the master made 20 changes, then all reconnect at once and resume from their revision: etcd sent {} in all ({} per agent), all caught up in {:.2} s. A full range read instead costs {} per agent: {} for {light} agents ({}x more).\n",
                mib(resumed),
                human_bytes(resumed as f64 / light.max(1) as f64),
                took.as_secs_f64(),
                mib(full_read),
                mib(full_read * light as u64),
                ((full_read * light as u64) as f64 / resumed.max(1) as f64).round()
            ),
        );
        rows.push([
            format!(
                "fanout: {light} agents reconnect: bytes from etcd, revision resume vs range read"
            ),
            mib(resumed),
            mib(full_read * light as u64),
            format!(
                "{:.5}",
                resumed as f64 / (full_read * light as u64).max(1) as f64
            ),
            "resume << range read".into(),
            pass(resumed < full_read * light as u64).into(),
        ]);
    }
    Output { rows, markdown: md }
}

fn snap_bytes_with(per_event: f64, events: usize) -> u64 {
    (per_event * events as f64) as u64
}

fn human_bytes(b: f64) -> String {
    if b < 10_000.0 {
        format!("{b:.0} B")
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

fn writeln_md(md: &mut String, line: &str) -> std::fmt::Result {
    use std::fmt::Write as _;
    writeln!(md, "{line}")
}

fn host_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cpus} CPUs ({cpu})")
}

/// One etcd connection for the benchmark's own reads.
struct Reader {
    rt: tokio::runtime::Runtime,
    client: etcd_client::Client,
}

impl Reader {
    fn new(url: &str) -> Reader {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let client = rt
            .block_on(etcd_client::Client::connect([url], None))
            .expect("connect");
        Reader { rt, client }
    }

    /// The revision at which task `i`'s key holds it running with its IP
    /// (the publisher wrote the event), waiting for it.
    fn written(&mut self, i: usize) -> i64 {
        let key = groupd::etcd::Keys::new(PREFIX).task(&spec(i).id);
        let want = event_ip(i - FIRST_EVENT.load(Ordering::SeqCst)).to_string();
        let started = Instant::now();
        loop {
            let r = self
                .rt
                .block_on(self.client.get(key.as_str(), None))
                .expect("get");
            if let Some(kv) = r.kvs().first() {
                let v = String::from_utf8_lossy(kv.value());
                if v.contains(&want) && v.contains("Running") {
                    return kv.mod_revision();
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the publisher did not write task {i}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
