//! Requests to the kernel of our own namespace: an rtnetlink connection
//! ([`Kernel`]) for questions, and link and route dumps read directly.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use anyhow::Context;
use futures::{Stream, StreamExt};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::link::{LinkAttribute, LinkExtentMask, LinkMessage};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{Handle, RouteMessageBuilder};
use tokio::task::JoinHandle;

use super::dump::dump_here;
use super::model::{HostRoute, Link};
use super::parse;

/// An rtnetlink connection in the namespace of the calling thread.
pub(super) struct Kernel {
    handle: Handle,
    connection: JoinHandle<()>,
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Kernel {
    pub fn connect() -> anyhow::Result<Kernel> {
        // The third value is the stream of unsolicited messages: this socket
        // joins no multicast group (events come from `EventSocket`), so it is
        // dropped.
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening an rtnetlink socket")?;
        Ok(Kernel {
            handle,
            connection: tokio::spawn(connection),
        })
    }

    /// The id our namespace gives to the namespace behind `ns` (an fd on a
    /// network namespace), or `None` when it has none (RTM_GETNSID with
    /// NETNSA_FD; the kernel does not allocate one for this question).
    pub async fn nsid_of(&self, ns: BorrowedFd<'_>) -> anyhow::Result<Option<i32>> {
        let mut msg = NsidMessage::default();
        // An fd is never negative, so the cast is lossless.
        msg.attributes
            .push(NsidAttribute::Fd(ns.as_raw_fd() as u32));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
        req.header.flags = NLM_F_REQUEST;
        let mut handle = self.handle.clone();
        let replies = handle.request(req).context("asking for a namespace id")?;
        first_nsid(replies).await
    }
}

/// Every link of our namespace (without their statistics, which we
/// do not use), read one datagram at a time (see [`dump`](super::dump)).
pub async fn links() -> anyhow::Result<Vec<Link>> {
    let mut request = LinkMessage::default();
    request
        .attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    dump(RouteNetlinkMessage::GetLink(request), |msg| match msg {
        RouteNetlinkMessage::NewLink(link) => parse::link(&link),
        _ => None,
    })
    .await
    .context("dumping links")
}

/// Every host route of our namespace, IPv4 and IPv6, all tables.
pub async fn host_routes() -> anyhow::Result<Vec<HostRoute>> {
    // Without NETLINK_GET_STRICT_CHK the kernel ignores the table, scope and
    // type in these requests and dumps every table, which is what we want.
    let mut routes = Vec::new();
    for (request, family) in [
        (RouteMessageBuilder::<Ipv4Addr>::new().build(), "IPv4"),
        (RouteMessageBuilder::<Ipv6Addr>::new().build(), "IPv6"),
    ] {
        let found = dump(RouteNetlinkMessage::GetRoute(request), |msg| match msg {
            RouteNetlinkMessage::NewRoute(route) => parse::host_route(&route),
            _ => None,
        })
        .await
        .with_context(|| format!("dumping {family} routes"))?;
        routes.extend(found);
    }
    Ok(routes)
}

/// [`dump_here`] on a blocking thread (ours are never moved to another
/// namespace), keeping what `keep` makes of each message.
async fn dump<T: Send + 'static>(
    request: RouteNetlinkMessage,
    keep: fn(RouteNetlinkMessage) -> Option<T>,
) -> anyhow::Result<Vec<T>> {
    let dumped = tokio::task::spawn_blocking(move || {
        let mut kept = Vec::new();
        dump_here(request, |msg| kept.extend(keep(msg))).map(|()| kept)
    })
    .await
    .context("the netlink dump thread ended without an answer")?;
    Ok(dumped?)
}

async fn first_nsid(
    replies: impl Stream<Item = NetlinkMessage<RouteNetlinkMessage>>,
) -> anyhow::Result<Option<i32>> {
    futures::pin_mut!(replies);
    while let Some(reply) = replies.next().await {
        match reply.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                let id = m.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(id) => Some(*id),
                    _ => None,
                });
                // NETNSA_NSID_NOT_ASSIGNED is -1.
                return Ok(id.filter(|id| *id >= 0));
            }
            NetlinkPayload::Error(e) if e.code.is_some() => {
                return Err(anyhow::anyhow!("RTM_GETNSID: {}", e.to_io()));
            }
            _ => {}
        }
    }
    Ok(None)
}
