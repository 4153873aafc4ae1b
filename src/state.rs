//! The desired state, kept incrementally: every endpoint in its compiled
//! form, who is in which group, and what changed since the last transaction.
//!
//! A task's change recomputes only that task: its own elements and its pairs
//! with its peers (the members of its groups if it is local, else the local
//! members of its groups). The difference becomes the pending [`Delta`], so
//! a transaction carries messages proportional to the change, not the table.

mod holds;
mod ip_map;
mod members;
#[cfg(test)]
mod wide_tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use crate::compile::wide::{self, Identity};
use crate::compile::{self, Endpoint, LocalBinding, Policy, SetName, Sink};
use crate::config::Ungrouped;
use crate::model::{ClusterView, GroupName, IpConflict, NotEnforced, Task, TaskId};
use crate::ruleset::{Element, Family, GroupId, KeyValue, Table};
use ip_map::IpMap;
use members::Members;
use tracing::{info, warn};

/// What must change in the kernel: elements only (the chains are static).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delta {
    pub add: BTreeMap<(Family, SetName), BTreeSet<Element>>,
    pub del: BTreeMap<(Family, SetName), BTreeSet<Element>>,
}

impl Delta {
    /// Note that `e` is added to (`add`) or removed from the set `key`: a
    /// pending change the other way is cancelled instead.
    fn record(&mut self, key: (Family, SetName), e: Element, add: bool) {
        let (this_way, other_way) = if add {
            (&mut self.add, &mut self.del)
        } else {
            (&mut self.del, &mut self.add)
        };
        let cancelled = other_way.get_mut(&key).is_some_and(|s| s.remove(&e));
        if !cancelled {
            this_way.entry(key).or_default().insert(e);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.add.values().all(|s| s.is_empty()) && self.del.values().all(|s| s.is_empty())
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
    owners: IpMap<TaskId>,
    /// IP -> where it is bound on this agent.
    bindings: HashMap<IpAddr, LocalBinding>,
    /// The endpoints of this agent, compiled (task id -> endpoint). Remote
    /// endpoints are not kept: what one contributes depends only on its
    /// task, so it is compiled from the view when needed ([`compiled`]),
    /// which saves a second copy of every task of the cluster.
    ///
    /// [`compiled`]: DesiredState::compiled
    local_eps: HashMap<TaskId, Endpoint>,
    /// Group id -> its member endpoints (groups that are not open).
    members: HashMap<GroupId, Members>,
    /// Group id -> its members that are local endpoints.
    local_members: HashMap<GroupId, Members>,
    /// Elements in the desired tables. The elements themselves are not kept:
    /// [`tables`](Self::tables) derives them from the endpoints.
    elements: usize,
    /// How many endpoints need each bridge port (the only element two
    /// endpoints can share: IPs of two tasks on one port).
    port_refs: HashMap<Element, u32>,
    pending: Delta,
    /// Whether changes are recorded in `pending`: not while the kernel is
    /// out of sync anyway (the next full reconcile writes everything), so a
    /// first snapshot does not hold a second copy of every element.
    tracking: bool,
    /// Group name -> id (hashing is the costly part of a full compile).
    gid_cache: HashMap<GroupName, GroupId>,
    /// Tasks (as the source described them) that claim an IP another live
    /// task still owns.
    waiting: BTreeMap<TaskId, Task>,
    /// Bridges with task ports, and ports of ignored bridges.
    bridges: BTreeSet<String>,
    ignored_ports: BTreeSet<String>,
    /// Generation of the view, stamped into the inet table (0: unstamped).
    generation: u64,
    /// Tasks whose entry in the view changed as a side effect of the last
    /// upsert or removal (they received an IP it freed).
    handed_over: Vec<TaskId>,
    /// The wide groups ([`compile::wide`]): large, with a local member;
    /// their members are told apart by identity, not by address pairs.
    wide: BTreeSet<GroupId>,
    /// The identities endpoints have: identity -> (its wide groups, how
    /// many endpoints have it).
    identities: HashMap<Identity, (Box<[GroupId]>, usize)>,
    /// Wide group -> the identities that include it.
    identities_of: HashMap<GroupId, HashSet<Identity>>,
    /// Groups whose membership changed since their wide status was last
    /// decided ([`Self::settle_wide`]).
    dirty: HashSet<GroupId>,
    /// The rules for wide groups came or went: the chains change, which an
    /// element delta cannot carry (see [`Self::take_chains_changed`]).
    chains_changed: bool,
    /// [`Self::settle_wide`] is running (it admits and retires endpoints,
    /// which would call it again).
    settling: bool,
}

impl DesiredState {
    pub fn new(policy: Policy) -> DesiredState {
        DesiredState {
            policy,
            view: ClusterView::default(),
            owners: IpMap::default(),
            bindings: HashMap::new(),
            local_eps: HashMap::new(),
            members: HashMap::new(),
            local_members: HashMap::new(),
            elements: 0,
            port_refs: HashMap::new(),
            pending: Delta::default(),
            tracking: true,
            waiting: BTreeMap::new(),
            gid_cache: HashMap::new(),
            bridges: BTreeSet::new(),
            ignored_ports: BTreeSet::new(),
            generation: 0,
            handed_over: Vec::new(),
            wide: BTreeSet::new(),
            identities: HashMap::new(),
            identities_of: HashMap::new(),
            dirty: HashSet::new(),
            chains_changed: false,
            settling: false,
        }
    }

    /// Whether the chains changed since the last call (the rules for wide
    /// groups came or went): the next transaction must be a reconcile.
    pub fn take_chains_changed(&mut self) -> bool {
        std::mem::take(&mut self.chains_changed)
    }

    /// The wide groups of this agent.
    pub fn wide_groups(&self) -> &BTreeSet<GroupId> {
        &self.wide
    }

    /// How many identities the endpoints have.
    pub fn identity_count(&self) -> usize {
        self.identities.len()
    }

    /// Decide again whether each group whose membership changed is wide;
    /// every member of a group that turns wide (or stops being wide) is
    /// recompiled: its pairs in that group become its identity, or back.
    /// Called after every endpoint that enters or leaves: a group turns
    /// wide as soon as it qualifies, so a group that grows to 100,000
    /// members never has their pairs compiled (only its first
    /// [`wide::WIDE_MIN_MEMBERS`], or those present when its first local
    /// member arrives, are recompiled once).
    fn settle_wide(&mut self) {
        if self.settling {
            return;
        }
        self.settling = true;
        self.settle_wide_now();
        self.settling = false;
    }

    fn settle_wide_now(&mut self) {
        loop {
            let dirty = std::mem::take(&mut self.dirty);
            let flips: Vec<GroupId> = dirty
                .into_iter()
                .filter(|g| self.should_be_wide(g) != self.wide.contains(g))
                .collect();
            if flips.is_empty() {
                return;
            }
            let mut affected: BTreeSet<TaskId> = BTreeSet::new();
            for g in &flips {
                if let Some(m) = self.members.get(g) {
                    affected.extend(m.iter().cloned());
                }
            }
            for id in &affected {
                self.retire(id);
            }
            let had_none = self.wide.is_empty();
            for g in flips {
                if !self.wide.remove(&g) {
                    self.wide.insert(g);
                }
            }
            if had_none != self.wide.is_empty() {
                self.chains_changed = true;
            }
            for id in &affected {
                self.admit(id);
            }
        }
    }

    fn should_be_wide(&self, g: &GroupId) -> bool {
        self.policy.wide
            && self.local_members.contains_key(g)
            && self
                .members
                .get(g)
                .is_some_and(|m| m.len() >= wide::WIDE_MIN_MEMBERS)
    }

    /// The wide groups among an endpoint's groups.
    fn wide_of(&self, e: &Endpoint) -> Vec<GroupId> {
        if self.wide.is_empty() {
            return Vec::new();
        }
        wide::wide_of(&e.gids, &self.wide)
    }

    /// The identities that share a wide group with `wide`.
    fn identities_sharing(&self, wide: &[GroupId]) -> BTreeSet<Identity> {
        wide.iter()
            .filter_map(|g| self.identities_of.get(g))
            .flatten()
            .copied()
            .collect()
    }

    /// The local endpoints in a group of `wide` (task `id` is `e`).
    fn locals_sharing<'a>(
        &'a self,
        wide: &[GroupId],
        id: &str,
        e: &'a Endpoint,
    ) -> Vec<&'a Endpoint> {
        let ids: BTreeSet<&str> = wide
            .iter()
            .filter_map(|g| self.local_members.get(g))
            .flat_map(Members::iter)
            .map(|k| &**k)
            .collect();
        ids.into_iter()
            .filter_map(|k| {
                if k == id {
                    Some(e)
                } else {
                    self.local_eps.get(k)
                }
            })
            .collect()
    }

    /// Count one more (`add`) or one fewer endpoint with identity `ident`:
    /// true when the identity appeared or disappeared.
    fn count_identity(&mut self, ident: Identity, wide: &[GroupId], add: bool) -> bool {
        if add {
            let entry = self
                .identities
                .entry(ident)
                .or_insert_with(|| (wide.into(), 0));
            entry.1 += 1;
            if entry.1 > 1 {
                return false;
            }
            for g in wide {
                self.identities_of.entry(*g).or_default().insert(ident);
            }
            true
        } else {
            let Some(entry) = self.identities.get_mut(&ident) else {
                return false;
            };
            entry.1 -= 1;
            if entry.1 > 0 {
                return false;
            }
            self.identities.remove(&ident);
            for g in wide {
                if let Some(set) = self.identities_of.get_mut(g) {
                    set.remove(&ident);
                    if set.is_empty() {
                        self.identities_of.remove(g);
                    }
                }
            }
            true
        }
    }

    /// The identity elements of endpoint `e` (task `id`) entering (`add`)
    /// or leaving: its address -> identity, and the (local endpoint,
    /// identity) elements that come or go with it.
    fn identity_changes(
        &mut self,
        e: &Endpoint,
        id: &str,
        add: bool,
    ) -> Vec<(Family, SetName, Element)> {
        let mut out = Vec::new();
        let wide = self.wide_of(e);
        if wide.is_empty() {
            return out;
        }
        let ident = wide::identity(&wide);
        let mut sink = |f: Family, s: SetName, el: Element| out.push((f, s, el));
        wide::identity_elements(e, &ident, &mut sink);
        // A local endpoint's own (endpoint, identity) elements are counted
        // while its identity is not (entering) or no longer (leaving), so
        // that the pair with its own identity is emitted exactly once.
        let own = |st: &Self, sink: &mut Sink| {
            if e.is_local() {
                for other in st.identities_sharing(&wide) {
                    wide::wide_elements(e, &other, sink);
                }
            }
        };
        if add {
            own(self, &mut sink);
        }
        if self.count_identity(ident, &wide, add) {
            for local in self.locals_sharing(&wide, id, e) {
                wide::wide_elements(local, &ident, &mut sink);
            }
        }
        if !add {
            own(self, &mut sink);
        }
        out
    }

    /// Tasks that received an IP freed by the upserts and removals since
    /// the last call: their entries in the view changed too.
    pub fn take_handed_over(&mut self) -> Vec<TaskId> {
        std::mem::take(&mut self.handed_over)
    }

    /// The generation of the view, stamped into the table with it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Stamp the view with `generation`: the stamp in the kernel is replaced
    /// in the same transaction as the view's own changes.
    pub fn set_generation(&mut self, generation: u64) {
        let old = std::mem::replace(&mut self.generation, generation);
        if old == generation || !self.tracking {
            return;
        }
        let key = (Family::Inet, compile::GENERATION);
        if old != 0 {
            self.pending
                .record(key, compile::generation_element(old), false);
        }
        self.pending
            .record(key, compile::generation_element(generation), true);
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
        self.owners.get(ip).map(|s| &**s)
    }

    /// Replace the cluster view. IPs claimed by more than one live endpoint
    /// stay with their previous owner (or with nobody if none of the
    /// claimants had it): returns one message per conflict.
    pub fn set_view(&mut self, mut view: ClusterView) -> Vec<String> {
        for task in view.tasks.values_mut() {
            self.keep_last_good(task);
        }
        let (conflicts, waiting) = self.resolve_conflicts(&mut view);
        self.waiting = waiting;
        let old = &self.view.tasks;
        let mut changed: BTreeSet<TaskId> = BTreeSet::new();
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
        // Every old version out, then every new one in: a pair is removed
        // (or added) once, by whichever of its two tasks goes first.
        for id in &changed {
            self.retire(id);
        }
        self.view = view;
        self.reindex_owners();
        for id in &changed {
            self.admit(id);
        }
        // Forget the names of groups that are gone (the cache would grow
        // with every group name ever seen).
        self.settle_wide();
        let (members, open) = (&self.members, &self.policy.open_ids);
        self.gid_cache
            .retain(|_, g| members.contains_key(g) || open.contains(g));
        conflicts
    }

    /// Insert or replace one task (event sources): touches only that task.
    /// An IP another live task already owns stays with that task.
    pub fn upsert_task(&mut self, mut task: Task) -> Vec<String> {
        self.keep_last_good(&mut task);
        let original = task.clone();
        let (messages, lost_ips) = self.insert_task(task);
        if lost_ips {
            // Remember the claim: the IP goes to this task once its owner is gone.
            self.waiting.insert(original.id.clone(), original);
        } else {
            self.waiting.remove(&*original.id);
        }
        let mut messages = messages;
        messages.extend(self.hand_over_released());
        self.settle_wide();
        messages
    }

    /// Per-task bad data: a task whose new data the source rejected
    /// (`NotEnforced::Invalid`: an unparseable IP, an over-long name) keeps
    /// what the state had for it (the claim it waits with, else its task in
    /// the view) with the new reason in `invalid`, so garbage from the
    /// master never changes what is enforced; a task with nothing good yet
    /// stays not enforced. Other tasks are not touched either way. Logs
    /// each new reason once, and the return to valid data.
    fn keep_last_good(&self, task: &mut Task) {
        let id = &*task.id;
        let previous = self.waiting.get(id).or_else(|| self.view.tasks.get(id));
        let known_reason = previous.and_then(|p| p.invalid.clone());
        let last = previous.filter(|p| p.not_enforced != Some(NotEnforced::Invalid));
        let rejected = task.not_enforced == Some(NotEnforced::Invalid);
        // Kept data is either kept now, or was kept before (a persisted
        // view); a terminal task is not enforced whatever its data.
        let keeps = (!rejected || last.is_some()) && !task.state.is_terminal();
        match (&task.invalid, &known_reason) {
            (Some(why), known) if known.as_ref() != Some(why) => {
                if keeps {
                    warn!(task = id, app = %task.app, "task data rejected: {why}; keeping its last good data until the master sends valid data");
                } else {
                    warn!(task = id, app = %task.app, "task not enforced: {why}");
                }
            }
            (None, Some(_)) => {
                info!(task = id, app = %task.app, "task data valid again");
            }
            _ => {}
        }
        if let (true, Some(last)) = (rejected, last) {
            let why = task.invalid.take();
            *task = last.clone();
            task.invalid = why;
        }
    }

    fn insert_task(&mut self, mut task: Task) -> (Vec<String>, bool) {
        let mut messages = Vec::new();
        if task.is_endpoint() {
            let taken: Vec<IpAddr> = task
                .ips
                .iter()
                .filter(|ip| self.owners.get(ip).is_some_and(|o| *o != task.id))
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
        self.retire(&id);
        self.release_ips(&id);
        if task.is_endpoint() {
            for ip in &task.ips {
                self.owners.insert(*ip, id.clone());
            }
        }
        self.view.tasks.insert(id.clone(), task);
        self.admit(&id);
    }

    /// Forget one task (terminal, killed, app deleted).
    pub fn remove_task(&mut self, id: &str) {
        self.waiting.remove(id);
        self.retire(id);
        self.release_ips(id);
        self.view.tasks.remove(id);
        for m in self.hand_over_released() {
            tracing::info!("{m}");
        }
        self.settle_wide();
    }

    /// Give IPs that became free to the tasks that were waiting for them
    /// (in the same transaction as the removal that freed them).
    fn hand_over_released(&mut self) -> Vec<String> {
        let ready: Vec<TaskId> = self
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
                self.handed_over.push(id.clone());
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
                if self.owners.get(ip).is_some_and(|o| **o == *id) {
                    self.owners.remove(ip);
                }
            }
        }
    }

    /// Returns the messages and the tasks (as given) that lost an IP to its
    /// previous owner: they get it when that owner is gone.
    fn resolve_conflicts(&self, view: &mut ClusterView) -> (Vec<String>, BTreeMap<TaskId, Task>) {
        let mut waiting = BTreeMap::new();
        let mut messages = Vec::new();
        for IpConflict {
            ip,
            tasks: claimants,
        } in view.ip_conflicts()
        {
            let keeper = self
                .owners
                .get(&ip)
                .filter(|o| claimants.iter().any(|c| **c == ***o))
                .cloned();
            for id in &claimants {
                if keeper.as_deref() != Some(id.as_str()) {
                    if let Some(t) = view.tasks.get_mut(id.as_str()) {
                        if keeper.is_some() && !waiting.contains_key(id.as_str()) {
                            waiting.insert(TaskId::clone(&t.id), t.clone());
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
        self.owners
            .clear_for(self.view.endpoints().flat_map(|t| t.ips.iter()));
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
        let mut touched: BTreeSet<TaskId> = BTreeSet::new();
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
        self.settle_wide();
    }

    fn sync_names(&mut self, family: Family, set: SetName, new: BTreeSet<String>, bridges: bool) {
        let old = if bridges {
            self.bridges.clone()
        } else {
            self.ignored_ports.clone()
        };
        for n in new.difference(&old) {
            self.add_element(family, set, ifname_element(n));
        }
        for n in old.difference(&new) {
            self.del_element(family, set, ifname_element(n));
        }
    }

    fn local_bindings(&self, task: &Task) -> Vec<LocalBinding> {
        task.ips
            .iter()
            .filter_map(|ip| self.bindings.get(ip))
            .cloned()
            .collect()
    }

    /// The local bindings of a task changed: replace its elements and its
    /// pairs, if what it compiles to changed.
    fn recompute(&mut self, id: &str) {
        let old = self.compiled(id).map(Cow::into_owned);
        let new = self.compile(id);
        if old != new {
            self.withdraw(id, old);
            self.enter(id, new);
            self.settle_wide();
        }
    }

    /// What task `id` of the view compiles to now (bindings included).
    fn compile(&mut self, id: &str) -> Option<Endpoint> {
        match self.view.tasks.get(id) {
            Some(t) if t.is_endpoint() => {
                self.cache_group_ids(id);
                let t = self.view.tasks.get(id)?;
                Endpoint::of(t, self.group_ids(t), self.local_bindings(t), &self.policy)
            }
            _ => None,
        }
    }

    /// Remove task `id`'s elements and pairs, as the view has it now.
    fn retire(&mut self, id: &str) {
        let old = self.compiled(id).map(Cow::into_owned);
        self.withdraw(id, old);
        self.settle_wide();
    }

    /// Add task `id`'s elements and pairs, as the view has it now.
    fn admit(&mut self, id: &str) {
        let new = self.compile(id);
        self.enter(id, new);
        self.settle_wide();
    }

    /// Remove the elements and pairs of `old`, what task `id` compiled to.
    fn withdraw(&mut self, id: &str, old: Option<Endpoint>) {
        let Some(old) = old else {
            return;
        };
        self.queue(&old, id, false);
        self.unindex(&old, id);
        self.local_eps.remove(id);
    }

    /// Add the elements and pairs of `new`, what task `id` compiles to.
    fn enter(&mut self, id: &str, new: Option<Endpoint>) {
        let Some(new) = new else {
            return;
        };
        // The view's copy of the id, shared (endpoints are tasks of the view).
        let key = match self.view.tasks.get_key_value(id) {
            Some((key, _)) => TaskId::clone(key),
            None => TaskId::from(id),
        };
        self.index(&new, &key);
        self.queue(&new, id, true);
        if new.is_local() {
            self.local_eps.insert(key, new);
        }
    }

    /// Endpoint `id` as the elements reflect it now: local ones as kept,
    /// remote ones compiled from their task.
    fn compiled(&self, id: &str) -> Option<Cow<'_, Endpoint>> {
        if let Some(e) = self.local_eps.get(id) {
            return Some(Cow::Borrowed(e));
        }
        let task = self.view.tasks.get(id).filter(|t| t.is_endpoint())?;
        Endpoint::of(task, self.group_ids(task), Vec::new(), &self.policy).map(Cow::Owned)
    }

    /// Add (or remove) the elements of endpoint `e` (task `id`), its pairs included.
    fn queue(&mut self, e: &Endpoint, id: &str, add: bool) {
        let mut elements = Vec::new();
        let mut sink = |f: Family, s: SetName, el: Element| elements.push((f, s, el));
        compile::own_elements(e, &mut sink);
        for peer in self.peers(e, id) {
            if let Some(p) = self.compiled(peer) {
                compile::pair_elements(e, &p, &mut sink);
            }
        }
        elements.extend(self.identity_changes(e, id, add));
        for (f, s, el) in elements {
            if add {
                self.add_element(f, s, el);
            } else {
                self.del_element(f, s, el);
            }
        }
    }

    /// The endpoints `e` has pairs with: the members of its groups if it is
    /// local, else the local members of its groups (each once); wide groups
    /// excluded (their members are told apart by identity).
    fn peers<'a>(&'a self, e: &Endpoint, id: &str) -> HashSet<&'a str> {
        let index = if e.is_local() {
            &self.members
        } else {
            &self.local_members
        };
        e.gids
            .iter()
            .filter(|g| !self.wide.contains(*g))
            .filter_map(|g| index.get(g))
            .flat_map(Members::iter)
            .map(|k| &**k)
            .filter(|k| *k != id)
            .collect()
    }

    fn index(&mut self, e: &Endpoint, key: &TaskId) {
        self.dirty.extend(e.gids.iter().copied());
        for g in &e.gids {
            self.members.entry(*g).or_default().insert(key.clone());
            if e.is_local() {
                self.local_members
                    .entry(*g)
                    .or_default()
                    .insert(key.clone());
            }
        }
    }

    fn unindex(&mut self, e: &Endpoint, id: &str) {
        self.dirty.extend(e.gids.iter().copied());
        for index in [&mut self.members, &mut self.local_members] {
            for g in &e.gids {
                if let Some(m) = index.get_mut(g) {
                    m.remove(id);
                    if m.is_empty() {
                        index.remove(g);
                    }
                }
            }
        }
    }

    /// Hash the names of task `id`'s groups into the cache (once per name).
    fn cache_group_ids(&mut self, id: &str) {
        let Some(t) = self.view.tasks.get(id) else {
            return;
        };
        for name in compile::effective_groups(t, &self.policy) {
            self.gid_cache
                .entry(name)
                .or_insert_with_key(|n| compile::group_id(n));
        }
    }

    /// The ids of a task's effective groups (R3 applied), from the cache.
    fn group_ids(&self, t: &Task) -> Vec<GroupId> {
        let id = |name: &str| {
            self.gid_cache
                .get(name)
                .copied()
                .unwrap_or_else(|| compile::group_id(name))
        };
        match (&self.policy.ungrouped, t.groups.is_empty()) {
            (Ungrouped::Group(g), true) => vec![id(g)],
            _ => t.groups.keys().map(|n| id(n)).collect(),
        }
    }

    fn add_element(&mut self, family: Family, set: SetName, e: Element) {
        if (family, set) == (Family::Bridge, compile::PORTS) {
            let refs = self.port_refs.entry(e.clone()).or_insert(0);
            *refs += 1;
            if *refs > 1 {
                return;
            }
        }
        self.elements += 1;
        if self.tracking {
            self.pending.record((family, set), e, true);
        }
    }

    fn del_element(&mut self, family: Family, set: SetName, e: Element) {
        if (family, set) == (Family::Bridge, compile::PORTS) {
            let Some(refs) = self.port_refs.get_mut(&e) else {
                return;
            };
            *refs -= 1;
            if *refs > 0 {
                return;
            }
            self.port_refs.remove(&e);
        }
        self.elements = self.elements.saturating_sub(1);
        if self.tracking {
            self.pending.record((family, set), e, false);
        }
    }

    /// Record changes for [`take_delta`](Self::take_delta) (`true`, the
    /// default), or not (`false`: the caller will reconcile the whole table;
    /// what was pending is dropped).
    pub fn track_changes(&mut self, on: bool) {
        self.tracking = on;
        if !on {
            self.pending = Delta::default();
        }
    }

    /// The changes since the last call.
    pub fn take_delta(&mut self) -> Delta {
        std::mem::take(&mut self.pending)
    }

    /// The complete desired tables (inet, bridge), derived from the
    /// endpoints: the skeleton, every endpoint's own elements, and the pairs
    /// of every local endpoint with its peers.
    pub fn tables(&self) -> (Table, Table) {
        let (mut inet, mut bridge) = self.skeleton();
        let mut sink = |family: Family, set: SetName, e: Element| match family {
            Family::Inet => inet.insert(set, e),
            Family::Bridge => bridge.insert(set, e),
        };
        for id in self.view.tasks.keys() {
            let Some(e) = self.compiled(id) else {
                continue;
            };
            compile::own_elements(&e, &mut sink);
            let wide = self.wide_of(&e);
            if !wide.is_empty() {
                wide::identity_elements(&e, &wide::identity(&wide), &mut sink);
            }
            if e.is_local() {
                for peer in self.peers(&e, id) {
                    if let Some(p) = self.compiled(peer) {
                        compile::pair_elements(&e, &p, &mut sink);
                    }
                }
                for ident in self.identities_sharing(&wide) {
                    wide::wide_elements(&e, &ident, &mut sink);
                }
            }
        }
        for b in &self.bridges {
            sink(Family::Inet, compile::BRIDGES, ifname_element(b));
        }
        for p in &self.ignored_ports {
            sink(Family::Bridge, compile::IGNORED_PORTS, ifname_element(p));
        }
        if self.generation != 0 {
            let stamp = compile::generation_element(self.generation);
            sink(Family::Inet, compile::GENERATION, stamp);
        }
        (inet, bridge)
    }

    /// The chains and empty sets of the desired tables: with the rules for
    /// wide groups while there is one.
    pub fn skeleton(&self) -> (Table, Table) {
        compile::skeleton_for(&self.policy, !self.wide.is_empty())
    }

    /// Elements groupd keeps in the kernel (all sets).
    pub fn element_count(&self) -> usize {
        self.elements
    }

    /// The compiled form of an endpoint (for diagnostics).
    pub fn endpoint(&self, id: &str) -> Option<Endpoint> {
        self.compiled(id).map(Cow::into_owned)
    }
}

fn ifname_element(name: &str) -> Element {
    Element::set(&[KeyValue::Ifname(name)])
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
                        bridge: None,
                    },
                );
            }
        }
        st.set_view(view);
        st.set_bindings(bindings, BTreeSet::new(), BTreeSet::new());
        let _ = st.take_delta();
        st
    }

    fn count(d: &BTreeMap<(Family, SetName), BTreeSet<Element>>, set: SetName) -> usize {
        d.get(&(Family::Inet, set)).map_or(0, |s| s.len())
    }

    #[test]
    fn a_remote_task_change_touches_only_its_pairs_with_local_endpoints() {
        let mut st = big_state();
        // t1400 (g0, g1, g2) shares groups with local t0, t1, t2 (and with
        // t699..t701, remote). It moves to g5, shared with local t3..t5.
        st.upsert_task(task("t1400", "10.233.21.151", &["g5"]));
        let d = st.take_delta();
        // Its pairs with the local endpoints of its old groups go, those with
        // the local ones of g5 come: an egress and an ingress element each.
        assert_eq!(count(&d.del, compile::EGRESS4), 3, "{d:?}");
        assert_eq!(count(&d.del, compile::INGRESS4), 3, "{d:?}");
        assert_eq!(count(&d.add, compile::EGRESS4), 3, "{d:?}");
        assert_eq!(count(&d.add, compile::INGRESS4), 3, "{d:?}");
        assert_eq!(d.element_count(), 12, "endpoints unchanged: {d:?}");
    }

    #[test]
    fn groups_no_local_task_is_in_cost_nothing() {
        let mut st = big_state();
        // g600 has no local member: its members have no pairs in the kernel.
        st.upsert_task(task("t1500", "10.233.22.1", &["g600", "g601"]));
        let d = st.take_delta();
        assert_eq!(d.element_count(), 0, "{d:?}");
        // A local task joins g600: pairs with its members come in,
        // proportional to the group (9 members now, t1500 included).
        st.upsert_task(task("t7", "10.233.16.8", &["g600"]));
        let d = st.take_delta();
        assert_eq!(count(&d.add, compile::EGRESS4), 9, "{d:?}");
        assert_eq!(count(&d.add, compile::INGRESS4), 9, "{d:?}");
    }

    #[test]
    fn two_local_endpoints_sharing_a_group_pass_both_ways() {
        let mut st = big_state();
        // t0 and t1 (both local) share g1 and g2: one pair, whatever the count.
        let (inet, _) = st.tables();
        let pass = &inet.sets[compile::PASS4].1;
        let p01 = Element::set(&[
            KeyValue::Ifname("veth0"),
            KeyValue::Ip("10.233.16.1".parse().expect("ip")),
            KeyValue::Ip("10.233.16.2".parse().expect("ip")),
            KeyValue::Ifname("veth1"),
        ]);
        assert!(pass.contains(&p01));
        // t1 leaves g1: they still share g2.
        st.upsert_task(task("t1", "10.233.16.2", &["g2", "g3"]));
        let (inet, _) = st.tables();
        assert!(inet.sets[compile::PASS4].1.contains(&p01));
        // ... and g2: the pair goes.
        st.upsert_task(task("t1", "10.233.16.2", &["g3"]));
        let (inet, _) = st.tables();
        assert!(!inet.sets[compile::PASS4].1.contains(&p01));
    }

    #[test]
    fn a_local_task_change_is_elements_only() {
        let mut st = big_state();
        st.upsert_task(task("t7", "10.233.16.8", &["web"]));
        let d = st.take_delta();
        // Its pairs with the 9 other members of g7, g8, g9 go (t5..t11 are
        // local: their pass elements too); nothing comes (alone in "web").
        assert!(d.add.is_empty(), "{d:?}");
        assert!(count(&d.del, compile::EGRESS4) >= 6, "{d:?}");
    }

    #[test]
    fn an_ip_moving_to_a_task_in_another_group_is_one_delta() {
        let mut st = big_state();
        let mut view = st.view().clone();
        view.tasks.remove("t3");
        view.insert(task("new.1", "10.233.16.4", &["g100"]));
        st.set_view(view);
        let d = st.take_delta();
        let ip = KeyValue::Ip("10.233.16.4".parse().expect("ip"));
        let old_peer = KeyValue::Ip("10.233.16.5".parse().expect("ip")); // t4, shared g4 with t3
        let new_peer = KeyValue::Ip("10.233.16.101".parse().expect("ip")); // t100, in g100
        let e =
            |peer: &KeyValue| Element::set(&[KeyValue::Ifname("veth3"), ip.clone(), peer.clone()]);
        let egress = (Family::Inet, compile::EGRESS4);
        assert!(d.del[&egress].contains(&e(&old_peer)), "old pairs removed");
        assert!(
            d.add[&egress].contains(&e(&new_peer)),
            "new pairs added in the same delta"
        );
        assert_eq!(
            count(&d.del, compile::ENDPOINTS4),
            0,
            "the IP stays an endpoint"
        );
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
    fn a_local_task_removed_and_readded_before_the_transaction_changes_nothing() {
        let mut st = big_state();
        let t = st.view().tasks.get("t5").cloned().expect("t5");
        st.remove_task("t5");
        st.upsert_task(t);
        let d = st.take_delta();
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn a_claimed_ip_is_handed_over_when_its_owner_goes() {
        let mut st = big_state();
        let ip: IpAddr = "10.233.16.1".parse().expect("ip");
        st.upsert_task(task("successor", "10.233.16.1", &["public"]));
        assert_eq!(st.owner_of(&ip), Some("t0"), "the live owner keeps it");
        let _ = st.take_delta();
        st.remove_task("t0");
        assert_eq!(st.owner_of(&ip), Some("successor"), "handed over");
        let d = st.take_delta();
        assert_eq!(
            count(&d.del, compile::ENDPOINTS4),
            0,
            "the IP stays an endpoint: {d:?}"
        );
        assert_eq!(
            count(&d.add, compile::OPEN4),
            1,
            "open membership in the same delta: {d:?}"
        );
    }

    #[test]
    fn an_unchanged_snapshot_changes_nothing() {
        let mut st = big_state();
        let view = st.view().clone();
        st.set_view(view);
        assert!(st.take_delta().is_empty());
    }

    /// What the source makes of task `id` when the master's data is garbage.
    fn rejected(id: &str, why: &str) -> Task {
        let mut t = Task::running(id, "/a", [], &[]);
        t.not_enforced = Some(NotEnforced::Invalid);
        t.invalid = Some(why.into());
        t
    }

    #[test]
    fn a_task_with_garbage_keeps_its_last_good_data_and_nothing_else_changes() {
        let mut st = big_state();
        let (before, _) = st.tables();
        let good = st.view().tasks.get("t0").cloned().expect("t0");
        // An event with garbage for a local task, and one for a remote task.
        st.upsert_task(rejected("t0", "unparseable IP \"not-an-ip\""));
        st.upsert_task(rejected("t1000", "unparseable IP \"10.233.200.999\""));
        assert!(st.take_delta().is_empty(), "nothing changes in the kernel");
        assert_eq!(st.tables().0, before);
        let kept = &st.view().tasks["t0"];
        assert_eq!(
            kept.invalid.as_deref(),
            Some("unparseable IP \"not-an-ip\"")
        );
        assert_eq!((&kept.ips, &kept.groups), (&good.ips, &good.groups));
        assert!(kept.is_endpoint());
        // A snapshot with garbage for t0 (another reason) and a real change
        // for t1: only t1's change reaches the kernel.
        let mut view = st.view().clone();
        view.insert(rejected("t0", "group name \"xx…\" is 5242880 bytes"));
        view.insert(task("t1", "10.233.16.2", &["g3"]));
        st.set_view(view);
        let d = st.take_delta();
        assert!(!d.is_empty());
        let mut fresh = DesiredState::new(policy());
        let mut expected = st.view().clone();
        expected.insert(good.clone());
        fresh.set_view(expected);
        fresh.set_bindings(st.bindings.clone(), BTreeSet::new(), BTreeSet::new());
        assert_eq!(st.tables(), fresh.tables(), "t0 enforced as it was");
        assert!(st.view().tasks["t0"]
            .invalid
            .as_deref()
            .is_some_and(|w| w.starts_with("group name")));
        // Valid data again: it replaces the last good data.
        st.upsert_task(task("t0", "10.233.16.1", &["web"]));
        let t0 = &st.view().tasks["t0"];
        assert_eq!(t0.invalid, None);
        assert!(t0.groups.contains_key("web"));
    }

    #[test]
    fn a_new_task_with_garbage_is_not_enforced_and_takes_nothing() {
        let mut st = big_state();
        st.upsert_task(rejected("fresh", "unparseable IP \"not-an-ip\""));
        assert!(st.take_delta().is_empty());
        let t = &st.view().tasks["fresh"];
        assert_eq!(t.not_enforced, Some(NotEnforced::Invalid));
        assert!(!t.is_endpoint());
        // Garbage again: still nothing; then valid data is enforced.
        st.upsert_task(rejected("fresh", "unparseable IP \"again\""));
        assert_eq!(
            st.view().tasks["fresh"].not_enforced,
            Some(NotEnforced::Invalid)
        );
        st.upsert_task(task("fresh", "10.233.40.1", &["g0"]));
        assert_eq!(
            st.owner_of(&"10.233.40.1".parse().expect("ip")),
            Some("fresh")
        );
    }

    #[test]
    fn a_terminal_task_is_removed_even_after_garbage() {
        let mut st = big_state();
        st.upsert_task(rejected("t0", "unparseable IP \"x\""));
        let mut dead = task("t0", "10.233.16.1", &[]);
        dead.state = crate::model::TaskState::Killed;
        dead.not_enforced = Some(NotEnforced::Terminal);
        st.upsert_task(dead);
        assert_eq!(st.owner_of(&"10.233.16.1".parse().expect("ip")), None);
    }

    #[test]
    fn incremental_changes_end_where_a_fresh_compile_does() {
        let mut st = big_state();
        st.upsert_task(task("t1", "10.233.16.2", &["g3", "public"]));
        st.upsert_task(task("t900", "10.233.19.151", &["g0", "g5"]));
        st.remove_task("t2");
        st.upsert_task(task("late", "10.233.30.1", &["g1"]));
        let mut fresh = DesiredState::new(policy());
        fresh.set_view(st.view().clone());
        fresh.set_bindings(st.bindings.clone(), BTreeSet::new(), BTreeSet::new());
        assert_eq!(st.tables(), fresh.tables());
    }
}
