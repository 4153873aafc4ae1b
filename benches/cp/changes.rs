//! The one-task changes the incremental benchmark applies, built from the
//! loaded cluster view.
//!
//! groupd may leave out memberships of groups no local endpoint is in (they
//! are never looked up here), so a change of a remote task reaches the kernel
//! only when it touches a group of a local endpoint. The changes below say
//! which kind they are, so both costs are measured and neither is mistaken
//! for the other.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use groupd::model::{GroupOrigin, Task};

use super::full::LOCAL;
use super::{nft_status, Loaded};
use crate::common::cluster;

/// Names of the groups local endpoints (tasks 0..LOCAL) are in.
pub fn local_groups(groups: usize) -> BTreeSet<String> {
    (0..LOCAL)
        .flat_map(|t| cluster::groups_of(t, groups))
        .map(cluster::group_name)
        .collect()
}

/// Task `t` leaves its last group (by name) and joins `new`.
fn with_swap(l: &Loaded, t: usize, new: String) -> (Task, String, String) {
    let mut task = l.state.view().tasks[cluster::task_id(t).as_str()].clone();
    let old = task
        .groups
        .keys()
        .last()
        .expect("task has groups")
        .to_string();
    task.groups.remove(old.as_str());
    task.add_group(&new, GroupOrigin::NetworkInfo);
    (task, old, new)
}

/// Task `t` swaps its last group for the first group of `candidates` (from
/// position `i` on, cycling) that it is not in yet.
pub fn swap_into(l: &Loaded, t: usize, i: usize, candidates: &[String]) -> (Task, String, String) {
    let task = &l.state.view().tasks[cluster::task_id(t).as_str()];
    let new = (0..candidates.len())
        .map(|j| &candidates[(i + j) % candidates.len()])
        .find(|g| !task.groups.contains_key(g.as_str()))
        .expect("a group the task is not in")
        .clone();
    with_swap(l, t, new)
}

/// A new task at 10.233.200.0 + i (above every generated address for
/// G <= 10,000) in the groups of local endpoint `i % LOCAL`.
pub fn new_task(l: &Loaded, i: usize) -> (Task, IpAddr) {
    let ip = IpAddr::V4(Ipv4Addr::from(
        u32::from_be_bytes([10, 233, 200, 0]) + i as u32,
    ));
    let groups: Vec<String> = cluster::groups_of(i % LOCAL, l.groups)
        .into_iter()
        .map(cluster::group_name)
        .collect();
    let task = cluster::task(&format!("bench-new-{i}.task"), ip, &groups);
    (task, ip)
}

/// The first local endpoint (tasks 0..LOCAL) in `group`.
pub fn first_local_of(l: &Loaded, group: &str) -> Option<usize> {
    (0..LOCAL).find(|t| {
        cluster::groups_of(*t, l.groups)
            .into_iter()
            .any(|k| cluster::group_name(k) == group)
    })
}

/// Does the kernel let local endpoint `local` and remote task `remote`
/// talk, i.e. is their pair in groupd's `egress4` set? Asked with `nft get
/// element`: an independent check that the measured transactions really
/// changed the kernel.
pub fn pair_in_kernel(l: &Loaded, local: usize, remote: usize) -> bool {
    let elem = format!(
        "{{ \"{}\" . {} . {} }}",
        cluster::local_iface(local),
        cluster::task_ip(local),
        cluster::task_ip(remote)
    );
    let table = l.state.policy().table.clone();
    nft_status(
        &l._ns,
        &["get", "element", "inet", &table, "egress4", &elem],
    )
}
