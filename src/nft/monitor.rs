//! nf_tables notifications (multicast group NFNLGRP_NFTABLES): tells the
//! daemon at once when a process other than groupd changed one of its
//! tables, so the change is repaired in milliseconds instead of at the next
//! periodic read-back. The notification mode of `daemon.table_guard`, for
//! kernels that cannot own tables (see [`super::ownership`]).
//!
//! Every notification carries in its netlink header the port id of the
//! socket whose transaction caused it: groupd's own changes carry its
//! [`super::NfSocket`]'s, and are ignored.
//!
//! Element and rule notifications name what changed (the set and the
//! element's key, the chain), so a burst of those becomes a precise
//! [`Damage`] the daemon can undo piece by piece.

use std::io;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use tokio::sync::mpsc;
use tracing::warn;

use super::damage::{Damage, ElementChange};
use super::nla;
use super::socket::split_messages;
use super::Scope;
use crate::ruleset::{Element, Family};

const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_INET: u8 = 1;
const NFPROTO_BRIDGE: u8 = 7;
/// Attribute 1 names the table in every table, chain, rule, set and set
/// element message (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE,
/// NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE).
const TABLE_NAME: u16 = 1;
/// NFTA_SET_ELEM_LIST_SET: the set of an element message.
const ELEMENT_SET: u16 = 2;
/// NFTA_SET_ELEM_LIST_ELEMENTS, each NFTA_LIST_ELEM holding
/// NFTA_SET_ELEM_KEY, which holds NFTA_DATA_VALUE.
const ELEMENT_LIST: u16 = 3;
const ELEMENT_KEY: u16 = 1;
const DATA_VALUE: u16 = 1;
/// NFTA_RULE_CHAIN: the chain of a rule message.
const RULE_CHAIN: u16 = 2;
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
    /// What the burst did: the elements and chains it changed, or what
    /// the repair must read back to find out.
    pub damage: Damage,
}

impl Touch {
    /// Add what `other` did.
    fn merge(&mut self, other: Touch) {
        self.damage.merge(other.damage);
    }
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
                Ok(n) => self.foreign_changes(n),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Some(lost()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
                Err(e) => return Err(e),
            };
            if let Some(mut t) = touch {
                std::thread::sleep(DEBOUNCE);
                self.take_queued(&mut t);
                return Ok(t);
            }
        }
    }

    /// Fold what is queued into `touch`: one repair covers it all.
    fn take_queued(&mut self, touch: &mut Touch) {
        loop {
            match self.socket.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT) {
                Ok(n) if n > 0 => {
                    if let Some(more) = self.foreign_changes(n) {
                        touch.merge(more);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => touch.merge(lost()),
                _ => return,
            }
        }
    }

    /// The changes to our table by other sockets in the datagram's `n` bytes.
    fn foreign_changes(&self, n: usize) -> Option<Touch> {
        let messages = split_messages(&self.buf[..n]).ok()?;
        let mut found: Option<Touch> = None;
        for t in messages
            .into_iter()
            .filter_map(|m| foreign(m, &self.table, self.own_port))
        {
            match &mut found {
                Some(first) => first.merge(t),
                None => found = Some(t),
            }
        }
        found
    }
}

fn lost() -> Touch {
    Touch {
        what: "notifications lost",
        by_port: 0,
        damage: Damage::Wide(Scope::Everything),
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
    let family = match *msg.get(16)? {
        NFPROTO_INET => Family::Inet,
        NFPROTO_BRIDGE => Family::Bridge,
        _ => return None,
    };
    let attrs = msg.get(nla::NFT_HEADER..)?;
    if nla::string(nla::find(attrs, TABLE_NAME)?) != table {
        return None;
    }
    let kind = (kind & 0xff) as u8;
    let damage = match kind {
        12 | 14 => elements(attrs, family, kind == 12),
        6 | 8 => match nla::find(attrs, RULE_CHAIN) {
            Some(chain) => Damage::chain(family, nla::string(chain)),
            None => Damage::Wide(Scope::ElementsOf(Default::default())),
        },
        // Tables and chains: a scoped reconcile always reads those.
        0 | 2 | 3 | 5 => Damage::Wide(Scope::ElementsOf(Default::default())),
        _ => Damage::Wide(Scope::Everything),
    };
    Some(Touch {
        what: describe(kind),
        by_port: port,
        damage,
    })
}

/// The elements an element message added (`added`) or deleted. Without a
/// key to read, the set is read back; without a set, everything.
fn elements(attrs: &[u8], family: Family, added: bool) -> Damage {
    let Some(set) = nla::find(attrs, ELEMENT_SET).map(nla::string) else {
        return Damage::Wide(Scope::Everything);
    };
    let keys: Option<Vec<Element>> = nla::find(attrs, ELEMENT_LIST).and_then(|list| {
        nla::attrs(list)
            .map(|(_, elem)| {
                let key = nla::find(elem, ELEMENT_KEY).and_then(|k| nla::find(k, DATA_VALUE))?;
                Some(Element { key: key.into() })
            })
            .collect()
    });
    match keys {
        Some(keys) if !keys.is_empty() => {
            let mut damage = Damage::default();
            for element in keys {
                damage.merge(Damage::element(ElementChange {
                    family,
                    set: set.clone(),
                    element,
                    added,
                }));
            }
            damage
        }
        _ => Damage::Wide(Scope::ElementsOf([set].into())),
    }
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
    use std::collections::BTreeSet;

    /// nlmsghdr + nfgenmsg + NFTA_*_TABLE (+ the set and one element's key
    /// for element messages, the chain for rule messages), as the kernel
    /// notifies.
    fn message(kind: u8, port: u32, family: u8, table: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        nla::put_str(&mut attrs, TABLE_NAME, table);
        if kind == 12 || kind == 14 {
            nla::put_str(&mut attrs, ELEMENT_SET, "bound4");
            let mut value = Vec::new();
            nla::put(&mut value, DATA_VALUE, &[10, 0, 0, 1]);
            let mut key = Vec::new();
            nla::put_nested(&mut key, ELEMENT_KEY, &value);
            let mut list = Vec::new();
            nla::put_nested(&mut list, 1, &key);
            nla::put_nested(&mut attrs, ELEMENT_LIST, &list);
        }
        if kind == 6 || kind == 8 {
            nla::put_str(&mut attrs, RULE_CHAIN, "forward");
        }
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
                by_port: 4242,
                damage: Damage::element(ElementChange {
                    family: Family::Inet,
                    set: "bound4".into(),
                    element: Element {
                        key: vec![10, 0, 0, 1].into()
                    },
                    added: false,
                }),
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

    #[test]
    fn rules_name_their_chain_and_sets_widen_the_damage() {
        assert_eq!(
            foreign(&message(6, 1, NFPROTO_BRIDGE, "groupd"), "groupd", 77).map(|t| t.damage),
            Some(Damage::chain(Family::Bridge, "forward".into()))
        );
        // A new set is no element change: everything is read back.
        let new_set = message(9, 1, NFPROTO_INET, "groupd");
        assert_eq!(
            foreign(&new_set, "groupd", 77).map(|t| t.damage),
            Some(Damage::Wide(Scope::Everything))
        );
        // A deleted table: chains and set definitions are read back.
        let mut t = foreign(&message(2, 1, NFPROTO_INET, "groupd"), "groupd", 77).expect("ours");
        t.merge(foreign(&message(12, 1, NFPROTO_INET, "groupd"), "groupd", 77).expect("ours"));
        assert_eq!(
            t.damage,
            Damage::Wide(Scope::ElementsOf(BTreeSet::from(["bound4".to_string()])))
        );
    }
}
