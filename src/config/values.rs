//! Config values that are more than strings and numbers, checked as they
//! are deserialized: a bad one is reported at its own line by the parser,
//! and the rest of groupd only ever sees the typed value.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that cannot be what its key needs; the message names the key
/// and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadValue(pub String);

/// How a task with no groups is treated (R3): `"isolated"` or
/// `"group:NAME"` in `groups.ungrouped`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Ungrouped {
    Isolated,
    Group(String),
}

impl TryFrom<String> for Ungrouped {
    type Error = BadValue;
    fn try_from(text: String) -> Result<Ungrouped, BadValue> {
        match text.strip_prefix("group:") {
            _ if text == "isolated" => Ok(Ungrouped::Isolated),
            Some(name) if !name.is_empty() => Ok(Ungrouped::Group(name.to_string())),
            _ => Err(BadValue(format!(
                "groups.ungrouped = {text:?}: use \"isolated\" or \"group:NAME\""
            ))),
        }
    }
}

impl From<Ungrouped> for String {
    fn from(u: Ungrouped) -> String {
        match u {
            Ungrouped::Isolated => "isolated".into(),
            Ungrouped::Group(name) => format!("group:{name}"),
        }
    }
}

/// A pattern of `interfaces.match`: an exact name or a prefix (`veth*`).
/// Only these two forms exist because the kernel rule that fails closed on
/// unknown task interfaces must be expressible as a static nftables match
/// (which covers interfaces created while groupd is not running).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum IfacePattern {
    Exact(String),
    Prefix(String),
}

impl IfacePattern {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            IfacePattern::Exact(e) => name == e,
            IfacePattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

impl FromStr for IfacePattern {
    type Err = BadValue;
    fn from_str(m: &str) -> Result<IfacePattern, BadValue> {
        let body = m.strip_suffix('*').unwrap_or(m);
        if body.is_empty()
            || body.contains(['*', '?', '[', ']'])
            || body.len() > 15
            || m.contains('/')
        {
            return Err(BadValue(format!(
                "interfaces.match: {m:?} is not supported; use an interface name or a prefix ending in one `*` (like \"veth*\"), at most 15 characters"
            )));
        }
        Ok(match m.strip_suffix('*') {
            Some(p) => IfacePattern::Prefix(p.to_string()),
            None => IfacePattern::Exact(m.to_string()),
        })
    }
}

impl TryFrom<String> for IfacePattern {
    type Error = BadValue;
    fn try_from(text: String) -> Result<IfacePattern, BadValue> {
        text.parse()
    }
}

impl From<IfacePattern> for String {
    fn from(p: IfacePattern) -> String {
        p.to_string()
    }
}

impl fmt::Display for IfacePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IfacePattern::Exact(e) => f.write_str(e),
            IfacePattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// Durations written as seconds (`10`, `0.5`). What the key needs beyond a
/// duration (its range) is checked with the rest of its section; a value
/// that is no duration at all (negative, nan, inf) gets the same message.
pub mod seconds {
    use super::*;

    /// `source.resync_interval`.
    pub const RESYNC_INTERVAL: &str = "source.resync_interval must be at least 1 (seconds)";

    pub fn resync_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        duration(d, RESYNC_INTERVAL)
    }

    /// `daemon.verify_interval`.
    pub fn verify_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        duration(d, &verify_interval_range())
    }

    pub fn verify_interval_range() -> String {
        format!(
            "daemon.verify_interval must be between 0.1 and {} (seconds); the systemd watchdog does not depend on it",
            crate::config::MAX_VERIFY_INTERVAL
        )
    }

    fn duration<'de, D: Deserializer<'de>>(d: D, range: &str) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(|_| serde::de::Error::custom(range))
    }

    /// As seconds, the way it was written.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ungrouped_reads_and_writes_its_two_forms() {
        for (text, want) in [
            ("isolated", Ungrouped::Isolated),
            ("group:default", Ungrouped::Group("default".into())),
        ] {
            let u = Ungrouped::try_from(text.to_string()).expect(text);
            assert_eq!(u, want);
            assert_eq!(String::from(u), text);
        }
        for bad in ["nobody", "group:", "Isolated"] {
            let e = Ungrouped::try_from(bad.to_string()).expect_err(bad);
            assert!(e.0.contains("group:NAME"), "{e}");
        }
    }

    #[test]
    fn patterns_are_names_or_prefixes() {
        let p: IfacePattern = "veth*".parse().expect("prefix");
        assert!(p.matches("veth12") && !p.matches("eth0"));
        assert_eq!(p.to_string(), "veth*");
        let p: IfacePattern = "eth1".parse().expect("exact");
        assert!(p.matches("eth1") && !p.matches("eth10"));
        for bad in ["*", "v*th", "ve?h", "a/b", "averyveryverylongname*"] {
            assert!(bad.parse::<IfacePattern>().is_err(), "{bad}");
        }
    }
}
