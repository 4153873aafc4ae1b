//! Which local task interface carries which IP (docs/design.md §3).
//!
//! Learned with rtnetlink and kept live from netlink events:
//! - links of our namespace tell which interfaces are task interfaces, how
//!   they are attached (routed, or a port of a bridge) and, for a veth, where
//!   its peer lives (peer namespace id + peer ifindex);
//! - host routes (`/32`, `/128`) of our namespace bind IPs to the interface
//!   they point at (routed networks);
//! - the global addresses configured on the veth peer inside the task's
//!   namespace bind IPs too (bridged networks, and routed veths that carry
//!   their address, like Calico's).
//!
//! Reading a peer namespace needs a handle (fd) on it: see [`netns`] for how
//! a namespace id is mapped to one. Its addresses are dumped once from a
//! short-lived thread that enters the namespace; later changes arrive on the
//! one event socket of our namespace, which listens to all namespaces that
//! have an id here (`NETLINK_LISTEN_ALL_NSID`). No socket or fd is kept open
//! inside a task namespace, because either would keep the namespace — and
//! with it the task's veth pair — alive after the task is gone.

mod dump;
mod events;
mod kernel;
mod model;
mod netns;
mod parse;
mod tracker;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch as channel;
use tokio::time::{sleep_until, Instant};

use crate::config::InterfacesConfig;

use events::{Event, EventSocket, RecvError};
use tracker::{Pending, Tracker};

/// The local task interfaces and the IPs bound to them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Bindings {
    /// Every task interface present (name -> info), including ones with no IPs yet.
    pub interfaces: BTreeMap<String, TaskInterface>,
    /// Names of all bridge devices in this namespace (the compiler exempts
    /// them from per-interface checks in the inet family).
    pub bridges: BTreeSet<String>,
    /// Ports of the bridges in `interfaces.ignore_bridges` (never task interfaces).
    pub ignored_ports: BTreeSet<String>,
}

/// One host-side task interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskInterface {
    pub name: String,
    pub ifindex: u32,
    pub attachment: Attachment,
    /// IPs bound to this interface: host routes (/32, /128) whose output
    /// interface it is (routed), or the global-scope addresses configured on
    /// the veth peer inside its network namespace (bridged; also collected for
    /// routed veths). Never link-local.
    pub ips: BTreeSet<IpAddr>,
}

/// How a task interface reaches the rest of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Attachment {
    /// Not enslaved to a bridge: traffic is routed by the host.
    Routed,
    /// A port of this bridge.
    Bridged { bridge: String },
}

impl Bindings {
    /// The task interface an IP is bound to, if any.
    pub fn owner_of(&self, ip: IpAddr) -> Option<&TaskInterface> {
        self.interfaces.values().find(|i| i.ips.contains(&ip))
    }
}

/// One-shot dump of the current bindings.
pub async fn snapshot(cfg: &InterfacesConfig) -> anyhow::Result<Bindings> {
    let mut tracker = Tracker::new(cfg.clone());
    tracker.flush(&Pending::everything()).await?;
    Ok(tracker.bindings())
}

/// Least time between two recomputations (and so between two sends): a
/// burst of events (a veth appearing makes several) costs one dump.
const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// After a failed dump, wait this long before trying again.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);
/// Everything is re-read this often even without events, so that a lost or
/// undeliverable event (e.g. no CAP_NET_BROADCAST for a task namespace) is
/// repaired within this bound.
const SAFETY_RESYNC: Duration = Duration::from_secs(60);

/// Runs forever: sends a new [`Bindings`] on `tx` whenever it changes
/// (the first one as soon as it is known). Bursts are coalesced: at most one
/// send per ~50 ms; a single change is reflected within a few milliseconds.
/// Returns `Ok(())` once every receiver of `tx` is gone.
pub async fn watch(cfg: InterfacesConfig, tx: channel::Sender<Bindings>) -> anyhow::Result<()> {
    // Subscribe before the first dump so that nothing between the two is missed.
    let mut socket = EventSocket::open()?;
    let mut tracker = Tracker::new(cfg);
    socket.set_own_nsid(tracker.own_nsid().await);

    let mut pending = Pending::everything();
    let mut not_before = Instant::now();
    let mut next_resync = Instant::now() + SAFETY_RESYNC;
    let mut sent_once = false;
    let mut events = Vec::new();
    loop {
        let flush_at = pending.any().then_some(not_before);
        tokio::select! {
            biased;
            _ = tx.closed() => return Ok(()),
            _ = sleep_until(flush_at.unwrap_or(not_before)), if flush_at.is_some() => {
                match tracker.flush(&pending).await {
                    Ok(()) => {
                        pending = Pending::default();
                        not_before = Instant::now() + MIN_INTERVAL;
                        publish(&tx, tracker.bindings(), &mut sent_once);
                    }
                    Err(e) => {
                        tracing::warn!("reading interfaces, routes or addresses failed, retrying: {e:#}");
                        not_before = Instant::now() + RETRY_AFTER_ERROR;
                    }
                }
            }
            _ = sleep_until(next_resync) => {
                next_resync = Instant::now() + SAFETY_RESYNC;
                pending = Pending::everything();
            }
            received = socket.recv(&mut events) => {
                match received {
                    Ok(()) => {}
                    Err(RecvError::Overflow) => {
                        // Events were lost: only a full re-read is right now.
                        tracing::info!("netlink event queue overflowed; re-reading everything");
                        pending = Pending::everything();
                    }
                    Err(RecvError::Io(e)) => return Err(anyhow::Error::new(e).context("reading netlink events")),
                }
                for event in events.drain(..) {
                    if matches!(event, Event::NsidChanged | Event::NsidDeleted(_)) {
                        socket.set_own_nsid(tracker.own_nsid().await);
                    }
                    tracker.note(event, &mut pending);
                }
            }
        }
    }
}

/// Send `now` unless receivers already have it; the first value always goes
/// out so that a consumer learns that the initial dump is complete.
fn publish(tx: &channel::Sender<Bindings>, now: Bindings, sent_once: &mut bool) {
    if !*sent_once {
        *sent_once = true;
        tx.send_replace(now);
        return;
    }
    tx.send_if_modified(|current| {
        if *current == now {
            return false;
        }
        *current = now;
        true
    });
}
