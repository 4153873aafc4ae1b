//! What groupd remembers of Marathon app versions: [`VersionCache`].
//!
//! The cache has an entry for every app of the cluster, and most entries
//! are never read (only tasks still running an older version need one), so
//! each entry is packed: an app's id and everything known of it (its
//! configurations and the versions that had each) are one byte string,
//! written by [`pack`] and read by [`unpack`]. An app costs those bytes and
//! a 24-byte table slot; as separate strings, vectors and shared
//! configurations it cost about three times that (seven allocations per
//! app, ~430 bytes).

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use super::{timestamp_key, App, AppConfig};
use crate::config::GroupsConfig;
use crate::model::{DiscoveryPort, GroupName, Protocol, VecMap, VecSet};
use crate::source::wire::NetworkKind;

/// Remembers the configuration of app versions seen in earlier documents.
///
/// `/v2/apps` only shows the newest version of an app, but a task keeps the
/// groups of the version that launched it (`task.version`) until it is
/// replaced, e.g. during a rolling deployment. groupd learns each version
/// while it is current and uses that knowledge for older tasks later.
///
/// A version covers more than its own timestamp: Marathon creates a new
/// version on every scale or restart too, and `versionInfo.lastConfigChangeAt`
/// says since when the configuration is unchanged. Every version between that
/// and `app.version` has the same configuration.
///
/// Only the [`AppConfig`] (what a task inherits) is kept, never the app
/// definition, and packed (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct VersionCache {
    /// Each app, with the last complete document (`generation`) it was in.
    apps: HashMap<KnownApp, u64>,
    /// Number of complete documents converted.
    generation: u64,
}

/// An app id and its configurations, oldest first, packed ([`pack`]). As a
/// key it is its id: it hashes and compares as the id `str`, so the table is
/// looked up by app id.
#[derive(Debug, Clone)]
struct KnownApp(Box<[u8]>);

impl KnownApp {
    fn new(id: &str, records: &[Record<'_>]) -> KnownApp {
        KnownApp(pack(id, records))
    }

    fn id(&self) -> &str {
        let mut c = Cursor(&self.0);
        c.str().unwrap_or_default()
    }

    fn records(&self) -> Vec<Record<'_>> {
        let mut c = Cursor(&self.0);
        match c.str() {
            Some(_) => unpack(c),
            None => Vec::new(),
        }
    }
}

impl Borrow<str> for KnownApp {
    fn borrow(&self) -> &str {
        self.id()
    }
}

impl Hash for KnownApp {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes: `Borrow<str>` requires it.
        self.id().hash(state);
    }
}

impl PartialEq for KnownApp {
    fn eq(&self, other: &KnownApp) -> bool {
        self.id() == other.id()
    }
}

impl Eq for KnownApp {}

/// One configuration of an app and the versions seen current with it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record<'a> {
    /// `lastConfigChangeAt` of the versions below.
    since: Option<&'a str>,
    /// Sorted, without duplicates.
    versions: Vec<&'a str>,
    /// [`encode_config`] of the configuration.
    config: &'a [u8],
}

/// Bounds memory for an app redeployed in a loop while old tasks linger.
const MAX_CONFIGS_PER_APP: usize = 32;

impl Record<'_> {
    fn covers(&self, version: &str) -> bool {
        if self.versions.binary_search(&version).is_ok() {
            return true;
        }
        let (Some(since), Some(latest)) = (
            self.since,
            self.versions.iter().filter_map(|v| timestamp_key(v)).max(),
        ) else {
            return false;
        };
        match (timestamp_key(since), timestamp_key(version)) {
            (Some(since), Some(v)) => since <= v && v <= latest,
            _ => false,
        }
    }
}

impl VersionCache {
    /// Record `app` as the configuration of `app.version` (no-op for an app
    /// without a version: there is nothing to match tasks against).
    pub fn learn(&mut self, app: &App, limits: &GroupsConfig) {
        self.learn_config(app, &app.config(limits));
    }

    /// [`learn`](Self::learn) with `config == app.config(limits)`.
    pub(super) fn learn_config(&mut self, app: &App, config: &AppConfig) {
        let Some(version) = app
            .version
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
        else {
            return;
        };
        let since = app
            .version_info
            .as_ref()
            .and_then(|i| i.last_config_change_at.as_deref());
        let mut encoded = Vec::new();
        encode_config(config, &mut encoded);
        let known = self.apps.get_key_value(app.id.as_str());
        let mut records = known.map(|(k, _)| k.records()).unwrap_or_default();
        if let Some(record) = records
            .iter_mut()
            .find(|r| r.since == since && r.config == encoded.as_slice())
        {
            match record.versions.binary_search(&version) {
                // Nothing new (the usual case: the same document again).
                Ok(_) => return,
                Err(at) => record.versions.insert(at, version),
            }
        } else {
            records.retain(|r| !r.versions.contains(&version));
            records.push(Record {
                since,
                versions: vec![version],
                config: &encoded,
            });
            if records.len() > MAX_CONFIGS_PER_APP {
                records.remove(0);
            }
        }
        let replacement = KnownApp::new(&app.id, &records);
        self.replace(replacement);
    }

    /// Put `known` in place of the entry with its id, keeping when that app
    /// was last seen.
    fn replace(&mut self, known: KnownApp) {
        let seen = self.apps.remove(known.id()).unwrap_or(0);
        self.apps.insert(known, seen);
    }

    /// The configuration of `app_id` at `version`, if groupd has seen it.
    pub fn lookup(&self, app_id: &str, version: &str) -> Option<AppConfig> {
        let version = version.trim();
        let (known, _) = self.apps.get_key_value(app_id)?;
        let records = known.records();
        let record = records.iter().rev().find(|r| r.covers(version))?;
        decode_config(record.config)
    }

    /// Whether [`lookup`](Self::lookup) would find a configuration.
    pub fn knows(&self, app_id: &str, version: &str) -> bool {
        let version = version.trim();
        self.apps
            .get_key_value(app_id)
            .is_some_and(|(known, _)| known.records().iter().any(|r| r.covers(version)))
    }

    /// Number of (app, configuration) pairs remembered.
    pub fn len(&self) -> usize {
        self.apps.keys().map(|k| k.records().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Make room for `apps` apps at once (growing the table step by step
    /// holds the old and the new table together at each step).
    pub(super) fn reserve(&mut self, apps: usize) {
        self.apps.reserve(apps.saturating_sub(self.apps.len()));
    }

    /// Forget configurations of `app_id` that cover none of `versions`.
    pub(super) fn retain_versions(&mut self, app_id: &str, versions: &BTreeSet<&str>) {
        let Some((known, _)) = self.apps.get_key_value(app_id) else {
            return;
        };
        let mut records = known.records();
        let before = records.len();
        records.retain(|r| versions.iter().any(|v| r.covers(v)));
        if records.len() != before {
            let replacement = KnownApp::new(app_id, &records);
            self.replace(replacement);
        }
    }

    /// Start converting a complete document: apps not [`mark`](Self::mark)ed
    /// before [`forget_unmarked`](Self::forget_unmarked) are forgotten.
    pub(super) fn begin_complete(&mut self) {
        self.generation += 1;
    }

    /// `app_id` is in the complete document being converted.
    pub(super) fn mark(&mut self, app_id: &str) {
        if let Some(seen) = self.apps.get_mut(app_id) {
            *seen = self.generation;
        }
    }

    /// Forget apps that are not in the complete document just converted.
    pub(super) fn forget_unmarked(&mut self) {
        let generation = self.generation;
        self.apps.retain(|_, seen| *seen == generation);
        if self.apps.capacity() > 4 * self.apps.len().max(64) {
            self.apps.shrink_to_fit();
        }
    }
}

// The packed form. Integers are little-endian; a string is its length (u32)
// and its bytes. Only `pack` writes it, so `unpack` of anything else is not
// expected; it stops at the first thing it cannot read.
//
//   app id str, then records: { since-flag u8, [since str], count u16,
//                               version str * count, config-length u32,
//                               config bytes } *

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b.get(..u32::MAX as usize).unwrap_or(b));
}

fn put_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

/// Reads what `put_*` wrote.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<usize> {
        let b = self.take(4)?;
        usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok()
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        self.take(n)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn pack(id: &str, records: &[Record<'_>]) -> Box<[u8]> {
    let mut out = Vec::new();
    put_str(&mut out, id);
    for r in records {
        match r.since {
            Some(since) => {
                out.push(1);
                put_str(&mut out, since);
            }
            None => out.push(0),
        }
        let count = u16::try_from(r.versions.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        for v in r.versions.iter().take(usize::from(count)) {
            put_str(&mut out, v);
        }
        put_bytes(&mut out, r.config);
    }
    out.into_boxed_slice()
}

/// The records after the app id.
fn unpack(mut c: Cursor<'_>) -> Vec<Record<'_>> {
    let mut records = Vec::new();
    while !c.is_empty() {
        let Some(record) = unpack_record(&mut c) else {
            break;
        };
        records.push(record);
    }
    records
}

fn unpack_record<'a>(c: &mut Cursor<'a>) -> Option<Record<'a>> {
    let since = match c.u8()? {
        0 => None,
        _ => Some(c.str()?),
    };
    let count = c.u16()?;
    let versions = (0..count).map(|_| c.str()).collect::<Option<Vec<_>>>()?;
    let config = c.bytes()?;
    Some(Record {
        since,
        versions,
        config,
    })
}

fn network_code(kind: NetworkKind) -> u8 {
    match kind {
        NetworkKind::Host => 0,
        NetworkKind::NatBridge => 1,
        NetworkKind::PerTask => 2,
        NetworkKind::Unknown => 3,
    }
}

fn network_of(code: u8) -> Option<NetworkKind> {
    Some(match code {
        0 => NetworkKind::Host,
        1 => NetworkKind::NatBridge,
        2 => NetworkKind::PerTask,
        3 => NetworkKind::Unknown,
        _ => return None,
    })
}

fn encode_config(config: &AppConfig, out: &mut Vec<u8>) {
    out.push(network_code(config.network));
    put_count(out, config.ip_groups.len());
    for g in config.ip_groups.iter() {
        put_str(out, g);
    }
    put_count(out, config.network_labels.len());
    for (k, v) in &config.network_labels {
        put_str(out, k);
        put_str(out, v);
    }
    put_count(out, config.app_labels.len());
    for (k, v) in &config.app_labels {
        put_str(out, k);
        put_str(out, v);
    }
    put_count(out, config.discovery_ports.len());
    for p in &config.discovery_ports {
        out.extend_from_slice(&p.number.to_le_bytes());
        out.push(match p.protocol {
            Protocol::Tcp => 0,
            Protocol::Udp => 1,
        });
        match &p.name {
            Some(name) => {
                out.push(1);
                put_str(out, name);
            }
            None => out.push(0),
        }
    }
    for text in [&config.note, &config.invalid] {
        match text {
            Some(text) => {
                out.push(1);
                put_str(out, text);
            }
            None => out.push(0),
        }
    }
}

fn decode_config(bytes: &[u8]) -> Option<AppConfig> {
    let mut c = Cursor(bytes);
    let network = network_of(c.u8()?)?;
    let ip_groups = (0..c.u32()?)
        .map(|_| c.str().map(GroupName::new))
        .collect::<Option<Box<[GroupName]>>>()?;
    let pair = |c: &mut Cursor<'_>| Some((c.str()?.to_string(), c.str()?.to_string()));
    let network_labels = (0..c.u32()?)
        .map(|_| pair(&mut c))
        .collect::<Option<Vec<_>>>()?;
    let app_labels = (0..c.u32()?)
        .map(|_| pair(&mut c))
        .collect::<Option<VecMap<_, _>>>()?;
    let discovery_ports = (0..c.u32()?)
        .map(|_| {
            let number = c.u16()?;
            let protocol = match c.u8()? {
                0 => Protocol::Tcp,
                1 => Protocol::Udp,
                _ => return None,
            };
            let name = match c.u8()? {
                0 => None,
                _ => Some(c.str()?.to_string()),
            };
            Some(DiscoveryPort {
                number,
                protocol,
                name,
            })
        })
        .collect::<Option<VecSet<_>>>()?;
    let mut text = || match c.u8()? {
        0 => Some(None),
        _ => Some(Some(c.str()?.into())),
    };
    let note = text()?;
    let invalid = text()?;
    c.is_empty().then_some(AppConfig {
        network,
        ip_groups,
        network_labels,
        app_labels,
        discovery_ports,
        note,
        invalid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        groups: &[&str],
        labels: &[(&str, &str)],
        ports: &[(u16, Protocol, Option<&str>)],
    ) -> AppConfig {
        AppConfig {
            network: NetworkKind::PerTask,
            ip_groups: groups.iter().map(|g| GroupName::new(g)).collect(),
            network_labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            app_labels: labels
                .iter()
                .rev()
                .map(|(k, v)| (format!("app-{k}"), v.to_string()))
                .collect(),
            discovery_ports: ports
                .iter()
                .map(|(number, protocol, name)| DiscoveryPort {
                    number: *number,
                    protocol: *protocol,
                    name: name.map(str::to_string),
                })
                .collect(),
            note: None,
            invalid: None,
        }
    }

    #[test]
    fn a_configuration_comes_back_as_it_went_in() {
        let odd = "x\"; drop table; \u{1F600}";
        let configs = [
            config(&[], &[], &[]),
            config(
                &["a", "", odd],
                &[("k", "v"), ("", "")],
                &[(80, Protocol::Tcp, Some("http")), (53, Protocol::Udp, None)],
            ),
            AppConfig {
                network: NetworkKind::Host,
                ..config(&["b"], &[], &[(0, Protocol::Udp, Some(""))])
            },
            AppConfig {
                network: NetworkKind::NatBridge,
                ..config(&[], &[], &[])
            },
            AppConfig {
                network: NetworkKind::Unknown,
                ..config(&["c"], &[], &[])
            },
            AppConfig {
                invalid: Some("group name \"x…\" is 300 bytes".into()),
                ..config(&[], &[], &[])
            },
            AppConfig {
                note: Some("label \"k\" not kept".into()),
                ..config(&["d"], &[], &[])
            },
        ];
        for c in &configs {
            let mut bytes = Vec::new();
            encode_config(c, &mut bytes);
            assert_eq!(decode_config(&bytes).as_ref(), Some(c));
            // Truncated or extended bytes are not a configuration.
            for cut in 0..bytes.len() {
                assert_ne!(decode_config(&bytes[..cut]).as_ref(), Some(c));
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(decode_config(&longer), None);
        }
    }

    #[test]
    fn records_come_back_as_they_went_in() {
        let records = vec![
            Record {
                since: None,
                versions: vec!["v1"],
                config: b"abc",
            },
            Record {
                since: Some("2017-01-01T00:00:00.000Z"),
                versions: vec!["2017-01-02T00:00:00.000Z", "2017-01-03T00:00:00.000Z"],
                config: b"",
            },
        ];
        let known = KnownApp::new("/web", &records);
        assert_eq!(known.id(), "/web");
        assert_eq!(known.records(), records);
        let empty = KnownApp::new("", &[]);
        assert_eq!((empty.id(), empty.records()), ("", vec![]));
        // A key is its id: found by `str`, equal whatever it knows.
        let mut apps = HashMap::new();
        apps.insert(known, 7u64);
        assert_eq!(apps.get("/web"), Some(&7));
        assert!(apps.contains_key(&KnownApp::new("/web", &[])));
        assert!(!apps.contains_key("/we"));
    }
}
