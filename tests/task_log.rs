//! One log line per change of a local task's enforcement, naming the task
//! and its app: the real daemon in a simulated agent's namespace, fed a
//! Marathon document by the file source, with real veths.

#[path = "netns/mod.rs"]
mod netns;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use netns::Cluster;

/// A scratch directory removed on drop, also when the test fails.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (task id, app, IPv4, IPv6, state, groups)
type Row<'a> = (&'a str, &'a str, String, String, &'a str, &'a [&'a str]);

fn write_document(path: &Path, rows: &[Row]) {
    let apps: Vec<serde_json::Value> = rows
        .iter()
        .map(|(id, app, v4, v6, state, groups)| {
            let version = "2026-11-25T00:00:01.000Z";
            serde_json::json!({
                "id": app,
                "version": version,
                "ipAddress": { "groups": groups },
                "tasks": [{
                    "id": id,
                    "appId": app,
                    "version": version,
                    "state": state,
                    "ipAddresses": [
                        { "ipAddress": v4, "protocol": "IPv4" },
                        { "ipAddress": v6, "protocol": "IPv6" },
                    ],
                }],
            })
        })
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::json!({ "apps": apps }).to_string()).expect("write doc");
    std::fs::rename(&tmp, path).expect("rename doc");
}

/// Wait until the log has a line containing every one of `parts`; that line.
fn wait_for_line(log: &Path, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {parts:?} in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root: runs groupd in a network namespace it creates, with real veths"]
fn task_events_are_logged_with_task_and_app() {
    let mut cluster = Cluster::new("task_log");
    let agent = cluster.add_agent("tasklog");
    let web = cluster.add_routed_task(agent, "web");
    let api = cluster.add_routed_task(agent, "api");
    let ns = cluster.agent(agent).ns.clone();
    let (web, api) = (cluster.task(web).clone(), cluster.task(api).clone());
    let dir = Scratch(std::env::temp_dir().join(format!("groupd-tasklog-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).expect("scratch dir");
    let doc = dir.0.join("apps.json");
    let ips = |t: &netns::TaskInfo| (t.ipv4.to_string(), t.ipv6.to_string());
    let ((w4, w6), (a4, a6)) = (ips(&web), ips(&api));
    write_document(
        &doc,
        &[
            (
                "web.t1",
                "/web",
                w4.clone(),
                w6.clone(),
                "TASK_RUNNING",
                &["front"],
            ),
            (
                "api.t1",
                "/api",
                a4.clone(),
                a6.clone(),
                "TASK_RUNNING",
                &["back"],
            ),
        ],
    );
    let config = dir.0.join("groupd.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"file\"\npath = {doc:?}\n[interfaces]\nmatch = [\"veth*\"]\n[daemon]\nsocket = {:?}\nstate_dir = {:?}\n[metrics]\nlisten = \"\"\n",
            dir.0.join("groupd.sock"),
            dir.0.join("state")
        ),
    )
    .expect("write config");
    let log = dir.0.join("groupd.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_groupd"));
    cmd.arg("--config")
        .arg(&config)
        .arg("run")
        .env("GROUPD_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stderr(std::fs::File::create(&log).expect("log file"));
    let daemon = cluster.spawn_in(&ns, &mut cmd);

    let line = wait_for_line(&log, &["task enforced", "task=web.t1", "app=/web"]);
    assert!(
        line.contains(&format!("interfaces={}", web.host_iface))
            && line.contains(&w4)
            && line.contains(&w6)
            && line.contains("groups=front"),
        "{line}"
    );
    wait_for_line(&log, &["task enforced", "task=api.t1", "app=/api"]);

    // web gains a group, api is killed.
    write_document(
        &doc,
        &[
            (
                "web.t1",
                "/web",
                w4.clone(),
                w6.clone(),
                "TASK_RUNNING",
                &["front", "edge"],
            ),
            (
                "api.t1",
                "/api",
                a4.clone(),
                a6.clone(),
                "TASK_KILLED",
                &["back"],
            ),
        ],
    );
    let line = wait_for_line(&log, &["task groups changed", "task=web.t1", "app=/web"]);
    assert!(
        line.contains("old=front") && line.contains("new=edge,front"),
        "{line}"
    );
    let line = wait_for_line(&log, &["task not enforced", "task=api.t1", "app=/api"]);
    assert!(line.contains("terminal state"), "{line}");

    // web's app is deleted.
    write_document(&doc, &[]);
    wait_for_line(&log, &["task removed", "task=web.t1", "app=/web"]);

    daemon.terminate().expect("stop groupd");
    let _ = daemon.wait_timeout(Duration::from_secs(5));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // One line per event: no repeats while nothing changed.
    assert_eq!(text.matches("task groups changed").count(), 1, "{text}");
    assert_eq!(text.matches("task removed").count(), 1, "{text}");
}
