//! nf_tables over netlink: the only place that writes to the kernel.
//!
//! - [`Nft::apply_delta`]: an incremental change as one transaction.
//! - [`Nft::reconcile`]: read the tables back, diff against the desired
//!   tables, repair what differs in one transaction (start-up and drift).
//! - [`Nft::cleanup`]: delete groupd's tables.

pub mod encode;
pub mod nla;
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
}

impl Nft {
    pub fn open() -> Result<Nft, NftError> {
        Ok(Nft {
            sock: NfSocket::open()?,
        })
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
        for t in tables {
            let mut kernel = self.read(t.family, &t.name)?;
            if kernel.exists && !elements_match(t, &kernel) {
                // A hash set the kernel is still resizing (just after a
                // large insert) can be dumped with elements missing: look
                // again before calling a difference drift.
                std::thread::sleep(REREAD_AFTER);
                kernel = self.read(t.family, &t.name)?;
            }
            diff_table(t, &kernel, &mut requests, &mut report);
        }
        report.messages = requests.len();
        self.sock.transact(requests)?;
        Ok(report)
    }

    /// Delete groupd's tables (both families). Returns how many existed.
    pub fn cleanup(&mut self, table: &str) -> Result<usize, NftError> {
        let mut requests = Vec::new();
        for family in [Family::Inet, Family::Bridge] {
            if self.read_exists(family, table)? {
                requests.push(encode::delete_table(family, table));
            }
        }
        let sent = requests.len();
        self.sock.transact(requests)?;
        Ok(sent)
    }

    fn read_exists(&mut self, family: Family, table: &str) -> Result<bool, NftError> {
        use netlink_packet_netfilter::nftables::{NfTablesMessage, TableAttribute, TableMessage};
        let tables = self.sock.dump(
            encode::nl_family(family),
            NfTablesMessage::GetTable(TableMessage { attributes: vec![] }),
        )?;
        Ok(tables.iter().any(|m| match m {
            NfTablesMessage::NewTable(t) => t
                .attributes
                .iter()
                .any(|a| matches!(a, TableAttribute::Name(n) if n == table)),
            _ => false,
        }))
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

/// Whether the kernel holds exactly the elements `desired` wants.
fn elements_match(desired: &Table, kernel: &KernelTable) -> bool {
    desired
        .sets
        .iter()
        .all(|(name, (_, want))| kernel.sets.get(name).is_some_and(|k| k.elements == *want))
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
    out: &mut Vec<Request>,
    report: &mut ReconcileReport,
) {
    let (family, name) = (desired.family, desired.name.as_str());
    let structural_ok = kernel.exists
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
        create_table(desired, out);
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
fn create_table(t: &Table, out: &mut Vec<Request>) {
    out.push(encode::new_table(t.family, &t.name));
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
