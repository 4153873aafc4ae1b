//! What a burst of changes by someone else did to groupd's tables, as
//! precisely as the nf_tables notifications tell it, so that a repair costs
//! what the damage costs: an element added or deleted is undone on its own,
//! a chain whose rules changed is rewritten on its own, and only what the
//! notifications cannot pin down (a table, set or chain created or deleted,
//! lost notifications) reads the tables back.

use std::collections::BTreeSet;

use super::Scope;
use crate::ruleset::{Element, Family};

/// More element changes than this in one burst (a set flushed by hand) are
/// not listed one by one: the touched sets are read back instead, which
/// costs no more than checking tens of thousands of elements singly.
pub const MAX_ELEMENT_CHANGES: usize = 1024;

/// One element added to or deleted from one of groupd's sets by someone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementChange {
    pub family: Family,
    pub set: String,
    pub element: Element,
    /// Added (NEWSETELEM) or deleted (DELSETELEM).
    pub added: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Only elements and rules changed, and every change is known.
    Precise {
        /// In the order the kernel committed them.
        elements: Vec<ElementChange>,
        /// Chains whose rules were added or deleted.
        chains: BTreeSet<(Family, String)>,
    },
    /// Something a notification does not describe fully: the repair reads
    /// back what `Scope` names and diffs it against the desired tables.
    Wide(Scope),
}

impl Default for Damage {
    fn default() -> Damage {
        Damage::Precise {
            elements: Vec::new(),
            chains: BTreeSet::new(),
        }
    }
}

impl Damage {
    pub fn element(change: ElementChange) -> Damage {
        Damage::Precise {
            elements: vec![change],
            chains: BTreeSet::new(),
        }
    }

    pub fn chain(family: Family, chain: String) -> Damage {
        Damage::Precise {
            elements: Vec::new(),
            chains: BTreeSet::from([(family, chain)]),
        }
    }

    /// Everything `self` and then `other` did.
    pub fn merge(&mut self, other: Damage) {
        *self = match (std::mem::take(self), other) {
            (
                Damage::Precise {
                    mut elements,
                    mut chains,
                },
                Damage::Precise {
                    elements: e2,
                    chains: c2,
                },
            ) => {
                elements.extend(e2);
                chains.extend(c2);
                if elements.len() > MAX_ELEMENT_CHANGES {
                    let sets = elements.into_iter().map(|c| c.set).collect();
                    // Chains are always read back by a scoped reconcile.
                    Damage::Wide(Scope::ElementsOf(sets))
                } else {
                    Damage::Precise { elements, chains }
                }
            }
            (a, b) => Damage::Wide(widen(a.scope(), b.scope())),
        };
    }

    /// What a read-back must cover to repair this damage.
    pub fn scope(self) -> Scope {
        match self {
            Damage::Precise { elements, .. } => {
                Scope::ElementsOf(elements.into_iter().map(|c| c.set).collect())
            }
            Damage::Wide(scope) => scope,
        }
    }
}

fn widen(a: Scope, b: Scope) -> Scope {
    match (a, b) {
        (Scope::ElementsOf(mut a), Scope::ElementsOf(b)) => {
            a.extend(b);
            Scope::ElementsOf(a)
        }
        _ => Scope::Everything,
    }
}

/// The net effect of `changes` on each element: the last change wins (an
/// element added and deleted again in one burst was deleted), so a repair
/// never deletes an element that is not there.
pub fn net(changes: &[ElementChange]) -> Vec<&ElementChange> {
    let mut seen = BTreeSet::new();
    let mut out: Vec<&ElementChange> = changes
        .iter()
        .rev()
        .filter(|c| seen.insert((c.family, c.set.as_str(), &c.element)))
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(set: &str, byte: u8, added: bool) -> ElementChange {
        ElementChange {
            family: Family::Inet,
            set: set.into(),
            element: Element {
                key: vec![byte; 4].into(),
            },
            added,
        }
    }

    #[test]
    fn precise_damage_stays_precise_until_it_is_too_much() {
        let mut d = Damage::element(change("bound4", 1, false));
        d.merge(Damage::chain(Family::Inet, "forward".into()));
        let Damage::Precise { elements, chains } = &d else {
            panic!("{d:?}");
        };
        assert_eq!(elements.len(), 1);
        assert!(chains.contains(&(Family::Inet, "forward".to_string())));
        for i in 0..MAX_ELEMENT_CHANGES {
            d.merge(Damage::element(change("pass4", i as u8, false)));
        }
        assert_eq!(
            d,
            Damage::Wide(Scope::ElementsOf(BTreeSet::from([
                "bound4".to_string(),
                "pass4".to_string()
            ])))
        );
    }

    #[test]
    fn a_wide_damage_absorbs_the_rest() {
        let mut d = Damage::element(change("bound4", 1, false));
        d.merge(Damage::Wide(Scope::ElementsOf(BTreeSet::new())));
        assert_eq!(
            d,
            Damage::Wide(Scope::ElementsOf(BTreeSet::from(["bound4".to_string()])))
        );
        d.merge(Damage::Wide(Scope::Everything));
        assert_eq!(d, Damage::Wide(Scope::Everything));
        d.merge(Damage::element(change("pass4", 1, true)));
        assert_eq!(d, Damage::Wide(Scope::Everything));
    }

    #[test]
    fn the_last_change_to_an_element_wins() {
        let changes = [
            change("pass4", 1, true),
            change("pass4", 2, false),
            change("pass4", 1, false),
            change("bound4", 1, true),
        ];
        let net: Vec<(&str, u8, bool)> = net(&changes)
            .into_iter()
            .map(|c| (c.set.as_str(), c.element.key[0], c.added))
            .collect();
        assert_eq!(
            net,
            [
                ("pass4", 2, false),
                ("pass4", 1, false),
                ("bound4", 1, true)
            ]
        );
    }
}
