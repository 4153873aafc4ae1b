//! The unix-socket API that `groupctl` talks to: one JSON request line in,
//! one JSON document out. The socket is created mode 0600 (root only).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::binding::Bindings;
use crate::compile::{effective_groups, DEST_CHECK, EGRESS, GATED, INGRESS, SOURCE_CHECK};
use crate::daemon::Health;
use crate::model::{GroupOrigin, NotEnforced, Task};
use crate::state::DesiredState;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Endpoints; `all` includes remote tasks and tasks that are not enforced.
    Show {
        all: bool,
    },
    Groups,
    Status,
    /// The ruleset groupd intends, in `nft` syntax (compare with `nft list table`).
    Ruleset,
    /// What this agent does with a new flow from `src` to `dst` (IPs or task
    /// IDs; `src` may be "host" for this agent itself).
    Explain {
        src: String,
        dst: String,
        proto: crate::explain::Proto,
        port: Option<u16>,
    },
    /// Recent drops (`[drops] log`): those after seq `after`, involving
    /// task `task` if given. Answered by the daemon loop, which keeps them.
    Drops {
        #[serde(default)]
        task: Option<String>,
        #[serde(default)]
        after: Option<u64>,
    },
}

/// One row of `groupctl show`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndpointRow {
    pub task: String,
    pub app: String,
    pub ips: Vec<IpAddr>,
    pub interfaces: Vec<String>,
    /// Effective groups (after `groups.ungrouped`).
    pub groups: Vec<String>,
    /// Where each group came from.
    pub origins: BTreeMap<String, Vec<GroupOrigin>>,
    pub task_state: String,
    /// "enforced", "remote", or `"not enforced: <reason>"`; followed by
    /// `"; keeping last good data: <reason>"` when the master's latest data
    /// for the task was rejected and the last good data is still used.
    pub enforcement: String,
    pub note: Option<String>,
    /// Why the master's latest data for the task was rejected, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupRow {
    pub group: String,
    pub open: bool,
    pub members: Vec<String>,
    pub local_members: Vec<String>,
    pub addresses: usize,
}

/// Why groupd's rules drop a packet: one counted drop chain of the inet table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropReason {
    /// Stable id: the `reason` label of `groupd_dropped_packets_total` and the
    /// key in `groupctl status --json`. Never change one (dashboards and
    /// alerts depend on it); add a new id instead.
    pub id: &'static str,
    /// The chain whose counted drop rules count these packets.
    pub chain: &'static str,
    /// For people (`groupctl status`).
    pub text: &'static str,
}

/// Every drop reason, in the order `groupctl status` lists them.
pub const DROP_REASONS: [DropReason; 5] = [
    DropReason {
        id: "r7_spoofed_source",
        chain: SOURCE_CHECK,
        text: "spoofed source or unknown task interface (R7, R8)",
    },
    DropReason {
        id: "r8_unknown_interface",
        chain: DEST_CHECK,
        text: "to an unknown task interface (R8)",
    },
    DropReason {
        id: "r1_r4_egress_denied",
        chain: EGRESS,
        text: "egress denied (R1, R4)",
    },
    DropReason {
        id: "r1_r5_ingress_denied",
        chain: INGRESS,
        text: "ingress denied (R1, R5)",
    },
    DropReason {
        id: "r9_not_discovery_port",
        chain: GATED,
        text: "not on a discovery port (R9)",
    },
];

/// The text for people of a drop reason id (`None` for an unknown id, e.g.
/// from a newer daemon).
pub fn drop_reason_text(id: &str) -> Option<&'static str> {
    DROP_REASONS.iter().find(|r| r.id == id).map(|r| r.text)
}

/// Packets (and bytes) groupd's rules dropped, by [`DropReason::id`]: the
/// counters of the dropping rules, read from the kernel. Every reason is
/// present (zero when its chain is missing), so the label set is stable.
pub fn drops(counters: &HashMap<String, Vec<(u64, u64)>>) -> BTreeMap<&'static str, (u64, u64)> {
    DROP_REASONS
        .iter()
        .map(|r| {
            let sum = counters.get(r.chain).map_or((0, 0), |c| {
                c.iter().fold((0, 0), |(p, b), (cp, cb)| (p + cp, b + cb))
            });
            (r.id, sum)
        })
        .collect()
}

/// Why the daemon is not in sync, or `None` when it is: the source's last
/// answer was a complete view and the kernel holds what groupd computed from
/// it. `groupctl status` exits non-zero while this is `Some`.
pub fn sync_problem(h: &Health) -> Option<String> {
    match h.source_state.as_str() {
        "in-sync" => {}
        "degraded" => {
            return Some(format!(
                "the source is degraded ({}); the last applied rules stay in force",
                h.degraded_reason.as_deref().unwrap_or("no reason given")
            ))
        }
        other => return Some(format!("the source has not answered yet ({other})")),
    }
    if !h.kernel_in_sync {
        return Some(
            "the kernel does not hold groupd's state (the last transaction failed; see the log)"
                .into(),
        );
    }
    None
}

pub(crate) fn reason(n: &NotEnforced) -> &'static str {
    match n {
        NotEnforced::HostNetwork => "host networking",
        NotEnforced::NatBridge => "NAT bridge (IP not unique)",
        NotEnforced::NoAddress => "no IP yet",
        NotEnforced::Terminal => "terminal state",
        NotEnforced::Invalid => "invalid data",
    }
}

/// `groupctl show`'s enforcement column for task `t`, `local` when one of
/// its IPs is bound on this agent.
fn enforcement(t: &Task, local: bool) -> String {
    let state = match (&t.not_enforced, t.is_endpoint(), local) {
        (Some(NotEnforced::Invalid), _, _) => {
            // The reason itself, e.g. `unparseable IP "not-an-ip"`.
            let why = t
                .invalid
                .as_deref()
                .unwrap_or(reason(&NotEnforced::Invalid));
            return format!("not enforced: {why}");
        }
        (Some(n), _, _) => format!("not enforced: {}", reason(n)),
        (None, false, _) if t.state.is_terminal() => "not enforced: terminal state".into(),
        (None, false, _) => "not enforced: no IP yet".into(),
        (None, true, true) => "enforced".into(),
        (None, true, false) => "remote".into(),
    };
    match &t.invalid {
        Some(why) => format!("{state}; keeping last good data: {why}"),
        None => state,
    }
}

pub fn endpoint_rows(state: &DesiredState, all: bool) -> Vec<EndpointRow> {
    let mut rows = Vec::new();
    for t in state.view().tasks.values() {
        let interfaces: BTreeSet<String> = t
            .ips
            .iter()
            .filter_map(|ip| state.binding_of(ip))
            .map(|b| b.iface.clone())
            .collect();
        let local = !interfaces.is_empty();
        let enforcement = enforcement(t, local);
        if !all && !local {
            continue;
        }
        rows.push(EndpointRow {
            task: t.id.to_string(),
            app: t.app.to_string(),
            ips: t.ips.iter().copied().collect(),
            interfaces: interfaces.into_iter().collect(),
            groups: effective_groups(t, state.policy())
                .iter()
                .map(|g| g.to_string())
                .collect(),
            origins: t
                .groups
                .iter()
                .map(|(g, o)| (g.to_string(), o.iter().collect()))
                .collect(),
            task_state: t.state.as_str().to_string(),
            enforcement,
            note: t.note.as_deref().map(str::to_string),
            invalid: t.invalid.as_deref().map(str::to_string),
        });
    }
    rows
}

pub fn group_rows(state: &DesiredState) -> Vec<GroupRow> {
    let mut groups: BTreeMap<String, GroupRow> = BTreeMap::new();
    for t in state.view().endpoints() {
        let local = t.ips.iter().any(|ip| state.binding_of(ip).is_some());
        for g in effective_groups(t, state.policy()) {
            let row = groups.entry(g.to_string()).or_insert_with(|| GroupRow {
                group: g.to_string(),
                open: state.policy().open.contains(g.as_str()),
                members: vec![],
                local_members: vec![],
                addresses: 0,
            });
            row.members.push(t.id.to_string());
            row.addresses += t.ips.len();
            if local {
                row.local_members.push(t.id.to_string());
            }
        }
    }
    groups.into_values().collect()
}

/// The text `groupctl ruleset` prints for the daemon's answer to
/// [`Request::Ruleset`]: the inet table, then the bridge table, in `nft`
/// syntax. Here rather than in groupctl so tests can render it the same way.
pub fn ruleset_text(answer: &serde_json::Value) -> String {
    let table = |family: &str| answer.get(family).and_then(|x| x.as_str()).unwrap_or("");
    format!("{}{}", table("inet"), table("bridge"))
}

/// This process's name as nft shows the owner of a table (its `comm`).
fn owner_progname() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .map(|c| c.trim_end().to_string())
        .unwrap_or_else(|_| "groupd".to_string())
}

pub fn answer(
    req: &Request,
    state: &DesiredState,
    bindings: &Bindings,
    health: &Health,
    counters: &HashMap<String, Vec<(u64, u64)>>,
) -> serde_json::Value {
    let value = match req {
        Request::Show { all } => serde_json::to_value(endpoint_rows(state, *all)),
        Request::Groups => serde_json::to_value(group_rows(state)),
        Request::Explain {
            src,
            dst,
            proto,
            port,
        } => match resolve_pair(state, src, dst) {
            Ok((from_host, s, d)) => serde_json::to_value(crate::explain::explain(
                state, s, d, *proto, *port, from_host,
            )),
            Err(e) => Ok(serde_json::json!({ "error": e.to_string() })),
        },
        Request::Ruleset => {
            let (mut inet, mut bridge) = state.tables();
            if health.table_guard == "owner" {
                for t in [&mut inet, &mut bridge] {
                    t.owner = Some(owner_progname());
                }
            }
            serde_json::to_value(serde_json::json!({
                "inet": inet.to_nft_text(),
                "bridge": bridge.to_nft_text(),
                // What `groupctl ruleset --json` prints (`nft -j` schema).
                "nftables_json": crate::ruleset::nft_json(&[&inet, &bridge]),
            }))
        }
        Request::Drops { .. } => Ok(serde_json::json!({
            "error": "drops are kept by the daemon loop, not in the desired state"
        })),
        Request::Status => serde_json::to_value(serde_json::json!({
            "health": health,
            "tasks": state.view().tasks.len(),
            "endpoints": state.view().endpoints().count(),
            "task_interfaces": bindings.interfaces.len(),
            "kernel_elements": state.element_count(),
            "dropped_packets_bytes": drops(counters),
        })),
    };
    value.unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}

/// Why `groupctl explain` cannot name two addresses to explain.
#[derive(Debug, thiserror::Error)]
enum Unresolved {
    #[error("task {0:?} has no IP address")]
    NoAddress(String),
    #[error("{0:?} is neither an IP address nor a known task ID (see groupctl show --all)")]
    Unknown(String),
    #[error("{0:?} and {1:?} have no address family in common")]
    NoCommonFamily(String, String),
}

/// IPs or task IDs -> addresses of one family. "host" means this agent.
fn resolve_pair(
    state: &DesiredState,
    src: &str,
    dst: &str,
) -> Result<(bool, IpAddr, IpAddr), Unresolved> {
    let ips_of = |what: &str| -> Result<Vec<IpAddr>, Unresolved> {
        if let Ok(ip) = what.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        match state.view().tasks.get(what) {
            Some(t) if !t.ips.is_empty() => Ok(t.ips.iter().copied().collect()),
            Some(_) => Err(Unresolved::NoAddress(what.to_string())),
            None => Err(Unresolved::Unknown(what.to_string())),
        }
    };
    let dsts = ips_of(dst)?;
    if src == "host" {
        let d = dsts[0];
        let any: IpAddr = if d.is_ipv4() {
            [0u8, 0, 0, 0].into()
        } else {
            [0u16; 8].into()
        };
        return Ok((true, any, d));
    }
    let srcs = ips_of(src)?;
    for s in &srcs {
        if let Some(d) = dsts.iter().find(|d| d.is_ipv4() == s.is_ipv4()) {
            return Ok((false, *s, *d));
        }
    }
    Err(Unresolved::NoCommonFamily(src.to_string(), dst.to_string()))
}

/// Listen on `path` (0600); every request is answered by the main loop.
pub async fn serve(
    path: &Path,
    queries: mpsc::Sender<(Request, oneshot::Sender<serde_json::Value>)>,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // A stale socket from a previous run would make bind fail.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {} (set daemon.socket)", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let queries = queries.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = BufReader::new(read).take(64 * 1024);
                if reader.read_line(&mut line).await.is_err() {
                    return;
                }
                let reply = match serde_json::from_str::<Request>(&line) {
                    Ok(req) => {
                        let (tx, rx) = oneshot::channel();
                        if queries.send((req, tx)).await.is_err() {
                            return;
                        }
                        rx.await.unwrap_or_else(
                            |_| serde_json::json!({"error": "groupd is shutting down"}),
                        )
                    }
                    Err(e) => serde_json::json!({ "error": format!("bad request: {e}") }),
                };
                let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
                bytes.push(b'\n');
                if let Err(e) = write.write_all(&bytes).await {
                    warn!("groupctl connection: {e}");
                }
            });
        }
    });
    Ok(())
}

use tokio::io::AsyncReadExt as _;
