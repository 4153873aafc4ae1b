//! What the remote sources (Marathon, Mesos) hand to the daemon, and how
//! they say that they are degraded: shared so both behave the same.

use std::time::Duration;

use super::http::{redact_url, MasterClient};
use super::SourceUpdate;
use crate::model::{ClusterView, Task};

/// The effect of one event on the view.
pub enum Change {
    None,
    Upsert(Task),
    Remove(String),
    /// Several tasks at once: send the whole view (one transaction).
    Whole,
}

/// The update a change becomes (`None`: nothing to send).
pub fn update_for(change: Change, view: &ClusterView) -> Option<SourceUpdate> {
    match change {
        Change::None => None,
        Change::Upsert(task) => Some(SourceUpdate::Upsert(task)),
        Change::Remove(id) => Some(SourceUpdate::Remove(id)),
        Change::Whole => Some(SourceUpdate::Snapshot(snapshot(view))),
    }
}

/// The whole view as a snapshot, with its IP conflicts listed.
pub fn snapshot(view: &ClusterView) -> ClusterView {
    let mut view = view.clone();
    view.conflicts = view.ip_conflicts();
    view
}

/// Degraded reasons, reported once per distinct reason (a retry that fails
/// the same way stays quiet; a different failure is reported again).
#[derive(Debug)]
pub struct Degraded {
    source: &'static str,
    reported: Option<String>,
}

impl Degraded {
    pub fn new(source: &'static str) -> Degraded {
        Degraded {
            source,
            reported: None,
        }
    }

    /// The source works again.
    pub fn clear(&mut self) {
        self.reported = None;
    }

    /// The update to send for `failure`, scrubbed of credentials, or `None`
    /// when this reason was reported already.
    pub fn update(
        &mut self,
        failure: &str,
        client: Option<&MasterClient>,
        retry_in: Duration,
    ) -> Option<SourceUpdate> {
        let base = match client {
            Some(client) => client.scrub(failure),
            None => redact_url(failure),
        };
        if self.reported.as_deref() == Some(base.as_str()) {
            tracing::debug!("{} source: still failing: {base}", self.source);
            return None;
        }
        let reason = format!("{base}; retrying in {:.1} s", retry_in.as_secs_f64());
        tracing::warn!(
            "{} source: {reason}; the last applied rules stay in force",
            self.source
        );
        self.reported = Some(base);
        Some(SourceUpdate::Degraded(reason))
    }
}
