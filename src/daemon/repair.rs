//! Notify mode: undo a change to groupd's tables by someone else at the
//! cost of the change. Elements added or deleted are checked one by one
//! against the desired state and put back or taken out; chains whose rules
//! changed are rewritten from the skeleton; nothing is compiled and no set
//! is read. What the notifications do not describe fully (a table, set or
//! chain created or deleted, lost notifications, more elements than are
//! worth checking singly) falls back to the scoped read-back and diff.

use std::time::Instant;

use tracing::warn;

use super::Daemon;
use crate::compile;
use crate::nft::damage::{self, Damage, ElementChange};
use crate::nft::monitor::Touch;
use crate::nft::repair::{ElementFix, NotPrecise};
use crate::nft::Dataplane;
use crate::ruleset::Table;

impl<D: Dataplane> Daemon<D> {
    /// Repair what `touch` reports. Counts the notification, and the repair
    /// when something had to be undone.
    pub fn repair_tamper(&mut self, touch: Touch) {
        self.health.tamper_notifications += 1;
        // Before the first reconcile the kernel's table is the newest
        // truth: the start-up logic decides, not a repair.
        if !self.synced {
            return;
        }
        warn!(
            change = touch.what,
            by_port = touch.by_port,
            "groupd's table was changed by another process; repairing"
        );
        let repaired = self.health.drift_repairs;
        let scope = touch.damage.clone().scope();
        let precise = match touch.damage {
            Damage::Precise { elements, chains } if self.state.nothing_pending() => {
                self.repair_precisely(&elements, &chains)
            }
            _ => false,
        };
        if !precise {
            self.nft.scope_next_reconcile(scope);
            self.verify();
        }
        if self.health.drift_repairs > repaired {
            self.health.tamper_repairs += 1;
        }
    }

    /// Undo `elements` and rewrite `chains` in one transaction; false when
    /// only a read-back can tell what to do (nothing was changed then).
    fn repair_precisely(
        &mut self,
        elements: &[ElementChange],
        chains: &std::collections::BTreeSet<(crate::ruleset::Family, String)>,
    ) -> bool {
        let started = Instant::now();
        let (inet, bridge) = compile::skeleton(self.state.policy());
        let skeleton: [&Table; 2] = [&inet, &bridge];
        let mut fixes = Vec::new();
        for change in damage::net(elements) {
            let Some(table) = skeleton.iter().find(|t| t.family == change.family) else {
                return false;
            };
            // A set that is not groupd's was created by someone else.
            let Some((def, _)) = table.sets.get(&change.set) else {
                return false;
            };
            let wanted = self
                .state
                .holds(change.family, &change.set, def, &change.element);
            if wanted != change.added {
                fixes.push(ElementFix {
                    family: change.family,
                    set: &change.set,
                    element: &change.element,
                    add: wanted,
                });
            }
        }
        match self.nft.repair(&skeleton, chains, &fixes) {
            Ok(report) => {
                self.kernel_failing = false;
                if report.changed() {
                    self.count_transaction(started);
                    self.health.drift_repairs += 1;
                    warn!(
                        ?report,
                        ms = self.health.last_apply_ms,
                        "repaired the change by another process"
                    );
                }
                self.note_kernel_state();
                true
            }
            Err(NotPrecise::Structure(why)) => {
                warn!("{why}: reading the tables back to repair them");
                false
            }
            Err(NotPrecise::Kernel(e)) => {
                // E.g. an element deleted since the notification: the
                // read-back finds out what the kernel holds now.
                self.health.transaction_errors += 1;
                warn!("targeted repair failed ({e}); reading the tables back to repair them");
                false
            }
        }
    }
}
