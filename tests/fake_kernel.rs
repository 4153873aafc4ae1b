//! The in-memory kernel the daemon's rules are tested against must behave
//! like nf_tables: a reconcile from any starting table reaches exactly the
//! desired table (no root), and the same transactions give the same
//! read-back on the fake and on the real kernel (root, scratch namespace).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use common::{require_nft, ScratchNs};
use groupd::compile::{LocalBinding, Policy};
use groupd::config::Config;
use groupd::model::{ClusterView, Task};
use groupd::nft::{Dataplane, FakeKernel, KernelTable, Netlink, Nft, Op};
use groupd::ruleset::{Element, Family, KeyValue, Table};
use groupd::state::DesiredState;

fn task(id: &str, ip: &str, groups: &[&str]) -> Task {
    Task::running(id, "/app", [ip.parse::<IpAddr>().expect("ip")], groups)
}

/// Desired tables of a small cluster: routed and bridged local tasks,
/// remote peers, an open group; `variant` moves one task between groups.
fn desired(variant: u8) -> (Table, Table) {
    let config = Config::parse("[source]\nkind = \"file\"\npath = \"/x\"\n").expect("config");
    let mut st = DesiredState::new(Policy::from_config(&config));
    let mut view = ClusterView::default();
    let moved = if variant == 0 { "web" } else { "db" };
    for t in [
        task("web.1", "10.233.1.2", &["web"]),
        task("db.1", "10.233.1.3", &["db"]),
        task("pub.1", "10.233.1.4", &["public"]),
        task("remote.1", "10.233.7.1", &[moved]),
        task("remote.2", "10.233.7.2", &["web", "db"]),
    ] {
        view.insert(t);
    }
    st.set_view(view);
    let mut b = HashMap::new();
    for (ip, iface, bridge) in [
        ("10.233.1.2", "veth-r1", None),
        ("10.233.1.3", "veth-b1", Some("br-t".to_string())),
        ("10.233.1.4", "veth-r2", None),
    ] {
        let ip: IpAddr = ip.parse().expect("ip");
        b.insert(
            ip,
            LocalBinding {
                iface: iface.into(),
                ip,
                bridge,
            },
        );
    }
    st.set_bindings(b, BTreeSet::from(["br-t".to_string()]), BTreeSet::new());
    st.set_generation(7 + u64::from(variant));
    st.tables()
}

/// A chain as read back, without what only the kernel assigns (handles,
/// counter values): its hook and its rules' tags in order.
type ChainShape = (Option<(groupd::ruleset::Hook, i32)>, Vec<Option<String>>);

/// What a read-back says that both kernels must agree on.
#[derive(Debug, PartialEq)]
struct Shape {
    exists: bool,
    sets: BTreeMap<String, groupd::nft::KernelSet>,
    chains: BTreeMap<String, ChainShape>,
}

fn shape(k: &KernelTable) -> Shape {
    Shape {
        exists: k.exists,
        sets: k.sets.clone(),
        chains: k
            .chains
            .iter()
            .map(|(n, c)| {
                (
                    n.clone(),
                    (c.hook, c.rules.iter().map(|(_, t)| t.clone()).collect()),
                )
            })
            .collect(),
    }
}

/// Whether `k` holds exactly `t`: every set with its elements, every chain
/// with its rules in order and its hook.
fn holds(t: &Table, k: &KernelTable) -> bool {
    let sets_match = t.sets.len() == k.sets.len()
        && t.sets
            .iter()
            .all(|(n, (_, e))| k.sets.get(n).is_some_and(|ks| ks.elements == *e));
    let chains_match = t.chains.len() == k.chains.len()
        && t.chains.iter().all(|c| {
            k.chains.get(&c.name).is_some_and(|kc| {
                kc.hook == c.base.map(|b| (b.hook, b.priority))
                    && kc
                        .rules
                        .iter()
                        .map(|(_, tag)| tag.clone())
                        .collect::<Vec<_>>()
                        == c.rules.iter().map(|r| Some(r.tag())).collect::<Vec<_>>()
            })
        });
    k.exists && sets_match && chains_match
}

fn ip_element(ip: &str) -> Element {
    Element::set(&[KeyValue::Ip(ip.parse().expect("ip"))])
}

/// Starting kernels a reconcile must repair: nothing, someone else's edits
/// of every kind, an older view, a set of the wrong type.
fn starting_points() -> Vec<(&'static str, FakeKernel)> {
    let (inet, bridge) = desired(0);
    let mut whole = FakeKernel::new();
    Nft::new(&mut whole)
        .reconcile(&[&inet, &bridge])
        .expect("build");
    let edit = |f: &dyn Fn(&mut KernelTable)| {
        let mut k = whole.clone();
        let t = k
            .tables
            .get_mut(&(Family::Inet, "groupd".to_string()))
            .expect("table");
        f(t);
        k
    };
    vec![
        ("empty", FakeKernel::new()),
        ("already whole", whole.clone()),
        ("older view", {
            let (old_inet, old_bridge) = desired(1);
            let mut k = FakeKernel::new();
            Nft::new(&mut k)
                .reconcile(&[&old_inet, &old_bridge])
                .expect("older");
            k
        }),
        (
            "elements deleted",
            edit(&|t| t.sets.values_mut().for_each(|s| s.elements.clear())),
        ),
        (
            "element added",
            edit(&|t| {
                if let Some(s) = t.sets.get_mut("endpoints4") {
                    s.elements.insert(ip_element("10.233.99.99"));
                }
            }),
        ),
        (
            "chain flushed",
            edit(&|t| {
                if let Some(c) = t.chains.get_mut("forward") {
                    c.rules.clear();
                }
            }),
        ),
        (
            "rule inserted at the top",
            edit(&|t| {
                if let Some(c) = t.chains.get_mut("forward") {
                    c.rules.insert(0, (9999, None));
                }
            }),
        ),
        (
            "extra chain",
            edit(&|t| {
                t.chains.insert("intruder".into(), Default::default());
            }),
        ),
        (
            "set of another type",
            edit(&|t| {
                if let Some(s) = t.sets.get_mut("endpoints4") {
                    s.key_len = 16;
                }
            }),
        ),
    ]
}

#[test]
fn reconcile_reaches_the_desired_table_from_any_start() {
    let (inet, bridge) = desired(0);
    for (case, mut k) in starting_points() {
        let mut nft = Nft::new(&mut k);
        nft.reconcile(&[&inet, &bridge]).expect(case);
        let again = nft.reconcile(&[&inet, &bridge]).expect(case);
        assert!(
            !again.changed(),
            "{case}: a second reconcile changed {again:?}"
        );
        for t in [&inet, &bridge] {
            let read = k.read(t.family, &t.name).expect("read");
            assert!(holds(t, &read), "{case}: {:?} table differs", t.family);
        }
    }
}

#[test]
fn a_rejected_transaction_changes_nothing() {
    let (inet, bridge) = desired(0);
    let mut k = FakeKernel::new();
    Nft::new(&mut k)
        .reconcile(&[&inet, &bridge])
        .expect("apply");
    let before = k.tables.clone();
    let stray = ip_element("10.233.99.98");
    let ops = vec![
        Op::Elements {
            family: Family::Inet,
            table: "groupd",
            set: "endpoints4",
            data_len: 0,
            elems: vec![&stray],
            add: true,
        },
        // Deleting what is not there fails the whole batch, as in nf_tables.
        Op::Elements {
            family: Family::Inet,
            table: "groupd",
            set: "open4",
            data_len: 0,
            elems: vec![&stray],
            add: false,
        },
    ];
    assert!(k.commit(ops).is_err());
    assert_eq!(k.tables, before);
}

/// The same transactions on the fake and on nf_tables read back the same.
#[test]
#[ignore = "needs root: writes nftables tables in a network namespace it creates"]
fn the_fake_reads_back_like_the_kernel() {
    require_nft();
    let ns = ScratchNs::new("fake");
    ns.run(|| {
        let mut real = Nft::new(Netlink::open().expect("netlink socket"));
        let (inet, bridge) = desired(0);
        let (inet1, bridge1) = desired(1);
        for (case, mut start) in starting_points() {
            // Bring the real kernel to the same starting point: replay the
            // fake's starting tables where they are reachable by ops.
            real.cleanup("groupd").expect("cleanup");
            if case != "empty" {
                let mut from = FakeKernel::new();
                let (a, b) = if case == "older view" {
                    (&inet1, &bridge1)
                } else {
                    (&inet, &bridge)
                };
                Nft::new(&mut from).reconcile(&[a, b]).expect("fake");
                real.reconcile(&[a, b]).expect("kernel");
                start = from;
            }
            let mut fake = Nft::new(&mut start);
            for (step, (i, b)) in [(&inet, &bridge), (&inet1, &bridge1), (&inet, &bridge)]
                .into_iter()
                .enumerate()
            {
                let r_fake = fake.reconcile(&[i, b]).expect("fake reconcile");
                let r_real = real.reconcile(&[i, b]).expect("kernel reconcile");
                assert_eq!(r_fake, r_real, "{case} step {step}: reports differ");
                for family in [Family::Inet, Family::Bridge] {
                    let f = fake.read(family, "groupd").expect("fake read");
                    let k = real.read(family, "groupd").expect("kernel read");
                    assert_eq!(
                        shape(&f),
                        shape(&k),
                        "{case} step {step}: {family:?} differs"
                    );
                }
            }
        }
        real.cleanup("groupd").expect("cleanup");
    });
}

/// Desired tables with a wide group of 20 (two local members); `variant`
/// puts one member into a second wide group, which changes its identity:
/// map elements whose value changes are replaced, not duplicated.
fn desired_wide(variant: u8) -> (Table, Table) {
    let config = Config::parse("[source]\nkind = \"file\"\npath = \"/x\"\n").expect("config");
    let mut st = DesiredState::new(Policy::from_config(&config));
    let mut view = ClusterView::default();
    for i in 0..20u8 {
        let ip = format!("10.233.8.{}", i + 1);
        let groups: &[&str] = if variant == 1 && i == 5 {
            &["big", "big2"]
        } else if i < 18 {
            &["big"]
        } else {
            &["big2"]
        };
        view.insert(task(&format!("w{i}"), &ip, groups));
    }
    for i in 0..16u8 {
        view.insert(task(
            &format!("x{i}"),
            &format!("10.233.9.{}", i + 1),
            &["big2"],
        ));
    }
    st.set_view(view);
    let mut b = HashMap::new();
    for (ip, iface) in [("10.233.8.1", "veth-w1"), ("10.233.8.19", "veth-w19")] {
        let ip: IpAddr = ip.parse().expect("ip");
        b.insert(
            ip,
            LocalBinding {
                iface: iface.into(),
                ip,
                bridge: None,
            },
        );
    }
    st.set_bindings(b, BTreeSet::new(), BTreeSet::new());
    assert_eq!(st.wide_groups().len(), 2);
    st.tables()
}

#[test]
fn reconcile_replaces_identities_whose_value_changed() {
    let mut k = FakeKernel::new();
    for variant in [0, 1, 0] {
        let (inet, bridge) = desired_wide(variant);
        let mut nft = Nft::new(&mut k);
        nft.reconcile(&[&inet, &bridge]).expect("reconcile");
        assert!(!nft.reconcile(&[&inet, &bridge]).expect("again").changed());
        let read = k.read(Family::Inet, "groupd").expect("read");
        assert!(holds(&inet, &read), "variant {variant}: inet table differs");
        let idents = read.sets.get("ident4").map_or(0, |s| s.elements.len());
        assert_eq!(idents, 36, "one identity per address, never two");
    }
}

/// The same identity changes on the real kernel: the same reports, the same
/// read-back as the fake (map values included).
#[test]
#[ignore = "needs root: writes nftables tables in a network namespace it creates"]
fn identity_changes_read_back_alike_on_the_fake_and_the_kernel() {
    require_nft();
    let ns = ScratchNs::new("fakewide");
    ns.run(|| {
        let mut real = Nft::new(Netlink::open().expect("netlink socket"));
        let mut k = FakeKernel::new();
        let mut fake = Nft::new(&mut k);
        for (step, variant) in [0, 1, 0].into_iter().enumerate() {
            let (inet, bridge) = desired_wide(variant);
            let r_fake = fake.reconcile(&[&inet, &bridge]).expect("fake reconcile");
            let r_real = real.reconcile(&[&inet, &bridge]).expect("kernel reconcile");
            assert_eq!(r_fake, r_real, "step {step}: reports differ");
            let f = fake.read(Family::Inet, "groupd").expect("fake read");
            let r = real.read(Family::Inet, "groupd").expect("kernel read");
            assert_eq!(shape(&f), shape(&r), "step {step}: read-back differs");
            assert!(
                holds(&inet, &r),
                "step {step}: the kernel holds the desired table"
            );
        }
        real.cleanup("groupd").expect("cleanup");
    });
}
