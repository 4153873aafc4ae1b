//! The nflog socket: bind groupd's group, copy the first bytes of each
//! logged packet (headers only), decode, and hand the packets to the daemon
//! loop. A thread of its own: a blocking `recv` is all it does.

use std::io;
use std::time::Duration;

use netlink_packet_netfilter::nflog::{config_request, ConfigCmd, ConfigMode, ConfigNla};
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::decode::{decode_message, DecodeError};
use super::LoggedPacket;

/// Bytes of each packet the kernel copies to us: the IPv4/IPv6 header (with
/// a few extension headers) and the transport ports fit.
pub const COPY_RANGE: u32 = 128;

/// What the listener sends to the daemon loop.
#[derive(Debug)]
pub enum Event {
    Packet(LoggedPacket),
    /// Drops not shown: packets the daemon loop was too busy to take, or
    /// (counted as one) a socket overrun, where the kernel cannot say how many.
    Lost(u64),
}

/// Bind nflog group `group` in this network namespace and start the thread
/// that receives its packets. Fails (with what to do) when the group cannot
/// be bound; the rules still drop, only the view of drops is lost.
pub fn spawn(group: u16) -> Result<mpsc::Receiver<Event>, String> {
    let socket = bind(group).map_err(|e| {
        let hint = match e.raw_os_error() {
            // The kernel answers EPERM when another socket owns the group.
            Some(libc::EPERM | libc::EBUSY) => format!(
                "another program (ulogd?) has bound nflog group {group}: set [drops] group to a free one (or groupd lacks CAP_NET_ADMIN)"
            ),
            _ => "is nfnetlink_log available (modprobe nfnetlink_log)?".to_string(),
        };
        format!("cannot listen on nflog group {group} ({e}); {hint}")
    })?;
    let (tx, rx) = mpsc::channel(1024);
    std::thread::Builder::new()
        .name("groupd-nflog".into())
        .spawn(move || receive(socket, tx))
        .map_err(|e| format!("cannot start the nflog thread: {e}"))?;
    Ok(rx)
}

fn bind(group: u16) -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind(&SocketAddr::new(0, 0))?;
    // Bursts of drops must not overrun us while the loop is busy.
    socket.set_rx_buf_sz(4 << 20)?;
    let mut msg = config_request(
        NetfilterProtoFamily::Unspec,
        group,
        vec![
            ConfigNla::Cmd(ConfigCmd::Bind),
            ConfigNla::Mode(ConfigMode::new_packet(COPY_RANGE)),
        ],
    );
    msg.header.sequence_number = 1;
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    socket.send(&buf, 0)?;
    // The ACK (or the error) for the configuration.
    let mut reply = vec![0u8; 8192];
    let n = socket.recv(&mut &mut reply[..], 0)?;
    ack_error(&reply[..n]).map_or(Ok(socket), Err)
}

/// The error of an NLMSG_ERROR answer, if it carries one.
fn ack_error(msg: &[u8]) -> Option<io::Error> {
    const NLMSG_ERROR: u16 = 2;
    let kind = u16::from_ne_bytes(msg.get(4..6)?.try_into().ok()?);
    if kind != NLMSG_ERROR {
        return None;
    }
    let code = i32::from_ne_bytes(msg.get(16..20)?.try_into().ok()?);
    (code != 0).then(|| io::Error::from_raw_os_error(-code))
}

fn receive(socket: Socket, tx: mpsc::Sender<Event>) {
    let mut buf = vec![0u8; 1 << 16];
    // Lost drops not reported yet (the channel was full when they happened).
    let mut lost = 0u64;
    loop {
        if tx.is_closed() {
            return;
        }
        if lost > 0 && tx.try_send(Event::Lost(lost)).is_ok() {
            lost = 0;
        }
        let n = match socket.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                lost += 1;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!("nflog socket: {e}; retrying in 1s");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        for msg in messages(&buf[..n]) {
            match decode_message(msg) {
                Ok(p) => match tx.try_send(Event::Packet(p)) {
                    Ok(()) => {}
                    // The loop is behind: this one is not shown (counted).
                    Err(mpsc::error::TrySendError::Full(_)) => lost += 1,
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                },
                Err(DecodeError::NotAPacket) => {}
                Err(e) => debug!("nflog: {e}"),
            }
        }
    }
}

/// The netlink messages in one datagram.
fn messages(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let len = u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?) as usize;
        if len < 16 {
            return None;
        }
        let msg = buf.get(at..at + len)?;
        at += (len + 3) & !3;
        Some(msg)
    })
}
