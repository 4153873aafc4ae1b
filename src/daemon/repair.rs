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
            self.reconcile_with(true);
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
        let (inet, bridge) = self.state.skeleton();
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::IpAddr;

    use super::*;
    use crate::binding::{Attachment, Bindings, TaskInterface};
    use crate::compile;
    use crate::config::Config;
    use crate::model::{ClusterView, Task};
    use crate::nft::damage::ElementChange;
    use crate::nft::{FakeKernel, KernelTable, Nft, Op, Scope};
    use crate::ruleset::{Element, Family, KeyValue};
    use crate::source::SourceUpdate;

    fn task(id: &str, ip: &str, groups: &[&str]) -> Task {
        Task::running(id, "/app", [ip.parse::<IpAddr>().expect("ip")], groups)
    }

    /// The daemon's state_dir, removed when the test ends (also on failure).
    struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A synced daemon in notify mode over the fake kernel: two local
    /// tasks, remote peers.
    fn daemon(name: &str) -> (Scratch, Daemon<FakeKernel>) {
        let dir = std::env::temp_dir().join(format!("groupd-repair-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = Config::parse(&format!(
            "[source]\nkind = \"file\"\npath = \"/x\"\n[daemon]\nstate_dir = {:?}\n",
            dir.display().to_string()
        ))
        .expect("config");
        let mut d = Daemon::new(config, Nft::new(FakeKernel::new()));
        d.tables.enable(true);
        let mut interfaces = BTreeMap::new();
        for (i, (name, ip)) in [("veth-a", "10.233.0.1"), ("veth-b", "10.233.0.2")]
            .into_iter()
            .enumerate()
        {
            interfaces.insert(
                name.to_string(),
                TaskInterface {
                    name: name.into(),
                    ifindex: i as u32 + 10,
                    ips: BTreeSet::from([ip.parse().expect("ip")]),
                    attachment: Attachment::Routed,
                },
            );
        }
        d.set_bindings(Bindings {
            interfaces,
            ..Default::default()
        });
        d.start();
        let mut view = ClusterView::default();
        for t in [
            task("a", "10.233.0.1", &["web"]),
            task("b", "10.233.0.2", &["db"]),
            task("r1", "10.233.7.1", &["web"]),
            task("r2", "10.233.7.2", &["web", "db"]),
        ] {
            view.insert(t);
        }
        d.on_source(SourceUpdate::Snapshot(view));
        (Scratch(dir), d)
    }

    fn kernel(d: &Daemon<FakeKernel>, family: Family) -> KernelTable {
        d.nft
            .dataplane()
            .table(family, "groupd")
            .cloned()
            .unwrap_or_default()
    }

    fn whole(d: &Daemon<FakeKernel>) -> bool {
        let (inet, bridge) = d.state.tables();
        [inet, bridge].iter().all(|t| {
            let k = kernel(d, t.family);
            k.exists && t.sets.iter().all(|(n, (_, e))| k.sets[n].elements == *e)
        })
    }

    fn touch(damage: Damage) -> Touch {
        Touch {
            what: "test",
            by_port: 1,
            damage,
        }
    }

    fn bound_a() -> Element {
        let ip: IpAddr = "10.233.0.1".parse().expect("ip");
        Element::set(&[KeyValue::Ifname("veth-a"), KeyValue::Ip(ip)])
    }

    #[test]
    fn the_kept_tables_follow_every_change() {
        let (_dir, mut d) = daemon("follow");
        d.on_source(SourceUpdate::Upsert(task("r3", "10.233.7.3", &["db"])));
        d.on_source(SourceUpdate::Remove("r1".into()));
        d.on_source(SourceUpdate::Upsert(task("b", "10.233.0.2", &["web"])));
        let kept = d.tables.take().expect("kept in notify mode");
        assert_eq!(kept, d.state.tables());
    }

    #[test]
    fn an_element_changed_by_someone_else_is_undone_alone() {
        let (_dir, mut d) = daemon("element");
        let transactions = d.health.transactions;
        let foreign = Element::set(&[KeyValue::Ip("10.9.9.9".parse().expect("ip"))]);
        d.nft
            .dataplane_mut()
            .commit(vec![
                Op::Elements {
                    family: Family::Inet,
                    table: "groupd",
                    set: compile::BOUND4,
                    data_len: 0,
                    elems: vec![&bound_a()],
                    add: false,
                },
                Op::Elements {
                    family: Family::Inet,
                    table: "groupd",
                    set: compile::ENDPOINTS4,
                    data_len: 0,
                    elems: vec![&foreign],
                    add: true,
                },
            ])
            .expect("tamper");
        assert!(!whole(&d));
        let mut damage = Damage::element(ElementChange {
            family: Family::Inet,
            set: compile::BOUND4.into(),
            element: bound_a(),
            added: false,
        });
        damage.merge(Damage::element(ElementChange {
            family: Family::Inet,
            set: compile::ENDPOINTS4.into(),
            element: foreign,
            added: true,
        }));
        d.repair_tamper(touch(damage));
        assert!(whole(&d));
        assert_eq!(d.health.transactions, transactions + 1);
        assert_eq!(d.health.tamper_repairs, 1);
    }

    #[test]
    fn a_deleted_table_is_written_again_from_the_kept_tables() {
        let (_dir, mut d) = daemon("table");
        d.nft
            .dataplane_mut()
            .commit(vec![Op::DeleteTable {
                family: Family::Inet,
                table: "groupd",
            }])
            .expect("tamper");
        assert!(!kernel(&d, Family::Inet).exists);
        d.repair_tamper(touch(Damage::Wide(Scope::Everything)));
        assert!(whole(&d));
        assert_eq!(d.health.tamper_repairs, 1);
        // The tables are kept for the next repair.
        assert!(d.tables.take().is_some());
    }

    #[test]
    fn a_change_that_needs_nothing_is_not_a_repair() {
        let (_dir, mut d) = daemon("nothing");
        // Someone deleted an element groupd does not want anyway.
        let stray = Element::set(&[KeyValue::Ip("10.9.9.9".parse().expect("ip"))]);
        d.repair_tamper(touch(Damage::element(ElementChange {
            family: Family::Inet,
            set: compile::ENDPOINTS4.into(),
            element: stray,
            added: false,
        })));
        assert!(whole(&d));
        assert_eq!(d.health.tamper_notifications, 1);
        assert_eq!(d.health.tamper_repairs, 0);
    }
}
