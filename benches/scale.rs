//! Scale benchmark (not a test; `make bench` part `scale`): clusters far
//! beyond the one the other benchmarks use, each figure next to its peer in
//! the same run — `nft -f` of ONE flat concatenated set holding the same
//! addresses (`ifname . ipv6_addr`, one element per endpoint).
//!
//! - B: one group of 100,000 members, 100 local endpoints in it, plus 10
//!   local endpoints in small groups.
//! - C: 100,000 groups of 10 plus one group of 100,000 (1.1 M endpoints),
//!   1,000 local endpoints (100 in the big group).
//! - the curve: C scaled to 11 k, 110 k and 1.1 M endpoints (groups of 10
//!   plus a big group a tenth of that; the largest point is C), drawn to
//!   benches/results/scale.png.
//!
//! Endpoints are IPv6 (fd00:233::/64): 10.233.0.0/16, the only IPv4 range
//! the project's tests may use, has 65,536 addresses. A real `groupd` reads
//! the cluster from a Marathon document (file source) in a scratch
//! namespace with one routed veth per local endpoint.
//!
//! Env: GROUPD_SCALE (comma list of b, c, curve; default all),
//! GROUPD_SCALE_CURVE (smaller endpoint counts, default "10000,100000").

mod common;
#[path = "scale/shape.rs"]
mod shape;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::groupd::{config, Groupd, Scratch};
use common::netns::ScratchNs;
use common::procstat::status_mb;
use common::stats::summary;
use common::{is_root, pass, Rows};
use shape::Shape;

/// What one start of groupd on a shape showed.
struct Start {
    enforced_s: f64,
    peer_s: f64,
    hwm_mb: f64,
    steady_mb: f64,
    elements: u64,
    kernel_mb: f64,
}

fn meminfo_kb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Kernel memory that nf_tables sets live in: slab objects (elements, set
/// and rule structures) and vmalloc'd hash tables.
fn kernel_kb() -> f64 {
    meminfo_kb("Slab:") + meminfo_kb("VmallocUsed:")
}

/// `nft -f` of the flat peer set in a namespace of its own.
fn peer_seconds(shape: &Shape, dir: &Path) -> f64 {
    let ns = ScratchNs::new("scalepeer");
    let path = dir.join("peer.nft");
    std::fs::write(&path, shape.nft_flat()).expect("write the peer ruleset");
    let started = Instant::now();
    let out = ns.run(move || {
        Command::new("nft")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("run nft")
    });
    let took = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "nft -f of the peer set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// groupd from nothing to every endpoint in the kernel, with its memory.
fn start(shape: &Shape) -> Start {
    let scratch = Scratch::new(&format!("scale-{}", shape.label()));
    let dir = scratch.0.clone();
    let peer_s = peer_seconds(shape, &dir);
    let ns = ScratchNs::new("scale");
    shape.task_interfaces(&ns, &dir);
    let doc = dir.join("apps.json");
    shape.write_marathon_doc(&doc);
    let text = config(&format!("kind = \"file\"\npath = {doc:?}\n"), &dir);
    let kernel_before = kernel_kb();
    let groupd = Groupd::spawn(&ns, &dir, &text);
    groupd.wait_in_sync(shape.endpoints(), Duration::from_secs(600));
    let enforced_s = groupd.started.elapsed().as_secs_f64();
    let kernel_mb = (kernel_kb() - kernel_before).max(0.0) / 1024.0;
    let elements = groupd
        .status()
        .and_then(|v| v["kernel_elements"].as_u64())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_secs(3));
    let pid = groupd.pid();
    let (hwm_mb, steady_mb) = (
        status_mb(pid, "VmHWM:").unwrap_or(0.0),
        status_mb(pid, "VmRSS:").unwrap_or(0.0),
    );
    drop(groupd);
    Start {
        enforced_s,
        peer_s,
        hwm_mb,
        steady_mb,
        elements,
        kernel_mb,
    }
}

fn rows_for(name: &str, s: &Start, enforced_target: Option<f64>, rss_target: f64, rows: &mut Rows) {
    let ratio = s.enforced_s / s.peer_s;
    let time_ok = ratio <= 1.5 && enforced_target.map_or(true, |t| s.enforced_s <= t);
    let target = match enforced_target {
        Some(t) => format!("<= {t} s and <= 1.5x"),
        None => "<= 1.5x".to_string(),
    };
    rows.row([
        &format!("{name}: start -> enforced"),
        &format!("{:.2} s", s.enforced_s),
        &format!("{:.2} s (nft -f flat set)", s.peer_s),
        &format!("{ratio:.2}x"),
        &target,
        pass(time_ok),
    ]);
    rows.row([
        &format!("{name}: groupd peak RSS (steady)"),
        &format!("{:.1} MB ({:.1} MB)", s.hwm_mb, s.steady_mb),
        "",
        "",
        &format!("<= {rss_target} MB"),
        pass(s.hwm_mb <= rss_target),
    ]);
    rows.row([
        &format!("{name}: kernel elements / kernel memory"),
        &format!("{} / {:.1} MB", s.elements, s.kernel_mb),
        "",
        "",
        "<= 64 MB (B)",
        pass(s.kernel_mb <= 64.0 || !name.starts_with('B')),
    ]);
}

/// A remote member joining and leaving the big group: from the change to
/// the committed transaction, in-process against a scratch namespace.
fn join_leave(shape: &Shape, rows: &mut Rows) {
    const CHANGES: usize = 200;
    let ns = ScratchNs::new("scalejoin");
    let shape = shape.clone();
    let (joins, leaves) = ns.run(move || {
        let mut st = shape.desired_state();
        let (inet, bridge) = st.tables();
        let mut nft = groupd::nft::Nft::open().expect("netlink socket");
        nft.reconcile(&[&inet, &bridge]).expect("first apply");
        drop((inet, bridge));
        let _ = st.take_delta();
        let table = st.policy().table.clone();
        let mut commit = |st: &mut groupd::state::DesiredState| {
            let d = st.take_delta();
            nft.apply_elements(&table, &d.del, &d.add, groupd::compile::wide::data_len)
                .expect("apply");
        };
        let (mut joins, mut leaves) = (Vec::new(), Vec::new());
        for i in 0..CHANGES {
            let t = shape.extra_big_member(i);
            let id = t.id.to_string();
            let started = Instant::now();
            st.upsert_task(t);
            commit(&mut st);
            joins.push(started.elapsed().as_secs_f64() * 1000.0);
            let started = Instant::now();
            st.remove_task(&id);
            commit(&mut st);
            leaves.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        (joins, leaves)
    });
    for (what, v) in [("joins", joins), ("leaves", leaves)] {
        let s = summary(&v);
        let p50 = s.median;
        rows.row([
            &format!("B: a member {what} the big group -> committed (p50 / p99)"),
            &format!("{p50:.3} / {:.3} ms", s.p99),
            "",
            "",
            "p50 <= 0.2 ms",
            pass(p50 <= 0.2),
        ]);
    }
}

fn main() {
    if !is_root() {
        eprintln!(
            "scale: skipped: needs root (it creates network namespaces); run `sudo make bench`"
        );
        return;
    }
    let parts = std::env::var("GROUPD_SCALE").unwrap_or_else(|_| "b,c,curve".into());
    let want = |p: &str| parts.split(',').any(|x| x.trim() == p);
    let mut rows = Rows::open();
    if want("b") {
        let b = Shape::b();
        let s = start(&b);
        rows_for("B (100k group, 110 local)", &s, None, 64.0, &mut rows);
        join_leave(&b, &mut rows);
    }
    // The curve: C scaled; its largest point is C itself (measured once).
    let mut points: Vec<(usize, Start)> = Vec::new();
    if want("curve") {
        let sizes: Vec<usize> = std::env::var("GROUPD_SCALE_CURVE")
            .unwrap_or_else(|_| "10000,100000".into())
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        for n in sizes {
            let shape = Shape::c(n / 10);
            let s = start(&shape);
            rows_for(
                &format!("curve N={}", shape.endpoints()),
                &s,
                None,
                200.0,
                &mut rows,
            );
            points.push((shape.endpoints(), s));
        }
    }
    if want("c") {
        let shape = Shape::c(100_000);
        let s = start(&shape);
        rows_for(
            "C (1.1M endpoints, 1,000 local)",
            &s,
            Some(5.0),
            200.0,
            &mut rows,
        );
        points.push((shape.endpoints(), s));
    }
    if want("curve") {
        let mut csv =
            String::from("endpoints,enforced_s,peer_s,peak_rss_mb,kernel_elements,kernel_mb\n");
        for (n, s) in &points {
            csv.push_str(&format!(
                "{n},{:.3},{:.3},{:.1},{},{:.1}\n",
                s.enforced_s, s.peer_s, s.hwm_mb, s.elements, s.kernel_mb
            ));
        }
        shape::write_curve(&csv);
    }
}
