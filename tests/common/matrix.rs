//! Connectivity matrices shared by the end-to-end suites (file and Marathon
//! sources): probe every ordered pair of tasks with real packets, compare
//! with what R1–R3 predict, and draw the TCP matrix for `make demo`.
//!
//! Include next to the harness, from a test crate that has `mod netns`:
//! `#[path = "common/matrix.rs"] mod matrix;`.
#![allow(dead_code)]

use std::collections::BTreeSet;

use crate::netns::{Cluster, Probe, Proto, TaskId};

/// R1–R3 between two known endpoints with these groups: they share a group
/// (blank names are no group), or the destination is in an open group.
/// An ungrouped source (R3, `isolated`) still reaches open groups.
pub fn allowed_by_groups(src: &BTreeSet<String>, dst: &BTreeSet<String>, open: &[&str]) -> bool {
    let clean = |g: &BTreeSet<String>| -> BTreeSet<String> {
        g.iter().filter(|n| !n.trim().is_empty()).cloned().collect()
    };
    let (a, b) = (clean(src), clean(dst));
    a.intersection(&b).next().is_some() || open.iter().any(|o| b.contains(*o))
}

/// Probe every ordered pair of `nodes` (label, task) with ICMP, TCP and UDP
/// over IPv4 and IPv6; `want(src, dst, proto)` (indices into `nodes`) says
/// whether the flow should pass. Returns one line per wrong verdict.
pub fn mismatches(
    cluster: &Cluster,
    nodes: &[(&str, TaskId)],
    want: impl Fn(usize, usize, Proto) -> bool,
) -> Vec<String> {
    let mut probes = Vec::new();
    let mut labels = Vec::new();
    for (s, (_, from)) in nodes.iter().enumerate() {
        for (d, (_, to)) in nodes.iter().enumerate() {
            if s == d {
                continue;
            }
            for v6 in [false, true] {
                for proto in [Proto::Icmp, Proto::Tcp, Proto::Udp] {
                    probes.push(Probe::new(*from, cluster.task(*to).ip(v6), proto));
                    labels.push((s, d, v6, proto));
                }
            }
        }
    }
    let results = cluster.probe_many(probes);
    let verdict = |ok: bool| if ok { "allowed" } else { "blocked" };
    labels
        .into_iter()
        .zip(results)
        .filter_map(|((s, d, v6, proto), got)| {
            let expected = want(s, d, proto);
            (got != expected).then(|| {
                format!(
                    "{} -> {} {proto:?} {}: got {}, want {}",
                    nodes[s].0,
                    nodes[d].0,
                    if v6 { "v6" } else { "v4" },
                    verdict(got),
                    verdict(expected)
                )
            })
        })
        .collect()
}

/// TCP over IPv4 for every ordered pair (row = from, column = to); the
/// diagonal is `false` and not probed.
pub fn tcp_grid(cluster: &Cluster, nodes: &[(&str, TaskId)]) -> Vec<Vec<bool>> {
    let mut probes = Vec::new();
    for (s, (_, from)) in nodes.iter().enumerate() {
        for (d, (_, to)) in nodes.iter().enumerate() {
            if s != d {
                probes.push(Probe::new(*from, cluster.task(*to).ipv4.into(), Proto::Tcp));
            }
        }
    }
    let mut results = cluster.probe_many(probes).into_iter();
    (0..nodes.len())
        .map(|s| {
            (0..nodes.len())
                .map(|d| s != d && results.next().unwrap_or(false))
                .collect()
        })
        .collect()
}

/// The grid as text: `Y` allowed, `.` blocked, `-` the diagonal. With
/// `before` (same labels), a cell that changed is marked `+` (now allowed)
/// or `x` (now blocked).
pub fn render(labels: &[&str], grid: &[Vec<bool>], before: Option<&[Vec<bool>]>) -> String {
    let width = labels.iter().map(|l| l.len()).max().unwrap_or(6) + 2;
    let column = width.max(8);
    let mut out = format!("{:width$}", "");
    for l in labels {
        out.push_str(&format!("{l:>column$}"));
    }
    out.push('\n');
    for (s, row) in grid.iter().enumerate() {
        out.push_str(&format!("{:width$}", labels[s]));
        for (d, &now) in row.iter().enumerate() {
            let was = before.and_then(|b| b.get(s)).and_then(|r| r.get(d));
            let cell = match (s == d, now, was) {
                (true, _, _) => "-",
                (false, true, Some(false)) => "+",
                (false, false, Some(true)) => "x",
                (false, true, _) => "Y",
                (false, false, _) => ".",
            };
            out.push_str(&format!("{cell:>column$}"));
        }
        out.push('\n');
    }
    out
}
