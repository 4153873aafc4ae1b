//! `[source] kind = "etcd"`: the cluster view `groupd publish` keeps under
//! a key prefix (docs/design.md §2; keys and values in `crate::etcd`).
//!
//! * **Snapshot:** a range read of the prefix at one revision R (in pages,
//!   every page pinned to R, so it is one consistent view whatever its
//!   size) becomes ONE [`SourceUpdate::Snapshot`] — only if the prefix
//!   holds the publisher's identity, which a publisher writes last in its
//!   first fill: an empty or half-written prefix is `Degraded`, never a
//!   view that would cut every task off.
//! * **Changes:** a watch from R + 1; each put of a task key is an
//!   `Upsert`, each delete a `Remove`, applied in revision order.
//! * **Disconnect:** the watch is opened again from the last applied
//!   revision + 1: no range read, the view is not sent again. Only when
//!   etcd has compacted past that revision (the watch says so with
//!   `compact_revision`) does a fresh range read replace the view.
//! * **No etcd member answers:** [`SourceUpdate::Degraded`] once per
//!   reason, backoff with jitter, retry; the rules stay (fail-static).
//!
//! After every batch of changes a [`SourceUpdate::Position`] tells the
//! daemon the revision it now holds and the publisher's identity, for
//! `groupctl status`.

use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio::sync::mpsc::Sender;

use super::http::Backoff;
use super::outbox::Degraded;
use super::SourceUpdate;
use crate::config::EtcdSettings;
use crate::etcd::{self, KeyKind, Keys};
use crate::model::ClusterView;

/// Timing knobs; the defaults are for production, tests shrink them.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Keys per page of a range read.
    pub page: i64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(10),
            page: 5_000,
        }
    }
}

/// Where the source stands: what it applied last and what it read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// The etcd revision whose view the daemon has been sent; `None`
    /// until the first range read (and after a compaction past it).
    pub revision: Option<i64>,
    /// The leading publisher's identity, as it wrote it.
    pub publisher: Option<String>,
    /// Range reads of the whole prefix since start.
    pub full_reads: u64,
}

/// Largest response accepted (a range page, a watch batch).
const MAX_MESSAGE: usize = 256 << 20;

/// Run the source until the daemon goes away; etcd errors never end it.
pub async fn run(settings: EtcdSettings, tx: Sender<SourceUpdate>) {
    run_with(settings, tx, Tuning::default()).await
}

/// [`run`] with explicit timing.
pub async fn run_with(settings: EtcdSettings, tx: Sender<SourceUpdate>, tuning: Tuning) {
    tracing::info!(urls = ?settings.urls, prefix = %settings.prefix, "etcd source: starting");
    let mut source = Source {
        keys: Keys::new(&settings.prefix),
        settings,
        tx,
        tuning: tuning.clone(),
        client: None,
        member: 0,
        position: Position::default(),
        backoff: Backoff::new(tuning.backoff_base, tuning.backoff_cap),
        degraded: Degraded::new("etcd"),
    };
    loop {
        let reason = match source.session().await {
            End::Closed => return,
            End::Compacted => continue,
            End::Failed(reason) => reason,
        };
        let delay = source.backoff.next_delay();
        if let Some(update) = source.degraded.update(&reason, None, delay) {
            if source.tx.send(update).await.is_err() {
                return;
            }
        }
        // A new client next time, on the next member: this one may be
        // dead, and the credential files may have been rotated.
        source.client = None;
        source.member += 1;
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = source.tx.closed() => return,
        }
    }
}

/// Why a session ended.
enum End {
    /// The daemon stopped listening.
    Closed,
    /// etcd compacted past our revision: read the view again, at once.
    Compacted,
    Failed(String),
}

struct Source {
    settings: EtcdSettings,
    keys: Keys,
    tx: Sender<SourceUpdate>,
    tuning: Tuning,
    client: Option<Client>,
    /// Which member to connect to (rotates after each failure).
    member: usize,
    position: Position,
    backoff: Backoff,
    degraded: Degraded,
}

impl Source {
    async fn send(&self, update: SourceUpdate) -> Result<(), End> {
        self.tx.send(update).await.map_err(|_| End::Closed)
    }

    async fn send_position(&self) -> Result<(), End> {
        self.send(SourceUpdate::Position(self.position.clone()))
            .await
    }

    /// One connection's life: a range read if needed, then the watch.
    async fn session(&mut self) -> End {
        match self.session_inner().await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn session_inner(&mut self) -> Result<std::convert::Infallible, End> {
        let mut client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = etcd::connect(&self.settings, self.member)
                    .await
                    .map_err(End::Failed)?;
                self.client = Some(c.clone());
                c
            }
        };
        if self.position.revision.is_none() {
            self.full_read(&client).await?;
        }
        let from = self.position.revision.unwrap_or(0) + 1;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from)
            .with_progress_notify();
        let mut stream = etcd::timed("watch", client.watch(self.keys.all(), Some(options)))
            .await
            .map_err(End::Failed)?;
        tracing::info!("etcd source: watching from revision {from}");
        loop {
            let response = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return Err(End::Failed("etcd closed the watch stream".into())),
                Err(e) => return Err(End::Failed(format!("etcd watch: {e}"))),
            };
            if response.compact_revision() > 0 {
                tracing::warn!(
                    "etcd source: etcd compacted its history up to revision {} past our revision {}: reading the whole view again",
                    response.compact_revision(),
                    from - 1
                );
                self.position.revision = None;
                return Err(End::Compacted);
            }
            if response.canceled() {
                return Err(End::Failed(format!(
                    "etcd cancelled the watch: {}",
                    response.cancel_reason()
                )));
            }
            if response.created() {
                // Connected and current: a degraded report is over.
                self.backoff.reset();
                self.degraded.clear();
            }
            let mut newest = None;
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                newest = Some(kv.mod_revision());
                let update = match (self.keys.classify(kv.key()), event.event_type()) {
                    (KeyKind::Task(id), EventType::Put) => match etcd::decode(&id, kv.value()) {
                        Ok(task) => SourceUpdate::Upsert(task),
                        Err(e) => {
                            tracing::warn!("etcd source: {e}; keeping what was known of it");
                            continue;
                        }
                    },
                    (KeyKind::Task(id), EventType::Delete) => SourceUpdate::Remove(id),
                    (KeyKind::Publisher, EventType::Put) => {
                        self.position.publisher =
                            Some(String::from_utf8_lossy(kv.value()).into_owned());
                        continue;
                    }
                    _ => continue,
                };
                self.send(update).await?;
            }
            // Events: the newest one applied. None (a progress
            // notification): nothing under the prefix changed up to the
            // header's revision.
            let revision = newest.or_else(|| response.header().map(|h| h.revision()));
            if let Some(r) = revision {
                self.position.revision = Some(r.max(from - 1));
            }
            self.send_position().await?;
        }
    }

    /// Range-read the prefix at one revision and send it as one snapshot.
    async fn full_read(&mut self, client: &Client) -> Result<(), End> {
        let started = std::time::Instant::now();
        let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
        let all = self.keys.all();
        let end = prefix_end(all.as_bytes());
        let mut view = ClusterView::default();
        let mut publisher = None;
        let mut start = all.as_bytes().to_vec();
        let mut revision = 0;
        let mut skipped = 0;
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(self.tuning.page);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let response = etcd::timed("range read", kv.get(start.clone(), Some(options)))
                .await
                .map_err(End::Failed)?;
            if revision == 0 {
                revision = response.header().map(|h| h.revision()).unwrap_or(0);
            }
            for item in response.kvs() {
                match self.keys.classify(item.key()) {
                    KeyKind::Task(id) => match etcd::decode(&id, item.value()) {
                        Ok(task) => {
                            view.tasks.insert(task.id.clone(), task);
                        }
                        Err(e) => {
                            skipped += 1;
                            tracing::warn!("etcd source: {e}; the task is left out");
                        }
                    },
                    KeyKind::Publisher => {
                        publisher = Some(String::from_utf8_lossy(item.value()).into_owned())
                    }
                    KeyKind::Other => {}
                }
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    // The next page starts just after the last key.
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        // No publisher's mark: nothing was ever published under this
        // prefix, or the first fill is still being written. An empty or
        // partial view would cut every task off (R8): keep what is
        // enforced and ask again.
        let Some(publisher) = publisher else {
            return Err(End::Failed(format!(
                "etcd holds no published view under {} ({} task keys, no {} key): start `groupd publish`, or check source.prefix",
                self.settings.prefix,
                view.tasks.len(),
                self.keys.publisher()
            )));
        };
        view.conflicts = view.ip_conflicts();
        tracing::info!(
            "etcd source: read {} tasks at revision {revision} in {:.0} ms{}",
            view.tasks.len(),
            started.elapsed().as_secs_f64() * 1000.0,
            if skipped > 0 {
                format!(" ({skipped} unreadable values left out)")
            } else {
                String::new()
            }
        );
        self.position.revision = Some(revision);
        self.position.publisher = Some(publisher);
        self.position.full_reads += 1;
        self.send(SourceUpdate::Snapshot(view)).await?;
        self.send_position().await
    }
}

/// The smallest key after every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: to the end of the keyspace.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end(b"/groupd/v1/"), b"/groupd/v10".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }
}
