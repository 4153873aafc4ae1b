//! The members of one group, as the state's group index keeps them.
//!
//! Most groups have a handful of members: a hash set for each of 10,000
//! groups of 10 costs ~290 bytes per group, a sorted list of exactly that
//! many ids 160. A group that grows past [`FEW`] members switches to a hash
//! set, so that adding or removing a member stays O(1) in a group of
//! thousands.

use std::collections::HashSet;

use crate::model::TaskId;

/// Up to this many members are kept in a sorted list.
const FEW: usize = 32;

#[derive(Debug)]
pub enum Members {
    /// Sorted, without duplicates, no spare room.
    Few(Vec<TaskId>),
    /// Boxed: the group index holds one `Members` per group inline, and
    /// the few large groups should not make every entry twice the size.
    #[allow(clippy::box_collection)]
    Many(Box<HashSet<TaskId>>),
}

impl Default for Members {
    fn default() -> Members {
        Members::Few(Vec::new())
    }
}

impl Members {
    pub fn insert(&mut self, id: TaskId) {
        match self {
            Members::Few(list) => match list.binary_search(&id) {
                Ok(_) => {}
                Err(_) if list.len() >= FEW => {
                    let mut set: HashSet<TaskId> = list.drain(..).collect();
                    set.insert(id);
                    *self = Members::Many(Box::new(set));
                }
                Err(at) => {
                    list.reserve_exact(1);
                    list.insert(at, id);
                }
            },
            Members::Many(set) => {
                set.insert(id);
            }
        }
    }

    pub fn remove(&mut self, id: &str) {
        match self {
            Members::Few(list) => {
                if let Ok(at) = list.binary_search_by(|m| (**m).cmp(id)) {
                    list.remove(at);
                    list.shrink_to_fit();
                }
            }
            Members::Many(set) => {
                set.remove(id);
                if set.len() <= FEW / 2 {
                    let mut list: Vec<TaskId> = set.drain().collect();
                    list.sort_unstable();
                    *self = Members::Few(list);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Members::Few(list) => list.len(),
            Members::Many(set) => set.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Members::Few(list) => list.is_empty(),
            Members::Many(set) => set.is_empty(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &TaskId> {
        let (few, many) = match self {
            Members::Few(list) => (Some(list.iter()), None),
            Members::Many(set) => (None, Some(set.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Same contents as a plain set through growth past FEW and back.
    #[test]
    fn behaves_like_a_set_small_and_large() {
        let mut ours = Members::default();
        let mut theirs = BTreeSet::new();
        let id = |i: usize| TaskId::from(format!("task-{i:03}"));
        let check = |ours: &Members, theirs: &BTreeSet<TaskId>| {
            let got: BTreeSet<TaskId> = ours.iter().cloned().collect();
            assert_eq!(&got, theirs);
            assert_eq!(ours.iter().count(), theirs.len(), "no duplicates");
            assert_eq!(ours.is_empty(), theirs.is_empty());
        };
        for i in (0..3 * FEW).rev() {
            ours.insert(id(i));
            ours.insert(id(i));
            theirs.insert(id(i));
            check(&ours, &theirs);
        }
        assert!(matches!(ours, Members::Many(_)));
        for i in 0..3 * FEW {
            ours.remove(&id(i));
            ours.remove("not-a-member");
            theirs.remove(&id(i));
            check(&ours, &theirs);
        }
        assert!(matches!(ours, Members::Few(_)));
    }
}
