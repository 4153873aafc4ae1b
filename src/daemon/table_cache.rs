//! Notify mode only: the desired tables, compiled, kept between repairs.
//!
//! A deleted table can only be repaired by writing all of it again; compiling
//! it first costs as much as the kernel's write (about 50 ms at 10,000
//! groups), so the tables a reconcile compiled are kept and followed by every
//! delta the daemon commits, and a repair writes them as they are. In owner
//! mode the kernel refuses tampering and nothing is kept: the cache costs
//! memory (about 2.5 MB at 40,000 elements) only where it buys time.
//!
//! Invariant: when present, the tables equal what
//! [`crate::state::DesiredState::tables`] would compile minus the changes
//! still pending; a repair uses them only when nothing is pending.

use crate::ruleset::{Family, Table};
use crate::state::Delta;

#[derive(Default)]
pub struct TableCache {
    enabled: bool,
    tables: Option<(Table, Table)>,
}

impl TableCache {
    /// Keep tables from now on (notify mode), or not.
    pub fn enable(&mut self, on: bool) {
        self.enabled = on;
        if !on {
            self.tables = None;
        }
    }

    /// The tables for a repair, taken out (give them back with [`keep`](Self::keep)).
    pub fn take(&mut self) -> Option<(Table, Table)> {
        self.tables.take()
    }

    /// Keep `tables`, freshly compiled or taken out for a repair.
    pub fn keep(&mut self, tables: (Table, Table)) {
        if self.enabled {
            self.tables = Some(tables);
        }
    }

    /// Forget the tables: the next compile replaces them.
    pub fn clear(&mut self) {
        self.tables = None;
    }

    /// `delta` was committed: the tables follow it.
    pub fn follow(&mut self, delta: &Delta) {
        let Some((inet, bridge)) = &mut self.tables else {
            return;
        };
        let table = |family| match family {
            Family::Inet => 0,
            Family::Bridge => 1,
        };
        let both = [inet, bridge];
        for ((family, set), elems) in &delta.del {
            if let Some((_, have)) = both[table(*family)].sets.get_mut(*set) {
                for e in elems {
                    have.remove(e);
                }
            }
        }
        for ((family, set), elems) in &delta.add {
            for e in elems {
                both[table(*family)].insert(set, e.clone());
            }
        }
    }
}
