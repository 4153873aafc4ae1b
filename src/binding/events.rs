//! The one event socket: link, route, address and namespace-id changes of
//! our namespace, plus address changes of every namespace that has an id
//! here (`NETLINK_LISTEN_ALL_NSID`: the kernel tags each such message with
//! the namespace's id). Listening from our namespace, rather than keeping a
//! socket inside each task namespace, holds no reference on those
//! namespaces: a task's namespace still dies, taking its veth, when the task
//! ends.
//!
//! netlink-proto does not expose the ancillary data that carries the id, so
//! this socket is read with `recvmsg` directly.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::AsRawFd;

use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::nsid::NsidAttribute;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::dump::messages;
use super::model::Address;
use super::parse;

// rtnetlink multicast groups (RTNLGRP_*, linux/rtnetlink.h).
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
const RTNLGRP_NSID: u32 = 28;
const GROUPS: [u32; 6] = [
    RTNLGRP_LINK,
    RTNLGRP_IPV4_IFADDR,
    RTNLGRP_IPV4_ROUTE,
    RTNLGRP_IPV6_IFADDR,
    RTNLGRP_IPV6_ROUTE,
    RTNLGRP_NSID,
];

/// Room for bursts (a few hundred veths appearing at once) before the kernel
/// drops events; if it still does, we re-read everything.
const RECEIVE_BUFFER: usize = 8 << 20;
/// Larger than any single notification (a link message is a few KiB).
const DATAGRAM_MAX: usize = 256 << 10;

/// What one notification means to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event {
    /// A link or route of our namespace changed: links and routes are dumped
    /// again (event contents are incomplete: a veth's delete carries no peer,
    /// bridge-port messages no kind, and IPv4 routes vanish with their link
    /// without any event).
    OwnLinksOrRoutes,
    /// An id was given to or taken from a namespace: an id can be reused for
    /// another namespace, so what we know under it is dropped.
    NsidChanged,
    /// The id of a namespace that went away (or is gone from our view).
    NsidDeleted(i32),
    /// An address was added (`true`) or removed in namespace `nsid`.
    PeerAddress {
        nsid: i32,
        address: Address,
        added: bool,
    },
    /// Something happened in namespace `nsid` that we could not decode:
    /// re-read its addresses.
    PeerUnknown(i32),
}

#[derive(Debug, thiserror::Error)]
pub(super) enum RecvError {
    #[error("netlink event queue overflowed")]
    Overflow,
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub(super) struct EventSocket {
    fd: AsyncFd<Socket>,
    buf: Vec<u8>,
    /// The id our namespace has for itself, if any: messages tagged with it
    /// are our own.
    own_nsid: Option<i32>,
}

impl EventSocket {
    pub fn open() -> io::Result<EventSocket> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        for group in GROUPS {
            socket.add_membership(group)?;
        }
        socket.set_listen_all_namespaces(true)?;
        if !has_effective_capability(CAP_NET_BROADCAST) {
            tracing::warn!(
                "without CAP_NET_BROADCAST, addresses configured inside task namespaces after their veth \
                 appears are only seen at the next full re-read (every {:?})",
                super::SAFETY_RESYNC
            );
        }
        set_receive_buffer(&socket, RECEIVE_BUFFER);
        socket.set_non_blocking(true)?;
        // SAFETY: `Socket` owns its fd, keeps it open until dropped and always
        // returns the same one.
        let fd = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?;
        Ok(EventSocket {
            fd,
            buf: vec![0; DATAGRAM_MAX],
            own_nsid: None,
        })
    }

    pub fn set_own_nsid(&mut self, nsid: Option<i32>) {
        self.own_nsid = nsid;
    }

    /// Wait for the next notification and append what it means to `out`.
    pub async fn recv(&mut self, out: &mut Vec<Event>) -> Result<(), RecvError> {
        let EventSocket { fd, buf, own_nsid } = self;
        loop {
            let mut guard = fd.readable().await?;
            match guard.try_io(|s| recv_tagged(s.get_ref().as_raw_fd(), buf)) {
                Ok(Ok(Some(Datagram { len, nsid }))) => {
                    let nsid = nsid.filter(|n| Some(*n) != *own_nsid);
                    interpret(&buf[..len], nsid, out);
                    return Ok(());
                }
                // Not from the kernel: ignore, wait for the next one.
                Ok(Ok(None)) => continue,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) if lost_events(&e) => return Err(RecvError::Overflow),
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => continue,
            }
        }
    }
}

/// ENOBUFS: the kernel dropped events for us; EMSGSIZE: we cut one.
fn lost_events(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EMSGSIZE))
}

/// The kernel delivers another namespace's events to a LISTEN_ALL_NSID
/// socket only if its opener has this capability there.
const CAP_NET_BROADCAST: u32 = 11;

/// Whether this process has capability `cap` in its effective set (from
/// /proc/self/status; `true` when that cannot be read, to warn only when sure).
fn has_effective_capability(cap: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true;
    };
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim);
    match effective.and_then(|hex| u64::from_str_radix(hex, 16).ok()) {
        Some(bits) => bits & (1 << cap) != 0,
        None => true,
    }
}

/// Best effort: SO_RCVBUFFORCE needs CAP_NET_ADMIN, SO_RCVBUF is capped by
/// net.core.rmem_max. A small buffer only means more full re-reads.
fn set_receive_buffer(socket: &Socket, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a plain int socket option on a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

struct Datagram {
    len: usize,
    /// The namespace it comes from, when not ours.
    nsid: Option<i32>,
}

/// One `recvmsg`, with the namespace id from the ancillary data. `None` for
/// datagrams not sent by the kernel.
fn recv_tagged(fd: i32, buf: &mut [u8]) -> io::Result<Option<Datagram>> {
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut from = MaybeUninit::<libc::sockaddr_nl>::zeroed();
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = from.as_mut_ptr().cast();
    msg.msg_namelen = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 8]>() as _;
    // SAFETY: fd is our socket, msg points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        // A cut message would be misread; treat it like lost events.
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    // SAFETY: the kernel filled in a sockaddr_nl (zeroed before the call).
    let sender = unsafe { from.assume_init() }.nl_pid;
    if sender != 0 {
        return Ok(None);
    }
    // SAFETY: walking the control messages the kernel wrote into `control`.
    let nsid = unsafe { nsid_from_control(&msg) };
    Ok(Some(Datagram {
        len: n as usize,
        nsid,
    }))
}

/// The NETLINK_LISTEN_ALL_NSID control message, if present.
///
/// # Safety
/// `msg` must be a msghdr just filled by `recvmsg`.
unsafe fn nsid_from_control(msg: &libc::msghdr) -> Option<i32> {
    let mut cmsg = libc::CMSG_FIRSTHDR(msg);
    while !cmsg.is_null() {
        let c = &*cmsg;
        if c.cmsg_level == libc::SOL_NETLINK && c.cmsg_type == libc::NETLINK_LISTEN_ALL_NSID {
            return Some(std::ptr::read_unaligned(
                libc::CMSG_DATA(cmsg).cast::<i32>(),
            ));
        }
        cmsg = libc::CMSG_NXTHDR(msg, cmsg);
    }
    None
}

/// Turn one datagram from namespace `nsid` (`None`: ours) into events.
fn interpret(datagram: &[u8], nsid: Option<i32>, out: &mut Vec<Event>) {
    for msg in messages(datagram) {
        let event = match (msg, nsid) {
            (Ok(msg), None) => match msg.payload {
                NetlinkPayload::InnerMessage(m) => own_event(m),
                _ => None,
            },
            (Ok(msg), Some(nsid)) => match msg.payload {
                NetlinkPayload::InnerMessage(m) => peer_event(nsid, m),
                _ => None,
            },
            (Err(e), None) => {
                tracing::debug!("undecodable netlink event: {e}");
                Some(Event::OwnLinksOrRoutes)
            }
            (Err(e), Some(nsid)) => {
                tracing::debug!("undecodable netlink event from namespace id {nsid}: {e}");
                Some(Event::PeerUnknown(nsid))
            }
        };
        out.extend(event);
    }
}

fn own_event(msg: RouteNetlinkMessage) -> Option<Event> {
    match msg {
        RouteNetlinkMessage::NewLink(_)
        | RouteNetlinkMessage::DelLink(_)
        | RouteNetlinkMessage::NewRoute(_)
        | RouteNetlinkMessage::DelRoute(_) => Some(Event::OwnLinksOrRoutes),
        RouteNetlinkMessage::DelNsId(m) => Some(
            m.attributes
                .iter()
                .find_map(|a| match a {
                    NsidAttribute::Id(id) => Some(Event::NsidDeleted(*id)),
                    _ => None,
                })
                .unwrap_or(Event::NsidChanged),
        ),
        RouteNetlinkMessage::NewNsId(_) => Some(Event::NsidChanged),
        // Our own addresses bind nothing: task IPs are routes or peer addresses.
        _ => None,
    }
}

fn peer_event(nsid: i32, msg: RouteNetlinkMessage) -> Option<Event> {
    let (added, m) = match msg {
        RouteNetlinkMessage::NewAddress(m) => (true, m),
        RouteNetlinkMessage::DelAddress(m) => (false, m),
        // Their links and routes say nothing about bindings here: the peer's
        // deletion also deletes our end, which is a link event of ours.
        _ => return None,
    };
    parse::address(&m).map(|address| Event::PeerAddress {
        nsid,
        address,
        added,
    })
}
