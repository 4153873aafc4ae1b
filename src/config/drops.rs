//! `[drops]`: the optional nflog path that lets an operator see which flow
//! groupd dropped and by which rule (`groupctl drops`).
//!
//! Off by default: every dropping rule then gets a rate-limited `log` rule in
//! front of it, which costs a rule evaluation per dropped packet.

use serde::{Deserialize, Serialize};

use super::values::BadValue;
use super::{Problem, Section};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropsConfig {
    /// Send dropped packets (rate-limited) to nflog and keep the recent ones
    /// for `groupctl drops`.
    #[serde(default)]
    pub log: bool,
    /// The nflog group the log rules send to and groupd listens on. Pick one
    /// no other nflog user (ulogd, another firewall) binds.
    #[serde(default = "default_group")]
    pub group: u16,
    /// `"<N>/second"` (or minute, hour, day): how many dropped packets each
    /// dropping rule logs at most. Drops above the rate are still dropped,
    /// just not shown.
    #[serde(default = "default_rate")]
    pub rate: Rate,
    /// Packets a rule may log in a burst above the rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// How many recent drops groupd keeps for `groupctl drops`.
    #[serde(default = "default_keep")]
    pub keep: usize,
}

fn default_group() -> u16 {
    4290
}
fn default_rate() -> Rate {
    Rate {
        rate: 50,
        unit_secs: 1,
    }
}
/// nft's own default (the one `nft list` leaves out of the text).
pub const DEFAULT_BURST: u32 = 5;
fn default_burst() -> u32 {
    DEFAULT_BURST
}
fn default_keep() -> usize {
    1000
}

impl Default for DropsConfig {
    fn default() -> Self {
        DropsConfig {
            log: false,
            group: default_group(),
            rate: default_rate(),
            burst: default_burst(),
            keep: default_keep(),
        }
    }
}

/// A rate as nftables takes it: `rate` packets per `unit_secs` seconds;
/// written `"<N>/<unit>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rate {
    pub rate: u64,
    pub unit_secs: u64,
}

/// The time units `nft` knows for `limit rate`, with their length in seconds.
pub const RATE_UNITS: [(&str, u64); 4] = [
    ("second", 1),
    ("minute", 60),
    ("hour", 3600),
    ("day", 86400),
];

impl Rate {
    pub fn parse(text: &str) -> Result<Rate, BadValue> {
        let bad = || {
            BadValue(format!(
                "drops.rate = {text:?}: use \"<N>/second\" (or /minute, /hour, /day) with N at least 1, like \"50/second\""
            ))
        };
        let (n, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let rate: u64 = n.trim().parse().map_err(|_| bad())?;
        let unit_secs = RATE_UNITS
            .iter()
            .find(|(name, _)| *name == unit.trim())
            .map(|(_, secs)| *secs)
            .ok_or_else(bad)?;
        if rate == 0 || rate > u32::MAX as u64 {
            return Err(bad());
        }
        Ok(Rate { rate, unit_secs })
    }

    /// The unit the way `nft list` spells it.
    pub fn unit_name(&self) -> &'static str {
        RATE_UNITS
            .iter()
            .find(|(_, secs)| *secs == self.unit_secs)
            .map(|(name, _)| *name)
            .unwrap_or("second")
    }
}

impl TryFrom<String> for Rate {
    type Error = BadValue;
    fn try_from(text: String) -> Result<Rate, BadValue> {
        Rate::parse(&text)
    }
}

impl From<Rate> for String {
    fn from(r: Rate) -> String {
        format!("{}/{}", r.rate, r.unit_name())
    }
}

impl Section for DropsConfig {
    fn check(&self) -> Result<(), Problem> {
        self.validate()
            .map_err(|(key, message)| Problem::new("drops", key, message))
    }
}

impl DropsConfig {
    /// The key at fault (to find its line) and the message, which names it.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.burst == 0 {
            let e = "drops.burst must be at least 1 (packets)";
            return Err(("burst", e.into()));
        }
        if self.group == 0 {
            // Group 0 is where the kernel's own nflog users (and old ulogd
            // setups) listen; sharing it would mix their packets with ours.
            let e =
                "drops.group must be 1-65535 (an nflog group no other program binds; default 4290)";
            return Err(("group", e.into()));
        }
        if !(1..=1_000_000).contains(&self.keep) {
            let e = "drops.keep must be between 1 and 1000000 (recent drops kept in memory)";
            return Err(("keep", e.into()));
        }
        Ok(())
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_nft_units() {
        assert_eq!(
            Rate::parse("50/second"),
            Ok(Rate {
                rate: 50,
                unit_secs: 1
            })
        );
        assert_eq!(Rate::parse(" 3 / minute").map(|r| r.unit_secs), Ok(60));
        for bad in ["50", "0/second", "x/second", "5/fortnight", "-1/second", ""] {
            assert!(Rate::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        let r = Rate::parse("3/minute").expect("valid");
        assert_eq!(String::from(r), "3/minute");
    }

    #[test]
    fn defaults_are_off_and_valid() {
        let d = DropsConfig::default();
        assert!(!d.log);
        assert_eq!(d.validate(), Ok(()));
        let bad = DropsConfig {
            burst: 0,
            ..DropsConfig::default()
        };
        assert_eq!(bad.validate().map_err(|(key, _)| key), Err("burst"));
        assert_eq!(d.rate().rate, 50);
    }
}
