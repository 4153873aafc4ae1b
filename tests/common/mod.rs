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
