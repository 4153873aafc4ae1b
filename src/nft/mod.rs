//! nf_tables: the only place that writes to the kernel.
//!
//! - [`Nft::apply_elements`]: an incremental change as one transaction.
//! - [`Nft::reconcile`]: read the tables back, diff against the desired
//!   tables, repair what differs in one transaction (start-up and drift).
//! - [`Nft::repair`]: undo a change by someone else that the notifications
//!   described fully (elements, rules), without reading the sets back.
//! - [`Nft::cleanup`]: delete groupd's tables.
//! - [`Nft::own_tables`]: from now on the kernel refuses changes to
//!   groupd's tables by anyone else (see [`ownership`]).
//!
//! The kernel itself sits behind [`Dataplane`]: [`Netlink`] in production,
//! [`FakeKernel`] in tests that need no root.

pub mod damage;
pub mod dataplane;
pub mod encode;
pub mod fake;
pub mod monitor;
pub mod nla;
pub mod ownership;
pub mod readback;
pub mod repair;
pub mod socket;
pub mod udata;

use std::collections::{BTreeMap, BTreeSet};

pub use dataplane::{Dataplane, Netlink, Op};
pub use fake::FakeKernel;
pub use readback::{KernelSet, KernelTable};
pub use socket::{NfSocket, NftError, Request};

use crate::ruleset::{Element, Family, SetDef, Table};

/// Element changes by (family, set): what an incremental change carries.
pub type ElementChanges = BTreeMap<(Family, &'static str), BTreeSet<Element>>;

/// What one reconcile found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// The table was missing or structurally different and was rebuilt.
    pub rebuilt: bool,
    pub elements_added: usize,
    pub elements_removed: usize,
    pub chains_rewritten: usize,
    /// Operations in the transaction (0: the kernel already matched).
    pub messages: usize,
}

impl ReconcileReport {
    pub fn changed(&self) -> bool {
        self.messages > 0
    }
}

/// groupd's tables in one [`Dataplane`].
pub struct Nft<D: Dataplane = Netlink> {
    dp: D,
    /// Owner mode: tables are created owned and persistent.
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

impl Nft<Netlink> {
    pub fn open() -> Result<Nft<Netlink>, NftError> {
        Ok(Nft::new(Netlink::open()?))
    }
}

impl<D: Dataplane> Nft<D> {
    pub fn new(dp: D) -> Nft<D> {
        Nft {
            dp,
            owned: false,
            next_scope: None,
        }
    }

    /// The port id our own changes carry.
    pub fn port_id(&self) -> Result<u32, NftError> {
        self.dp.port_id()
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
        if !self.dp.supports_ownership()? {
            return Ok(false);
        }
        let me = self.dp.port_id()?;
        let mut claims = Vec::new();
        for family in FAMILIES {
            let head = self.dp.head(family, table)?;
            match ownership::takeover(head, me) {
                ownership::Takeover::Claim => claims.push(Op::NewTable {
                    family,
                    table,
                    owned: true,
                }),
                ownership::Takeover::OwnedByOther(port) => {
                    return Err(NftError::OwnedByOther {
                        table: format!("{} {table}", family.as_str()),
                        port,
                    })
                }
                ownership::Takeover::Nothing | ownership::Takeover::Rebuild => {}
            }
        }
        self.dp.commit(claims)?;
        self.owned = true;
        Ok(true)
    }

    pub fn dataplane(&self) -> &D {
        &self.dp
    }

    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dp
    }

    pub fn read(&mut self, family: Family, table: &str) -> Result<KernelTable, NftError> {
        self.dp.read(family, table)
    }

    /// (packets, bytes) of the counted rules of every chain, by chain name.
    pub fn counters(
        &mut self,
        family: Family,
        table: &str,
    ) -> Result<std::collections::HashMap<String, Vec<(u64, u64)>>, NftError> {
        Ok(self
            .dp
            .read_chains(family, table)?
            .into_iter()
            .map(|(name, chain)| (name, chain.counters()))
            .collect())
    }

    /// Send an incremental change as one transaction: deletions first, then
    /// additions (an IP that moves between tasks leaves before it arrives).
    /// Returns the number of operations sent.
    /// `data_len` gives the value length of each map (0 for plain sets).
    pub fn apply_elements(
        &mut self,
        table: &str,
        del: &ElementChanges,
        add: &ElementChanges,
        data_len: impl Fn(&str) -> usize,
    ) -> Result<usize, NftError> {
        let mut ops = Vec::new();
        for (changes, add) in [(del, false), (add, true)] {
            for ((family, set), elems) in changes {
                ops.push(Op::Elements {
                    family: *family,
                    table,
                    set,
                    data_len: data_len(set),
                    elems: elems.iter().collect(),
                    add,
                });
            }
        }
        let sent = ops.len();
        self.dp.commit(ops)?;
        Ok(sent)
    }

    /// Make the kernel hold exactly `tables`, in one transaction.
    pub fn reconcile(&mut self, tables: &[&Table]) -> Result<ReconcileReport, NftError> {
        let scope = self.next_scope.take().unwrap_or_default();
        let only = match &scope {
            Scope::Everything => None,
            Scope::ElementsOf(sets) => Some(sets),
        };
        let mut kernels = Vec::with_capacity(tables.len());
        for t in tables {
            let mut kernel = self.dp.read_scoped(t.family, &t.name, only)?;
            if kernel.exists && maybe_resizing(t, &kernel) {
                // A hash set the kernel is still resizing (just after a
                // large insert) can be dumped with elements missing: look
                // again before calling a difference drift.
                std::thread::sleep(REREAD_AFTER);
                kernel = self.dp.read_scoped(t.family, &t.name, only)?;
            }
            kernels.push(kernel);
        }
        let mut ops = Vec::new();
        let mut report = ReconcileReport::default();
        for (t, kernel) in tables.iter().zip(&kernels) {
            diff_table(t, kernel, self.owned, &mut ops, &mut report);
        }
        report.messages = ops.len();
        self.dp.commit(ops)?;
        Ok(report)
    }

    /// Delete groupd's tables (both families). Returns how many existed.
    pub fn cleanup(&mut self, table: &str) -> Result<usize, NftError> {
        let me = self.dp.port_id()?;
        let mut ops = Vec::new();
        let mut deleted = 0;
        for family in FAMILIES {
            let head = self.dp.head(family, table)?;
            match ownership::takeover(head, me) {
                // A running groupd owns it: the kernel would refuse (EPERM).
                ownership::Takeover::OwnedByOther(port) => {
                    return Err(NftError::OwnedByOther {
                        table: format!("{} {table}", family.as_str()),
                        port,
                    })
                }
                // An orphan left by a stopped groupd: claimed first, so
                // nobody else can change it between the claim and the delete.
                ownership::Takeover::Claim => {
                    ops.push(Op::NewTable {
                        family,
                        table,
                        owned: true,
                    });
                    ops.push(Op::DeleteTable { family, table });
                }
                _ if head.is_some() => ops.push(Op::DeleteTable { family, table }),
                _ => continue,
            }
            deleted += 1;
        }
        self.dp.commit(ops)?;
        Ok(deleted)
    }
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
    let kind_matches = if def.is_map() {
        k.flags & map_flag != 0
            && k.data_type == Some(encode::MAP_DATA_TYPE)
            && k.data_len == Some(def.data_len as u32)
    } else {
        k.flags & map_flag == 0 && k.data_type.is_none()
    };
    k.key_len == encode::key_len(&def.key)
        && k.key_type == encode::set_key_type(def)
        && kind_matches
}

/// Append the operations that turn `kernel` into `desired`.
pub fn diff_table<'a>(
    desired: &'a Table,
    kernel: &'a KernelTable,
    owned: bool,
    out: &mut Vec<Op<'a>>,
    report: &mut ReconcileReport,
) {
    let (family, table) = (desired.family, desired.name.as_str());
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
            out.push(Op::DeleteTable { family, table });
        }
        create_table(desired, owned, out);
        report.rebuilt = true;
        report.elements_added += desired.sets.values().map(|(_, e)| e.len()).sum::<usize>();
        return;
    }
    // Chains: create missing ones first, then rewrite those whose rules differ.
    for chain in &desired.chains {
        if !kernel.chains.contains_key(&chain.name) {
            out.push(Op::NewChain {
                family,
                table,
                chain,
            });
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
                out.push(Op::FlushChain {
                    family,
                    table,
                    chain: &c.name,
                });
            }
            for rule in &c.rules {
                out.push(Op::NewRule {
                    family,
                    table,
                    chain: &c.name,
                    rule,
                });
            }
            report.chains_rewritten += 1;
        }
    }
    static EMPTY: BTreeSet<Element> = BTreeSet::new();
    for (set, (def, want)) in &desired.sets {
        if kernel.unread_sets.contains(set) {
            continue;
        }
        let have = kernel.sets.get(set).map_or(&EMPTY, |k| &k.elements);
        let extra: Vec<&Element> = have.difference(want).collect();
        let missing: Vec<&Element> = want.difference(have).collect();
        report.elements_removed += extra.len();
        report.elements_added += missing.len();
        for (elems, add) in [(extra, false), (missing, true)] {
            if !elems.is_empty() {
                out.push(Op::Elements {
                    family,
                    table,
                    set,
                    data_len: def.data_len,
                    elems,
                    add,
                });
            }
        }
    }
    for chain in kernel.chains.keys().filter(|n| desired.chain(n).is_none()) {
        out.push(Op::DeleteChain {
            family,
            table,
            chain,
        });
        report.chains_rewritten += 1;
    }
}

/// Everything needed to create `t` from nothing.
fn create_table<'a>(t: &'a Table, owned: bool, out: &mut Vec<Op<'a>>) {
    let (family, table) = (t.family, t.name.as_str());
    out.push(Op::NewTable {
        family,
        table,
        owned,
    });
    for (i, (name, (def, _))) in t.sets.iter().enumerate() {
        out.push(Op::NewSet {
            family,
            table,
            name,
            def,
            id: i as u32 + 1,
        });
    }
    for chain in &t.chains {
        out.push(Op::NewChain {
            family,
            table,
            chain,
        });
    }
    for c in &t.chains {
        for rule in &c.rules {
            out.push(Op::NewRule {
                family,
                table,
                chain: &c.name,
                rule,
            });
        }
    }
    for (set, (def, elems)) in &t.sets {
        if !elems.is_empty() {
            out.push(Op::Elements {
                family,
                table,
                set,
                data_len: def.data_len,
                elems: elems.iter().collect(),
                add: true,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::{KeyPart, KeyValue};

    fn element(i: u8) -> Element {
        Element::set(&[KeyValue::Ip(std::net::Ipv4Addr::new(10, 233, 0, i).into())])
    }

    fn table_with(elements: &[u8]) -> (Table, KernelTable) {
        let mut desired = Table::new(Family::Inet, "groupd");
        let all: BTreeSet<Element> = (0..64u8).map(element).collect();
        let def = SetDef {
            key: vec![KeyPart::Ipv4],
            data_len: 0,
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
