//! An in-memory nf_tables: applies the same [`Op`]s the netlink dataplane
//! sends to plain [`KernelTable`] values, with the kernel's transaction
//! rules (all or nothing; deleting what does not exist fails the batch).
//! Lets the daemon's start-up and repair rules be tested without root.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use super::dataplane::{Dataplane, Op};
use super::ownership::{self, TableHead};
use super::readback::{KernelChain, KernelSet, KernelTable};
use super::socket::NftError;
use super::{encode, udata};
use crate::ruleset::Family;

/// The fake kernel's state and the knobs a test turns.
#[derive(Debug, Default, Clone)]
pub struct FakeKernel {
    pub tables: BTreeMap<(Family, String), KernelTable>,
    /// Committed transactions so far.
    pub commits: usize,
    /// Fail this many of the next commits (as the kernel would on, e.g.,
    /// a message too large), leaving the tables unchanged.
    pub fail_commits: usize,
    /// Fail reads (a netlink socket that errors).
    pub fail_reads: bool,
    /// Whether tables can be owned (a kernel of Linux 6.9 or later).
    pub ownership: bool,
    next_handle: u64,
}

fn rejected(index: usize, what: &str, errno: i32) -> NftError {
    NftError::Rejected {
        index,
        what: what.to_string(),
        source: io::Error::from_raw_os_error(errno),
    }
}

impl FakeKernel {
    pub fn new() -> FakeKernel {
        FakeKernel::default()
    }

    /// The table as a reader would see it (`None` when absent).
    pub fn table(&self, family: Family, name: &str) -> Option<&KernelTable> {
        self.tables.get(&(family, name.to_string()))
    }

    fn apply(&mut self, index: usize, op: &Op<'_>) -> Result<(), NftError> {
        let key = |family: Family, table: &str| (family, table.to_string());
        let missing = |what: &str| rejected(index, what, libc::ENOENT);
        match op {
            Op::NewTable {
                family,
                table,
                owned,
            } => {
                if *owned && !self.ownership {
                    return Err(rejected(index, "new owned table", libc::EOPNOTSUPP));
                }
                let t = self
                    .tables
                    .entry(key(*family, table))
                    .or_insert_with(|| KernelTable {
                        exists: true,
                        ..Default::default()
                    });
                if *owned {
                    t.flags |= ownership::OWNED;
                }
            }
            Op::DeleteTable { family, table } => {
                self.tables
                    .remove(&key(*family, table))
                    .ok_or_else(|| missing("delete table"))?;
            }
            Op::NewSet {
                family,
                table,
                name,
                def,
                ..
            } => {
                let t = self
                    .tables
                    .get_mut(&key(*family, table))
                    .ok_or_else(|| missing("new set"))?;
                t.sets.entry(name.to_string()).or_insert_with(|| KernelSet {
                    key_len: encode::key_len(&def.key),
                    key_type: encode::set_key_type(def),
                    flags: if def.is_map() { 0x8 } else { 0 },
                    data_type: def.is_map().then_some(encode::MAP_DATA_TYPE),
                    data_len: def.is_map().then_some(def.data_len as u32),
                    userdata: encode::set_userdata(def),
                    elements: Default::default(),
                });
            }
            Op::NewChain {
                family,
                table,
                chain,
            } => {
                let t = self
                    .tables
                    .get_mut(&key(*family, table))
                    .ok_or_else(|| missing("new chain"))?;
                t.chains
                    .entry(chain.name.clone())
                    .or_insert_with(|| KernelChain {
                        hook: chain.base.map(|b| (b.hook, b.priority)),
                        policy: chain.base.map(|_| 1),
                        ..Default::default()
                    });
            }
            Op::FlushChain {
                family,
                table,
                chain,
            } => {
                let c = self
                    .tables
                    .get_mut(&key(*family, table))
                    .and_then(|t| t.chains.get_mut(*chain))
                    .ok_or_else(|| missing("flush chain"))?;
                c.rules.clear();
                c.rule_counters.clear();
            }
            Op::DeleteChain {
                family,
                table,
                chain,
            } => {
                self.tables
                    .get_mut(&key(*family, table))
                    .and_then(|t| t.chains.remove(*chain))
                    .ok_or_else(|| missing("delete chain"))?;
            }
            Op::NewRule {
                family,
                table,
                chain,
                rule,
            } => {
                self.next_handle += 1;
                let handle = self.next_handle;
                let c = self
                    .tables
                    .get_mut(&key(*family, table))
                    .and_then(|t| t.chains.get_mut(*chain))
                    .ok_or_else(|| missing("new rule"))?;
                // The tag travels as the rule's comment, as over netlink.
                let comment = udata::rule_comment(&udata::rule_comment_bytes(&rule.tag()));
                c.rules.push((handle, comment));
                c.rule_counters.push(rule.counter.then_some((0, 0)));
            }
            Op::Elements {
                family,
                table,
                set,
                data_len,
                elems,
                add,
            } => {
                let s = self
                    .tables
                    .get_mut(&key(*family, table))
                    .and_then(|t| t.sets.get_mut(*set))
                    .ok_or_else(|| missing("set elements"))?;
                for e in elems {
                    // As the kernel: a map element is found by its key; adding
                    // a key that maps to another value is refused (EBUSY).
                    let key_of = |x: &crate::ruleset::Element| x.split(*data_len).0.to_vec();
                    let same_key = s.elements.iter().find(|x| key_of(x) == key_of(e)).cloned();
                    match (same_key, *add) {
                        (Some(x), true) if x != **e => {
                            return Err(NftError::Rejected {
                                index: 0,
                                what: format!("add element to map {set:?}"),
                                source: io::Error::from_raw_os_error(libc::EBUSY),
                            })
                        }
                        (_, true) => {
                            s.elements.insert((*e).clone());
                        }
                        (Some(x), false) => {
                            s.elements.remove(&x);
                        }
                        (None, false) => return Err(missing("delete element")),
                    }
                }
            }
        }
        Ok(())
    }
}

impl Dataplane for FakeKernel {
    fn read_scoped(
        &mut self,
        family: Family,
        table: &str,
        elements_of: Option<&BTreeSet<String>>,
    ) -> Result<KernelTable, NftError> {
        if self.fail_reads {
            return Err(NftError::Io(io::Error::other("fake kernel: reads fail")));
        }
        let mut t = self.table(family, table).cloned().unwrap_or_default();
        if let Some(only) = elements_of {
            for (name, set) in t.sets.iter_mut() {
                if !only.contains(name) {
                    set.elements.clear();
                    t.unread_sets.insert(name.clone());
                }
            }
        }
        Ok(t)
    }

    fn head(&mut self, family: Family, table: &str) -> Result<Option<TableHead>, NftError> {
        if self.fail_reads {
            return Err(NftError::Io(io::Error::other("fake kernel: reads fail")));
        }
        Ok(self.table(family, table).map(|t| TableHead {
            flags: t.flags,
            owner: (t.flags & ownership::OWNER != 0).then_some(1),
        }))
    }

    fn port_id(&self) -> Result<u32, NftError> {
        Ok(1)
    }

    fn supports_ownership(&mut self) -> Result<bool, NftError> {
        Ok(self.ownership)
    }

    fn commit(&mut self, ops: Vec<Op<'_>>) -> Result<(), NftError> {
        if ops.is_empty() {
            return Ok(());
        }
        if self.fail_commits > 0 {
            self.fail_commits -= 1;
            return Err(rejected(0, "batch", libc::EMSGSIZE));
        }
        // All or nothing: work on a copy, keep it only if every op applies.
        let mut next = self.clone();
        for (i, op) in ops.iter().enumerate() {
            next.apply(i, op)?;
        }
        next.commits += 1;
        *self = next;
        Ok(())
    }
}
