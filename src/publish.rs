//! `groupd publish`: keep etcd equal to what the master says, so that the
//! agents (`[source] kind = "etcd"`) watch etcd instead of the master
//! (docs/design.md §2, the `etcd` row; keys and values in `crate::etcd`).
//!
//! * The master is read by the existing `mesos` or `marathon` source,
//!   unchanged: its updates are folded into [`Desired`] (one encoded value
//!   per task key, plus the keys changed since they were last written).
//! * Several publishers run; one leads, elected with etcd's election API on
//!   a lease of `publish.lease_ttl` seconds. Every write is a transaction
//!   guarded by the leader key's create revision: a deposed leader (its
//!   lease expired, its key gone) cannot write a single key. A standby's
//!   campaign returns when the leader's key goes, at most one TTL after it
//!   died.
//! * On becoming leader: a range read of what etcd holds, then a diff
//!   against the master's view: only keys that differ are written, never
//!   everything. Then each change is written as it comes, batched (at most
//!   [`MAX_OPS`] operations per transaction, etcd's default
//!   `--max-txn-ops`).
//! * A master that cannot be read: nothing is written or deleted
//!   (fail-static); the agents keep the last view.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use etcd_client::{Client, Compare, CompareOp, GetOptions, LeaderKey, Txn, TxnOp};
use tokio::sync::{mpsc, watch, Notify};

use crate::config::{Config, EtcdSettings, PublishConfig, SourceKind};
use crate::etcd::{self, Keys};
use crate::source::http::Backoff;
use crate::source::{self, SourceUpdate};

/// Operations per transaction: etcd's default `--max-txn-ops`.
pub const MAX_OPS: usize = 128;

/// What the master says, as keys and values, and what changed since the
/// leader last wrote it.
#[derive(Debug, Default)]
struct Desired {
    /// `None` until the master's first snapshot: nothing is written before
    /// (an empty view would delete every key).
    view: Option<BTreeMap<String, Vec<u8>>>,
    /// Keys whose value changed (or went) since taken by the writer.
    dirty: BTreeSet<String>,
    /// Why the master cannot be read, while it cannot.
    degraded: Option<String>,
}

impl Desired {
    fn apply(&mut self, keys: &Keys, update: SourceUpdate) {
        match update {
            SourceUpdate::Snapshot(view) => {
                let new: BTreeMap<String, Vec<u8>> = view
                    .tasks
                    .values()
                    .map(|t| (keys.task(&t.id), etcd::encode(t)))
                    .collect();
                if let Some(old) = &self.view {
                    for (k, v) in &new {
                        if old.get(k) != Some(v) {
                            self.dirty.insert(k.clone());
                        }
                    }
                    for k in old.keys() {
                        if !new.contains_key(k) {
                            self.dirty.insert(k.clone());
                        }
                    }
                }
                self.view = Some(new);
                self.degraded = None;
            }
            SourceUpdate::Upsert(task) => {
                let Some(view) = &mut self.view else { return };
                let key = keys.task(&task.id);
                let value = etcd::encode(&task);
                if view.get(&key) != Some(&value) {
                    view.insert(key.clone(), value);
                    self.dirty.insert(key);
                }
            }
            SourceUpdate::Remove(id) => {
                let Some(view) = &mut self.view else { return };
                let key = keys.task(&id);
                if view.remove(&key).is_some() {
                    self.dirty.insert(key);
                }
            }
            SourceUpdate::Degraded(reason) => {
                tracing::warn!("publish: the master cannot be read ({reason}); etcd keeps the last view, nothing is deleted");
                self.degraded = Some(reason);
            }
            SourceUpdate::Position(_) => {}
        }
    }
}

/// The state shared by the master reader and the etcd writer.
#[derive(Default)]
struct Shared {
    desired: Mutex<Desired>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Desired> {
        // A poisoned lock only means a panic elsewhere; the data is plain.
        self.desired.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `groupd publish` until SIGTERM / SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let publish = config
        .publish
        .clone()
        .context("`groupd publish` needs a [publish] section with etcd_urls")?;
    let keys = Keys::new(&publish.prefix);
    let shared = Arc::new(Shared::default());
    let (stx, mut srx) = mpsc::channel::<SourceUpdate>(64);
    match config.source.kind {
        SourceKind::Mesos => {
            tokio::spawn(source::mesos::run(
                config.source.clone(),
                config.groups.clone(),
                stx,
            ));
        }
        SourceKind::Marathon => {
            tokio::spawn(source::marathon::run(
                config.source.clone(),
                config.groups.clone(),
                stx,
            ));
        }
        other => anyhow::bail!(
            "`groupd publish` reads a master: [source] kind must be \"mesos\" or \"marathon\", not {other:?}"
        ),
    }
    let reader = {
        let (shared, keys) = (shared.clone(), keys.clone());
        tokio::spawn(async move {
            while let Some(update) = srx.recv().await {
                shared.lock().apply(&keys, update);
                shared.changed.notify_one();
            }
        })
    };
    let identity = publish.identity.clone().unwrap_or_else(default_identity);
    tracing::info!(%identity, urls = ?publish.etcd_urls, prefix = %publish.prefix, "publish: starting");
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = tokio::spawn(lead_forever(
        publish.clone(),
        identity,
        keys,
        shared,
        stop_rx,
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("publish: stopping; resigning leadership so that a standby takes over at once");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    reader.abort();
    Ok(())
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host}:{}", std::process::id())
}

/// Why a term as candidate or leader ended.
enum TermEnd {
    Stop,
    Failed(String),
}

/// Campaign, lead until it fails, and again, until told to stop.
async fn lead_forever(
    publish: PublishConfig,
    identity: String,
    keys: Keys,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let settings = publish.etcd();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    // Each term after a failure connects to the next member.
    let mut member = 0;
    loop {
        let term = Term {
            member,
            settings: &settings,
            ttl: publish.lease_ttl,
            identity: &identity,
            keys: &keys,
            shared: &shared,
        };
        match term.run(&mut stop, &mut backoff).await {
            TermEnd::Stop => return,
            TermEnd::Failed(reason) => {
                member += 1;
                let delay = backoff.next_delay();
                tracing::warn!(
                    "publish: {reason}; not writing; campaigning again in {:.1} s",
                    delay.as_secs_f64()
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

struct Term<'a> {
    member: usize,
    settings: &'a EtcdSettings,
    ttl: u32,
    identity: &'a str,
    keys: &'a Keys,
    shared: &'a Shared,
}

impl Term<'_> {
    async fn run(&self, stop: &mut watch::Receiver<bool>, backoff: &mut Backoff) -> TermEnd {
        let mut client = match etcd::connect(self.settings, self.member).await {
            Ok(c) => c,
            Err(e) => return TermEnd::Failed(e),
        };
        let lease = match etcd::timed_for(
            "lease grant",
            etcd::WRITE_TIMEOUT,
            client.lease_grant(self.ttl as i64, None),
        )
        .await
        {
            Ok(l) => l.id(),
            Err(e) => return TermEnd::Failed(e),
        };
        // The lease lives while this term does; losing it ends the term.
        let (lost_tx, mut lost) = watch::channel(None::<String>);
        let keeper = tokio::spawn(keep_alive(client.clone(), lease, self.ttl, lost_tx));
        let end = tokio::select! {
            end = self.campaign_and_lead(&mut client, lease, backoff) => end,
            _ = lost.changed() => TermEnd::Failed(
                lost.borrow().clone().unwrap_or_else(|| "the lease keeper stopped".into())
            ),
            _ = stop.changed() => TermEnd::Stop,
        };
        keeper.abort();
        // Resigning = revoking the lease: the leader key goes with it, a
        // standby's campaign returns now instead of after the TTL.
        let _ = etcd::timed_for(
            "lease revoke",
            etcd::WRITE_TIMEOUT,
            client.lease_revoke(lease),
        )
        .await;
        end
    }

    async fn campaign_and_lead(
        &self,
        client: &mut Client,
        lease: i64,
        backoff: &mut Backoff,
    ) -> TermEnd {
        tracing::info!("publish: campaigning for leadership (lease {lease:x})");
        // Blocks while another publisher leads: no timeout here.
        let leader = match client
            .campaign(self.keys.election(), self.identity, lease)
            .await
        {
            Ok(mut r) => match r.take_leader() {
                Some(l) => l,
                None => {
                    return TermEnd::Failed("etcd's campaign answer names no leader key".into())
                }
            },
            Err(e) => return TermEnd::Failed(format!("etcd campaign: {e}")),
        };
        tracing::info!(
            "publish: leading as {} (key {})",
            self.identity,
            String::from_utf8_lossy(leader.key())
        );
        let mut writer = Writer {
            client: client.clone(),
            keys: self.keys,
            guard: leader,
            held: HashMap::new(),
            transactions: 0,
        };
        match writer.lead(self.shared, self.identity, backoff).await {
            Err(reason) => TermEnd::Failed(reason),
        }
    }
}

/// Keep `lease` alive; say why on `lost` when it cannot be.
async fn keep_alive(mut client: Client, lease: i64, ttl: u32, lost: watch::Sender<Option<String>>) {
    let period = Duration::from_secs_f64((ttl as f64 / 3.0).max(0.5));
    let (mut keeper, mut answers) =
        match etcd::timed("lease keep-alive", client.lease_keep_alive(lease)).await {
            Ok(pair) => pair,
            Err(e) => {
                let _ = lost.send(Some(e));
                return;
            }
        };
    let deadline = Duration::from_secs(ttl as u64);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        if keeper.keep_alive().await.is_ok() {
            match tokio::time::timeout(period, answers.message()).await {
                Ok(Ok(Some(a))) if a.ttl() > 0 => last_ok = tokio::time::Instant::now(),
                Ok(Ok(Some(_))) => {
                    let _ = lost.send(Some(format!("lease {lease:x} expired")));
                    return;
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    let _ = lost.send(Some("the lease keep-alive stream ended".into()));
                    return;
                }
                Err(_) => {}
            }
        }
        if last_ok.elapsed() >= deadline {
            let _ = lost.send(Some(format!(
                "lease {lease:x} not renewed for {} s: another publisher may lead now",
                ttl
            )));
            return;
        }
        tokio::time::sleep(period.saturating_sub(Duration::from_millis(50))).await;
    }
}

/// A leader that cannot read its master hands over: a standby that can
/// may lead (its view is current; ours may be stale, and a stale view
/// must never be diffed into etcd). If no publisher can read the master,
/// leadership rotates among them and nobody writes (fail-static).
fn resign_if_degraded(d: &Desired) -> Result<(), String> {
    match &d.degraded {
        Some(reason) => Err(format!(
            "the master cannot be read ({reason}): handing leadership to a publisher that can"
        )),
        None => Ok(()),
    }
}

/// The leader's writes.
struct Writer<'a> {
    client: Client,
    keys: &'a Keys,
    /// Every transaction requires this key to be ours, unchanged.
    guard: LeaderKey,
    /// What etcd holds under the tasks' prefix, as far as we know: read at
    /// the start of the term, then kept by our own writes.
    held: HashMap<String, Vec<u8>>,
    transactions: u64,
}

impl Writer<'_> {
    /// Lead until something fails (never returns otherwise).
    async fn lead(
        &mut self,
        shared: &Shared,
        identity: &str,
        backoff: &mut Backoff,
    ) -> Result<std::convert::Infallible, String> {
        self.read_held().await?;
        // Nothing is written before the master's first snapshot.
        loop {
            let notified = shared.changed.notified();
            {
                let d = shared.lock();
                resign_if_degraded(&d)?;
                if d.view.is_some() {
                    break;
                }
            }
            notified.await;
        }
        // The first diff: everything that differs, the identity with it.
        let keys: BTreeSet<String> = {
            let mut d = shared.lock();
            d.dirty.clear();
            let view = d
                .view
                .as_ref()
                .map(|v| v.keys().cloned())
                .into_iter()
                .flatten();
            view.chain(self.held.keys().cloned()).collect()
        };
        let first = self.write(shared, keys, Some(identity)).await?;
        tracing::info!(
            "publish: etcd now equals the master's view ({first} keys written or deleted)"
        );
        backoff.reset();
        loop {
            let notified = shared.changed.notified();
            let dirty = {
                let mut d = shared.lock();
                resign_if_degraded(&d)?;
                std::mem::take(&mut d.dirty)
            };
            if dirty.is_empty() {
                notified.await;
                continue;
            }
            if let Err(e) = self.write(shared, dirty.clone(), None).await {
                // Not written: written by the next leader (its diff) or by
                // us next term.
                shared.lock().dirty.extend(dirty);
                return Err(e);
            }
        }
    }

    /// Read what etcd holds under the tasks' prefix (one range read at
    /// one revision, in pages).
    async fn read_held(&mut self) -> Result<(), String> {
        let tasks = self.keys.tasks();
        let end = crate::source::etcd::prefix_end(tasks.as_bytes());
        let mut kv = self.client.kv_client().max_decoding_message_size(256 << 20);
        let mut start = tasks.into_bytes();
        let mut revision = 0;
        self.held.clear();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(5_000);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let r = etcd::timed("range read", kv.get(start.clone(), Some(options))).await?;
            if revision == 0 {
                revision = r.header().map(|h| h.revision()).unwrap_or(0);
            }
            for item in r.kvs() {
                if let Ok(key) = std::str::from_utf8(item.key()) {
                    self.held.insert(key.to_string(), item.value().to_vec());
                }
            }
            match r.kvs().last() {
                Some(last) if r.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    /// Write the desired value of each of `keys` that differs from what
    /// etcd holds; returns how many operations that took.
    async fn write(
        &mut self,
        shared: &Shared,
        keys: BTreeSet<String>,
        identity: Option<&str>,
    ) -> Result<usize, String> {
        // Decide the operations under the lock, send them without it.
        let ops: Vec<(String, Option<Vec<u8>>)> = {
            let d = shared.lock();
            let Some(view) = &d.view else { return Ok(0) };
            keys.into_iter()
                .filter_map(|k| {
                    let want = view.get(&k);
                    (want != self.held.get(&k)).then(|| (k, want.cloned()))
                })
                .collect()
        };
        let count = ops.len();
        let mut identity = identity.map(|i| (self.keys.publisher(), i.to_string()));
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() || identity.is_some() {
            let mut batch = Vec::new();
            let mut txn_ops = Vec::new();
            while txn_ops.len() < MAX_OPS {
                let Some((key, value)) = ops.next() else {
                    break;
                };
                txn_ops.push(match &value {
                    Some(v) => TxnOp::put(key.clone(), v.clone(), None),
                    None => TxnOp::delete(key.clone(), None),
                });
                batch.push((key, value));
            }
            // The identity goes in the LAST transaction of a term's first
            // diff: an agent takes a prefix without it as "never
            // published", so it never reads a half-written first fill.
            if ops.peek().is_none() && txn_ops.len() < MAX_OPS {
                if let Some((key, value)) = identity.take() {
                    txn_ops.push(TxnOp::put(key, value, None));
                }
            }
            let txn = Txn::new()
                .when([Compare::create_revision(
                    self.guard.key().to_vec(),
                    CompareOp::Equal,
                    self.guard.rev(),
                )])
                .and_then(txn_ops);
            let response =
                etcd::timed_for("transaction", etcd::WRITE_TIMEOUT, self.client.txn(txn)).await?;
            if !response.succeeded() {
                return Err(
                    "this publisher's leader key is gone (its lease expired): no longer the leader"
                        .into(),
                );
            }
            self.transactions += 1;
            for (key, value) in batch {
                match value {
                    Some(v) => self.held.insert(key, v),
                    None => self.held.remove(&key),
                };
            }
        }
        Ok(count)
    }
}
