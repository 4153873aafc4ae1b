//! What the remote sources (Marathon, Mesos) hand to the daemon, and how
//! they say that they are degraded: shared so both behave the same.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Sender;

use super::http::{redact_url, Backoff, HttpError, MasterClient, MasterSettings};
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

/// Why a session with a master ended, as far as the retry loop cares.
pub trait SessionEnd: std::fmt::Display {
    /// The daemon stopped listening: stop too.
    fn is_closed(&self) -> bool;
    /// Credentials were refused: wait longer, and build a new client (the
    /// credential files are read again).
    fn is_auth(&self) -> bool;
    /// The master answered but its stream misbehaved: start with another
    /// master next time, or one that stalls every stream would be tried
    /// first forever.
    fn blames_the_stream(&self) -> bool;
}

/// What a remote source shares with the retry loop: its channel to the
/// daemon, its master client, its backoff and what it reported last.
#[derive(Debug)]
pub struct Link {
    pub tx: Sender<SourceUpdate>,
    /// Built lazily, rebuilt after refused credentials (a rotated password
    /// or token file is read again).
    pub client: Option<Arc<MasterClient>>,
    pub backoff: Backoff,
    /// Degraded reasons already reported.
    pub degraded: Degraded,
}

impl Link {
    pub fn new(
        source: &'static str,
        tx: Sender<SourceUpdate>,
        base: Duration,
        cap: Duration,
    ) -> Link {
        Link {
            tx,
            client: None,
            backoff: Backoff::new(base, cap),
            degraded: Degraded::new(source),
        }
    }
}

/// The daemon stopped listening: the source ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonGone;

impl Link {
    /// The client, built on first use and again after it was dropped
    /// (refused credentials: a rotated password or token file is re-read).
    pub fn client(&mut self, settings: &MasterSettings) -> Result<Arc<MasterClient>, HttpError> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = Arc::new(MasterClient::new(settings)?);
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Hand `update` to the daemon.
    pub async fn send(&self, update: SourceUpdate) -> Result<(), DaemonGone> {
        self.tx.send(update).await.map_err(|_| DaemonGone)
    }

    /// Hand the daemon what `change` means for `view` (nothing for
    /// [`Change::None`]).
    pub async fn send_change(&self, change: Change, view: &ClusterView) -> Result<(), DaemonGone> {
        match update_for(change, view) {
            Some(update) => self.send(update).await,
            None => Ok(()),
        }
    }
}

/// A remote source: sessions with its masters, each ending in a failure.
pub trait Sessions {
    type End: SessionEnd + Send;
    /// One connection's life; ends only by failure.
    fn session(&mut self) -> impl Future<Output = Result<Infallible, Self::End>> + Send;
    fn link(&mut self) -> &mut Link;
}

/// Run sessions until the daemon stops listening: after each failure, say
/// that the source is degraded (once per reason), back off with jitter and
/// start again.
pub async fn run_sessions<S: Sessions + Send>(mut source: S) {
    loop {
        let failure = match source.session().await {
            Ok(never) => match never {},
            Err(failure) => failure,
        };
        if failure.is_closed() {
            return;
        }
        let p = source.link();
        let delay = if failure.is_auth() {
            p.backoff.next_auth_delay()
        } else {
            p.backoff.next_delay()
        };
        let update = p
            .degraded
            .update(&failure.to_string(), p.client.as_deref(), delay);
        if let Some(update) = update {
            if p.tx.send(update).await.is_err() {
                return;
            }
        }
        if failure.is_auth() {
            p.client = None;
        } else if let (true, Some(client)) = (failure.blames_the_stream(), &p.client) {
            client.demote();
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = p.tx.closed() => return,
        }
    }
}
