//! One test per gotcha of docs/FORMATS.md §8, named after it,
//! each on the smallest document that shows it.

use std::net::IpAddr;

use groupd::config::GroupsConfig;
use groupd::model::{ClusterView, NotEnforced, Task};
use groupd::source::document::parse_document;
use groupd::source::recordio::RecordIoParser;
use groupd::source::sse::SseParser;
use groupd::source::wire::marathon::VersionCache;

fn parse(doc: &str) -> ClusterView {
    parse_document(
        doc.as_bytes(),
        &GroupsConfig::default(),
        &mut VersionCache::default(),
    )
    .expect("document parses")
}

fn task<'a>(v: &'a ClusterView, id: &str) -> &'a Task {
    v.tasks.get(id).unwrap_or_else(|| {
        panic!(
            "task {id} in {:?}",
            v.tasks.keys().map(|k| &**k).collect::<Vec<_>>()
        )
    })
}

fn groups(t: &Task) -> Vec<&str> {
    t.groups.keys().map(|g| g.as_str()).collect()
}

fn ips(t: &Task) -> Vec<IpAddr> {
    t.ips.iter().copied().collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// A /master/state document with one framework and these task objects.
fn master_state(tasks: &str) -> String {
    format!(
        r#"{{"version":"1.8.0","slaves":[{{"id":"S1","hostname":"10.0.0.9","pid":"slave(1)@10.0.0.9:5051"}}],"frameworks":[{{"id":"F1","name":"marathon","tasks":[{tasks}]}}]}}"#
    )
}

fn running_status(network_infos: &str) -> String {
    format!(
        r#"{{"state":"TASK_RUNNING","timestamp":1.0,"container_status":{{"network_infos":[{network_infos}]}}}}"#
    )
}

#[test]
fn quirk_01_groups_disappear_in_marathon_1_5_so_the_label_convention_carries_them() {
    let doc = r#"{"apps":[{"id":"/web","version":"v1","networks":[{"mode":"container","name":"dcos","labels":{"network-groups":"web, db"}}],
        "tasks":[{"id":"web.1","appId":"/web","version":"v1","state":"TASK_RUNNING","ipAddresses":[{"ipAddress":"9.0.0.1","protocol":"IPv4"}]}]}]}"#;
    let v = parse(doc);
    assert_eq!(groups(task(&v, "web.1")), ["db", "web"]);
}

#[test]
fn quirk_02_groups_live_on_the_request_ips_on_the_result() {
    let t = format!(
        r#"{{"id":"t1","name":"t","slave_id":"S1","state":"TASK_RUNNING","container":{{"type":"MESOS","network_infos":[{{"name":"dcos","groups":["g1"],"ip_addresses":[{{}}]}}]}},"statuses":[{}]}}"#,
        running_status(r#"{"name":"dcos","ip_addresses":[{"ip_address":"9.0.0.2"}]}"#)
    );
    let v = parse(&master_state(&t));
    let t = task(&v, "t1");
    assert_eq!(groups(t), ["g1"]);
    assert_eq!(ips(t), [ip("9.0.0.2")]);
}

#[test]
fn quirk_03_no_ip_at_staging_binds_nothing() {
    let t = r#"{"id":"t1","name":"t","slave_id":"S1","state":"TASK_STAGING","container":{"type":"MESOS","network_infos":[{"name":"dcos","groups":["g1"]}]},"statuses":[{"state":"TASK_STAGING","timestamp":1.0}]}"#;
    let v = parse(&master_state(t));
    let t = task(&v, "t1");
    assert!(t.ips.is_empty() && !t.is_endpoint(), "{t:?}");
}

#[test]
fn quirk_04_several_network_infos_and_ips_are_all_used() {
    let t = format!(
        r#"{{"id":"t1","name":"t","slave_id":"S1","state":"TASK_RUNNING","container":{{"type":"MESOS","network_infos":[{{"name":"dcos6","groups":["g"]}},{{"name":"other"}}]}},"statuses":[{}]}}"#,
        running_status(
            r#"{"name":"dcos6","ip_addresses":[{"protocol":"IPv4","ip_address":"9.0.0.3"},{"protocol":"IPv6","ip_address":"fd01::3"}]},{"name":"other","ip_addresses":[{"ip_address":"9.1.0.3"}]}"#
        )
    );
    let v = parse(&master_state(&t));
    assert_eq!(
        ips(task(&v, "t1")),
        [ip("9.0.0.3"), ip("9.1.0.3"), ip("fd01::3")]
    );
}

#[test]
fn quirk_05_labels_have_two_shapes() {
    // Object form on the NetworkInfo (TaskInfo), array form on the task.
    let t = format!(
        r#"{{"id":"t1","name":"t","slave_id":"S1","state":"TASK_RUNNING","labels":[{{"key":"network-groups","value":"from-task"}}],
            "container":{{"type":"MESOS","network_infos":[{{"name":"dcos","labels":{{"labels":[{{"key":"network-groups","value":"from-net"}}]}}}}]}},"statuses":[{}]}}"#,
        running_status(r#"{"name":"dcos","ip_addresses":[{"ip_address":"9.0.0.5"}]}"#)
    );
    let v = parse(&master_state(&t));
    assert_eq!(
        groups(task(&v, "t1")),
        ["from-net"],
        "the NetworkInfo label wins over the task label"
    );
}

#[test]
fn quirk_06_protocol_is_optional_and_legacy_ip_address_is_read() {
    let t = format!(
        r#"{{"id":"t1","name":"t","slave_id":"S1","state":"TASK_RUNNING","container":{{"type":"MESOS","network_infos":[{{"groups":["g"]}}]}},"statuses":[{}]}}"#,
        running_status(r#"{"ip_address":"9.0.0.6"}"#)
    );
    let v = parse(&master_state(&t));
    assert_eq!(ips(task(&v, "t1")), [ip("9.0.0.6")]);
}

#[test]
fn quirk_07_host_and_bridge_networking_are_not_endpoints() {
    let host = r#"{"id":"h","name":"h","slave_id":"S1","state":"TASK_RUNNING","container":{"type":"DOCKER","docker":{"network":"HOST"}},"statuses":[{"state":"TASK_RUNNING","timestamp":1.0,"container_status":{"network_infos":[{"ip_addresses":[{"ip_address":"10.0.0.9"}]}]}}]}"#;
    let bridge = r#"{"id":"b","name":"b","slave_id":"S1","state":"TASK_RUNNING","container":{"type":"DOCKER","docker":{"network":"BRIDGE"}},"statuses":[{"state":"TASK_RUNNING","timestamp":1.0,"container_status":{"network_infos":[{"ip_addresses":[{"ip_address":"172.17.0.2"}]}]}}]}"#;
    let v = parse(&master_state(&format!("{host},{bridge}")));
    assert_eq!(task(&v, "h").not_enforced, Some(NotEnforced::HostNetwork));
    assert_eq!(task(&v, "b").not_enforced, Some(NotEnforced::NatBridge));
}

#[test]
fn quirk_08_task_ids_with_dots_keep_the_app_from_app_id() {
    let doc = r#"{"apps":[{"id":"/prod/web","version":"v1","ipAddress":{"groups":["g"]},
        "tasks":[{"id":"pod.instance-ea1231be.app.2","appId":"/prod/web","version":"v1","state":"TASK_RUNNING","ipAddresses":[{"ipAddress":"9.0.0.8","protocol":"IPv4"}]}]}]}"#;
    let v = parse(doc);
    assert_eq!(&*task(&v, "pod.instance-ea1231be.app.2").app, "/prod/web");
}

#[test]
fn quirk_09_empty_and_absent_are_decided_explicitly() {
    let app = |ip_address: &str, id: &str| {
        format!(
            r#"{{"id":"/{id}","version":"v1",{ip_address}"tasks":[{{"id":"{id}.1","appId":"/{id}","version":"v1","state":"TASK_RUNNING","ipAddresses":[{{"ipAddress":"9.0.9.{n}","protocol":"IPv4"}}]}}]}}"#,
            n = id.len()
        )
    };
    let doc = format!(
        r#"{{"apps":[{},{},{},{}]}}"#,
        app(r#""ipAddress":{"groups":[]},"#, "a"),
        app(r#""ipAddress":{},"#, "bb"),
        app(r#""ipAddress":null,"#, "ccc"),
        app("", "dddd")
    );
    let v = parse(&doc);
    let a = task(&v, "a.1");
    assert!(
        a.is_endpoint() && a.groups.is_empty(),
        "groups [] = an endpoint with no groups (R3)"
    );
    assert!(
        task(&v, "bb.1").is_endpoint(),
        "ipAddress {{}} = IP-per-task"
    );
    assert_eq!(
        task(&v, "ccc.1").not_enforced,
        Some(NotEnforced::HostNetwork),
        "ipAddress null = host"
    );
    assert_eq!(
        task(&v, "dddd.1").not_enforced,
        Some(NotEnforced::HostNetwork),
        "no ipAddress = host"
    );
    let empty = r#"{"type":"GET_STATE","get_state":{"get_tasks":{}}}"#;
    assert!(parse(empty).tasks.is_empty(), "get_tasks {{}} = no tasks");
}

#[test]
fn quirk_10_mid_deployment_tasks_keep_their_version_groups() {
    let mut versions = VersionCache::default();
    let g = GroupsConfig::default();
    let v1 = r#"{"apps":[{"id":"/web","version":"v1","ipAddress":{"groups":["old"]},"tasks":[{"id":"web.1","appId":"/web","version":"v1","state":"TASK_RUNNING","ipAddresses":[{"ipAddress":"9.0.1.1","protocol":"IPv4"}]}]}]}"#;
    parse_document(v1.as_bytes(), &g, &mut versions).expect("v1");
    let v2 = r#"{"apps":[{"id":"/web","version":"v2","ipAddress":{"groups":["new"]},"tasks":[
        {"id":"web.1","appId":"/web","version":"v1","state":"TASK_RUNNING","ipAddresses":[{"ipAddress":"9.0.1.1","protocol":"IPv4"}]},
        {"id":"web.2","appId":"/web","version":"v2","state":"TASK_RUNNING","ipAddresses":[{"ipAddress":"9.0.1.2","protocol":"IPv4"}]}]}]}"#;
    let v = parse_document(v2.as_bytes(), &g, &mut versions).expect("v2");
    assert_eq!(groups(task(&v, "web.1")), ["old"]);
    assert_eq!(groups(task(&v, "web.2")), ["new"]);
}

#[test]
fn quirk_11_sse_crlf_and_recordio_byte_lengths() {
    let mut sse = SseParser::new(1 << 20);
    let events = sse
        .feed(b"\r\n\r\nevent: status_update_event\r\ndata: {\"a\":1}\r\n\r\n\r\n")
        .expect("sse");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "status_update_event");
    // "é" is two bytes: the length counts bytes, not characters.
    let record = "{\"name\":\"é\"}";
    let framed = format!("{}\n{record}", record.len());
    let mut rio = RecordIoParser::new(1 << 20);
    let mut got = Vec::new();
    for b in framed.as_bytes() {
        got.extend(rio.feed(std::slice::from_ref(b)).expect("recordio"));
    }
    assert_eq!(got, vec![record.as_bytes().to_vec()]);
}

#[test]
fn quirk_12_a_task_re_added_after_failover_already_terminal_is_no_endpoint() {
    let t = format!(
        r#"{{"id":"t1","name":"t","slave_id":"S1","state":"TASK_FAILED","container":{{"type":"MESOS","network_infos":[{{"name":"dcos","groups":["g"]}}]}},"statuses":[{}]}}"#,
        running_status(r#"{"name":"dcos","ip_addresses":[{"ip_address":"9.0.0.12"}]}"#)
    );
    let v = parse(&master_state(&t));
    assert!(!task(&v, "t1").is_endpoint(), "a terminal task owns no IP");
}

#[test]
fn quirk_13_unreachable_tasks_keep_their_rules() {
    let t = format!(
        r#"{{"id":"t1","name":"t","slave_id":"S1","state":"TASK_UNREACHABLE","container":{{"type":"MESOS","network_infos":[{{"name":"dcos","groups":["g"]}}]}},"statuses":[{}]}}"#,
        running_status(r#"{"name":"dcos","ip_addresses":[{"ip_address":"9.0.0.13"}]}"#)
    );
    let v = parse(&master_state(&t));
    assert!(
        task(&v, "t1").is_endpoint(),
        "the container may still run: partitioned, not gone"
    );
}

#[test]
fn quirk_14_nanosecond_times_base64_uuids_and_escaped_slashes() {
    let doc = r#"{"type":"GET_STATE","get_state":{"get_tasks":{"tasks":[{"task_id":{"value":"app\/1"},"name":"x\/y","framework_id":{"value":"F1"},"agent_id":{"value":"S1"},"state":"TASK_RUNNING",
        "container":{"type":"MESOS","network_infos":[{"name":"dcos","groups":["g\/1"]}]},
        "statuses":[{"task_id":{"value":"app\/1"},"state":"TASK_RUNNING","timestamp":1525000000.123,"uuid":"q83vEjRWeJCrze8SNFZ4kA==",
          "container_status":{"network_infos":[{"name":"dcos","ip_addresses":[{"ip_address":"9.0.0.14"}]}]}}]}]},
        "get_frameworks":{"frameworks":[{"framework_info":{"id":{"value":"F1"},"name":"marathon"},"registered_time":{"nanoseconds":1525000000123456789}}]}}}"#;
    let v = parse(doc);
    let t = task(&v, "app/1");
    assert_eq!(groups(t), ["g/1"]);
    assert_eq!(ips(t), [ip("9.0.0.14")]);
}
