//! The loop: source updates and interface bindings -> desired state ->
//! one nftables transaction; periodic read-back repairs drift.
//!
//! Kernel I/O happens only in [`Daemon::apply`] and [`Daemon::reconcile`],
//! through a [`Dataplane`] (netlink in production, a fake in tests).
//!
//! Fail-static: the kernel is changed only by a truth at least as new as
//! what it holds. Every view has a generation, stamped into the table by the
//! transaction that enforces it and written to `state_dir` before that
//! transaction. At start-up an existing table is kept untouched until the
//! source answers, unless the persisted view is at least as new as the
//! table's stamp; a degraded source changes nothing; on exit the rules stay
//! in the kernel (only `groupd --cleanup` removes them).

mod repair;
mod table_cache;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::binding::{self, Attachment, Bindings};
use crate::compile;
use crate::compile::{LocalBinding, Policy};
use crate::config::{Config, SourceKind};
use crate::model::ClusterView;
use crate::nft::{Dataplane, Netlink, Nft, NftError};
use crate::source::{self, SourceUpdate};
use crate::state::DesiredState;
use crate::status::{self, Request};
use crate::view_store::{Change, Persisted, ViewStore};

/// Counters and health shown by `groupctl status` and the metrics.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Health {
    pub source: String,
    pub source_state: String,
    pub degraded_reason: Option<String>,
    pub last_sync_unix: Option<f64>,
    pub transactions: u64,
    pub transaction_errors: u64,
    pub last_apply_ms: f64,
    pub drift_repairs: u64,
    /// `daemon.table_guard` in force: "owner" or "notify".
    pub table_guard: String,
    /// Notify mode: bursts of changes to our tables by other processes.
    pub tamper_notifications: u64,
    /// Notify mode: of those, the ones a repair undid (also in drift_repairs).
    pub tamper_repairs: u64,
    pub last_verify_unix: Option<f64>,
    pub conflicts: Vec<String>,
    pub started_unix: f64,
    /// Generation of the view groupd holds (stamped into the table).
    #[serde(default)]
    pub generation: u64,
    /// A complete view (from the source or the persisted view) has reached
    /// the kernel since start: `/readyz` answers 200 from then on.
    #[serde(default)]
    pub ready: bool,
    /// The kernel holds the desired state: the last transaction or
    /// read-back succeeded.
    #[serde(default)]
    pub kernel_in_sync: bool,
    /// `etcd` source: the revision of the view held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_revision: Option<i64>,
    /// `etcd` source: the leading publisher's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_publisher: Option<String>,
    /// `etcd` source: range reads of the whole prefix since start (one at
    /// start, then only after etcd compacted past our revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_full_reads: Option<u64>,
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What start-up found and did, before the source answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// groupd's table was in the kernel and nothing on disk was as new: it
    /// is kept untouched until the source answers.
    KernelKept {
        kernel: Option<u64>,
        persisted: Option<u64>,
    },
    /// The persisted view (no older than the kernel's table) was applied.
    AppliedPersisted { generation: Option<u64> },
    /// No table and no usable view: the empty policy was applied, so task
    /// interfaces are dropped (fail closed) until the source answers.
    AppliedEmpty,
    /// The kernel could not be read: nothing was written.
    KernelUnreadable(String),
}

/// The stamp of groupd's table in the kernel.
enum KernelStamp {
    Absent,
    /// Present; `None` when it carries no generation (older groupd, by hand).
    Present(Option<u64>),
}

pub struct Daemon<D: Dataplane = Netlink> {
    config: Config,
    state: DesiredState,
    nft: Nft<D>,
    health: Health,
    bindings: Bindings,
    /// The tables are known to hold our desired state (after the first
    /// reconcile): from then on changes go as deltas.
    synced: bool,
    /// The view in `state` may be written to the kernel: the source has
    /// answered, or the persisted view is no older than the kernel's table.
    /// Until then nothing is written, not even a drift repair.
    authoritative: bool,
    /// The newest generation seen anywhere (kernel, disk, this process).
    newest_generation: u64,
    /// The last attempt to program the kernel failed.
    kernel_failing: bool,
    /// `state` holds a complete view (the source's or the persisted one),
    /// not the empty policy of a first start.
    full_view: bool,
    store: ViewStore,
    metrics: crate::metrics::Shared,
    /// One log line per change of a local task's enforcement.
    task_log: crate::task_log::TaskLog,
    /// Something a local task's log line depends on may have changed (its
    /// task, the bindings, the view): the next apply looks. Remote tasks'
    /// events, the bulk of a cluster's, skip that walk over local tasks.
    local_changed: bool,
    /// Recent drops seen over nflog (`[drops] log`).
    drops: crate::drops::Recent,
    /// Notify mode: the compiled desired tables, for repairs.
    tables: table_cache::TableCache,
}

impl Daemon<Netlink> {
    pub fn open(config: Config) -> anyhow::Result<Daemon<Netlink>> {
        let nft = Nft::open()
            .context("cannot open a netfilter netlink socket (groupd needs CAP_NET_ADMIN)")?;
        Ok(Daemon::new(config, nft))
    }
}

impl<D: Dataplane> Daemon<D> {
    pub fn new(config: Config, nft: Nft<D>) -> Daemon<D> {
        let policy = Policy::from_config(&config);
        let health = Health {
            source: format!("{:?}", config.source.kind).to_lowercase(),
            source_state: "starting".into(),
            started_unix: now_unix(),
            ..Default::default()
        };
        // Not in sync yet: the first reconcile writes everything.
        let mut state = DesiredState::new(policy);
        state.track_changes(false);
        let store = ViewStore::new(&config.daemon.state_dir);
        let drops = crate::drops::Recent::new(state.policy(), config.drops.keep);
        Daemon {
            config,
            state,
            nft,
            health,
            bindings: Bindings::default(),
            synced: false,
            authoritative: false,
            newest_generation: 0,
            kernel_failing: false,
            full_view: false,
            store,
            metrics: Default::default(),
            task_log: Default::default(),
            local_changed: true,
            drops,
            tables: Default::default(),
        }
    }

    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Histograms and what `/metrics` and `/healthz` publish.
    pub fn metrics(&self) -> &crate::metrics::Shared {
        &self.metrics
    }

    pub fn nft(&mut self) -> &mut Nft<D> {
        &mut self.nft
    }

    /// Whether the systemd watchdog may be fed: the loop runs and the last
    /// attempt to program the kernel succeeded (in sync, or deliberately
    /// waiting for the source with the kernel's table kept).
    pub fn watchdog_ok(&self) -> bool {
        !self.kernel_failing
    }

    /// Whether the kernel holds the desired state.
    pub fn in_sync(&self) -> bool {
        self.synced
    }

    fn kernel_stamp(&mut self) -> Result<KernelStamp, NftError> {
        let table = self.config.daemon.table.clone();
        let kernel = self.nft.read(crate::ruleset::Family::Inet, &table)?;
        if !kernel.exists {
            return Ok(KernelStamp::Absent);
        }
        let stamp = kernel
            .sets
            .get(compile::GENERATION)
            .and_then(|s| compile::generation_of(&s.elements));
        Ok(KernelStamp::Present(stamp))
    }

    /// Decide, before the source answers, what the kernel must hold: the
    /// kernel is changed only by a view at least as new as its table.
    pub fn start(&mut self) -> Startup {
        let kernel = match self.kernel_stamp() {
            Ok(k) => k,
            Err(e) => {
                self.kernel_failing = true;
                error!("cannot read groupd's table from the kernel ({e}); nothing is written until it can be read and the source answers");
                return Startup::KernelUnreadable(e.to_string());
            }
        };
        let persisted = match self.store.load() {
            Persisted::View { generation, view } => Some((generation, view)),
            Persisted::Absent => None,
            Persisted::Corrupt(why) => {
                warn!("ignoring the unreadable persisted view ({why}); the source will rebuild it");
                None
            }
        };
        let persisted_generation = persisted.as_ref().and_then(|(g, _)| *g);
        let kernel_generation = match kernel {
            KernelStamp::Present(g) => g,
            KernelStamp::Absent => None,
        };
        self.newest_generation = persisted_generation
            .unwrap_or(0)
            .max(kernel_generation.unwrap_or(0));
        let usable = match (&kernel, &persisted) {
            (_, None) => false,
            (KernelStamp::Absent, Some(_)) => true,
            // Over an existing table only a stamped view at least as new.
            (KernelStamp::Present(Some(k)), Some((Some(p), _))) => p >= k,
            (KernelStamp::Present(_), Some(_)) => false,
        };
        let kernel_has_table = matches!(kernel, KernelStamp::Present(_));
        if !usable && kernel_has_table {
            info!(
                kernel_generation,
                persisted_generation,
                "groupd's table is in the kernel and nothing on disk is newer: it stays untouched until the source answers"
            );
            self.health.source_state = "starting (kernel table kept)".into();
            return Startup::KernelKept {
                kernel: kernel_generation,
                persisted: persisted_generation,
            };
        }
        let outcome = match persisted.filter(|_| usable) {
            Some((generation, view)) => {
                info!(
                    tasks = view.tasks.len(),
                    generation, kernel_has_table, "applying the last known cluster view"
                );
                self.load_view(view, generation.unwrap_or(0));
                self.full_view = true;
                self.health.source_state = "starting (persisted view)".into();
                Startup::AppliedPersisted { generation }
            }
            None => {
                info!("no groupd table in the kernel and no persisted view: applying the empty policy (task interfaces are dropped until the source answers)");
                Startup::AppliedEmpty
            }
        };
        self.authoritative = true;
        self.apply();
        outcome
    }

    fn load_view(&mut self, view: ClusterView, generation: u64) {
        self.local_changed = true;
        let conflicts = self.state.set_view(view);
        self.stamp(generation);
        for c in &conflicts {
            warn!("{c}");
        }
        self.health.conflicts = conflicts;
    }

    /// The generation of the next view change.
    fn next_generation(&mut self) -> u64 {
        self.newest_generation = (self.newest_generation + 1).min(compile::MAX_GENERATION);
        self.newest_generation
    }

    /// The view now has `generation`: the table's stamp follows in the
    /// next transaction, and the health reports it.
    fn stamp(&mut self, generation: u64) {
        self.state.set_generation(generation);
        self.health.generation = generation;
    }

    pub fn set_bindings(&mut self, b: Bindings) {
        let mut map: HashMap<IpAddr, LocalBinding> = HashMap::new();
        // Bridges with task ports: the inet hooks see bridged task traffic on them.
        let mut task_bridges = BTreeSet::new();
        for iface in b.interfaces.values() {
            let bridge = match &iface.attachment {
                Attachment::Bridged { bridge } => Some(bridge.clone()),
                Attachment::Routed => None,
            };
            task_bridges.extend(bridge.clone());
            for ip in &iface.ips {
                map.insert(
                    *ip,
                    LocalBinding {
                        iface: iface.name.clone(),
                        ip: *ip,
                        bridge: bridge.clone(),
                    },
                );
            }
        }
        self.state
            .set_bindings(map, task_bridges, b.ignored_ports.clone());
        self.bindings = b;
        self.local_changed = true;
    }

    /// Send what changed as one transaction; on failure the delta is
    /// dropped and the whole table reconciled (also one transaction), which
    /// writes whatever the failed delta carried.
    pub fn apply(&mut self) {
        if !self.authoritative {
            return;
        }
        if std::mem::take(&mut self.local_changed) {
            self.task_log.observe(&self.state, &self.bindings);
        }
        // A new generation of chains (the rules for wide groups came or
        // went) cannot travel as elements: the reconcile rewrites them, as
        // intended (not as drift repair).
        if self.state.take_chains_changed() {
            self.synced = false;
        }
        if !self.synced {
            self.reconcile();
            return;
        }
        let delta = self.state.take_delta();
        if delta.is_empty() {
            self.note_kernel_state();
            return;
        }
        let started = Instant::now();
        let table = self.config.daemon.table.clone();
        match self
            .nft
            .apply_elements(&table, &delta.del, &delta.add, compile::wide::data_len)
        {
            Ok(messages) => {
                self.tables.follow(&delta);
                self.kernel_failing = false;
                self.count_transaction(started);
                self.note_kernel_state();
                info!(
                    messages,
                    elements = delta.element_count(),
                    ms = self.health.last_apply_ms,
                    "applied"
                );
            }
            Err(e) => {
                self.health.transaction_errors += 1;
                error!("incremental transaction failed: {e}; reconciling the whole table");
                self.synced = false;
                self.state.track_changes(false);
                self.reconcile();
            }
        }
    }

    /// Read the tables back and repair any difference (start-up, drift).
    /// Never before the view is authoritative: until then the kernel's
    /// table is the newest truth there is.
    pub fn reconcile(&mut self) {
        self.reconcile_with(false);
    }

    /// [`reconcile`](Self::reconcile), against the kept tables when
    /// `cached` and they are current (a repair in notify mode), else
    /// against freshly compiled ones (which are kept in notify mode).
    fn reconcile_with(&mut self, cached: bool) {
        if !self.authoritative {
            return;
        }
        let kept = if cached && self.state.nothing_pending() {
            self.tables.take()
        } else {
            None
        };
        let (inet, bridge) = kept.unwrap_or_else(|| {
            // The old copy goes before the new one is compiled: the peak
            // holds one copy, as without the cache.
            self.tables.clear();
            self.state.tables()
        });
        let started = Instant::now();
        let result = self.nft.reconcile(&[&inet, &bridge]);
        self.tables.keep((inet, bridge));
        match result {
            Ok(report) => {
                self.kernel_failing = false;
                self.health.last_verify_unix = Some(now_unix());
                if report.changed() {
                    self.count_transaction(started);
                    if self.synced {
                        self.health.drift_repairs += 1;
                        warn!(?report, ms = self.health.last_apply_ms, "the kernel table differed from groupd's state (edited by something else?); repaired");
                    } else {
                        info!(?report, ms = self.health.last_apply_ms, "tables reconciled");
                    }
                }
                // Everything is in the kernel: from now on, changes go as deltas.
                let _ = self.state.take_delta();
                let _ = self.state.take_chains_changed();
                self.state.track_changes(true);
                if report.changed() || !self.synced {
                    release_free_memory();
                }
                self.synced = true;
            }
            Err(e) => {
                self.kernel_failing = true;
                self.health.transaction_errors += 1;
                error!("cannot reconcile the nftables tables: {e}; the previous rules stay in force, retrying");
            }
        }
        self.note_kernel_state();
    }

    /// A transaction started at `started` was committed.
    fn count_transaction(&mut self, started: Instant) {
        let took = started.elapsed().as_secs_f64();
        self.health.transactions += 1;
        self.health.last_apply_ms = took * 1000.0;
        self.metrics.apply_duration.observe(took);
    }

    /// After an attempt to program the kernel: whether it holds the desired
    /// state, and whether a complete view has reached it (readiness, which
    /// stays once reached).
    fn note_kernel_state(&mut self) {
        self.health.kernel_in_sync = self.synced && !self.kernel_failing;
        self.health.ready |= self.full_view && self.health.kernel_in_sync;
    }

    /// Periodic work: read-back and repair, and compaction of the journal
    /// once it holds more lines than a snapshot would hold tasks.
    pub fn verify(&mut self) {
        self.reconcile();
        let lines = self.store.journal_lines();
        if self.authoritative && lines > JOURNAL_MIN_COMPACT.max(self.state.view().tasks.len()) {
            self.persist_snapshot();
        }
    }

    fn persist_snapshot(&mut self) {
        let generation = self.state.generation();
        if let Err(e) = self.store.write_snapshot(generation, self.state.view()) {
            warn!(dir = %self.store.dir().display(), "cannot persist the cluster view ({e}); a restart without the master keeps the kernel's table as it is");
        }
    }

    /// Whether task `id` has an IP bound to an interface of this agent.
    fn is_local(&self, id: &str) -> bool {
        self.state
            .view()
            .tasks
            .get(id)
            .is_some_and(|t| self.has_local_ip(t))
    }

    fn has_local_ip(&self, task: &crate::model::Task) -> bool {
        task.ips
            .iter()
            .any(|ip| self.state.binding_of(ip).is_some())
    }

    /// Give the change of task `id` the next generation and journal what the
    /// view now holds for it (the task as kept, e.g. its last good data, or
    /// its removal) before the transaction that enforces it. Before the
    /// first snapshot the view is partial: nothing of it is persisted.
    fn record_change(&mut self, id: &str) {
        if !self.authoritative {
            return;
        }
        let generation = self.next_generation();
        self.stamp(generation);
        let others = self.state.take_handed_over();
        // A task that received a freed IP may be local.
        self.local_changed |= !others.is_empty();
        for id in std::iter::once(id).chain(others.iter().map(|t| &**t)) {
            let change = match self.state.view().tasks.get(id) {
                Some(task) => Change::Upsert(task),
                None => Change::Remove(id),
            };
            if let Err(e) = self.store.append(generation, change) {
                warn!(dir = %self.store.dir().display(), "cannot persist a change ({e}); a restart without the master keeps the kernel's table as it is");
                return;
            }
        }
    }

    /// Publish counters for /metrics and /healthz.
    fn publish(&self) {
        let view = self.state.view();
        let local = view
            .endpoints()
            .filter(|t| t.ips.iter().any(|ip| self.state.binding_of(ip).is_some()))
            .count();
        if let Ok(mut m) = self.metrics.snapshot.lock() {
            m.health = self.health.clone();
            m.tasks = view.tasks.len();
            m.endpoints = view.endpoints().count();
            m.local_endpoints = local;
            m.elements = self.state.element_count();
            if self.synced && self.health.last_verify_unix.is_some() {
                m.last_good = Some(Instant::now());
            }
        }
    }

    /// Take one update from the source: the view changes (with a new
    /// generation, persisted first) and the kernel follows.
    pub fn on_source(&mut self, update: SourceUpdate) {
        let arrived = Instant::now();
        let transactions = self.health.transactions;
        self.take_update(update);
        if self.health.transactions > transactions {
            self.metrics
                .event_to_kernel
                .observe(arrived.elapsed().as_secs_f64());
        }
    }

    fn take_update(&mut self, update: SourceUpdate) {
        match update {
            SourceUpdate::Snapshot(view) => {
                // A resync that finds nothing new is not a new generation:
                // the kernel and the disk stay as they are.
                if !(self.authoritative && *self.state.view() == view) {
                    let generation = self.next_generation();
                    self.load_view(view, generation);
                    let _ = self.state.take_handed_over();
                    release_free_memory();
                    self.persist_snapshot();
                }
                self.authoritative = true;
                self.full_view = true;
                self.health.source_state = "in-sync".into();
                self.health.degraded_reason = None;
                self.health.last_sync_unix = Some(now_unix());
                self.apply();
            }
            SourceUpdate::Upsert(task) => {
                if self.state.view().tasks.get(&task.id) == Some(&task) {
                    return;
                }
                let id = task.id.clone();
                self.local_changed |= self.is_local(&id) || self.has_local_ip(&task);
                for c in self.state.upsert_task(task) {
                    warn!("{c}");
                }
                self.record_change(&id);
                self.apply();
            }
            SourceUpdate::Remove(id) => {
                if !self.state.view().tasks.contains_key(id.as_str()) {
                    return;
                }
                self.local_changed |= self.is_local(&id);
                self.state.remove_task(&id);
                self.record_change(&id);
                self.apply();
            }
            SourceUpdate::Position(p) => {
                self.health.source_revision = p.revision;
                self.health.source_publisher = p.publisher;
                self.health.source_full_reads = Some(p.full_reads);
                // Resumed after a disconnect without a new snapshot: the
                // view held is current again.
                if self.authoritative && self.health.source_state != "in-sync" {
                    self.health.source_state = "in-sync".into();
                    self.health.degraded_reason = None;
                }
                if self.authoritative {
                    self.health.last_sync_unix = Some(now_unix());
                }
            }
            SourceUpdate::Degraded(reason) => {
                warn!("source degraded: {reason}; the last applied rules stay in force");
                self.health.source_state = "degraded".into();
                self.health.degraded_reason = Some(reason);
            }
        }
    }

    /// A packet the nflog listener saw dropped: named with the view as it
    /// is now, and kept for `groupctl drops`.
    pub fn on_drop(&mut self, event: crate::drops::listener::Event) {
        match event {
            crate::drops::listener::Event::Packet(p) => {
                self.drops.record(&self.state, p, now_unix())
            }
            crate::drops::listener::Event::Lost(n) => self.drops.add_lost(n),
        }
    }

    fn answer(&mut self, req: Request) -> serde_json::Value {
        if let Request::Drops { task, after } = &req {
            let answer = self.drops.answer(task.as_deref(), *after);
            return serde_json::to_value(answer)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
        }
        // Counters live in the kernel: read them only when someone asks.
        let counters = match req {
            Request::Status => {
                let table = self.config.daemon.table.clone();
                // Rules only: reading the sets of a large table would cost
                // megabytes and milliseconds for every `groupctl status`.
                self.nft
                    .counters(crate::ruleset::Family::Inet, &table)
                    .unwrap_or_default()
            }
            _ => HashMap::new(),
        };
        status::answer(&req, &self.state, &self.bindings, &self.health, &counters)
    }
}

/// The journal is compacted into a snapshot past this many lines (or past
/// as many lines as the view has tasks, whichever is more).
const JOURNAL_MIN_COMPACT: usize = 10_000;

/// Set the bridge netfilter switches so bridged task traffic also passes the
/// inet hooks (conntrack + group policy). Without br_netfilter only the
/// bridge-family anti-spoofing applies to traffic between tasks on one bridge.
fn enable_bridge_netfilter() {
    for key in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"] {
        let path = Path::new("/proc/sys/net/bridge").join(key);
        match std::fs::read_to_string(&path) {
            Ok(v) if v.trim() == "1" => {}
            Ok(_) => match std::fs::write(&path, "1") {
                Ok(()) => info!("set net.bridge.{key} = 1 so bridged task traffic is filtered by group"),
                Err(e) => warn!("cannot set net.bridge.{key} = 1 ({e}): traffic between tasks on one bridge is not filtered by group"),
            },
            Err(_) => warn!("br_netfilter is not loaded (no {}): traffic between tasks on one bridge is only checked for spoofing; run `modprobe br_netfilter`", path.display()),
        }
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut d = Daemon::open(config.clone())?;
    enable_bridge_netfilter();
    let mut guard = tokio::task::block_in_place(|| {
        crate::table_guard::start(&mut d.nft, &config.daemon.table, config.daemon.table_guard)
    })?;
    d.health.table_guard = guard.name().to_string();
    d.tables
        .enable(matches!(guard, crate::table_guard::Active::Notify(_)));

    // Bindings first: applying before we know the interfaces would remove
    // every anti-spoofing element and cut running tasks off.
    let initial = binding::snapshot(&config.interfaces)
        .await
        .context("cannot read links and routes over rtnetlink")?;
    let (btx, mut brx) = watch::channel(initial.clone());
    d.set_bindings(initial);
    let icfg = config.interfaces.clone();
    tokio::spawn(async move {
        if let Err(e) = binding::watch(icfg, btx).await {
            error!("interface watcher stopped: {e:#}");
        }
    });

    let startup = tokio::task::block_in_place(|| d.start());
    info!(?startup, "start-up");

    let (stx, mut srx) = mpsc::channel::<SourceUpdate>(16);
    match config.source.kind {
        SourceKind::File => {
            let path = config
                .source
                .path
                .clone()
                .context("source.path is required for kind = \"file\"")?;
            let groups = config.groups.clone();
            tokio::spawn(source::file::run(path, groups, stx));
        }
        SourceKind::Marathon => {
            tokio::spawn(source::marathon::run(
                config.source.clone(),
                config.groups.clone(),
                stx,
            ));
        }
        SourceKind::Mesos => {
            tokio::spawn(source::mesos::run(
                config.source.clone(),
                config.groups.clone(),
                stx,
            ));
        }
        SourceKind::Etcd => {
            tokio::spawn(source::etcd::run(config.source.etcd(), stx));
        }
    }

    if !config.metrics.listen.is_empty() {
        let max_age = config.daemon.verify() * 3 + std::time::Duration::from_secs(5);
        // Drop counters are read from the kernel on each scrape, over a
        // netlink socket of the server's own (the loop's stays free).
        let drops = crate::metrics::kernel_drops(&config.daemon.table);
        crate::metrics::serve(&config.metrics.listen, d.metrics.clone(), max_age, drops).await?;
    }
    let (qtx, mut qrx) = mpsc::channel::<(Request, oneshot::Sender<serde_json::Value>)>(16);
    status::serve(&config.daemon.socket, qtx).await?;
    let mut drops = start_drop_listener(&config, &mut d);
    notify_ready();
    d.publish();

    // Publishing the metrics walks every task (~1 ms at 10,000): after
    // source updates it happens once per PUBLISH_GAP, not once per event.
    let mut publish_at: Option<tokio::time::Instant> = None;
    // The first read-back one period after start (start-up did its own).
    let period = config.daemon.verify();
    let mut next_verify = tokio::time::Instant::now() + period;
    // The watchdog has its own ticker (half of WatchdogSec), whatever the
    // verify interval: it fires only while this loop turns.
    let watchdog_period = watchdog_period();
    let mut watchdog =
        tokio::time::interval(watchdog_period.unwrap_or(std::time::Duration::from_secs(3600)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            Some(update) = srx.recv() => {
                tokio::task::block_in_place(|| d.on_source(update));
                publish_at.get_or_insert_with(|| tokio::time::Instant::now() + PUBLISH_GAP);
            }
            _ = sleep_until_some(publish_at), if publish_at.is_some() => {
                publish_at = None;
                d.publish();
            }
            Ok(()) = brx.changed() => {
                let b = brx.borrow_and_update().clone();
                d.set_bindings(b);
                tokio::task::block_in_place(|| d.apply());
                d.publish();
            }
            _ = tokio::time::sleep_until(next_verify) => {
                let started = std::time::Instant::now();
                tokio::task::block_in_place(|| d.verify());
                d.publish();
                next_verify = tokio::time::Instant::now() + verify_gap(period, started.elapsed());
            }
            _ = watchdog.tick(), if watchdog_period.is_some() => {
                if d.watchdog_ok() {
                    sd_notify(sd_notify::NotifyState::Watchdog);
                }
            }
            touch = crate::table_guard::touched(&mut guard) => {
                tokio::task::block_in_place(|| d.repair_tamper(touch));
                d.publish();
            }
            Some(event) = next_drop(&mut drops) => d.on_drop(event),
            Some((req, reply)) = qrx.recv() => {
                let answer = tokio::task::block_in_place(|| d.answer(req));
                let _ = reply.send(answer);
            }
            _ = term.recv() => { info!("SIGTERM: exiting; the rules stay in force"); break; }
            _ = tokio::signal::ctrl_c() => { info!("interrupted: exiting; the rules stay in force"); break; }
        }
    }
    let _ = std::fs::remove_file(&config.daemon.socket);
    Ok(())
}

/// With `[drops] log`, the nflog listener; a failure to bind is reported
/// (log and `groupctl drops`) but does not stop enforcement.
fn start_drop_listener<D: Dataplane>(
    config: &Config,
    d: &mut Daemon<D>,
) -> Option<mpsc::Receiver<crate::drops::listener::Event>> {
    if !config.drops.log {
        return None;
    }
    match crate::drops::listener::spawn(config.drops.group) {
        Ok(rx) => {
            info!(
                group = config.drops.group,
                "dropped packets are logged to nflog: see groupctl drops"
            );
            Some(rx)
        }
        Err(e) => {
            error!("{e}");
            d.drops.set_listener_error(e);
            None
        }
    }
}

async fn next_drop(
    rx: &mut Option<mpsc::Receiver<crate::drops::listener::Event>>,
) -> Option<crate::drops::listener::Event> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Time until the next read-back: `verify_interval`, stretched for a table
/// so large that reading it back takes long (1.2 M elements: ~3 s) so the
/// safety net costs at most a tenth of the loop's time, but never past
/// three intervals (what `/healthz` allows between read-backs).
pub fn verify_gap(period: std::time::Duration, took: std::time::Duration) -> std::time::Duration {
    (took * 10).clamp(period, period * 3)
}

#[cfg(test)]
mod verify_gap_tests {
    use super::verify_gap;
    use std::time::Duration;

    #[test]
    fn a_slow_read_back_stretches_the_gap_up_to_three_intervals() {
        let p = Duration::from_secs(10);
        assert_eq!(verify_gap(p, Duration::from_millis(50)), p);
        assert_eq!(
            verify_gap(p, Duration::from_secs(2)),
            Duration::from_secs(20)
        );
        assert_eq!(
            verify_gap(p, Duration::from_secs(9)),
            Duration::from_secs(30)
        );
    }
}

/// Half of the watchdog timeout systemd set for this process, if any.
fn watchdog_period() -> Option<std::time::Duration> {
    watchdog_period_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_period_from(
    usec: Option<&str>,
    pid: Option<&str>,
    me: u32,
) -> Option<std::time::Duration> {
    // WATCHDOG_PID names the process meant; without it, it is us.
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(me)) {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(std::time::Duration::from_micros(usec / 2))
}

/// Longest delay between a source update and the metrics showing it.
const PUBLISH_GAP: std::time::Duration = std::time::Duration::from_millis(100);

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// systemd `Type=notify`: tell the service manager we are up.
fn notify_ready() {
    sd_notify(sd_notify::NotifyState::Ready);
}

/// Tell systemd (when it runs us with `NOTIFY_SOCKET`); nothing otherwise.
/// A failed notification is not groupd's failure: systemd acts on the
/// missing ping itself.
fn sd_notify(state: sd_notify::NotifyState) {
    let _ = sd_notify::notify(false, &[state]);
}

/// Give the memory a snapshot, its compilation and a full reconcile freed
/// back to the kernel (glibc keeps it otherwise), so the resident size an
/// operator sees is what groupd holds, not what it once needed. Called after
/// a reconcile that wrote something and after a snapshot replaced the view
/// (the old view is megabytes of small blocks), not after every periodic
/// check.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages; no pointer changes.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::watchdog_period_from;
    use std::time::Duration;

    #[test]
    fn the_watchdog_is_fed_at_half_its_timeout_and_only_for_us() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_period_from(Some("30000000"), None, 7), half);
        assert_eq!(watchdog_period_from(Some("30000000"), Some("7"), 7), half);
        // Meant for another process, absent, zero or garbage: no watchdog.
        assert_eq!(watchdog_period_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_period_from(None, None, 7), None);
        assert_eq!(watchdog_period_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_period_from(Some("soon"), None, 7), None);
    }
}
