//! Probes with real packets. Each probe runs on a harness thread that has
//! entered the source namespace (see `nsfd`), so its sockets, routes and
//! firewall are those of the source task or agent.
//!
//! Every probe carries a unique 16-byte token; only a reply carrying the
//! token counts, so concurrent probes and stray packets cannot produce a
//! false success.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::nsfd::{self, NsHandle};
use super::server::{Log, TCP_PORT, UDP_PORT};
use super::sock;
use super::{Cluster, Endpoint};

/// Datagrams (ICMP echo, UDP) are re-sent this often within the timeout,
/// so one lost first packet (e.g. during neighbour resolution) is no failure.
const RESEND: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Icmp,
    Tcp,
    Udp,
}

impl Proto {
    pub const ALL: [Proto; 3] = [Proto::Icmp, Proto::Tcp, Proto::Udp];

    fn default_port(self) -> u16 {
        match self {
            Proto::Icmp => 0,
            Proto::Tcp => TCP_PORT,
            Proto::Udp => UDP_PORT,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Icmp => "icmp",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One probe for [`Cluster::probe_many`]. `port: None` means the echo
/// server's port (7001 TCP, 7002 UDP); ignored for ICMP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Probe {
    pub from: Endpoint,
    pub to: IpAddr,
    pub proto: Proto,
    pub port: Option<u16>,
}

impl Probe {
    pub fn new(from: impl Into<Endpoint>, to: IpAddr, proto: Proto) -> Probe {
        Probe {
            from: from.into(),
            to,
            proto,
            port: None,
        }
    }

    pub fn port(mut self, port: u16) -> Probe {
        self.port = Some(port);
        self
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} -> {} {}", self.from, self.to, self.proto)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// A probe resolved against the cluster: everything a thread needs.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub ns: Arc<NsHandle>,
    /// Source address to bind (agents probe from their identity address).
    pub bind: Option<IpAddr>,
    pub to: IpAddr,
    pub proto: Proto,
    pub port: u16,
    pub timeout: Duration,
}

impl Job {
    pub fn new(ns: Arc<NsHandle>, bind: Option<IpAddr>, p: &Probe, timeout: Duration) -> Job {
        Job {
            ns,
            bind,
            to: p.to,
            proto: p.proto,
            port: p.port.unwrap_or(p.proto.default_port()),
            timeout,
        }
    }

    /// Runs the probe on the current thread, which must already be in `ns`.
    /// Socket errors (no route, refused, unreachable) mean "not reachable".
    pub fn run_here(&self) -> bool {
        let r = match self.proto {
            Proto::Icmp => icmp(self.to, self.bind, self.timeout),
            Proto::Tcp => tcp(self.sa(), self.bind, self.timeout),
            Proto::Udp => udp(self.sa(), self.bind, self.timeout),
        };
        r.unwrap_or(false)
    }

    fn sa(&self) -> SocketAddr {
        SocketAddr::new(self.to, self.port)
    }
}

/// Runs jobs on at most `parallelism` harness threads; results in order.
pub(crate) fn run_many(jobs: &[Job], parallelism: usize) -> Vec<bool> {
    let results: Vec<AtomicBool> = jobs.iter().map(|_| AtomicBool::new(false)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = parallelism.clamp(1, jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            nsfd::scope_spawn(s, || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                // A worker hops between source namespaces; it exits at the
                // end of the scope, so no thread stays in a test namespace.
                job.ns
                    .enter()
                    .unwrap_or_else(|e| panic!("setns into {}: {e}", job.ns.name));
                results[i].store(job.run_here(), Ordering::Relaxed);
            });
        }
    });
    results.into_iter().map(AtomicBool::into_inner).collect()
}

/// A token unique in this process (pid + counter), recognisable in captures.
pub(crate) fn token() -> [u8; 16] {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut t = [0u8; 16];
    t[..4].copy_from_slice(b"gdt:");
    t[4..8].copy_from_slice(&std::process::id().to_be_bytes());
    t[8..].copy_from_slice(&n.to_be_bytes());
    t
}

fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// Sends `send()` every RESEND until `check(datagram)` accepts something
/// read from `fd`, or the deadline passes.
fn resend_until(
    fd: &OwnedFd,
    deadline: Instant,
    mut send: impl FnMut() -> io::Result<()>,
    check: impl Fn(&[u8]) -> bool,
) -> io::Result<bool> {
    let mut next_send = Instant::now();
    let mut buf = [0u8; 2048];
    while let Some(left) = remaining(deadline) {
        if Instant::now() >= next_send {
            send()?;
            next_send = Instant::now() + RESEND;
        }
        let wait = left.min(next_send.saturating_duration_since(Instant::now()));
        let rev = sock::poll(&[(fd.as_raw_fd(), libc::POLLIN)], Some(wait))?;
        if rev[0] == 0 {
            continue;
        }
        loop {
            match sock::recv_nowait(fd, &mut buf) {
                Ok(n) if check(&buf[..n]) => return Ok(true),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(false)
}

fn icmp(to: IpAddr, bind: Option<IpAddr>, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    let v6 = to.is_ipv6();
    let proto = if v6 {
        libc::IPPROTO_ICMPV6
    } else {
        libc::IPPROTO_ICMP
    };
    let fd = sock::socket(sock::family(to), libc::SOCK_RAW, proto)?;
    if let Some(b) = bind {
        sock::bind(&fd, SocketAddr::new(b, 0))?;
    }
    // connect() makes the raw socket accept only packets from `to`.
    sock::connect(&fd, SocketAddr::new(to, 0))?;
    let tok = token();
    let id = u16::from_be_bytes([tok[14], tok[15]]);
    let mut seq: u16 = 0;
    let send = || {
        seq = seq.wrapping_add(1);
        sock::send(&fd, &echo_request(v6, id, seq, &tok)).map(|_| ())
    };
    resend_until(&fd, deadline, send, |pkt| is_echo_reply(v6, pkt, id, &tok))
}

fn echo_request(v6: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    if !v6 {
        // The kernel fills in the ICMPv6 checksum (it needs the pseudo
        // header); for ICMPv4 raw sockets it is ours to compute.
        let c = checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
    }
    m
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 raw sockets deliver the IP header, IPv6 ones do not.
fn is_echo_reply(v6: bool, pkt: &[u8], id: u16, tok: &[u8]) -> bool {
    let icmp = if v6 {
        pkt
    } else {
        let ihl = usize::from(pkt.first().map_or(0, |b| b & 0x0f)) * 4;
        pkt.get(ihl..).unwrap_or(&[])
    };
    let reply_type = if v6 { 129 } else { 0 };
    icmp.len() >= 8 + tok.len()
        && icmp[0] == reply_type
        && icmp[4..6] == id.to_be_bytes()
        && &icmp[8..8 + tok.len()] == tok
}

fn tcp(to: SocketAddr, bind: Option<IpAddr>, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    let fd = sock::socket(sock::family(to.ip()), libc::SOCK_STREAM, 0)?;
    if let Some(b) = bind {
        sock::bind(&fd, SocketAddr::new(b, 0))?;
    }
    sock::connect_timeout(&fd, to, timeout)?;
    let mut stream = TcpStream::from(fd);
    let tok = token();
    stream.set_write_timeout(remaining(deadline))?;
    stream.write_all(&tok)?;
    let Some(left) = remaining(deadline) else {
        return Ok(false);
    };
    stream.set_read_timeout(Some(left))?;
    let mut back = [0u8; 16];
    stream.read_exact(&mut back)?;
    Ok(back == tok)
}

fn udp(to: SocketAddr, bind: Option<IpAddr>, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    let fd = sock::socket(sock::family(to.ip()), libc::SOCK_DGRAM, 0)?;
    sock::bind(
        &fd,
        SocketAddr::new(bind.unwrap_or(unspecified(to.ip())), 0),
    )?;
    sock::connect(&fd, to)?;
    let tok = token();
    // An ICMP port/host unreachable surfaces as an error here: a negative.
    resend_until(
        &fd,
        deadline,
        || sock::send(&fd, &tok).map(|_| ()),
        |d| d == tok,
    )
}

/// Sends a UDP datagram from `fake_src` (not an address of this namespace)
/// and waits until `log` (the destination server's) shows it arrived from
/// `fake_src`.
///
/// How: IP_TRANSPARENT + IP_FREEBIND (IPV6_* for v6) let the socket bind
/// and send from a non-local address; FREEBIND alone only allows the bind,
/// IPv4 route lookup still rejects a non-local source without TRANSPARENT.
/// Nothing is added to the task's interfaces.
pub(crate) fn spoof_here(
    fake_src: IpAddr,
    to: SocketAddr,
    log: &Log,
    timeout: Duration,
) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    let fd = sock::socket(sock::family(to.ip()), libc::SOCK_DGRAM, 0)?;
    let (level, transparent, freebind) = match fake_src {
        IpAddr::V4(_) => (libc::SOL_IP, libc::IP_TRANSPARENT, libc::IP_FREEBIND),
        IpAddr::V6(_) => (libc::SOL_IPV6, libc::IPV6_TRANSPARENT, libc::IPV6_FREEBIND),
    };
    sock::set_int_opt(&fd, level, transparent, 1)?;
    sock::set_int_opt(&fd, level, freebind, 1)?;
    sock::bind(&fd, SocketAddr::new(fake_src, 0))?;
    let tok = token();
    let arrived = || {
        let log = log.lock().expect("log lock");
        log.iter().any(|d| d.from == fake_src && d.payload == tok)
    };
    while remaining(deadline).is_some() {
        sock::send_to(&fd, &tok, to)?;
        let resend_at = Instant::now() + RESEND;
        while Instant::now() < resend_at.min(deadline) {
            if arrived() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(arrived())
}

/// Probes one target at a fixed interval in the background and records
/// every outcome, for tests that restart or reconfigure things while
/// traffic flows.
pub struct ContinuousProbe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<(Instant, bool)>>>,
}

impl ContinuousProbe {
    /// Holds its own handle on the source namespace; stop (or drop) it
    /// before the cluster so the namespace can really go away.
    pub fn start(
        cluster: &Cluster,
        from: impl Into<Endpoint>,
        to: IpAddr,
        proto: Proto,
        interval_ms: u64,
    ) -> ContinuousProbe {
        let job = cluster.job(&Probe::new(from, to, proto));
        cluster.wait_ready();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let interval = Duration::from_millis(interval_ms.max(1));
        let thread = nsfd::spawn(format!("cprobe-{}", job.ns.name), move || {
            job.ns
                .enter()
                .unwrap_or_else(|e| panic!("setns into {}: {e}", job.ns.name));
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                samples.push((t, job.run_here()));
                sleep_until(t + interval, &flag);
            }
            samples
        })
        .expect("spawn continuous probe thread");
        ContinuousProbe {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops probing and returns (start of probe, success) for every probe.
    pub fn stop(mut self) -> Vec<(Instant, bool)> {
        self.finish()
    }

    fn finish(&mut self) -> Vec<(Instant, bool)> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => Vec::new(),
        }
    }
}

impl Drop for ContinuousProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sleep_until(t: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let left = t.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

/// The longest outage in a [`ContinuousProbe`] run: from the start of the
/// first failed probe of a run of failures to the start of the next
/// successful probe (or of the last probe, if it never recovered). Zero if
/// no probe failed.
pub fn longest_outage(samples: &[(Instant, bool)]) -> Duration {
    let mut longest = Duration::ZERO;
    let mut start: Option<Instant> = None;
    for &(t, ok) in samples {
        match (ok, start) {
            (false, None) => start = Some(t),
            (true, Some(s)) => {
                longest = longest.max(t - s);
                start = None;
            }
            _ => {}
        }
    }
    if let (Some(s), Some(&(last, _))) = (start, samples.last()) {
        longest = longest.max(last - s);
    }
    longest
}
