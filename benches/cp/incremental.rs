//! One-task changes on the loaded largest table, the way the daemon applies
//! an event: DesiredState::upsert_task / remove_task, take_delta and, when
//! the delta is not empty, Nft::apply_elements (one transaction). Next to it,
//! `nft add element` / `nft delete element` of one member of the flat table.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use groupd::state::DesiredState;

use super::changes::{first_local_of, local_groups, new_task, pair_in_kernel, swap_into};
use super::full::LOCAL;
use super::{nft_cli, Loaded};
use crate::common::cluster::{self, Bindings};
use crate::common::stats::{fmt_s, summary, Summary};
use crate::common::{pass, Rows};

const TARGET_CHANGE_S: f64 = 1e-3;
/// `nft` invocations per kind: each costs milliseconds at G=10,000.
const NFT_RUNS: usize = 20;
/// New tasks get addresses 10.233.200.0 + i, which must stay in the /16.
const MAX_NEW: usize = 14_000;

/// Wall time of (state update + take_delta + apply_delta), of apply_delta
/// alone, and how many changes needed no transaction at all.
#[derive(Default)]
struct Samples {
    total: Vec<f64>,
    kernel: Vec<f64>,
    empty: usize,
}

fn apply(l: &mut Loaded, s: &mut Samples, update: impl FnOnce(&mut DesiredState)) {
    let table = l.state.policy().table.clone();
    let t0 = Instant::now();
    update(&mut l.state);
    let delta = l.state.take_delta();
    let t1 = Instant::now();
    if delta.is_empty() {
        // The daemon sends nothing for an empty delta either.
        s.empty += 1;
        s.total.push((t1 - t0).as_secs_f64());
        return;
    }
    l.nft
        .apply_elements(
            &table,
            &delta.del,
            &delta.add,
            groupd::compile::wide::data_len,
        )
        .expect("incremental transaction");
    let t2 = Instant::now();
    s.total.push((t2 - t0).as_secs_f64());
    s.kernel.push((t2 - t1).as_secs_f64());
}

pub fn run(l: &mut Loaded, changes: usize, rows: &mut Rows) {
    let g = l.groups;
    let n = cluster::task_count(g);
    eprintln!("[apply] G={g}: {changes} incremental changes of each kind");
    let local: BTreeSet<String> = local_groups(g);
    let local_list: Vec<String> = local.iter().cloned().collect();
    let all: Vec<String> = (0..g).map(cluster::group_name).collect();
    let remote_only: Vec<String> = all
        .iter()
        .filter(|k| !local.contains(*k))
        .cloned()
        .collect();
    let remote_tasks: Vec<usize> = (LOCAL..n).collect();

    // A remote task joins a group of a local endpoint: must reach the kernel.
    let mut joins = Samples::default();
    let mut last = None;
    for i in 0..changes {
        let t = remote_tasks[(i * 7919) % remote_tasks.len()];
        let (task, old, new) = swap_into(l, t, i, &local_list);
        apply(l, &mut joins, |st| {
            st.upsert_task(task);
        });
        last = Some((t, old, new));
    }
    let check = match last {
        Some((t, old, new)) => {
            // The pair with a local endpoint of the group joined is there;
            // the one with a local endpoint of the group left is gone,
            // unless the two still share another group.
            let task = &l.state.view().tasks[cluster::task_id(t).as_str()];
            let shares = |lt: usize| {
                cluster::groups_of(lt, g)
                    .into_iter()
                    .any(|k| task.groups.contains_key(cluster::group_name(k).as_str()))
            };
            first_local_of(l, &new).is_some_and(|lt| pair_in_kernel(l, lt, t))
                && first_local_of(l, &old)
                    .map_or(true, |lt| shares(lt) || !pair_in_kernel(l, lt, t))
        }
        None => true,
    };
    // A remote task moves between groups nobody on this agent is in.
    let unrelated_tasks: Vec<usize> = (LOCAL..n)
        .filter(|t| {
            let task = &l.state.view().tasks[cluster::task_id(*t).as_str()];
            task.groups.keys().all(|k| !local.contains(k.as_str()))
        })
        .collect();
    let mut unrelated = Samples::default();
    for i in 0..changes.min(unrelated_tasks.len()) {
        let t = unrelated_tasks[(i * 7919) % unrelated_tasks.len()];
        let (task, _, _) = swap_into(l, t, i * 7919, &remote_only);
        apply(l, &mut unrelated, |st| {
            st.upsert_task(task);
        });
    }
    let mut locals = Samples::default();
    for i in 0..changes {
        let (task, _, _) = swap_into(l, i % LOCAL, i * 7919, &all);
        apply(l, &mut locals, |st| {
            st.upsert_task(task);
        });
    }
    let (mut add, mut del) = (Samples::default(), Samples::default());
    for i in 0..changes.min(MAX_NEW) {
        let (task, _) = new_task(l, i);
        let id = task.id.clone();
        apply(l, &mut add, |st| {
            st.upsert_task(task);
        });
        apply(l, &mut del, |st| st.remove_task(&id));
    }
    let (ladd, ldel) = local_add_remove(l, changes.min(MAX_NEW));

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

    let mut out = Report {
        rows,
        g,
        nadd,
        ndel,
    };
    let joined = "one-task change: a remote task leaves one of its groups and joins a group of a local endpoint";
    out.line(joined, &joins, true, true);
    rows_check(out.rows, g, check);
    let moved = "one-task change: a remote task moves between groups no local endpoint is in";
    out.line(moved, &unrelated, true, false);
    let swapped =
        "one-task change: a local task swaps a group (its pairs with the members of both groups)";
    out.line(swapped, &locals, true, true);
    out.line(
        "add a remote task (in the groups of a local endpoint)",
        &add,
        true,
        false,
    );
    out.line("remove that remote task", &del, false, false);
    out.line(
        "add a local task (3 groups: pairs with their 30 members)",
        &ladd,
        true,
        false,
    );
    out.line("remove that local task", &ldel, false, false);
}

/// A new local task: its interface appears first (a binding, untimed), then
/// the master reports the task (timed): its elements and pairs.
fn local_add_remove(l: &mut Loaded, count: usize) -> (Samples, Samples) {
    let base: Bindings = (0..LOCAL)
        .map(|t| {
            let ip = IpAddr::V4(cluster::task_ip(t));
            (ip, cluster::binding(&cluster::local_iface(t), ip))
        })
        .collect();
    let table = l.state.policy().table.clone();
    let untimed = |l: &mut Loaded, b: Bindings| {
        l.state.set_bindings(b, BTreeSet::new(), BTreeSet::new());
        let d = l.state.take_delta();
        l.nft
            .apply_elements(&table, &d.del, &d.add, groupd::compile::wide::data_len)
            .expect("binding change");
    };
    let (mut add, mut del) = (Samples::default(), Samples::default());
    for i in 0..count {
        let (task, ip) = new_task(l, i);
        let id = task.id.clone();
        let mut b = base.clone();
        b.insert(ip, cluster::binding(&format!("veth-n{i}"), ip));
        untimed(l, b);
        apply(l, &mut add, |st| {
            st.upsert_task(task);
        });
        apply(l, &mut del, |st| st.remove_task(&id));
        untimed(l, base.clone());
    }
    (add, del)
}

fn rows_check(rows: &mut Rows, g: usize, ok: bool) {
    rows.row([
        &format!("… `nft get element` holds the pair the last join made and not the one the group left made, G={g}"),
        if ok { "as expected" } else { "kernel differs" },
        "",
        "",
        "must hold",
        pass(ok),
    ]);
}

/// Formats one row per kind of change.
struct Report<'a> {
    rows: &'a mut Rows,
    g: usize,
    nadd: Summary,
    ndel: Summary,
}

impl Report<'_> {
    fn line(&mut self, what: &str, s: &Samples, adds: bool, target: bool) {
        let (t, nft) = (
            summary(&s.total),
            if adds { &self.nadd } else { &self.ndel },
        );
        let kernel = if s.kernel.is_empty() {
            "no transaction needed".to_string()
        } else {
            format!("apply_delta p50 {}", fmt_s(summary(&s.kernel).median))
        };
        let empty = if s.empty > 0 && !s.kernel.is_empty() {
            format!(", {} needed no transaction", s.empty)
        } else {
            String::new()
        };
        self.rows.row([
            &format!("{what}, G={} ({} changes{empty})", self.g, s.total.len()),
            &format!("p50 {} / p99 {} ({kernel})", fmt_s(t.median), fmt_s(t.p99)),
            &format!(
                "`nft {} element`: {} (median of {})",
                if adds { "add" } else { "delete" },
                fmt_s(nft.median),
                nft.n
            ),
            &format!("{:.3}", t.median / nft.median),
            if target { "< 1 ms median" } else { "" },
            if target {
                pass(t.median < TARGET_CHANGE_S)
            } else {
                ""
            },
        ]);
    }
}
