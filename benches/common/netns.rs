//! Scratch network namespaces owned by the benchmark: unique names, deleted
//! on drop (also when a measurement panics). `benches/run.sh` passes a
//! per-run prefix in GROUPD_BENCH_PREFIX and deletes whatever is left with
//! that prefix if the process is killed before its destructors run.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn prefix() -> String {
    std::env::var("GROUPD_BENCH_PREFIX").unwrap_or_else(|_| format!("gdb{}", std::process::id()))
}

pub struct ScratchNs {
    pub name: String,
}

impl ScratchNs {
    pub fn new(role: &str) -> ScratchNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{}-{role}{n}", prefix());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(st.success(), "ip netns add {name} failed");
        let ns = ScratchNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Run `f` on a fresh thread that has entered this namespace. Sockets
    /// opened there stay bound to the namespace when handed back, and
    /// children spawned there start inside it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .expect("thread in the scratch namespace panicked")
    }

    /// `ip -n NS ARGS…`, panicking on failure.
    pub fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for ScratchNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn enter(path: &str) {
    let f = File::open(path).expect("open netns file");
    // SAFETY: setns on a valid namespace fd; affects the calling thread only.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}
