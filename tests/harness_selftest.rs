//! Self-test of the network-namespace harness, with no firewall at all:
//! everything must reach everything, unused addresses must not answer,
//! spoofing must get through, and nothing may be left behind, not even
//! after a panic. The kernel-facing tests need root: they are
//! `#[ignore = "needs root: …"]`, and `make test` (as root) runs them.

#[path = "netns/mod.rs"]
mod netns;

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netns::{
    addr, namespaces_with_prefix, AgentId, Cluster, ContinuousProbe, Endpoint, Probe, Proto, TaskId,
};

/// 2 agents, each with 2 routed and 2 bridged tasks, linked.
fn build(c: &mut Cluster) -> (Vec<AgentId>, Vec<TaskId>) {
    let agents = vec![c.add_agent("agent1"), c.add_agent("agent2")];
    c.link_agents(agents[0], agents[1]);
    let mut tasks = Vec::new();
    for &a in &agents {
        for i in 0..2 {
            tasks.push(c.add_routed_task(a, &format!("routed{i}")));
        }
        for i in 0..2 {
            tasks.push(c.add_bridged_task(a, &format!("bridged{i}")));
        }
    }
    (agents, tasks)
}

/// Every task to every other task and to both agents, and every agent to
/// every task, for all protocols and both families.
fn full_matrix(c: &Cluster, agents: &[AgentId], tasks: &[TaskId]) -> Vec<Probe> {
    let mut sources: Vec<Endpoint> = tasks.iter().map(|&t| t.into()).collect();
    sources.extend(agents.iter().map(|&a| Endpoint::from(a)));
    let targets = sources.clone();
    let mut probes = Vec::new();
    for &from in &sources {
        for &to in &targets {
            let agent_to_agent = matches!((from, to), (Endpoint::Agent(_), Endpoint::Agent(_)));
            if from == to || agent_to_agent {
                continue;
            }
            for ip in c.ips_of(to) {
                for proto in Proto::ALL {
                    probes.push(Probe::new(from, ip, proto));
                }
            }
        }
    }
    probes
}

fn assert_all(c: &Cluster, probes: &[Probe], results: &[bool], want: bool) {
    let wrong: Vec<String> = probes
        .iter()
        .zip(results)
        .filter(|(_, &ok)| ok != want)
        .map(|(p, _)| format!("{p} (from {})", c.ns_of(p.from)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} probes did not give {want}:\n{}",
        wrong.len(),
        probes.len(),
        wrong.join("\n")
    );
}

/// No namespace may have a default route (or any route outside the test
/// ranges besides link-local/multicast housekeeping).
fn assert_no_default_routes(c: &Cluster) {
    for ns in c.namespaces() {
        for fam in ["-4", "-6"] {
            let out = c.exec(ns, &["ip", fam, "route", "show", "default"]);
            assert!(out.status.success(), "ip route in {ns}");
            let routes = String::from_utf8_lossy(&out.stdout);
            assert!(routes.trim().is_empty(), "default route in {ns}: {routes}");
        }
        let out = c.exec(ns, &["ip", "-4", "route", "get", "192.0.2.1"]);
        assert!(!out.status.success(), "{ns} has a route to 192.0.2.1");
    }
}

#[test]
fn addressing_plan() {
    assert_eq!(addr::task_v6(12, 34).to_string(), "fd00:233::12:34");
    assert_eq!(addr::agent_v6(3).to_string(), "fd00:233::ff:3");
    assert_eq!(addr::block_v6(5), "fd00:233::5:0/112");
    assert!(addr::in_test_range(addr::task_v4(253, 254).into()));
    assert!(addr::in_test_range(addr::task_v6(253, 254).into()));
    assert!(!addr::in_test_range("10.234.0.1".parse().unwrap()));
    assert!(!addr::in_test_range("fd00:233:0:1::1".parse().unwrap()));
}

#[test]
#[ignore = "needs root: builds agents and tasks from network namespaces, veths and bridges"]
fn full_matrix_without_firewall() {
    let t0 = Instant::now();
    let prefix;
    {
        let mut c = Cluster::new("full_matrix_without_firewall");
        prefix = c.prefix().to_string();
        let (agents, tasks) = build(&mut c);
        let built = t0.elapsed();
        c.wait_ready();
        let ready = t0.elapsed();

        let probes = full_matrix(&c, &agents, &tasks);
        let t = Instant::now();
        let results = c.probe_many(probes.clone());
        let matrix = t.elapsed();
        assert_all(&c, &probes, &results, true);

        // Negative controls: unused addresses in a routed block, a bridge
        // block and outside any block; a port nobody listens on.
        let (r0, b0) = (tasks[0], tasks[2]);
        let unused: [IpAddr; 6] = [
            addr::task_v4(addr::routed_subnet(1), 99).into(),
            addr::task_v6(addr::routed_subnet(1), 99).into(),
            addr::task_v4(addr::bridge_subnet(2), 99).into(),
            addr::task_v6(addr::bridge_subnet(2), 99).into(),
            "10.233.200.1".parse().unwrap(),
            "fd00:233::200:1".parse().unwrap(),
        ];
        let mut negatives = Vec::new();
        for from in [r0, b0] {
            for ip in unused {
                for proto in Proto::ALL {
                    negatives.push(Probe::new(from, ip, proto));
                }
            }
            for ip in c.task(tasks[5]).ips() {
                negatives.push(Probe::new(from, ip, Proto::Tcp).port(7999));
                negatives.push(Probe::new(from, ip, Proto::Udp).port(7999));
            }
        }
        let t = Instant::now();
        let neg_results = c.probe_many(negatives.clone());
        let negative = t.elapsed();
        assert_all(&c, &negatives, &neg_results, false);

        // Spoofing is not prevented without a firewall: a routed task and a
        // bridged task claim another task's address, locally and remotely.
        let t = Instant::now();
        for (from, fake_of, to) in [(r0, tasks[1], tasks[6]), (b0, tasks[4], tasks[3])] {
            for v6 in [false, true] {
                let (fake, dst) = (c.task(fake_of).ip(v6), c.task(to).ip(v6));
                assert!(
                    c.spoofed_udp(from, fake, dst),
                    "spoofed {fake} -> {dst} not received"
                );
                assert!(c.received_from(to).contains(&fake));
            }
        }
        let spoof = t.elapsed();

        // The continuous prober sees an uninterrupted run.
        let cp = ContinuousProbe::start(&c, tasks[0], c.task(tasks[7]).ipv4.into(), Proto::Tcp, 20);
        std::thread::sleep(Duration::from_millis(300));
        let samples = cp.stop();
        assert!(samples.len() >= 5, "only {} samples", samples.len());
        assert!(
            samples.iter().all(|&(_, ok)| ok),
            "continuous probe failed: {samples:?}"
        );
        assert_eq!(netns::longest_outage(&samples), Duration::ZERO);

        let t = Instant::now();
        check_remove_and_reuse(&mut c, tasks[1], tasks[3], tasks[4]);
        let reuse = t.elapsed();

        check_spawn_in(&c, tasks[0], agents[0]);
        assert_no_default_routes(&c);

        eprintln!(
            "[selftest] build {built:?}, ready {ready:?}, matrix of {} probes {matrix:?}, \
             {} negative probes {negative:?}, spoofing {spoof:?}, remove+reuse {reuse:?}",
            probes.len(),
            negatives.len()
        );
    }
    assert_eq!(namespaces_with_prefix(&prefix), Vec::<String>::new());
    eprintln!(
        "[selftest] full_matrix_without_firewall total {:?}",
        t0.elapsed()
    );
}

/// Removed tasks stop answering; new tasks on the same agent get the
/// freed addresses and answer again.
fn check_remove_and_reuse(c: &mut Cluster, routed: TaskId, bridged: TaskId, prober: TaskId) {
    let (old_r, old_b) = (c.task(routed).clone(), c.task(bridged).clone());
    c.remove_task(routed);
    c.remove_task(bridged);
    assert!(!c.task_ids().contains(&routed));
    for ns in [&old_r.ns, &old_b.ns] {
        assert!(!c.namespaces().contains(ns));
    }
    let gone: Vec<Probe> = [&old_r, &old_b]
        .iter()
        .flat_map(|t| t.ips())
        .map(|ip| Probe::new(prober, ip, Proto::Icmp))
        .collect();
    assert_all(c, &gone, &c.probe_many(gone.clone()), false);

    let new_r = c.add_routed_task(old_r.agent, "reborn-routed");
    let new_b = c.add_bridged_task(old_b.agent, "reborn-bridged");
    assert_eq!(c.task(new_r).ips(), old_r.ips());
    assert_eq!(c.task(new_b).ips(), old_b.ips());
    assert_eq!(c.task(new_r).host_iface, old_r.host_iface);
    let back: Vec<Probe> = [new_r, new_b]
        .iter()
        .flat_map(|&t| c.task(t).ips())
        .flat_map(|ip| Proto::ALL.map(|p| Probe::new(prober, ip, p)))
        .collect();
    assert_all(c, &back, &c.probe_many(back.clone()), true);
}

/// A spawned program sees the namespace's interfaces, also in /sys, and is
/// killed when dropped.
fn check_spawn_in(c: &Cluster, task: TaskId, agent: AgentId) {
    let mut cmd = Command::new("ls");
    cmd.arg("/sys/class/net").stdout(Stdio::piped());
    let child = c.spawn_in(&c.task(task).ns, &mut cmd);
    let out = child.with_child(|ch| {
        let mut s = String::new();
        std::io::Read::read_to_string(ch.stdout.as_mut().expect("stdout"), &mut s)
            .expect("read ls");
        s
    });
    let mut ifaces: Vec<&str> = out.split_whitespace().collect();
    ifaces.sort();
    assert_eq!(ifaces, ["eth0", "lo"], "task /sys/class/net");
    assert!(child.wait().expect("wait ls").success());

    let sleeper = c.spawn_in(&c.agent(agent).ns, Command::new("sleep").arg("60"));
    assert!(sleeper.try_wait().expect("try_wait").is_none());
    let st = sleeper.kill9().expect("kill -9");
    assert_eq!(netns::describe_exit(&st), "signal 9");
}

#[test]
#[ignore = "needs root: creates network namespaces (without root it would panic before building anything and prove nothing)"]
fn cleanup_after_panic() {
    let t0 = Instant::now();
    let mut prefix = String::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut c = Cluster::new("cleanup_after_panic");
        prefix = c.prefix().to_string();
        let a = c.add_agent("doomed");
        let t = c.add_routed_task(a, "doomed-task");
        c.add_bridged_task(a, "doomed-bridged");
        let _child = c.spawn_in(&c.agent(a).ns, Command::new("sleep").arg("60"));
        assert!(c.probe(t, c.agent(a).ipv4.into(), Proto::Icmp, None));
        assert_eq!(namespaces_with_prefix(&prefix).len(), 3);
        panic!("deliberate panic inside the test closure");
    }));
    assert!(result.is_err(), "the closure should have panicked");
    assert!(!prefix.is_empty());
    assert_eq!(namespaces_with_prefix(&prefix), Vec::<String>::new());
    eprintln!("[selftest] cleanup_after_panic total {:?}", t0.elapsed());
}
