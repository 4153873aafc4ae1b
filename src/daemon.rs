//! The loop: source updates and interface bindings -> desired state ->
//! one nftables transaction; periodic read-back repairs drift.
//!
//! Kernel I/O happens only in [`Daemon::apply`] and [`Daemon::verify`].
//! Fail-static: when the source is degraded nothing is changed; on exit the
//! rules stay in the kernel (only `groupd --cleanup` removes them).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::binding::{self, Attachment, Bindings};
use crate::compile::{LocalBinding, Policy};
use crate::config::{Config, SourceKind};
use crate::model::ClusterView;
use crate::nft::Nft;
use crate::source::{self, SourceUpdate};
use crate::state::DesiredState;
use crate::status::{self, Request};

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
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub struct Daemon {
    config: Config,
    state: DesiredState,
    nft: Nft,
    health: Health,
    bindings: Bindings,
    /// The tables are known to hold our desired state (after the first reconcile).
    synced: bool,
    metrics: crate::metrics::Shared,
    /// The view changed since it was last written to `state_dir`.
    dirty: bool,
}

impl Daemon {
    pub fn new(config: Config) -> anyhow::Result<Daemon> {
        let nft = Nft::open()
            .context("cannot open a netfilter netlink socket (groupd needs CAP_NET_ADMIN)")?;
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
        Ok(Daemon {
            config,
            state,
            nft,
            health,
            bindings: Bindings::default(),
            synced: false,
            metrics: Default::default(),
            dirty: false,
        })
    }

    fn view_path(&self) -> PathBuf {
        self.config.daemon.state_dir.join("view.json")
    }

    /// The last cluster view we enforced, so a restart without the master
    /// re-applies it at once.
    fn load_persisted(&self) -> Option<ClusterView> {
        let path = self.view_path();
        let file = std::fs::File::open(&path).ok()?;
        // Streamed, like `persist`: the file is megabytes for a large cluster.
        let reader = std::io::BufReader::with_capacity(64 << 10, file);
        match serde_json::from_reader::<_, ClusterView>(reader) {
            Ok(mut view) => {
                view.repack();
                Some(view)
            }
            Err(e) => {
                warn!(path = %path.display(), "ignoring unreadable persisted view: {e}");
                None
            }
        }
    }

    fn persist(&self) {
        let path = self.view_path();
        let tmp = path.with_extension("json.tmp");
        let result = std::fs::create_dir_all(&self.config.daemon.state_dir)
            .and_then(|_| std::fs::File::create(&tmp))
            .and_then(|f| {
                // Streamed: the view of a large cluster is megabytes of JSON.
                let mut w = std::io::BufWriter::new(f);
                serde_json::to_writer(&mut w, self.state.view()).map_err(std::io::Error::other)?;
                std::io::Write::flush(&mut w)
            })
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            warn!(path = %path.display(), "cannot persist the cluster view ({e}); a restart without the master will start from the kernel's table");
        }
    }

    fn set_bindings(&mut self, b: Bindings) {
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
    }

    /// Send what changed as one transaction; on failure fall back to a full
    /// reconcile (also one transaction), and keep the delta for a retry.
    fn apply(&mut self) {
        if !self.synced {
            self.verify();
            return;
        }
        let delta = self.state.take_delta();
        if delta.is_empty() {
            return;
        }
        let started = Instant::now();
        let table = self.config.daemon.table.clone();
        match tokio::task::block_in_place(|| self.nft.apply_delta(&table, &delta)) {
            Ok(messages) => {
                self.health.transactions += 1;
                self.health.last_apply_ms = started.elapsed().as_secs_f64() * 1000.0;
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
                self.verify();
            }
        }
    }

    /// Read the tables back and repair any difference (start-up, drift).
    fn verify(&mut self) {
        let (inet, bridge) = self.state.tables();
        let started = Instant::now();
        match tokio::task::block_in_place(|| self.nft.reconcile(&[&inet, &bridge])) {
            Ok(report) => {
                self.health.last_verify_unix = Some(now_unix());
                if report.changed() {
                    self.health.transactions += 1;
                    self.health.last_apply_ms = started.elapsed().as_secs_f64() * 1000.0;
                    if self.synced {
                        self.health.drift_repairs += 1;
                        warn!(?report, "the kernel table differed from groupd's state (edited by something else?); repaired");
                    } else {
                        info!(?report, ms = self.health.last_apply_ms, "tables reconciled");
                    }
                }
                // Everything is in the kernel: from now on, changes go as deltas.
                let _ = self.state.take_delta();
                self.state.track_changes(true);
                if report.changed() || !self.synced {
                    release_free_memory();
                }
                self.synced = true;
            }
            Err(e) => {
                self.health.transaction_errors += 1;
                error!("cannot reconcile the nftables tables: {e}; the previous rules stay in force, retrying");
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
        if let Ok(mut m) = self.metrics.lock() {
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

    fn on_source(&mut self, update: SourceUpdate) -> bool {
        match update {
            SourceUpdate::Snapshot(view) => {
                let conflicts = self.state.set_view(view);
                release_free_memory();
                for c in &conflicts {
                    warn!("{c}");
                }
                self.health.conflicts = conflicts;
                self.health.source_state = "in-sync".into();
                self.health.degraded_reason = None;
                self.health.last_sync_unix = Some(now_unix());
                true
            }
            SourceUpdate::Upsert(task) => {
                for c in self.state.upsert_task(task) {
                    warn!("{c}");
                }
                true
            }
            SourceUpdate::Remove(id) => {
                self.state.remove_task(&id);
                true
            }
            SourceUpdate::Degraded(reason) => {
                warn!("source degraded: {reason}; the last applied rules stay in force");
                self.health.source_state = "degraded".into();
                self.health.degraded_reason = Some(reason);
                false
            }
        }
    }

    fn answer(&mut self, req: Request) -> serde_json::Value {
        // Counters live in the kernel: read them only when someone asks.
        let counters = match req {
            Request::Status => {
                let table = self.config.daemon.table.clone();
                // Rules only: reading the sets of a large table would cost
                // megabytes and milliseconds for every `groupctl status`.
                tokio::task::block_in_place(|| {
                    self.nft.counters(crate::ruleset::Family::Inet, &table)
                })
                .unwrap_or_default()
            }
            _ => HashMap::new(),
        };
        status::answer(&req, &self.state, &self.bindings, &self.health, &counters)
    }
}

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
    let mut d = Daemon::new(config.clone())?;
    enable_bridge_netfilter();
    let mut guard = tokio::task::block_in_place(|| {
        crate::table_guard::start(&mut d.nft, &config.daemon.table, config.daemon.table_guard)
    })?;
    d.health.table_guard = guard.name().to_string();

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

    // Start-up without removing protection. If our table is in the kernel
    // (groupd restarted), it holds the newest state anyone applied: leave it
    // untouched until the source answers, then reconcile. If it is not (the
    // machine rebooted), re-apply the persisted view at once, or at least the
    // skeleton, so unknown task interfaces are dropped (fail closed).
    let kernel_has_table = tokio::task::block_in_place(|| {
        d.nft
            .read(crate::ruleset::Family::Inet, &config.daemon.table)
    })
    .map(|t| t.exists)
    .unwrap_or(false);
    if let Some(view) = d.load_persisted() {
        info!(
            tasks = view.tasks.len(),
            kernel_has_table, "loaded the last known cluster view"
        );
        d.on_source(SourceUpdate::Snapshot(view));
        d.health.source_state = "starting (persisted view)".into();
    }
    if !kernel_has_table {
        d.apply();
    }

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
    }

    if !config.metrics.listen.is_empty() {
        let max_age = config.daemon.verify() * 3 + std::time::Duration::from_secs(5);
        crate::metrics::serve(&config.metrics.listen, d.metrics.clone(), max_age).await?;
    }
    let (qtx, mut qrx) = mpsc::channel::<(Request, oneshot::Sender<serde_json::Value>)>(16);
    status::serve(&config.daemon.socket, qtx).await?;
    notify_ready();

    // Publishing the metrics walks every task (~1 ms at 10,000): after
    // source updates it happens once per PUBLISH_GAP, not once per event.
    let mut publish_at: Option<tokio::time::Instant> = None;
    let mut verify = tokio::time::interval(config.daemon.verify());
    verify.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            Some(update) = srx.recv() => {
                let snapshot = matches!(update, SourceUpdate::Snapshot(_));
                if d.on_source(update) {
                    d.apply();
                    // A snapshot is written at once (it is rare); events are
                    // written at most once per verify interval.
                    if snapshot {
                        d.persist();
                    } else {
                        d.dirty = true;
                    }
                }
                publish_at.get_or_insert_with(|| tokio::time::Instant::now() + PUBLISH_GAP);
            }
            _ = sleep_until_some(publish_at), if publish_at.is_some() => {
                publish_at = None;
                d.publish();
            }
            Ok(()) = brx.changed() => {
                let b = brx.borrow_and_update().clone();
                d.set_bindings(b);
                d.apply();
                d.publish();
            }
            _ = verify.tick() => {
                d.verify();
                // Written at most once per verify interval: events can
                // arrive by the thousand per second.
                if std::mem::take(&mut d.dirty) {
                    d.persist();
                }
                d.publish();
                // The watchdog follows programming progress, not mere liveness.
                if d.synced {
                    sd_notify(b"WATCHDOG=1");
                }
            }
            touch = crate::table_guard::touched(&mut guard) => {
                d.health.tamper_notifications += 1;
                // Before the first reconcile the kernel's table is the
                // newest truth: the start-up logic decides, not a repair.
                if d.synced {
                    warn!(change = touch.what, by_port = touch.by_port, "groupd's table was changed by another process; repairing");
                    let repaired = d.health.drift_repairs;
                    d.nft.scope_next_reconcile(touch.scope);
                    d.verify();
                    if d.health.drift_repairs > repaired {
                        d.health.tamper_repairs += 1;
                    }
                    d.publish();
                }
            }
            Some((req, reply)) = qrx.recv() => {
                let _ = reply.send(d.answer(req));
            }
            _ = term.recv() => { info!("SIGTERM: exiting; the rules stay in force"); break; }
            _ = tokio::signal::ctrl_c() => { info!("interrupted: exiting; the rules stay in force"); break; }
        }
    }
    if d.dirty {
        d.persist();
    }
    let _ = std::fs::remove_file(&config.daemon.socket);
    Ok(())
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
    sd_notify(b"READY=1");
}

fn sd_notify(msg: &[u8]) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let _ = sock.send_to(msg, PathBuf::from(path));
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
