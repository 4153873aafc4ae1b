//! The cluster view on disk (`state_dir`), so a restart without the master
//! can re-apply what groupd last enforced — and knows how old it is.
//!
//! Two files:
//! - `snapshot.json`: `{"generation": N, "view": {...}}`, written to a
//!   temporary file, fsynced and renamed (a reader sees the old or the new
//!   file, never half of one);
//! - `journal.jsonl`: one line per change after that snapshot,
//!   `{"g": N, "upsert": {task}}` or `{"g": N, "remove": "id"}`.
//!
//! Every change is written here BEFORE the transaction that enforces it, so
//! a kill -9 at any instant leaves a view no older than the kernel's table.
//! Journal lines are written without fsync: a killed process loses nothing
//! the kernel's page cache holds, and a machine that loses power loses its
//! nftables tables too (then any persisted view is newer than the kernel).
//! A torn last line (killed mid-write) is ignored: its transaction was
//! never sent.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{ClusterView, Task};

const SNAPSHOT: &str = "snapshot.json";
const JOURNAL: &str = "journal.jsonl";
/// Written by groupd before generations existed: a plain view, applied only
/// over a kernel without groupd's table (its age is unknown).
const LEGACY_VIEW: &str = "view.json";

/// What `state_dir` held at start.
#[derive(Debug)]
pub enum Persisted {
    /// A view and its generation (`None`: a legacy view of unknown age).
    View {
        generation: Option<u64>,
        view: ClusterView,
    },
    Absent,
    /// Unreadable: reported, never applied.
    Corrupt(String),
}

/// One change, as the journal records it.
pub enum Change<'a> {
    Upsert(&'a Task),
    Remove(&'a str),
}

#[derive(Serialize)]
struct RecordOut<'a> {
    g: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    upsert: Option<&'a Task>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remove: Option<&'a str>,
}

#[derive(Deserialize)]
struct RecordIn {
    g: u64,
    #[serde(default)]
    upsert: Option<Task>,
    #[serde(default)]
    remove: Option<String>,
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    generation: u64,
    view: &'a ClusterView,
}

#[derive(Deserialize)]
struct SnapshotIn {
    generation: u64,
    view: ClusterView,
}

pub struct ViewStore {
    dir: PathBuf,
    journal: Option<BufWriter<File>>,
    /// Lines in the journal since the last snapshot.
    journal_lines: usize,
}

impl ViewStore {
    pub fn new(dir: &Path) -> ViewStore {
        ViewStore {
            dir: dir.to_path_buf(),
            journal: None,
            journal_lines: 0,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Lines written to the journal since the last snapshot.
    pub fn journal_lines(&self) -> usize {
        self.journal_lines
    }

    /// Read the snapshot and replay the journal after it.
    pub fn load(&mut self) -> Persisted {
        let snapshot = self.dir.join(SNAPSHOT);
        let (mut generation, mut view) = match File::open(&snapshot) {
            Ok(f) => {
                // Streamed: the view of a large cluster is megabytes of JSON.
                let reader = BufReader::with_capacity(64 << 10, f);
                match serde_json::from_reader::<_, SnapshotIn>(reader) {
                    Ok(s) => (s.generation, s.view),
                    Err(e) => return Persisted::Corrupt(format!("{}: {e}", snapshot.display())),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.load_legacy(),
            Err(e) => return Persisted::Corrupt(format!("{}: {e}", snapshot.display())),
        };
        let snapshot_generation = generation;
        match File::open(self.dir.join(JOURNAL)) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    let Ok(line) = line else { break };
                    // A torn line ends the journal: it was being written
                    // when groupd died, before its transaction was sent.
                    let Ok(r) = serde_json::from_str::<RecordIn>(&line) else {
                        break;
                    };
                    // Lines at or below the snapshot's generation are in
                    // it; one change may write several lines (tasks that
                    // received an IP it freed) at one generation.
                    if r.g <= snapshot_generation {
                        continue;
                    }
                    generation = generation.max(r.g);
                    if let Some(task) = r.upsert {
                        view.insert(task);
                    } else if let Some(id) = r.remove {
                        view.tasks.remove(id.as_str());
                    }
                    self.journal_lines += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Persisted::Corrupt(format!("{JOURNAL}: {e}")),
        }
        view.repack();
        Persisted::View {
            generation: Some(generation),
            view,
        }
    }

    fn load_legacy(&self) -> Persisted {
        let path = self.dir.join(LEGACY_VIEW);
        let Ok(f) = File::open(&path) else {
            return Persisted::Absent;
        };
        match serde_json::from_reader::<_, ClusterView>(BufReader::with_capacity(64 << 10, f)) {
            Ok(mut view) => {
                view.repack();
                Persisted::View {
                    generation: None,
                    view,
                }
            }
            Err(e) => Persisted::Corrupt(format!("{}: {e}", path.display())),
        }
    }

    /// Replace everything on disk by `view` at `generation` (atomic), and
    /// start an empty journal.
    pub fn write_snapshot(&mut self, generation: u64, view: &ClusterView) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(SNAPSHOT);
        let tmp = self.dir.join(format!("{SNAPSHOT}.tmp"));
        let f = File::create(&tmp)?;
        let mut w = BufWriter::new(f);
        serde_json::to_writer(&mut w, &SnapshotOut { generation, view })?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // The journal's lines are all in the snapshot now.
        self.journal = None;
        File::create(self.dir.join(JOURNAL))?;
        let _ = std::fs::remove_file(self.dir.join(LEGACY_VIEW));
        File::open(&self.dir)?.sync_all()?;
        self.journal_lines = 0;
        Ok(())
    }

    /// Append one change at `generation` to the journal.
    pub fn append(&mut self, generation: u64, change: Change<'_>) -> io::Result<()> {
        let record = match change {
            Change::Upsert(task) => RecordOut {
                g: generation,
                upsert: Some(task),
                remove: None,
            },
            Change::Remove(id) => RecordOut {
                g: generation,
                upsert: None,
                remove: Some(id),
            },
        };
        if self.journal.is_none() {
            std::fs::create_dir_all(&self.dir)?;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(JOURNAL))?;
            self.journal = Some(BufWriter::new(f));
        }
        let Some(w) = self.journal.as_mut() else {
            return Err(io::Error::other("journal not open"));
        };
        let mut line = serde_json::to_vec(&record)?;
        line.push(b'\n');
        // One write per line: the page cache has it before the transaction.
        let result = w.write_all(&line).and_then(|_| w.flush());
        if result.is_err() {
            // A partial line may be on disk: reopen (and so re-append after
            // it) only after a new snapshot.
            self.journal = None;
        }
        result?;
        self.journal_lines += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, ip: &str, groups: &[&str]) -> Task {
        Task::running(id, "/a", [ip.parse().expect("ip")], groups)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("groupd-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn snapshot_then_journal_replays_to_the_last_generation() {
        let dir = scratch("replay");
        let mut store = ViewStore::new(&dir);
        let mut view = ClusterView::default();
        view.insert(task("a", "10.233.0.1", &["g"]));
        store.write_snapshot(5, &view).expect("snapshot");
        let b = task("b", "10.233.0.2", &["g"]);
        store.append(6, Change::Upsert(&b)).expect("append");
        store.append(7, Change::Remove("a")).expect("append");
        let Persisted::View { generation, view } = ViewStore::new(&dir).load() else {
            panic!("no view loaded");
        };
        assert_eq!(generation, Some(7));
        assert_eq!(view.tasks.keys().map(|k| &**k).collect::<Vec<_>>(), ["b"]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let dir = scratch("torn");
        let mut store = ViewStore::new(&dir);
        store
            .write_snapshot(1, &ClusterView::default())
            .expect("snapshot");
        store
            .append(2, Change::Upsert(&task("a", "10.233.0.1", &["g"])))
            .expect("append");
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(JOURNAL))
            .expect("journal");
        f.write_all(b"{\"g\":3,\"upsert\":{\"id\":")
            .expect("torn write");
        let Persisted::View { generation, view } = ViewStore::new(&dir).load() else {
            panic!("no view loaded");
        };
        assert_eq!(generation, Some(2));
        assert_eq!(view.tasks.len(), 1);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_new_snapshot_empties_the_journal() {
        let dir = scratch("compact");
        let mut store = ViewStore::new(&dir);
        store
            .append(1, Change::Upsert(&task("a", "10.233.0.1", &["g"])))
            .expect("append");
        let mut view = ClusterView::default();
        view.insert(task("z", "10.233.0.9", &["g"]));
        store.write_snapshot(9, &view).expect("snapshot");
        assert_eq!(store.journal_lines(), 0);
        let Persisted::View { generation, view } = ViewStore::new(&dir).load() else {
            panic!("no view loaded");
        };
        assert_eq!(generation, Some(9));
        assert_eq!(view.tasks.keys().map(|k| &**k).collect::<Vec<_>>(), ["z"]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn corrupt_and_absent_and_legacy_are_told_apart() {
        let dir = scratch("kinds");
        assert!(matches!(ViewStore::new(&dir).load(), Persisted::Absent));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut legacy = ClusterView::default();
        legacy.insert(task("old", "10.233.0.3", &["g"]));
        std::fs::write(
            dir.join(LEGACY_VIEW),
            serde_json::to_vec(&legacy).expect("json"),
        )
        .expect("write legacy");
        assert!(matches!(
            ViewStore::new(&dir).load(),
            Persisted::View {
                generation: None,
                ..
            }
        ));
        std::fs::write(dir.join(SNAPSHOT), b"{\"generation\": 3, \"vi").expect("write");
        assert!(matches!(ViewStore::new(&dir).load(), Persisted::Corrupt(_)));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
