//! `/etc/groupd/groupd.toml`: the configuration and its validation.
//!
//! Every key has a default except `[source]`. Unknown keys and bad values are
//! rejected with a message naming the key and the line, so a typo never
//! silently turns into a default.
//!
//! Values are typed as they are read ([`values`]: durations, interface
//! patterns, `ungrouped`, CIDRs), and each section checks what its keys
//! need together ([`Section::check`]); the line of a message comes from the
//! parser's spans ([`spans`]). A new section is a struct with its serde
//! defaults, a `Section` impl, and one line in [`Config::check`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::net::Cidr;

mod check;
mod drops;
mod spans;
mod values;
pub use check::Findings;
pub use drops::{DropsConfig, Rate, DEFAULT_BURST as DROPS_DEFAULT_BURST};
pub use values::{BadValue, IfacePattern, Ungrouped};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: SourceConfig,
    #[serde(default)]
    pub interfaces: InterfacesConfig,
    #[serde(default)]
    pub groups: GroupsConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub drops: DropsConfig,
    /// `groupd publish`: where the cluster view read from `[source]` is
    /// written (etcd). Unused by the agent daemon.
    #[serde(default)]
    pub publish: Option<PublishConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Mesos,
    Marathon,
    File,
    /// A key prefix in etcd, kept by `groupd publish` (docs/design.md §2).
    Etcd,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub kind: SourceKind,
    /// Master URLs (mesos, marathon), tried in order.
    #[serde(default)]
    pub urls: Vec<String>,
    /// The document to read (file).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Full resync period (written in seconds).
    #[serde(
        default = "default_resync_interval",
        deserialize_with = "values::seconds::resync_interval",
        serialize_with = "values::seconds::serialize"
    )]
    pub resync_interval: Duration,
    /// HTTP basic auth user; the password is read from `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// DC/OS token file (`Authorization: token=…`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// CA bundle for TLS to the masters.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// TLS verification; on unless explicitly turned off.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// etcd: the key prefix `groupd publish` writes under.
    #[serde(default = "default_etcd_prefix")]
    pub prefix: String,
    /// etcd: TLS client certificate and its key (PEM), for etcd members
    /// that require client certificates.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// `[publish]`: `groupd publish` keeps etcd equal to what `[source]` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// etcd client URLs (`http://host:2379` or `https://…`).
    pub etcd_urls: Vec<String>,
    #[serde(default = "default_etcd_prefix")]
    pub prefix: String,
    /// CA bundle that signed the etcd members' certificates (https).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// TLS client certificate and key (PEM).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// etcd user; the password is read from `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Leadership lease, seconds: a standby takes over at most this long
    /// after the leader died.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: u32,
    /// Shown by `groupctl status` on every agent; default `hostname:pid`.
    #[serde(default)]
    pub identity: Option<String>,
}

/// How to reach etcd: the `etcd` source and `groupd publish` share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    pub urls: Vec<String>,
    pub prefix: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

impl SourceConfig {
    pub fn etcd(&self) -> EtcdSettings {
        EtcdSettings {
            urls: self.urls.clone(),
            prefix: self.prefix.clone(),
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            username: self.username.clone(),
            password_file: self.password_file.clone(),
        }
    }
}

impl PublishConfig {
    pub fn etcd(&self) -> EtcdSettings {
        EtcdSettings {
            urls: self.etcd_urls.clone(),
            prefix: self.prefix.clone(),
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            username: self.username.clone(),
            password_file: self.password_file.clone(),
        }
    }
}

impl EtcdSettings {
    /// Why these settings cannot work, naming `section`'s keys.
    fn validate(&self, section: &str, urls_key: &str) -> Result<(), String> {
        if self.urls.is_empty() {
            return Err(format!(
                "{section} needs `{urls_key} = [\"http://etcd1:2379\", …]` (the etcd members' client URLs)"
            ));
        }
        for u in &self.urls {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(format!(
                    "{section}.{urls_key}: {u:?} must start with http:// or https://"
                ));
            }
        }
        if self.urls.iter().any(|u| u.starts_with("https://")) && self.ca_file.is_none() {
            return Err(format!(
                "{section}: https etcd URLs need `ca_file` (the CA that signed the members' certificates)"
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(format!("{section}: cert_file and key_file go together"));
        }
        if self.username.is_some() != self.password_file.is_some() {
            return Err(format!("{section}: username and password_file go together"));
        }
        let p = &self.prefix;
        if !p.starts_with('/') || p.ends_with('/') || p.len() < 2 {
            return Err(format!(
                "{section}.prefix = {p:?}: use an absolute key prefix without a trailing slash, like \"/groupd/v1\""
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfacesConfig {
    /// Task interface names: exact names or a prefix followed by `*`.
    #[serde(default = "default_match")]
    pub r#match: Vec<IfacePattern>,
    /// Ports of these bridges are never task interfaces.
    #[serde(default = "default_ignore_bridges")]
    pub ignore_bridges: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsConfig {
    #[serde(default = "default_label_key")]
    pub label_key: String,
    #[serde(default = "default_open")]
    pub open: Vec<String>,
    /// "isolated" or "group:NAME".
    #[serde(default = "default_ungrouped")]
    pub ungrouped: Ungrouped,
    /// Longest group name accepted from the master, in bytes. A task naming
    /// a longer one is reported and its data rejected (never truncated).
    #[serde(default = "default_max_name_len")]
    pub max_name_len: usize,
    /// Longest label key or value accepted from the master, in bytes; as
    /// for names, the task is reported and its data rejected.
    #[serde(default = "default_max_label_len")]
    pub max_label_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressNonEndpoint {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default = "default_egress")]
    pub egress_non_endpoint: EgressNonEndpoint,
    /// With `egress_non_endpoint = "deny"`: destinations still allowed.
    #[serde(default)]
    pub egress_allow: Vec<Cidr>,
    #[serde(default = "default_true")]
    pub allow_from_host: bool,
    /// Sources outside the cluster allowed to reach every endpoint (R5).
    #[serde(default)]
    pub ingress_allow: Vec<Cidr>,
    #[serde(default)]
    pub enforce_discovery_ports: bool,
    /// Directory of extra policy files (`*.toml`), see `policies/`.
    #[serde(default)]
    pub policies_dir: Option<PathBuf>,
}

/// A file of `policy.policies_dir`: extra allowances shipped or written by
/// operators (see `policies/` in the source tree).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Sources outside the cluster allowed to reach every endpoint (R5).
    #[serde(default)]
    pub ingress_allow: Vec<Cidr>,
    /// Non-endpoint destinations endpoints may reach when egress is denied (R4).
    #[serde(default)]
    pub egress_allow: Vec<Cidr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Between read-backs of the kernel table (drift repair; written in seconds).
    #[serde(
        default = "default_verify_interval",
        deserialize_with = "values::seconds::verify_interval",
        serialize_with = "values::seconds::serialize"
    )]
    pub verify_interval: Duration,
    /// nftables table name (both `inet` and `bridge` families).
    #[serde(default = "default_table")]
    pub table: String,
    /// How groupd keeps others from changing its tables.
    #[serde(default)]
    pub table_guard: TableGuard,
}

/// How groupd guards its tables against changes by other processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableGuard {
    /// `owner` where the kernel supports owned, persistent tables, else `notify`.
    #[default]
    Auto,
    /// The kernel refuses every change by another process (Linux 6.9+);
    /// groupd does not start where the kernel cannot do it.
    Owner,
    /// Listen to nf_tables notifications and repair a change by someone
    /// else at once.
    Notify,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port`, or "" to disable.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

fn default_etcd_prefix() -> String {
    "/groupd/v1".into()
}
fn default_lease_ttl() -> u32 {
    10
}
fn default_true() -> bool {
    true
}
fn default_resync_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_match() -> Vec<IfacePattern> {
    ["veth", "cali", "mesos-"]
        .into_iter()
        .map(|p| IfacePattern::Prefix(p.into()))
        .collect()
}
fn default_ignore_bridges() -> Vec<String> {
    vec!["docker0".into()]
}
fn default_label_key() -> String {
    "network-groups".into()
}
fn default_open() -> Vec<String> {
    vec!["public".into()]
}
fn default_max_name_len() -> usize {
    256
}
fn default_max_label_len() -> usize {
    4096
}
fn default_ungrouped() -> Ungrouped {
    Ungrouped::Isolated
}
fn default_egress() -> EgressNonEndpoint {
    EgressNonEndpoint::Allow
}
fn default_socket() -> PathBuf {
    "/run/groupd/groupd.sock".into()
}
fn default_state_dir() -> PathBuf {
    "/var/lib/groupd".into()
}
/// Longest `daemon.verify_interval`: drift (someone flushing the table)
/// stays unrepaired that long, and `/healthz` tolerates three intervals
/// without a read-back. The watchdog has its own ticker.
pub const MAX_VERIFY_INTERVAL: f64 = 3600.0;

fn default_verify_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_table() -> String {
    "groupd".into()
}
fn default_metrics_listen() -> String {
    "127.0.0.1:9490".into()
}

impl Default for InterfacesConfig {
    fn default() -> Self {
        InterfacesConfig {
            r#match: default_match(),
            ignore_bridges: default_ignore_bridges(),
        }
    }
}
impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            label_key: default_label_key(),
            open: default_open(),
            ungrouped: default_ungrouped(),
            max_name_len: default_max_name_len(),
            max_label_len: default_max_label_len(),
        }
    }
}
impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            egress_non_endpoint: default_egress(),
            egress_allow: Vec::new(),
            allow_from_host: true,
            ingress_allow: Vec::new(),
            enforce_discovery_ports: false,
            policies_dir: None,
        }
    }
}
impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket: default_socket(),
            state_dir: default_state_dir(),
            verify_interval: default_verify_interval(),
            table: default_table(),
            table_guard: TableGuard::Auto,
        }
    }
}
impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
        }
    }
}

impl GroupsConfig {
    pub fn ungrouped_policy(&self) -> Ungrouped {
        self.ungrouped.clone()
    }
}

impl InterfacesConfig {
    pub fn patterns(&self) -> Vec<IfacePattern> {
        self.r#match.clone()
    }

    pub fn is_task_interface(&self, name: &str) -> bool {
        self.r#match.iter().any(|p| p.matches(name))
    }
}

impl SourceConfig {
    pub fn resync(&self) -> Duration {
        self.resync_interval
    }
}

impl DaemonConfig {
    pub fn verify(&self) -> Duration {
        self.verify_interval
    }
}

/// A configuration error that says where and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source} (pass --config PATH)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read policy.policies_dir {path}: {source} (create it, or remove the key)")]
    PolicyDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {error}")]
    Invalid { path: PathBuf, error: BadConfig },
}

/// A config text that cannot be used: the line (when one is to blame) and
/// what is wrong with which key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct BadConfig {
    pub line: Option<usize>,
    pub message: String,
}

/// What a section found wrong: the key to blame (its line is looked up in
/// the file) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub section: &'static str,
    pub key: &'static str,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(
        section: &'static str,
        key: &'static str,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            section,
            key,
            message: message.into(),
        }
    }
}

/// A section of the config: checks what its keys need together, once
/// each key has been read into its type.
pub(crate) trait Section {
    fn check(&self) -> Result<(), Problem>;
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|error| ConfigError::Invalid {
            path: path.to_path_buf(),
            error,
        })?;
        if let Some(dir) = config.policy.policies_dir.clone() {
            config.merge_policy_files(&dir)?;
        }
        Ok(config)
    }

    /// Add the allowances of every `*.toml` in `dir` (sorted by name) to
    /// `[policy]`. A file with a typo is an error, like the main config.
    fn merge_policy_files(&mut self, dir: &Path) -> Result<(), ConfigError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::PolicyDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
                path: file.clone(),
                source,
            })?;
            let extra: PolicyFile = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                path: file.clone(),
                error: describe_toml_error(&spans::KeyLines::parse(&text), &e),
            })?;
            if !extra.egress_allow.is_empty()
                && self.policy.egress_non_endpoint == EgressNonEndpoint::Allow
            {
                return Err(ConfigError::Invalid {
                    path: file,
                    error: BadConfig {
                        line: None,
                        message: "egress_allow only applies with policy.egress_non_endpoint = \"deny\" in the main config".into(),
                    },
                });
            }
            self.policy.ingress_allow.extend(extra.ingress_allow);
            self.policy.egress_allow.extend(extra.egress_allow);
        }
        Ok(())
    }

    /// Parse and check; the error names the key and its line.
    pub fn parse(text: &str) -> Result<Config, BadConfig> {
        let lines = spans::KeyLines::parse(text);
        let config: Config = toml::from_str(text).map_err(|e| describe_toml_error(&lines, &e))?;
        config.check().map_err(|p| BadConfig {
            line: lines.line(p.section, p.key),
            message: p.message,
        })?;
        Ok(config)
    }

    /// Every section's checks, in file order.
    fn check(&self) -> Result<(), Problem> {
        self.source.check()?;
        self.interfaces.check()?;
        self.groups.check()?;
        self.policy.check()?;
        self.daemon.check()?;
        self.drops.check()?;
        self.metrics.check()?;
        self.check_publish()
    }

    /// `[publish]` (groupd publish): where to write, and a master to read.
    fn check_publish(&self) -> Result<(), Problem> {
        let Some(p) = &self.publish else {
            return Ok(());
        };
        if let Err(e) = p.etcd().validate("[publish]", "etcd_urls") {
            return Err(Problem::new("publish", "etcd_urls", e));
        }
        if !matches!(self.source.kind, SourceKind::Mesos | SourceKind::Marathon) {
            return Err(Problem::new(
                "source",
                "kind",
                "[publish] reads a master: [source] kind must be \"mesos\" or \"marathon\"",
            ));
        }
        if !(2..=3600).contains(&p.lease_ttl) {
            return Err(Problem::new(
                "publish",
                "lease_ttl",
                "publish.lease_ttl must be between 2 and 3600 (seconds)",
            ));
        }
        Ok(())
    }
}

impl Section for SourceConfig {
    fn check(&self) -> Result<(), Problem> {
        let problem = |key, message: String| Err(Problem::new("source", key, message));
        match self.kind {
            SourceKind::File => {
                if self.path.is_none() {
                    return problem(
                        "kind",
                        "[source] kind = \"file\" needs `path = \"/path/to/state.json\"`".into(),
                    );
                }
            }
            SourceKind::Etcd => {
                if let Err(e) = self.etcd().validate("[source]", "urls") {
                    return problem("kind", e);
                }
                if self.token_file.is_some() {
                    return problem(
                        "token_file",
                        "source.token_file is for DC/OS masters; etcd takes username/password_file or a client certificate".into(),
                    );
                }
            }
            SourceKind::Mesos | SourceKind::Marathon => {
                if self.urls.is_empty() {
                    let kind = if self.kind == SourceKind::Mesos {
                        "mesos"
                    } else {
                        "marathon"
                    };
                    return problem(
                        "kind",
                        format!(
                            "[source] kind = \"{kind}\" needs `urls = [\"http://master:port\"]`"
                        ),
                    );
                }
                if let Some(u) = self
                    .urls
                    .iter()
                    .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
                {
                    return problem(
                        "urls",
                        format!("source.urls: {u:?} must start with http:// or https://"),
                    );
                }
            }
        }
        if self.resync_interval < Duration::from_secs(1) {
            return problem("resync_interval", values::seconds::RESYNC_INTERVAL.into());
        }
        if self.token_file.is_some() && self.username.is_some() {
            return problem(
                "token_file",
                "source: use either username/password_file or token_file, not both".into(),
            );
        }
        if self.username.is_some() != self.password_file.is_some() {
            return problem(
                "username",
                "source: username and password_file go together".into(),
            );
        }
        Ok(())
    }
}

impl Section for InterfacesConfig {
    fn check(&self) -> Result<(), Problem> {
        if self.r#match.is_empty() {
            return Err(Problem::new(
                "interfaces",
                "match",
                "interfaces.match must list at least one pattern",
            ));
        }
        if let Some(b) = self
            .ignore_bridges
            .iter()
            .find(|b| b.is_empty() || b.len() > 15)
        {
            return Err(Problem::new(
                "interfaces",
                "ignore_bridges",
                format!("interfaces.ignore_bridges: {b:?} is not an interface name"),
            ));
        }
        Ok(())
    }
}

impl Section for GroupsConfig {
    fn check(&self) -> Result<(), Problem> {
        let problem = |key, message: String| Err(Problem::new("groups", key, message));
        if self.label_key.is_empty() {
            return problem("label_key", "groups.label_key must not be empty".into());
        }
        if self.max_name_len == 0 || self.max_label_len < self.max_name_len {
            return problem(
                "max_name_len",
                format!(
                    "groups.max_name_len = {} and groups.max_label_len = {}: both must be above 0, and a label must be able to hold one name (max_label_len >= max_name_len)",
                    self.max_name_len, self.max_label_len
                ),
            );
        }
        let ungrouped = match &self.ungrouped {
            Ungrouped::Group(name) => Some(name.as_str()),
            Ungrouped::Isolated => None,
        };
        if let Some(name) = self
            .open
            .iter()
            .map(String::as_str)
            .chain(ungrouped)
            .find(|n| n.len() > self.max_name_len)
        {
            return problem(
                "max_name_len",
                format!(
                    "groups: the group name {name:?} is {} bytes, longer than groups.max_name_len = {}; shorten it or raise the limit",
                    name.len(),
                    self.max_name_len
                ),
            );
        }
        if self.open.iter().any(|o| o.is_empty()) {
            return problem("open", "groups.open: group names must not be empty".into());
        }
        Ok(())
    }
}

impl Section for PolicyConfig {
    fn check(&self) -> Result<(), Problem> {
        if self.egress_non_endpoint == EgressNonEndpoint::Allow && !self.egress_allow.is_empty() {
            return Err(Problem::new(
                "policy",
                "egress_allow",
                "policy.egress_allow only applies with egress_non_endpoint = \"deny\"",
            ));
        }
        Ok(())
    }
}

impl Section for DaemonConfig {
    fn check(&self) -> Result<(), Problem> {
        let shortest = Duration::from_millis(100);
        let longest = Duration::from_secs_f64(MAX_VERIFY_INTERVAL);
        if !(shortest..=longest).contains(&self.verify_interval) {
            return Err(Problem::new(
                "daemon",
                "verify_interval",
                values::seconds::verify_interval_range(),
            ));
        }
        let t = &self.table;
        if t.is_empty()
            || t.len() > 32
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Problem::new(
                "daemon",
                "table",
                "daemon.table must be 1-32 characters of [A-Za-z0-9_-]",
            ));
        }
        Ok(())
    }
}

impl Section for MetricsConfig {
    fn check(&self) -> Result<(), Problem> {
        if !self.listen.is_empty() && self.listen.parse::<SocketAddr>().is_err() {
            return Err(Problem::new(
                "metrics",
                "listen",
                format!(
                    "metrics.listen = {:?} is not host:port (like \"127.0.0.1:9490\"); use \"\" to disable",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}

/// A toml/serde error as "line N: what is wrong with which key (`the line`)".
fn describe_toml_error(lines: &spans::KeyLines, e: &toml::de::Error) -> BadConfig {
    let message = e.message().trim().to_string();
    let unknown_key = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        .and_then(|key| lines.unknown_key(key, e.span()));
    let line = unknown_key.or_else(|| e.span().and_then(|span| lines.line_of(span.start)));
    match line {
        Some(line) => BadConfig {
            line: Some(line),
            message: format!("{message} (`{}`)", lines.shown(line)),
        },
        None => BadConfig {
            line: None,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_config_gets_defaults() {
        let c =
            Config::parse("[source]\nkind = \"file\"\npath = \"/tmp/x.json\"\n").expect("valid");
        assert_eq!(c.groups.open, vec!["public".to_string()]);
        assert_eq!(c.groups.label_key, "network-groups");
        let patterns: Vec<String> = c.interfaces.r#match.iter().map(|p| p.to_string()).collect();
        assert_eq!(patterns, ["veth*", "cali*", "mesos-*"]);
        assert!(c.policy.allow_from_host);
        assert_eq!(c.daemon.socket, PathBuf::from("/run/groupd/groupd.sock"));
        assert_eq!(c.metrics.listen, "127.0.0.1:9490");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_line() {
        let err = Config::parse(
            "[source]\nkind = \"file\"\npath = \"/x\"\n[groups]\nopen_groups = [\"a\"]\n",
        )
        .expect_err("typo must be rejected")
        .to_string();
        assert!(err.contains("line 5"), "{err}");
        assert!(err.contains("open_groups"), "{err}");
    }

    #[test]
    fn bad_value_is_rejected_with_its_line() {
        let err = Config::parse(
            "[source]\nkind = \"file\"\npath = \"/x\"\n[groups]\nungrouped = \"nobody\"\n",
        )
        .expect_err("bad value")
        .to_string();
        assert!(
            err.contains("line 5") && err.contains("group:NAME"),
            "{err}"
        );
        let err = Config::parse("[source]\nkind = \"zookeeper\"\n")
            .expect_err("bad kind")
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    /// Lines come from the parser's spans, not from the first `key =` in
    /// the text: a key written in two sections, dotted keys, comments.
    #[test]
    fn messages_name_the_line_of_the_key_in_its_own_section() {
        let text = "[source]\nkind = \"file\"\npath = \"/x\"\n[daemon]\n# path = \"/old\"\npath = \"/y\"\n";
        let err = Config::parse(text).expect_err("path is no daemon key");
        assert_eq!(err.line, Some(6), "{err}");
        assert!(err.message.contains("unknown field `path`"), "{err}");
        let text = "[source]\nkind = \"file\"\npath = \"/x\"\n[groups]\nkind = \"x\"\n";
        let err = Config::parse(text).expect_err("kind is no groups key");
        assert_eq!(err.line, Some(5), "{err}");
        // A dotted key: no line starts with `verify_interval =`.
        let text = "source = { kind = \"file\", path = \"/x\" }\n\ndaemon.verify_interval = 0\n";
        let err = Config::parse(text).expect_err("too short");
        assert_eq!(err.line, Some(3), "{err}");
        assert!(
            err.to_string()
                .starts_with("line 3: daemon.verify_interval must be between"),
            "{err}"
        );
        // A problem found by a section's check, at a dotted key.
        let text = "source.kind = \"mesos\"\nsource.urls = [\"ftp://m\"]\n";
        let err = Config::parse(text).expect_err("not http");
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn values_are_typed_as_they_are_read() {
        let c = Config::parse(
            "[source]\nkind = \"file\"\npath = \"/x\"\nresync_interval = 2.5\n[groups]\nungrouped = \"group:default\"\n[interfaces]\nmatch = [\"eth1\", \"veth*\"]\n[daemon]\nverify_interval = 0.5\n",
        )
        .expect("valid");
        assert_eq!(c.source.resync(), Duration::from_millis(2500));
        assert_eq!(c.daemon.verify(), Duration::from_millis(500));
        assert_eq!(c.groups.ungrouped, Ungrouped::Group("default".into()));
        assert_eq!(
            c.interfaces.r#match,
            [
                IfacePattern::Exact("eth1".into()),
                IfacePattern::Prefix("veth".into())
            ]
        );
        let err = Config::parse("[source]\nkind = \"file\"\npath = \"/x\"\nresync_interval = -1\n")
            .expect_err("negative");
        assert!(
            err.to_string()
                .starts_with("line 4: source.resync_interval must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn table_guard_defaults_to_auto_and_names_its_choices() {
        let base = "[source]\nkind = \"file\"\npath = \"/x\"\n[daemon]\n";
        let c = Config::parse(base).expect("valid");
        assert_eq!(c.daemon.table_guard, TableGuard::Auto);
        let c = Config::parse(&format!("{base}table_guard = \"notify\"\n")).expect("valid");
        assert_eq!(c.daemon.table_guard, TableGuard::Notify);
        let err = Config::parse(&format!("{base}table_guard = \"strict\"\n"))
            .expect_err("unknown mode")
            .to_string();
        assert!(err.contains("line 5") && err.contains("owner"), "{err}");
    }

    #[test]
    fn policy_files_add_allowances_and_typos_are_rejected() {
        let dir = std::env::temp_dir().join(format!("groupd-policies-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("10-lb.toml"),
            "ingress_allow = [\"10.1.0.0/16\"]\n",
        )
        .expect("write");
        std::fs::write(dir.join("README"), "not a policy").expect("write");
        let main =
            std::env::temp_dir().join(format!("groupd-policies-{}.toml", std::process::id()));
        std::fs::write(
            &main,
            format!(
                "[source]\nkind = \"file\"\npath = \"/x\"\n[policy]\npolicies_dir = {:?}\n",
                dir
            ),
        )
        .expect("write");
        let c = Config::load(&main).expect("valid");
        assert_eq!(
            c.policy.ingress_allow,
            vec!["10.1.0.0/16".parse::<Cidr>().expect("cidr")]
        );
        std::fs::write(dir.join("20-typo.toml"), "ingres_allow = []\n").expect("write");
        let err = Config::load(&main)
            .expect_err("typo")
            .to_string()
            .to_string();
        assert!(
            err.contains("20-typo.toml") && err.contains("line 1"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&main);
    }

    #[test]
    fn source_is_required() {
        let err = Config::parse("[groups]\nopen = []\n")
            .expect_err("no source")
            .to_string();
        assert!(err.contains("source"), "{err}");
    }

    #[test]
    fn remote_source_needs_urls() {
        let err = Config::parse("[source]\nkind = \"mesos\"\n")
            .expect_err("no urls")
            .to_string();
        assert!(err.contains("urls"), "{err}");
        assert!(Config::parse("[source]\nkind = \"mesos\"\nurls = [\"http://m1:5050\"]\n").is_ok());
    }

    #[test]
    fn etcd_source_and_publish_keys() {
        let c = Config::parse("[source]\nkind = \"etcd\"\nurls = [\"http://e1:2379\"]\n")
            .expect("etcd source");
        assert_eq!(c.source.etcd().prefix, "/groupd/v1");
        let err = Config::parse("[source]\nkind = \"etcd\"\n")
            .expect_err("no urls")
            .to_string();
        assert!(err.contains("urls") && err.contains("line 2"), "{err}");
        let err = Config::parse("[source]\nkind = \"etcd\"\nurls = [\"https://e1:2379\"]\n")
            .expect_err("https without a CA")
            .to_string();
        assert!(err.contains("ca_file"), "{err}");
        let err = Config::parse(
            "[source]\nkind = \"etcd\"\nurls = [\"http://e1:2379\"]\nprefix = \"groupd/\"\n",
        )
        .expect_err("relative prefix")
        .to_string();
        assert!(err.contains("prefix"), "{err}");
        let err = Config::parse(
            "[source]\nkind = \"etcd\"\nurls = [\"http://e1:2379\"]\ncert_file = \"/c.pem\"\n",
        )
        .expect_err("cert without key")
        .to_string();
        assert!(err.contains("key_file"), "{err}");
        let publish = "[source]\nkind = \"mesos\"\nurls = [\"http://m1:5050\"]\n[publish]\netcd_urls = [\"http://e1:2379\"]\n";
        let c = Config::parse(publish).expect("publish");
        let p = c.publish.expect("[publish]");
        assert_eq!((p.lease_ttl, p.prefix.as_str()), (10, "/groupd/v1"));
        let err = Config::parse(&format!("{publish}lease_ttl = 1\n"))
            .expect_err("ttl")
            .to_string();
        assert!(err.contains("lease_ttl"), "{err}");
        let err = Config::parse(
            "[source]\nkind = \"etcd\"\nurls = [\"http://e1:2379\"]\n[publish]\netcd_urls = [\"http://e1:2379\"]\n",
        )
        .expect_err("a publisher reads a master")
            .to_string();
        assert!(err.contains("mesos"), "{err}");
    }

    #[test]
    fn glob_in_the_middle_is_rejected() {
        let err = Config::parse(
            "[source]\nkind = \"file\"\npath = \"/x\"\n[interfaces]\nmatch = [\"v*th\"]\n",
        )
        .expect_err("unsupported glob")
        .to_string();
        assert!(err.contains("prefix"), "{err}");
    }

    #[test]
    fn name_and_label_caps_default_and_are_checked() {
        let base = "[source]\nkind = \"file\"\npath = \"/x\"\n";
        let c = Config::parse(base).expect("defaults");
        assert_eq!((c.groups.max_name_len, c.groups.max_label_len), (256, 4096));
        let c = Config::parse(&format!(
            "{base}[groups]\nmax_name_len = 64\nmax_label_len = 128\n"
        ))
        .expect("set");
        assert_eq!((c.groups.max_name_len, c.groups.max_label_len), (64, 128));
        let err = Config::parse(&format!("{base}[groups]\nmax_name_len = 0\n"))
            .expect_err("zero")
            .to_string();
        assert!(err.contains("max_name_len"), "{err}");
        let err = Config::parse(&format!(
            "{base}[groups]\nmax_name_len = 64\nmax_label_len = 10\n"
        ))
        .expect_err("label shorter than a name")
        .to_string();
        assert!(err.contains("max_label_len >= max_name_len"), "{err}");
        let err = Config::parse(&format!(
            "{base}[groups]\nmax_name_len = 4\nopen = [\"public\"]\n"
        ))
        .expect_err("open group longer than the cap")
        .to_string();
        assert!(err.contains("\"public\" is 6 bytes"), "{err}");
    }

    #[test]
    fn interface_patterns() {
        let i = InterfacesConfig::default();
        assert!(i.is_task_interface("veth1234"));
        assert!(i.is_task_interface("mesos-abc"));
        assert!(!i.is_task_interface("eth0"));
    }

    #[test]
    fn the_design_example_parses() {
        let text = r#"
[source]
kind = "mesos"                      # "mesos" | "marathon" | "file"
urls = ["http://m1:5050", "http://m2:5050"]
[interfaces]
match = ["veth*"]
[groups]
label_key = "network-groups"
open = ["public"]
ungrouped = "isolated"
[policy]
egress_non_endpoint = "allow"
allow_from_host = true
enforce_discovery_ports = false
[daemon]
socket = "/run/groupd/groupd.sock"
state_dir = "/var/lib/groupd"
[metrics]
listen = "127.0.0.1:9490"
"#;
        let c = Config::parse(text).expect("design example");
        assert_eq!(c.source.urls.len(), 2);
    }
}
