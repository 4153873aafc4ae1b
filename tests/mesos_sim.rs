//! The simulated Mesos master (`groupd_sim::mesos`): what it serves parses
//! with groupd's own Mesos wire models, and each misbehaviour does what it
//! says, observed with raw sockets. Everything on 127.0.0.1, ephemeral ports.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use groupd::config::GroupsConfig;
use groupd::model::TaskState;
use groupd::source::document::parse_document;
use groupd::source::wire::marathon::VersionCache;
use groupd::source::wire::mesos::{convert_task, view_from_get_state, Context, V1Message};
use groupd_sim::mesos::{
    AgentSpec, Auth, Endpoint, Leadership, MesosHandle, MesosOptions, MesosSim, MisbehaveRule,
    Mode, NetworkSpec, PortSpec, StreamFault, TaskSpec,
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(5);
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mesos");

fn start(options: MesosOptions) -> MesosHandle {
    MesosSim::start("127.0.0.1:0".parse().unwrap(), options).expect("start the simulator")
}

fn sim() -> MesosHandle {
    start(MesosOptions {
        heartbeat: Duration::from_millis(150),
        ..MesosOptions::default()
    })
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A UCR task on `dcos` with groups, labels (one with a `/`), IPv4 + IPv6.
fn web(id: &str, ips: &[&str]) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        agent: "S1".into(),
        name: Some("web".into()),
        network_infos: vec![NetworkSpec {
            name: Some("dcos".into()),
            groups: vec!["frontend".into()],
            labels: [("DCOS_SPACE".to_string(), "/web".to_string())].into(),
            ip_addresses: ips.iter().map(|t| ip(t)).collect(),
        }],
        discovery: vec![PortSpec {
            number: 80,
            protocol: None,
            name: Some("http".into()),
        }],
        labels: [("tier".to_string(), "edge".to_string())].into(),
        ..TaskSpec::default()
    }
}

fn with_agent(sim: &MesosHandle) {
    sim.add_agent(AgentSpec {
        id: "S1".into(),
        hostname: Some("10.0.0.1".into()),
    })
    .unwrap();
}

fn connect(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    tcp
}

fn send(addr: SocketAddr, method: &str, target: &str, headers: &[&str], body: &str) -> TcpStream {
    let mut tcp = connect(addr);
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    tcp.write_all(text.as_bytes()).unwrap();
    tcp
}

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
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    (status, headers)
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn request(addr: SocketAddr, method: &str, target: &str, headers: &[&str], body: &str) -> Resp {
    let mut reader = BufReader::new(send(addr, method, target, headers, body));
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

fn call(addr: SocketAddr, kind: &str) -> Resp {
    let body = format!("{{\"type\":\"{kind}\"}}");
    request(
        addr,
        "POST",
        "/api/v1",
        &["Content-Type: application/json", "Accept: application/json"],
        &body,
    )
}

/// A `SUBSCRIBE` client: de-chunks, then splits RecordIO by length.
struct Stream {
    reader: BufReader<TcpStream>,
    body: Vec<u8>,
    /// The terminating chunk arrived.
    ended: bool,
}

impl Stream {
    fn open(addr: SocketAddr) -> (u16, Vec<(String, String)>, Stream) {
        let tcp = send(
            addr,
            "POST",
            "/api/v1",
            &["Content-Type: application/json", "Accept: application/json"],
            r#"{"type":"SUBSCRIBE"}"#,
        );
        let mut reader = BufReader::new(tcp);
        let (status, headers) = read_head(&mut reader);
        let stream = Stream {
            reader,
            body: Vec::new(),
            ended: false,
        };
        (status, headers, stream)
    }

    fn subscribe(addr: SocketAddr) -> Stream {
        let (status, headers, stream) = Stream::open(addr);
        assert_eq!(status, 200);
        let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"));
        stream
    }

    /// Read one chunk into `body`; Err on EOF or a read error.
    fn chunk(&mut self) -> std::io::Result<()> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        let size = usize::from_str_radix(line.trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        if size == 0 {
            self.ended = true;
            return Err(ErrorKind::UnexpectedEof.into());
        }
        // Keep what a cut chunk delivered before the EOF.
        let mut data = Vec::new();
        (&mut self.reader)
            .take(size as u64 + 2)
            .read_to_end(&mut data)?;
        if data.len() < size + 2 {
            self.body.extend_from_slice(&data[..data.len().min(size)]);
            return Err(ErrorKind::UnexpectedEof.into());
        }
        assert_eq!(&data[size..], b"\r\n", "chunk data ends in CRLF");
        self.body.extend_from_slice(&data[..size]);
        Ok(())
    }

    /// The next record as raw bytes (declared length, bytes).
    fn raw_record(&mut self) -> std::io::Result<(usize, Vec<u8>)> {
        loop {
            if let Some(newline) = self.body.iter().position(|b| *b == b'\n') {
                let length: usize = std::str::from_utf8(&self.body[..newline])
                    .expect("ASCII length line")
                    .parse()
                    .expect("decimal length");
                if self.body.len() > newline + length {
                    let bytes = self.body[newline + 1..newline + 1 + length].to_vec();
                    self.body.drain(..newline + 1 + length);
                    return Ok((length, bytes));
                }
            }
            self.chunk()?;
        }
    }

    fn record(&mut self) -> (Value, Vec<u8>) {
        let (_, bytes) = self.raw_record().expect("a record");
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("record is JSON ({e}): {}", String::from_utf8_lossy(&bytes))
        });
        (value, bytes)
    }

    /// The next record that is not a heartbeat, parsed with groupd's model.
    fn event(&mut self) -> (V1Message, Vec<u8>) {
        loop {
            let (value, bytes) = self.record();
            if value["type"] != "HEARTBEAT" {
                let message = serde_json::from_slice(&bytes).expect("a V1Message");
                return (message, bytes);
            }
        }
    }

    fn set_timeout(&self, timeout: Duration) {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .unwrap();
    }
}

fn groups() -> GroupsConfig {
    GroupsConfig::default()
}

#[test]
fn subscribe_stream_is_recordio_that_groupds_models_read() {
    let sim = sim();
    with_agent(&sim);
    sim.launch_task(web("web.1", &["10.233.1.2", "fd00::2"]))
        .unwrap();
    let mut stream = Stream::subscribe(sim.addr());

    let (subscribed, raw) = stream.event();
    assert_eq!(subscribed.kind.as_deref(), Some("SUBSCRIBED"));
    assert!(raw.starts_with(br#"{"type":"SUBSCRIBED","subscribed":{"get_state":{"get_tasks":{"tasks":[{"name":"web","task_id""#));
    // Mesos escapes `/` (a label value here).
    assert!(String::from_utf8_lossy(&raw).contains(r#""value":"\/web""#));
    let value: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(value["subscribed"]["heartbeat_interval_seconds"], 0.15);
    let state = subscribed
        .subscribed
        .and_then(|s| s.get_state)
        .expect("get_state");
    let view = view_from_get_state(&state, &groups());
    let task = &view.tasks["web.1"];
    assert_eq!(task.state, TaskState::Running);
    assert_eq!(task.agent.as_deref(), Some("S1"));
    assert_eq!(task.ips, [ip("10.233.1.2"), ip("fd00::2")].into());
    assert!(task.groups.contains_key("frontend"), "{task:?}");
    let ctx = Context::from_get_state(&state);

    // A Docker task on a user network: agent IP while starting, its own
    // IP once running (docs/FORMATS.md §8.3).
    let change = sim
        .launch_task(TaskSpec {
            id: "db.1".into(),
            agent: "S1".into(),
            docker_network: Some("USER".into()),
            network_infos: vec![NetworkSpec {
                name: Some("dcos".into()),
                groups: vec!["backend".into()],
                ip_addresses: vec![ip("10.233.1.3")],
                ..NetworkSpec::default()
            }],
            ..TaskSpec::default()
        })
        .unwrap();
    assert_eq!(change.tasks, ["db.1"]);
    assert_eq!(change.last_seq - change.first_seq, 2);
    let (added, raw) = stream.event();
    assert!(raw.starts_with(br#"{"type":"TASK_ADDED","task_added":{"task":{"name":"db.1""#));
    let mut task = added.task_added.expect("task_added").task;
    assert_eq!(task.state.as_deref(), Some("TASK_STAGING"));
    let staging = convert_task(&task, &ctx, &groups());
    assert!(staging.ips.is_empty());
    assert!(staging.groups.contains_key("backend"));

    let (starting, raw) = stream.event();
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(
        text.contains(
            r#""network_infos":[{"ip_addresses":[{"protocol":"IPv4","ip_address":"10.0.0.1"}]}]"#
        ),
        "{text}"
    );
    assert!(text.ends_with(r#""state":"TASK_STARTING"}}"#), "{text}");
    let update = starting.task_updated.expect("task_updated");
    let status = update.status.as_ref().expect("status");
    assert_eq!(status.state.as_deref(), Some("TASK_STARTING"));
    task.apply_update(&update);

    let (running, _) = stream.event();
    task.apply_update(&running.task_updated.expect("task_updated"));
    let converted = convert_task(&task, &ctx, &groups());
    assert_eq!(converted.state, TaskState::Running);
    assert!(converted.ips.contains(&ip("10.233.1.3")), "{converted:?}");
    assert!(converted.groups.contains_key("backend"));
    let written = sim.wait_written(change.last_seq, TIMEOUT).expect("written");
    assert!(written.seq >= change.last_seq);

    // Heartbeats between events.
    let (heartbeat, raw) = stream.record();
    assert_eq!(heartbeat["type"], "HEARTBEAT");
    assert_eq!(raw, br#"{"type":"HEARTBEAT"}"#);

    sim.kill_task("web.1").unwrap();
    let (killed, _) = stream.event();
    let killed = killed.task_updated.expect("task_updated");
    assert_eq!(killed.state.as_deref(), Some("TASK_KILLED"));
    sim.remove_agent("S1").unwrap();
    let (lost, _) = stream.event();
    assert_eq!(
        lost.task_updated.and_then(|u| u.state).as_deref(),
        Some("TASK_LOST")
    );
    let (removed, _) = stream.record();
    assert_eq!(removed["type"], "AGENT_REMOVED");
    assert_eq!(removed["agent_removed"]["agent_id"]["value"], "S1");
    sim.remove_framework("sim-0000-0001").unwrap();
    let (removed, _) = stream.record();
    assert_eq!(removed["type"], "FRAMEWORK_REMOVED");
    assert_eq!(
        removed["framework_removed"]["framework_info"]["name"],
        "marathon"
    );
    assert_eq!(sim.subscribers(), 1);
}

#[test]
fn master_state_and_get_state_parse_with_groupds_parsers() {
    let sim = sim();
    with_agent(&sim);
    sim.launch_task(web("web.1", &["10.233.1.2", "fd00::2"]))
        .unwrap();
    sim.launch_task(web("web.2", &["10.233.1.4"])).unwrap();
    sim.update_task("web.2", "TASK_UNREACHABLE", None).unwrap();
    sim.launch_task(web("web.3", &["10.233.1.5"])).unwrap();
    sim.kill_task("web.3").unwrap();
    sim.launch_task(TaskSpec {
        id: "host.1".into(),
        agent: "S1".into(),
        ..TaskSpec::default()
    })
    .unwrap();
    for path in [
        "/master/state",
        "/state",
        "/state.json",
        "/master/state.json",
    ] {
        let resp = get(sim.addr(), path);
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.header("content-type"), Some("application/json"));
        let view = parse_document(&resp.body, &groups(), &mut VersionCache::default())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let web1 = &view.tasks["web.1"];
        assert_eq!(web1.ips, [ip("10.233.1.2"), ip("fd00::2")].into());
        assert!(web1.groups.contains_key("frontend"));
        assert_eq!(view.tasks["web.2"].state, TaskState::Unreachable);
        assert!(
            !view.tasks.contains_key("web.3"),
            "killed tasks are completed"
        );
        assert!(view.tasks.contains_key("host.1"));
        let doc: Value = serde_json::from_slice(&resp.body).unwrap();
        // Array-form labels on tasks and statuses, object form in ContainerInfo.
        let task = &doc["frameworks"][0]["tasks"][0];
        assert_eq!(task["labels"][0]["key"], "tier");
        assert_eq!(
            task["statuses"][1]["container_status"]["network_infos"][0]["labels"][0]["value"],
            "/web"
        );
        assert_eq!(
            task["container"]["network_infos"][0]["labels"]["labels"][0]["value"],
            "/web"
        );
        assert_eq!(doc["slaves"][0]["id"], "S1");
    }
    let resp = call(sim.addr(), "GET_STATE");
    assert_eq!(resp.status, 200);
    let message: V1Message = serde_json::from_slice(&resp.body).expect("V1Message");
    assert_eq!(message.kind.as_deref(), Some("GET_STATE"));
    let view = view_from_get_state(&message.get_state.expect("get_state"), &groups());
    assert_eq!(view.tasks["web.1"].ips.len(), 2);
    assert_eq!(view.tasks["web.2"].state, TaskState::Unreachable);
    assert!(!view.tasks.contains_key("web.3"));
    // Not a call, not a known call, not POST.
    assert_eq!(request(sim.addr(), "POST", "/api/v1", &[], "{").status, 400);
    assert_eq!(call(sim.addr(), "GET_MAINTENANCE_STATUS").status, 400);
    assert_eq!(get(sim.addr(), "/api/v1").status, 400);
}

#[test]
fn subscribe_misbehaviours_are_exact() {
    let sim = sim();
    with_agent(&sim);
    sim.launch_task(web("web.1", &["10.233.1.2"])).unwrap();
    let rule = |mode| MisbehaveRule {
        endpoint: Some(Endpoint::Subscribe),
        mode,
        times: Some(1),
    };

    // Silence: the snapshot, then not even heartbeats (or events).
    sim.misbehave(rule(Mode::Silence));
    let mut stream = Stream::subscribe(sim.addr());
    assert_eq!(stream.record().0["type"], "SUBSCRIBED");
    sim.launch_task(web("web.2", &["10.233.1.4"])).unwrap();
    stream.set_timeout(Duration::from_millis(600));
    let err = stream.raw_record().expect_err("silence");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );

    // Cut: the length line and half the record, then EOF.
    sim.misbehave(rule(Mode::CutRecord));
    let mut stream = Stream::subscribe(sim.addr());
    let err = stream.raw_record().expect_err("cut");
    assert!(matches!(err.kind(), ErrorKind::UnexpectedEof), "{err}");
    assert!(!stream.ended);
    let newline = stream
        .body
        .iter()
        .position(|b| *b == b'\n')
        .expect("a length line");
    let declared: usize = std::str::from_utf8(&stream.body[..newline])
        .unwrap()
        .parse()
        .unwrap();
    assert!(stream.body.len() - newline - 1 < declared);
    assert!(stream.body[newline + 1..].starts_with(b"{\"type\":\"SUBSCRIBED\""));

    // Garbage: a well-framed record that is not JSON, then the stream.
    sim.misbehave(rule(Mode::GarbageRecord));
    let mut stream = Stream::subscribe(sim.addr());
    let (_, garbage) = stream.raw_record().unwrap();
    assert!(serde_json::from_slice::<Value>(&garbage).is_err());
    assert_eq!(stream.record().0["type"], "SUBSCRIBED");

    // A length line that lies: 16 bytes more than the record.
    sim.misbehave(rule(Mode::LyingLength));
    let mut stream = Stream::subscribe(sim.addr());
    stream.chunk().unwrap();
    let newline = stream.body.iter().position(|b| *b == b'\n').unwrap();
    let declared: usize = std::str::from_utf8(&stream.body[..newline])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(declared, stream.body.len() - newline - 1 + 16);

    // The rules were for one request each: back to normal.
    let mut stream = Stream::subscribe(sim.addr());
    assert_eq!(stream.record().0["type"], "SUBSCRIBED");
    assert_eq!(stream.record().0["type"], "HEARTBEAT");
}

#[test]
fn open_streams_are_disrupted_on_demand() {
    let sim = sim();
    let mut garbage = Stream::subscribe(sim.addr());
    garbage.record();
    sim.wait_subscribers(1, TIMEOUT);
    sim.disrupt_streams(StreamFault::Garbage);
    let (_, bytes) = garbage.raw_record().unwrap();
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());
    drop(garbage);

    let mut cut = Stream::subscribe(sim.addr());
    cut.record();
    let mut closed = Stream::subscribe(sim.addr());
    closed.record();
    let mut lying = Stream::subscribe(sim.addr());
    lying.record();
    assert!(sim.wait_subscribers(3, TIMEOUT));
    sim.disrupt_streams(StreamFault::LyingLength);
    lying.chunk().unwrap();
    assert_eq!(
        lying.body,
        format!("{}\n{{\"type\":\"HEARTBEAT\"}}", 20 + 16).as_bytes()
    );
    sim.disrupt_streams(StreamFault::Cut);
    let err = cut.raw_record().expect_err("cut");
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    assert!(!cut.ended);
    let err = closed.raw_record().expect_err("closed");
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);

    let mut reset = Stream::subscribe(sim.addr());
    reset.record();
    assert!(sim.wait_subscribers(1, TIMEOUT));
    sim.disrupt_streams(StreamFault::Reset);
    let mut rest = Vec::new();
    let err = reset.reader.read_to_end(&mut rest).expect_err("reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);

    let mut clean = Stream::subscribe(sim.addr());
    clean.record();
    assert!(sim.wait_subscribers(1, TIMEOUT));
    sim.disrupt_streams(StreamFault::Close);
    while clean.chunk().is_ok() {}
    assert!(clean.ended, "terminating chunk");
}

#[test]
fn request_misbehaviours_hang_reset_status_redirect() {
    let sim = sim();
    let rule = |endpoint, mode| MisbehaveRule {
        endpoint: Some(endpoint),
        mode,
        times: Some(1),
    };
    sim.misbehave(rule(Endpoint::State, Mode::Status(503)));
    let resp = get(sim.addr(), "/master/state");
    assert_eq!(resp.status, 503);
    assert_eq!(get(sim.addr(), "/master/state").status, 200);

    sim.misbehave(rule(Endpoint::Api, Mode::Hang));
    let mut tcp = send(
        sim.addr(),
        "POST",
        "/api/v1",
        &[],
        r#"{"type":"GET_STATE"}"#,
    );
    tcp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    let err = tcp.read(&mut buf).expect_err("no answer");
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));

    sim.misbehave(rule(Endpoint::Subscribe, Mode::Reset));
    let mut tcp = send(
        sim.addr(),
        "POST",
        "/api/v1",
        &[],
        r#"{"type":"SUBSCRIBE"}"#,
    );
    let mut rest = Vec::new();
    let err = tcp.read_to_end(&mut rest).expect_err("reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);

    sim.misbehave(rule(
        Endpoint::Subscribe,
        Mode::RedirectTo("//10.0.0.9:5050".into()),
    ));
    let (status, headers, _) = Stream::open(sim.addr());
    assert_eq!(status, 307);
    let location = headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.as_str());
    assert_eq!(location, Some("//10.0.0.9:5050/api/v1"));

    sim.misbehave(rule(Endpoint::State, Mode::CutRecord));
    let mut reader = BufReader::new(send(sim.addr(), "GET", "/master/state", &[], ""));
    let (status, headers) = read_head(&mut reader);
    assert_eq!(status, 200);
    let declared: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .unwrap()
        .1
        .parse()
        .unwrap();
    let mut body = Vec::new();
    reader.read_to_end(&mut body).unwrap();
    assert!(body.len() < declared);
}

#[test]
fn followers_redirect_protocol_relative_and_can_loop() {
    let a = sim();
    let b = sim();
    a.set_leadership(Leadership::Redirect(format!("//{}", b.addr())));
    b.set_leadership(Leadership::Redirect(format!("//{}", a.addr())));
    let (status, headers, _) = Stream::open(a.addr());
    assert_eq!(status, 307);
    let location =
        |h: &[(String, String)]| h.iter().find(|(k, _)| k == "location").unwrap().1.clone();
    assert_eq!(location(&headers), format!("//{}/api/v1", b.addr()));
    // Follow: B sends the client back to A.
    let (status, headers, _) = Stream::open(b.addr());
    assert_eq!(status, 307);
    assert_eq!(location(&headers), format!("//{}/api/v1", a.addr()));
    let resp = get(a.addr(), "/master/state");
    assert_eq!(resp.status, 307);
    assert_eq!(
        resp.header("location"),
        Some(format!("//{}/master/state", b.addr()).as_str())
    );

    a.set_leadership(Leadership::NoLeader);
    assert_eq!(call(a.addr(), "GET_STATE").status, 503);
    a.set_leadership(Leadership::Leader);
    assert_eq!(call(a.addr(), "GET_STATE").status, 200);
}

#[test]
fn old_mesos_has_no_operator_api() {
    let sim = sim();
    sim.set_old_mesos(true);
    assert_eq!(call(sim.addr(), "SUBSCRIBE").status, 404);
    assert_eq!(call(sim.addr(), "GET_STATE").status, 404);
    assert_eq!(get(sim.addr(), "/master/state").status, 200);
    sim.set_old_mesos(false);
    assert_eq!(call(sim.addr(), "GET_STATE").status, 200);
}

#[test]
fn basic_auth_rejects_wrong_credentials() {
    let sim = start(MesosOptions {
        auth: Some(Auth::Basic {
            username: "groupd".into(),
            password: "s3cret".into(),
        }),
        ..MesosOptions::default()
    });
    let resp = get(sim.addr(), "/master/state");
    assert_eq!(resp.status, 401);
    assert_eq!(
        resp.header("www-authenticate"),
        Some("Basic realm=\"mesos\"")
    );
    let wrong = "Authorization: Basic Z3JvdXBkOndyb25n"; // groupd:wrong
    assert_eq!(
        request(sim.addr(), "GET", "/master/state", &[wrong], "").status,
        401
    );
    let right = "Authorization: Basic Z3JvdXBkOnMzY3JldA=="; // groupd:s3cret
    assert_eq!(
        request(sim.addr(), "GET", "/master/state", &[right], "").status,
        200
    );
    let body = r#"{"type":"GET_STATE"}"#;
    assert_eq!(
        request(sim.addr(), "POST", "/api/v1", &[wrong], body).status,
        401
    );
    assert_eq!(
        request(sim.addr(), "POST", "/api/v1", &[right], body).status,
        200
    );
    // The control API needs none.
    assert_eq!(get(sim.addr(), "/_sim/stats").status, 200);
}

#[test]
fn control_api_drives_the_master() {
    let sim = sim();
    let post =
        |op: &str, body: &str| request(sim.addr(), "POST", &format!("/_sim/{op}"), &[], body);
    assert_eq!(
        post("add-agent", r#"{"id":"S1","hostname":"10.0.0.1"}"#).status,
        200
    );
    assert_eq!(post("add-agent", r#"{"id":"S1"}"#).status, 409);
    let resp = post(
        "launch",
        r#"{"id":"web.1","agent":"S1","network_infos":[{"name":"dcos","groups":["g"],"ip_addresses":["10.233.1.2"]}]}"#,
    );
    assert_eq!(resp.status, 200);
    let change: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(change["tasks"][0], "web.1");
    let resp = post(
        "update-task",
        r#"{"task":"web.1","state":"TASK_RUNNING","ips":["10.233.1.9"]}"#,
    );
    assert_eq!(resp.status, 200);
    assert_eq!(post("kill", r#"{"task":"nope"}"#).status, 404);
    assert_eq!(post("launch", r#"{"bogus":1}"#).status, 400);
    let view = parse_document(
        &get(sim.addr(), "/master/state").body,
        &groups(),
        &mut VersionCache::default(),
    )
    .unwrap();
    assert_eq!(view.tasks["web.1"].ips, [ip("10.233.1.9")].into());

    let rule = r#"{"endpoint":"state","mode":{"status":503},"times":1}"#;
    assert_eq!(post("misbehave", rule).status, 200);
    assert_eq!(get(sim.addr(), "/master/state").status, 503);
    assert_eq!(get(sim.addr(), "/master/state").status, 200);
    assert_eq!(
        post("leader", r#"{"redirect":"//10.0.0.9:5050"}"#).status,
        200
    );
    assert_eq!(
        get(sim.addr(), "/master/state").header("location"),
        Some("//10.0.0.9:5050/master/state")
    );
    assert_eq!(post("leader", r#""leader""#).status, 200);
    assert_eq!(post("old-mesos", r#"{"enabled":true}"#).status, 200);
    assert_eq!(call(sim.addr(), "GET_STATE").status, 404);
    assert_eq!(post("old-mesos", r#"{"enabled":false}"#).status, 200);
    assert_eq!(post("disrupt", r#"{"fault":"garbage"}"#).status, 200);
    assert_eq!(post("kill", r#"{"task":"web.1"}"#).status, 200);
    let stats: Value = serde_json::from_slice(&get(sim.addr(), "/_sim/stats").body).unwrap();
    assert_eq!(stats["tasks"], 0);
    assert_eq!(stats["agents"], 1);
}

#[test]
fn fixtures_load_and_serve_what_they_describe() {
    let sim = sim();
    let state_file = format!("{FIXTURES}/master-state/mesos-1.8.0-master-state.dcos-net.json");
    let original = std::fs::read(&state_file).unwrap();
    let expected = parse_document(&original, &groups(), &mut VersionCache::default()).unwrap();
    assert!(sim.load_fixture(&original).unwrap() > 0);
    let served = get(sim.addr(), "/master/state");
    let view = parse_document(&served.body, &groups(), &mut VersionCache::default()).unwrap();
    assert_eq!(
        view.tasks.keys().map(|k| &**k).collect::<Vec<_>>(),
        expected.tasks.keys().map(|k| &**k).collect::<Vec<_>>()
    );
    for (id, task) in &expected.tasks {
        assert_eq!(view.tasks[id].ips, task.ips, "{id}");
        assert_eq!(view.tasks[id].groups, task.groups, "{id}");
    }

    let capture = format!(
        "{FIXTURES}/operator-api/mesos-1.5.0-subscribe-stream-mixed-networking.DERIVED.recordio"
    );
    let tasks = sim.load_fixture(&std::fs::read(capture).unwrap()).unwrap();
    assert!(tasks > 0);
    let mut stream = Stream::subscribe(sim.addr());
    let (subscribed, _) = stream.event();
    let state = subscribed.subscribed.and_then(|s| s.get_state).unwrap();
    let view = view_from_get_state(&state, &groups());
    let docker = view
        .tasks
        .values()
        .find(|t| t.id.starts_with("docker-on-dcos."))
        .expect("docker-on-dcos");
    assert_eq!(docker.ips, [ip("9.0.2.130")].into());
    assert!(sim.load_fixture(b"12\n{\"type\":").is_err());
}
