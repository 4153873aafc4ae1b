//! Full apply from empty: DesiredState::set_view + set_bindings + tables()
//! (compile) then Nft::reconcile (read-back of the empty kernel, diff,
//! encode, one transaction), next to `nft -f` of the flat single-set text.
//! The two alternate run by run, so both see the same machine noise.

use std::collections::BTreeSet;
use std::time::Instant;

use groupd::nft::Nft;
use groupd::state::DesiredState;

use super::{nft_cli, nft_file, settle, Loaded, Scratch};
use crate::common::stats::{fmt_s, summary, thread_cpu};
use crate::common::{cluster, flat, netns::ScratchNs, pass, Rows};

/// Local endpoints (and real tasks of the flat text).
pub const LOCAL: usize = 250;
/// Targets from the issue.
const TARGET_FULL_S: f64 = 0.25;
const TARGET_AT: usize = 10_000;

pub fn run(
    g: usize,
    runs: usize,
    scratch: &Scratch,
    drift: &mut Option<(usize, f64)>,
    rows: &mut Rows,
) -> Loaded {
    eprintln!("[apply] G={g}: building the cluster view");
    let (view, bindings) = cluster::build(g, LOCAL);
    let policy = cluster::policy();
    let table = policy.table.clone();
    let ns = ScratchNs::new("apply");
    let flat_ns = ScratchNs::new("flat");
    let mut nft = ns.run(|| Nft::open().expect("netlink socket in the scratch namespace"));
    let flat_path = scratch.dir.join(format!("nft-flat-{g}-{LOCAL}-routed.nft"));
    std::fs::write(&flat_path, flat::nft_flat(g, LOCAL)).expect("write flat ruleset");

    let (mut total, mut compile, mut reconcile, mut sys, mut user, mut nft_f) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut kept = None;
    let mut shape = String::new();
    let mut elements = 0;
    for r in 0..runs {
        let (v, b) = (view.clone(), bindings.clone());
        let t0 = Instant::now();
        let mut st = DesiredState::new(policy.clone());
        st.set_view(v);
        st.set_bindings(b, BTreeSet::new(), BTreeSet::new());
        let _ = st.take_delta();
        let (inet, bridge) = st.tables();
        let t1 = Instant::now();
        let cpu1 = thread_cpu();
        let report = nft
            .reconcile(&[&inet, &bridge])
            .expect("full apply (reconcile)");
        let cpu = thread_cpu() - cpu1;
        let t2 = Instant::now();
        assert!(report.rebuilt, "the first apply must create the tables");
        total.push((t2 - t0).as_secs_f64());
        compile.push((t1 - t0).as_secs_f64());
        reconcile.push((t2 - t1).as_secs_f64());
        sys.push(cpu.sys.as_secs_f64());
        user.push(cpu.user.as_secs_f64());
        if r == 0 {
            elements = inet.sets.values().map(|(_, e)| e.len()).sum();
            shape = format!(
                "{} tasks, {} set elements, {} chains, {} netlink messages",
                view.tasks.len(),
                elements,
                inet.chains.len(),
                report.messages
            );
        }
        drop((inet, bridge));

        nft_f.push(nft_file(&flat_ns, &flat_path).as_secs_f64());
        eprintln!(
            "[apply] G={g} run {}: groupd {} (compile {}, reconcile {}), nft -f {}",
            r + 1,
            fmt_s(total[r]),
            fmt_s(compile[r]),
            fmt_s(reconcile[r]),
            fmt_s(nft_f[r])
        );
        if r + 1 == runs {
            kept = Some(st);
        } else {
            drop(st);
            nft.cleanup(&table).expect("delete groupd's tables");
            nft_cli(&flat_ns, &["delete", "table", "inet", "dp_pol"]);
            settle();
        }
    }
    let state = kept.expect("at least one run");

    let verify = drift_check(&mut nft, &state, elements, drift);
    let (s, f) = (summary(&total), summary(&nft_f));
    let (c, rc, ks, us) = (
        summary(&compile),
        summary(&reconcile),
        summary(&sys),
        summary(&user),
    );
    let span = |x: &crate::common::stats::Summary| {
        format!("{} [{}–{}]", fmt_s(x.median), fmt_s(x.min), fmt_s(x.max))
    };
    let (target, result) = if g == TARGET_AT {
        (
            format!("< {TARGET_FULL_S} s and < nft -f"),
            pass(s.median < TARGET_FULL_S && s.median < f.median),
        )
    } else {
        ("—".to_string(), "")
    };
    rows.row([
        &format!("full apply from empty, G={g} (median [min–max] of {runs}; {shape})"),
        &span(&s),
        &format!("`nft -f` flat set: {}", span(&f)),
        &format!("{:.2}", s.median / f.median),
        &target,
        result,
    ]);
    rows.row([
        &format!("… of which compile (set_view + set_bindings + tables), G={g}"),
        &span(&c),
        "",
        "",
        "",
        "",
    ]);
    rows.row([
        &format!("… of which reconcile (read-back, diff, encode, send, kernel), G={g}"),
        &format!("{}; of it user CPU {}", span(&rc), fmt_s(us.median)),
        "",
        "",
        "",
        "",
    ]);
    rows.row([
        &format!("… of which the kernel transaction (system CPU of the applying thread), G={g}"),
        &span(&ks),
        "",
        "",
        "",
        "",
    ]);
    rows.row([
        &format!("drift check (read back + diff, nothing to do), G={g}"),
        &verify,
        "",
        "",
        "runs every `verify_interval` (10 s)",
        "",
    ]);
    Loaded {
        groups: g,
        state,
        nft,
        _ns: ns,
        flat_ns,
    }
}

/// Longest drift check we are willing to wait for (the whole bench must stay
/// under 10 minutes).
const DRIFT_BUDGET_S: f64 = 20.0;

/// The daemon's periodic drift check at this size: read back + diff, and
/// nothing to repair. Skipped when the previous (smaller) G, extrapolated
/// linearly in set elements, says it would blow the time budget.
fn drift_check(
    nft: &mut Nft,
    state: &DesiredState,
    elements: usize,
    drift: &mut Option<(usize, f64)>,
) -> String {
    if let Some((n, s)) = *drift {
        let estimate = s * elements as f64 / n as f64;
        if estimate > DRIFT_BUDGET_S {
            return format!(
                "skipped: ~{estimate:.0} s expected ({} at {n} elements)",
                fmt_s(s)
            );
        }
    }
    let t = Instant::now();
    let (inet, bridge) = state.tables();
    let again = nft.reconcile(&[&inet, &bridge]).expect("verify");
    let took = t.elapsed().as_secs_f64();
    assert!(
        !again.changed(),
        "a second reconcile found differences: {again:?}"
    );
    *drift = Some((elements, took));
    format!("{} ({elements} elements)", fmt_s(took))
}
