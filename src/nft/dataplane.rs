//! The seam between groupd and the kernel: what a transaction is made of
//! ([`Op`]), and what groupd needs from nf_tables ([`Dataplane`]): read a
//! table back, commit a list of operations atomically.
//!
//! [`Netlink`] is the real kernel; [`super::fake::FakeKernel`] applies the
//! same operations to an in-memory table so the daemon's rules (start-up,
//! fallback, drift repair) are tested without root.

use std::collections::BTreeSet;

use crate::ruleset::{Chain, Element, Family, Rule, SetDef};

use super::encode;
use super::ownership::{self, TableHead};
use super::readback::{self, KernelTable};
use super::socket::{NfSocket, NftError, Request};

/// One operation of a transaction, borrowing what it writes.
#[derive(Debug, Clone)]
pub enum Op<'a> {
    /// Create a table (no-op when it exists). `owned`: with the owner and
    /// persist flags, which also claims an orphaned persistent table.
    NewTable {
        family: Family,
        table: &'a str,
        owned: bool,
    },
    DeleteTable {
        family: Family,
        table: &'a str,
    },
    NewSet {
        family: Family,
        table: &'a str,
        name: &'a str,
        def: &'a SetDef,
        /// Transaction-local id (NFTA_SET_ID), unique within one batch.
        id: u32,
    },
    NewChain {
        family: Family,
        table: &'a str,
        chain: &'a Chain,
    },
    /// Delete every rule of a chain; the chain stays.
    FlushChain {
        family: Family,
        table: &'a str,
        chain: &'a str,
    },
    DeleteChain {
        family: Family,
        table: &'a str,
        chain: &'a str,
    },
    /// Append `rule` to `chain`.
    NewRule {
        family: Family,
        table: &'a str,
        chain: &'a str,
        rule: &'a Rule,
    },
    /// Add (`add`) or delete elements of a set; `data_len`: the bytes of
    /// a map element's value after its key (0 for a plain set).
    Elements {
        family: Family,
        table: &'a str,
        set: &'a str,
        data_len: usize,
        elems: Vec<&'a Element>,
        add: bool,
    },
}

impl Op<'_> {
    /// The netlink requests that carry this operation (elements are split
    /// into messages that fit a netlink attribute).
    pub fn encode(&self) -> Vec<Request> {
        match self {
            Op::NewTable {
                family,
                table,
                owned: false,
            } => vec![encode::new_table(*family, table)],
            Op::NewTable {
                family,
                table,
                owned: true,
            } => vec![encode::new_owned_table(*family, table)],
            Op::DeleteTable { family, table } => vec![encode::delete_table(*family, table)],
            Op::NewSet {
                family,
                table,
                name,
                def,
                id,
            } => vec![encode::new_set(*family, table, name, def, *id)],
            Op::NewChain {
                family,
                table,
                chain,
            } => vec![encode::new_chain(*family, table, chain)],
            Op::FlushChain {
                family,
                table,
                chain,
            } => vec![encode::flush_chain(*family, table, chain)],
            Op::DeleteChain {
                family,
                table,
                chain,
            } => vec![encode::delete_chain(*family, table, chain)],
            Op::NewRule {
                family,
                table,
                chain,
                rule,
            } => vec![encode::new_rule(*family, table, chain, rule)],
            Op::Elements {
                family,
                table,
                set,
                data_len,
                elems,
                add,
            } => encode::elements(*family, table, set, *data_len, elems.iter().copied(), *add),
        }
    }
}

/// What groupd needs from nf_tables.
pub trait Dataplane {
    /// Read table `table` of `family` back (`exists: false` when absent),
    /// the elements only of the sets in `elements_of` (all when `None`).
    fn read_scoped(
        &mut self,
        family: Family,
        table: &str,
        elements_of: Option<&BTreeSet<String>>,
    ) -> Result<KernelTable, NftError>;

    /// Read table `table` of `family` back, every element.
    fn read(&mut self, family: Family, table: &str) -> Result<KernelTable, NftError> {
        self.read_scoped(family, table, None)
    }

    /// The table's flags and owner (`None` when absent), without its contents.
    fn head(&mut self, family: Family, table: &str) -> Result<Option<TableHead>, NftError>;

    /// The chains of a table with their rules and counters, without the
    /// sets (cheap: what `groupctl status` needs).
    fn read_chains(
        &mut self,
        family: Family,
        table: &str,
    ) -> Result<std::collections::BTreeMap<String, readback::KernelChain>, NftError> {
        Ok(self
            .read_scoped(family, table, Some(&BTreeSet::new()))?
            .chains)
    }

    /// Commit `ops` as ONE atomic transaction: all or nothing.
    fn commit(&mut self, ops: Vec<Op<'_>>) -> Result<(), NftError>;

    /// The netlink port id our changes carry (notifications of our own
    /// changes are told apart by it).
    fn port_id(&self) -> Result<u32, NftError>;

    /// Whether tables can be owned here (NFT_TABLE_F_OWNER | PERSIST).
    fn supports_ownership(&mut self) -> Result<bool, NftError>;
}

/// A borrowed dataplane is one too (tests keep the fake and look into it).
impl<D: Dataplane + ?Sized> Dataplane for &mut D {
    fn read_scoped(
        &mut self,
        family: Family,
        table: &str,
        elements_of: Option<&BTreeSet<String>>,
    ) -> Result<KernelTable, NftError> {
        (**self).read_scoped(family, table, elements_of)
    }

    fn head(&mut self, family: Family, table: &str) -> Result<Option<TableHead>, NftError> {
        (**self).head(family, table)
    }

    fn read_chains(
        &mut self,
        family: Family,
        table: &str,
    ) -> Result<std::collections::BTreeMap<String, readback::KernelChain>, NftError> {
        (**self).read_chains(family, table)
    }

    fn commit(&mut self, ops: Vec<Op<'_>>) -> Result<(), NftError> {
        (**self).commit(ops)
    }

    fn port_id(&self) -> Result<u32, NftError> {
        (**self).port_id()
    }

    fn supports_ownership(&mut self) -> Result<bool, NftError> {
        (**self).supports_ownership()
    }
}

/// The real kernel, over one long-lived nfnetlink socket.
pub struct Netlink {
    sock: NfSocket,
}

impl Netlink {
    pub fn open() -> Result<Netlink, NftError> {
        Ok(Netlink {
            sock: NfSocket::open()?,
        })
    }
}

impl Dataplane for Netlink {
    fn read_scoped(
        &mut self,
        family: Family,
        table: &str,
        elements_of: Option<&BTreeSet<String>>,
    ) -> Result<KernelTable, NftError> {
        readback::read_table(&mut self.sock, family, table, elements_of)
    }

    fn head(&mut self, family: Family, table: &str) -> Result<Option<TableHead>, NftError> {
        readback::read_table_head(&mut self.sock, family, table)
    }

    fn read_chains(
        &mut self,
        family: Family,
        table: &str,
    ) -> Result<std::collections::BTreeMap<String, readback::KernelChain>, NftError> {
        readback::read_chains(&mut self.sock, family, table)
    }

    fn commit(&mut self, ops: Vec<Op<'_>>) -> Result<(), NftError> {
        // Encoded op by op, each op's borrowed form dropped as it goes.
        let mut requests = Vec::with_capacity(ops.len());
        for op in ops {
            requests.extend(op.encode());
        }
        self.sock.transact(requests)
    }

    fn port_id(&self) -> Result<u32, NftError> {
        self.sock.port_id()
    }

    fn supports_ownership(&mut self) -> Result<bool, NftError> {
        ownership::supported(&mut self.sock)
    }
}
