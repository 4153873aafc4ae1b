//! nf_tables notifications (multicast group NFNLGRP_NFTABLES): tells the
//! daemon at once when a process other than groupd changed one of its
//! tables, so the change is repaired in milliseconds instead of at the next
//! periodic read-back. The notification mode of `daemon.table_guard`, for
//! kernels that cannot own tables (see [`super::ownership`]).
//!
//! Every notification carries in its netlink header the port id of the
//! socket whose transaction caused it: groupd's own changes carry its
//! [`super::NfSocket`]'s, and are ignored.

use std::io;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use tokio::sync::mpsc;
use tracing::warn;

use super::nla;
use super::socket::split_messages;

const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_INET: u8 = 1;
const NFPROTO_BRIDGE: u8 = 7;
/// Attribute 1 names the table in every table, chain, rule, set and set
/// element message (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE,
/// NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE).
const TABLE_NAME: u16 = 1;
/// After the first foreign change, wait this long for the rest of the same
/// burst (one transaction is notified message by message; `nft -f` or a
/// script sends several), so the whole burst costs one repair.
pub const DEBOUNCE: Duration = Duration::from_millis(2);
const RECV_BUFFER: usize = 8 << 20;

/// "Someone else changed our table."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    /// The first change of the burst, e.g. "delete table", "new rule".
    pub what: &'static str,
    /// The netlink port id of the socket that did it; 0 when notifications
    /// were lost (receive buffer overrun) and anything may have changed.
    pub by_port: u32,
}

pub struct Monitor {
    socket: Socket,
    table: String,
    own_port: u32,
    buf: Vec<u8>,
}

impl Monitor {
    /// Subscribe to nf_tables notifications about tables named `table`;
    /// changes sent from netlink port `own_port` (groupd's) are ignored.
    pub fn open(table: &str, own_port: u32) -> io::Result<Monitor> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind(&SocketAddr::new(0, 0))?;
        socket.add_membership(NFNLGRP_NFTABLES)?;
        // A full apply notifies one message per element: tens of thousands.
        socket.set_rx_buf_sz(RECV_BUFFER)?;
        Ok(Monitor {
            socket,
            table: table.to_string(),
            own_port,
            buf: vec![0; 1 << 20],
        })
    }

    /// Block until someone else touched the table, then take in the rest of
    /// the burst.
    pub fn next_touch(&mut self) -> io::Result<Touch> {
        loop {
            let touch = match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => self.foreign_change(n),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Some(lost()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
                Err(e) => return Err(e),
            };
            if let Some(t) = touch {
                std::thread::sleep(DEBOUNCE);
                self.drain();
                return Ok(t);
            }
        }
    }

    /// Throw away what is queued: it is covered by the repair to come.
    fn drain(&mut self) {
        while self
            .socket
            .recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT)
            .is_ok_and(|n| n > 0)
        {}
    }

    /// The first change of the datagram's `n` bytes to our table by another socket.
    fn foreign_change(&self, n: usize) -> Option<Touch> {
        let messages = split_messages(&self.buf[..n]).ok()?;
        messages
            .into_iter()
            .find_map(|m| foreign(m, &self.table, self.own_port))
    }
}

fn lost() -> Touch {
    Touch {
        what: "notifications lost",
        by_port: 0,
    }
}

/// `msg` (one netlink message) as a change to `table` by a port other than `own_port`.
fn foreign(msg: &[u8], table: &str, own_port: u32) -> Option<Touch> {
    let kind = u16::from_ne_bytes([*msg.get(4)?, *msg.get(5)?]);
    if kind >> 8 != NFNL_SUBSYS_NFTABLES {
        return None;
    }
    let port = u32::from_ne_bytes(msg.get(12..16)?.try_into().ok()?);
    if port == own_port {
        return None;
    }
    if !matches!(*msg.get(16)?, NFPROTO_INET | NFPROTO_BRIDGE) {
        return None;
    }
    let name = nla::find(msg.get(nla::NFT_HEADER..)?, TABLE_NAME)?;
    if nla::string(name) != table {
        return None;
    }
    Some(Touch {
        what: describe((kind & 0xff) as u8),
        by_port: port,
    })
}

/// NFT_MSG_* in words.
fn describe(kind: u8) -> &'static str {
    match kind {
        0 => "new table",
        2 => "delete table",
        3 => "new chain",
        5 => "delete chain",
        6 => "new rule",
        8 => "delete rule",
        9 => "new set",
        11 => "delete set",
        12 => "new element",
        14 => "delete element",
        _ => "change",
    }
}

/// Run `monitor` on a thread of its own; each burst of foreign changes
/// becomes one [`Touch`] on the returned channel. A touch not yet taken
/// stands for later ones too (one pending repair covers them all). The
/// thread ends when the receiver is dropped (at its next notification).
pub fn spawn(mut monitor: Monitor) -> io::Result<mpsc::Receiver<Touch>> {
    let (tx, rx) = mpsc::channel(1);
    std::thread::Builder::new()
        .name("nft-monitor".into())
        .spawn(move || loop {
            match monitor.next_touch() {
                Ok(t) => match tx.try_send(t) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                },
                Err(e) => {
                    warn!("nf_tables notifications stopped ({e}); changes by others are repaired at the periodic read-back only");
                    return;
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nlmsghdr + nfgenmsg + NFTA_*_TABLE, as the kernel notifies.
    fn message(kind: u8, port: u32, family: u8, table: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        nla::put_str(&mut attrs, TABLE_NAME, table);
        let mut m = Vec::new();
        m.extend_from_slice(&((20 + attrs.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | u16::from(kind)).to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&1u32.to_ne_bytes());
        m.extend_from_slice(&port.to_ne_bytes());
        m.extend_from_slice(&[family, 0, 0, 0]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn only_changes_to_our_table_by_others_count() {
        let theirs = message(14, 4242, NFPROTO_INET, "groupd");
        assert_eq!(
            foreign(&theirs, "groupd", 77),
            Some(Touch {
                what: "delete element",
                by_port: 4242
            })
        );
        // Our own transaction, another table, another family, garbage.
        assert_eq!(foreign(&theirs, "groupd", 4242), None);
        assert_eq!(
            foreign(&message(6, 1, NFPROTO_INET, "fw"), "groupd", 77),
            None
        );
        assert_eq!(foreign(&message(6, 1, 2, "groupd"), "groupd", 77), None);
        assert_eq!(foreign(&theirs[..10], "groupd", 77), None);
        assert_eq!(
            foreign(&message(2, 1, NFPROTO_BRIDGE, "groupd"), "groupd", 77).map(|t| t.what),
            Some("delete table")
        );
    }
}
