//! Helpers shared by the kernel-facing tests: a scratch network namespace
//! owned by the test (removed on drop, also on panic) and running code in it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace made by this test; deleted on drop.
pub struct ScratchNs {
    pub name: String,
}

impl ScratchNs {
    pub fn new(role: &str) -> ScratchNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("gdu{}x{}-{}", std::process::id(), n, role);
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(st.success(), "ip netns add {name} failed");
        ScratchNs { name }
    }

    /// Run `f` on a thread that has entered this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    }

    pub fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec");
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for ScratchNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn enter_netns(path: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).expect("open netns file");
    // SAFETY: setns on a valid namespace fd for the calling thread only.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Make sure the `nft` CLI (the test oracle) is installed.
pub fn require_nft() {
    let ok = Command::new("nft")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the nft CLI is missing: run `make deps` (apt-get install nftables)"
    );
}

/// `nft list` text with counters, handles and element order normalised.
pub fn normalise(text: &str) -> Vec<String> {
    let joined = text.replace(",\n", ", ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let mut l = line.trim().to_string();
        while let Some(i) = l.find("counter packets ") {
            let rest = &l[i + "counter packets ".len()..];
            let tail: Vec<&str> = rest.splitn(4, ' ').collect();
            l = format!(
                "{}counter{}",
                &l[..i],
                tail.get(3).map(|s| format!(" {s}")).unwrap_or_default()
            );
        }
        if let Some(body) = l
            .strip_prefix("elements = { ")
            .and_then(|b| b.strip_suffix(" }"))
        {
            let mut items: Vec<&str> = body.split(", ").map(|s| s.trim()).collect();
            items.sort();
            l = format!("elements = {{ {} }}", items.join(", "));
        }
        if !l.is_empty() {
            out.push(l);
        }
    }
    out
}

/// Group lines by set/map/chain: nft lists objects in creation order, which
/// is history, not configuration.
pub fn blocks(lines: Vec<String>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for l in lines {
        let opens = ["set ", "map ", "chain "].iter().any(|p| l.starts_with(p)) && l.ends_with('{');
        if opens {
            current = Some(l.clone());
            out.entry(l).or_default();
        } else if l == "}" {
            current = None;
        } else if let Some(c) = &current {
            out.entry(c.clone()).or_default().push(l);
        }
    }
    out
}

/// One Marathon app with one running task, as `/v2/apps?embed=apps.tasks`
/// lists it (the document the file-source tests write).
pub fn marathon_app(
    app: &str,
    groups: &[&str],
    task_id: &str,
    ips: &[std::net::IpAddr],
) -> serde_json::Value {
    let version = "2026-11-25T00:00:01.000Z";
    let addresses: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| {
            serde_json::json!({
                "ipAddress": ip.to_string(),
                "protocol": if ip.is_ipv4() { "IPv4" } else { "IPv6" },
            })
        })
        .collect();
    serde_json::json!({
        "id": format!("/{app}"),
        "version": version,
        "ipAddress": { "groups": groups },
        "tasks": [{
            "id": task_id,
            "appId": format!("/{app}"),
            "version": version,
            "state": "TASK_RUNNING",
            "ipAddresses": addresses,
        }],
    })
}

/// Write `{"apps": [...]}` to `path` (replaced atomically, as an operator would).
pub fn write_marathon_apps(path: &std::path::Path, apps: Vec<serde_json::Value>) {
    let tmp = path.with_extension("tmp");
    let doc = serde_json::json!({ "apps": apps });
    std::fs::write(&tmp, serde_json::to_vec(&doc).expect("json")).expect("write document");
    std::fs::rename(&tmp, path).expect("rename document");
}

/// The listing with every `elements = { … }` block's elements sorted and
/// laid out again with the same number of elements on each line.
pub fn sort_set_elements(text: &str) -> String {
    const OPEN: &str = "elements = { ";
    const WRAP: &str = ",\n\t\t\t     ";
    let mut out = String::new();
    let mut lines = text.split_inclusive('\n');
    while let Some(line) = lines.next() {
        let Some(at) = line.find(OPEN) else {
            out.push_str(line);
            continue;
        };
        let mut block = vec![&line[at + OPEN.len()..]];
        while !block.last().is_some_and(|l| l.trim_end().ends_with(" }")) {
            match lines.next() {
                Some(l) => block.push(l.trim_start_matches(['\t', ' '])),
                None => break,
            }
        }
        let mut per_line = Vec::new();
        let mut items: Vec<&str> = Vec::new();
        for l in block {
            let l = l.trim_end();
            let l = l.strip_suffix(" }").or(l.strip_suffix(',')).unwrap_or(l);
            let parts: Vec<&str> = l.split(", ").collect();
            per_line.push(parts.len());
            items.extend(parts);
        }
        items.sort_unstable();
        let mut items = items.into_iter();
        let lines_out: Vec<String> = per_line
            .iter()
            .map(|n| items.by_ref().take(*n).collect::<Vec<_>>().join(", "))
            .collect();
        out.push_str(&line[..at + OPEN.len()]);
        out.push_str(&lines_out.join(WRAP));
        out.push_str(" }\n");
    }
    out
}

/// The first line where two texts differ, with its number (None if equal).
pub fn first_difference(want: &str, got: &str) -> Option<String> {
    if want == got {
        return None;
    }
    let (w, g): (Vec<&str>, Vec<&str>) = (
        want.split_inclusive('\n').collect(),
        got.split_inclusive('\n').collect(),
    );
    let i = w.iter().zip(&g).take_while(|(a, b)| a == b).count();
    Some(format!(
        "line {}: nft {:?}, groupctl {:?}",
        i + 1,
        w.get(i).copied().unwrap_or("<end>"),
        g.get(i).copied().unwrap_or("<end>")
    ))
}

/// `counter packets N bytes M` read as 0: groupd's listing cannot know the
/// kernel's counts (the one difference a live listing may show).
pub fn zero_counters(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    const AT: &str = "counter packets ";
    while let Some(i) = rest.find(AT) {
        out.push_str(&rest[..i]);
        out.push_str("counter packets 0 bytes 0");
        let after = &rest[i + AT.len()..];
        // Skip "N bytes M".
        let mut words = after.splitn(4, ' ');
        let skipped: usize = (0..3)
            .filter_map(|_| words.next())
            .map(|w| w.len() + 1)
            .sum();
        rest = &after[(skipped.saturating_sub(1)).min(after.len())..];
    }
    out.push_str(rest);
    out
}

/// An `nft -j` object as groupd can know it: without handles, with counters zeroed and set elements sorted.
pub fn comparable(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                match k.as_str() {
                    "handle" => {}
                    // nft 1.0.6 does not know NFT_TABLE_F_PERSIST and
                    // calls it "unknown"; groupd names it.
                    "flags" if x.as_array().is_some_and(|f| f.contains(&"unknown".into())) => {
                        let named = x
                            .as_array()
                            .map(|f| {
                                f.iter()
                                    .map(|v| {
                                        if v == "unknown" {
                                            "persist".into()
                                        } else {
                                            v.clone()
                                        }
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        out.insert(k.clone(), Value::Array(named));
                    }
                    "counter" => {
                        out.insert(k.clone(), serde_json::json!({"packets": 0, "bytes": 0}));
                    }
                    "elem" => {
                        let mut elems: Vec<Value> = x
                            .as_array()
                            .map(|a| a.iter().map(comparable).collect())
                            .unwrap_or_default();
                        elems.sort_by_key(|e| e.to_string());
                        out.insert(k.clone(), Value::Array(elems));
                    }
                    _ => {
                        out.insert(k.clone(), comparable(x));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(comparable).collect()),
        other => other.clone(),
    }
}

/// The objects of one family's table in an `nft -j` document, comparable
/// (metainfo left out).
pub fn nft_json_objects(doc: &serde_json::Value, family: &str) -> Vec<serde_json::Value> {
    doc["nftables"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|o| {
                    o.as_object()
                        .and_then(|m| m.values().next())
                        .is_some_and(|v| v["family"] == family)
                })
                .map(comparable)
                .collect()
        })
        .unwrap_or_default()
}

/// A scratch directory for one groupd (document, config, socket, state),
/// removed on drop, also when the test fails.
pub struct GroupdDir(pub std::path::PathBuf);

impl GroupdDir {
    pub fn new(name: &str) -> GroupdDir {
        let dir = std::env::temp_dir().join(format!("groupd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        GroupdDir(dir)
    }

    /// `groupd.toml` for the file source reading `cluster.json` here, with
    /// `extra` lines in `[daemon]`; returns its path.
    pub fn file_source_config(&self, daemon_extra: &str) -> std::path::PathBuf {
        let config = self.0.join("groupd.toml");
        std::fs::write(
            &config,
            format!(
                "[source]\nkind = \"file\"\npath = {:?}\n[daemon]\nsocket = {:?}\nstate_dir = {:?}\n{daemon_extra}[metrics]\nlisten = \"\"\n",
                self.0.join("cluster.json"),
                self.0.join("groupd.sock"),
                self.0.join("state")
            ),
        )
        .expect("write config");
        config
    }
}

impl Drop for GroupdDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
