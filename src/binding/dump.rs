//! Netlink dumps read one datagram at a time.
//!
//! rtnetlink's connection parses a whole dump before handing any of it
//! over, and a parsed link message is kilobytes (per-family settings and
//! counters): 500 veths held ~7 MB at once, on every re-read after a burst
//! of link events. Here each datagram (a few messages) is parsed, handed to
//! the caller, and dropped before the next is read.

use std::io;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Send `request` as a dump on a fresh socket in the calling thread's
/// network namespace and give every message of the answer to `each`, in
/// order. Blocks until the dump is done.
pub(super) fn dump_here(
    request: RouteNetlinkMessage,
    mut each: impl FnMut(RouteNetlinkMessage),
) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut req = NetlinkMessage::from(request);
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;
    loop {
        let (datagram, _) = socket.recv_from_full()?;
        for msg in messages(&datagram) {
            let msg = match msg {
                Ok(msg) => msg,
                Err(e) => {
                    tracing::debug!("skipping an undecodable message of a dump: {e}");
                    continue;
                }
            };
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                NetlinkPayload::InnerMessage(inner) => each(inner),
                _ => {}
            }
        }
    }
}

/// Split a datagram into netlink messages. A message that cannot be decoded
/// is an `Err` in its place; a broken frame ends the list with an `Err`.
pub(super) fn messages(
    mut datagram: &[u8],
) -> Vec<Result<NetlinkMessage<RouteNetlinkMessage>, String>> {
    let mut out = Vec::new();
    while datagram.len() >= 16 {
        let len = u32::from_ne_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]) as usize;
        if len < 16 || len > datagram.len() {
            out.push(Err(format!(
                "netlink message of length {len} in a datagram of {}",
                datagram.len()
            )));
            break;
        }
        out.push(NetlinkMessage::deserialize(&datagram[..len]).map_err(|e| e.to_string()));
        // Messages are 4-byte aligned inside a datagram.
        datagram = datagram.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    out
}
