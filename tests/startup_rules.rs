//! The daemon's start-up and failure rules against the in-memory kernel
//! (no root): the kernel is changed only by a view at least as new as the
//! table it holds, in every combination of
//! {table in the kernel: none, stamped, unstamped}
//! x {persisted view: absent, as new, newer, stale, corrupt, legacy}
//! x {source: answers, answers garbage, never answers};
//! a failed delta falls back to a full reconcile; the watchdog is fed only
//! while programming the kernel works.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use groupd::config::Config;
use groupd::daemon::{Daemon, Startup};
use groupd::model::{ClusterView, Task};
use groupd::nft::{FakeKernel, Nft};
use groupd::ruleset::{Element, Family, Table};
use groupd::source::SourceUpdate;
use groupd::view_store::ViewStore;

const TABLE: &str = "groupd";

fn config(state_dir: &Path) -> Config {
    Config::parse(&format!(
        "[source]\nkind = \"file\"\npath = \"/nonexistent/cluster.json\"\n[daemon]\nstate_dir = \"{}\"\n",
        state_dir.display()
    ))
    .expect("config")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("groupd-startup-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn task(id: &str, ip: &str, groups: &[&str]) -> Task {
    Task::running(id, "/app", [ip.parse().expect("ip")], groups)
}

fn view(tasks: &[Task]) -> ClusterView {
    let mut v = ClusterView::default();
    for t in tasks {
        v.insert(t.clone());
    }
    v
}

/// What the operator last enforced (the kernel's table after a re-group).
fn current() -> ClusterView {
    view(&[
        task("a", "10.233.0.1", &["star-1"]),
        task("c", "10.233.0.3", &["star-2"]),
    ])
}

/// An older view: "b" still held 10.233.0.2 and "c" did not exist.
fn older() -> ClusterView {
    view(&[
        task("a", "10.233.0.1", &["star-1"]),
        task("b", "10.233.0.2", &["star-1"]),
    ])
}

/// What the source answers after the restart.
fn answered() -> ClusterView {
    view(&[
        task("a", "10.233.0.1", &["star-1"]),
        task("d", "10.233.0.4", &["star-1"]),
    ])
}

/// Elements of every set of the kernel's inet table.
fn kernel_sets(k: &FakeKernel) -> Option<BTreeMap<String, BTreeSet<Element>>> {
    k.table(Family::Inet, TABLE).map(|t| {
        t.sets
            .iter()
            .map(|(n, s)| (n.clone(), s.elements.clone()))
            .collect()
    })
}

fn table_sets(t: &Table) -> BTreeMap<String, BTreeSet<Element>> {
    t.sets
        .iter()
        .map(|(n, (_, e))| (n.clone(), e.clone()))
        .collect()
}

/// The endpoint addresses the kernel's table holds (sorted text).
fn kernel_endpoints(k: &FakeKernel) -> Vec<String> {
    let Some(t) = k.table(Family::Inet, TABLE) else {
        return vec![];
    };
    let set = &t.sets["endpoints4"];
    set.elements
        .iter()
        .map(|e| {
            let b: [u8; 4] = e.key[..4].try_into().expect("ipv4 key");
            std::net::Ipv4Addr::from(b).to_string()
        })
        .collect()
}

/// A kernel that a previous groupd left behind, and its state_dir: the
/// previous run applied `older()` (snapshot, generation 1), then moved to
/// `current()` by events, each persisted. Returns the kernel and the
/// generation its table is stamped with.
fn previous_run(dir: &Path) -> (FakeKernel, u64) {
    let mut d = Daemon::new(config(dir), Nft::new(FakeKernel::new()));
    assert_eq!(d.start(), Startup::AppliedEmpty);
    d.on_source(SourceUpdate::Snapshot(older()));
    d.on_source(SourceUpdate::Remove("b".into()));
    d.on_source(SourceUpdate::Upsert(task("c", "10.233.0.3", &["star-2"])));
    assert_eq!(
        kernel_endpoints(d.nft().dataplane()),
        ["10.233.0.1", "10.233.0.3"]
    );
    let generation = d.state().generation();
    assert_eq!(generation, 3, "one generation per view change");
    (d.nft().dataplane().clone(), generation)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum KernelCase {
    NoTable,
    Stamped,
    Unstamped,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DiskCase {
    Absent,
    AsNew,
    Newer,
    Stale,
    Corrupt,
    Legacy,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SourceCase {
    Answers,
    Garbage,
    Silent,
}

/// Build the kernel and state_dir of one cell of the matrix.
fn arrange(kernel: KernelCase, disk: DiskCase, dir: &Path) -> FakeKernel {
    let (mut k, generation) = previous_run(dir);
    match kernel {
        KernelCase::NoTable => k = FakeKernel::new(),
        KernelCase::Stamped => {}
        KernelCase::Unstamped => {
            let t = k
                .tables
                .get_mut(&(Family::Inet, TABLE.to_string()))
                .expect("table");
            t.sets.remove("generation");
        }
    }
    let mut store = ViewStore::new(dir);
    match disk {
        // The journal the previous run wrote: as new as the kernel.
        DiskCase::AsNew => {}
        DiskCase::Absent => {
            std::fs::remove_dir_all(dir).expect("lose state_dir");
        }
        DiskCase::Newer => {
            // Killed after persisting a change, before its transaction.
            let newer = view(&[
                task("a", "10.233.0.1", &["star-1"]),
                task("c", "10.233.0.3", &["star-2"]),
                task("e", "10.233.0.5", &["star-2"]),
            ]);
            store
                .write_snapshot(generation + 1, &newer)
                .expect("snapshot");
        }
        DiskCase::Stale => store.write_snapshot(1, &older()).expect("snapshot"),
        DiskCase::Corrupt => {
            store.write_snapshot(1, &older()).expect("snapshot");
            std::fs::write(dir.join("snapshot.json"), b"{\"generation\": 9, \"vi")
                .expect("corrupt");
        }
        DiskCase::Legacy => {
            std::fs::remove_dir_all(dir).expect("lose state_dir");
            std::fs::create_dir_all(dir).expect("dir");
            std::fs::write(
                dir.join("view.json"),
                serde_json::to_vec(&older()).expect("json"),
            )
            .expect("legacy view");
        }
    }
    k
}

/// What the kernel's endpoints must be right after start-up (and for as
/// long as the source does not answer).
fn expected_before_source(kernel: KernelCase, disk: DiskCase) -> (Vec<&'static str>, bool) {
    let kept = ["10.233.0.1", "10.233.0.3"].to_vec();
    let newer = ["10.233.0.1", "10.233.0.3", "10.233.0.5"].to_vec();
    let older = ["10.233.0.1", "10.233.0.2"].to_vec();
    // (endpoints, whether start-up wrote anything)
    match (kernel, disk) {
        (KernelCase::NoTable, DiskCase::Absent | DiskCase::Corrupt) => (vec![], true),
        (KernelCase::NoTable, DiskCase::AsNew) => (kept, true),
        (KernelCase::NoTable, DiskCase::Newer) => (newer, true),
        (KernelCase::NoTable, DiskCase::Stale | DiskCase::Legacy) => (older, true),
        (KernelCase::Stamped, DiskCase::AsNew) => (kept, true),
        (KernelCase::Stamped, DiskCase::Newer) => (newer, true),
        // Everything else over an existing table: kept untouched.
        (KernelCase::Stamped | KernelCase::Unstamped, _) => (kept, false),
    }
}

#[test]
fn start_up_matrix_changes_the_kernel_only_with_a_newer_truth() {
    let kernels = [
        KernelCase::NoTable,
        KernelCase::Stamped,
        KernelCase::Unstamped,
    ];
    let disks = [
        DiskCase::Absent,
        DiskCase::AsNew,
        DiskCase::Newer,
        DiskCase::Stale,
        DiskCase::Corrupt,
        DiskCase::Legacy,
    ];
    let sources = [SourceCase::Answers, SourceCase::Garbage, SourceCase::Silent];
    let mut cells = 0;
    for kernel in kernels {
        for disk in disks {
            for source in sources {
                let cell = format!("{kernel:?} x {disk:?} x {source:?}");
                let dir = scratch(&format!("{kernel:?}-{disk:?}-{source:?}"));
                let k = arrange(kernel, disk, &dir);
                let before = kernel_sets(&k);
                let mut d = Daemon::new(config(&dir), Nft::new(k));
                d.start();
                let (want, wrote) = expected_before_source(kernel, disk);
                assert_eq!(
                    kernel_endpoints(d.nft().dataplane()),
                    want,
                    "{cell}: after start"
                );
                if !wrote {
                    assert_eq!(
                        kernel_sets(d.nft().dataplane()),
                        before,
                        "{cell}: table touched"
                    );
                }
                // Bindings change, periodic read-backs: still nothing new.
                d.verify();
                d.apply();
                match source {
                    SourceCase::Silent => {}
                    SourceCase::Garbage => d.on_source(SourceUpdate::Degraded(
                        "cannot parse the document: expected value at line 1".into(),
                    )),
                    SourceCase::Answers => d.on_source(SourceUpdate::Snapshot(answered())),
                }
                d.verify();
                if source == SourceCase::Answers {
                    assert_eq!(
                        kernel_endpoints(d.nft().dataplane()),
                        ["10.233.0.1", "10.233.0.4"],
                        "{cell}: the source's answer is enforced"
                    );
                    let (inet, _) = d.state().tables();
                    assert_eq!(
                        kernel_sets(d.nft().dataplane()),
                        Some(table_sets(&inet)),
                        "{cell}: kernel == desired"
                    );
                    // Its generation is newer than anything seen before.
                    let seen = match (kernel, disk) {
                        (_, DiskCase::Newer) => 4,
                        (KernelCase::Stamped, _) | (_, DiskCase::AsNew) => 3,
                        (_, DiskCase::Stale) => 1,
                        _ => 0,
                    };
                    assert!(d.state().generation() > seen, "{cell}: generation");
                } else {
                    assert_eq!(
                        kernel_endpoints(d.nft().dataplane()),
                        want,
                        "{cell}: no answer, nothing changes"
                    );
                    if !wrote {
                        assert_eq!(kernel_sets(d.nft().dataplane()), before, "{cell}");
                    }
                }
                assert!(d.watchdog_ok(), "{cell}: watchdog");
                let _ = std::fs::remove_dir_all(&dir);
                cells += 1;
            }
        }
    }
    assert_eq!(cells, 54);
}

/// Issue regression: table in the kernel, state_dir lost, source down; the
/// first read-back used to reconcile the kernel to the empty view.
#[test]
fn lost_state_dir_and_silent_source_keep_every_element() {
    let dir = scratch("lost");
    let (k, _) = previous_run(&dir);
    std::fs::remove_dir_all(&dir).expect("lose state_dir");
    let before = kernel_sets(&k);
    let mut d = Daemon::new(config(&dir), Nft::new(k));
    assert!(matches!(d.start(), Startup::KernelKept { .. }));
    for _ in 0..3 {
        d.verify();
    }
    assert_eq!(kernel_sets(d.nft().dataplane()), before);
    assert!(!d.in_sync());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue regression: a view older than the kernel is not re-applied.
#[test]
fn stale_persisted_view_does_not_roll_the_kernel_back() {
    let dir = scratch("stale");
    let k = arrange(KernelCase::Stamped, DiskCase::Stale, &dir);
    let mut d = Daemon::new(config(&dir), Nft::new(k));
    assert_eq!(
        d.start(),
        Startup::KernelKept {
            kernel: Some(3),
            persisted: Some(1)
        }
    );
    d.verify();
    assert_eq!(
        kernel_endpoints(d.nft().dataplane()),
        ["10.233.0.1", "10.233.0.3"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A kill -9 at any instant of a run of events leaves a state_dir whose
/// view is at least as new as the kernel's table: re-applying it at start
/// never rolls anything back.
#[test]
fn every_event_is_persisted_before_its_transaction() {
    let dir = scratch("journal");
    let mut d = Daemon::new(config(&dir), Nft::new(FakeKernel::new()));
    d.start();
    d.on_source(SourceUpdate::Snapshot(older()));
    for i in 10..40u8 {
        let ip = format!("10.233.1.{i}");
        d.on_source(SourceUpdate::Upsert(task(&format!("t{i}"), &ip, &["g"])));
        if i % 3 == 0 {
            d.on_source(SourceUpdate::Remove(format!("t{}", i - 1)));
        }
        if i % 5 == 0 {
            // A claim on a live task's IP waits, and gets the IP when that
            // task goes: the removal changes the claimant's entry too.
            d.on_source(SourceUpdate::Upsert(task(&format!("w{i}"), &ip, &["h"])));
            d.on_source(SourceUpdate::Remove(format!("t{i}")));
            assert_eq!(
                d.state().owner_of(&ip.parse().expect("ip")),
                Some(format!("w{i}").as_str())
            );
        }
        // "Killed" here: a new daemon on the same kernel and state_dir.
        let k = d.nft().dataplane().clone();
        let before = kernel_sets(&k);
        let mut again = Daemon::new(config(&dir), Nft::new(k));
        assert!(matches!(again.start(), Startup::AppliedPersisted { .. }));
        assert_eq!(kernel_sets(again.nft().dataplane()), before, "event {i}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A delta the kernel rejects is not lost: the whole table is reconciled.
#[test]
fn a_failed_delta_falls_back_to_a_full_reconcile() {
    let dir = scratch("fallback");
    let mut d = Daemon::new(config(&dir), Nft::new(FakeKernel::new()));
    d.start();
    d.on_source(SourceUpdate::Snapshot(older()));
    d.nft().dataplane_mut().fail_commits = 1;
    d.on_source(SourceUpdate::Upsert(task("z", "10.233.0.26", &["star-1"])));
    assert_eq!(
        kernel_endpoints(d.nft().dataplane()),
        ["10.233.0.1", "10.233.0.2", "10.233.0.26"]
    );
    assert_eq!(d.health().transaction_errors, 1);
    assert!(d.in_sync());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The watchdog starves while the kernel cannot be programmed, and is fed
/// again once it can.
#[test]
fn watchdog_follows_kernel_programming() {
    let dir = scratch("watchdog");
    let mut d = Daemon::new(config(&dir), Nft::new(FakeKernel::new()));
    d.start();
    d.on_source(SourceUpdate::Snapshot(older()));
    assert!(d.watchdog_ok());
    d.nft().dataplane_mut().fail_commits = 2;
    d.on_source(SourceUpdate::Upsert(task("z", "10.233.0.26", &["star-1"])));
    assert!(!d.watchdog_ok(), "delta and reconcile failed");
    d.verify();
    assert!(d.watchdog_ok());
    assert!(d.in_sync());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Drift: whatever someone else did to the table, a read-back repairs it.
#[test]
fn read_back_repairs_tampering() {
    let dir = scratch("drift");
    let mut d = Daemon::new(config(&dir), Nft::new(FakeKernel::new()));
    d.start();
    d.on_source(SourceUpdate::Snapshot(current()));
    let want = kernel_sets(d.nft().dataplane());
    let k = d.nft().dataplane_mut();
    let t = k
        .tables
        .get_mut(&(Family::Inet, TABLE.to_string()))
        .expect("table");
    t.sets.get_mut("endpoints4").expect("set").elements.clear();
    t.chains.values_mut().for_each(|c| c.rules.clear());
    d.verify();
    assert_eq!(kernel_sets(d.nft().dataplane()), want);
    assert_eq!(d.health().drift_repairs, 1);
    d.nft().dataplane_mut().tables.clear();
    d.verify();
    assert_eq!(kernel_sets(d.nft().dataplane()), want);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Observations of histogram `groupd_NAME_seconds`, as /metrics says.
fn count(metrics: &groupd::metrics::Metrics, name: &str) -> u64 {
    let text = groupd::metrics::render(metrics, None);
    let prefix = format!("groupd_{name}_seconds_count ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
}

/// `/readyz` and `groupctl status`'s exit code: ready once a complete view
/// (the source's or the persisted one) is in the kernel, never on the empty
/// policy or a kept table alone; in sync only while the source is and the
/// kernel holds the state. Every committed transaction is timed, and so is
/// the way of each source update to the kernel.
#[test]
fn readiness_and_timings_follow_the_kernel() {
    use groupd::status::sync_problem;
    let dir = scratch("ready");
    let mut d = Daemon::new(config(&dir), Nft::new(FakeKernel::new()));
    assert_eq!(d.start(), Startup::AppliedEmpty);
    assert!(!d.health().ready, "the empty policy is not a cluster view");
    assert!(sync_problem(d.health()).is_some_and(|p| p.contains("not answered")));
    let metrics = d.metrics().clone();
    assert_eq!(
        count(&metrics, "apply_duration"),
        1,
        "the empty policy's reconcile"
    );
    assert_eq!(count(&metrics, "event_to_kernel"), 0);

    d.on_source(SourceUpdate::Snapshot(older()));
    assert!(d.health().ready && d.health().kernel_in_sync);
    assert_eq!(sync_problem(d.health()), None);
    assert_eq!(count(&metrics, "event_to_kernel"), 1);
    // An update that changes nothing in the kernel is no transaction.
    d.on_source(SourceUpdate::Snapshot(older()));
    assert_eq!(count(&metrics, "event_to_kernel"), 1);
    d.on_source(SourceUpdate::Upsert(task("z", "10.233.0.26", &["star-1"])));
    assert_eq!(count(&metrics, "event_to_kernel"), 2);
    assert_eq!(
        count(&metrics, "apply_duration"),
        d.health().transactions,
        "every committed transaction is in the histogram"
    );

    // Degraded: still ready (the last good rules stay), not in sync.
    d.on_source(SourceUpdate::Degraded("file: truncated JSON".into()));
    assert!(d.health().ready);
    assert!(sync_problem(d.health()).is_some_and(|p| p.contains("truncated JSON")));
    d.on_source(SourceUpdate::Snapshot(older()));
    assert_eq!(sync_problem(d.health()), None);
    // The kernel refuses everything: not in sync until a read-back succeeds.
    d.nft().dataplane_mut().fail_commits = 2;
    d.on_source(SourceUpdate::Upsert(task("y", "10.233.0.25", &["star-1"])));
    assert!(sync_problem(d.health()).is_some_and(|p| p.contains("kernel")));
    assert!(d.health().ready, "readiness, once reached, stays");
    d.verify();
    assert_eq!(sync_problem(d.health()), None);

    // A restart with the table kept: not ready until the source answers.
    let (k, _) = previous_run(&scratch("ready-prev"));
    let dir2 = scratch("ready-kept");
    let mut d = Daemon::new(config(&dir2), Nft::new(k));
    assert!(matches!(d.start(), Startup::KernelKept { .. }));
    d.verify();
    assert!(!d.health().ready);
    d.on_source(SourceUpdate::Snapshot(answered()));
    assert!(d.health().ready);

    // A restart from the persisted view: ready before the source answers.
    let mut d = Daemon::new(config(&dir), Nft::new(FakeKernel::new()));
    assert!(matches!(d.start(), Startup::AppliedPersisted { .. }));
    assert!(d.health().ready);
    assert!(sync_problem(d.health()).is_some_and(|p| p.contains("persisted view")));
    for dir in [dir, dir2, scratch("ready-prev")] {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
