//! Entering a network namespace from a thread.
//!
//! `setns(CLONE_NEWNET)` switches only the calling thread, and a socket stays
//! in the namespace it was created in for its whole life. So servers and
//! probes run in threads the harness spawns for the purpose: the thread
//! enters the namespace, creates its sockets, and exits when done. A test's
//! own thread is never switched: `enter` refuses to run on a thread that was
//! not started by `spawn`/`scope_spawn` below.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::thread::{self, JoinHandle, Scope, ScopedJoinHandle};

use anyhow::{Context, Result};

thread_local! {
    /// Set only in threads started by this module.
    static HARNESS_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// An open handle on `/run/netns/NAME`. Holding it keeps the namespace
/// alive, so the cluster drops all handles before deleting namespaces.
#[derive(Debug)]
pub struct NsHandle {
    pub name: String,
    fd: OwnedFd,
}

impl NsHandle {
    pub fn open(name: &str) -> Result<NsHandle> {
        let path = Path::new("/run/netns").join(name);
        // std opens with O_CLOEXEC, so children never inherit the handle.
        let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        Ok(NsHandle {
            name: name.to_string(),
            fd: file.into(),
        })
    }

    /// Moves the calling thread into this namespace.
    ///
    /// Panics on a thread the harness did not spawn: switching a test's own
    /// thread would silently run the rest of the test elsewhere.
    pub fn enter(&self) -> io::Result<()> {
        assert!(
            HARNESS_THREAD.with(Cell::get),
            "harness bug: setns on a thread not spawned by netns::nsfd"
        );
        // SAFETY: plain syscall on a valid fd we own.
        let rc = unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Raw fd for `pre_exec` (setns in a forked child before exec).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// Spawns a named thread that may enter namespaces.
pub fn spawn<T, F>(name: String, f: F) -> io::Result<JoinHandle<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    thread::Builder::new().name(name).spawn(move || {
        HARNESS_THREAD.with(|h| h.set(true));
        f()
    })
}

/// Scoped variant of [`spawn`] (probe workers borrow the probe list).
pub fn scope_spawn<'scope, T, F>(s: &'scope Scope<'scope, '_>, f: F) -> ScopedJoinHandle<'scope, T>
where
    T: Send + 'scope,
    F: FnOnce() -> T + Send + 'scope,
{
    s.spawn(move || {
        HARNESS_THREAD.with(|h| h.set(true));
        f()
    })
}

/// Runs `f` inside `ns` on a fresh thread and returns its result.
pub fn run_in<T, F>(ns: &NsHandle, f: F) -> T
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    thread::scope(|s| {
        scope_spawn(s, || {
            ns.enter()
                .unwrap_or_else(|e| panic!("setns into {}: {e}", ns.name));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
