//! Peak RSS of a real `groupd` holding the largest view: the file source
//! reads a Marathon `/v2/apps?embed=apps.tasks` document of the whole
//! cluster, inside a scratch namespace with 250 routed task interfaces (so
//! the daemon also holds 250 local endpoints and their address pairs).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::full::LOCAL;
use super::Scratch;
use crate::common::netns::ScratchNs;
use crate::common::stats::fmt_s;
use crate::common::{cluster, pass, Rows};

const GROUPD: &str = env!("CARGO_BIN_EXE_groupd");
const GROUPCTL: &str = env!("CARGO_BIN_EXE_groupctl");
const TARGET_RSS_MB: f64 = 40.0;
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// veth-b<i> (peer vp-b<i> in the same namespace) with a /32 route to task i:
/// what a routed (Calico-style) agent looks like to groupd's binding.
fn task_interfaces(ns: &ScratchNs, dir: &Path) {
    let mut batch = String::new();
    for t in 0..LOCAL {
        let (i, ip) = (t + 1, cluster::task_ip(t));
        let _ = writeln!(batch, "link add veth-b{i} type veth peer name vp-b{i}");
        let _ = writeln!(batch, "link set veth-b{i} up");
        let _ = writeln!(batch, "link set vp-b{i} up");
        let _ = writeln!(batch, "route add {ip}/32 dev veth-b{i} scope link");
    }
    let path = dir.join("links.batch");
    std::fs::write(&path, batch).expect("write ip batch");
    ns.ip(&["-batch", path.to_str().expect("utf-8 path")]);
}

fn status(socket: &Path) -> Option<serde_json::Value> {
    let out = Command::new(GROUPCTL)
        .args(["--socket", socket.to_str()?, "--json", "status"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn proc_kb(pid: u32, key: &str) -> f64 {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} missing in /proc/{pid}/status"))
}

/// Kills the daemon when the measurement ends, however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM first: groupd exits cleanly (its rules stay, the namespace goes).
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Read-backs of the kernel table during the measurement: the daemon's
/// periodic drift check (every `verify_interval`, 10 s by default) reads all
/// 41k elements back, so its memory belongs in the peak.
const VERIFY_INTERVAL_S: f64 = 2.0;
/// How long the peak is watched after the daemon is in sync: past two
/// read-backs, the file source's re-looks within its racy window and the
/// persisting of the view.
const SETTLE: Duration = Duration::from_secs(5);

/// Rewrites of the document while the daemon runs (each moves one task to
/// another group: one transaction), as a tool that refreshes the file does.
const REWRITES: usize = 4;

/// What one daemon run showed.
struct Run {
    ready: f64,
    in_sync_rss: f64,
    hwm: f64,
    settled: f64,
    apply_ms: f64,
    ifaces: u64,
    /// After the rewrites, if any: VmHWM and VmRSS.
    rewritten: Option<(f64, f64)>,
}

/// Replace the document at `doc` (write a temporary file, rename it over)
/// with task 0 moved from g0 to another group, `i` choosing which.
fn rewrite(doc: &Path, g: usize, i: usize) {
    let text = cluster::marathon_doc(g).replacen("\"g0\"", &format!("\"g{}\"", g - 1 - i), 1);
    let tmp = doc.with_extension("json.new");
    std::fs::write(&tmp, text).expect("write the rewritten document");
    std::fs::rename(&tmp, doc).expect("rename the rewritten document");
}

/// Start groupd with `config`, wait until it reports `n` tasks, watch it for
/// [`SETTLE`], stop it (SIGTERM: it keeps its persisted view).
fn measure(
    ns: &ScratchNs,
    dir: &Path,
    config: &Path,
    socket: &Path,
    n: usize,
    rewrites: Option<(&Path, usize)>,
) -> Run {
    let log = std::fs::File::create(dir.join("groupd.log")).expect("create log");
    let started = Instant::now();
    let config = config.to_path_buf();
    let child = ns.run(move || {
        Command::new(GROUPD)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start groupd")
    });
    let daemon = Daemon(child);
    let pid = daemon.0.id();
    let st = loop {
        if let Some(v) = status(socket) {
            if v["tasks"].as_u64() == Some(n as u64) && v["health"]["source_state"] == "in-sync" {
                break v;
            }
        }
        let log = std::fs::read_to_string(dir.join("groupd.log")).unwrap_or_default();
        assert!(
            started.elapsed() < STARTUP_TIMEOUT,
            "groupd did not report {n} tasks within {STARTUP_TIMEOUT:?}; its log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let ready = started.elapsed().as_secs_f64();
    let in_sync_rss = proc_kb(pid, "VmRSS:") / 1024.0;
    std::thread::sleep(SETTLE);
    let mut run = Run {
        ready,
        in_sync_rss,
        hwm: proc_kb(pid, "VmHWM:") / 1024.0,
        settled: proc_kb(pid, "VmRSS:") / 1024.0,
        apply_ms: st["health"]["last_apply_ms"].as_f64().unwrap_or(f64::NAN),
        ifaces: st["task_interfaces"].as_u64().unwrap_or(0),
        rewritten: None,
    };
    if let Some((doc, g)) = rewrites {
        let transactions = || {
            status(socket)
                .and_then(|v| v["health"]["transactions"].as_u64())
                .unwrap_or(0)
        };
        for i in 0..REWRITES {
            let before = transactions();
            rewrite(doc, g, i);
            let asked = Instant::now();
            while transactions() <= before {
                assert!(
                    asked.elapsed() < STARTUP_TIMEOUT,
                    "rewrite {i} of the document was not applied"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        run.rewritten = Some((
            proc_kb(pid, "VmHWM:") / 1024.0,
            proc_kb(pid, "VmRSS:") / 1024.0,
        ));
    }
    drop(daemon);
    run
}

pub fn run(g: usize, scratch: &Scratch, rows: &mut Rows) {
    let n = cluster::task_count(g);
    eprintln!("[apply] G={g}: peak RSS of groupd holding {n} tasks");
    let dir = scratch.dir.join("rss");
    std::fs::create_dir_all(&dir).expect("create rss dir");
    let ns = ScratchNs::new("rss");
    task_interfaces(&ns, &dir);
    let doc = dir.join("apps.json");
    std::fs::write(&doc, cluster::marathon_doc(g)).expect("write marathon document");
    let socket = dir.join("groupd.sock");
    let config = dir.join("groupd.toml");
    // GROUPD_BENCH_TABLE_GUARD=notify: the mode that keeps the compiled
    // tables for tamper repairs (owner, the default where the kernel can,
    // keeps nothing).
    let guard = std::env::var("GROUPD_BENCH_TABLE_GUARD").unwrap_or_else(|_| "auto".into());
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"file\"\npath = {:?}\n[interfaces]\nmatch = [\"veth*\"]\n\
             [daemon]\nsocket = {:?}\nstate_dir = {:?}\nverify_interval = {VERIFY_INTERVAL_S:?}\n\
             table_guard = {guard:?}\n[metrics]\nlisten = \"\"\n",
            doc,
            socket,
            dir.join("state")
        ),
    )
    .expect("write config");
    let first = measure(&ns, &dir, &config, &socket, n, None);
    rows.row([
        &format!(
            "groupd peak RSS (VmHWM), G={g}: {n} tasks, {} task interfaces, file source, table_guard = {guard}; first start, watched {}s after it is in sync ({} periodic read-backs of the table)",
            first.ifaces,
            SETTLE.as_secs(),
            (SETTLE.as_secs_f64() / VERIFY_INTERVAL_S) as u32
        ),
        &format!(
            "{:.1} MB (VmRSS {:.1} MB when in sync, {:.1} MB at the end)",
            first.hwm, first.in_sync_rss, first.settled
        ),
        &format!(
            "start to in sync {}; its last apply {:.0} ms",
            fmt_s(first.ready),
            first.apply_ms
        ),
        "",
        &format!("< {TARGET_RSS_MB} MB"),
        pass(first.hwm < TARGET_RSS_MB),
    ]);
    // A restart: the persisted view is enforced at once, then replaced by
    // the file's snapshot (two views exist for a moment).
    let again = measure(&ns, &dir, &config, &socket, n, Some((&doc, g)));
    rows.row([
        &format!("… the same after a restart (persisted view loaded first), G={g}"),
        &format!(
            "{:.1} MB (VmRSS {:.1} MB at the end)",
            again.hwm, again.settled
        ),
        &format!("start to in sync {}", fmt_s(again.ready)),
        "",
        "",
        "",
    ]);
    if let Some((hwm, rss)) = again.rewritten {
        rows.row([
            &format!(
                "… then {REWRITES} rewrites of the document (one task changes groups each time; the new view is built while the old one is enforced), G={g}"
            ),
            &format!("{hwm:.1} MB (VmRSS {rss:.1} MB 1 s after the last)"),
            "",
            "",
            "",
            "",
        ]);
    }
}
