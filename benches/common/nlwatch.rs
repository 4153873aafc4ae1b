//! When an element really is in the kernel: nf_tables notifications
//! (NFNLGRP_NFTABLES) in the agent's namespace. The kernel multicasts one
//! NEWSETELEM message per set touched when a transaction commits, so the
//! moment a message naming an address is received is the moment the rules
//! for it are in force (plus the wake-up of this thread, microseconds).
//! Polling with a netlink dump would add the poll interval and the dump's
//! own cost to every sample.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::netns::ScratchNs;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFNLGRP_NFTABLES: libc::c_int = 7;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;

/// IPv4 elements added to one set of one namespace, as they are committed.
pub struct NftWatch {
    rx: mpsc::Receiver<(Instant, Ipv4Addr)>,
    /// Seen while waiting for another address.
    early: HashMap<Ipv4Addr, Instant>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl NftWatch {
    /// Subscribe inside `ns` (the socket stays in that namespace) and report
    /// every IPv4 key added to the set named `set`.
    pub fn start(ns: &ScratchNs, set: &'static str) -> NftWatch {
        let fd = ns.run(subscribe);
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("nlwatch".into())
            .spawn(move || receive(fd, set, tx, &flag))
            .expect("spawn the netlink watcher");
        NftWatch {
            rx,
            early: HashMap::new(),
            stop,
            thread: Some(thread),
        }
    }

    /// [`NftWatch::start`] in the calling thread's namespace.
    pub fn start_here(set: &'static str) -> NftWatch {
        let fd = subscribe();
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("nlwatch".into())
            .spawn(move || receive(fd, set, tx, &flag))
            .expect("spawn the netlink watcher");
        NftWatch {
            rx,
            early: HashMap::new(),
            stop,
            thread: Some(thread),
        }
    }

    /// When `ip` had been added `n` times (by `n` tables of the namespace
    /// with a set of that name), or `None` after `timeout`.
    pub fn wait_for_n(&mut self, ip: Ipv4Addr, n: usize, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        for _ in 0..n {
            let left = deadline.checked_duration_since(Instant::now())?;
            last = Some(self.wait_for(ip, left)?);
        }
        last
    }

    /// When `ip` was added (committed), or `None` after `timeout`.
    pub fn wait_for(&mut self, ip: Ipv4Addr, timeout: Duration) -> Option<Instant> {
        if let Some(at) = self.early.remove(&ip) {
            return Some(at);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (at, got) = self.rx.recv_timeout(left).ok()?;
            if got == ip {
                return Some(at);
            }
            self.early.insert(got, at);
        }
    }

    /// Stop listening; the number of datagrams the kernel dropped (ENOBUFS).
    pub fn stop(mut self) -> u64 {
        self.finish()
    }

    fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for NftWatch {
    fn drop(&mut self) {
        self.finish();
    }
}

fn check(rc: libc::c_int, what: &str) {
    assert!(rc >= 0, "{what}: {}", std::io::Error::last_os_error());
}

/// A NETLINK_NETFILTER socket in the calling thread's namespace, in the
/// nftables multicast group, with a large buffer and a 100 ms read timeout.
/// Call it inside the namespace to watch (e.g. through `ScratchNs::run`).
pub fn subscribe() -> OwnedFd {
    // SAFETY: plain socket calls on a descriptor we own; every pointer
    // passed points at a live local of the size given.
    unsafe {
        let raw = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        );
        check(raw, "socket(NETLINK_NETFILTER)");
        let fd = OwnedFd::from_raw_fd(raw);
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        let rc = libc::bind(
            raw,
            &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        );
        check(rc, "bind netlink");
        let set = |level, name, value: libc::c_int, what| {
            let rc = libc::setsockopt(
                raw,
                level,
                name,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            );
            check(rc, what);
        };
        set(
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            NFNLGRP_NFTABLES,
            "join NFNLGRP_NFTABLES",
        );
        set(
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            64 << 20,
            "SO_RCVBUFFORCE",
        );
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        let rc = libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
        check(rc, "SO_RCVTIMEO");
        fd
    }
}

fn receive(
    fd: OwnedFd,
    set: &str,
    tx: mpsc::Sender<(Instant, Ipv4Addr)>,
    stop: &AtomicBool,
) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut overruns = 0;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: recv into a buffer we own, of the length given.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        let at = Instant::now();
        if n < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::ENOBUFS) => overruns += 1,
                Some(libc::EAGAIN) | Some(libc::EINTR) => {}
                other => panic!("recv on the nftables netlink socket: errno {other:?}"),
            }
            continue;
        }
        for ip in added_ipv4(&buf[..n as usize], set) {
            if tx.send((at, ip)).is_err() {
                return overruns;
            }
        }
    }
    overruns
}

/// Netlink attributes: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((kind, payload))
    })
}

fn attr(b: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(b).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

/// IPv4 keys of NEWSETELEM messages for `set` in one datagram.
fn added_ipv4(mut datagram: &[u8], set: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    while datagram.len() >= 16 {
        let len = u32::from_ne_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]) as usize;
        let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
        if len < 16 || len > datagram.len() {
            break;
        }
        // nlmsghdr (16 bytes), nfgenmsg (4), attributes.
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM && len >= 20 {
            let body = &datagram[20..len];
            let named = attr(body, NFTA_SET_ELEM_LIST_SET)
                .is_some_and(|n| n.split(|c| *c == 0).next() == Some(set.as_bytes()));
            if let (true, Some(elements)) = (named, attr(body, NFTA_SET_ELEM_LIST_ELEMENTS)) {
                for (k, element) in attrs(elements) {
                    let key = (k == NFTA_LIST_ELEM)
                        .then(|| attr(element, NFTA_SET_ELEM_KEY))
                        .flatten()
                        .and_then(|key| attr(key, NFTA_DATA_VALUE));
                    if let Some(&[a, b, c, d]) = key {
                        out.push(Ipv4Addr::new(a, b, c, d));
                    }
                }
            }
        }
        datagram = &datagram[((len + 3) & !3).min(datagram.len())..];
    }
    out
}
