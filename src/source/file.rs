//! `[source] kind = "file"`: a master document in a file (docs/design.md §2).
//!
//! The file is polled every [`POLL`] with `stat` (cheap, no extra crate, and
//! works on every filesystem, unlike inotify on NFS or bind mounts). It is
//! re-read when its identity or contents may have changed: a new inode (a
//! writer renamed a new file over it), or another size, mtime or ctime (a
//! writer rewrote it in place).
//!
//! Every successful parse is sent as [`SourceUpdate::Snapshot`]; a missing,
//! unreadable or unparseable file is [`SourceUpdate::Degraded`] and the last
//! snapshot stays in force (fail-static) until a later good write. A
//! half-written file never produces a snapshot: a prefix of a JSON document
//! is never a whole document, so it is only ever a parse error, and a read
//! during which the file changed is discarded and redone at the next poll.
//!
//! A changed file is read once (at most [`MAX_DOCUMENT`] bytes), hashed (to
//! skip contents already applied) and parsed while it is read: a Marathon
//! app list or a Mesos `/master/state` is converted app by app or task by
//! task ([`one_pass`]) and never held whole. Only a document of another
//! shape, or an invalid one, is read a second time, whole, for the parser
//! that knows every shape and words every error.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc::Sender;

use super::document::{parse_document_kind, DocumentError, Parsed};
use super::one_pass::{self, OnePass};
use super::wire::marathon::VersionCache;
use super::SourceUpdate;
use crate::config::GroupsConfig;

/// How often the file is looked at.
pub const POLL: Duration = Duration::from_millis(200);

/// File timestamps can be coarser than writes are fast (a kernel tick): two
/// writes of the same size within one tick look identical to `stat`. While a
/// file's mtime is this close to the time we read it, its contents are
/// re-checked at every poll (by hash; only real changes are sent).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// The whole file, refusing to read past [`MAX_DOCUMENT`] bytes (it may
/// have grown since `stat`).
fn read_whole(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(std::io::Error::other(format!(
            "it grew past the {MAX_DOCUMENT} bytes a master document may have"
        )));
    }
    Ok(bytes)
}

/// A reader that hashes what it reads and counts it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        self.read += n as u64;
        Ok(n)
    }
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    /// The hash of everything read so far.
    fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

/// SHA-256 of a file, read as a stream.
fn hash_file(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    let mut reader = HashingReader::new(std::fs::File::open(path)?);
    std::io::copy(&mut reader, &mut std::io::sink())?;
    Ok(reader.finish())
}

/// Watch `path` until the receiver of `tx` goes away.
pub async fn run(path: PathBuf, groups: GroupsConfig, tx: Sender<SourceUpdate>) {
    tracing::info!(path = %path.display(), "file source: watching");
    let mut watcher = Watcher::new(path, groups);
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Some(update) = watcher.poll().await {
            if tx.send(update).await.is_err() {
                break;
            }
        }
        if tx.is_closed() {
            break;
        }
    }
    tracing::debug!(path = %watcher.path.display(), "file source: receiver gone, stopping");
}

/// What identifies one version of the file for `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The last update sent, so that an unchanged condition is not re-sent every
/// poll.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Nothing,
    Snapshot,
    Degraded(String),
}

struct Watcher {
    path: PathBuf,
    groups: GroupsConfig,
    versions: VersionCache,
    /// Stamp of the contents last processed, and when they were read.
    seen: Option<(Stamp, SystemTime, Option<SystemTime>)>,
    /// Hash of the contents last processed (parsed or not).
    processed: Option<[u8; 32]>,
    sent: Sent,
}

/// Largest document read (the same cap as a master's HTTP body): a file
/// this large is not a master document, and reading it would hold it all.
pub const MAX_DOCUMENT: u64 = 256 * 1024 * 1024;

impl Watcher {
    fn new(path: PathBuf, groups: GroupsConfig) -> Watcher {
        Watcher {
            path,
            groups,
            versions: VersionCache::default(),
            seen: None,
            processed: None,
            sent: Sent::Nothing,
        }
    }

    /// One look at the file; `Some` when there is something new to say.
    async fn poll(&mut self) -> Option<SourceUpdate> {
        let meta = match tokio::fs::metadata(&self.path).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.unavailable(format!(
                    "file {} does not exist yet; waiting",
                    self.path.display()
                ));
            }
            Err(e) => {
                return self.unavailable(format!(
                    "cannot stat file {}: {e}; retrying",
                    self.path.display()
                ))
            }
        };
        if !meta.is_file() {
            return self.unavailable(format!(
                "{} is not a regular file; waiting for a file there",
                self.path.display()
            ));
        }
        let stamp = Stamp::of(&meta);
        if !self.may_have_changed(&stamp) {
            return None;
        }
        if meta.len() > MAX_DOCUMENT {
            return self.unavailable(format!(
                "file {} is {} bytes, larger than the {MAX_DOCUMENT} bytes a master document may have; write the snapshot document there, not a log or an archive",
                self.path.display(),
                meta.len()
            ));
        }
        let read_at = SystemTime::now();
        // Only re-checking a file whose stamp did not change (its mtime is
        // too recent to trust): hash it as a stream, parse only if the
        // contents really changed.
        let recheck = self.seen.as_ref().is_some_and(|(seen, ..)| *seen == stamp);
        if let (true, Some(done)) = (recheck, self.processed) {
            if hash_file(&self.path).is_ok_and(|hash| hash == done) {
                self.seen = Some((stamp, read_at, meta.modified().ok()));
                return None;
            }
        }
        let result = self.read(&stamp);
        // Changed while we read: the bytes may mix two versions. Look again
        // at the next poll (the stamp differs from `seen`, so it re-reads).
        match tokio::fs::metadata(&self.path).await {
            Ok(after) if Stamp::of(&after) == stamp => {}
            _ => return None,
        }
        let (hash, parsed) = match result {
            Ok(read) => read,
            Err(e) => {
                return self.unavailable(format!(
                    "cannot read file {}: {e}; retrying",
                    self.path.display()
                ))
            }
        };
        self.seen = Some((stamp, read_at, meta.modified().ok()));
        if self.processed == Some(hash) {
            return None;
        }
        self.processed = Some(hash);
        self.process(parsed)
    }

    /// Read the file once, parsing it while it is read
    /// ([`one_pass::read_document`]); a document of another shape (or an
    /// invalid one) is read whole and parsed from memory for the exact
    /// answer. The hash of what was read, and the parse.
    fn read(
        &mut self,
        stamp: &Stamp,
    ) -> std::io::Result<([u8; 32], Result<Parsed, DocumentError>)> {
        let file = std::fs::File::open(&self.path)?;
        if Stamp::of(&file.metadata()?) != *stamp {
            // Replaced since `stat`: what is read now is the next version.
            return Err(std::io::Error::other(
                "the file was replaced while being opened",
            ));
        }
        let mut hashing = HashingReader::new(file.take(MAX_DOCUMENT + 1));
        let mut buffered = std::io::BufReader::with_capacity(64 << 10, &mut hashing);
        let fast = one_pass::read_document(&mut buffered, &self.groups, &mut self.versions);
        drop(buffered);
        if let (OnePass::Parsed(parsed), false) = (fast, hashing.read > MAX_DOCUMENT) {
            return Ok((hashing.finish(), Ok(parsed)));
        }
        let bytes = read_whole(&self.path)?;
        let hash = Sha256::digest(&bytes).into();
        Ok((
            hash,
            parse_document_kind(&bytes, &self.groups, &mut self.versions),
        ))
    }

    /// Unchanged stamp: skip, unless the mtime is too recent to trust.
    fn may_have_changed(&self, stamp: &Stamp) -> bool {
        match &self.seen {
            Some((seen, read_at, Some(mtime))) if seen == stamp => read_at
                .duration_since(*mtime)
                .map_or(true, |age| age < RACY_WINDOW),
            Some((seen, _, None)) if seen == stamp => false,
            _ => true,
        }
    }

    /// Report a parse of the file's contents.
    fn process(&mut self, parsed: Result<Parsed, DocumentError>) -> Option<SourceUpdate> {
        match parsed {
            Ok(parsed) => {
                let view = parsed.view;
                tracing::info!(
                    path = %self.path.display(),
                    kind = %parsed.kind,
                    tasks = view.tasks.len(),
                    endpoints = view.endpoints().count(),
                    "file source: new snapshot"
                );
                for conflict in &view.conflicts {
                    tracing::warn!(path = %self.path.display(), "file source: {conflict}");
                }
                self.sent = Sent::Snapshot;
                Some(SourceUpdate::Snapshot(view))
            }
            Err(e) => self.degraded(format!("file {}: {e}", self.path.display())),
        }
    }

    /// The file cannot be read now: forget what was read, so that the same
    /// contents coming back are parsed and sent again.
    fn unavailable(&mut self, reason: String) -> Option<SourceUpdate> {
        self.seen = None;
        self.processed = None;
        self.degraded(reason)
    }

    fn degraded(&mut self, reason: String) -> Option<SourceUpdate> {
        if self.sent == Sent::Degraded(reason.clone()) {
            return None;
        }
        tracing::warn!("file source: {reason}; keeping the last snapshot");
        self.sent = Sent::Degraded(reason.clone());
        Some(SourceUpdate::Degraded(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        std::env::temp_dir().join(format!(
            "groupd-file-unit-{name}-{}-{nanos}.json",
            std::process::id()
        ))
    }

    #[tokio::test]
    async fn same_condition_is_reported_once_and_same_contents_are_not_resent() {
        let path = scratch("once");
        let mut w = Watcher::new(path.clone(), GroupsConfig::default());
        assert!(
            matches!(w.poll().await, Some(SourceUpdate::Degraded(r)) if r.contains("does not exist yet"))
        );
        assert!(w.poll().await.is_none(), "missing file reported once");
        std::fs::write(&path, b"{\"apps\": []}").expect("write");
        assert!(matches!(w.poll().await, Some(SourceUpdate::Snapshot(_))));
        assert!(w.poll().await.is_none(), "unchanged file is not re-sent");
        // Same contents rewritten (new mtime): nothing new to say.
        std::fs::write(&path, b"{\"apps\": []}").expect("write");
        assert!(w.poll().await.is_none());
        // Gone and back with the same contents: the daemon must hear it again.
        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(w.poll().await, Some(SourceUpdate::Degraded(_))));
        std::fs::write(&path, b"{\"apps\": []}").expect("write");
        assert!(matches!(w.poll().await, Some(SourceUpdate::Snapshot(_))));
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn directory_in_place_of_the_file_is_degraded() {
        let path = scratch("dir");
        std::fs::create_dir(&path).expect("mkdir");
        let mut w = Watcher::new(path.clone(), GroupsConfig::default());
        assert!(
            matches!(w.poll().await, Some(SourceUpdate::Degraded(r)) if r.contains("not a regular file"))
        );
        let _ = std::fs::remove_dir(&path);
    }
}
