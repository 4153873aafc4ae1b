//! Network-namespace test harness: simulated Mesos agents and IP-per-task
//! tasks built from namespaces, veth pairs and bridges, plus echo servers
//! and probes that send real packets.
//!
//! Include it from an integration test with
//! `#[path = "netns/mod.rs"] mod netns;`.
//!
//! Safety (docs/design.md §6):
//! - every namespace is named `gdt<pid>x<counter>-<role>` and is created with
//!   `ip netns add`, which fails rather than reuse an existing name;
//! - every `ip`/`sysctl` command runs inside one of our namespaces (`cmd.rs`),
//!   nothing is configured in the host namespace, no module is loaded;
//! - addresses only from 10.233.0.0/16 and fd00:233::/64 (`addr.rs`), no
//!   default route anywhere, bridges only have our veths as ports;
//! - `Drop for Cluster` kills child processes, stops servers and deletes every
//!   namespace it made (links die with their namespace), also on panic.
//!
//! Topology per agent (see `addr.rs` for the numbers):
//! ```text
//!   agent ns  (lo: 10.233.0.k, fd00:233::ff:k; forwarding on)
//!    ├─ veth-r<n> ── eth0 in routed task ns   (/32 + /128, proxy_arp, fe80::1)
//!    ├─ br-tasks (10.233.(2k+1).1/24, fd00:233::(2k+1):1/112)
//!    │    └─ veth-b<n> ── eth0 in bridged task ns
//!    └─ uplink<j> ── uplink<k> in agent j's ns (static routes both ways)
//! ```
#![allow(dead_code)]

pub mod addr;
mod child;
mod cmd;
mod nsfd;
pub mod probe;
mod server;
mod sock;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

// Re-exports for the test files; each uses a different subset.
#[allow(unused_imports)]
pub use addr::in_test_range;
#[allow(unused_imports)]
pub use child::{describe as describe_exit, ManagedChild};
#[allow(unused_imports)]
pub use probe::{longest_outage, ContinuousProbe, Probe, Proto};
#[allow(unused_imports)]
pub use server::{Datagram, TCP_PORT, UDP_PORT};

use cmd::kv;
use nsfd::NsHandle;
use probe::Job;
use server::EchoServer;

/// Name of the bridge for bridged tasks inside each agent namespace.
pub const BRIDGE: &str = "br-tasks";
/// Default probe timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(400);
/// Default number of probes `probe_many` runs at once (one thread each).
/// A probe that fails costs the whole timeout, so this bounds the wall time
/// of a matrix with many blocked pairs: 792 failing probes take ~10 s at 32,
/// ~2.8 s at 128. Threads mostly sleep in poll(); 128 is cheap.
pub const DEFAULT_PARALLELISM: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(pub usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub usize);

/// Source of a probe: a task or an agent host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Task(TaskId),
    Agent(AgentId),
}

impl From<TaskId> for Endpoint {
    fn from(t: TaskId) -> Endpoint {
        Endpoint::Task(t)
    }
}

impl From<AgentId> for Endpoint {
    fn from(a: AgentId) -> Endpoint {
        Endpoint::Agent(a)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// Calico style: /32 + /128 host routes to a veth, proxy ARP.
    Routed,
    /// veth enslaved to the agent's `br-tasks` bridge.
    Bridged,
}

#[derive(Clone, Debug)]
pub struct AgentInfo {
    pub name: String,
    /// Network namespace standing for the agent host (run groupd here).
    pub ns: String,
    /// Agent number k (1-based) used in the addressing plan.
    pub k: u8,
    /// Identity addresses on lo.
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// Whether bridge-nf-call-ip{,6}tables exist (br_netfilter loaded) and
    /// were set to 1 in this namespace.
    pub br_netfilter: bool,
    /// Uplink interface names in this agent, by peer agent.
    pub uplinks: Vec<(AgentId, String)>,
    has_bridge: bool,
}

impl AgentInfo {
    pub fn ips(&self) -> [IpAddr; 2] {
        [self.ipv4.into(), self.ipv6.into()]
    }
}

#[derive(Clone, Debug)]
pub struct TaskInfo {
    pub name: String,
    pub ns: String,
    pub agent: AgentId,
    pub kind: TaskKind,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// Host-side interface in the agent namespace (`veth-r<n>`/`veth-b<n>`).
    pub host_iface: String,
    /// Host number n: last octet of `ipv4`, also in `host_iface`.
    pub n: u8,
    /// Set by [`Cluster::remove_task`]; the id stays valid for look-ups.
    pub removed: bool,
}

impl TaskInfo {
    pub fn ips(&self) -> [IpAddr; 2] {
        [self.ipv4.into(), self.ipv6.into()]
    }

    pub fn ip(&self, v6: bool) -> IpAddr {
        if v6 {
            self.ipv6.into()
        } else {
            self.ipv4.into()
        }
    }
}

/// Owns every namespace, server and child of one test. Drop cleans up.
pub struct Cluster {
    test_name: String,
    prefix: String,
    agents: Vec<AgentInfo>,
    tasks: Vec<TaskInfo>,
    /// Every namespace this cluster created, in creation order. Only these
    /// are ever entered, configured or deleted.
    namespaces: Vec<String>,
    handles: HashMap<String, Arc<NsHandle>>,
    servers: HashMap<String, EchoServer>,
    children: Mutex<Vec<Weak<Mutex<std::process::Child>>>>,
    /// Namespaces changed since the last readiness check.
    unready: Mutex<Vec<String>>,
    probe_timeout: Duration,
    parallelism: usize,
}

static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

impl Cluster {
    pub fn new(test_name: &str) -> Cluster {
        let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("gdt{}x{}-", std::process::id(), n);
        eprintln!("[netns] cluster {prefix} for test {test_name}");
        Cluster {
            test_name: test_name.to_string(),
            prefix,
            agents: Vec::new(),
            tasks: Vec::new(),
            namespaces: Vec::new(),
            handles: HashMap::new(),
            servers: HashMap::new(),
            children: Mutex::new(Vec::new()),
            unready: Mutex::new(Vec::new()),
            probe_timeout: DEFAULT_TIMEOUT,
            parallelism: DEFAULT_PARALLELISM,
        }
    }

    /// `gdt<pid>x<counter>-`: every namespace of this cluster starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn set_probe_timeout(&mut self, t: Duration) {
        self.probe_timeout = t;
    }

    pub fn set_parallelism(&mut self, n: usize) {
        self.parallelism = n.max(1);
    }

    // ----- building ------------------------------------------------------

    /// Adds an agent host namespace: lo up, identity addresses on lo, IPv4
    /// and IPv6 forwarding on (per-netns sysctls), br_netfilter hooks on if
    /// that sysctl exists, and echo servers.
    pub fn add_agent(&mut self, name: &str) -> AgentId {
        self.try_add_agent(name)
            .unwrap_or_else(|e| panic!("add_agent {name}: {e:#}"))
    }

    fn try_add_agent(&mut self, name: &str) -> Result<AgentId> {
        let k = u8::try_from(self.agents.len() + 1)
            .ok()
            .filter(|&k| k <= addr::MAX_AGENTS)
            .context("too many agents")?;
        let ns = self.create_ns(&format!("a{k}-{}", sanitize(name)))?;
        let mut settings = baseline_sysctls();
        settings.extend([
            kv("net.ipv4.ip_forward", 1),
            kv("net.ipv4.conf.all.forwarding", 1),
            kv("net.ipv4.conf.default.forwarding", 1),
            kv("net.ipv6.conf.all.forwarding", 1),
            kv("net.ipv6.conf.default.forwarding", 1),
        ]);
        cmd::sysctl(&ns, &settings)?;
        let br_netfilter = cmd::sysctl_exists(&ns, "net.bridge.bridge-nf-call-iptables");
        if br_netfilter {
            cmd::sysctl(
                &ns,
                &[
                    kv("net.bridge.bridge-nf-call-iptables", 1),
                    kv("net.bridge.bridge-nf-call-ip6tables", 1),
                ],
            )?;
        }
        let (v4, v6) = (addr::agent_v4(k), addr::agent_v6(k));
        cmd::ip_batch(
            &ns,
            &[
                "link set lo up".into(),
                format!("addr add {v4}/32 dev lo"),
                format!("addr add {v6}/128 dev lo"),
            ],
        )?;
        self.start_server(&ns)?;
        self.agents.push(AgentInfo {
            name: name.to_string(),
            ns,
            k,
            ipv4: v4,
            ipv6: v6,
            br_netfilter,
            uplinks: Vec::new(),
            has_bridge: false,
        });
        Ok(AgentId(self.agents.len() - 1))
    }

    /// Connects two agents with a veth pair (`uplink<j>` in agent k's ns
    /// leads to agent j) and static routes for the peer's identity and task
    /// blocks, IPv4 via the peer's identity address (ARP answered because it
    /// is local there), IPv6 via the peer's static link-local.
    pub fn link_agents(&mut self, a: AgentId, b: AgentId) {
        self.try_link_agents(a, b)
            .unwrap_or_else(|e| panic!("link_agents {a:?} {b:?}: {e:#}"))
    }

    fn try_link_agents(&mut self, a: AgentId, b: AgentId) -> Result<()> {
        if a == b {
            bail!("cannot link an agent to itself");
        }
        let (ka, kb) = (self.agents[a.0].k, self.agents[b.0].k);
        let (ns_a, ns_b) = (self.agents[a.0].ns.clone(), self.agents[b.0].ns.clone());
        let (if_a, if_b) = (format!("uplink{kb}"), format!("uplink{ka}"));
        // Created in A with the peer directly in B: never in the host ns.
        cmd::ip_batch(
            &ns_a,
            &[format!(
                "link add {if_a} type veth peer name {if_b} netns {ns_b}"
            )],
        )?;
        self.mark_unready(&ns_a);
        self.mark_unready(&ns_b);
        cmd::ip_batch(&ns_a, &uplink_config(&if_a, ka, kb))?;
        cmd::ip_batch(&ns_b, &uplink_config(&if_b, kb, ka))?;
        self.agents[a.0].uplinks.push((b, if_a));
        self.agents[b.0].uplinks.push((a, if_b));
        Ok(())
    }

    /// Adds a Calico-style routed task on `agent` (see module docs).
    pub fn add_routed_task(&mut self, agent: AgentId, name: &str) -> TaskId {
        self.try_add_task(agent, name, TaskKind::Routed)
            .unwrap_or_else(|e| panic!("add_routed_task {name}: {e:#}"))
    }

    /// Adds a task whose veth is a port of the agent's `br-tasks` bridge.
    pub fn add_bridged_task(&mut self, agent: AgentId, name: &str) -> TaskId {
        self.try_add_task(agent, name, TaskKind::Bridged)
            .unwrap_or_else(|e| panic!("add_bridged_task {name}: {e:#}"))
    }

    fn try_add_task(&mut self, agent: AgentId, name: &str, kind: TaskKind) -> Result<TaskId> {
        let a = self.agents.get(agent.0).context("unknown agent")?;
        let (k, agent_ns) = (a.k, a.ns.clone());
        let n = self
            .free_host_number(agent, kind)
            .with_context(|| format!("agent {} is full", a.name))?;
        let (letter, subnet) = match kind {
            TaskKind::Routed => ('r', addr::routed_subnet(k)),
            TaskKind::Bridged => ('b', addr::bridge_subnet(k)),
        };
        if kind == TaskKind::Bridged && !a.has_bridge {
            self.create_bridge(agent)?;
        }
        let ns = self.create_ns(&format!("a{k}{letter}{n}-{}", sanitize(name)))?;
        // Before eth0 exists, so it inherits the namespace defaults.
        cmd::sysctl(&ns, &task_sysctls())?;
        let host_iface = format!("veth-{letter}{n}");
        let (v4, v6) = (addr::task_v4(subnet, n), addr::task_v6(subnet, n));
        cmd::ip_batch(
            &agent_ns,
            &[format!(
                "link add {host_iface} type veth peer name eth0 netns {ns}"
            )],
        )?;
        match kind {
            TaskKind::Routed => self.plumb_routed(&agent_ns, &host_iface, &ns, v4, v6)?,
            TaskKind::Bridged => self.plumb_bridged(&agent_ns, &host_iface, &ns, subnet, v4, v6)?,
        }
        self.mark_unready(&agent_ns);
        self.start_server(&ns)?;
        self.tasks.push(TaskInfo {
            name: name.to_string(),
            ns,
            agent,
            kind,
            ipv4: v4,
            ipv6: v6,
            host_iface,
            n,
            removed: false,
        });
        let id = TaskId(self.tasks.len() - 1);
        if kind == TaskKind::Bridged {
            self.flush_neighbours(&self.tasks[id.0])?;
        }
        Ok(id)
    }

    /// Lowest host number not held by a live task of this kind on this
    /// agent: a task added after a removal gets the freed addresses back
    /// (for IP-reuse tests). Bridged numbering starts at 2 (.1 is the bridge).
    fn free_host_number(&self, agent: AgentId, kind: TaskKind) -> Option<u8> {
        let first = match kind {
            TaskKind::Routed => 1,
            TaskKind::Bridged => 2,
        };
        (first..=addr::MAX_HOST).find(|&n| {
            !self
                .tasks
                .iter()
                .any(|t| !t.removed && t.agent == agent && t.kind == kind && t.n == n)
        })
    }

    /// Flushes the neighbour entries for a bridged task's addresses on its
    /// bridge (agent and the other bridged tasks there), when the task is
    /// added and when it is removed. Otherwise a stale MAC of a dead task
    /// with the same IP, or an INCOMPLETE entry left by probing the address
    /// while nobody had it, blocks the new task for 1-30 s. (A gratuitous
    /// ARP from the new task does not help reliably: it is sent when eth0
    /// comes up, before the bridge port forwards.)
    fn flush_neighbours(&self, task: &TaskInfo) -> Result<()> {
        let flush = [
            format!("neigh flush to {}", task.ipv4),
            format!("neigh flush to {}", task.ipv6),
        ];
        let siblings = self.tasks.iter().filter(|t| {
            !t.removed && t.agent == task.agent && t.kind == TaskKind::Bridged && t.ns != task.ns
        });
        let agent_ns = &self.agents[task.agent.0].ns;
        for ns in std::iter::once(agent_ns).chain(siblings.map(|t| &t.ns)) {
            cmd::ip_batch(ns, &flush)?;
        }
        Ok(())
    }

    /// Kills a task: stops its servers and deletes its namespace and veth
    /// pair (and so the agent's host routes to it). Its addresses become
    /// free for the next task added to the same agent with the same kind.
    pub fn remove_task(&mut self, t: TaskId) {
        self.try_remove_task(t)
            .unwrap_or_else(|e| panic!("remove_task {t:?}: {e:#}"))
    }

    fn try_remove_task(&mut self, t: TaskId) -> Result<()> {
        let task = self.tasks.get(t.0).context("unknown task")?.clone();
        if task.removed {
            bail!("task {} already removed", task.name);
        }
        let agent_ns = self.agents[task.agent.0].ns.clone();
        // Deleting the host end destroys the pair at once; the namespace
        // itself is torn down asynchronously by the kernel, and its veth
        // would otherwise still hold the name veth-<x><n> for a while.
        cmd::ip_batch(&agent_ns, &[format!("link del {}", task.host_iface)])?;
        if task.kind == TaskKind::Bridged {
            self.flush_neighbours(&task)?;
        }
        self.servers.remove(&task.ns);
        self.handles.remove(&task.ns);
        self.unready
            .lock()
            .expect("unready lock")
            .retain(|n| n != &task.ns);
        cmd::netns_del(std::slice::from_ref(&task.ns))?;
        self.namespaces.retain(|n| n != &task.ns);
        self.tasks[t.0].removed = true;
        Ok(())
    }

    fn plumb_routed(
        &self,
        agent_ns: &str,
        hif: &str,
        ns: &str,
        v4: Ipv4Addr,
        v6: Ipv6Addr,
    ) -> Result<()> {
        // proxy_arp answers the task's ARP for any routed destination;
        // proxy_delay 0 answers at once instead of after up to 0.8 s.
        cmd::sysctl(
            agent_ns,
            &[
                kv(format!("net.ipv4.conf.{hif}.proxy_arp"), 1),
                kv(format!("net.ipv4.conf.{hif}.forwarding"), 1),
                kv(format!("net.ipv4.conf.{hif}.rp_filter"), 0),
                kv(format!("net.ipv4.neigh.{hif}.proxy_delay"), 0),
                kv(format!("net.ipv6.conf.{hif}.forwarding"), 1),
            ],
        )?;
        cmd::ip_batch(
            agent_ns,
            &[
                // Only the static fe80::1 gateway, no EUI-64 link-local.
                format!("link set {hif} addrgenmode none"),
                format!("addr add fe80::1/64 dev {hif} nodad"),
                format!("link set {hif} up"),
                format!("route add {v4}/32 dev {hif} scope link"),
                format!("route add {v6}/128 dev {hif}"),
            ],
        )?;
        cmd::ip_batch(
            ns,
            &[
                "link set lo up".into(),
                format!("addr add {v4}/32 dev eth0"),
                format!("addr add {v6}/128 dev eth0 nodad"),
                "link set eth0 up".into(),
                // On-link: the agent answers ARP for all of it (proxy_arp).
                format!("route add 10.233.0.0/16 dev eth0 scope link src {v4}"),
                "route add fd00:233::/64 via fe80::1 dev eth0".into(),
            ],
        )
    }

    fn plumb_bridged(
        &self,
        agent_ns: &str,
        hif: &str,
        ns: &str,
        subnet: u8,
        v4: Ipv4Addr,
        v6: Ipv6Addr,
    ) -> Result<()> {
        cmd::ip_batch(
            agent_ns,
            &[
                format!("link set {hif} addrgenmode none"),
                format!("link set {hif} master {BRIDGE}"),
                format!("link set {hif} up"),
            ],
        )?;
        cmd::ip_batch(
            ns,
            &[
                "link set lo up".into(),
                format!("addr add {v4}/24 dev eth0"),
                format!("addr add {v6}/112 dev eth0 nodad"),
                "link set eth0 up".into(),
                format!("route add 10.233.0.0/16 via {}", addr::task_v4(subnet, 1)),
                format!("route add fd00:233::/64 via {}", addr::task_v6(subnet, 1)),
            ],
        )
    }

    fn create_bridge(&mut self, agent: AgentId) -> Result<()> {
        let a = &self.agents[agent.0];
        let b = addr::bridge_subnet(a.k);
        // A fixed MAC: otherwise the bridge takes the lowest port MAC and
        // changes it as ports come and go, breaking the tasks' ARP caches.
        let mac = format!("02:33:00:00:{:02x}:01", a.k);
        cmd::ip_batch(
            &a.ns,
            &[
                format!(
                    "link add name {BRIDGE} address {mac} type bridge stp_state 0 forward_delay 0 mcast_snooping 0"
                ),
                // fe80::1 as on routed veths: the kernel sends neighbour
                // solicitations from a link-local, and finds none otherwise.
                format!("link set {BRIDGE} addrgenmode none"),
                format!("addr add fe80::1/64 dev {BRIDGE} nodad"),
                format!("addr add {}/24 dev {BRIDGE}", addr::task_v4(b, 1)),
                format!("addr add {}/112 dev {BRIDGE} nodad", addr::task_v6(b, 1)),
                format!("link set {BRIDGE} up"),
            ],
        )?;
        self.agents[agent.0].has_bridge = true;
        Ok(())
    }

    /// `ip netns add <prefix><role>`, recorded for cleanup only once it
    /// succeeded (a failure may mean the name belongs to someone else).
    fn create_ns(&mut self, role: &str) -> Result<String> {
        let name = format!("{}{role}", self.prefix);
        cmd::netns_add(&name)?;
        self.namespaces.push(name.clone());
        let handle = NsHandle::open(&name)?;
        self.handles.insert(name.clone(), Arc::new(handle));
        self.mark_unready(&name);
        Ok(name)
    }

    fn start_server(&mut self, ns: &str) -> Result<()> {
        let server = EchoServer::start(self.handle(ns).clone())?;
        self.servers.insert(ns.to_string(), server);
        Ok(())
    }

    fn mark_unready(&self, ns: &str) {
        let mut u = self.unready.lock().expect("unready lock");
        if !u.iter().any(|n| n == ns) {
            u.push(ns.to_string());
        }
    }

    // ----- readiness -----------------------------------------------------

    /// Waits until every changed namespace has no tentative IPv6 address,
    /// all its veths are up (operstate UP needs both ends up) and bridge
    /// ports are forwarding. Probes call this themselves.
    pub fn wait_ready(&self) {
        let pending: Vec<String> = std::mem::take(&mut *self.unready.lock().expect("unready lock"));
        let start = Instant::now();
        for ns in &pending {
            wait_ns_ready(ns).unwrap_or_else(|e| panic!("netns {ns} not ready: {e:#}"));
        }
        if !pending.is_empty() {
            eprintln!(
                "[netns] {}: {} namespaces ready in {:?}",
                self.test_name,
                pending.len(),
                start.elapsed()
            );
        }
    }

    // ----- queries -------------------------------------------------------

    pub fn task(&self, t: TaskId) -> &TaskInfo {
        &self.tasks[t.0]
    }

    pub fn agent(&self, a: AgentId) -> &AgentInfo {
        &self.agents[a.0]
    }

    /// Live (not removed) tasks.
    pub fn task_ids(&self) -> Vec<TaskId> {
        (0..self.tasks.len())
            .filter(|&i| !self.tasks[i].removed)
            .map(TaskId)
            .collect()
    }

    pub fn agent_ids(&self) -> Vec<AgentId> {
        (0..self.agents.len()).map(AgentId).collect()
    }

    /// Names of all namespaces this cluster made.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    pub fn ns_of(&self, e: impl Into<Endpoint>) -> &str {
        match e.into() {
            Endpoint::Task(t) => &self.tasks[t.0].ns,
            Endpoint::Agent(a) => &self.agents[a.0].ns,
        }
    }

    /// Addresses (v4, v6) of a task or agent.
    pub fn ips_of(&self, e: impl Into<Endpoint>) -> [IpAddr; 2] {
        match e.into() {
            Endpoint::Task(t) => self.tasks[t.0].ips(),
            Endpoint::Agent(a) => self.agents[a.0].ips(),
        }
    }

    /// The endpoint (task or agent) owning `ip`, if any.
    pub fn owner_of(&self, ip: IpAddr) -> Option<Endpoint> {
        let task = self
            .tasks
            .iter()
            .position(|t| !t.removed && t.ips().contains(&ip));
        let agent = self.agents.iter().position(|a| a.ips().contains(&ip));
        task.map(|i| Endpoint::Task(TaskId(i)))
            .or(agent.map(|i| Endpoint::Agent(AgentId(i))))
    }

    fn server(&self, e: impl Into<Endpoint>) -> &EchoServer {
        let ns = self.ns_of(e);
        self.servers
            .get(ns)
            .unwrap_or_else(|| panic!("no echo server in {ns} (task removed?)"))
    }

    fn handle(&self, ns: &str) -> &Arc<NsHandle> {
        self.handles
            .get(ns)
            .unwrap_or_else(|| panic!("netns {ns} is not a live namespace of this cluster"))
    }

    // ----- running things ------------------------------------------------

    /// `ip netns exec NS ARGS...` in one of this cluster's namespaces.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        self.handle(ns);
        cmd::ns_exec(ns, args)
    }

    /// Runs `cmd` inside `ns` (like `ip netns exec`, including a private
    /// /sys). The child is killed when the ManagedChild or the cluster is
    /// dropped, whichever comes first.
    pub fn spawn_in(&self, ns: &str, cmd: &mut Command) -> ManagedChild {
        let child = child::spawn_in(self.handle(ns), cmd)
            .unwrap_or_else(|e| panic!("spawn {cmd:?} in {ns}: {e}"));
        self.children
            .lock()
            .expect("children lock")
            .push(child.weak());
        child
    }

    // ----- probes --------------------------------------------------------

    pub(crate) fn job(&self, p: &Probe) -> Job {
        assert!(
            in_test_range(p.to),
            "probe target {} outside the test ranges",
            p.to
        );
        let ns = self.handle(self.ns_of(p.from)).clone();
        // Agents probe from their identity address, so the source does not
        // depend on which of the agent's addresses the kernel would pick.
        let bind = match p.from {
            Endpoint::Agent(a) => {
                let a = &self.agents[a.0];
                Some(if p.to.is_ipv6() {
                    a.ipv6.into()
                } else {
                    a.ipv4.into()
                })
            }
            Endpoint::Task(_) => None,
        };
        Job::new(ns, bind, p, self.probe_timeout)
    }

    /// One probe: true if the echo (ICMP reply, TCP/UDP echo) came back
    /// within the probe timeout.
    pub fn probe(
        &self,
        from: impl Into<Endpoint>,
        to: IpAddr,
        proto: Proto,
        port: Option<u16>,
    ) -> bool {
        let p = Probe {
            from: from.into(),
            to,
            proto,
            port,
        };
        self.probe_many(vec![p])[0]
    }

    /// Runs probes in parallel (at most `parallelism` at a time); results in
    /// the same order.
    pub fn probe_many(&self, probes: Vec<Probe>) -> Vec<bool> {
        self.wait_ready();
        let jobs: Vec<Job> = probes.iter().map(|p| self.job(p)).collect();
        probe::run_many(&jobs, self.parallelism)
    }

    /// Sends one UDP datagram from task `from` with source address
    /// `fake_src` to `to`:7002 and reports whether the echo server there
    /// logged it with that source. Uses IP_TRANSPARENT + IP_FREEBIND on the
    /// sending socket; the task's interfaces are not changed.
    pub fn spoofed_udp(&self, from: TaskId, fake_src: IpAddr, to: IpAddr) -> bool {
        assert!(
            in_test_range(fake_src),
            "fake source {fake_src} outside the test ranges"
        );
        assert!(in_test_range(to), "target {to} outside the test ranges");
        assert_eq!(fake_src.is_ipv6(), to.is_ipv6(), "address families differ");
        let owner = self
            .owner_of(to)
            .unwrap_or_else(|| panic!("no echo server at {to}"));
        let log = self.server(owner).log();
        self.wait_ready();
        let ns = self.handle(&self.tasks[from.0].ns);
        let timeout = self.probe_timeout;
        nsfd::run_in(ns, || {
            probe::spoof_here(fake_src, SocketAddr::new(to, UDP_PORT), &log, timeout)
        })
        .unwrap_or_else(|e| panic!("spoofed send from {fake_src} to {to}: {e}"))
    }

    /// Every UDP datagram the echo server of `e` received so far.
    pub fn udp_log(&self, e: impl Into<Endpoint>) -> Vec<Datagram> {
        self.server(e).received()
    }

    /// Distinct sources the UDP echo server of `e` has seen.
    pub fn received_from(&self, e: impl Into<Endpoint>) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.udp_log(e).into_iter().map(|d| d.from).collect();
        v.sort();
        v.dedup();
        v
    }

    pub fn clear_udp_log(&self, e: impl Into<Endpoint>) {
        self.server(e).clear();
    }

    // ----- teardown ------------------------------------------------------

    fn teardown(&mut self) -> Result<()> {
        for w in self.children.lock().map(|c| c.clone()).unwrap_or_default() {
            child::kill_weak(&w);
        }
        // Sockets and namespace fds keep a namespace alive after its name
        // is gone: close them first.
        self.servers.clear();
        self.handles.clear();
        let mut names = std::mem::take(&mut self.namespaces);
        names.reverse();
        let res = cmd::netns_del(&names);
        let left: Vec<&String> = names
            .iter()
            .filter(|n| std::path::Path::new("/run/netns").join(n).exists())
            .collect();
        if !left.is_empty() {
            bail!("namespaces left behind: {left:?} ({res:?})");
        }
        res
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Never panic here: during unwinding that would abort the process.
        let start = Instant::now();
        match self.teardown() {
            Ok(()) => eprintln!(
                "[netns] {} cleaned up in {:?}",
                self.prefix,
                start.elapsed()
            ),
            Err(e) => eprintln!("[netns] CLEANUP FAILED for {}: {e:#}", self.prefix),
        }
    }
}

/// Namespaces under /run/netns whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// Keeps user-supplied names safe for netns names and readable.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if s.is_empty() {
        "x".into()
    } else {
        s
    }
}

/// Settings for every namespace we make. IPv4 conf/all and conf/default
/// are copied from the host when a namespace is created, so anything a
/// distribution tunes there (rp_filter, arp_ignore, ...) is reset here.
fn baseline_sysctls() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for scope in ["all", "default"] {
        v.push(kv(format!("net.ipv4.conf.{scope}.rp_filter"), 0));
        v.push(kv(format!("net.ipv4.conf.{scope}.arp_ignore"), 0));
        v.push(kv(format!("net.ipv4.conf.{scope}.arp_filter"), 0));
        v.push(kv(format!("net.ipv6.conf.{scope}.disable_ipv6"), 0));
        // Addresses are usable at once (no DAD wait) and no RA can ever
        // install a default route.
        v.push(kv(format!("net.ipv6.conf.{scope}.accept_dad"), 0));
        v.push(kv(format!("net.ipv6.conf.{scope}.accept_ra"), 0));
    }
    v.push(kv("net.ipv4.icmp_echo_ignore_all", 0));
    v.push(kv("net.ipv6.icmp.echo_ignore_all", 0));
    v
}

fn task_sysctls() -> Vec<(String, String)> {
    baseline_sysctls()
}

/// Uplink configuration inside agent `me` towards agent `peer`.
fn uplink_config(ifname: &str, me: u8, peer: u8) -> Vec<String> {
    let gw4 = addr::agent_v4(peer);
    let gw6 = addr::uplink_ll(peer);
    let mut v = vec![
        format!("link set {ifname} addrgenmode none"),
        format!("addr add {}/64 dev {ifname} nodad", addr::uplink_ll(me)),
        format!("link set {ifname} up"),
        format!(
            "route add {gw4}/32 dev {ifname} scope link src {}",
            addr::agent_v4(me)
        ),
        format!(
            "route add {}/128 via {gw6} dev {ifname}",
            addr::agent_v6(peer)
        ),
    ];
    for block in [addr::routed_subnet(peer), addr::bridge_subnet(peer)] {
        v.push(format!(
            "route add {} via {gw4} dev {ifname}",
            addr::block_v4(block)
        ));
        v.push(format!(
            "route add {} via {gw6} dev {ifname}",
            addr::block_v6(block)
        ));
    }
    v
}

fn wait_ns_ready(ns: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let problems = ns_problems(ns)?;
        if problems.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{}", problems.join("; "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What still keeps `ns` from being usable (empty when ready).
fn ns_problems(ns: &str) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let addrs: serde_json::Value = serde_json::from_str(&cmd::ip_query(
        ns,
        &["-j", "-6", "addr", "show", "tentative"],
    )?)
    .context("ip -j addr")?;
    for link in addrs.as_array().into_iter().flatten() {
        if link["addr_info"].as_array().is_some_and(|a| !a.is_empty()) {
            problems.push(format!("tentative address on {}", link["ifname"]));
        }
    }
    let links: serde_json::Value =
        serde_json::from_str(&cmd::ip_query(ns, &["-j", "-d", "link", "show"])?)
            .context("ip -j link")?;
    for link in links.as_array().into_iter().flatten() {
        let kind = link["linkinfo"]["info_kind"].as_str().unwrap_or("");
        if (kind == "veth" || kind == "bridge") && link["operstate"] != "UP" {
            problems.push(format!("{} is {}", link["ifname"], link["operstate"]));
        }
        let port_state = &link["linkinfo"]["info_slave_data"]["state"];
        if link["linkinfo"]["info_slave_kind"] == "bridge" && port_state != "forwarding" {
            problems.push(format!("bridge port {} is {}", link["ifname"], port_state));
        }
    }
    Ok(problems)
}
