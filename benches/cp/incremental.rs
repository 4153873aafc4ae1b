//! One-task changes on the loaded largest table, the way the daemon applies
//! an event: DesiredState::upsert_task / remove_task, take_delta,
//! Nft::apply_delta (one transaction). Next to it, `nft add element` /
//! `nft delete element` of one member of the flat table.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use groupd::compile::group_id;
use groupd::model::{GroupOrigin, Task};
use groupd::state::DesiredState;

use super::full::LOCAL;
use super::{nft_cli, nft_status, Loaded};
use crate::common::cluster::{self, Bindings};
use crate::common::stats::{fmt_s, summary, Summary};
use crate::common::{pass, Rows};

const TARGET_CHANGE_S: f64 = 1e-3;
/// `nft` invocations per kind: each costs tens of ms at G=10,000.
const NFT_RUNS: usize = 20;

/// Wall time of (state update + take_delta + apply_delta) and of apply_delta alone.
#[derive(Default)]
struct Samples {
    total: Vec<f64>,
    kernel: Vec<f64>,
}

fn apply(l: &mut Loaded, s: &mut Samples, update: impl FnOnce(&mut DesiredState)) {
    let table = l.state.policy().table.clone();
    let t0 = Instant::now();
    update(&mut l.state);
    let delta = l.state.take_delta();
    let t1 = Instant::now();
    l.nft
        .apply_delta(&table, &delta)
        .expect("incremental transaction");
    let t2 = Instant::now();
    assert!(!delta.is_empty(), "the change produced no delta");
    s.total.push((t2 - t0).as_secs_f64());
    s.kernel.push((t2 - t1).as_secs_f64());
}

/// The task with its last group (by name) swapped for another group; also
/// returns the old and the new group.
fn swapped(l: &Loaded, t: usize) -> (Task, String, String) {
    let g = l.groups;
    let mut task = l.state.view().tasks[&cluster::task_id(t)].clone();
    let old = task.groups.keys().last().cloned().expect("task has groups");
    let mut k = (t * 7 + g / 2) % g;
    while task.groups.contains_key(&cluster::group_name(k)) {
        k = (k + 1) % g;
    }
    let new = cluster::group_name(k);
    task.groups.remove(&old);
    task.add_group(&new, GroupOrigin::NetworkInfo);
    (task, old, new)
}

/// Is (group, ip) in groupd's members4 set in the kernel? Asked with `nft
/// get element` (group ids are typed ipv6_addr): an independent check that
/// the measured transactions really changed the kernel.
fn member_in_kernel(l: &Loaded, group: &str, ip: Ipv4Addr) -> bool {
    let gid = Ipv6Addr::from(group_id(group));
    let elem = format!("{{ {gid} . {ip} }}");
    let table = l.state.policy().table.clone();
    nft_status(
        &l._ns,
        &["get", "element", "inet", &table, "members4", &elem],
    )
}

fn new_task(l: &Loaded, i: usize) -> (Task, IpAddr) {
    // 10.233.200.0/24 is above every generated task address (G <= 10,000).
    let ip = IpAddr::V4(Ipv4Addr::new(
        10,
        233,
        200 + (i / 256) as u8,
        (i % 256) as u8,
    ));
    let groups: Vec<String> = cluster::groups_of(i * 13 % 1000, l.groups)
        .into_iter()
        .map(cluster::group_name)
        .collect();
    (
        cluster::task(&format!("bench-new-{i}.task"), ip, &groups),
        ip,
    )
}

pub fn run(l: &mut Loaded, changes: usize, rows: &mut Rows) {
    let g = l.groups;
    let n = cluster::task_count(g);
    eprintln!("[apply] G={g}: {changes} incremental changes of each kind");
    let base: Bindings = (0..LOCAL)
        .map(|t| {
            let ip = IpAddr::V4(cluster::task_ip(t));
            (ip, cluster::binding(&cluster::local_iface(t), ip))
        })
        .collect();
    let no_bridges = || (BTreeSet::new(), BTreeSet::new());

    let mut remote = Samples::default();
    let mut last = None;
    for i in 0..changes {
        let t = LOCAL + (i * 7919) % (n - LOCAL);
        let (task, old, new) = swapped(l, t);
        apply(l, &mut remote, |st| {
            st.upsert_task(task);
        });
        last = Some((t, old, new));
    }
    if let Some((t, old, new)) = last {
        let ip = cluster::task_ip(t);
        assert!(
            member_in_kernel(l, &new, ip) && !member_in_kernel(l, &old, ip),
            "the kernel does not show the last change ({old} -> {new} for {ip})"
        );
    }
    let mut local = Samples::default();
    for i in 0..changes {
        let (task, _, _) = swapped(l, i % LOCAL);
        apply(l, &mut local, |st| {
            st.upsert_task(task);
        });
    }
    let (mut add, mut del) = (Samples::default(), Samples::default());
    for i in 0..changes.min(256 * 50) {
        let (task, _) = new_task(l, i);
        let id = task.id.clone();
        apply(l, &mut add, |st| {
            st.upsert_task(task);
        });
        apply(l, &mut del, |st| st.remove_task(&id));
    }
    // A new local task: its interface appears first (binding, untimed), then
    // the master reports the task: elements plus two new chains.
    let (mut ladd, mut ldel) = (Samples::default(), Samples::default());
    for i in 0..changes.min(256 * 50) {
        let (task, ip) = new_task(l, i);
        let id = task.id.clone();
        let mut b = base.clone();
        b.insert(ip, cluster::binding(&format!("veth-n{i}"), ip));
        let (br, ign) = no_bridges();
        l.state.set_bindings(b, br, ign);
        assert!(
            l.state.take_delta().is_empty(),
            "a binding without a task changed the table"
        );
        apply(l, &mut ladd, |st| {
            st.upsert_task(task);
        });
        apply(l, &mut ldel, |st| st.remove_task(&id));
        let (br, ign) = no_bridges();
        l.state.set_bindings(base.clone(), br, ign);
        let _ = l.state.take_delta();
    }

    // The nft CLI on the flat table: one member of one local task.
    let elem = "{ \"gw-task1\" . 10.233.250.1 }";
    let (mut nadd, mut ndel) = (vec![], vec![]);
    for _ in 0..NFT_RUNS {
        let a = ["add", "element", "inet", "dp_pol", "allowed", elem];
        nadd.push(nft_cli(&l.flat_ns, &a).as_secs_f64());
        let d = ["delete", "element", "inet", "dp_pol", "allowed", elem];
        ndel.push(nft_cli(&l.flat_ns, &d).as_secs_f64());
    }
    let (nadd, ndel) = (summary(&nadd), summary(&ndel));

    let cell = |s: &Samples| {
        let (t, k) = (summary(&s.total), summary(&s.kernel));
        format!(
            "p50 {} / p99 {} (apply_delta p50 {})",
            fmt_s(t.median),
            fmt_s(t.p99),
            fmt_s(k.median)
        )
    };
    let nft_cell = |what: &str, s: &Summary| {
        format!(
            "`nft {what} element`: {} (median of {})",
            fmt_s(s.median),
            s.n
        )
    };
    let ratio = |s: &Samples, n: &Summary| format!("{:.3}", summary(&s.total).median / n.median);
    let target = |s: &Samples| pass(summary(&s.total).median < TARGET_CHANGE_S);
    let mut line = |what: &str, s: &Samples, peer: &str, nft: &Summary, tgt: bool| {
        rows.row([
            &format!("{what}, G={g} ({} changes)", s.total.len()),
            &cell(s),
            &nft_cell(peer, nft),
            &ratio(s, nft),
            if tgt { "< 1 ms median" } else { "" },
            if tgt { target(s) } else { "" },
        ]);
    };
    line(
        "one-task change: swap a group of a remote task",
        &remote,
        "add",
        &nadd,
        true,
    );
    line(
        "one-task change: swap a group of a local task (rewrites its 2 chains)",
        &local,
        "add",
        &nadd,
        true,
    );
    line("add a remote task (3 groups)", &add, "add", &nadd, false);
    line("remove a remote task", &del, "delete", &ndel, false);
    line(
        "add a local task (3 groups, 2 new chains)",
        &ladd,
        "add",
        &nadd,
        false,
    );
    line("remove a local task", &ldel, "delete", &ndel, false);
}
