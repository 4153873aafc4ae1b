//! Helper of benches/dataplane.sh (not a measurement by itself): loads
//! groupd's policy for G groups into the current network namespace, the way
//! the daemon would (DesiredState + Nft::reconcile, one transaction).
//!
//!   dp_policy load G      run inside the bench's host namespace
//!   dp_policy load-wide N task1 and task2 in ONE group of N members (the
//!                         others addresses of the cluster, IPv4 up to
//!                         60,000 then IPv6), task3 in another: a wide group
//!
//! The probe tasks of the topology are endpoints of the cluster: task1
//! (10.233.1.1 on veth-b1) and task2 (10.233.1.2 on veth-b2) share exactly
//! one group; task3 (10.233.1.3 on
//! veth-b3) shares none with task1. 247 more local endpoints are bound to
//! veth-b4..veth-b250 (bindings are data: those interfaces do not exist).
//! The table stays after exit; dataplane.sh deletes it by name.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use groupd::nft::Nft;
use groupd::state::DesiredState;

use common::cluster;

const LOCAL: usize = 250;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let [cmd, n] = args.as_slice() {
        if cmd == "load-wide" {
            let n = n.parse::<usize>().expect("load-wide N: a number");
            return load_wide(n);
        }
    }
    let g = match args.as_slice() {
        [cmd, g] if cmd == "load" => g.parse::<usize>().ok().filter(|g| *g >= 3),
        _ => None,
    };
    let Some(g) = g else {
        // `cargo bench` runs every bench target with no arguments: nothing to do.
        eprintln!("usage: dp_policy load G   (helper of benches/dataplane.sh)");
        return;
    };
    let (mut view, mut bindings) = cluster::build(g, 0);
    let (a, b, c) = cluster::probes(g);
    let probes = [a, b, c];
    for (i, t) in probes.iter().enumerate() {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 233, 1, i as u8 + 1));
        let task = view
            .tasks
            .get_mut(cluster::task_id(*t).as_str())
            .expect("probe task");
        task.ips = [ip].into();
        bindings.insert(ip, cluster::binding(&cluster::local_iface(i), ip));
    }
    let others = (0..).filter(|t| !probes.contains(t));
    for (i, t) in others.take(LOCAL - probes.len()).enumerate() {
        let ip = IpAddr::V4(cluster::task_ip(t));
        bindings.insert(
            ip,
            cluster::binding(&cluster::local_iface(i + probes.len()), ip),
        );
    }
    let started = Instant::now();
    let mut st = DesiredState::new(cluster::policy());
    st.set_view(view);
    st.set_bindings(bindings, BTreeSet::new(), BTreeSet::new());
    let _ = st.take_delta();
    let (inet, bridge) = st.tables();
    let mut nft = Nft::open().expect("netlink socket (needs root)");
    let report = nft.reconcile(&[&inet, &bridge]).expect("load the policy");
    let show = |t: usize| format!("{} {:?}", cluster::task_id(t), cluster::groups_of(t, g));
    eprintln!(
        "dp_policy: G={g}, {} tasks, {LOCAL} local, {} messages in {:.0} ms; task1={} task2={} task3={}",
        st.view().tasks.len(),
        report.messages,
        started.elapsed().as_secs_f64() * 1e3,
        show(a),
        show(b),
        show(c)
    );
}

/// One group `big` of `n` members: task1 and task2 (10.233.1.1, .2) in it,
/// task3 (10.233.1.3) in `other`; LOCAL local endpoints, all in `big`.
fn load_wide(n: usize) {
    use groupd::model::{ClusterView, Task};
    let mut view = ClusterView::default();
    let mut bindings = std::collections::HashMap::new();
    let addr = |i: usize| -> IpAddr {
        if i < 60_000 {
            IpAddr::V4(cluster::task_ip(i))
        } else {
            IpAddr::V6(std::net::Ipv6Addr::new(
                0xfd00,
                0x233,
                0,
                0,
                0,
                0,
                (i >> 16) as u16,
                i as u16,
            ))
        }
    };
    for i in 0..n {
        let ip = addr(i);
        view.insert(Task::running(&format!("big.{i}"), "/big", [ip], &["big"]));
        if i < LOCAL - 3 {
            bindings.insert(ip, cluster::binding(&cluster::local_iface(i + 3), ip));
        }
    }
    for (k, group) in [(1u8, "big"), (2, "big"), (3, "other")] {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 233, 1, k));
        view.insert(Task::running(&format!("task{k}"), "/probe", [ip], &[group]));
        bindings.insert(
            ip,
            cluster::binding(&cluster::local_iface(k as usize - 1), ip),
        );
    }
    let started = Instant::now();
    let mut st = DesiredState::new(cluster::policy());
    st.set_view(view);
    st.set_bindings(bindings, BTreeSet::new(), BTreeSet::new());
    assert!(!st.wide_groups().is_empty(), "the big group is wide");
    let (inet, bridge) = st.tables();
    let mut nft = Nft::open().expect("netlink socket (needs root)");
    let report = nft.reconcile(&[&inet, &bridge]).expect("load the policy");
    eprintln!(
        "dp_policy: one group of {n} (wide), {LOCAL} local, {} elements, {} messages in {:.0} ms",
        st.element_count(),
        report.messages,
        started.elapsed().as_secs_f64() * 1e3
    );
}
