//! The desired state, kept incrementally: which task contributes which set
//! elements and chains, and what changed since the last transaction.
//!
//! A task's change recomputes only that task's [`Contribution`]; the
//! difference to its previous one becomes the pending [`Delta`], so a
//! transaction carries messages proportional to the change, not the table.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use crate::compile::{self, Contribution, LocalBinding, Policy, SetName};
use crate::model::{ClusterView, Task};
use crate::ruleset::{Chain, Element, Family, GroupId, Table};

/// What must change in the kernel.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delta {
    pub add: BTreeMap<(Family, SetName), BTreeSet<Element>>,
    pub del: BTreeMap<(Family, SetName), BTreeSet<Element>>,
    /// Chain name -> new content (`None`: delete the chain).
    pub chains: BTreeMap<String, Option<Chain>>,
    /// Chains that do not exist in the kernel yet.
    pub new_chains: BTreeSet<String>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.add.values().all(|s| s.is_empty())
            && self.del.values().all(|s| s.is_empty())
            && self.chains.is_empty()
    }

    pub fn element_count(&self) -> usize {
        self.add
            .values()
            .chain(self.del.values())
            .map(|s| s.len())
            .sum()
    }
}

pub struct DesiredState {
    policy: Policy,
    view: ClusterView,
    /// IP -> owning task id (after conflict resolution).
    owners: HashMap<IpAddr, String>,
    /// IP -> where it is bound on this agent.
    bindings: HashMap<IpAddr, LocalBinding>,
    contributions: HashMap<String, Contribution>,
    refcounts: HashMap<(Family, SetName, Element), u32>,
    chains: BTreeMap<String, Chain>,
    pending: Delta,
    /// Per task: its group ids and whether it is a local endpoint.
    task_groups: HashMap<String, (Vec<GroupId>, bool)>,
    /// Group id -> tasks in it (to refresh when the group starts or stops mattering).
    group_index: HashMap<GroupId, HashSet<String>>,
    /// Group id -> number of local endpoints in it.
    local_groups: HashMap<GroupId, usize>,
    /// Ids of the open groups (always relevant: every endpoint may reach them).
    open_ids: HashSet<GroupId>,
    /// Group name -> id (hashing is the costly part of a full compile).
    gid_cache: HashMap<String, GroupId>,
    /// Tasks (as the source described them) that claim an IP another live
    /// task still owns.
    waiting: BTreeMap<String, Task>,
    /// Interfaces that are bridges, and ports of ignored bridges.
    bridges: BTreeSet<String>,
    ignored_ports: BTreeSet<String>,
}

impl DesiredState {
    pub fn new(policy: Policy) -> DesiredState {
        let open_ids = policy.open.iter().map(|g| compile::group_id(g)).collect();
        DesiredState {
            policy,
            view: ClusterView::default(),
            owners: HashMap::new(),
            bindings: HashMap::new(),
            contributions: HashMap::new(),
            refcounts: HashMap::new(),
            chains: BTreeMap::new(),
            pending: Delta::default(),
            waiting: BTreeMap::new(),
            task_groups: HashMap::new(),
            group_index: HashMap::new(),
            local_groups: HashMap::new(),
            open_ids,
            gid_cache: HashMap::new(),
            bridges: BTreeSet::new(),
            ignored_ports: BTreeSet::new(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    pub fn binding_of(&self, ip: &IpAddr) -> Option<&LocalBinding> {
        self.bindings.get(ip)
    }

    pub fn owner_of(&self, ip: &IpAddr) -> Option<&str> {
        self.owners.get(ip).map(|s| s.as_str())
    }

    /// Replace the cluster view. IPs claimed by more than one live endpoint
    /// stay with their previous owner (or with nobody if none of the
    /// claimants had it): returns one message per conflict.
    pub fn set_view(&mut self, mut view: ClusterView) -> Vec<String> {
        let (conflicts, waiting) = self.resolve_conflicts(&mut view);
        self.waiting = waiting;
        let old = std::mem::take(&mut self.view.tasks);
        let mut changed: BTreeSet<String> = BTreeSet::new();
        for (id, t) in &view.tasks {
            if old.get(id) != Some(t) {
                changed.insert(id.clone());
            }
        }
        for id in old.keys() {
            if !view.tasks.contains_key(id) {
                changed.insert(id.clone());
            }
        }
        self.view = view;
        self.reindex_owners();
        for id in changed {
            self.recompute(&id);
        }
        conflicts
    }

    /// Insert or replace one task (event sources): touches only that task.
    /// An IP another live task already owns stays with that task.
    pub fn upsert_task(&mut self, task: Task) -> Vec<String> {
        let original = task.clone();
        let (messages, lost_ips) = self.insert_task(task);
        if lost_ips {
            // Remember the claim: the IP goes to this task once its owner is gone.
            self.waiting.insert(original.id.clone(), original);
        } else {
            self.waiting.remove(&original.id);
        }
        let mut messages = messages;
        messages.extend(self.hand_over_released());
        messages
    }

    fn insert_task(&mut self, mut task: Task) -> (Vec<String>, bool) {
        let mut messages = Vec::new();
        if task.is_endpoint() {
            let taken: Vec<IpAddr> = task
                .ips
                .iter()
                .filter(|ip| self.owners.get(*ip).is_some_and(|o| o != &task.id))
                .copied()
                .collect();
            let lost = !taken.is_empty();
            for ip in taken {
                task.ips.remove(&ip);
                messages.push(format!(
                    "IP {ip} of task {:?} is owned by live task {:?}; it is given to the newcomer when that task is gone",
                    task.id,
                    self.owners.get(&ip)
                ));
            }
            self.place(task);
            return (messages, lost);
        }
        self.place(task);
        (messages, false)
    }

    fn place(&mut self, task: Task) {
        let id = task.id.clone();
        self.release_ips(&id);
        if task.is_endpoint() {
            for ip in &task.ips {
                self.owners.insert(*ip, id.clone());
            }
        }
        self.view.tasks.insert(id.clone(), task);
        self.recompute(&id);
    }

    /// Forget one task (terminal, killed, app deleted).
    pub fn remove_task(&mut self, id: &str) {
        self.waiting.remove(id);
        self.release_ips(id);
        self.view.tasks.remove(id);
        self.recompute(id);
        for m in self.hand_over_released() {
            tracing::info!("{m}");
        }
    }

    /// Give IPs that became free to the tasks that were waiting for them
    /// (in the same transaction as the removal that freed them).
    fn hand_over_released(&mut self) -> Vec<String> {
        let ready: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, t)| t.ips.iter().any(|ip| !self.owners.contains_key(ip)))
            .map(|(id, _)| id.clone())
            .collect();
        let mut messages = Vec::new();
        for id in ready {
            if let Some(t) = self.waiting.remove(&id) {
                messages.push(format!("task {id:?} now gets the IP(s) it claimed"));
                let original = t.clone();
                let (_, still_lost) = self.insert_task(t);
                if still_lost {
                    self.waiting.insert(id, original);
                }
            }
        }
        messages
    }

    fn release_ips(&mut self, id: &str) {
        if let Some(old) = self.view.tasks.get(id) {
            for ip in &old.ips {
                if self.owners.get(ip).is_some_and(|o| o == id) {
                    self.owners.remove(ip);
                }
            }
        }
    }

    /// Returns the messages and the tasks (as given) that lost an IP to its
    /// previous owner: they get it when that owner is gone.
    fn resolve_conflicts(&self, view: &mut ClusterView) -> (Vec<String>, BTreeMap<String, Task>) {
        let mut waiting = BTreeMap::new();
        let mut claims: HashMap<IpAddr, Vec<String>> = HashMap::new();
        for t in view.endpoints() {
            for ip in &t.ips {
                claims.entry(*ip).or_default().push(t.id.clone());
            }
        }
        let mut messages = Vec::new();
        for (ip, claimants) in claims {
            if claimants.len() < 2 {
                continue;
            }
            let keeper = self
                .owners
                .get(&ip)
                .filter(|o| claimants.contains(o))
                .cloned();
            for id in &claimants {
                if Some(id) != keeper.as_ref() {
                    if let Some(t) = view.tasks.get_mut(id) {
                        if keeper.is_some() && !waiting.contains_key(id) {
                            waiting.insert(id.clone(), t.clone());
                        }
                        t.ips.remove(&ip);
                    }
                }
            }
            messages.push(match &keeper {
                Some(k) => format!("IP {ip} is claimed by {} live tasks ({}); it stays with {k:?}, the others do not get it", claimants.len(), claimants.join(", ")),
                None => format!("IP {ip} is claimed by {} live tasks ({}); none gets it until the master agrees", claimants.len(), claimants.join(", ")),
            });
        }
        messages.sort();
        (messages, waiting)
    }

    fn reindex_owners(&mut self) {
        self.owners.clear();
        for t in self.view.endpoints() {
            for ip in &t.ips {
                self.owners.insert(*ip, t.id.clone());
            }
        }
    }

    /// Replace the local bindings (IP -> interface). Returns the tasks whose
    /// local state changed.
    pub fn set_bindings(
        &mut self,
        bindings: HashMap<IpAddr, LocalBinding>,
        bridges: BTreeSet<String>,
        ignored_ports: BTreeSet<String>,
    ) {
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for (ip, b) in &bindings {
            if self.bindings.get(ip) != Some(b) {
                if let Some(o) = self.owners.get(ip) {
                    touched.insert(o.clone());
                }
            }
        }
        for ip in self.bindings.keys() {
            if !bindings.contains_key(ip) {
                if let Some(o) = self.owners.get(ip) {
                    touched.insert(o.clone());
                }
            }
        }
        self.bindings = bindings;
        self.sync_names(Family::Inet, compile::BRIDGES, bridges.clone(), true);
        self.bridges = bridges;
        self.sync_names(
            Family::Bridge,
            compile::IGNORED_PORTS,
            ignored_ports.clone(),
            false,
        );
        self.ignored_ports = ignored_ports;
        for id in touched {
            self.recompute(&id);
        }
    }

    fn sync_names(&mut self, family: Family, set: SetName, new: BTreeSet<String>, bridges: bool) {
        let old = if bridges {
            self.bridges.clone()
        } else {
            self.ignored_ports.clone()
        };
        let elem = |n: &String| Element::set(&[crate::ruleset::KeyValue::Ifname(n)]);
        for n in new.difference(&old) {
            self.add_element(family, set, elem(n));
        }
        for n in old.difference(&new) {
            self.del_element(family, set, elem(n));
        }
    }

    fn local_bindings(&self, task: &Task) -> Vec<LocalBinding> {
        task.ips
            .iter()
            .filter_map(|ip| self.bindings.get(ip))
            .cloned()
            .collect()
    }

    /// A task changed: update which groups matter here, then its elements
    /// and chains, then the memberships of groups that started or stopped
    /// mattering (proportional to those groups, not to the cluster).
    fn recompute(&mut self, id: &str) {
        let info = self
            .view
            .tasks
            .get(id)
            .filter(|t| t.is_endpoint())
            .map(|t| {
                (
                    compile::effective_groups(t, &self.policy),
                    !self.local_bindings(t).is_empty(),
                )
            });
        let (new_gids, new_local) = match info {
            Some((names, local)) => (self.group_ids(names), local),
            None => (Vec::new(), false),
        };
        let (old_gids, old_local) = self.task_groups.remove(id).unwrap_or_default();
        for g in old_gids.iter().filter(|g| !new_gids.contains(g)) {
            if let Some(members) = self.group_index.get_mut(g) {
                members.remove(id);
                if members.is_empty() {
                    self.group_index.remove(g);
                }
            }
        }
        for g in new_gids.iter().filter(|g| !old_gids.contains(g)) {
            self.group_index
                .entry(*g)
                .or_default()
                .insert(id.to_string());
        }
        let touched: BTreeSet<GroupId> = old_gids.iter().chain(new_gids.iter()).copied().collect();
        let before: Vec<bool> = touched.iter().map(|g| self.is_relevant(g)).collect();
        if old_local {
            for g in &old_gids {
                if let Some(n) = self.local_groups.get_mut(g) {
                    *n -= 1;
                    if *n == 0 {
                        self.local_groups.remove(g);
                    }
                }
            }
        }
        if new_local {
            for g in &new_gids {
                *self.local_groups.entry(*g).or_insert(0) += 1;
            }
        }
        let flipped: Vec<GroupId> = touched
            .iter()
            .zip(before)
            .filter(|(g, b)| self.is_relevant(g) != *b)
            .map(|(g, _)| *g)
            .collect();
        if !new_gids.is_empty() {
            self.task_groups
                .insert(id.to_string(), (new_gids, new_local));
        }
        self.refresh(id);
        let mut others: BTreeSet<String> = BTreeSet::new();
        for g in &flipped {
            if let Some(members) = self.group_index.get(g) {
                others.extend(members.iter().filter(|m| m.as_str() != id).cloned());
            }
        }
        for m in others {
            self.refresh(&m);
        }
    }

    /// The task's sorted group ids; names are hashed once per name.
    fn group_ids(&mut self, names: BTreeSet<String>) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = names
            .into_iter()
            .map(|n| {
                *self
                    .gid_cache
                    .entry(n)
                    .or_insert_with_key(|n| compile::group_id(n))
            })
            .collect();
        ids.sort();
        ids
    }

    fn is_relevant(&self, g: &GroupId) -> bool {
        self.local_groups.contains_key(g) || self.open_ids.contains(g)
    }

    /// Recompute one task's elements and chains and queue the difference.
    fn refresh(&mut self, id: &str) {
        let new = match (self.view.tasks.get(id), self.task_groups.get(id)) {
            (Some(t), Some((gids, _))) => {
                let local = self.local_bindings(t);
                compile::contribution(t, gids, &local, &self.policy, &|g| self.is_relevant(g))
            }
            (Some(t), None) => {
                compile::contribution(t, &[], &self.local_bindings(t), &self.policy, &|_| false)
            }
            (None, _) => Contribution::default(),
        };
        let old = self.contributions.remove(id).unwrap_or_default();
        for (f, s, e) in old.elements.difference(&new.elements) {
            self.del_element(*f, s, e.clone());
        }
        for (f, s, e) in new.elements.difference(&old.elements) {
            self.add_element(*f, s, e.clone());
        }
        let old_names: BTreeSet<&String> = old.chains.iter().map(|c| &c.name).collect();
        for c in &new.chains {
            if self.chains.get(&c.name) != Some(c) {
                // A chain whose deletion is still pending exists in the
                // kernel: it is rewritten (flushed), not created again.
                let pending_delete = matches!(self.pending.chains.get(&c.name), Some(None));
                if !self.chains.contains_key(&c.name) && !pending_delete {
                    self.pending.new_chains.insert(c.name.clone());
                }
                self.chains.insert(c.name.clone(), c.clone());
                self.pending.chains.insert(c.name.clone(), Some(c.clone()));
            }
        }
        for name in old_names {
            if !new.chains.iter().any(|c| &c.name == name) {
                self.chains.remove(name);
                if self.pending.new_chains.remove(name) {
                    self.pending.chains.remove(name);
                } else {
                    self.pending.chains.insert(name.clone(), None);
                }
            }
        }
        if new != Contribution::default() {
            self.contributions.insert(id.to_string(), new);
        }
    }

    fn add_element(&mut self, family: Family, set: SetName, e: Element) {
        let count = self.refcounts.entry((family, set, e.clone())).or_insert(0);
        *count += 1;
        if *count == 1 {
            let key = (family, set);
            let cancelled = self.pending.del.get_mut(&key).is_some_and(|d| d.remove(&e));
            if !cancelled {
                self.pending.add.entry(key).or_default().insert(e);
            }
        }
    }

    fn del_element(&mut self, family: Family, set: SetName, e: Element) {
        let k = (family, set, e.clone());
        let Some(count) = self.refcounts.get_mut(&k) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.refcounts.remove(&k);
            let key = (family, set);
            let cancelled = self.pending.add.get_mut(&key).is_some_and(|a| a.remove(&e));
            if !cancelled {
                self.pending.del.entry(key).or_default().insert(e);
            }
        }
    }

    /// The changes since the last call.
    pub fn take_delta(&mut self) -> Delta {
        std::mem::take(&mut self.pending)
    }

    /// Put a delta back (the transaction failed; it will be retried).
    pub fn restore_delta(&mut self, d: Delta) {
        // Merge: the pending delta taken later is newer and wins on chains.
        let newer = std::mem::replace(&mut self.pending, d);
        for (k, set) in newer.add {
            for e in set {
                let cancelled = self.pending.del.get_mut(&k).is_some_and(|d| d.remove(&e));
                if !cancelled {
                    self.pending.add.entry(k).or_default().insert(e);
                }
            }
        }
        for (k, set) in newer.del {
            for e in set {
                let cancelled = self.pending.add.get_mut(&k).is_some_and(|a| a.remove(&e));
                if !cancelled {
                    self.pending.del.entry(k).or_default().insert(e);
                }
            }
        }
        self.pending.chains.extend(newer.chains);
        self.pending.new_chains.extend(newer.new_chains);
    }

    /// The complete desired tables (inet, bridge): skeleton + every task's part.
    pub fn tables(&self) -> (Table, Table) {
        let (mut inet, mut bridge) = compile::skeleton(&self.policy);
        for (family, set, e) in self.refcounts.keys() {
            match family {
                Family::Inet => inet.insert(set, e.clone()),
                Family::Bridge => bridge.insert(set, e.clone()),
            }
        }
        // Per-endpoint chains first: base chains and maps refer to them.
        let mut chains: Vec<Chain> = self.chains.values().cloned().collect();
        chains.append(&mut inet.chains);
        inet.chains = chains;
        (inet, bridge)
    }

    /// Elements groupd keeps in the kernel (all sets and maps).
    pub fn element_count(&self) -> usize {
        self.refcounts.len()
    }

    /// Per-endpoint chain of a local task (for diagnostics).
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::Task;

    fn policy() -> Policy {
        Policy::from_config(
            &Config::parse("[source]\nkind = \"file\"\npath = \"/x\"\n").expect("config"),
        )
    }

    fn task(id: &str, ip: &str, groups: &[&str]) -> Task {
        Task::running(id, "/a", [ip.parse().expect("ip")], groups)
    }

    /// 2,000 tasks in 3 groups each, 50 of them local.
    fn big_state() -> DesiredState {
        let mut st = DesiredState::new(policy());
        let mut view = ClusterView::default();
        let mut bindings = HashMap::new();
        for i in 0..2000u32 {
            let ip = format!("10.233.{}.{}", 16 + i / 250, 1 + i % 250);
            let groups = [
                format!("g{}", i % 700),
                format!("g{}", (i + 1) % 700),
                format!("g{}", (i + 2) % 700),
            ];
            let refs: Vec<&str> = groups.iter().map(|s| s.as_str()).collect();
            view.insert(task(&format!("t{i}"), &ip, &refs));
            if i < 50 {
                let ip: IpAddr = ip.parse().expect("ip");
                bindings.insert(
                    ip,
                    LocalBinding {
                        iface: format!("veth{i}"),
                        ip,
                        bridged: false,
                    },
                );
            }
        }
        st.set_view(view);
        st.set_bindings(bindings, BTreeSet::new(), BTreeSet::new());
        let _ = st.take_delta();
        st
    }

    #[test]
    fn a_remote_task_change_touches_only_its_own_elements() {
        let mut st = big_state();
        // t1400 is in g0, g1, g2 (groups of local tasks); it moves to g5.
        st.upsert_task(task("t1400", "10.233.21.151", &["g5"]));
        let d = st.take_delta();
        // 3 group memberships out, 1 in; endpoints unchanged; no chain.
        assert_eq!(d.element_count(), 4, "{d:?}");
        assert!(d.chains.is_empty());
    }

    #[test]
    fn groups_no_local_task_is_in_cost_nothing() {
        let mut st = big_state();
        // g600 has no local member: its members are not in the kernel.
        st.upsert_task(task("t1500", "10.233.22.1", &["g600", "g601"]));
        let d = st.take_delta();
        assert_eq!(d.element_count(), 0, "{d:?}");
        // A local task joins g600: its 10 members (+ the task's own
        // membership) come in, proportional to the group.
        st.upsert_task(task("t7", "10.233.16.8", &["g600"]));
        let d = st.take_delta();
        let members = (Family::Inet, "members4");
        let added = d.add.get(&members).map(|s| s.len()).unwrap_or(0);
        assert!(added >= 10, "the group's members are added: {added}");
    }

    #[test]
    fn a_local_task_change_rewrites_only_its_own_chains() {
        let mut st = big_state();
        st.upsert_task(task("t7", "10.233.16.8", &["web"]));
        let d = st.take_delta();
        assert_eq!(
            d.chains.len(),
            2,
            "its egress and ingress chains: {:?}",
            d.chains.keys()
        );
        assert_eq!(d.element_count(), 4);
    }

    #[test]
    fn an_ip_moving_to_a_task_in_another_group_is_one_delta() {
        let mut st = big_state();
        let mut view = st.view().clone();
        view.tasks.remove("t3");
        view.insert(task("new.1", "10.233.16.4", &["elsewhere"]));
        st.set_view(view);
        let d = st.take_delta();
        let members = d
            .del
            .get(&(Family::Inet, "members4"))
            .map(|s| s.len())
            .unwrap_or(0);
        assert_eq!(members, 3, "old memberships removed");
        let added = d
            .add
            .get(&(Family::Inet, "members4"))
            .map(|s| s.len())
            .unwrap_or(0);
        assert_eq!(added, 1, "new membership added in the same delta");
        // t3 was local: its chains go, new.1's (same IP, same interface) come.
        assert_eq!(d.chains.values().filter(|c| c.is_none()).count(), 2);
        assert_eq!(d.chains.values().filter(|c| c.is_some()).count(), 2);
    }

    #[test]
    fn a_duplicate_ip_stays_with_its_previous_owner() {
        let mut st = big_state();
        let mut view = st.view().clone();
        view.insert(task("thief", "10.233.16.1", &["public"]));
        let conflicts = st.set_view(view);
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(st.owner_of(&"10.233.16.1".parse().expect("ip")), Some("t0"));
        let d = st.take_delta();
        assert!(d.is_empty(), "nothing changes in the kernel: {d:?}");
    }

    #[test]
    fn a_local_task_removed_and_readded_before_the_transaction_rewrites_its_chains() {
        let mut st = big_state();
        let t = st.view().tasks.get("t5").cloned().expect("t5");
        st.remove_task("t5");
        st.upsert_task(t);
        let d = st.take_delta();
        assert!(
            d.new_chains.is_empty(),
            "the chains exist in the kernel: {:?}",
            d.new_chains
        );
        assert!(
            d.chains.values().all(|c| c.is_some()),
            "rewritten, not deleted"
        );
        assert_eq!(d.element_count(), 0, "{d:?}");
    }

    #[test]
    fn a_claimed_ip_is_handed_over_when_its_owner_goes() {
        let mut st = big_state();
        let ip: IpAddr = "10.233.16.1".parse().expect("ip");
        st.upsert_task(task("successor", "10.233.16.1", &["web"]));
        assert_eq!(st.owner_of(&ip), Some("t0"), "the live owner keeps it");
        let _ = st.take_delta();
        st.remove_task("t0");
        assert_eq!(st.owner_of(&ip), Some("successor"), "handed over");
        let d = st.take_delta();
        let endpoints = (Family::Inet, "endpoints4");
        assert!(
            d.del.get(&endpoints).is_none_or(|s| s.is_empty()),
            "the IP stays an endpoint: {d:?}"
        );
        assert!(
            d.add
                .get(&(Family::Inet, "members4"))
                .is_some_and(|s| s.len() == 1),
            "web membership in the same delta"
        );
    }

    #[test]
    fn an_unchanged_snapshot_changes_nothing() {
        let mut st = big_state();
        let view = st.view().clone();
        st.set_view(view);
        assert!(st.take_delta().is_empty());
    }
}
