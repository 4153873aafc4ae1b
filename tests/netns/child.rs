//! Programs run inside a namespace (e.g. the real groupd inside an agent).
//!
//! The child enters the namespace between fork and exec, doing what
//! `ip netns exec` does: setns(CLONE_NEWNET), a private mount namespace whose
//! mounts do not propagate back, and a fresh /sys so that /sys/class/net
//! shows the namespace's interfaces instead of the host's. The caller's
//! Command keeps its program, arguments, environment and stdio.

use std::ffi::CString;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::nsfd::NsHandle;

/// A child process that is killed (SIGKILL) and reaped when dropped. The
/// cluster also keeps a weak reference and kills survivors before it deletes
/// the namespaces.
#[derive(Debug)]
pub struct ManagedChild {
    inner: Arc<Mutex<Child>>,
    pid: u32,
}

impl ManagedChild {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Access to the std Child (stdout/stderr pipes, try_wait, ...).
    pub fn with_child<T>(&self, f: impl FnOnce(&mut Child) -> T) -> T {
        f(&mut self.inner.lock().expect("child lock"))
    }

    /// SIGKILL (kill -9) and reap; harmless if it already exited.
    pub fn kill9(&self) -> io::Result<ExitStatus> {
        let mut c = self.inner.lock().expect("child lock");
        if let Some(st) = c.try_wait()? {
            return Ok(st);
        }
        c.kill()?;
        c.wait()
    }

    /// Sends SIGTERM (for graceful-shutdown tests); does not wait.
    pub fn terminate(&self) -> io::Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Sends any signal, unless the child was already reaped (std tracks
    /// that, so a recycled pid is never signalled).
    pub fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        let mut c = self.inner.lock().expect("child lock");
        if c.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: plain syscall; the pid is our unreaped child.
        if unsafe { libc::kill(c.id() as libc::pid_t, sig) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        self.inner.lock().expect("child lock").try_wait()
    }

    /// Waits for exit.
    pub fn wait(&self) -> io::Result<ExitStatus> {
        self.inner.lock().expect("child lock").wait()
    }

    /// Waits up to `timeout`; `None` if still running.
    pub fn wait_timeout(&self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(Some(st));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn weak(&self) -> Weak<Mutex<Child>> {
        Arc::downgrade(&self.inner)
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// Kills and reaps a child the cluster still knows about (at cluster drop).
pub(crate) fn kill_weak(w: &Weak<Mutex<Child>>) {
    if let Some(c) = w.upgrade() {
        if let Ok(mut c) = c.lock() {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Spawns `cmd` inside `ns`.
pub fn spawn_in(ns: &NsHandle, cmd: &mut Command) -> io::Result<ManagedChild> {
    let fd = ns.raw_fd();
    // Prepared before fork: pre_exec must not allocate.
    let sysfs_src = CString::new(ns.name.as_str()).map_err(io::Error::other)?;
    let sysfs_type = c"sysfs";
    let sys = c"/sys";
    let root = c"/";
    let none = c"none";
    let empty = c"";
    // SAFETY: the closure only makes async-signal-safe syscalls on
    // pointers prepared above; std keeps `fd` open (it is CLOEXEC, which
    // only closes it at exec).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Must succeed before anything is (un)mounted: otherwise the
            // umount below would propagate to the host's /sys.
            let flags = libc::MS_SLAVE | libc::MS_REC;
            if libc::mount(
                empty.as_ptr(),
                root.as_ptr(),
                none.as_ptr(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // No sysfs mounted there is fine (as in `ip netns exec`).
            libc::umount2(sys.as_ptr(), libc::MNT_DETACH);
            // Read-only if a writable sysfs is refused (as `ip` does).
            for flags in [0, libc::MS_RDONLY] {
                let (src, ty) = (sysfs_src.as_ptr(), sysfs_type.as_ptr());
                if libc::mount(src, sys.as_ptr(), ty, flags, std::ptr::null()) == 0 {
                    return Ok(());
                }
            }
            Err(io::Error::last_os_error())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id();
    Ok(ManagedChild {
        inner: Arc::new(Mutex::new(child)),
        pid,
    })
}

/// Describes how a child ended, for assertion messages.
pub fn describe(st: &ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => format!("{st:?}"),
    }
}
