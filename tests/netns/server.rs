//! In-process echo servers, one per namespace (tasks and agents): TCP on
//! [`TCP_PORT`] and UDP on [`UDP_PORT`], one socket per family (IPV6_V6ONLY,
//! so IPv4 peers show up as plain IPv4 addresses). Every UDP datagram is
//! logged with its sender, which is how spoofing tests see what arrived.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use super::nsfd::{self, NsHandle};
use super::sock;

pub const TCP_PORT: u16 = 7001;
pub const UDP_PORT: u16 = 7002;

/// An idle TCP connection is closed after this long, so a stuck client
/// cannot pin a server thread.
const IDLE: Duration = Duration::from_secs(10);

/// One UDP datagram as the server saw it.
#[derive(Clone, Debug)]
pub struct Datagram {
    pub from: IpAddr,
    /// Destination address (which of the namespace's addresses).
    pub to: Option<IpAddr>,
    pub payload: Vec<u8>,
    pub at: Instant,
}

pub type Log = Arc<Mutex<Vec<Datagram>>>;

pub struct EchoServer {
    /// Dropping the write end wakes all server threads (POLLHUP).
    stop_tx: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    log: Log,
}

impl EchoServer {
    /// Starts the server in `ns` and returns once its sockets are bound.
    pub fn start(ns: Arc<NsHandle>) -> Result<EchoServer> {
        let (stop_rx, stop_tx) = sock::pipe().context("stop pipe")?;
        let log: Log = Arc::default();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_log = log.clone();
        let name = format!("echo-{}", ns.name);
        let thread = nsfd::spawn(name, move || {
            let sockets = ns
                .enter()
                .map_err(|e| anyhow!("setns into {}: {e}", ns.name))
                .and_then(|()| Sockets::bind());
            match sockets {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(s, Arc::new(stop_rx), thread_log);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .context("spawn echo server thread")?;
        let mut server = EchoServer {
            stop_tx: Some(stop_tx),
            thread: Some(thread),
            log,
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(server),
            Ok(Err(e)) => {
                server.shutdown();
                Err(e)
            }
            Err(_) => {
                server.shutdown();
                Err(anyhow!("echo server thread died before binding"))
            }
        }
    }

    pub fn log(&self) -> Log {
        self.log.clone()
    }

    pub fn received(&self) -> Vec<Datagram> {
        self.log.lock().expect("log lock").clone()
    }

    pub fn clear(&self) {
        self.log.lock().expect("log lock").clear();
    }

    /// Stops all threads and closes all sockets (so the namespace can go).
    pub fn shutdown(&mut self) {
        self.stop_tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Sockets {
    tcp: Vec<TcpListener>,
    udp: Vec<OwnedFd>,
}

impl Sockets {
    fn bind() -> Result<Sockets> {
        let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let mut s = Sockets {
            tcp: vec![],
            udp: vec![],
        };
        for ip in [any4, any6] {
            let fd = bound(SocketAddr::new(ip, TCP_PORT), libc::SOCK_STREAM)?;
            // SAFETY: listen on a bound stream socket we own.
            if unsafe { libc::listen(fd.as_raw_fd(), 1024) } != 0 {
                return Err(io::Error::last_os_error()).context("listen");
            }
            s.tcp.push(TcpListener::from(fd));
            let udp = bound(SocketAddr::new(ip, UDP_PORT), libc::SOCK_DGRAM)?;
            sock::want_pktinfo(&udp, ip.is_ipv6()).context("pktinfo")?;
            s.udp.push(udp);
        }
        Ok(s)
    }
}

/// A non-blocking socket bound to `addr`, v6-only for IPv6.
fn bound(addr: SocketAddr, ty: libc::c_int) -> Result<OwnedFd> {
    let fd =
        sock::socket(sock::family(addr.ip()), ty | libc::SOCK_NONBLOCK, 0).context("socket")?;
    sock::set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).context("SO_REUSEADDR")?;
    if addr.is_ipv6() {
        sock::set_int_opt(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1).context("IPV6_V6ONLY")?;
    }
    sock::bind(&fd, addr).with_context(|| format!("bind {addr}"))?;
    Ok(fd)
}

fn serve(s: Sockets, stop: Arc<OwnedFd>, log: Log) {
    let mut fds: Vec<(RawFd, libc::c_short)> = vec![(stop.as_raw_fd(), libc::POLLIN)];
    fds.extend(s.tcp.iter().map(|l| (l.as_raw_fd(), libc::POLLIN)));
    fds.extend(s.udp.iter().map(|u| (u.as_raw_fd(), libc::POLLIN)));
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let rev = match sock::poll(&fds, None) {
            Ok(rev) => rev,
            Err(e) => {
                eprintln!("[netns] echo server stopped: poll: {e}");
                break;
            }
        };
        if rev[0] != 0 {
            break;
        }
        for (i, l) in s.tcp.iter().enumerate() {
            if rev[1 + i] != 0 {
                accept_all(l, &stop, &mut conns);
            }
        }
        for (i, u) in s.udp.iter().enumerate() {
            if rev[1 + s.tcp.len() + i] != 0 {
                echo_datagrams(u, &log);
            }
        }
        conns.retain(|c| !c.is_finished());
    }
    for c in conns {
        let _ = c.join();
    }
}

fn accept_all(l: &TcpListener, stop: &Arc<OwnedFd>, conns: &mut Vec<JoinHandle<()>>) {
    while let Ok((stream, _)) = l.accept() {
        let stop = stop.clone();
        // The connection socket already lives in the namespace; the thread
        // only moves bytes, so it needs no setns.
        let spawned = std::thread::Builder::new()
            .name("echo-conn".into())
            .spawn(move || echo_stream(stream, &stop));
        if let Ok(h) = spawned {
            conns.push(h);
        }
    }
}

fn echo_stream(mut stream: TcpStream, stop: &OwnedFd) {
    let mut buf = [0u8; 4096];
    loop {
        let fds = [
            (stream.as_raw_fd(), libc::POLLIN),
            (stop.as_raw_fd(), libc::POLLIN),
        ];
        match sock::poll(&fds, Some(IDLE)) {
            Ok(rev) if rev[1] == 0 && rev[0] != 0 => {}
            _ => return, // stop, idle timeout or error
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn echo_datagrams(u: &OwnedFd, log: &Log) {
    let mut buf = [0u8; 2048];
    while let Ok(r) = sock::recv_pktinfo(u, &mut buf) {
        let payload = &buf[..r.len];
        log.lock().expect("log lock").push(Datagram {
            from: r.from.ip(),
            to: r.to,
            payload: payload.to_vec(),
            at: Instant::now(),
        });
        // Answer from the address the datagram was sent to, as a real
        // service would. The echo goes to whatever source the datagram
        // claimed: for a spoofed one another test address or nowhere.
        let _ = sock::send_from(u, payload, r.from, r.to);
    }
}
