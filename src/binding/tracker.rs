//! What is known so far, what must be re-read, and how to re-read it.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::fd::AsFd;

use crate::config::InterfacesConfig;

use super::events::Event;
use super::kernel::{self, Kernel};
use super::model::{self, HostRoute, Link, NsAddrs};
use super::netns::{self, Resolver};
use super::Bindings;

/// Work accumulated from events, done at the next flush.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Dump links and routes of our namespace again.
    own: bool,
    /// Dump every peer namespace again (not only new ones).
    all_namespaces: bool,
    /// Dump these peer namespaces again.
    namespaces: BTreeSet<i32>,
    /// Something already applied changed the result: recompute and publish.
    recompute: bool,
}

impl Pending {
    pub fn everything() -> Pending {
        Pending {
            own: true,
            all_namespaces: true,
            namespaces: BTreeSet::new(),
            recompute: true,
        }
    }

    pub fn any(&self) -> bool {
        self.own || self.all_namespaces || !self.namespaces.is_empty() || self.recompute
    }
}

pub(super) struct Tracker {
    cfg: InterfacesConfig,
    /// Opened on first use and again after a failure (the connection task
    /// may have died with its socket).
    kernel: Option<Kernel>,
    resolver: Resolver,
    links: Vec<Link>,
    routes: Vec<HostRoute>,
    /// Addresses of the peer namespaces read so far.
    peers: HashMap<i32, NsAddrs>,
    /// Peer namespaces that could not be found or entered: their interfaces
    /// keep their routed IPs only. Each is warned about once.
    unreadable: BTreeSet<i32>,
}

impl Tracker {
    pub fn new(cfg: InterfacesConfig) -> Tracker {
        Tracker {
            cfg,
            kernel: None,
            resolver: Resolver::default(),
            links: Vec::new(),
            routes: Vec::new(),
            peers: HashMap::new(),
            unreadable: BTreeSet::new(),
        }
    }

    /// The id our namespace has for itself (rarely set; events from our own
    /// namespace then carry it).
    pub async fn own_nsid(&mut self) -> Option<i32> {
        let me = File::open("/proc/thread-self/ns/net").ok()?;
        connected(&mut self.kernel)
            .ok()?
            .nsid_of(me.as_fd())
            .await
            .ok()
            .flatten()
    }

    /// Apply an event now if it is cheap, else note the work for the flush.
    pub fn note(&mut self, event: Event, pending: &mut Pending) {
        match event {
            Event::OwnLinksOrRoutes => pending.own = true,
            Event::NsidChanged => pending.own = true,
            Event::NsidDeleted(nsid) => {
                self.forget(nsid);
                pending.own = true;
            }
            Event::PeerUnknown(nsid) => {
                if self.known(nsid) {
                    pending.namespaces.insert(nsid);
                }
            }
            Event::PeerAddress {
                nsid,
                address,
                added,
            } => {
                // Namespaces not loaded yet are dumped whole when first needed,
                // which covers this change.
                let Some(addrs) = self.peers.get_mut(&nsid) else {
                    return;
                };
                let key = (address.ip, address.prefix);
                let changed = if added {
                    addrs.entry(address.ifindex).or_default().insert(key)
                } else {
                    addrs
                        .get_mut(&address.ifindex)
                        .is_some_and(|set| set.remove(&key))
                };
                pending.recompute |= changed;
            }
        }
    }

    fn known(&self, nsid: i32) -> bool {
        self.peers.contains_key(&nsid) || self.unreadable.contains(&nsid)
    }

    fn forget(&mut self, nsid: i32) {
        self.peers.remove(&nsid);
        self.unreadable.remove(&nsid);
    }

    /// Do the pending work. On error the state is left as it was, to be
    /// retried with the same `pending`.
    pub async fn flush(&mut self, pending: &Pending) -> anyhow::Result<()> {
        let result = self.try_flush(pending).await;
        if result.is_err() {
            self.kernel = None;
        }
        result
    }

    async fn try_flush(&mut self, pending: &Pending) -> anyhow::Result<()> {
        if pending.own || pending.all_namespaces {
            // Plain dumps (`kernel::links`): no rtnetlink connection needed.
            let links = kernel::links().await?;
            let routes = kernel::host_routes().await?;
            self.links = links;
            self.routes = routes;
        }
        let wanted = model::wanted_namespaces(&self.cfg, &self.links);
        let unwanted: Vec<i32> = self
            .peers
            .keys()
            .chain(&self.unreadable)
            .filter(|n| !wanted.contains(n))
            .copied()
            .collect();
        for nsid in unwanted {
            self.forget(nsid);
        }
        self.resolver.retain(&wanted);

        let reload: BTreeSet<i32> = wanted
            .iter()
            .filter(|n| {
                pending.all_namespaces || pending.namespaces.contains(n) || !self.known(**n)
            })
            .copied()
            .collect();
        if !reload.is_empty() {
            self.load_namespaces(&reload).await?;
        }
        Ok(())
    }

    /// Dump the addresses of these namespaces, all at once (one thread each).
    async fn load_namespaces(&mut self, nsids: &BTreeSet<i32>) -> anyhow::Result<()> {
        let kernel = connected(&mut self.kernel)?;
        let mut files = self.resolver.open(kernel, nsids).await;
        let dumps = nsids.iter().map(|&nsid| {
            let file = files.remove(&nsid);
            async move {
                let result = match file {
                    Some(f) => netns::addresses_in(f).await.map_err(|e| e.to_string()),
                    None => Err(
                        "no handle on it found in /run/netns, /var/run/netns or /proc/*/ns/net"
                            .to_string(),
                    ),
                };
                (nsid, result)
            }
        });
        for (nsid, result) in futures::future::join_all(dumps).await {
            match result {
                Ok(addrs) => {
                    self.unreadable.remove(&nsid);
                    self.peers.insert(nsid, addrs);
                }
                Err(why) => {
                    self.peers.remove(&nsid);
                    if self.unreadable.insert(nsid) {
                        tracing::warn!(
                            "cannot read the addresses of network namespace id {nsid} ({why}); its interfaces get their routed IPs only"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    pub fn bindings(&self) -> Bindings {
        model::assemble(&self.cfg, &self.links, &self.routes, &self.peers)
    }
}

/// The connection in `slot`, opened if there is none.
fn connected(slot: &mut Option<Kernel>) -> anyhow::Result<&Kernel> {
    match slot {
        Some(kernel) => Ok(kernel),
        None => Ok(slot.insert(Kernel::connect()?)),
    }
}
