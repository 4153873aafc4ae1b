//! What the `etcd` source and `groupd publish` share: how to reach etcd,
//! where the keys are, and what one task's value holds
//! (docs/design.md §2, the `etcd` row).
//!
//! Layout under the prefix `P` (default `/groupd/v1`):
//! * `P/tasks/<task id, percent-encoded>` -> one [`Record`] per task, as
//!   compact JSON;
//! * `P/publisher` -> the identity of the publisher that leads (written in
//!   its first transaction as leader, shown by `groupctl status`);
//! * `P/leader/<lease>` -> the election's candidates (etcd's election API;
//!   the oldest key leads).
//!
//! Agents range-read and watch `P/` as a whole (tasks and the publisher's
//! identity in one revision order) and ignore the candidates.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};

use crate::config::EtcdSettings;
use crate::model::{
    DiscoveryPort, GroupName, Interned, NotEnforced, OriginSet, Task, TaskState, VecMap, VecSet,
};

/// The value's schema version: an agent rejects a value of another version
/// (a newer publisher than the agents must be rolled out after them).
pub const SCHEMA: u32 = 1;

/// Bytes left as they are in a key; everything else is `%XX` (a task id is
/// any string; `/` would otherwise nest keys).
const KEY_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The keys of one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// Everything groupd keeps (agents read and watch this).
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The tasks' keys start with this.
    pub fn tasks(&self) -> String {
        format!("{}/tasks/", self.prefix)
    }

    pub fn task(&self, id: &str) -> String {
        format!("{}{}", self.tasks(), utf8_percent_encode(id, KEY_SAFE))
    }

    /// The publisher's identity.
    pub fn publisher(&self) -> String {
        format!("{}/publisher", self.prefix)
    }

    /// The election's name (candidates are keys below it).
    pub fn election(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// What a key under [`Keys::all`] is.
    pub fn classify(&self, key: &[u8]) -> KeyKind {
        let Ok(key) = std::str::from_utf8(key) else {
            return KeyKind::Other;
        };
        if let Some(encoded) = key.strip_prefix(&self.tasks()) {
            return match percent_decode_str(encoded).decode_utf8() {
                Ok(id) if !id.is_empty() => KeyKind::Task(id.into_owned()),
                _ => KeyKind::Other,
            };
        }
        if key == self.publisher() {
            return KeyKind::Publisher;
        }
        KeyKind::Other
    }
}

/// What a key is, for an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    Task(String),
    Publisher,
    /// Election candidates and anything unknown: ignored.
    Other,
}

/// One task's value: what enforcement and `groupctl` need, nothing more
/// (labels stay on the master: groups were already taken from them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    pub app: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Interned>,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "VecSet::is_empty")]
    pub ips: VecSet<IpAddr>,
    #[serde(default, skip_serializing_if = "VecMap::is_empty")]
    pub groups: VecMap<GroupName, OriginSet>,
    #[serde(default, skip_serializing_if = "VecSet::is_empty")]
    pub ports: VecSet<DiscoveryPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_enforced: Option<NotEnforced>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<Box<str>>,
}

/// The value the publisher writes for `task`.
pub fn encode(task: &Task) -> Vec<u8> {
    let record = Record {
        v: SCHEMA,
        app: task.app.clone(),
        agent: task.agent.clone(),
        state: task.state.clone(),
        ips: task.ips.clone(),
        groups: task.groups.clone(),
        ports: task.discovery_ports.clone(),
        not_enforced: task.not_enforced.clone(),
        note: task.note.clone(),
        invalid: task.invalid.clone(),
    };
    // Serializing plain data to a Vec cannot fail.
    serde_json::to_vec(&record).unwrap_or_default()
}

/// The task an agent reads from `value` under the key of task `id`.
pub fn decode(id: &str, value: &[u8]) -> Result<Task, String> {
    let r: Record = serde_json::from_slice(value)
        .map_err(|e| format!("the value of task {id:?} is not a groupd record ({e})"))?;
    if r.v != SCHEMA {
        return Err(format!(
            "the value of task {id:?} has schema version {} (this groupd reads {SCHEMA}): upgrade the agents before the publishers",
            r.v
        ));
    }
    Ok(Task {
        id: id.into(),
        app: r.app,
        agent: r.agent,
        state: r.state,
        ips: r.ips,
        groups: r.groups,
        labels: VecMap::new(),
        discovery_ports: r.ports,
        not_enforced: r.not_enforced,
        note: r.note,
        invalid: r.invalid,
    })
}

/// How long a unary request (range page, txn, lease grant) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for member `attempt % n` of `settings.urls`, one member per
/// client: tonic's balancer keeps sending a share of the requests to a
/// dead member (each fails with "connection refused"), so failover is
/// ours: a caller whose session fails connects with the next `attempt`.
/// Connections are made lazily; what can fail here is reading the
/// credential files and, with a user, authenticating.
pub async fn connect(settings: &EtcdSettings, attempt: usize) -> Result<Client, String> {
    let url = match settings.urls.get(attempt % settings.urls.len().max(1)) {
        Some(u) => u.clone(),
        None => return Err("no etcd URL configured".into()),
    };
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        // A dead member is noticed in seconds, not at the next request.
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true)
        // A member cut off from the quorum refuses (and cancels watches):
        // the caller moves to one that can serve current data.
        .with_require_leader(true);
    if url.starts_with("https://") {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &settings.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca, "ca_file")?));
        }
        if let (Some(cert), Some(key)) = (&settings.cert_file, &settings.key_file) {
            tls = tls.identity(Identity::from_pem(
                read(cert, "cert_file")?,
                read(key, "key_file")?,
            ));
        }
        options = options.with_tls(tls);
    }
    if let (Some(user), Some(file)) = (&settings.username, &settings.password_file) {
        let password = String::from_utf8(read(file, "password_file")?)
            .map_err(|_| format!("password_file {} is not UTF-8", file.display()))?;
        options = options.with_user(user.clone(), password.trim_end_matches(['\r', '\n']));
    }
    let connecting = Client::connect([url.as_str()], Some(options));
    match tokio::time::timeout(REQUEST_TIMEOUT, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!(
            "cannot connect to etcd {url}: {e} (check the URL, TLS files and credentials)"
        )),
        Err(_) => Err(format!(
            "etcd {url} did not answer within {} s",
            REQUEST_TIMEOUT.as_secs()
        )),
    }
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {key} {}: {e}", path.display()))
}

/// How long a write transaction may take. A proposal in flight when the
/// raft leader dies is only failed by etcd after its own request timeout
/// (about 7 s); giving up sooner and starting a new term (whose diff
/// rewrites whatever was lost) keeps changes flowing through an election.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// `request` with [`REQUEST_TIMEOUT`], its error as text.
pub async fn timed<T>(
    what: &str,
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    timed_for(what, REQUEST_TIMEOUT, request).await
}

/// `request` with `limit`, its error as text.
pub async fn timed_for<T>(
    what: &str,
    limit: Duration,
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("etcd {what}: {e}")),
        Err(_) => Err(format!(
            "etcd {what}: no answer within {:.1} s",
            limit.as_secs_f64()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GroupOrigin;

    #[test]
    fn any_task_id_makes_one_key_and_comes_back() {
        let keys = Keys::new("/groupd/v1");
        for id in ["web.1", "a/b c%", "ünï", "x\n/y"] {
            let key = keys.task(id);
            let rest = key.strip_prefix("/groupd/v1/tasks/").expect("prefix");
            assert!(!rest.contains('/'), "{key}");
            assert_eq!(keys.classify(key.as_bytes()), KeyKind::Task(id.into()));
        }
        assert_eq!(keys.classify(b"/groupd/v1/publisher"), KeyKind::Publisher);
        assert_eq!(keys.classify(b"/groupd/v1/leader/694d"), KeyKind::Other);
    }

    #[test]
    fn a_record_keeps_what_enforcement_needs() {
        let mut t = Task::running("web.1", "/web", ["10.233.0.1".parse().expect("ip")], &["a"]);
        t.add_group("b", GroupOrigin::TaskLabel);
        t.labels.insert("network-groups".into(), "b".into());
        let value = encode(&t);
        let back = decode("web.1", &value).expect("decodes");
        let mut want = t.clone();
        want.labels = VecMap::new();
        assert_eq!(back, want);
        assert!(value.len() < 120, "{}", String::from_utf8_lossy(&value));
        let err = decode("web.1", br#"{"v":2,"app":"x","state":"Running"}"#).expect_err("v2");
        assert!(err.contains("upgrade the agents"), "{err}");
    }
}
