//! Thin libc wrappers for what std::net cannot do: raw ICMP sockets,
//! IPV6_V6ONLY before bind, binding a client socket before connect,
//! IP_TRANSPARENT/IP_FREEBIND, and poll() over several fds.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn cvt_size(rc: libc::ssize_t) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

pub fn family(ip: IpAddr) -> libc::c_int {
    match ip {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    }
}

/// A close-on-exec socket in the *calling thread's* network namespace.
pub fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is owned by the returned OwnedFd.
    let fd = cvt(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn set_int_opt(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: pointer and length describe a live c_int.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&val as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

pub fn bind(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    let (ss, len) = sockaddr(addr);
    // SAFETY: ss/len come from sockaddr() and outlive the call.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    })?;
    Ok(())
}

pub fn connect(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    let (ss, len) = sockaddr(addr);
    // SAFETY: as in bind.
    cvt(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    })?;
    Ok(())
}

pub fn set_nonblocking(fd: &OwnedFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a valid fd.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) })?;
    Ok(())
}

/// Non-blocking connect bounded by `timeout`; leaves the socket blocking.
pub fn connect_timeout(fd: &OwnedFd, addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    set_nonblocking(fd, true)?;
    match connect(fd, addr) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            let ready = poll(&[(fd.as_raw_fd(), libc::POLLOUT)], Some(timeout))?;
            if ready[0] == 0 {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let err = so_error(fd)?;
            if err != 0 {
                return Err(io::Error::from_raw_os_error(err));
            }
        }
        Err(e) => return Err(e),
    }
    set_nonblocking(fd, false)
}

fn so_error(fd: &OwnedFd) -> io::Result<libc::c_int> {
    let mut err: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: pointer/len describe a live c_int.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(err)
}

/// poll() over (fd, events); returns revents per fd. `None` waits forever.
/// EINTR is retried with the remaining time.
pub fn poll(
    fds: &[(RawFd, libc::c_short)],
    timeout: Option<Duration>,
) -> io::Result<Vec<libc::c_short>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32,
        };
        // SAFETY: pfds is a live, correctly sized array.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if rc >= 0 {
            return Ok(pfds.iter().map(|p| p.revents).collect());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a live slice.
    cvt_size(unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    })
}

pub fn send_to(fd: &OwnedFd, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
    let (ss, len) = sockaddr(to);
    // SAFETY: buf and ss are live for the call.
    cvt_size(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    })
}

/// Non-blocking receive (MSG_DONTWAIT).
pub fn recv_nowait(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a live mutable slice.
    cvt_size(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    })
}

/// A pipe whose write end is dropped to wake every thread polling the read
/// end (POLLHUP): the stop signal for server threads.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for two fds.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: pipe2 returned two fresh fds that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Linux `struct in6_pktinfo` (not in libc for gnu targets).
#[repr(C)]
#[derive(Clone, Copy)]
struct In6Pktinfo {
    addr: [u8; 16],
    ifindex: libc::c_uint,
}

/// Asks the kernel to report each datagram's destination address, so a
/// server on a wildcard socket can answer *from* that address. Otherwise a
/// multi-homed namespace (agent: identity + bridge address) may answer from
/// another address and the client (and conntrack) would not match the reply.
pub fn want_pktinfo(fd: &OwnedFd, v6: bool) -> io::Result<()> {
    if v6 {
        set_int_opt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
    } else {
        set_int_opt(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
    }
}

/// A received datagram: length, sender, and the address it was sent to.
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    pub to: Option<IpAddr>,
}

/// Non-blocking recvmsg that also returns the destination address (needs
/// [`want_pktinfo`]).
pub fn recv_pktinfo(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: zeroed sockaddr_storage/msghdr are valid; every pointer put
    // into msghdr refers to a local that outlives recvmsg, and the CMSG_*
    // helpers walk only the control buffer the kernel filled.
    unsafe {
        let mut ss: libc::sockaddr_storage = mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 16]; // 128 bytes, 8-byte aligned
        let mut msg: libc::msghdr = mem::zeroed();
        msg.msg_name = (&mut ss as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control);
        let len = cvt_size(libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT))?;
        let from = from_sockaddr(&ss).ok_or_else(|| io::Error::other("unknown address family"))?;
        let mut to = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let pi: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                    to = Some(IpAddr::from(u32::from_be(pi.ipi_addr.s_addr).to_be_bytes()));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let pi: In6Pktinfo = std::ptr::read_unaligned(data.cast());
                    to = Some(IpAddr::from(pi.addr));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok(Received { len, from, to })
    }
}

/// sendmsg from a chosen local address (`from`), or as the kernel picks.
pub fn send_from(
    fd: &OwnedFd,
    buf: &[u8],
    to: SocketAddr,
    from: Option<IpAddr>,
) -> io::Result<usize> {
    let (ss, sslen) = sockaddr(to);
    // SAFETY: as in recv_pktinfo; the control buffer is sized with
    // CMSG_SPACE for the one header we write into it.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut control = [0u64; 16];
        let mut msg: libc::msghdr = mem::zeroed();
        msg.msg_name = (&ss as *const libc::sockaddr_storage) as *mut libc::c_void;
        msg.msg_namelen = sslen;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(src) = from {
            msg.msg_control = control.as_mut_ptr().cast();
            let (level, ty, size) = match src {
                IpAddr::V4(_) => (
                    libc::IPPROTO_IP,
                    libc::IP_PKTINFO,
                    mem::size_of::<libc::in_pktinfo>(),
                ),
                IpAddr::V6(_) => (
                    libc::IPPROTO_IPV6,
                    libc::IPV6_PKTINFO,
                    mem::size_of::<In6Pktinfo>(),
                ),
            };
            msg.msg_controllen = libc::CMSG_SPACE(size as u32) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = level;
            (*c).cmsg_type = ty;
            (*c).cmsg_len = libc::CMSG_LEN(size as u32) as usize;
            let data = libc::CMSG_DATA(c);
            match src {
                IpAddr::V4(a) => {
                    let pi = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from(a).to_be(),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    std::ptr::write_unaligned(data.cast(), pi);
                }
                IpAddr::V6(a) => {
                    let pi = In6Pktinfo {
                        addr: a.octets(),
                        ifindex: 0,
                    };
                    std::ptr::write_unaligned(data.cast(), pi);
                }
            }
        }
        cvt_size(libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL))
    }
}

fn from_sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: the family field says which struct the storage holds.
    unsafe {
        match i32::from(ss.ss_family) {
            libc::AF_INET => {
                let sin: libc::sockaddr_in =
                    std::ptr::read((ss as *const libc::sockaddr_storage).cast());
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
            }
            libc::AF_INET6 => {
                let sin6: libc::sockaddr_in6 =
                    std::ptr::read((ss as *const libc::sockaddr_storage).cast());
                let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
            }
            _ => None,
        }
    }
}
