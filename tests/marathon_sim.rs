//! The simulated Marathon (`groupd_sim`): what it serves parses with
//! groupd's own parser, its event stream has the wire shape of the real
//! captures, and every misbehaviour does what it says. Plain 127.0.0.1
//! sockets, no namespaces, no root.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use groupd::config::GroupsConfig;
use groupd::model::{GroupName, NotEnforced};
use groupd::source::document::parse_document;
use groupd::source::wire::marathon::{App, VersionCache};
use groupd_sim::{
    AppSpec, Auth, Endpoint, MarathonSim, MisbehaveRule, Mode, Network, SimHandle, SimOptions,
    TaskSpec, VersionChange,
};
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/marathon");
const TIMEOUT: Duration = Duration::from_secs(5);

fn start(options: SimOptions) -> SimHandle {
    MarathonSim::start("127.0.0.1:0".parse().unwrap(), options).expect("start the simulator")
}

fn sim() -> SimHandle {
    start(SimOptions {
        keepalive: Duration::from_millis(50),
        ..SimOptions::default()
    })
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn task(ips: &[&str], agent: &str) -> TaskSpec {
    TaskSpec {
        ips: ips.iter().map(|i| ip(i)).collect(),
        agent: agent.into(),
        ..TaskSpec::default()
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    tcp
}

/// Read status line and headers.
fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').expect("header with a colon");
        headers.push((name.to_string(), value.trim().to_string()));
    }
    (status, headers)
}

/// One request on its own connection (`Connection: close`).
fn request(addr: SocketAddr, method: &str, target: &str, headers: &[&str], body: &str) -> Resp {
    let mut tcp = connect(addr);
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    tcp.write_all(text.as_bytes()).unwrap();
    let mut reader = BufReader::new(tcp);
    let (status, headers) = read_head(&mut reader);
    let mut body = Vec::new();
    reader.read_to_end(&mut body).expect("body");
    Resp {
        status,
        headers,
        body,
    }
}

fn get(addr: SocketAddr, target: &str) -> Resp {
    request(addr, "GET", target, &[], "")
}

/// A client of `/v2/events` that decodes the chunked body.
struct Events {
    reader: BufReader<TcpStream>,
    /// Every byte of the body after de-chunking, for framing checks.
    raw: Vec<u8>,
}

impl Events {
    fn open(addr: SocketAddr, query: &str) -> Events {
        let mut tcp = connect(addr);
        write!(
            tcp,
            "GET /v2/events{query} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(tcp);
        let (status, headers) = read_head(&mut reader);
        assert_eq!(status, 200);
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"));
        assert!(header("content-type")
            .unwrap_or_default()
            .starts_with("text/event-stream"));
        Events {
            reader,
            raw: Vec::new(),
        }
    }

    /// The next chunk; `None` at EOF (or a reset).
    fn chunk(&mut self) -> Option<Vec<u8>> {
        let mut size = String::new();
        match self.reader.read_line(&mut size) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let len = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        let mut data = vec![0; len + 2];
        self.reader.read_exact(&mut data).ok()?;
        assert_eq!(&data[len..], b"\r\n", "chunk ends with CRLF");
        data.truncate(len);
        self.raw.extend_from_slice(&data);
        Some(data)
    }

    /// The next event frame (keep-alives skipped): (type, data).
    fn event(&mut self) -> Option<(String, String)> {
        loop {
            let chunk = self.chunk()?;
            if chunk == b"\r\n" {
                continue;
            }
            let text = String::from_utf8(chunk).expect("UTF-8 frame");
            let mut event_type = String::new();
            let mut data = Vec::new();
            for line in text.split("\r\n") {
                if let Some(t) = line.strip_prefix("event: ") {
                    event_type = t.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push(d);
                }
            }
            return Some((event_type, data.join("\n")));
        }
    }

    /// Frames up to and including the first of type `last`.
    fn until(&mut self, last: &str) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while let Some((t, data)) = self.event() {
            let value = serde_json::from_str(&data).expect("JSON data");
            let done = t == last;
            out.push((t, value));
            if done {
                return out;
            }
        }
        panic!("stream ended before {last}: {out:?}");
    }
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

/// The `data:` JSON of the first frame of `event_type` in a capture.
fn captured(file: &str, event_type: &str) -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/events/{file}")).unwrap();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim_end() == format!("event: {event_type}") {
            let data = lines.next().unwrap().trim_end();
            return serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        }
    }
    panic!("no {event_type} in {file}");
}

/// An event of the Marathon 1.10 event-bus docs.
fn documented(event_type: &str) -> Value {
    let text = std::fs::read_to_string(format!(
        "{FIXTURES}/events/event-bus-doc-examples-1.10.jsonl"
    ))
    .unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["eventType"] == event_type)
        .unwrap_or_else(|| panic!("no {event_type} documented"))
}

#[test]
fn served_apps_parse_with_groupds_parser() {
    let sim = sim();
    sim.deploy_app(AppSpec {
        id: "/prod/web".into(),
        groups: vec!["frontend".into(), "public".into()],
        tasks: vec![
            task(&["10.233.1.2"], "agent-1"),
            task(&["10.233.1.3", "fd00:233::3"], "agent-2"),
        ],
        ..AppSpec::default()
    })
    .unwrap();
    sim.deploy_app(AppSpec {
        id: "db".into(),
        labels: [(
            "network-groups".to_string(),
            "backend, frontend".to_string(),
        )]
        .into(),
        network: Network::Networks1_5 {
            labels: Default::default(),
        },
        tasks: vec![TaskSpec {
            id: Some("db.instance-1".into()),
            ..task(&["10.233.2.2"], "agent-1")
        }],
        ..AppSpec::default()
    })
    .unwrap();
    sim.deploy_app(AppSpec {
        id: "/host-app".into(),
        network: Network::Host,
        tasks: vec![task(&["10.233.0.1"], "agent-1")],
        ..AppSpec::default()
    })
    .unwrap();
    sim.deploy_app(AppSpec {
        id: "/bridged".into(),
        network: Network::DockerBridge,
        tasks: vec![task(&["172.17.0.2"], "agent-1")],
        ..AppSpec::default()
    })
    .unwrap();
    let staging = sim
        .deploy_app(AppSpec {
            id: "/later".into(),
            groups: vec!["backend".into()],
            tasks: vec![task(&[], "agent-2")],
            ..AppSpec::default()
        })
        .unwrap();

    let resp = get(sim.addr(), "/v2/apps?embed=apps.tasks&embed=apps.counts");
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let view = parse_document(
        &resp.body,
        &GroupsConfig::default(),
        &mut VersionCache::default(),
    )
    .expect("groupd parses the simulator's /v2/apps");
    assert_eq!(view.tasks.len(), 6);
    let web: Vec<_> = view
        .tasks
        .values()
        .filter(|t| &*t.app == "/prod/web")
        .collect();
    assert_eq!(web.len(), 2);
    for t in &web {
        assert!(t.id.starts_with("prod_web."), "≤1.4 task id form: {}", t.id);
        let groups: Vec<&str> = t.groups.keys().map(|g| g.as_str()).collect();
        assert_eq!(groups, ["frontend", "public"]);
        assert!(t.is_endpoint());
    }
    let both: BTreeSet<IpAddr> = web.iter().flat_map(|t| t.ips.iter().copied()).collect();
    assert_eq!(
        both,
        [ip("10.233.1.2"), ip("10.233.1.3"), ip("fd00:233::3")].into()
    );
    let db = &view.tasks["db.instance-1"];
    assert_eq!(db.agent.as_deref(), Some("agent-1"));
    let groups: Vec<&str> = db.groups.keys().map(|g| g.as_str()).collect();
    assert_eq!(groups, ["backend", "frontend"], "1.5 app: groups by label");
    let by_app = |app: &str| view.tasks.values().find(|t| &*t.app == app).unwrap();
    assert_eq!(
        by_app("/host-app").not_enforced,
        Some(NotEnforced::HostNetwork)
    );
    assert_eq!(
        by_app("/bridged").not_enforced,
        Some(NotEnforced::NatBridge)
    );
    let later = &view.tasks[staging.tasks[0].as_str()];
    assert!(later.ips.is_empty() && !later.is_endpoint());

    // Without embed there are no tasks; /v2/tasks lists them all.
    let bare = get(sim.addr(), "/v2/apps").json();
    assert!(bare["apps"][0].get("tasks").is_none());
    assert_eq!(
        get(sim.addr(), "/v2/tasks").json()["tasks"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    // The staging task has no ipAddresses key at all, like Marathon.
    let single = get(sim.addr(), "/v2/apps/later").json();
    assert!(single["app"]["tasks"][0].get("ipAddresses").is_none());
    assert_eq!(single["app"]["tasks"][0]["state"], "TASK_STAGING");
}

#[test]
fn event_stream_is_crlf_framed_with_keepalives_and_attaches_first() {
    let sim = sim();
    let mut events = Events::open(sim.addr(), "");
    let (first, data) = events.event().unwrap();
    assert_eq!(first, "event_stream_attached");
    let attached: Value = serde_json::from_str(&data).unwrap();
    let fixture = captured(
        "sse-single-event-crlf.async-worker.txt",
        "event_stream_attached",
    );
    assert_eq!(keys(&attached), keys(&fixture));
    assert_eq!(attached["remoteAddress"], "127.0.0.1");
    // Keep-alives are bare CRLF chunks, every 50 ms here.
    let mut keepalives = 0;
    while keepalives < 3 {
        assert_eq!(events.chunk().unwrap(), b"\r\n");
        keepalives += 1;
    }
    sim.emit_raw("custom_event", "{\"a\":1}");
    let (t, d) = events.event().unwrap();
    assert_eq!((t.as_str(), d.as_str()), ("custom_event", "{\"a\":1}"));
    // Every line of the body ends in CRLF; frames are `event:`, `data:`, blank.
    let text = String::from_utf8(events.raw.clone()).unwrap();
    assert!(text.starts_with("event: event_stream_attached\r\ndata: {"));
    assert!(!text.replace("\r\n", "").contains('\n'), "{text:?}");
    assert!(text.ends_with("\r\n\r\n"));
    assert!(!text.contains("id:"));
}

#[test]
fn deploy_emits_events_in_the_fixture_shapes() {
    let sim = sim();
    let mut events = Events::open(sim.addr(), "");
    assert_eq!(events.event().unwrap().0, "event_stream_attached");
    let change = sim
        .deploy_app(AppSpec {
            id: "/web".into(),
            groups: vec!["frontend".into()],
            tasks: vec![task(&["10.233.1.2", "fd00:233::2"], "agent-1")],
            ..AppSpec::default()
        })
        .unwrap();
    let frames = events.until("deployment_success");
    let types: Vec<&str> = frames.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "api_post_event",
            "group_change_success",
            "deployment_info",
            "status_update_event",
            "deployment_step_success",
            "deployment_success"
        ]
    );
    // Each frame's eventType is its SSE event name.
    for (t, v) in &frames {
        assert_eq!(v["eventType"], t.as_str());
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    let status = &frames[3].1;
    // The real stream capture's fields, plus ipAddresses (Marathon 0.14+).
    let mut expected = keys(&captured(
        "sse-stream-docs-example.marathon-docs.txt",
        "status_update_event",
    ));
    expected.insert("ipAddresses".into());
    assert_eq!(keys(status), expected);
    assert_eq!(status["taskId"], change.tasks[0].as_str());
    assert_eq!(status["taskStatus"], "TASK_RUNNING");
    assert_eq!(status["appId"], "/web");
    assert_eq!(status["slaveId"], "agent-1");
    assert_eq!(
        status["ipAddresses"],
        serde_json::json!([{"ipAddress": "10.233.1.2", "protocol": "IPv4"},
                           {"ipAddress": "fd00:233::2", "protocol": "IPv6"}])
    );
    let app_version = frames[0].1["appDefinition"]["version"].clone();
    assert_eq!(status["version"], app_version);
    for (i, name) in [(0, "api_post_event"), (1, "group_change_success")] {
        assert_eq!(keys(&frames[i].1), keys(&documented(name)), "{name}");
    }
    for (i, name) in [(2, "deployment_info"), (4, "deployment_step_success")] {
        let doc = documented(name);
        assert_eq!(keys(&frames[i].1), keys(&doc), "{name}");
        assert_eq!(
            keys(&frames[i].1["plan"]),
            keys(&doc["plan"]),
            "{name} plan"
        );
    }
    assert!(keys(&frames[5].1).is_superset(&keys(&documented("deployment_success"))));
    // The posted definition is an app groupd reads, with the groups.
    let app: App = serde_json::from_value(frames[0].1["appDefinition"].clone()).unwrap();
    assert_eq!(
        &*app
            .config(&groupd::config::GroupsConfig::default())
            .ip_groups,
        [GroupName::new("frontend")]
    );
    // Sequence numbers: the attach event was 1, the deploy 2..=7.
    assert_eq!((change.first_seq, change.last_seq), (2, 7));

    // Removing the app: kills, then app_terminated_event (fixture shape).
    sim.remove_app("/web").unwrap();
    let frames = events.until("deployment_success");
    let terminated = frames
        .iter()
        .find(|(t, _)| t == "app_terminated_event")
        .unwrap();
    assert_eq!(
        keys(&terminated.1),
        keys(&documented("app_terminated_event"))
    );
    assert_eq!(terminated.1["appId"], "/web");
    let killed = frames
        .iter()
        .find(|(t, _)| t == "status_update_event")
        .unwrap();
    assert_eq!(killed.1["taskStatus"], "TASK_KILLED");
    assert_eq!(
        get(sim.addr(), "/v2/apps").json()["apps"],
        serde_json::json!([])
    );
}

#[test]
fn task_changes_update_the_state_and_emit_status_updates() {
    let sim = sim();
    let mut events = Events::open(sim.addr(), "?event_type=status_update_event");
    let app = sim
        .deploy_app(AppSpec {
            id: "/web".into(),
            tasks: vec![
                TaskSpec {
                    id: Some("web.1".into()),
                    ..task(&[], "agent-1")
                },
                TaskSpec {
                    id: Some("web.2".into()),
                    ..task(&["10.233.1.2"], "agent-1")
                },
            ],
            ..AppSpec::default()
        })
        .unwrap();
    assert_eq!(app.tasks, ["web.1", "web.2"]);
    // Filtered: neither the attach event nor the deployment events.
    let (t, first) = events.event().unwrap();
    assert_eq!(t, "status_update_event");
    assert!(first.contains("\"web.2\""));

    sim.set_task_ips("web.1", vec![ip("10.233.1.9")]).unwrap();
    let (_, data) = events.event().unwrap();
    let v: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(
        (v["taskId"].as_str(), v["taskStatus"].as_str()),
        (Some("web.1"), Some("TASK_RUNNING"))
    );
    assert_eq!(v["ipAddresses"][0]["ipAddress"], "10.233.1.9");
    let tasks = get(sim.addr(), "/v2/apps/web/tasks").json();
    assert_eq!(tasks["tasks"][0]["state"], "TASK_RUNNING");
    assert!(tasks["tasks"][0]["startedAt"].is_string());

    sim.lose_task("web.1").unwrap();
    sim.kill_task("web.2").unwrap();
    let lost: Value = serde_json::from_str(&events.event().unwrap().1).unwrap();
    let killed: Value = serde_json::from_str(&events.event().unwrap().1).unwrap();
    assert_eq!(lost["taskStatus"], "TASK_LOST");
    assert_eq!(killed["taskStatus"], "TASK_KILLED");
    assert_eq!(
        get(sim.addr(), "/v2/tasks").json()["tasks"],
        serde_json::json!([])
    );
    assert!(sim.kill_task("web.2").is_err(), "already gone");
    assert!(
        sim.deploy_app(AppSpec {
            id: "/web".into(),
            ..AppSpec::default()
        })
        .is_err(),
        "the app still exists"
    );
}

#[test]
fn rolling_new_version_keeps_task_versions_and_serves_every_version() {
    let sim = sim();
    let old = sim
        .deploy_app(AppSpec {
            id: "/web".into(),
            groups: vec!["old".into()],
            tasks: vec![task(&["10.233.1.2"], "agent-1")],
            ..AppSpec::default()
        })
        .unwrap();
    let v1 = get(sim.addr(), "/v2/apps/web").json()["app"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    let mut events = Events::open(sim.addr(), "");
    sim.wait_sse_clients(1, TIMEOUT);
    let new = sim
        .new_version(
            "/web",
            VersionChange {
                groups: Some(vec!["new".into()]),
                tasks: vec![task(&["10.233.1.3"], "agent-1")],
                ..VersionChange::default()
            },
        )
        .unwrap();
    let frames = events.until("status_update_event");
    assert!(frames.iter().all(|(t, _)| t != "deployment_success"));

    let app = get(sim.addr(), "/v2/apps/web").json()["app"].clone();
    let v2 = app["version"].as_str().unwrap().to_string();
    assert!(v2 > v1);
    let version_of = |id: &str| {
        app["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()["version"]
            .clone()
    };
    assert_eq!(version_of(&old.tasks[0]), v1.as_str());
    assert_eq!(version_of(&new.tasks[0]), v2.as_str());
    assert_eq!(app["deployments"].as_array().unwrap().len(), 1);
    let versions = get(sim.addr(), "/v2/apps/web/versions").json();
    assert_eq!(versions["versions"], serde_json::json!([v2, v1]));
    let first = get(sim.addr(), &format!("/v2/apps/web/versions/{v1}"));
    assert_eq!(first.status, 200);
    assert_eq!(
        first.json()["ipAddress"]["groups"],
        serde_json::json!(["old"])
    );
    assert_eq!(get(sim.addr(), "/v2/apps/web/versions/nope").status, 404);

    // groupd, told the old version, gives each task its own version's groups.
    let mut cache = VersionCache::default();
    cache.learn(
        &serde_json::from_slice::<App>(&first.body).unwrap(),
        &groupd::config::GroupsConfig::default(),
    );
    let doc = get(sim.addr(), "/v2/apps?embed=apps.tasks");
    let view = parse_document(&doc.body, &GroupsConfig::default(), &mut cache).unwrap();
    let groups = |id: &str| -> Vec<String> {
        view.tasks[id]
            .groups
            .keys()
            .map(|g| g.to_string())
            .collect()
    };
    assert_eq!(groups(&old.tasks[0]), ["old"]);
    assert_eq!(groups(&new.tasks[0]), ["new"]);

    // The deployment finishes when the last old task is gone.
    sim.kill_task(&old.tasks[0]).unwrap();
    let frames = events.until("deployment_success");
    assert_eq!(frames[0].1["taskStatus"], "TASK_KILLED");
    let app = get(sim.addr(), "/v2/apps/web").json()["app"].clone();
    assert_eq!(app["deployments"], serde_json::json!([]));

    // Scaling makes a version too, and kills the youngest first.
    let scaled = sim
        .scale("/web", 2, vec![task(&["10.233.1.4"], "agent-2")])
        .unwrap();
    let down = sim.scale("/web", 1, Vec::new()).unwrap();
    assert_eq!(down.tasks, scaled.tasks);
    let versions = get(sim.addr(), "/v2/apps/web/versions").json();
    assert_eq!(versions["versions"].as_array().unwrap().len(), 4);
}

#[test]
fn fixtures_load_and_serve_what_they_describe() {
    let sim = sim();
    for name in [
        "apps-embed-tasks-1.5-container-bridge.marathon-lb.json",
        "apps-embed-tasks-1.x-docker-bridge-ipaddress-null.marathon-lb.json",
    ] {
        let bytes = std::fs::read(format!("{FIXTURES}/apps/{name}")).unwrap();
        sim.load_fixture(&bytes).unwrap();
        let config = GroupsConfig::default();
        let expected = parse_document(&bytes, &config, &mut VersionCache::default()).unwrap();
        let served = get(sim.addr(), "/v2/apps?embed=apps.tasks");
        let view = parse_document(&served.body, &config, &mut VersionCache::default()).unwrap();
        assert_eq!(view.tasks, expected.tasks, "{name}");
    }
    // A bare app definition (no tasks, no version): served with one.
    let bare = "app-0.14.0-ipaddress-groups-labels-discovery.marathon-docs.json";
    let bytes = std::fs::read(format!("{FIXTURES}/apps/{bare}")).unwrap();
    assert_eq!(sim.load_fixture(&bytes).unwrap(), 1);
    let app = get(sim.addr(), "/v2/apps/foo").json()["app"].clone();
    assert_eq!(app["ipAddress"]["groups"], serde_json::json!(["dev"]));
    assert_eq!(app["tasks"], serde_json::json!([]));
    let versions = get(sim.addr(), "/v2/apps/foo/versions").json();
    assert_eq!(versions["versions"], serde_json::json!([app["version"]]));
    // /v2/groups documents: nested groups flatten into apps.
    let dump = "groups-dump-1.5.5-100-apps-host-network.marathon-benchmark.json";
    let bytes = std::fs::read(format!("{FIXTURES}/apps/{dump}")).unwrap();
    assert_eq!(sim.load_fixture(&bytes).unwrap(), 100);
    assert!(sim.load_fixture(b"{\"not\": \"apps\"}").is_err());
    assert!(sim.load_fixture(b"garbage").is_err());
}

#[test]
fn event_type_filters_and_write_observation() {
    let sim = sim();
    let writes = sim.watch_writes();
    let mut events = Events::open(
        sim.addr(),
        "?event_type=app_terminated_event&event_type=deployment_success",
    );
    assert!(sim.wait_sse_clients(1, TIMEOUT));
    sim.deploy_app(AppSpec {
        id: "/a".into(),
        tasks: vec![task(&["10.233.1.2"], "x")],
        ..AppSpec::default()
    })
    .unwrap();
    let change = sim.remove_app("/a").unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(events.event().unwrap().0);
    }
    assert_eq!(
        seen,
        [
            "deployment_success",
            "app_terminated_event",
            "deployment_success"
        ]
    );
    let record = sim.wait_written(change.last_seq, TIMEOUT).unwrap();
    assert_eq!(record.seq, change.last_seq);
    assert_eq!(record.event_type, "deployment_success");
    assert_eq!(sim.last_event_written_at().unwrap().seq, change.last_seq);
    let observed: Vec<u64> = writes.try_iter().map(|w| w.seq).collect();
    assert_eq!(observed.len(), 3);
    assert_eq!(observed.last(), Some(&change.last_seq));
    assert_eq!(sim.events_sent(), 3);
    assert!(sim
        .wait_written(change.last_seq + 1, Duration::from_millis(50))
        .is_none());
}

#[test]
fn hang_reads_the_request_and_never_answers() {
    let sim = sim();
    sim.misbehave_on(Endpoint::Apps, Mode::Hang);
    let mut tcp = connect(sim.addr());
    tcp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    tcp.write_all(b"GET /v2/apps HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 16];
    let err = tcp.read(&mut buf).expect_err("no answer, no close");
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    // Other endpoints are unaffected; after behave() the apps answer again.
    assert_eq!(get(sim.addr(), "/v2/tasks").status, 200);
    sim.behave();
    assert_eq!(get(sim.addr(), "/v2/apps").status, 200);
}

#[test]
fn drop_stream_cuts_open_and_new_streams() {
    let sim = sim();
    let mut open = Events::open(sim.addr(), "");
    assert_eq!(open.event().unwrap().0, "event_stream_attached");
    sim.misbehave(Mode::DropStream { after_events: 0 });
    let started = Instant::now();
    assert!(open.event().is_none(), "the stream is cut");
    assert!(started.elapsed() < Duration::from_secs(2));
    // JSON endpoints ignore DropStream.
    assert_eq!(get(sim.addr(), "/v2/apps").status, 200);

    // After N events: the attach event plus one more.
    sim.behave();
    sim.misbehave_on(Endpoint::Events, Mode::DropStream { after_events: 2 });
    let mut cut = Events::open(sim.addr(), "");
    assert!(sim.wait_sse_clients(1, TIMEOUT));
    for i in 0..3 {
        sim.emit_raw("tick", &i.to_string());
    }
    assert_eq!(cut.event().unwrap().0, "event_stream_attached");
    assert_eq!(cut.event().unwrap(), ("tick".to_string(), "0".to_string()));
    assert!(cut.event().is_none());
}

#[test]
fn status_modes_answer_with_the_code_for_the_given_times() {
    let sim = sim();
    for code in [503u16, 500, 401] {
        sim.misbehave_rule(MisbehaveRule {
            endpoint: Some(Endpoint::Apps),
            mode: Mode::Status(code),
            times: Some(1),
        });
        let resp = get(sim.addr(), "/v2/apps?embed=apps.tasks");
        assert_eq!(resp.status, code);
        assert!(resp.json()["message"].is_string());
        assert_eq!(resp.header("www-authenticate").is_some(), code == 401);
        assert_eq!(get(sim.addr(), "/v2/apps").status, 200, "used up");
    }
    // On the event stream too, and everywhere when global.
    sim.misbehave(Mode::Status(503));
    let mut tcp = connect(sim.addr());
    tcp.write_all(b"GET /v2/events HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    let (status, _) = read_head(&mut BufReader::new(tcp));
    assert_eq!(status, 503);
    assert_eq!(get(sim.addr(), "/ping").status, 503);
    assert_eq!(
        get(sim.addr(), "/_sim/stats").status,
        200,
        "control never misbehaves"
    );
}

#[test]
fn garbage_is_not_json_and_not_sse() {
    let sim = sim();
    sim.misbehave(Mode::Garbage);
    let resp = get(sim.addr(), "/v2/apps?embed=apps.tasks");
    assert_eq!(resp.status, 200);
    assert!(serde_json::from_slice::<Value>(&resp.body).is_err());
    assert!(parse_document(
        &resp.body,
        &GroupsConfig::default(),
        &mut VersionCache::default()
    )
    .is_err());
    let mut events = Events::open(sim.addr(), "");
    let chunk = events.chunk().unwrap();
    assert!(!chunk.starts_with(b"event:") && !chunk.starts_with(b"data:"));
    assert!(events.chunk().is_none(), "then closed");
}

#[test]
fn truncated_announces_more_than_it_sends() {
    let sim = sim();
    sim.deploy_app(AppSpec {
        id: "/web".into(),
        tasks: vec![task(&["10.233.1.2"], "a")],
        ..AppSpec::default()
    })
    .unwrap();
    sim.misbehave_on(Endpoint::Apps, Mode::Truncated);
    let resp = get(sim.addr(), "/v2/apps?embed=apps.tasks");
    let declared: usize = resp.header("content-length").unwrap().parse().unwrap();
    assert_eq!(resp.status, 200);
    assert!(
        resp.body.len() < declared,
        "{} < {declared}",
        resp.body.len()
    );
    assert!(serde_json::from_slice::<Value>(&resp.body).is_err());

    sim.misbehave_on(Endpoint::Events, Mode::Truncated);
    let mut events = Events::open(sim.addr(), "");
    let mut size = String::new();
    events.reader.read_line(&mut size).unwrap();
    let promised = usize::from_str_radix(size.trim(), 16).unwrap();
    let mut rest = Vec::new();
    events.reader.read_to_end(&mut rest).unwrap();
    assert!(rest.len() < promised);
}

#[test]
fn trickle_sends_slowly_but_completely() {
    let sim = sim();
    sim.misbehave_on(Endpoint::Ping, Mode::Trickle { bytes_per_sec: 200 });
    let started = Instant::now();
    let resp = get(sim.addr(), "/ping");
    let elapsed = started.elapsed();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"pong\n");
    // About 110 bytes of head and body at 200 B/s.
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    let fast = Instant::now();
    get(sim.addr(), "/v2/info");
    assert!(fast.elapsed() < Duration::from_millis(250));
}

#[test]
fn redirects_carry_the_right_location() {
    let sim = sim();
    let target = "/v2/apps?embed=apps.tasks";
    let cases = [
        (
            "//10.233.0.9:8080",
            "//10.233.0.9:8080/v2/apps?embed=apps.tasks",
        ),
        (
            "http://10.233.0.9:8080/",
            "http://10.233.0.9:8080/v2/apps?embed=apps.tasks",
        ),
        (
            "https://m2:8443/service/marathon/v2/apps",
            "https://m2:8443/service/marathon/v2/apps",
        ),
    ];
    for (base, location) in cases {
        sim.misbehave(Mode::RedirectTo(base.into()));
        let resp = get(sim.addr(), target);
        assert_eq!(resp.status, 307);
        assert_eq!(resp.header("location"), Some(location));
    }
    sim.behave();
    // Standby (1.7+): the event stream and every other /v2/* request
    // redirect to the leader; /ping is answered.
    sim.set_standby(Some("http://10.233.0.9:8080".into()));
    let resp = request(
        sim.addr(),
        "GET",
        "/v2/events?event_type=status_update_event",
        &["Accept: text/event-stream"],
        "",
    );
    assert_eq!(resp.status, 307);
    assert_eq!(
        resp.header("location"),
        Some("http://10.233.0.9:8080/v2/events?event_type=status_update_event")
    );
    let resp = get(sim.addr(), target);
    assert_eq!(resp.status, 307);
    assert_eq!(
        resp.header("location"),
        Some("http://10.233.0.9:8080/v2/apps?embed=apps.tasks")
    );
    assert_eq!(get(sim.addr(), "/ping").status, 200);
    sim.set_standby(None);
    assert_eq!(get(sim.addr(), target).status, 200);
    Events::open(sim.addr(), "");
}

#[tokio::test]
async fn a_client_follows_a_protocol_relative_redirect_to_the_leader() {
    let standby = sim();
    let leader = sim();
    leader
        .deploy_app(AppSpec {
            id: "/on-the-leader".into(),
            ..AppSpec::default()
        })
        .unwrap();
    standby.misbehave(Mode::RedirectTo(format!("//{}", leader.addr())));
    let response = reqwest::get(format!("{}/v2/apps", standby.url()))
        .await
        .unwrap();
    assert_eq!(response.url().port(), Some(leader.addr().port()));
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["apps"][0]["id"], "/on-the-leader");
}

#[test]
fn reset_closes_with_a_tcp_reset() {
    let sim = sim();
    sim.misbehave(Mode::Reset);
    let mut tcp = connect(sim.addr());
    tcp.write_all(b"GET /v2/apps HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let err = tcp.read(&mut buf).expect_err("reset, not an answer");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
}

#[test]
fn auth_rejects_wrong_credentials() {
    let basic = start(SimOptions {
        auth: Some(Auth::Basic {
            username: "marathon".into(),
            password: "s3cret".into(),
        }),
        ..SimOptions::default()
    });
    let apps = |headers: &[&str]| request(basic.addr(), "GET", "/v2/apps", headers, "");
    let denied = apps(&[]);
    assert_eq!(denied.status, 401);
    assert_eq!(
        denied.header("www-authenticate"),
        Some("Basic realm=\"Mesosphere\"")
    );
    // marathon:wrong, then marathon:s3cret.
    assert_eq!(
        apps(&["Authorization: Basic bWFyYXRob246d3Jvbmc="]).status,
        401
    );
    assert_eq!(apps(&["Authorization: token=s3cret"]).status, 401);
    assert_eq!(
        apps(&["Authorization: Basic bWFyYXRob246czNjcmV0"]).status,
        200
    );
    let events = request(
        basic.addr(),
        "GET",
        "/v2/events",
        &["Accept: text/event-stream"],
        "",
    );
    assert_eq!(events.status, 401);
    assert_eq!(get(basic.addr(), "/_sim/stats").status, 200);

    let token = start(SimOptions {
        auth: Some(Auth::Token("eyJhbGciOi.x.y".into())),
        ..SimOptions::default()
    });
    let apps = |headers: &[&str]| request(token.addr(), "GET", "/v2/apps", headers, "");
    let denied = apps(&["Authorization: token=eyJhbGciOi.x.z"]);
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("www-authenticate"), Some("acsjwt"));
    assert_eq!(apps(&["Authorization: token=eyJhbGciOi.x.y"]).status, 200);
}

#[test]
fn control_api_drives_the_simulator_and_bad_requests_do_not_crash_it() {
    let sim = sim();
    let post =
        |op: &str, body: &str| request(sim.addr(), "POST", &format!("/_sim/{op}"), &[], body);
    let deployed = post(
        "deploy",
        r#"{"id":"/web","groups":["g"],"network":"ip-per-task",
            "tasks":[{"id":"web.1","ips":[],"agent":"agent-1"}]}"#,
    );
    assert_eq!(
        deployed.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&deployed.body)
    );
    assert_eq!(deployed.json()["tasks"], serde_json::json!(["web.1"]));
    assert_eq!(
        post("set-ips", r#"{"task":"web.1","ips":["10.233.1.2"]}"#).status,
        200
    );
    let networks = post(
        "deploy",
        r#"{"id":"/db","network":{"networks":{"labels":{"network-groups":"g"}}},
            "tasks":[{"ips":["10.233.2.2"],"agent":"agent-2"}]}"#,
    );
    assert_eq!(networks.status, 200);
    let view = parse_document(
        &get(sim.addr(), "/v2/apps?embed=apps.tasks").body,
        &GroupsConfig::default(),
        &mut VersionCache::default(),
    )
    .unwrap();
    assert_eq!(view.endpoints().count(), 2);
    assert!(view.endpoints().all(|t| t.groups.contains_key("g")));
    let emitted = post("emit", r#"{"event_type":"x","json":{"a":[1]}}"#);
    assert!(emitted.json()["seq"].as_u64().unwrap() > 0);
    let rule = r#"{"endpoint":"apps","mode":{"status":503},"times":1}"#;
    assert_eq!(post("misbehave", rule).status, 200);
    assert_eq!(get(sim.addr(), "/v2/apps").status, 503);
    assert_eq!(post("misbehave", r#"{"mode":"hang"}"#).status, 200);
    assert_eq!(post("behave", "").status, 200);
    assert_eq!(get(sim.addr(), "/v2/apps").status, 200);
    assert_eq!(post("kill", r#"{"task":"web.1"}"#).status, 200);
    assert_eq!(post("kill", r#"{"task":"web.1"}"#).status, 404);
    assert_eq!(post("deploy", r#"{"id":"/db"}"#).status, 409);
    assert_eq!(
        post("set-ips", r#"{"task":"x","ips":["not an ip"]}"#).status,
        400
    );
    assert_eq!(post("deploy", "{").status, 400);
    assert_eq!(post("scale", r#"{"app":"/db","instances":3}"#).status, 400);
    assert_eq!(post("remove-app", r#"{"app":"/db"}"#).status, 200);
    assert_eq!(post("nonsense", "{}").status, 404);
    let stats = get(sim.addr(), "/_sim/stats").json();
    assert_eq!(
        (stats["apps"].as_u64(), stats["tasks"].as_u64()),
        (Some(1), Some(0))
    );

    // Malformed HTTP: a 400 and a closed connection, the server lives on.
    for junk in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9\r\n\r\n",
        b"GET /v2/apps HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"\x00\xff\xfe\r\n\r\n",
    ] {
        let mut tcp = connect(sim.addr());
        tcp.write_all(junk).unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 400"), "{junk:?}");
    }
    assert_eq!(get(sim.addr(), "/ping").body, b"pong\n");
    assert_eq!(get(sim.addr(), "/v2/apps/nope").status, 404);
    assert_eq!(get(sim.addr(), "/v2/events").status, 405);
}

#[test]
fn keep_alive_connections_serve_several_requests() {
    let sim = sim();
    let mut tcp = connect(sim.addr());
    tcp.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    tcp.read_to_string(&mut all).unwrap();
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 2, "{all}");
    assert!(all.ends_with(&format!("{{\"leader\":\"{}\"}}", sim.addr())));
}

#[test]
fn pods_are_served_in_the_captured_shape_and_driven_by_the_control_api() {
    use groupd::source::wire::marathon::pods::{parse_pod_status, parse_pod_statuses, parse_pods};
    let m = sim();
    let addr = m.addr();
    let body = r#"{"id":"/db-pod","network_labels":{"network-groups":"db"},"containers":["app","sidecar"],
        "instances":[{"id":"db-pod.instance-1","ips":["10.233.3.3"],"agent":"a1"}]}"#;
    let mut events = Events::open(addr, "");
    let r = request(addr, "POST", "/_sim/deploy-pod", &[], body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["tasks"], serde_json::json!(["db-pod.instance-1"]));

    let pods = parse_pods(&get(addr, "/v2/pods").body).expect("/v2/pods parses");
    assert_eq!(pods.len(), 1);
    let all = parse_pod_statuses(&get(addr, "/v2/pods/::status").body).expect("::status parses");
    let one = parse_pod_status(&get(addr, "/v2/pods/db-pod::status").body).expect("one status");
    assert_eq!(all[0].instances.len(), 1);
    let instance = &one.instances[0];
    assert_eq!(instance.containers.len(), 2);
    assert_eq!(instance.networks[0].addresses, ["10.233.3.3"]);
    // The keys of the captured status, and nothing it lacks.
    let captured: Value = serde_json::from_slice(
        &std::fs::read(format!(
            "{FIXTURES}/pods/pod-status-dcos-two-containers.istio-test.json"
        ))
        .expect("fixture"),
    )
    .expect("json");
    let served = get(addr, "/v2/pods/db-pod::status").json();
    for key in keys(&served["instances"][0]) {
        assert!(
            captured["instances"][0].get(&key).is_some(),
            "served instance key {key} is not in the captured status"
        );
    }
    let version = instance.launch_version().expect("specReference");
    assert_eq!(
        get(addr, &format!("/v2/pods/db-pod::versions/{version}")).status,
        200
    );

    // The stream: created, then a status update per container sharing the IP.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let (event_type, data) = events.event().expect("an event");
        if event_type != "event_stream_attached" {
            seen.push((event_type, data));
        }
    }
    assert_eq!(seen[0].0, "pod_created_event");
    assert!(
        seen[0].1.contains(r#""uri":"/v2/pods/db-pod""#),
        "{}",
        seen[0].1
    );
    for (i, container) in ["app", "sidecar"].iter().enumerate() {
        let (event_type, data) = &seen[i + 1];
        assert_eq!(event_type, "status_update_event");
        assert!(data.contains(&format!(r#""taskId":"db-pod.instance-1.{container}""#)));
        assert!(data.contains(r#""ipAddress":"10.233.3.3""#));
    }

    let r = request(
        addr,
        "POST",
        "/_sim/add-pod-instance",
        &[],
        r#"{"pod":"/db-pod","instance":{"ips":["10.233.3.4"],"agent":"a1"}}"#,
    );
    assert_eq!(r.status, 200);
    let added = r.json()["tasks"][0].as_str().expect("an id").to_string();
    assert!(added.starts_with("db-pod.instance-"), "{added}");
    let r = request(
        addr,
        "POST",
        "/_sim/remove-pod-instance",
        &[],
        &format!(r#"{{"instance":"{added}"}}"#),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        request(
            addr,
            "POST",
            "/_sim/remove-pod-instance",
            &[],
            &format!(r#"{{"instance":"{added}"}}"#)
        )
        .status,
        404
    );
    let r = request(
        addr,
        "POST",
        "/_sim/remove-pod",
        &[],
        r#"{"pod":"/db-pod"}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(get(addr, "/v2/pods/db-pod::status").status, 404);
    assert_eq!(get(addr, "/v2/pods/::status").json(), serde_json::json!([]));
    assert_eq!(
        request(
            addr,
            "POST",
            "/_sim/deploy-pod",
            &[],
            r#"{"id":"/x","bogus":1}"#
        )
        .status,
        400
    );

    // An older Marathon: no pods API at all.
    let old = start(SimOptions {
        pods: false,
        ..SimOptions::default()
    });
    assert_eq!(get(old.addr(), "/v2/pods").status, 404);
    assert_eq!(get(old.addr(), "/v2/pods/::status").status, 404);
}
