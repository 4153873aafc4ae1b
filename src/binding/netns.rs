//! Reading the addresses of a peer network namespace.
//!
//! A veth only tells us its peer's namespace *id* (IFLA_LINK_NETNSID), a
//! number private to our namespace. To look inside, we need an fd on that
//! namespace, so [`Resolver`] maps ids to namespace files: it walks every
//! place a namespace handle can be found (`/run/netns/*`, `/var/run/netns/*`,
//! Mesos' CNI isolator handles, `/proc/*/ns/net`), skips duplicates by
//! (dev, inode), and asks the kernel which id each one has here
//! (RTM_GETNSID with NETNSA_FD). Only *paths* are remembered, never fds:
//! an open fd (like a socket created inside) would keep a dead task's
//! namespace, and its veth, alive.
//!
//! The dump itself runs on a fresh std thread that `setns()`s into the
//! namespace, opens a netlink socket there, dumps, and exits: a tokio worker
//! never changes namespace.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::RouteNetlinkMessage;

use super::dump::dump_here;
use super::kernel::Kernel;
use super::model::{group_addresses, NsAddrs};
use super::parse;

/// Directories of named namespace handles (`ip netns`, CNI runtimes).
const NAMED_DIRS: [&str; 2] = ["/run/netns", "/var/run/netns"];
/// The Mesos CNI isolator keeps `<container id>/ns` here (default runtime dir).
const MESOS_CNI_DIR: &str = "/var/run/mesos/isolators/network/cni";

/// Namespace id -> a path that opened that namespace last time we looked.
#[derive(Default)]
pub(super) struct Resolver {
    known: HashMap<i32, PathBuf>,
}

impl Resolver {
    /// Open a handle on each wanted namespace that can be found. The
    /// returned files are for immediate use: drop them when done.
    pub async fn open(&mut self, kernel: &Kernel, wanted: &BTreeSet<i32>) -> HashMap<i32, File> {
        let mut found = HashMap::new();
        for &nsid in wanted {
            if let Some(file) = self.open_known(kernel, nsid).await {
                found.insert(nsid, file);
            }
        }
        if found.len() < wanted.len() {
            self.scan(kernel, wanted, &mut found).await;
        }
        found
    }

    /// The remembered path, if it still leads to the same namespace id (a
    /// `/proc/PID` path can be reused by another process).
    async fn open_known(&mut self, kernel: &Kernel, nsid: i32) -> Option<File> {
        let path = self.known.get(&nsid)?;
        let file = File::open(path).ok();
        let still = match &file {
            Some(f) => kernel.nsid_of(f.as_fd()).await.ok().flatten() == Some(nsid),
            None => false,
        };
        if !still {
            self.known.remove(&nsid);
            return None;
        }
        file
    }

    /// Walk every candidate path, remembering the id of each namespace seen.
    async fn scan(
        &mut self,
        kernel: &Kernel,
        wanted: &BTreeSet<i32>,
        found: &mut HashMap<i32, File>,
    ) {
        let mut seen = HashSet::new();
        for path in candidates() {
            if found.len() == wanted.len() {
                break;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            if !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            let Ok(Some(nsid)) = kernel.nsid_of(file.as_fd()).await else {
                continue;
            };
            self.known.insert(nsid, path);
            if wanted.contains(&nsid) {
                found.entry(nsid).or_insert(file);
            }
        }
    }

    /// Forget namespaces no task refers to any more.
    pub fn retain(&mut self, wanted: &BTreeSet<i32>) {
        self.known.retain(|nsid, _| wanted.contains(nsid));
    }
}

/// Where namespace handles may be, stable names first so they are the ones
/// remembered.
fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in NAMED_DIRS {
        out.extend(entries(Path::new(dir)));
    }
    out.extend(
        entries(Path::new(MESOS_CNI_DIR))
            .into_iter()
            .map(|c| c.join("ns")),
    );
    let pids = entries(Path::new("/proc")).into_iter().filter(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
    });
    out.extend(pids.map(|p| p.join("ns/net")));
    out
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    }
}

/// All global addresses configured in the namespace behind `ns`.
pub(super) async fn addresses_in(ns: File) -> io::Result<NsAddrs> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("groupd-netns".into())
        .spawn(move || {
            let result = enter(&ns).and_then(|()| dump_addresses_here());
            // This thread now lives in a task's namespace: it ends here, so it
            // can never be reused for anything else.
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| io::Error::other("namespace reader thread ended without an answer"))?
}

/// Move the calling thread (only it) into the network namespace `ns`.
fn enter(ns: &File) -> io::Result<()> {
    // SAFETY: setns takes an fd we own for the duration of the call and
    // changes only the calling thread's network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Dump the addresses of the calling thread's namespace, blocking.
fn dump_addresses_here() -> io::Result<NsAddrs> {
    let mut addresses = Vec::new();
    // AF_UNSPEC: IPv4 and IPv6 in one dump.
    dump_here(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        |msg| {
            if let RouteNetlinkMessage::NewAddress(a) = msg {
                addresses.extend(parse::address(&a));
            }
        },
    )?;
    Ok(group_addresses(addresses))
}
