//! Wide groups in the incremental state: bounded elements, the same
//! decisions as address pairs, and deltas that end where a fresh compile does.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::{Delta, DesiredState};
use crate::compile::{LocalBinding, Policy};
use crate::config::Config;
use crate::explain::{explain, Proto};
use crate::model::{ClusterView, DiscoveryPort, Protocol, Task};
use crate::ruleset::Table;

fn policy(wide: bool) -> Policy {
    let text =
        "[source]\nkind = \"file\"\npath = \"/x\"\n[policy]\nenforce_discovery_ports = true\n";
    let mut p = Policy::from_config(&Config::parse(text).expect("config"));
    p.wide = wide;
    p
}

fn task(id: &str, ips: &[String], groups: &[&str]) -> Task {
    Task::running(
        id,
        "/a",
        ips.iter().map(|i| i.parse::<IpAddr>().expect("ip")),
        groups,
    )
}

fn bind(bindings: &mut HashMap<IpAddr, LocalBinding>, ip: &str, iface: &str) {
    let ip: IpAddr = ip.parse().expect("ip");
    bindings.insert(
        ip,
        LocalBinding {
            iface: iface.to_string(),
            ip,
            bridge: None,
        },
    );
}

/// A group `big` of `members` tasks (the first `local` of them local),
/// small groups around it, a port-restricted local task in `big`, and
/// IPv6 on some.
fn cluster(members: u32, local: u32) -> (ClusterView, HashMap<IpAddr, LocalBinding>) {
    let mut view = ClusterView::default();
    let mut bindings = HashMap::new();
    for i in 0..members {
        let v4 = format!("10.233.{}.{}", 1 + i / 200, 1 + i % 200);
        let mut ips = vec![v4.clone()];
        if i % 7 == 0 {
            ips.push(format!("fd00:233::{:x}", 0x1000 + i));
        }
        let small = format!("small{}", i % 5);
        let groups: Vec<&str> = if i % 3 == 0 {
            vec!["big", &small]
        } else {
            vec!["big"]
        };
        view.insert(task(&format!("b{i}"), &ips, &groups));
        if i < local {
            bind(&mut bindings, &v4, &format!("vb{i}"));
            if ips.len() > 1 {
                bind(&mut bindings, &ips[1], &format!("vb{i}"));
            }
        }
    }
    for i in 0..12u32 {
        let ip = format!("10.233.100.{}", 1 + i);
        view.insert(task(
            &format!("s{i}"),
            std::slice::from_ref(&ip),
            &[&format!("small{}", i % 5)],
        ));
        if i < 4 {
            bind(&mut bindings, &ip, &format!("vs{i}"));
        }
    }
    let mut gated = task("gated", &["10.233.101.1".to_string()], &["big"]);
    gated.discovery_ports.insert(DiscoveryPort {
        number: 80,
        protocol: Protocol::Tcp,
        name: None,
    });
    view.insert(gated);
    bind(&mut bindings, "10.233.101.1", "vgated");
    (view, bindings)
}

fn built(
    policy: Policy,
    view: ClusterView,
    bindings: HashMap<IpAddr, LocalBinding>,
) -> DesiredState {
    let mut st = DesiredState::new(policy);
    st.set_view(view);
    st.set_bindings(bindings, BTreeSet::new(), BTreeSet::new());
    let _ = st.take_delta();
    st
}

#[test]
fn a_large_group_costs_one_element_per_member_not_one_per_pair() {
    let (view, bindings) = cluster(3000, 60);
    let wide = built(policy(true), view.clone(), bindings.clone());
    let pairs = built(policy(false), view, bindings);
    // `big` and the five `smallN` (200+ members each, with local members).
    assert_eq!(wide.wide_groups().len(), 6);
    assert!(
        pairs.element_count() > 300_000,
        "pairs: {}",
        pairs.element_count()
    );
    assert!(
        wide.element_count() < 12_000,
        "wide: {} elements",
        wide.element_count()
    );
    let (inet, _) = wide.tables();
    let elements: usize = inet.sets.values().map(|(_, e)| e.len()).sum();
    assert!(elements < 12_000);
    assert!(inet.to_nft_text().contains("@wide_egress4"));
}

#[test]
fn wide_groups_decide_every_packet_as_pairs_do() {
    let (view, bindings) = cluster(40, 6);
    let wide = built(policy(true), view.clone(), bindings.clone());
    let pairs = built(policy(false), view.clone(), bindings);
    assert!(!wide.wide_groups().is_empty());
    let ips: Vec<IpAddr> = view
        .tasks
        .values()
        .flat_map(|t| t.ips.iter().copied())
        .chain(["10.233.200.9".parse().expect("ip")])
        .collect();
    let mut checked = 0;
    for src in &ips {
        for dst in &ips {
            if src == dst || src.is_ipv4() != dst.is_ipv4() {
                continue;
            }
            for (proto, port) in [(Proto::Tcp, Some(80)), (Proto::Udp, Some(53))] {
                let a = explain(&wide, *src, *dst, proto, port, false);
                let b = explain(&pairs, *src, *dst, proto, port, false);
                assert_eq!(a.verdict, b.verdict, "{src} -> {dst} {proto:?}: {a:?}");
                checked += 1;
            }
        }
    }
    assert!(checked > 1000);
}

/// Apply a delta to a table's sets, as the kernel would.
fn apply(table: &mut Table, delta: &Delta) {
    for ((_, set), elems) in &delta.del {
        if let Some((_, have)) = table.sets.get_mut(*set) {
            for e in elems {
                assert!(have.remove(e), "delete of a missing element in {set}");
            }
        }
    }
    for ((_, set), elems) in &delta.add {
        if let Some((_, have)) = table.sets.get_mut(*set) {
            for e in elems {
                assert!(have.insert(e.clone()), "add of a present element in {set}");
            }
        }
    }
}

#[test]
fn deltas_end_where_a_fresh_compile_does_while_groups_turn_wide_and_back() {
    let (view, bindings) = cluster(10, 3);
    let mut st = built(policy(true), view, bindings.clone());
    assert!(st.wide_groups().is_empty(), "10 members: pairs");
    let (mut kernel, _) = st.tables();
    let mut bindings = bindings;
    let step = |st: &mut DesiredState, kernel: &mut Table, what: &str| {
        let chains_changed = st.take_chains_changed();
        apply(kernel, &st.take_delta());
        let (want, _) = st.tables();
        if chains_changed {
            kernel.chains = want.chains.clone();
        }
        assert_eq!(*kernel, want, "after: {what}");
        let mut fresh = DesiredState::new(policy(true));
        fresh.set_view(st.view().clone());
        fresh.set_bindings(st.bindings.clone(), BTreeSet::new(), BTreeSet::new());
        assert_eq!(fresh.tables().0, want, "fresh compile after: {what}");
    };
    for i in 10..30u32 {
        st.upsert_task(task(
            &format!("n{i}"),
            &[format!("10.233.50.{i}")],
            &["big"],
        ));
    }
    step(&mut st, &mut kernel, "big grows past the threshold");
    assert_eq!(st.wide_groups().len(), 1);
    st.upsert_task(task("b0", &["10.233.1.1".to_string()], &["small0"]));
    step(
        &mut st,
        &mut kernel,
        "a local member leaves big for a small group",
    );
    st.upsert_task(task("b1", &["10.233.1.2".to_string()], &["big", "small1"]));
    step(&mut st, &mut kernel, "a local member changes identity");
    for i in 10..26u32 {
        st.remove_task(&format!("n{i}"));
    }
    step(&mut st, &mut kernel, "big shrinks below the threshold");
    assert!(st.wide_groups().is_empty());
    for i in 10..30u32 {
        st.upsert_task(task(
            &format!("m{i}"),
            &[format!("10.233.51.{i}")],
            &["big"],
        ));
    }
    step(&mut st, &mut kernel, "big grows again");
    bindings.retain(|ip, _| ip.to_string() != "10.233.1.2");
    bindings.retain(|ip, _| ip.to_string() != "10.233.101.1");
    st.set_bindings(bindings.clone(), BTreeSet::new(), BTreeSet::new());
    step(&mut st, &mut kernel, "local endpoints unbound");
    bindings.clear();
    st.set_bindings(bindings.clone(), BTreeSet::new(), BTreeSet::new());
    step(
        &mut st,
        &mut kernel,
        "no local endpoint left: nothing is wide",
    );
    assert!(st.wide_groups().is_empty());
}
