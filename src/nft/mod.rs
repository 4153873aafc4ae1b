//! nf_tables over netlink: the only place that writes to the kernel.
//!
//! - [`Nft::apply_delta`]: an incremental change as one transaction.
//! - [`Nft::reconcile`]: read the tables back, diff against the desired
//!   tables, repair what differs in one transaction (start-up and drift).
//! - [`Nft::cleanup`]: delete groupd's tables.
//! - [`Nft::own_tables`]: from now on the kernel refuses changes to
//!   groupd's tables by anyone else (see [`ownership`]).

pub mod encode;
pub mod monitor;
pub mod nla;
pub mod ownership;
pub mod readback;
pub mod socket;
pub mod udata;

use std::collections::BTreeSet;

pub use readback::{KernelSet, KernelTable};
pub use socket::{NfSocket, NftError, Request};

use crate::ruleset::{Element, Family, SetDef, Table};
use crate::state::Delta;

/// What one reconcile found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// The table was missing or structurally different and was rebuilt.
    pub rebuilt: bool,
    pub elements_added: usize,
    pub elements_removed: usize,
    pub chains_rewritten: usize,
    pub messages: usize,
}

impl ReconcileReport {
    pub fn changed(&self) -> bool {
        self.messages > 0
    }
}

pub struct Nft {
    sock: NfSocket,
    /// Owner mode: tables are created owned and persistent by `sock`.
    owned: bool,
    /// What the next reconcile must read (see [`Nft::scope_next_reconcile`]).
    next_scope: Option<Scope>,
}

/// What a reconcile reads back: chains and set definitions always; the
/// elements of every set, or of the named sets only (a repair after a
/// notification named them: reading 40,000 elements to find the one that
/// was deleted is most of a repair's time).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    #[default]
    Everything,
    ElementsOf(BTreeSet<String>),
}

/// Both families groupd keeps a table in.
const FAMILIES: [Family; 2] = [Family::Inet, Family::Bridge];

impl Nft {
    pub fn open() -> Result<Nft, NftError> {
        Ok(Nft {
            sock: NfSocket::open()?,
            owned: false,
            next_scope: None,
        })
    }

    /// This socket's netlink port id (the sender of our own changes).
    pub fn port_id(&self) -> Result<u32, NftError> {
        self.sock.port_id()
    }

    /// Let the next [`Nft::reconcile`] (only that one) read the elements of
    /// the sets `scope` names only.
    pub fn scope_next_reconcile(&mut self, scope: Scope) {
        self.next_scope = Some(scope);
    }

    /// Owner mode, where the kernel supports it: claim orphaned tables
    /// named `table` now (their content untouched); tables that do not exist
    /// yet, or plain ones, are created owned by the next reconcile. Returns
    /// false, changing nothing, where the kernel cannot own tables.
    pub fn own_tables(&mut self, table: &str) -> Result<bool, NftError> {
        if !ownership::supported(&mut self.sock)? {
            return Ok(false);
        }
        let me = self.sock.port_id()?;
        let mut claims = Vec::new();
        for family in FAMILIES {
            let head = readback::read_table_head(&mut self.sock, family, table)?;
            match ownership::takeover(head, me) {
                ownership::Takeover::Claim => claims.push(encode::new_owned_table(family, table)),
                ownership::Takeover::OwnedByOther(port) => {
                    return Err(NftError::OwnedByOther {
                        table: format!("{} {table}", family_name(family)),
                        port,
                    })
                }
                ownership::Takeover::Nothing | ownership::Takeover::Rebuild => {}
            }
        }
        self.sock.transact(claims)?;
        self.owned = true;
        Ok(true)
    }

    pub fn read(&mut self, family: Family, table: &str) -> Result<KernelTable, NftError> {
        readback::read_table(&mut self.sock, family, table)
    }

    /// (packets, bytes) of the counted rules of every chain, by chain name.
    pub fn counters(
        &mut self,
        family: Family,
        table: &str,
    ) -> Result<std::collections::HashMap<String, Vec<(u64, u64)>>, NftError> {
        Ok(readback::read_chains(&mut self.sock, family, table)?
            .into_iter()
            .map(|(name, chain)| (name, chain.counters()))
            .collect())
    }

    /// Send an incremental change as one transaction. Returns the number of
    /// netlink messages sent.
    pub fn apply_delta(&mut self, table: &str, delta: &Delta) -> Result<usize, NftError> {
        let requests = delta_requests(table, delta);
        let sent = requests.len();
        self.sock.transact(requests)?;
        Ok(sent)
    }

    /// Make the kernel hold exactly `tables`, in one transaction.
    pub fn reconcile(&mut self, tables: &[&Table]) -> Result<ReconcileReport, NftError> {
        let mut requests = Vec::new();
        let mut report = ReconcileReport::default();
        let scope = self.next_scope.take().unwrap_or_default();
        let only = match &scope {
            Scope::Everything => None,
            Scope::ElementsOf(sets) => Some(sets),
        };
        for t in tables {
            let mut kernel = readback::read_table_scoped(&mut self.sock, t.family, &t.name, only)?;
            if kernel.exists && maybe_resizing(t, &kernel) {
                // A hash set the kernel is still resizing (just after a
                // large insert) can be dumped with elements missing: look
                // again before calling a difference drift.
                std::thread::sleep(REREAD_AFTER);
                kernel = readback::read_table_scoped(&mut self.sock, t.family, &t.name, only)?;
            }
            diff_table(t, &kernel, self.owned, &mut requests, &mut report);
        }
        report.messages = requests.len();
        self.sock.transact(requests)?;
        Ok(report)
    }

    /// Delete groupd's tables (both families). Returns how many existed.
    pub fn cleanup(&mut self, table: &str) -> Result<usize, NftError> {
        let mut requests = Vec::new();
        let me = self.sock.port_id()?;
        let mut deleted = 0;
        for family in FAMILIES {
            let head = readback::read_table_head(&mut self.sock, family, table)?;
            match ownership::takeover(head, me) {
                // A running groupd owns it: the kernel would refuse (EPERM).
                ownership::Takeover::OwnedByOther(port) => {
                    return Err(NftError::OwnedByOther {
                        table: format!("{} {table}", family_name(family)),
                        port,
                    })
                }
                // An orphan left by a stopped groupd: claimed first, so
                // nobody else can change it between the claim and the delete.
                ownership::Takeover::Claim => {
                    requests.push(encode::new_owned_table(family, table));
                    requests.push(encode::delete_table(family, table));
                }
                _ if head.is_some() => requests.push(encode::delete_table(family, table)),
                _ => continue,
            }
            deleted += 1;
        }
        self.sock.transact(requests)?;
        Ok(deleted)
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Inet => "inet",
        Family::Bridge => "bridge",
    }
}

/// Order inside one transaction: delete elements, then add them (an IP
/// that moves between tasks leaves before it arrives).
fn delta_requests(table: &str, d: &Delta) -> Vec<Request> {
    let mut out = Vec::new();
    for ((f, set), elems) in &d.del {
        out.extend(encode::elements(*f, table, set, elems, false));
    }
    for ((f, set), elems) in &d.add {
        out.extend(encode::elements(*f, table, set, elems, true));
    }
    out
}

/// How long to wait before reading a table again whose elements differ.
const REREAD_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// Fewer missing elements than this are not taken for a resize.
const RESIZE_MISSES: usize = 32;

/// Whether a difference in elements looks like a dump during a hash set
/// resize: only missing elements (a resize never shows extra ones), and
/// many of them (thousands were seen). A hand edit (`nft delete element`)
/// misses a few, and is repaired at once instead of 100 ms later.
fn maybe_resizing(desired: &Table, kernel: &KernelTable) -> bool {
    let mut missing = 0;
    for (name, (_, want)) in &desired.sets {
        if kernel.unread_sets.contains(name) {
            continue;
        }
        let Some(k) = kernel.sets.get(name) else {
            return false;
        };
        if !k.elements.is_subset(want) {
            return false;
        }
        missing += want.len() - k.elements.len();
    }
    missing >= RESIZE_MISSES
}

fn set_matches(def: &SetDef, k: &KernelSet) -> bool {
    let map_flag = 0x8;
    k.key_len == encode::key_len(&def.key)
        && k.key_type == encode::set_key_type(def)
        && k.flags & map_flag == 0
        && k.data_type.is_none()
}

/// Append the requests that turn `kernel` into `desired`.
fn diff_table(
    desired: &Table,
    kernel: &KernelTable,
    owned: bool,
    out: &mut Vec<Request>,
    report: &mut ReconcileReport,
) {
    let (family, name) = (desired.family, desired.name.as_str());
    // In owner mode a table we do not own (a plain one) is replaced by an
    // owned copy: a plain table cannot be claimed.
    let structural_ok = kernel.exists
        && (!owned || kernel.flags & ownership::OWNED == ownership::OWNED)
        && desired
            .sets
            .iter()
            .all(|(n, (def, _))| kernel.sets.get(n).is_some_and(|k| set_matches(def, k)))
        && kernel.sets.keys().all(|n| desired.sets.contains_key(n))
        && desired.chains.iter().filter(|c| c.base.is_some()).all(|c| {
            kernel
                .chains
                .get(&c.name)
                .is_some_and(|k| k.hook == c.base.map(|b| (b.hook, b.priority)))
        })
        && kernel
            .chains
            .iter()
            .all(|(n, k)| k.hook.is_none() || desired.chain(n).is_some_and(|c| c.base.is_some()));
    if !structural_ok {
        if kernel.exists {
            out.push(encode::delete_table(family, name));
        }
        create_table(desired, owned, out);
        report.rebuilt = true;
        report.elements_added += desired.sets.values().map(|(_, e)| e.len()).sum::<usize>();
        return;
    }
    // Chains: create missing ones first, then rewrite those whose rules differ.
    for c in &desired.chains {
        if !kernel.chains.contains_key(&c.name) {
            out.push(encode::new_chain(family, name, c));
        }
    }
    for c in &desired.chains {
        let want: Vec<String> = c.rules.iter().map(|r| r.tag()).collect();
        let have: Option<Vec<String>> = kernel.chains.get(&c.name).map(|k| {
            k.rules
                .iter()
                .map(|(_, t)| t.clone().unwrap_or_default())
                .collect()
        });
        if have.as_ref() != Some(&want) {
            if have.is_some_and(|h| !h.is_empty()) {
                out.push(encode::flush_chain(family, name, &c.name));
            }
            for r in &c.rules {
                out.push(encode::new_rule(family, name, &c.name, r));
            }
            report.chains_rewritten += 1;
        }
    }
    for (set, (_, want)) in &desired.sets {
        if kernel.unread_sets.contains(set) {
            continue;
        }
        let have = kernel.sets.get(set).map(|k| &k.elements);
        let empty = BTreeSet::new();
        let have = have.unwrap_or(&empty);
        let extra: Vec<&Element> = have.difference(want).collect();
        let missing: Vec<&Element> = want.difference(have).collect();
        report.elements_removed += extra.len();
        report.elements_added += missing.len();
        out.extend(encode::elements(family, name, set, extra, false));
        out.extend(encode::elements(family, name, set, missing, true));
    }
    for (n, _) in kernel
        .chains
        .iter()
        .filter(|(n, _)| desired.chain(n).is_none())
    {
        out.push(encode::delete_chain(family, name, n));
        report.chains_rewritten += 1;
    }
}

/// Everything needed to create `t` from nothing.
fn create_table(t: &Table, owned: bool, out: &mut Vec<Request>) {
    out.push(if owned {
        encode::new_owned_table(t.family, &t.name)
    } else {
        encode::new_table(t.family, &t.name)
    });
    for (i, (set, (def, _))) in t.sets.iter().enumerate() {
        out.push(encode::new_set(t.family, &t.name, set, def, i as u32 + 1));
    }
    for c in &t.chains {
        out.push(encode::new_chain(t.family, &t.name, c));
    }
    for c in &t.chains {
        for r in &c.rules {
            out.push(encode::new_rule(t.family, &t.name, &c.name, r));
        }
    }
    for (set, (_, elems)) in &t.sets {
        out.extend(encode::elements(t.family, &t.name, set, elems, true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::{KeyPart, KeyValue, SetDef};

    fn element(i: u8) -> Element {
        Element::set(&[KeyValue::Ip(std::net::Ipv4Addr::new(10, 233, 0, i).into())])
    }

    fn table_with(elements: &[u8]) -> (Table, KernelTable) {
        let mut desired = Table::new(Family::Inet, "groupd");
        let all: BTreeSet<Element> = (0..64u8).map(element).collect();
        let def = SetDef {
            key: vec![KeyPart::Ipv4],
        };
        desired.sets.insert("s".into(), (def, all));
        let mut kernel = KernelTable {
            exists: true,
            ..Default::default()
        };
        let have = elements.iter().copied().map(element).collect();
        kernel.sets.insert(
            "s".into(),
            KernelSet {
                elements: have,
                ..Default::default()
            },
        );
        (desired, kernel)
    }

    #[test]
    fn only_many_missing_elements_wait_for_a_resize() {
        let few: Vec<u8> = (1..64).collect();
        let (d, k) = table_with(&few);
        assert!(
            !maybe_resizing(&d, &k),
            "one element deleted by hand: repair at once"
        );
        let half: Vec<u8> = (0..32).collect();
        let (d, k) = table_with(&half);
        assert!(maybe_resizing(&d, &k), "half the set missing: look again");
        let mut extra: Vec<u8> = (0..16).collect();
        extra.push(200);
        let (d, k) = table_with(&extra);
        assert!(!maybe_resizing(&d, &k), "an extra element is no resize");
    }
}
