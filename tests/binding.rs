//! `groupd::binding` against real namespaces, veths, bridges, routes and
//! addresses. Needs root: every test is `#[ignore = "needs root: …"]`, and
//! `make test` (as root) runs them with `--include-ignored`.
//!
//! Safety (docs/design.md §6): every namespace is created here with a unique name
//! (`gdbind-<pid>-<n>`) and removed on success, failure and panic (a Drop
//! guard); addresses come only from 10.233.0.0/16 and fd00:233::/64 and live
//! only inside those namespaces; no default route; the host namespace is
//! never touched: the code under test runs inside an "agent" namespace, on a
//! thread that entered it.

use std::fs::File;
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use groupd::binding::{self, Attachment, Bindings};
use groupd::config::InterfacesConfig;
use tokio::sync::watch;

/// What the contract promises for a change to show up.
const BIND_LIMIT: Duration = Duration::from_secs(1);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace made by this test, deleted when dropped.
struct Netns {
    name: String,
    deleted: bool,
}

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "gdbind-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        // The guard exists before the namespace, so a half-done add is cleaned too.
        let ns = Netns {
            name,
            deleted: false,
        };
        run(Command::new("ip").args(["netns", "add", &ns.name]));
        ns
    }

    /// `ip -n <this namespace> <args>`.
    fn ip(&self, args: &str) {
        run(Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args.split_whitespace()));
    }

    fn delete(&mut self) {
        self.deleted = true;
        run(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every namespace name still listed by `ip netns list`.
fn listed_namespaces() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_removed(names: &[String]) {
    let listed = listed_namespaces();
    for name in names {
        assert!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} still exists"
        );
    }
}

/// Move the calling thread into namespace `name`.
fn enter(name: &str) {
    let ns = File::open(format!("/run/netns/{name}")).expect("open namespace");
    // SAFETY: setns on an fd we hold; only this thread changes namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {name}: {}",
        std::io::Error::last_os_error()
    );
}

/// Run `f` on a current-thread runtime in a fresh thread inside `ns`.
fn spawn_in<T, F>(ns: &Netns, f: impl FnOnce() -> F + Send + 'static) -> JoinHandle<T>
where
    T: Send + 'static,
    F: Future<Output = T>,
{
    let name = ns.name.clone();
    std::thread::spawn(move || {
        enter(&name);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f())
    })
}

fn config(ignore_bridges: &[&str]) -> InterfacesConfig {
    InterfacesConfig {
        r#match: vec![
            "veth*".parse().expect("pattern"),
            "mesos-*".parse().expect("pattern"),
        ],
        ignore_bridges: ignore_bridges.iter().map(|b| b.to_string()).collect(),
    }
}

/// A veth `name` in `agent` whose peer is `eth0` in `task`, both up.
fn veth(agent: &Netns, task: &Netns, name: &str) {
    agent.ip(&format!(
        "link add {name} type veth peer name eth0 netns {}",
        task.name
    ));
    agent.ip(&format!("link set {name} up"));
    task.ip("link set eth0 up");
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn ips(b: &Bindings, iface: &str) -> Vec<IpAddr> {
    b.interfaces
        .get(iface)
        .map(|i| i.ips.iter().copied().collect())
        .unwrap_or_default()
}

fn has(b: &Bindings, iface: &str, addr: &str) -> bool {
    b.interfaces
        .get(iface)
        .is_some_and(|i| i.ips.contains(&ip(addr)))
}

/// `binding::watch` running in the agent namespace.
struct Watcher {
    rx: Option<watch::Receiver<Bindings>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Watcher {
    fn start(agent: &Netns, cfg: InterfacesConfig) -> Watcher {
        let (tx, rx) = watch::channel(Bindings::default());
        let thread = spawn_in(agent, move || binding::watch(cfg, tx));
        let mut w = Watcher {
            rx: Some(rx),
            thread: Some(thread),
        };
        w.wait_for(
            "the first bindings",
            Instant::now(),
            BIND_LIMIT,
            |_, changed| changed,
        );
        w
    }

    fn current(&self) -> Bindings {
        self.rx
            .as_ref()
            .map(|rx| rx.borrow().clone())
            .unwrap_or_default()
    }

    /// Wait until `done(bindings, sent_at_least_once)` holds; how long it took since `since`.
    fn wait_for(
        &mut self,
        what: &str,
        since: Instant,
        limit: Duration,
        done: impl Fn(&Bindings, bool) -> bool,
    ) -> Duration {
        loop {
            if let Some(rx) = &self.rx {
                // Nothing marks a value seen, so this stays true after the first send.
                let changed = rx.has_changed().unwrap_or(false);
                if done(&rx.borrow(), changed) {
                    return since.elapsed();
                }
            }
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let result = self.thread.take().map(|t| t.join());
                panic!("watch ended while waiting for {what}: {result:?}");
            }
            if since.elapsed() > limit {
                panic!(
                    "{what}: not seen within {limit:?}; bindings now: {:#?}",
                    self.current()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Wait for `done` within the contract's limit.
    fn bound(&mut self, what: &str, since: Instant, done: impl Fn(&Bindings) -> bool) -> Duration {
        let took = self.wait_for(what, since, BIND_LIMIT, |b, _| done(b));
        println!("{what}: {took:?}");
        took
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // watch() returns once its receiver is gone.
        drop(self.rx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
#[ignore = "needs root: creates network namespaces, veths, bridges, routes and addresses"]
fn snapshot_binds_routed_and_bridged_interfaces_and_ignores_the_rest() {
    let agent = Netns::new();
    let routed_task = Netns::new();
    let bridged_task = Netns::new();
    let ignored_task = Netns::new();
    let names = [&agent, &routed_task, &bridged_task, &ignored_task].map(|n| n.name.clone());

    // Routed: host routes in the agent point at the veth.
    veth(&agent, &routed_task, "vethr1");
    agent.ip("route add 10.233.1.2/32 dev vethr1");
    agent.ip("-6 route add fd00:233::1:2/128 dev vethr1");
    // Bridged: a port of a bridge that is named like a pattern; the
    // addresses are configured inside the task's namespace.
    agent.ip("link add mesos-br1 type bridge");
    agent.ip("link set mesos-br1 up");
    veth(&agent, &bridged_task, "vethb1");
    agent.ip("link set vethb1 master mesos-br1");
    bridged_task.ip("addr add 10.233.2.5/24 dev eth0");
    bridged_task.ip("addr add fd00:233::2:5/112 dev eth0 nodad");
    // A port of an ignored bridge, with an address in its task namespace.
    agent.ip("link add ign1 type bridge");
    agent.ip("link set ign1 up");
    veth(&agent, &ignored_task, "vethi1");
    agent.ip("link set vethi1 master ign1");
    ignored_task.ip("addr add 10.233.3.3/24 dev eth0");
    // A name no pattern matches, with a host route.
    agent.ip("link add uplink0 type veth peer name uplink0p");
    agent.ip("link set uplink0 up");
    agent.ip("route add 10.233.4.4/32 dev uplink0");

    let cfg = config(&["ign1"]);
    let b = spawn_in(&agent, move || async move { binding::snapshot(&cfg).await })
        .join()
        .expect("snapshot thread")
        .expect("snapshot");

    assert_eq!(
        b.interfaces.keys().collect::<Vec<_>>(),
        ["vethb1", "vethr1"],
        "{b:#?}"
    );
    assert_eq!(b.bridges.iter().collect::<Vec<_>>(), ["ign1", "mesos-br1"]);
    let routed = &b.interfaces["vethr1"];
    assert_eq!(routed.attachment, Attachment::Routed);
    assert_eq!(ips(&b, "vethr1"), [ip("10.233.1.2"), ip("fd00:233::1:2")]);
    assert!(routed.ifindex > 0);
    let bridged = &b.interfaces["vethb1"];
    assert_eq!(
        bridged.attachment,
        Attachment::Bridged {
            bridge: "mesos-br1".into()
        }
    );
    // The peer's link-local fe80:: address is not bound.
    assert_eq!(ips(&b, "vethb1"), [ip("10.233.2.5"), ip("fd00:233::2:5")]);

    drop((agent, routed_task, bridged_task, ignored_task));
    assert_removed(&names);
}

#[test]
#[ignore = "needs root: creates network namespaces, veths, bridges, routes and addresses"]
fn watch_follows_routed_interfaces() {
    let agent = Netns::new();
    let task1 = Netns::new();
    let task2 = Netns::new();
    let names = [&agent, &task1, &task2].map(|n| n.name.clone());
    agent.ip("link add ign2 type bridge");

    // Present before the watch starts: in the first bindings sent.
    veth(&agent, &task1, "vethr1");
    agent.ip("route add 10.233.5.1/32 dev vethr1");
    let mut w = Watcher::start(&agent, config(&["ign2"]));
    assert_eq!(ips(&w.current(), "vethr1"), [ip("10.233.5.1")]);

    // Created after: bound once its host routes appear.
    veth(&agent, &task2, "vethr2");
    w.bound("new veth appears", Instant::now(), |b| {
        b.interfaces.contains_key("vethr2")
    });
    let t = Instant::now();
    agent.ip("route add 10.233.5.2/32 dev vethr2");
    w.bound("IPv4 host route bound", t, |b| {
        has(b, "vethr2", "10.233.5.2")
    });
    let t = Instant::now();
    agent.ip("-6 route add fd00:233::5:2/128 dev vethr2");
    w.bound("IPv6 host route bound", t, |b| {
        has(b, "vethr2", "fd00:233::5:2")
    });
    // A route elsewhere than /32 binds nothing.
    agent.ip("route add 10.233.50.0/24 dev vethr2");

    let t = Instant::now();
    agent.ip("route del 10.233.5.2/32 dev vethr2");
    w.bound("IPv4 host route unbound", t, |b| {
        !has(b, "vethr2", "10.233.5.2")
    });
    assert_eq!(ips(&w.current(), "vethr2"), [ip("fd00:233::5:2")]);

    // Becoming a port of an ignored bridge: no longer a task interface.
    let t = Instant::now();
    agent.ip("link set vethr2 master ign2");
    w.bound("port of an ignored bridge dropped", t, |b| {
        !b.interfaces.contains_key("vethr2")
    });

    let t = Instant::now();
    agent.ip("link del vethr1");
    w.bound("deleted veth unbound", t, |b| {
        !b.interfaces.contains_key("vethr1")
    });

    drop(w);
    drop((agent, task1, task2));
    assert_removed(&names);
}

#[test]
#[ignore = "needs root: creates network namespaces, veths, bridges, routes and addresses"]
fn watch_follows_addresses_inside_task_namespaces() {
    let agent = Netns::new();
    let mut task = Netns::new();
    let names = [&agent, &task].map(|n| n.name.clone());
    agent.ip("link add mesos-br2 type bridge");
    agent.ip("link set mesos-br2 up");
    let mut w = Watcher::start(&agent, config(&[]));
    assert!(w.current().interfaces.is_empty());
    assert!(w.current().bridges.contains("mesos-br2"));

    // The veth exists before the task configures its address.
    veth(&agent, &task, "vethb2");
    agent.ip("link set vethb2 master mesos-br2");
    w.bound("bridged veth appears", Instant::now(), |b| {
        b.interfaces.get("vethb2").is_some_and(|i| {
            i.attachment
                == Attachment::Bridged {
                    bridge: "mesos-br2".into(),
                }
        })
    });
    assert!(ips(&w.current(), "vethb2").is_empty(), "{:#?}", w.current());

    let t = Instant::now();
    task.ip("addr add 10.233.6.7/24 dev eth0");
    w.bound("IPv4 address in task namespace bound", t, |b| {
        has(b, "vethb2", "10.233.6.7")
    });
    let t = Instant::now();
    task.ip("addr add fd00:233::6:7/112 dev eth0 nodad");
    w.bound("IPv6 address in task namespace bound", t, |b| {
        has(b, "vethb2", "fd00:233::6:7")
    });
    let t = Instant::now();
    task.ip("addr del 10.233.6.7/24 dev eth0");
    w.bound("IPv4 address in task namespace unbound", t, |b| {
        !has(b, "vethb2", "10.233.6.7")
    });
    assert_eq!(ips(&w.current(), "vethb2"), [ip("fd00:233::6:7")]);

    // The task's namespace goes away with nobody deleting the veth: the
    // kernel destroys the pair only if nothing holds the namespace open, and
    // groupd must not. Namespace teardown runs asynchronously in the kernel,
    // hence the longer limit.
    let t = Instant::now();
    task.delete();
    let took = w.wait_for(
        "veth of a deleted namespace unbound",
        t,
        Duration::from_secs(5),
        |b, _| !b.interfaces.contains_key("vethb2"),
    );
    println!("veth of a deleted namespace unbound: {took:?}");

    drop(w);
    drop((agent, task));
    assert_removed(&names);
}
