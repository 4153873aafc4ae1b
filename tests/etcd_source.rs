//! `groupd publish` and the `etcd` source against a real etcd on loopback
//! (no root needed): publishers fed by the simulated Mesos master keep
//! etcd equal to it, a standby takes over when the leader is killed, a
//! publisher that loses the master deletes nothing; an agent cut off etcd
//! for 30 s resumes from its revision without a range read, and reads the
//! whole view again only after etcd compacted past it.

mod common;
#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/etcd_agent.rs"]
mod etcd_agent;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use etcd_agent::{Agent, Proxy, Publisher};
use groupd::etcd::Keys;
use groupd::model::Task;
use groupd_sim::mesos::{MesosOptions, MesosSim, NetworkSpec, TaskSpec};

const PREFIX: &str = "/groupd/v1";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 233, (i / 250) as u8, (i % 250 + 1) as u8))
}

fn spec(i: usize) -> TaskSpec {
    TaskSpec {
        id: format!("web.t{i}"),
        agent: format!("a{}", i % 3),
        network_infos: vec![NetworkSpec {
            name: Some("dcos".into()),
            groups: vec![format!("g{}", i % 7)],
            ip_addresses: vec![ip(i)],
            ..NetworkSpec::default()
        }],
        ..TaskSpec::default()
    }
}

/// The task ids etcd holds under the prefix (a range read by the test).
fn etcd_tasks(urls: &[String]) -> BTreeMap<String, Vec<u8>> {
    runtime().block_on(async {
        let mut c = etcd_client::Client::connect(urls, None)
            .await
            .expect("connect");
        let keys = Keys::new(PREFIX);
        let r = c
            .get(
                keys.tasks(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .expect("range");
        r.kvs()
            .iter()
            .map(|kv| {
                let id = match keys.classify(kv.key()) {
                    groupd::etcd::KeyKind::Task(id) => id,
                    other => panic!("unexpected key under tasks/: {other:?}"),
                };
                (id, kv.value().to_vec())
            })
            .collect()
    })
}

fn ids(n: impl IntoIterator<Item = usize>) -> BTreeSet<String> {
    n.into_iter().map(|i| format!("web.t{i}")).collect()
}

#[test]
fn publishers_keep_etcd_equal_to_the_master_and_a_standby_takes_over() {
    let etcd = etcd::Etcd::single("publish");
    let master = MesosSim::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        MesosOptions {
            heartbeat: Duration::from_secs(1),
            ..MesosOptions::default()
        },
    )
    .expect("sim master");
    for i in 0..3 {
        master.launch_task(spec(i)).expect("launch");
    }
    let dir = common::GroupdDir::new("etcd-publish");
    let source = format!("kind = \"mesos\"\nurls = [{:?}]", master.url());
    let ttl = 2;
    let mut a = Publisher::start(&dir.0, "pub-a", &source, &etcd.urls(), PREFIX, ttl, &[]);
    // A starts campaigning first: it leads, B stands by.
    std::thread::sleep(Duration::from_millis(1500));
    let b = Publisher::start(&dir.0, "pub-b", &source, &etcd.urls(), PREFIX, ttl, &[]);

    let agent = Agent::start(etcd.urls(), PREFIX);
    agent.wait(Duration::from_secs(20), "fed 3 tasks by pub-a", |s| {
        s.tasks.len() == 3 && s.position.publisher.as_deref() == Some("pub-a")
    });
    let t0: &Task = &agent.seen().tasks["web.t0"];
    assert_eq!(t0.ips.iter().copied().collect::<Vec<_>>(), vec![ip(0)]);
    assert!(t0.groups.contains_key("g0"), "{t0:?}");

    // More changes than one transaction holds (128 operations).
    for i in 3..303 {
        master.launch_task(spec(i)).expect("launch");
    }
    for i in 0..2 {
        master.kill_task(&format!("web.t{i}")).expect("kill");
    }
    let took = agent.wait(Duration::from_secs(20), "at 301 tasks", |s| {
        s.tasks.len() == 301
    });
    eprintln!("[etcd_source] 302 master changes -> agent in {took:?}");
    assert_eq!(
        agent.seen().snapshots,
        1,
        "changes came as a watch, not a re-read"
    );

    // The leader dies mid-stream: changes made while nobody leads are
    // written by the standby once it leads (its diff), and later ones as
    // they come.
    let before = agent.seen().position.revision;
    a.kill9();
    let killed = Instant::now();
    for i in 303..310 {
        master.launch_task(spec(i)).expect("launch");
    }
    master.kill_task("web.t5").expect("kill");
    let took = agent.wait(
        Duration::from_secs(ttl as u64 + 15),
        "fed by pub-b after pub-a died",
        |s| s.tasks.len() == 307 && s.position.publisher.as_deref() == Some("pub-b"),
    );
    eprintln!(
        "[etcd_source] pub-a killed -> pub-b's writes at the agent in {:?} (lease TTL {ttl} s), revision {before:?} -> {:?}",
        killed.elapsed(),
        agent.seen().position.revision
    );
    assert!(took <= Duration::from_secs(ttl as u64 + 10));
    for i in 310..320 {
        master.launch_task(spec(i)).expect("launch");
    }
    agent.wait(Duration::from_secs(10), "at 317 tasks", |s| {
        s.tasks.len() == 317
    });

    // No key lost or duplicated: etcd holds exactly the master's tasks.
    let want: BTreeSet<String> = ids((2..320).filter(|&i| i != 5));
    let held = etcd_tasks(&etcd.urls());
    assert_eq!(held.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(
        agent.seen().tasks.keys().cloned().collect::<BTreeSet<_>>(),
        want
    );
    assert_eq!(agent.seen().snapshots, 1);

    // The master goes away: pub-b is degraded and deletes nothing.
    drop(master);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        etcd_tasks(&etcd.urls())
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>(),
        want,
        "a publisher without its master must not change etcd"
    );
    assert!(
        b.log().contains("etcd keeps the last view") && b.log().contains("handing leadership"),
        "pub-b log:\n{}",
        b.log()
    );
}

/// Write `tasks` (id -> task) under the prefix; `None` deletes.
fn write(urls: &[String], changes: Vec<(String, Option<Task>)>) {
    runtime().block_on(async {
        let mut c = etcd_client::Client::connect(urls, None)
            .await
            .expect("connect");
        let keys = Keys::new(PREFIX);
        // What a publisher marks a published prefix with.
        c.put(keys.publisher(), "test", None).await.expect("put");
        for (id, task) in changes {
            match task {
                Some(t) => {
                    c.put(keys.task(&id), groupd::etcd::encode(&t), None)
                        .await
                        .expect("put");
                }
                None => {
                    c.delete(keys.task(&id), None).await.expect("delete");
                }
            }
        }
    })
}

fn compact(urls: &[String]) {
    runtime().block_on(async {
        let mut c = etcd_client::Client::connect(urls, None)
            .await
            .expect("connect");
        let rev = c
            .get("x", None)
            .await
            .expect("get")
            .header()
            .map(|h| h.revision())
            .expect("header");
        c.compact(rev, None).await.expect("compact");
    })
}

fn task(i: usize) -> (String, Option<Task>) {
    let id = format!("web.t{i}");
    let t = Task::running(&id, "/web", [ip(i)], &[&format!("g{}", i % 7)]);
    (id, Some(t))
}

#[test]
fn an_agent_cut_off_for_30s_resumes_from_its_revision() {
    let secs: u64 = std::env::var("GROUPD_ETCD_DISCONNECT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let etcd = etcd::Etcd::single("resume");
    write(&etcd.urls(), (0..50).map(task).collect());
    let proxy = Proxy::start(etcd.members[0].client);
    let agent = Agent::start(vec![proxy.url()], PREFIX);
    agent.wait(Duration::from_secs(10), "at 50 tasks", |s| {
        s.tasks.len() == 50
    });

    // Cut off; etcd changes meanwhile.
    proxy.cut();
    agent.wait(Duration::from_secs(15), "degraded", |s| {
        s.degraded.is_some()
    });
    let cut_at = Instant::now();
    let mut changes: Vec<_> = (50..60).map(task).collect();
    changes.extend((0..5).map(|i| (format!("web.t{i}"), None)));
    write(&etcd.urls(), changes);
    let want = ids(5..60);
    std::thread::sleep(Duration::from_secs(secs).saturating_sub(cut_at.elapsed()));
    let ranges = etcd.range_requests();
    let down = proxy.down_bytes.load(std::sync::atomic::Ordering::SeqCst);
    proxy.restore();
    let took = agent.wait(Duration::from_secs(15), "caught up", |s| {
        s.tasks.keys().cloned().collect::<BTreeSet<_>>() == want && s.degraded.is_none()
    });
    let after = etcd.range_requests();
    let resumed_bytes = proxy.down_bytes.load(std::sync::atomic::Ordering::SeqCst) - down;
    eprintln!(
        "[etcd_source] cut off {secs} s; caught up {took:?} after the reconnect, {resumed_bytes} bytes from etcd, {} range requests",
        after - ranges
    );
    assert!(
        ranges.is_finite() && ranges > 0.0,
        "etcd's Range counter: {ranges}"
    );
    assert_eq!(
        after, ranges,
        "the agent range-read the prefix after a reconnect"
    );
    let s = agent.seen();
    assert_eq!((s.snapshots, s.position.full_reads), (1, 1));

    // Compacted past the agent's revision: a fresh range read.
    proxy.cut();
    agent.wait(Duration::from_secs(15), "degraded again", |s| {
        s.degraded.is_some()
    });
    write(&etcd.urls(), (60..70).map(task).collect());
    compact(&etcd.urls());
    let ranges = etcd.range_requests();
    proxy.restore();
    let want = ids(5..70);
    agent.wait(Duration::from_secs(15), "re-read", |s| {
        s.tasks.keys().cloned().collect::<BTreeSet<_>>() == want && s.position.full_reads == 2
    });
    assert!(etcd.range_requests() > ranges);
    assert_eq!(agent.seen().snapshots, 2);
}

#[test]
fn tls_with_a_client_certificate() {
    let dir = common::GroupdDir::new("etcd-tls");
    let tls = etcd::Tls::make(&dir.0);
    let etcd = etcd::Etcd::single_tls("tls", &tls);
    let settings = |cert: bool| groupd::config::EtcdSettings {
        urls: etcd.urls(),
        prefix: PREFIX.into(),
        ca_file: Some(tls.ca.clone()),
        cert_file: cert.then(|| tls.client_cert.clone()),
        key_file: cert.then(|| tls.client_key.clone()),
        username: None,
        password_file: None,
    };
    // Written through groupd's own client (rustls, client certificate).
    runtime().block_on(async {
        let mut c = groupd::etcd::connect(&settings(true), 0)
            .await
            .expect("connect over TLS");
        let (id, t) = task(1);
        c.put(Keys::new(PREFIX).publisher(), "test", None)
            .await
            .expect("put over TLS");
        c.put(
            Keys::new(PREFIX).task(&id),
            groupd::etcd::encode(&t.expect("task")),
            None,
        )
        .await
        .expect("put over TLS");
    });
    let agent = Agent::start_with(settings(true));
    agent.wait(Duration::from_secs(10), "at 1 task over TLS", |s| {
        s.tasks.len() == 1
    });
    // Without a client certificate etcd refuses: degraded, nothing read.
    let refused = Agent::start_with(settings(false));
    refused.wait(
        Duration::from_secs(10),
        "degraded without a client certificate",
        |s| s.degraded.is_some() && s.tasks.is_empty(),
    );
    eprintln!(
        "[etcd_source] without a client certificate: {}",
        refused.seen().degraded.unwrap_or_default()
    );
}

#[test]
fn a_prefix_nobody_published_is_degraded_not_an_empty_view() {
    let etcd = etcd::Etcd::single("unpublished");
    runtime().block_on(async {
        let mut c = etcd_client::Client::connect(etcd.urls(), None)
            .await
            .expect("connect");
        let (id, t) = task(1);
        // A task key but no publisher mark: a first fill still under way.
        c.put(
            Keys::new(PREFIX).task(&id),
            groupd::etcd::encode(&t.expect("task")),
            None,
        )
        .await
        .expect("put");
    });
    let agent = Agent::start(etcd.urls(), PREFIX);
    agent.wait(Duration::from_secs(10), "degraded", |s| {
        s.degraded
            .as_deref()
            .is_some_and(|d| d.contains("no published view"))
    });
    assert_eq!(agent.seen().snapshots, 0, "no view may be sent");
    write(&etcd.urls(), vec![task(2)]);
    agent.wait(Duration::from_secs(15), "published", |s| s.tasks.len() == 2);
}

#[test]
fn user_and_password_from_a_file() {
    let etcd = etcd::Etcd::single("auth");
    write(&etcd.urls(), vec![task(1)]);
    let dir = common::GroupdDir::new("etcd-auth");
    runtime().block_on(async {
        let mut c = etcd_client::Client::connect(etcd.urls(), None)
            .await
            .expect("connect");
        c.user_add("root", "rootpw", None).await.expect("root");
        c.user_grant_role("root", "root").await.expect("root role");
        c.role_add("groupd-agent").await.expect("role");
        c.role_grant_permission(
            "groupd-agent",
            etcd_client::Permission::read(format!("{PREFIX}/")).with_prefix(),
        )
        .await
        .expect("grant");
        c.user_add("agent", "s3cret", None).await.expect("user");
        c.user_grant_role("agent", "groupd-agent")
            .await
            .expect("user role");
        c.auth_enable().await.expect("auth enable");
    });
    let settings = |password: &str| {
        let file = dir.0.join(format!("pw-{password}"));
        // A trailing newline, as editors write it, is not the password.
        std::fs::write(&file, format!("{password}\n")).expect("password file");
        groupd::config::EtcdSettings {
            urls: etcd.urls(),
            prefix: PREFIX.into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: Some("agent".into()),
            password_file: Some(file),
        }
    };
    let agent = Agent::start_with(settings("s3cret"));
    agent.wait(Duration::from_secs(10), "at 1 task as user agent", |s| {
        s.tasks.len() == 1
    });
    let refused = Agent::start_with(settings("wrong"));
    refused.wait(
        Duration::from_secs(10),
        "degraded with a wrong password",
        |s| s.degraded.is_some(),
    );
    let why = refused.seen().degraded.unwrap_or_default();
    assert!(!why.contains("wrong"), "the password is never shown: {why}");
    eprintln!("[etcd_source] wrong password: {why}");
}
