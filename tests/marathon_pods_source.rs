//! groupd's Marathon source against the simulated Marathon, for pods:
//! pod instances in the snapshot (one endpoint per instance, whatever its
//! container count), pods appearing and going by events, and a Marathon
//! without pods (404 on `/v2/pods`). Plain 127.0.0.1 sockets, no root.

use std::net::IpAddr;
use std::time::Duration;

use groupd::config::{GroupsConfig, SourceConfig, SourceKind};
use groupd::model::ClusterView;
use groupd::source::http::Timeouts;
use groupd::source::marathon::{run_with, Tuning};
use groupd::source::SourceUpdate;
use groupd_sim::{AppSpec, MarathonSim, PodInstanceSpec, PodSpec, SimHandle, SimOptions, TaskSpec};
use tokio::sync::mpsc;

fn sim(pods: bool) -> SimHandle {
    MarathonSim::start(
        "127.0.0.1:0".parse().expect("addr"),
        SimOptions {
            keepalive: Duration::from_millis(100),
            pods,
            ..SimOptions::default()
        },
    )
    .expect("start the simulator")
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

fn config(url: String) -> SourceConfig {
    SourceConfig {
        kind: SourceKind::Marathon,
        urls: vec![url],
        path: None,
        resync_interval: std::time::Duration::from_secs(300),
        username: None,
        password_file: None,
        token_file: None,
        ca_file: None,
        tls_verify: true,
        prefix: "/groupd/v1".into(),
        cert_file: None,
        key_file: None,
    }
}

fn tuning() -> Tuning {
    Tuning {
        timeouts: Timeouts {
            connect: Duration::from_millis(500),
            headers: Duration::from_millis(1000),
            body: Duration::from_millis(1000),
            stall: Duration::from_secs(2),
            max_body: 1024 * 1024,
        },
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(80),
        hint_delay: Duration::from_millis(20),
        hint_min_gap: Duration::from_millis(50),
        max_buffered: 1000,
        version_fetches: 2,
        ..Tuning::default()
    }
}

fn start(url: String) -> mpsc::Receiver<SourceUpdate> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run_with(config(url), GroupsConfig::default(), tx, tuning()));
    rx
}

async fn next(rx: &mut mpsc::Receiver<SourceUpdate>) -> SourceUpdate {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an update in time")
        .expect("the source is running")
}

async fn snapshot(rx: &mut mpsc::Receiver<SourceUpdate>) -> ClusterView {
    match next(rx).await {
        SourceUpdate::Snapshot(view) => view,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

async fn silence(rx: &mut mpsc::Receiver<SourceUpdate>, for_: Duration) {
    if let Ok(Some(update)) = tokio::time::timeout(for_, rx.recv()).await {
        panic!("expected nothing, got {update:?}");
    }
}

/// Nothing changes for `for_`: app deployments end with
/// `deployment_success`, which asks for a resync; that snapshot must be the
/// view already sent.
async fn unchanged(rx: &mut mpsc::Receiver<SourceUpdate>, view: &ClusterView, for_: Duration) {
    let until = tokio::time::Instant::now() + for_;
    while let Ok(Some(update)) = tokio::time::timeout_at(until, rx.recv()).await {
        match update {
            SourceUpdate::Snapshot(again) if again == *view => {}
            other => panic!("expected no change, got {other:?}"),
        }
    }
}

fn groups_of(view: &ClusterView, id: &str) -> Vec<String> {
    view.tasks[id]
        .groups
        .keys()
        .map(|g| g.to_string())
        .collect()
}

fn ips_of(view: &ClusterView, id: &str) -> Vec<IpAddr> {
    view.tasks[id].ips.iter().copied().collect()
}

fn pod(id: &str, groups: &str, instances: Vec<PodInstanceSpec>) -> PodSpec {
    PodSpec {
        id: id.into(),
        network_labels: [("network-groups".to_string(), groups.to_string())].into(),
        containers: vec!["app".into(), "sidecar".into()],
        instances,
        ..PodSpec::default()
    }
}

fn instance(id: &str, ips: &[&str]) -> PodInstanceSpec {
    PodInstanceSpec {
        id: Some(id.into()),
        ips: ips.iter().map(|i| ip(i)).collect(),
        agent: "a1".into(),
        host: None,
    }
}

fn app(id: &str, group: &str, task_id: &str, task_ip: &str) -> AppSpec {
    AppSpec {
        id: id.into(),
        groups: vec![group.into()],
        tasks: vec![TaskSpec {
            id: Some(task_id.into()),
            ips: vec![ip(task_ip)],
            agent: "a1".into(),
            host: None,
        }],
        ..AppSpec::default()
    }
}

#[tokio::test]
async fn snapshot_holds_one_endpoint_per_pod_instance() {
    let m = sim(true);
    m.deploy_app(app("/web", "web", "web.1", "10.233.0.1"))
        .expect("app");
    m.deploy_pod(pod(
        "/db-pod",
        "web, db",
        vec![instance(
            "db-pod.instance-1",
            &["10.233.0.5", "fd00:233::5"],
        )],
    ))
    .expect("pod");
    let mut rx = start(m.url());
    let view = snapshot(&mut rx).await;
    assert_eq!(
        view.tasks.keys().map(|k| &**k).collect::<Vec<_>>(),
        ["db-pod.instance-1", "web.1"],
        "the instance is the task; its two containers add none"
    );
    let t = &view.tasks["db-pod.instance-1"];
    assert!(t.is_endpoint(), "{t:?}");
    assert_eq!(&*t.app, "/db-pod");
    assert_eq!(groups_of(&view, "db-pod.instance-1"), ["db", "web"]);
    assert_eq!(
        ips_of(&view, "db-pod.instance-1"),
        [ip("10.233.0.5"), ip("fd00:233::5")]
    );
    assert!(view.conflicts.is_empty(), "{:?}", view.conflicts);
}

#[tokio::test]
async fn pods_come_and_go_by_events() {
    let m = sim(true);
    m.deploy_app(app("/web", "web", "web.1", "10.233.0.1"))
        .expect("app");
    let mut rx = start(m.url());
    assert_eq!(snapshot(&mut rx).await.tasks.len(), 1);

    // pod_created_event + a status update per container: one re-read, one
    // transaction with the instance.
    m.deploy_pod(pod(
        "/db-pod",
        "db",
        vec![instance("db-pod.instance-1", &["10.233.0.5"])],
    ))
    .expect("pod");
    let view = snapshot(&mut rx).await;
    assert!(view.tasks["db-pod.instance-1"].is_endpoint());
    assert_eq!(groups_of(&view, "db-pod.instance-1"), ["db"]);
    silence(&mut rx, Duration::from_millis(300)).await;

    // A second instance (scaling): its containers' status updates.
    m.add_pod_instance("/db-pod", instance("db-pod.instance-2", &["10.233.0.6"]))
        .expect("instance");
    let view = snapshot(&mut rx).await;
    assert_eq!(ips_of(&view, "db-pod.instance-2"), [ip("10.233.0.6")]);
    assert_eq!(view.tasks.len(), 3);

    // One instance killed: TASK_KILLED per container; it goes, the other stays.
    m.remove_pod_instance("db-pod.instance-1").expect("kill");
    let view = snapshot(&mut rx).await;
    assert!(!view.tasks.contains_key("db-pod.instance-1"));
    assert!(view.tasks["db-pod.instance-2"].is_endpoint());

    // Its address reused by an app task: never two owners at once.
    m.deploy_app(app("/cache", "db", "cache.1", "10.233.0.5"))
        .expect("reuse");
    match next(&mut rx).await {
        SourceUpdate::Upsert(t) => assert_eq!(&*t.id, "cache.1"),
        other => panic!("{other:?}"),
    }
    let view = snapshot(&mut rx).await; // deployment_success asks for a resync
    assert!(view.tasks["cache.1"].is_endpoint() && view.conflicts.is_empty());

    // The pod deleted: every instance goes, the apps stay.
    m.remove_pod("/db-pod").expect("delete");
    let view = snapshot(&mut rx).await;
    assert_eq!(
        view.tasks.keys().map(|k| &**k).collect::<Vec<_>>(),
        ["cache.1", "web.1"]
    );
    assert!(view.conflicts.is_empty());
    unchanged(&mut rx, &view, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_marathon_without_pods_still_serves_its_apps() {
    let m = sim(false);
    m.deploy_app(app("/web", "web", "web.1", "10.233.0.1"))
        .expect("app");
    let mut rx = start(m.url());
    let view = snapshot(&mut rx).await;
    assert_eq!(groups_of(&view, "web.1"), ["web"]);
    // Events keep working, and no degraded report shows up.
    m.deploy_app(app("/db", "db", "db.1", "10.233.0.2"))
        .expect("app");
    match next(&mut rx).await {
        SourceUpdate::Upsert(t) => assert_eq!(&*t.id, "db.1"),
        other => panic!("{other:?}"),
    }
    let view = snapshot(&mut rx).await; // deployment_success
    assert_eq!(view.tasks.len(), 2);
    unchanged(&mut rx, &view, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_pod_resync_after_a_missed_event_finds_its_instances() {
    // The pod exists before the source starts and changes while it is
    // connected without any event telling it (an unfiltered stream losing
    // frames): the next snapshot still has it.
    let m = sim(true);
    m.deploy_pod(pod(
        "/p",
        "g",
        vec![instance("p.instance-1", &["10.233.0.9"])],
    ))
    .expect("pod");
    let (tx, mut rx) = mpsc::channel(64);
    let mut cfg = config(m.url());
    cfg.resync_interval = std::time::Duration::from_secs(1);
    tokio::spawn(run_with(cfg, GroupsConfig::default(), tx, tuning()));
    assert!(snapshot(&mut rx).await.tasks["p.instance-1"].is_endpoint());
    let view = snapshot(&mut rx).await; // resync_interval
    assert_eq!(groups_of(&view, "p.instance-1"), ["g"]);
}
