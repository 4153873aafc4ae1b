//! Where task state comes from: `file`, `marathon`, `mesos`, `etcd`.
//!
//! A source only produces [`SourceUpdate`]s; it never touches the kernel.

use crate::model::{ClusterView, Task};

pub mod document;
pub mod etcd;
pub mod file;
pub mod http;
pub mod live;
pub mod marathon;
pub mod mesos;
pub mod one_pass;
pub mod outbox;
pub mod pipe;
pub mod recordio;
pub mod sse;
pub mod wire;

/// What a source tells the daemon.
#[derive(Debug, Clone)]
pub enum SourceUpdate {
    /// A complete, fully parsed view of the cluster: replaces the previous one.
    Snapshot(ClusterView),
    /// One task appeared or changed (event streams). An IP another live task
    /// owns stays with that task until the master says otherwise.
    Upsert(Task),
    /// One task is gone (terminal state, killed, its app deleted).
    Remove(String),
    /// The source cannot deliver a fresh view (unreachable, malformed input...).
    /// The last applied rules stay in force (fail-static).
    Degraded(String),
    /// The `etcd` source is current up to this position (revision,
    /// publisher): shown by `groupctl status`; ends a degraded report.
    Position(etcd::Position),
}
