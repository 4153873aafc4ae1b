//! The `etcd` source run in-process, as an agent would run it, with what
//! it delivered folded into a view the tests can look at; a TCP proxy that
//! can cut an agent off etcd; `groupd publish` as a child process.
//!
//! Include next to `common/etcd.rs`: `#[path = "common/etcd_agent.rs"] mod etcd_agent;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use groupd::config::EtcdSettings;
use groupd::model::Task;
use groupd::source::etcd::{Position, Tuning};
use groupd::source::SourceUpdate;

/// What one in-process agent has been told.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub tasks: BTreeMap<String, Task>,
    pub position: Position,
    pub snapshots: u64,
    pub degraded: Option<String>,
    /// When each task id was last upserted or removed.
    pub changed_at: BTreeMap<String, Instant>,
}

/// The etcd source on a runtime of its own.
pub struct Agent {
    pub seen: Arc<Mutex<Seen>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Agent {
    pub fn start(urls: Vec<String>, prefix: &str) -> Agent {
        Agent::start_with(EtcdSettings {
            urls,
            prefix: prefix.into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password_file: None,
        })
    }

    pub fn start_with(settings: EtcdSettings) -> Agent {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let tuning = Tuning {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(500),
            ..Tuning::default()
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<SourceUpdate>(1024);
        runtime.spawn(groupd::source::etcd::run_with(settings, tx, tuning));
        let fold = seen.clone();
        runtime.spawn(async move {
            while let Some(update) = rx.recv().await {
                let mut s = fold.lock().expect("lock");
                let now = Instant::now();
                match update {
                    SourceUpdate::Snapshot(view) => {
                        s.snapshots += 1;
                        s.tasks = view
                            .tasks
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect();
                        s.degraded = None;
                    }
                    SourceUpdate::Upsert(t) => {
                        s.changed_at.insert(t.id.to_string(), now);
                        s.tasks.insert(t.id.to_string(), t);
                    }
                    SourceUpdate::Remove(id) => {
                        s.changed_at.insert(id.clone(), now);
                        s.tasks.remove(&id);
                    }
                    SourceUpdate::Degraded(r) => s.degraded = Some(r),
                    SourceUpdate::Position(p) => {
                        s.position = p;
                        s.degraded = None;
                    }
                }
            }
        });
        Agent {
            seen,
            runtime: Some(runtime),
        }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("lock").clone()
    }

    /// Wait until `pred` holds on what the agent has seen.
    pub fn wait(&self, within: Duration, what: &str, pred: impl Fn(&Seen) -> bool) -> Duration {
        let started = Instant::now();
        loop {
            if pred(&self.seen.lock().expect("lock")) {
                return started.elapsed();
            }
            if started.elapsed() > within {
                let s = self.seen();
                panic!(
                    "agent: not {what} within {within:?}: {} tasks, position {:?}, degraded {:?}",
                    s.tasks.len(),
                    s.position,
                    s.degraded
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A TCP proxy in front of one etcd member that can cut every connection
/// through it (and refuse new ones) and let them through again.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    /// Bytes sent from etcd to the clients through the proxy.
    pub down_bytes: Arc<AtomicU64>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let down_bytes = Arc::new(AtomicU64::new(0));
        let (c, s, k, d) = (cut.clone(), stop.clone(), conns.clone(), down_bytes.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let inbound = match listener.accept() {
                    Ok((i, _)) => i,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(_) => continue,
                };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let _ = inbound.set_nonblocking(false);
                let Ok(outbound) = TcpStream::connect(upstream) else {
                    continue;
                };
                let pairs = [
                    (inbound.try_clone(), outbound.try_clone(), None),
                    (outbound.try_clone(), inbound.try_clone(), Some(d.clone())),
                ];
                if let Ok(mut list) = k.lock() {
                    list.extend(inbound.try_clone());
                    list.extend(outbound.try_clone());
                }
                for (from, to, count) in pairs {
                    let (Ok(mut from), Ok(mut to)) = (from, to) else {
                        continue;
                    };
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        loop {
                            use std::io::{Read, Write};
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if let Some(c) = &count {
                                c.fetch_add(n as u64, Ordering::Relaxed);
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            addr,
            cut,
            stop,
            conns,
            down_bytes,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Close every connection and refuse new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().expect("lock").drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `groupd publish` as a child process (killed on drop).
pub struct Publisher {
    pub identity: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Publisher {
    /// Start with `[source]` = `source` (TOML lines) and `[publish]` on
    /// `etcd_urls` under `prefix`, in `dir`; `wrap` runs it through a
    /// command prefix (like `ip netns exec NS`), or not.
    pub fn start(
        dir: &Path,
        identity: &str,
        source: &str,
        etcd_urls: &[String],
        prefix: &str,
        lease_ttl: u32,
        wrap: &[&str],
    ) -> Publisher {
        let config = dir.join(format!("{identity}.toml"));
        let text = format!(
            "[source]\n{source}\n[publish]\netcd_urls = {etcd_urls:?}\nprefix = {prefix:?}\nlease_ttl = {lease_ttl}\nidentity = {identity:?}\n"
        );
        std::fs::write(&config, text).expect("write publisher config");
        let log = dir.join(format!("{identity}.log"));
        let groupd = env!("CARGO_BIN_EXE_groupd");
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(groupd);
                c
            }
            None => Command::new(groupd),
        };
        cmd.args(["--config", config.to_str().expect("utf8"), "publish"])
            .env("GROUPD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        let child = cmd.spawn().expect("start groupd publish");
        Publisher {
            identity: identity.into(),
            log,
            child: Some(child),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.kill9();
    }
}
