//! Marathon app documents (`GET /v2/apps?embed=apps.tasks`, `/v2/groups`,
//! `/v2/apps/{id}`) and their conversion to [`Task`]s. docs/FORMATS.md §1–§2.
//!
//! Network classification of a Marathon app (decided per app *version*, see
//! [`App::network_kind`]):
//! * `networks[]` (1.5+) decides when present: any `mode: "container"` is
//!   IP-per-task, otherwise `container/bridge` is a NAT bridge, otherwise
//!   (`host`, or a mode we do not know) host networking.
//! * Else an explicit Docker `network`: `BRIDGE` is a NAT bridge and `HOST`
//!   host networking even when an `ipAddress` is also given (Docker then
//!   ignores the NetworkInfo; the 0.14 docs example is such an app), `USER`
//!   is IP-per-task.
//! * Else an `ipAddress` object (even `{}`) means IP-per-task (Marathon builds
//!   a NetworkInfo from it); `null` or no `ipAddress` means host networking.
//!
//! Groups come from the app version that launched the task (docs/design.md §1):
//! see [`VersionCache`].

pub mod pods;
mod versions;

pub use versions::VersionCache;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{
    assign_groups, check_lengths, classify, kept_labels, new_task, null_as_default, parse_ip,
    port_number, reject, unparseable_ip, GroupInputs, NetworkKind, Notes,
};
use crate::config::GroupsConfig;
use crate::model::{
    ClusterView, DiscoveryPort, GroupName, GroupOrigin, Protocol, Task, TaskState, VecMap, VecSet,
    ViewBuilder,
};

/// `GET /v2/apps` (`{"apps": [...]}`) and `GET /v2/groups` (the same plus
/// nested `groups`, each again with apps and groups).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AppGroup {
    #[serde(default, deserialize_with = "null_as_default")]
    pub apps: Vec<App>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub groups: Vec<AppGroup>,
}

impl AppGroup {
    /// Every app of this group and of all nested groups.
    pub fn all_apps(&self) -> Vec<&App> {
        let mut out: Vec<&App> = self.apps.iter().collect();
        for group in &self.groups {
            out.extend(group.all_apps());
        }
        out
    }
}

/// Reads an [`AppGroup`] document (`/v2/apps`, `/v2/groups`) from `de` and
/// hands each app to `sink` as soon as it is read, so that the whole document
/// never exists as [`AppGroup`] at once. Accepts exactly what deserializing an
/// [`AppGroup`] accepts and fails with the same errors at the same places.
///
/// Apps are handed over in document order. That is the order of
/// [`AppGroup::all_apps`] unless some group lists its nested `groups` (with
/// apps in them) before its own `apps`: then the result is `false` (the order
/// differed), otherwise `true`.
pub fn walk_app_group<'de, D: Deserializer<'de>>(
    de: D,
    sink: &mut dyn FnMut(App),
) -> Result<bool, D::Error> {
    let mut walk = Walk {
        sink,
        apps: 0,
        in_order: true,
    };
    GroupSeed(&mut walk).deserialize(de)?;
    Ok(walk.in_order)
}

/// The apps of one `apps` array (`null` is none), handed to `sink` in
/// order as they are read.
pub fn walk_app_list<'de, D: Deserializer<'de>>(
    de: D,
    sink: &mut dyn FnMut(App),
) -> Result<(), D::Error> {
    let mut walk = Walk {
        sink,
        apps: 0,
        in_order: true,
    };
    NullOr(AppList(&mut walk)).deserialize(de)
}

struct Walk<'s> {
    sink: &'s mut dyn FnMut(App),
    /// Apps handed over so far.
    apps: usize,
    in_order: bool,
}

/// One [`AppGroup`] (an object, or the `[apps, groups]` array form serde
/// also accepts for a struct).
struct GroupSeed<'w, 's>(&'w mut Walk<'s>);

/// `null` or an array read by the visitor inside (the `apps` and `groups`
/// of a group).
struct NullOr<V>(V);

/// An array of [`App`] / of [`AppGroup`].
struct AppList<'w, 's>(&'w mut Walk<'s>);
struct GroupList<'w, 's>(&'w mut Walk<'s>);

enum GroupField {
    Apps,
    Groups,
    Other,
}

impl<'de> Deserialize<'de> for GroupField {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<GroupField, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = GroupField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("field identifier")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GroupField, E> {
                self.visit_bytes(v.as_bytes())
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<GroupField, E> {
                Ok(match v {
                    b"apps" => GroupField::Apps,
                    b"groups" => GroupField::Groups,
                    _ => GroupField::Other,
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GroupField, E> {
                Ok(match v {
                    0 => GroupField::Apps,
                    1 => GroupField::Groups,
                    _ => GroupField::Other,
                })
            }
        }
        de.deserialize_identifier(FieldVisitor)
    }
}

impl<'de> DeserializeSeed<'de> for GroupSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_struct("AppGroup", &["apps", "groups"], self)
    }
}

impl<'de> Visitor<'de> for GroupSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct AppGroup")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        seq.next_element_seed(NullOr(AppList(&mut *self.0)))?;
        seq.next_element_seed(NullOr(GroupList(&mut *self.0)))?;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let walk = self.0;
        let (mut apps, mut groups) = (false, false);
        let mut apps_in_groups = 0;
        while let Some(field) = map.next_key::<GroupField>()? {
            match field {
                GroupField::Apps => {
                    if apps {
                        return Err(de::Error::duplicate_field("apps"));
                    }
                    apps = true;
                    if apps_in_groups > 0 {
                        walk.in_order = false;
                    }
                    map.next_value_seed(NullOr(AppList(&mut *walk)))?;
                }
                GroupField::Groups => {
                    if groups {
                        return Err(de::Error::duplicate_field("groups"));
                    }
                    groups = true;
                    let before = walk.apps;
                    map.next_value_seed(NullOr(GroupList(&mut *walk)))?;
                    apps_in_groups = walk.apps - before;
                }
                GroupField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

impl<'de, V: Visitor<'de, Value = ()>> DeserializeSeed<'de> for NullOr<V> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_option(self)
    }
}

impl<'de, V: Visitor<'de, Value = ()>> Visitor<'de> for NullOr<V> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("option")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_seq(self.0)
    }
}

impl<'de> Visitor<'de> for AppList<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(app) = seq.next_element::<App>()? {
            self.0.apps += 1;
            (self.0.sink)(app);
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for GroupList<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(GroupSeed(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// `GET /v2/apps/{id}`: `{"app": {...}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct SingleApp {
    pub app: App,
}

/// One app definition, as Marathon returns it (only what groupd reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub id: String,
    /// The version of this definition (an ISO timestamp).
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub version_info: Option<VersionInfo>,
    /// Marathon 0.14–1.4. `null`, absent and `{}` are all possible.
    #[serde(default)]
    pub ip_address: Option<IpAddressSpec>,
    /// Marathon 1.5+.
    #[serde(default, deserialize_with = "null_as_default")]
    pub networks: Vec<NetworkSpec>,
    #[serde(default)]
    pub container: Option<ContainerSpec>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    /// Present only when tasks are embedded; `None` ("not embedded") is
    /// different from `Some([])` ("no tasks").
    #[serde(default)]
    pub tasks: Option<Vec<MarathonTask>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// The version at which the configuration last changed; later versions up
    /// to `app.version` only scaled or restarted the app.
    #[serde(default)]
    pub last_config_change_at: Option<String>,
    #[serde(default)]
    pub last_scaling_at: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddressSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub groups: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub discovery: Option<DiscoverySpec>,
    #[serde(default)]
    pub network_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DiscoverySpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub ports: Vec<DiscoveryPortSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DiscoveryPortSpec {
    #[serde(default)]
    pub number: Option<serde_json::Number>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetworkSpec {
    /// `host` (default), `container/bridge` or `container`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// `DOCKER` or `MESOS`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub docker: Option<DockerSpec>,
    /// Marathon 1.5+ (moved out of `docker`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub port_mappings: Vec<PortMappingSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerSpec {
    /// `HOST`, `BRIDGE`, `USER` (≤ 1.4; 1.5+ uses `networks`).
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub port_mappings: Vec<PortMappingSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMappingSpec {
    #[serde(default)]
    pub container_port: Option<serde_json::Number>,
    /// `tcp`, `udp` or `udp,tcp`.
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// One task as embedded in an app (`/v2/apps?embed=apps.tasks`) or listed by
/// `/v2/tasks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarathonTask {
    pub id: String,
    #[serde(default)]
    pub app_id: Option<String>,
    /// The agent's hostname as advertised to Mesos.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub slave_id: Option<String>,
    /// Absent before Marathon ~1.1.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    /// The app version that launched this task.
    #[serde(default)]
    pub version: Option<String>,
    /// Omitted while no IP is known (staging).
    #[serde(default, deserialize_with = "null_as_default")]
    pub ip_addresses: Vec<TaskIpAddress>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskIpAddress {
    #[serde(default)]
    pub ip_address: Option<String>,
    /// `IPv4` or `IPv6`; informational, the address itself says which.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// What a task inherits from the app version that launched it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppConfig {
    pub network: NetworkKind,
    /// `ipAddress.groups` (origin [`GroupOrigin::AppVersion`]), trimmed,
    /// without empty names.
    pub ip_groups: Box<[GroupName]>,
    /// `ipAddress.labels` and every `networks[].labels`.
    pub network_labels: Vec<(String, String)>,
    /// App labels (Marathon copies them to the Mesos task).
    pub app_labels: VecMap<String, String>,
    /// Container-side ports other endpoints use (R9); only for IP-per-task apps.
    pub discovery_ports: VecSet<DiscoveryPort>,
    /// Labels left out because they are longer than allowed (see
    /// [`App::config`]), for the note of each task.
    pub note: Option<Box<str>>,
    /// Why this version's groups and labels are unusable (a name or label
    /// longer than the configured maximum), when they are: the fields above
    /// are then left empty, and its tasks are rejected.
    pub invalid: Option<Box<str>>,
}

impl App {
    /// See the module documentation for the rules and why.
    pub fn network_kind(&self) -> NetworkKind {
        if let Some(kind) = networks_kind(&self.networks) {
            return kind;
        }
        match self.docker_network().as_deref() {
            Some("BRIDGE") => return NetworkKind::NatBridge,
            Some("HOST") => return NetworkKind::Host,
            Some("USER") => return NetworkKind::PerTask,
            _ => {}
        }
        if self.ip_address.is_some() {
            NetworkKind::PerTask
        } else {
            NetworkKind::Host
        }
    }

    fn docker_network(&self) -> Option<String> {
        let network = self.container.as_ref()?.docker.as_ref()?.network.as_ref()?;
        Some(network.trim().to_ascii_uppercase())
    }

    /// The version-specific part of this definition. Group names and
    /// group labels longer than `limits` allow make it invalid (see
    /// [`AppConfig::invalid`]); other over-long labels are left out, with a
    /// note. Neither is copied.
    pub fn config(&self, limits: &GroupsConfig) -> AppConfig {
        let network = self.network_kind();
        let ip_labels = self.ip_address.iter().flat_map(|ip| ip.labels.iter());
        let network_labels: Vec<(&str, &str)> = ip_labels
            .chain(self.networks.iter().flat_map(|net| net.labels.iter()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let app_labels: Vec<(&str, &str)> = self
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let ip_groups = self.ip_address.iter().flat_map(|ip| ip.groups.iter());
        let inputs = GroupInputs {
            lists: ip_groups
                .map(|g| (g.as_str(), GroupOrigin::AppVersion))
                .collect(),
            network_labels,
            task_labels: app_labels,
        };
        if let Some(invalid) = check_lengths(&inputs, limits).into_note() {
            return AppConfig {
                network,
                ip_groups: Box::default(),
                network_labels: Vec::new(),
                app_labels: VecMap::new(),
                discovery_ports: VecSet::new(),
                note: None,
                invalid: Some(invalid),
            };
        }
        let mut notes = Notes::default();
        AppConfig {
            network,
            ip_groups: inputs
                .lists
                .iter()
                .map(|(g, _)| g.trim())
                .filter(|g| !g.is_empty())
                .map(GroupName::new)
                .collect(),
            network_labels: kept_labels(inputs.network_labels, limits, &mut notes),
            app_labels: kept_labels(inputs.task_labels, limits, &mut notes)
                .into_iter()
                .collect(),
            discovery_ports: if network == NetworkKind::PerTask {
                self.discovery_ports()
            } else {
                VecSet::new()
            },
            note: notes.into_note(),
            invalid: None,
        }
    }

    /// `ipAddress.discovery.ports` when given; otherwise the container side of
    /// the port mappings, which is what Marathon advertises to Mesos for
    /// container networks.
    fn discovery_ports(&self) -> VecSet<DiscoveryPort> {
        let declared: VecSet<DiscoveryPort> = self
            .ip_address
            .iter()
            .flat_map(|ip| ip.discovery.iter())
            .flat_map(|d| d.ports.iter())
            .flat_map(|p| {
                discovery_port(p.number.as_ref(), p.protocol.as_deref(), p.name.as_deref())
            })
            .collect();
        if !declared.is_empty() {
            return declared;
        }
        let Some(container) = &self.container else {
            return VecSet::new();
        };
        let docker_mappings = container.docker.iter().flat_map(|d| d.port_mappings.iter());
        container
            .port_mappings
            .iter()
            .chain(docker_mappings)
            .flat_map(|m| {
                discovery_port(
                    m.container_port.as_ref(),
                    m.protocol.as_deref(),
                    m.name.as_deref(),
                )
            })
            .collect()
    }
}

/// What a `networks[]` list (Marathon 1.5+ apps, and pods) decides, `None`
/// when it is empty: any `mode: "container"` is IP-per-task, otherwise
/// `container/bridge` is a NAT bridge, otherwise host networking.
pub(crate) fn networks_kind(networks: &[NetworkSpec]) -> Option<NetworkKind> {
    if networks.is_empty() {
        return None;
    }
    let has_mode = |m: &str| {
        networks
            .iter()
            .any(|n| n.mode.as_deref().map(str::trim) == Some(m))
    };
    Some(if has_mode("container") {
        NetworkKind::PerTask
    } else if has_mode("container/bridge") {
        NetworkKind::NatBridge
    } else {
        NetworkKind::Host
    })
}

/// One port per protocol of `protocol` (`"udp,tcp"` declares both; absent
/// means tcp, Marathon's default). Invalid numbers and unknown protocols
/// declare nothing.
fn discovery_port(
    number: Option<&serde_json::Number>,
    protocol: Option<&str>,
    name: Option<&str>,
) -> Vec<DiscoveryPort> {
    let Some(number) = number.and_then(port_number) else {
        return Vec::new();
    };
    let protocols = protocol.unwrap_or("tcp");
    protocols
        .split(',')
        .filter_map(|p| match p.trim().to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        })
        .map(|protocol| DiscoveryPort {
            number,
            protocol,
            name: name.map(str::to_string),
        })
        .collect()
}

/// Comparable form of Marathon's ISO timestamps (`2017-07-19T17:34:41.967Z`):
/// (date, nanoseconds of day). `None` for anything else, which then only
/// matches itself exactly.
fn timestamp_key(text: &str) -> Option<(u64, u64)> {
    let text = text.trim();
    let body = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))?;
    let (date_time, fraction) = body.split_once('.').unwrap_or((body, ""));
    let (date, time) = date_time.split_once('T')?;
    let digits = |s: &str, len: usize| -> Option<u64> {
        if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let mut d = date.split('-');
    let (year, month, day) = (
        digits(d.next()?, 4)?,
        digits(d.next()?, 2)?,
        digits(d.next()?, 2)?,
    );
    let mut t = time.split(':');
    let (hour, minute, second) = (
        digits(t.next()?, 2)?,
        digits(t.next()?, 2)?,
        digits(t.next()?, 2)?,
    );
    if d.next().is_some() || t.next().is_some() || fraction.len() > 9 {
        return None;
    }
    let nanos = if fraction.is_empty() {
        0
    } else {
        digits(fraction, fraction.len())? * 10u64.pow(9 - fraction.len() as u32)
    };
    Some((
        year * 10_000 + month * 100 + day,
        ((hour * 60 + minute) * 60 + second) * 1_000_000_000 + nanos,
    ))
}

/// Convert the apps of one document. `complete` says the apps are all apps
/// of the cluster (`/v2/apps`, `/v2/groups`), so the cache can forget apps
/// that are gone; for a single app it keeps everything else.
pub fn convert_apps<'a>(
    apps: impl IntoIterator<Item = &'a App>,
    complete: bool,
    groups: &GroupsConfig,
    versions: &mut VersionCache,
) -> ClusterView {
    let mut conversion = Conversion::new(complete, groups, versions);
    for app in apps {
        conversion.add(app);
    }
    conversion.finish()
}

/// [`convert_apps`] one app at a time, so that a document can be converted
/// while it is read and never held whole (each app can be dropped once
/// added). Apps must be added in the order `convert_apps` would see them.
pub struct Conversion<'a> {
    complete: bool,
    groups: &'a GroupsConfig,
    versions: &'a mut VersionCache,
    view: ViewBuilder,
}

impl<'a> Conversion<'a> {
    pub fn new(
        complete: bool,
        groups: &'a GroupsConfig,
        versions: &'a mut VersionCache,
    ) -> Conversion<'a> {
        if complete {
            versions.begin_complete();
        }
        Conversion {
            complete,
            groups,
            versions,
            view: ViewBuilder::default(),
        }
    }

    /// Make room for `apps` apps in the cache at once (growing it step by
    /// step holds the old and the new table together at each step).
    pub fn reserve(&mut self, apps: usize) {
        self.versions.reserve(apps);
    }

    pub fn add(&mut self, app: &App) {
        for task in convert_app(app, self.groups, self.versions) {
            self.view.insert(task);
        }
        if self.complete {
            self.versions.mark(&app.id);
        }
    }

    /// The version cache the conversion learns into.
    pub fn versions(&self) -> &VersionCache {
        self.versions
    }

    /// The view of the apps added (`conflicts` not filled in).
    pub fn finish(self) -> ClusterView {
        if self.complete {
            self.versions.forget_unmarked();
        }
        self.view.finish()
    }
}

/// The tasks of one app. Learns the app's current version first, then gives
/// each task the configuration of the version that launched it; a task whose
/// version groupd never saw gets no groups at all (fail closed) and a note.
pub fn convert_app(app: &App, groups: &GroupsConfig, versions: &mut VersionCache) -> Vec<Task> {
    let current = app.config(groups);
    versions.learn_config(app, &current);
    let current_version = app.version.as_deref().map(str::trim);
    let app_id: Arc<str> = Arc::from(app.id.as_str());
    let tasks = app.tasks.as_deref().unwrap_or_default();
    let converted = tasks
        .iter()
        .map(|task| {
            let known;
            let launch = match task.version.as_deref() {
                None => Ok(&current),
                // Just learned (the usual case): no need to look it up.
                Some(v) if Some(v.trim()) == current_version && !v.trim().is_empty() => {
                    Ok(&current)
                }
                Some(v) => {
                    known = versions.lookup(&app.id, v);
                    known.as_ref().ok_or(v)
                }
            };
            convert_task_of(app, &app_id, task, launch, &current, groups)
        })
        .collect();
    // Keep what the current version and the remaining tasks still need.
    let mut referenced: BTreeSet<&str> =
        tasks.iter().filter_map(|t| t.version.as_deref()).collect();
    if let Some(v) = app.version.as_deref() {
        referenced.insert(v);
    }
    versions.retain_versions(&app.id, &referenced);
    converted
}

/// One task of `app` reported on its own (a Marathon status event), with the
/// configuration of the version that launched it as `versions` knows it.
/// Unlike [`convert_app`] it neither learns nor forgets versions: the
/// caller learns the launching version first (and other tasks of the app
/// still need theirs).
pub fn convert_event_task(
    app: &App,
    task: &MarathonTask,
    groups: &GroupsConfig,
    versions: &VersionCache,
) -> Task {
    let current = app.config(groups);
    let known;
    let launch = match task.version.as_deref() {
        None => Ok(&current),
        Some(v) => {
            known = versions.lookup(&app.id, v);
            known.as_ref().ok_or(v)
        }
    };
    convert_task(app, task, launch, &current, groups)
}

/// One task. `launch` is the configuration of the launching version, or the
/// version string when it is unknown.
fn convert_task(
    app: &App,
    task: &MarathonTask,
    launch: Result<&AppConfig, &str>,
    current: &AppConfig,
    groups: &GroupsConfig,
) -> Task {
    convert_task_of(
        app,
        &Arc::from(app.id.as_str()),
        task,
        launch,
        current,
        groups,
    )
}

/// [`convert_task`] with `app.id` as a shared string (one for all the
/// tasks of an app).
fn convert_task_of(
    app: &App,
    app_id: &Arc<str>,
    task: &MarathonTask,
    launch: Result<&AppConfig, &str>,
    current: &AppConfig,
    groups: &GroupsConfig,
) -> Task {
    let state = task_state(task);
    let app_id = match task.app_id.as_deref() {
        Some(own) if own != &**app_id => Arc::from(own),
        _ => Arc::clone(app_id),
    };
    let mut out = new_task(&task.id, app_id, task.slave_id.as_deref(), state);
    let mut notes = Notes::default();
    let mut problems = Notes::default();
    // The network mode can change between versions too; without the launch
    // version the current one is the best guess (the IPs are the task's own).
    let config = launch.unwrap_or(current);
    out.ips = task_ips(task, config.network, &mut notes, &mut problems);
    if let Some(invalid) = &config.invalid {
        problems.push(invalid.to_string());
    }
    if let Some(note) = &config.note {
        notes.push(note.to_string());
    }
    out.labels = config.app_labels.clone();
    match launch {
        Ok(config) => {
            let inputs = GroupInputs {
                lists: config.ip_groups.iter().map(|g| (g.as_str(), GroupOrigin::AppVersion)).collect(),
                network_labels: config.network_labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                task_labels: config.app_labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            };
            assign_groups(&mut out, &inputs, groups);
            out.discovery_ports = config.discovery_ports.clone();
        }
        Err(version) => notes.push(format!(
            "launched by app version {version} whose groups are unknown to groupd (the app is now at version {}); treated as ungrouped",
            app.version.as_deref().unwrap_or("unknown")
        )),
    }
    out.not_enforced = classify(config.network, &out.state, !out.ips.is_empty());
    out.note = notes.into_note();
    reject(&mut out, problems);
    out
}

/// `state` when Marathon sends it; older Marathons list only live tasks, so
/// a started task is running and an unstarted one staging.
fn task_state(task: &MarathonTask) -> TaskState {
    match (&task.state, &task.started_at) {
        (Some(state), _) => TaskState::parse(state),
        (None, Some(_)) => TaskState::Running,
        (None, None) => TaskState::Staging,
    }
}

/// The task's IPs. For an IP-per-task app an address equal to the agent's
/// (`host`) is dropped: Mesos reports the agent IP for Docker user networks
/// until the container network is attached (docs/FORMATS.md §8.3), and Marathon
/// copies that report verbatim. Binding the agent's IP to a task would make
/// the agent itself a member of the task's groups.
fn task_ips(
    task: &MarathonTask,
    network: NetworkKind,
    notes: &mut Notes,
    problems: &mut Notes,
) -> VecSet<std::net::IpAddr> {
    let agent_ip = task.host.as_deref().and_then(parse_ip);
    let mut ips = VecSet::new();
    for entry in &task.ip_addresses {
        // An empty address is no address.
        let Some(text) = entry.ip_address.as_deref().filter(|t| !t.trim().is_empty()) else {
            continue;
        };
        match parse_ip(text) {
            Some(ip) if network == NetworkKind::PerTask && Some(ip) == agent_ip => {
                notes.push(format!("ignored {ip}: it is the agent's own address, reported before the container network was attached"));
            }
            Some(ip) => {
                ips.insert(ip);
            }
            None => problems.push(unparseable_ip(text)),
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NotEnforced;

    fn app(json: &str) -> App {
        serde_json::from_str(json).expect("valid app JSON")
    }

    fn one_task(app: &App, versions: &mut VersionCache) -> Task {
        let mut tasks = convert_app(app, &GroupsConfig::default(), versions);
        assert_eq!(tasks.len(), 1);
        tasks.remove(0)
    }

    const V1: &str = "2017-01-01T00:00:00.000Z";
    const V2: &str = "2017-02-01T00:00:00.000Z";
    const V3: &str = "2017-03-01T00:00:00.000Z";

    fn versioned(version: &str, config_since: &str, groups: &str, task_version: &str) -> App {
        app(&format!(
            r#"{{"id":"/web","version":"{version}","versionInfo":{{"lastConfigChangeAt":"{config_since}"}},
            "ipAddress":{{"groups":[{groups}]}},
            "tasks":[{{"id":"web.1","host":"10.0.0.1","ipAddresses":[{{"ipAddress":"9.0.0.1","protocol":"IPv4"}}],
                      "state":"TASK_RUNNING","version":"{task_version}"}}]}}"#
        ))
    }

    #[test]
    fn task_of_the_current_version_gets_the_app_groups() {
        let mut cache = VersionCache::default();
        let t = one_task(&versioned(V1, V1, r#""dev""#, V1), &mut cache);
        assert!(t.groups["dev"].contains(&GroupOrigin::AppVersion));
        assert_eq!(t.not_enforced, None);
        assert_eq!(t.note, None);
    }

    #[test]
    fn task_of_a_scaling_version_uses_the_config_since_last_change() {
        // App config changed at V1, scaled at V3; the task was launched at V2.
        let mut cache = VersionCache::default();
        let t = one_task(&versioned(V3, V1, r#""dev""#, V2), &mut cache);
        assert!(t.groups.contains_key("dev"), "{t:?}");
        assert_eq!(t.note, None);
    }

    #[test]
    fn task_of_an_unknown_older_version_is_ungrouped_with_a_note() {
        let mut cache = VersionCache::default();
        let t = one_task(&versioned(V3, V3, r#""new""#, V1), &mut cache);
        assert!(t.groups.is_empty(), "{:?}", t.groups);
        let note = t.note.expect("note");
        assert!(
            note.contains(V1) && note.contains("treated as ungrouped"),
            "{note}"
        );
        // Still an endpoint: its IP is its own, it is just in no group.
        assert_eq!(t.not_enforced, None);
    }

    #[test]
    fn task_of_an_older_version_seen_before_keeps_that_versions_groups() {
        let mut cache = VersionCache::default();
        // Document 1: app at V1 with group "old", task at V1.
        one_task(&versioned(V1, V1, r#""old""#, V1), &mut cache);
        // Document 2: mid-deployment, app at V2 with group "new"; old task still at V1.
        let t = one_task(&versioned(V2, V2, r#""new""#, V1), &mut cache);
        let names: Vec<&str> = t.groups.keys().map(|g| g.as_str()).collect();
        assert_eq!(names, vec!["old"]);
        assert_eq!(t.note, None);
    }

    #[test]
    fn cache_forgets_versions_no_task_uses() {
        let mut cache = VersionCache::default();
        one_task(&versioned(V1, V1, r#""old""#, V1), &mut cache);
        one_task(&versioned(V2, V2, r#""new""#, V2), &mut cache);
        assert_eq!(cache.len(), 1);
        assert!(cache.lookup("/web", V1).is_none());
    }

    #[test]
    fn cache_forgets_deleted_apps_after_a_complete_document() {
        let mut cache = VersionCache::default();
        let web = versioned(V1, V1, r#""a""#, V1);
        convert_apps([&web], true, &GroupsConfig::default(), &mut cache);
        assert_eq!(cache.len(), 1);
        convert_apps([], false, &GroupsConfig::default(), &mut cache);
        assert_eq!(cache.len(), 1, "a partial document keeps other apps");
        convert_apps([], true, &GroupsConfig::default(), &mut cache);
        assert!(cache.is_empty());
    }

    #[test]
    fn task_without_version_uses_the_current_version() {
        let a = app(r#"{"id":"/a","version":"x","ipAddress":{"groups":["g"]},
                "tasks":[{"id":"a.1","ipAddresses":[{"ipAddress":"9.0.0.2"}]}]}"#);
        let t = one_task(&a, &mut VersionCache::default());
        assert!(t.groups.contains_key("g"));
        assert_eq!(
            t.state,
            TaskState::Staging,
            "no state, not started: staging"
        );
    }

    #[test]
    fn network_kinds_follow_the_documented_precedence() {
        let kind = |json: &str| app(json).network_kind();
        assert_eq!(kind(r#"{"id":"/a"}"#), NetworkKind::Host);
        assert_eq!(kind(r#"{"id":"/a","ipAddress":null}"#), NetworkKind::Host);
        assert_eq!(kind(r#"{"id":"/a","ipAddress":{}}"#), NetworkKind::PerTask);
        assert_eq!(
            kind(r#"{"id":"/a","networks":[{"mode":"host"}]}"#),
            NetworkKind::Host
        );
        assert_eq!(
            kind(r#"{"id":"/a","networks":[{"mode":"container/bridge"}]}"#),
            NetworkKind::NatBridge
        );
        assert_eq!(
            kind(r#"{"id":"/a","networks":[{"mode":"container","name":"dcos"}]}"#),
            NetworkKind::PerTask
        );
        let docker = |net: &str, ip: &str| {
            kind(&format!(
                r#"{{"id":"/a","container":{{"type":"DOCKER","docker":{{"network":"{net}"}}}}{ip}}}"#
            ))
        };
        assert_eq!(
            docker("BRIDGE", r#","ipAddress":{"groups":["g"]}"#),
            NetworkKind::NatBridge
        );
        assert_eq!(docker("HOST", ""), NetworkKind::Host);
        assert_eq!(docker("USER", ""), NetworkKind::PerTask);
        assert_eq!(docker("user", r#","ipAddress":{}"#), NetworkKind::PerTask);
    }

    #[test]
    fn agent_address_reported_for_a_container_network_task_is_dropped() {
        let a = app(
            r#"{"id":"/a","version":"v","networks":[{"mode":"container","name":"dcos"}],
                "tasks":[{"id":"a.1","host":"172.17.0.4","state":"TASK_STARTING","version":"v",
                          "ipAddresses":[{"ipAddress":"172.17.0.4","protocol":"IPv4"}]}]}"#,
        );
        let t = one_task(&a, &mut VersionCache::default());
        assert!(t.ips.is_empty());
        assert_eq!(t.not_enforced, Some(NotEnforced::NoAddress));
        assert!(t.note.unwrap_or_default().contains("agent's own address"));
    }

    #[test]
    fn an_unparseable_ip_rejects_the_task() {
        for bad in ["not-an-ip", "10.233.200.999"] {
            let a = app(&format!(
                r#"{{"id":"/a","ipAddress":{{"groups":["g"]}},"labels":{{"k":"v"}},"tasks":[{{"id":"a.1","ipAddresses":[{{"ipAddress":"{bad}"}},{{"ipAddress":"fd00:233::5","protocol":"IPv6"}}]}}]}}"#
            ));
            let t = one_task(&a, &mut VersionCache::default());
            assert_eq!(t.not_enforced, Some(NotEnforced::Invalid));
            assert_eq!(
                t.invalid.as_deref(),
                Some(format!("unparseable IP \"{bad}\"").as_str())
            );
            // Nothing of its data is kept, the good IP included.
            assert!(
                t.ips.is_empty() && t.groups.is_empty() && t.labels.is_empty(),
                "{t:?}"
            );
        }
        // An empty address is no address, not garbage.
        let a = app(
            r#"{"id":"/a","ipAddress":{},"tasks":[{"id":"a.1","ipAddresses":[{"ipAddress":""},{"ipAddress":"fd00:233::5"}]}]}"#,
        );
        let t = one_task(&a, &mut VersionCache::default());
        assert_eq!((t.ips.len(), t.invalid), (1, None));
    }

    #[test]
    fn an_over_long_group_name_or_label_rejects_the_task() {
        let limits = GroupsConfig {
            max_name_len: 8,
            max_label_len: 16,
            ..GroupsConfig::default()
        };
        let convert = |json: &str| {
            let mut tasks = convert_app(&app(json), &limits, &mut VersionCache::default());
            tasks.remove(0)
        };
        let task = r#""tasks":[{"id":"a.1","ipAddresses":[{"ipAddress":"10.233.0.1"}]}]"#;
        let cases = [
            (
                format!(r#"{{"id":"/a","ipAddress":{{"groups":["123456789"]}},{task}}}"#),
                "group name \"123456789\" is 9 bytes, longer than groups.max_name_len = 8",
            ),
            (
                format!(
                    r#"{{"id":"/a","ipAddress":{{}},"labels":{{"network-groups":"ok,123456789"}},{task}}}"#
                ),
                "group name \"123456789\" is 9 bytes",
            ),
            (
                format!(
                    r#"{{"id":"/a","networks":[{{"mode":"container","labels":{{"network-groups":"a,b,c,d,e,f,g,h,i"}}}}],{task}}}"#
                ),
                "label \"network-groups\" is 17 bytes, longer than groups.max_label_len = 16",
            ),
        ];
        for (json, why) in cases {
            let t = convert(&json);
            assert_eq!(t.not_enforced, Some(NotEnforced::Invalid), "{json}");
            assert!(
                t.invalid.as_deref().unwrap_or_default().starts_with(why),
                "{t:?}"
            );
            assert!(
                t.ips.is_empty() && t.groups.is_empty() && t.labels.is_empty(),
                "{t:?}"
            );
        }
        // Another label too long is only left out, with a note.
        let t = convert(&format!(
            r#"{{"id":"/a","ipAddress":{{}},"labels":{{"k":"12345678901234567","12345678901234567":"v","ok":"v"}},{task}}}"#
        ));
        assert_eq!((t.invalid, t.not_enforced, t.labels.len()), (None, None, 1));
        let note = t.note.unwrap_or_default();
        assert!(
            note.contains("label \"k\" not kept")
                && note.contains("label \"12345678901234567\" not kept"),
            "{note}"
        );
        // At the limit is fine.
        let t = convert(&format!(
            r#"{{"id":"/a","ipAddress":{{"groups":["12345678"]}},"labels":{{"k":"1234567890123456"}},{task}}}"#
        ));
        assert_eq!((t.invalid, t.not_enforced), (None, None));
        assert!(t.groups.contains_key("12345678"));
    }

    #[test]
    fn a_rejected_version_stays_rejected_for_its_older_tasks() {
        let limits = GroupsConfig {
            max_name_len: 8,
            ..GroupsConfig::default()
        };
        let mut cache = VersionCache::default();
        let long = versioned(V1, V1, r#""123456789""#, V1);
        convert_app(&long, &limits, &mut cache);
        // V2 is current; the task launched by V1 is looked up in the cache.
        let t = convert_app(&versioned(V2, V2, r#""ok""#, V1), &limits, &mut cache).remove(0);
        assert_eq!(t.not_enforced, Some(NotEnforced::Invalid), "{t:?}");
        assert!(t.invalid.unwrap_or_default().contains("max_name_len"));
    }

    #[test]
    fn a_terminal_task_with_bad_data_stays_terminal() {
        let a = app(
            r#"{"id":"/a","ipAddress":{},"tasks":[{"id":"a.1","state":"TASK_KILLED","ipAddresses":[{"ipAddress":"nope"}]}]}"#,
        );
        let t = one_task(&a, &mut VersionCache::default());
        assert_eq!(t.not_enforced, Some(NotEnforced::Terminal));
        assert!(t.invalid.is_some());
    }

    #[test]
    fn network_label_groups_and_app_label_fallback() {
        let a = app(r#"{"id":"/a","labels":{"network-groups":"app-level"},
                "networks":[{"mode":"container","name":"n","labels":{"network-groups":"web, db"}}],
                "tasks":[{"id":"a.1","ipAddresses":[{"ipAddress":"9.0.0.3"}]}]}"#);
        let t = one_task(&a, &mut VersionCache::default());
        let names: Vec<&str> = t.groups.keys().map(|g| g.as_str()).collect();
        assert_eq!(names, vec!["db", "web"]);
        assert!(t.groups["web"].contains(&GroupOrigin::NetworkLabel));

        let b = app(r#"{"id":"/b","labels":{"network-groups":"app-level"},
                "networks":[{"mode":"container","name":"n"}],
                "tasks":[{"id":"b.1","ipAddresses":[{"ipAddress":"9.0.0.4"}]}]}"#);
        let t = one_task(&b, &mut VersionCache::default());
        assert!(t.groups["app-level"].contains(&GroupOrigin::TaskLabel));
    }

    #[test]
    fn discovery_ports_come_from_ip_address_or_container_port_mappings() {
        let a = app(
            r#"{"id":"/a","ipAddress":{"discovery":{"ports":[{"number":8080,"name":"http","protocol":"tcp"},{"number":0},{"number":70000}]}}}"#,
        );
        let ports = a.config(&GroupsConfig::default()).discovery_ports;
        assert_eq!(ports.len(), 1);
        let b = app(
            r#"{"id":"/b","networks":[{"mode":"container"}],"container":{"portMappings":[{"containerPort":53,"protocol":"udp,tcp"},{"containerPort":80,"hostPort":0}]}}"#,
        );
        let ports: Vec<(u16, Protocol)> = b
            .config(&GroupsConfig::default())
            .discovery_ports
            .iter()
            .map(|p| (p.number, p.protocol))
            .collect();
        assert_eq!(
            ports,
            vec![
                (53, Protocol::Tcp),
                (53, Protocol::Udp),
                (80, Protocol::Tcp)
            ]
        );
        let bridge = app(
            r#"{"id":"/c","networks":[{"mode":"container/bridge"}],"container":{"portMappings":[{"containerPort":80}]}}"#,
        );
        assert!(
            bridge
                .config(&GroupsConfig::default())
                .discovery_ports
                .is_empty(),
            "only endpoints have discovery ports"
        );
    }

    #[test]
    fn timestamps_compare_as_instants() {
        assert!(
            timestamp_key("2017-07-19T17:34:41.967Z") < timestamp_key("2017-07-19T17:34:41.97Z")
        );
        assert!(timestamp_key("2017-07-19T17:34:41Z") < timestamp_key("2017-07-19T17:34:41.001Z"));
        assert_eq!(
            timestamp_key("2017-07-19T17:34:41.5+00:00"),
            timestamp_key("2017-07-19T17:34:41.500Z")
        );
        for bad in [
            "",
            "x",
            "2017-07-19",
            "2017-07-19T17:34:41.967+02:00",
            "2017-7-19T17:34:41Z",
            "2017-07-19T17:34:41.1234567890Z",
        ] {
            assert_eq!(timestamp_key(bad), None, "{bad}");
        }
    }
}
