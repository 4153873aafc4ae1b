//! One long-lived nfnetlink socket: send a whole transaction in one
//! `sendmsg`, and dump objects back.
//!
//! Lessons from docs/notes/nftables-from-rust.md: the batch must go out in
//! one write (page-by-page is rejected), the send buffer must be large, ACKs are
//! asked only where needed (errors come back per message anyway), and the
//! socket is kept open (closing right after a delete costs ~16 ms).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::NfTablesMessage;
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const BUFFER_BYTES: i32 = 64 << 20;

/// A netlink error for one message of a transaction.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("the kernel rejected message {index} ({what}): {source}")]
    Rejected {
        index: usize,
        what: String,
        source: io::Error,
    },
    #[error("no answer from the kernel within {0:?}")]
    Timeout(Duration),
    #[error("cannot decode a netlink answer: {0}")]
    Decode(String),
    #[error("table {table} is owned by another process (netlink port {port}): is another groupd running in this network namespace? Stop it first")]
    OwnedByOther { table: String, port: u32 },
}

/// One message of a transaction, with the protocol family it addresses.
#[derive(Debug, Clone)]
pub struct Request {
    pub family: NetfilterProtoFamily,
    pub body: Body,
    /// NLM_F_CREATE / NLM_F_EXCL / NLM_F_APPEND ... on top of NLM_F_REQUEST.
    pub flags: u16,
}

/// What a request carries.
#[derive(Debug, Clone)]
pub enum Body {
    Typed(NfTablesMessage),
    /// A message already encoded after its nfgenmsg header: set elements,
    /// tens of thousands in a full apply, skip the typed form (a few
    /// allocations per element) and go straight to netlink bytes.
    Raw {
        /// NFT_MSG_* type.
        kind: u8,
        attributes: Vec<u8>,
        /// For error messages.
        what: String,
    },
}

pub struct NfSocket {
    socket: Socket,
    /// The send buffer asked for: a transaction must fit it in one write.
    send_buffer: usize,
    next_seq: u32,
    recv_buf: Vec<u8>,
    timeout: Duration,
}

impl NfSocket {
    pub fn open() -> Result<NfSocket, NftError> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind(&SocketAddr::new(0, 0))?;
        set_buffer(&socket, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, BUFFER_BYTES)?;
        set_buffer(&socket, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, BUFFER_BYTES)?;
        let timeout = Duration::from_secs(10);
        set_recv_timeout(&socket, timeout)?;
        Ok(NfSocket {
            socket,
            send_buffer: BUFFER_BYTES as usize,
            next_seq: 1,
            recv_buf: vec![0; 1 << 20],
            timeout,
        })
    }

    /// The netlink port id the kernel gave this socket: the owner of the
    /// tables in owner mode, and the sender named in the notifications of
    /// our own transactions.
    pub fn port_id(&self) -> Result<u32, NftError> {
        let mut addr = SocketAddr::new(0, 0);
        self.socket.get_address(&mut addr)?;
        Ok(addr.port_number())
    }

    fn seq(&mut self) -> u32 {
        let s = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        s
    }

    /// Send `requests` as ONE atomic nf_tables transaction and wait for the
    /// kernel's verdict. Either everything is committed or nothing is.
    /// The encoded bytes of each request are released as they are copied
    /// into the batch (a full apply is megabytes of set elements; holding
    /// them twice was the daemon's peak memory).
    pub fn transact(&mut self, mut requests: Vec<Request>) -> Result<(), NftError> {
        if requests.is_empty() {
            return Ok(());
        }
        // The batch's exact size for encoded requests (growing the buffer by
        // doubling would hold up to twice the batch).
        let size: usize = requests
            .iter()
            .map(|r| match &r.body {
                Body::Typed(_) => 256,
                Body::Raw { attributes, .. } => (20 + attributes.len()).next_multiple_of(4),
            })
            .sum();
        let mut buf = Vec::with_capacity(size + 64);
        let begin_seq = self.seq();
        emit_control(&mut buf, ControlMessage::BatchBegin, begin_seq);
        let first_seq = self.next_seq;
        let last = requests.len() - 1;
        for (i, r) in requests.iter_mut().enumerate() {
            let seq = self.seq();
            // Only the last message asks for an ACK: it tells us the batch was
            // processed; failing messages report themselves regardless.
            let ack = if i == last { NLM_F_ACK } else { 0 };
            let flags = NLM_F_REQUEST | ack | r.flags;
            match &mut r.body {
                Body::Typed(message) => emit_nft(&mut buf, r.family, message.clone(), flags, seq),
                Body::Raw {
                    kind, attributes, ..
                } => {
                    emit_raw(&mut buf, r.family, *kind, attributes, flags, seq);
                    // Errors name a request by `what`, never by its bytes.
                    drop(std::mem::take(attributes));
                }
            }
        }
        let last_seq = first_seq.wrapping_add(last as u32);
        let end_seq = self.seq();
        emit_control(&mut buf, ControlMessage::BatchEnd, end_seq);
        self.fit_send_buffer(buf.len())?;
        let sent = self.socket.send(&buf, 0)?;
        if sent != buf.len() {
            return Err(NftError::Io(io::Error::other(format!(
                "short netlink write: {sent} of {} bytes",
                buf.len()
            ))));
        }
        let mut first_error: Option<NftError> = None;
        loop {
            let n = self.recv()?;
            for msg in split_messages(&self.recv_buf[..n])? {
                let seq = u32::from_ne_bytes(copy4(&msg[8..]));
                let kind = u16::from_ne_bytes([msg[4], msg[5]]);
                if kind != netlink_packet_core::NLMSG_ERROR || msg.len() < 20 {
                    continue;
                }
                let code = i32::from_ne_bytes(copy4(&msg[16..]));
                // A failed commit (or an overflowed error list) is reported
                // against the batch-begin message: the whole batch is void.
                if seq == begin_seq && code != 0 {
                    return Err(NftError::Rejected {
                        index: 0,
                        what: "commit of the transaction".to_string(),
                        source: io::Error::from_raw_os_error(-code),
                    });
                }
                if code != 0 && first_error.is_none() {
                    let index = seq.wrapping_sub(first_seq) as usize;
                    let what = requests
                        .get(index)
                        .map(describe)
                        .unwrap_or_else(|| "batch".to_string());
                    first_error = Some(NftError::Rejected {
                        index,
                        what,
                        source: io::Error::from_raw_os_error(-code),
                    });
                }
                if seq == last_seq {
                    return match first_error {
                        Some(e) => Err(e),
                        None => Ok(()),
                    };
                }
            }
        }
    }

    /// A transaction is atomic only as one write, and netlink refuses a
    /// write larger than the socket's send buffer (EMSGSIZE, "Message too
    /// long"): grow the buffer to the batch (the kernel takes a large
    /// message in pages, not one contiguous block).
    fn fit_send_buffer(&mut self, batch: usize) -> Result<(), NftError> {
        // The kernel keeps some of the buffer for its own accounting.
        let needed = batch + (batch / 8) + (1 << 20);
        if needed <= self.send_buffer {
            return Ok(());
        }
        let value = libc::c_int::try_from(needed).map_err(|_| {
            NftError::Io(io::Error::other(format!(
                "a transaction of {batch} bytes is larger than netlink can send at once"
            )))
        })?;
        set_buffer(&self.socket, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, value)?;
        self.send_buffer = needed;
        Ok(())
    }

    /// Dump objects (NLM_F_DUMP) of one kind, e.g. all rules of a table.
    pub fn dump(
        &mut self,
        family: NetfilterProtoFamily,
        message: NfTablesMessage,
    ) -> Result<Vec<NfTablesMessage>, NftError> {
        let mut out = Vec::new();
        for raw in self.dump_raw(family, message)? {
            let parsed = NetlinkMessage::<NetfilterMessage>::deserialize(&raw)
                .map_err(|e| NftError::Decode(e.to_string()))?;
            if let NetlinkPayload::InnerMessage(m) = parsed.payload {
                if let netlink_packet_netfilter::NetfilterMessageInner::NfTables(t) = m.inner {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }

    /// Dump objects and return each answer as raw netlink message bytes.
    /// Large dumps (set elements, rules) are decoded with [`super::nla`]:
    /// the typed decoder of netlink-packet-netfilter 0.4 formats the whole
    /// buffer into every attribute's error context, which makes a 10,000
    /// element dump take seconds.
    pub fn dump_raw(
        &mut self,
        family: NetfilterProtoFamily,
        message: NfTablesMessage,
    ) -> Result<Vec<Vec<u8>>, NftError> {
        let seq = self.seq();
        let mut buf = Vec::with_capacity(128);
        emit_nft(&mut buf, family, message, NLM_F_REQUEST | NLM_F_DUMP, seq);
        self.socket.send(&buf, 0)?;
        let mut out = Vec::new();
        loop {
            let n = self.recv()?;
            for raw in split_messages(&self.recv_buf[..n])? {
                if u32::from_ne_bytes(copy4(&raw[8..])) != seq {
                    continue;
                }
                match u16::from_ne_bytes([raw[4], raw[5]]) {
                    netlink_packet_core::NLMSG_DONE => return Ok(out),
                    netlink_packet_core::NLMSG_ERROR => {
                        let code = raw
                            .get(16..20)
                            .map(|b| i32::from_ne_bytes(copy4(b)))
                            .unwrap_or(0);
                        if code == 0 {
                            return Ok(out);
                        }
                        let err = io::Error::from_raw_os_error(-code);
                        // A table that does not exist dumps as ENOENT: that is "empty".
                        if err.kind() == io::ErrorKind::NotFound {
                            return Ok(out);
                        }
                        return Err(NftError::Io(err));
                    }
                    _ => out.push(raw.to_vec()),
                }
            }
        }
    }

    fn recv(&mut self) -> Result<usize, NftError> {
        match self.socket.recv(&mut &mut self.recv_buf[..], 0) {
            Ok(n) => Ok(n),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                Err(NftError::Timeout(self.timeout))
            }
            Err(e) => Err(NftError::Io(e)),
        }
    }
}

/// The netlink messages in one datagram (each 4-byte aligned).
pub(super) fn split_messages(buf: &[u8]) -> Result<Vec<&[u8]>, NftError> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset + 16 <= buf.len() {
        let len = u32::from_ne_bytes(copy4(&buf[offset..])) as usize;
        if len < 16 || offset + len > buf.len() {
            return Err(NftError::Decode(format!("bad netlink length {len}")));
        }
        out.push(&buf[offset..offset + len]);
        offset += (len + 3) & !3;
    }
    Ok(out)
}

fn copy4(b: &[u8]) -> [u8; 4] {
    [b[0], b[1], b[2], b[3]]
}

fn describe(r: &Request) -> String {
    match &r.body {
        Body::Typed(message) => format!("{message:?}").chars().take(300).collect(),
        Body::Raw { what, .. } => what.clone(),
    }
}

/// nlmsghdr + nfgenmsg + attributes, as the kernel reads them.
fn emit_raw(
    buf: &mut Vec<u8>,
    family: NetfilterProtoFamily,
    kind: u8,
    attributes: &[u8],
    flags: u16,
    seq: u32,
) {
    const HEADERS: usize = 16 + 4;
    let len = (HEADERS + attributes.len()) as u32;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | u16::from(kind)).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    buf.push(u8::from(family));
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&0u16.to_be_bytes()); // resource id
    buf.extend_from_slice(attributes);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn emit_nft(
    buf: &mut Vec<u8>,
    family: NetfilterProtoFamily,
    message: NfTablesMessage,
    flags: u16,
    seq: u32,
) {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let payload = NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), message);
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
    append(buf, &mut msg);
}

fn emit_control(buf: &mut Vec<u8>, control: ControlMessage, seq: u32) {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    header.sequence_number = seq;
    let payload = NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
        control,
    );
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
    append(buf, &mut msg);
}

fn append(buf: &mut Vec<u8>, msg: &mut NetlinkMessage<NetfilterMessage>) {
    msg.finalize();
    let len = msg.buffer_len();
    let start = buf.len();
    buf.resize(start + ((len + 3) & !3), 0);
    msg.serialize(&mut buf[start..start + len]);
}

fn set_buffer(
    socket: &Socket,
    force: libc::c_int,
    plain: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    for opt in [force, plain] {
        // SAFETY: setsockopt on a valid fd with a pointer to a live c_int.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(());
        }
    }
    Err(io::Error::last_os_error())
}

fn set_recv_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: setsockopt on a valid fd with a pointer to a live timeval.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
