//! Real etcd for the tests (Debian `etcd-server`, installed by `make deps`):
//! one member or a cluster, on loopback or on an address inside a test's
//! namespace, free ports, data in a temporary directory; every member is
//! killed and its data removed on drop, also when the test fails.
//!
//! Include from a test crate that has `mod common`:
//! `#[path = "common/etcd.rs"] mod etcd;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One etcd member.
pub struct Member {
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    /// Plain-HTTP health and metrics when the client port is TLS.
    pub metrics: Option<SocketAddr>,
    args: Vec<String>,
    child: Option<Child>,
}

/// An etcd cluster made by this test.
pub struct Etcd {
    pub members: Vec<Member>,
    /// Where the members' data and logs are (removed on drop).
    pub dir: PathBuf,
    /// The namespace the members run in (`None`: the test's own).
    ns: Option<String>,
}

/// Make sure the etcd server is installed.
pub fn require_etcd() {
    let ok = Command::new("etcd")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "etcd is missing: run `make deps` (apt-get install etcd-server)"
    );
}

/// A port free on `ip` now (bound in `ns`, then released).
fn free_port(ns: Option<&str>, ip: IpAddr) -> u16 {
    in_ns(ns, move || {
        TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    })
}

/// Run `f` on a thread inside `ns` (or here).
fn in_ns<T: Send + 'static>(ns: Option<&str>, f: impl FnOnce() -> T + Send + 'static) -> T {
    match ns {
        None => f(),
        Some(ns) => {
            let path = format!("/run/netns/{ns}");
            std::thread::spawn(move || {
                crate::common::enter_netns(&path);
                f()
            })
            .join()
            .expect("thread in namespace")
        }
    }
}

/// `GET path` on `addr` (HTTP/1.0), the body; `None` if it fails.
pub fn http_get(ns: Option<&str>, addr: SocketAddr, path: &str) -> Option<String> {
    let path = path.to_string();
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200")
            .then(|| body.to_string())
            .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
    })
}

impl Etcd {
    /// One member on loopback.
    pub fn single(name: &str) -> Etcd {
        Etcd::start(name, 1, None, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// `n` members on loopback.
    pub fn cluster(name: &str, n: usize) -> Etcd {
        Etcd::start(name, n, None, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// `n` members listening on `ip` inside the namespace `ns`.
    pub fn start(name: &str, n: usize, ns: Option<&str>, ip: IpAddr) -> Etcd {
        Etcd::start_with(name, n, ns, ip, None)
    }

    /// One member on loopback serving clients over TLS only, requiring a
    /// client certificate signed by the CA of `tls`.
    pub fn single_tls(name: &str, tls: &Tls) -> Etcd {
        Etcd::start_with(name, 1, None, IpAddr::V4(Ipv4Addr::LOCALHOST), Some(tls))
    }

    fn start_with(name: &str, n: usize, ns: Option<&str>, ip: IpAddr, tls: Option<&Tls>) -> Etcd {
        require_etcd();
        let id = format!(
            "{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let dir = std::env::temp_dir().join(format!("groupd-etcd-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("etcd temp dir");
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: SocketAddr::new(ip, free_port(ns, ip)),
                peer: SocketAddr::new(ip, free_port(ns, ip)),
                metrics: None,
                args: Vec::new(),
                child: None,
            })
            .collect();
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect();
        let scheme = if tls.is_some() { "https" } else { "http" };
        for m in &mut members {
            let data = dir.join(&m.name);
            m.args = [
                "--name",
                &m.name,
                "--data-dir",
                data.to_str().expect("utf8 path"),
                "--listen-client-urls",
                &format!("{scheme}://{}", m.client),
                "--advertise-client-urls",
                &format!("{scheme}://{}", m.client),
                "--listen-peer-urls",
                &format!("http://{}", m.peer),
                "--initial-advertise-peer-urls",
                &format!("http://{}", m.peer),
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-token",
                &id,
                "--initial-cluster-state",
                "new",
                "--logger",
                "zap",
                "--log-level",
                "warn",
                // Fast elections: the tests kill leaders.
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(t) = tls {
                for (flag, path) in [
                    ("--cert-file", &t.server_cert),
                    ("--key-file", &t.server_key),
                    ("--trusted-ca-file", &t.ca),
                ] {
                    m.args.push(flag.into());
                    m.args.push(path.to_str().expect("utf8 path").into());
                }
                m.args.push("--client-cert-auth".into());
                // Health and metrics stay readable over plain HTTP.
                let metrics = SocketAddr::new(ip, free_port(ns, ip));
                m.args.push("--listen-metrics-urls".into());
                m.args.push(format!("http://{metrics}"));
                m.metrics = Some(metrics);
            }
        }
        let mut etcd = Etcd {
            members,
            dir,
            ns: ns.map(String::from),
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        etcd.wait_healthy(Duration::from_secs(20));
        etcd
    }

    fn spawn(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", self.members[i].name)))
            .expect("etcd log");
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "etcd"]);
                c
            }
            None => Command::new("etcd"),
        };
        cmd.args(&self.members[i].args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.members[i].child = Some(cmd.spawn().expect("start etcd"));
    }

    /// Client URLs of every member.
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.members.iter().any(|m| m.metrics.is_some()) {
            "https"
        } else {
            "http"
        };
        self.members
            .iter()
            .map(|m| format!("{scheme}://{}", m.client))
            .collect()
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// Every running member answers `/health` with true.
    pub fn wait_healthy(&self, within: Duration) {
        let started = Instant::now();
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            loop {
                let body = http_get(self.ns.as_deref(), m.metrics.unwrap_or(m.client), "/health");
                if body.is_some_and(|b| b.contains("\"health\":\"true\"")) {
                    break;
                }
                assert!(
                    started.elapsed() < within,
                    "etcd member {} not healthy within {within:?}; log:\n{}",
                    m.name,
                    self.log(&m.name)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    pub fn log(&self, member: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{member}.log"))).unwrap_or_default()
    }

    /// Kill member `i` (SIGKILL) and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start member `i` again with its data.
    pub fn restart(&mut self, i: usize) {
        let args: Vec<String> = self.members[i]
            .args
            .iter()
            .map(|a| {
                if a == "new" {
                    "existing".into()
                } else {
                    a.clone()
                }
            })
            .collect();
        self.members[i].args = args;
        self.spawn(i);
    }

    /// The sum of the samples of `metric` whose labels contain every one
    /// of `labels` (like `grpc_method="Range"`), on member `i`.
    pub fn metric(&self, i: usize, metric: &str, labels: &[&str]) -> f64 {
        let m = &self.members[i];
        let Some(text) = http_get(
            self.ns.as_deref(),
            m.metrics.unwrap_or(m.client),
            "/metrics",
        ) else {
            return f64::NAN;
        };
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name_labels, value) = l.rsplit_once(' ')?;
                let (name, rest) = match name_labels.split_once('{') {
                    Some((n, r)) => (n, r),
                    None => (name_labels, ""),
                };
                (name == metric && labels.iter().all(|want| rest.contains(want)))
                    .then(|| value.parse::<f64>().ok())
                    .flatten()
            })
            .sum()
    }

    /// Range requests served by every running member.
    pub fn range_requests(&self) -> f64 {
        (0..self.members.len())
            .filter(|&i| self.is_running(i))
            .map(|i| self.metric(i, "grpc_server_handled_total", &["grpc_method=\"Range\""]))
            .sum()
    }

    /// The index of the member that leads the raft group, if one does.
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len())
            .filter(|&i| self.is_running(i))
            .find(|&i| self.metric(i, "etcd_server_is_leader", &[]) == 1.0)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made
/// with the openssl CLI in `dir`.
pub struct Tls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Tls {
    pub fn make(dir: &std::path::Path) -> Tls {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=groupd test CA",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("ext");
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
        for who in ["server", "client"] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN={who}"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
            ]);
        }
        Tls {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}
