//! Drops you can see: with `[drops] log = true` every dropping rule logs
//! (rate-limited) to nflog; groupd listens on that group, decodes each
//! packet, names its tasks and the rule in R1…R9 words, and keeps the most
//! recent ones for `groupctl drops`.
//!
//! - [`rule`]: the dropping rules and their stable ids (the nflog prefixes).
//! - [`decode`]: an nflog message -> the dropped flow (pure).
//! - [`listener`]: the nflog socket (a thread; bytes -> [`LoggedPacket`]s).
//! - [`Recent`] (here): the ring of annotated drops the daemon loop keeps.

pub mod decode;
pub mod listener;
pub mod rule;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use decode::LoggedPacket;
pub use rule::DropRule;

use crate::compile::{self, Policy};
use crate::ruleset::{Action, Rule};
use crate::state::DesiredState;

/// One drop as `groupctl drops` shows it. Tasks are named when the drop is
/// recorded: a task gone since then still shows by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropRecord {
    /// Increases by one per drop recorded (`groupctl drops --follow` asks
    /// for what came after the last one it printed).
    pub seq: u64,
    pub time_unix: f64,
    /// The stable id of the rule (`gd-r1-egress`), as in the nflog prefix.
    pub rule: String,
    /// The chain of the dropping rule.
    pub chain: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_task: Option<String>,
    pub src_app: Option<String>,
    pub dst_task: Option<String>,
    pub dst_app: Option<String>,
    /// "tcp", "udp", "icmp", "icmpv6", "arp" or the protocol number.
    pub proto: String,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp_type: Option<u8>,
    pub in_iface: Option<String>,
    pub out_iface: Option<String>,
    /// The rule's verdict in the operator's words, as `groupctl explain`
    /// says it ("R1: task … and task … share no group; dropped by …").
    pub reason: String,
}

/// The answer to [`crate::status::Request::Drops`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DropsAnswer {
    /// `[drops] log` is on.
    pub enabled: bool,
    /// Why groupd cannot receive its drops (the rules still drop).
    pub listener_error: Option<String>,
    /// Seq of the newest drop recorded (0: none yet), filter or not.
    pub last_seq: u64,
    /// Drops the daemon could not keep up with (socket overrun).
    pub lost: u64,
    pub drops: Vec<DropRecord>,
}

/// The most recent drops, oldest first.
pub struct Recent {
    enabled: bool,
    keep: usize,
    ring: VecDeque<DropRecord>,
    next_seq: u64,
    lost: u64,
    listener_error: Option<String>,
    /// Id -> (chain, text) of the dropping rules, per address family.
    rules: HashMap<&'static str, Vec<(String, Rule)>>,
}

impl Recent {
    pub fn new(policy: &Policy, keep: usize) -> Recent {
        let mut rules: HashMap<&'static str, Vec<(String, Rule)>> = HashMap::new();
        let (inet, bridge) = compile::skeleton(policy);
        for chain in inet.chains.iter().chain(&bridge.chains) {
            // A log rule is followed by the drop it reports.
            for pair in chain.rules.windows(2) {
                if let Action::Log { prefix, .. } = &pair[0].action {
                    if let Some(r) = DropRule::from_id(prefix) {
                        rules
                            .entry(r.id())
                            .or_default()
                            .push((chain.name.clone(), pair[1].clone()));
                    }
                }
            }
        }
        Recent {
            enabled: policy.drop_log.is_some(),
            keep: keep.max(1),
            ring: VecDeque::new(),
            next_seq: 1,
            lost: 0,
            listener_error: None,
            rules,
        }
    }

    pub fn set_listener_error(&mut self, e: String) {
        self.listener_error = Some(e);
    }

    pub fn add_lost(&mut self, n: u64) {
        self.lost += n;
    }

    /// Name the packet's tasks and rule with the view as it is now, and keep it.
    pub fn record(&mut self, state: &DesiredState, p: LoggedPacket, time_unix: f64) {
        let (chain, rule_text) = self.rule_of(&p);
        let task = |ip: &IpAddr| {
            let id = state.owner_of(ip)?;
            let app = state.view().tasks.get(id).map(|t| t.app.to_string());
            Some((id.to_string(), app))
        };
        let (src_task, src_app) = task(&p.src).map_or((None, None), |(t, a)| (Some(t), a));
        let (dst_task, dst_app) = task(&p.dst).map_or((None, None), |(t, a)| (Some(t), a));
        let reason = crate::explain::drop_reason(state, p.src, p.dst, &chain, &rule_text);
        let record = DropRecord {
            seq: self.next_seq,
            time_unix,
            rule: p.rule.id().to_string(),
            chain,
            src: p.src,
            dst: p.dst,
            src_task,
            src_app,
            dst_task,
            dst_app,
            proto: decode::proto_name(p.proto),
            sport: p.sport,
            dport: p.dport,
            icmp_type: p.icmp_type,
            in_iface: p.in_ifindex.and_then(ifname),
            out_iface: p.out_ifindex.and_then(ifname),
            reason,
        };
        self.next_seq += 1;
        if self.ring.len() >= self.keep {
            self.ring.pop_front();
        }
        self.ring.push_back(record);
    }

    /// The chain and text of the rule that dropped `p` (the IPv4 or IPv6
    /// twin, when a rule has one per family).
    fn rule_of(&self, p: &LoggedPacket) -> (String, String) {
        let candidates = self.rules.get(p.rule.id()).map(Vec::as_slice);
        let family_ok = |r: &Rule| {
            r.matches.iter().filter_map(|m| m.l3()).all(|l3| match l3 {
                crate::ruleset::L3::Ip6 => p.src.is_ipv6(),
                _ => p.src.is_ipv4(),
            })
        };
        match candidates.unwrap_or_default() {
            [] => (p.rule.chain().to_string(), "drop".to_string()),
            all => {
                let (chain, rule) = all.iter().find(|(_, r)| family_ok(r)).unwrap_or(&all[0]);
                (chain.clone(), rule.text())
            }
        }
    }

    /// Drops after `after` (a seq), involving `task` if given, oldest first.
    pub fn answer(&self, task: Option<&str>, after: Option<u64>) -> DropsAnswer {
        let involves = |r: &DropRecord| match task {
            None => true,
            Some(t) => r.src_task.as_deref() == Some(t) || r.dst_task.as_deref() == Some(t),
        };
        DropsAnswer {
            enabled: self.enabled,
            listener_error: self.listener_error.clone(),
            last_seq: self.next_seq - 1,
            lost: self.lost,
            drops: self
                .ring
                .iter()
                .filter(|r| r.seq > after.unwrap_or(0) && involves(r))
                .cloned()
                .collect(),
        }
    }
}

/// The name of interface `index` in this namespace (it may be gone).
fn ifname(index: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into buf.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr() as *mut libc::c_char) };
    if p.is_null() {
        return None;
    }
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// One line of `groupctl drops`: time, source, destination, protocol/port,
/// and the rule in R1…R9 words.
pub fn format_line(r: &DropRecord) -> String {
    let who = |task: &Option<String>, app: &Option<String>, ip: &IpAddr| match (task, app) {
        (Some(t), Some(a)) => format!("{} ({}, {ip})", clean(t), clean(a)),
        (Some(t), None) => format!("{} ({ip})", clean(t)),
        _ => ip.to_string(),
    };
    let what = match (r.proto.as_str(), r.dport, r.icmp_type) {
        (p, Some(port), _) => format!("{p}/{port}"),
        (p, None, Some(t)) => format!("{p} type {t}"),
        (p, None, None) => p.to_string(),
    };
    format!(
        "{}  {} -> {}  {}  [{}] {}",
        time_text(r.time_unix),
        who(&r.src_task, &r.src_app, &r.src),
        who(&r.dst_task, &r.dst_app, &r.dst),
        what,
        r.rule,
        clean(&r.reason),
    )
}

/// Control characters from the master never reach the operator's terminal.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// UTC time of day with milliseconds, and the date: `2026-12-02T15:04:05.123Z`.
fn time_text(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let millis = ((unix.max(0.0) - secs as f64) * 1000.0) as u32;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm; no date crate for one line of output).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::LocalBinding;
    use crate::config::Config;
    use crate::model::{ClusterView, Task};

    fn state(log: bool) -> DesiredState {
        let toml = format!("[source]\nkind = \"file\"\npath = \"/x\"\n[drops]\nlog = {log}\n");
        let c = Config::parse(&toml).expect("config");
        let mut st = DesiredState::new(Policy::from_config(&c));
        let mut v = ClusterView::default();
        v.insert(Task::running(
            "web.1",
            "/web",
            ["10.233.1.1".parse().expect("ip")],
            &["web"],
        ));
        v.insert(Task::running(
            "db.1",
            "/db",
            ["10.233.1.2".parse().expect("ip")],
            &["db"],
        ));
        st.set_view(v);
        let mut b = HashMap::new();
        for (ip, iface) in [("10.233.1.1", "veth1"), ("10.233.1.2", "veth2")] {
            let ip: IpAddr = ip.parse().expect("ip");
            b.insert(
                ip,
                LocalBinding {
                    iface: iface.into(),
                    ip,
                    bridge: None,
                },
            );
        }
        st.set_bindings(b, Default::default(), Default::default());
        st
    }

    fn packet(rule: DropRule) -> LoggedPacket {
        LoggedPacket {
            rule,
            src: "10.233.1.1".parse().expect("ip"),
            dst: "10.233.1.2".parse().expect("ip"),
            proto: Some(6),
            sport: Some(40000),
            dport: Some(5432),
            icmp_type: None,
            in_ifindex: None,
            out_ifindex: None,
        }
    }

    #[test]
    fn a_drop_is_named_by_tasks_and_explained_like_explain() {
        let st = state(true);
        let mut recent = Recent::new(st.policy(), 10);
        recent.record(&st, packet(DropRule::EgressNoSharedGroup), 1_796_223_845.5);
        let a = recent.answer(None, None);
        assert!(a.enabled);
        let r = &a.drops[0];
        assert_eq!(r.src_task.as_deref(), Some("web.1"));
        assert_eq!(r.dst_app.as_deref(), Some("/db"));
        assert_eq!(r.chain, "egress");
        // The same words `groupctl explain` uses for this flow.
        let explained = crate::explain::explain(
            &st,
            r.src,
            r.dst,
            crate::explain::Proto::Tcp,
            Some(5432),
            false,
        );
        assert_eq!(explained.verdict, "drop");
        assert_eq!(r.reason, explained.reason);
        assert!(r.reason.starts_with("R1: "), "{}", r.reason);
        let line = format_line(r);
        assert_eq!(
            line,
            format!(
                "2026-12-02T15:04:05.500Z  web.1 (/web, 10.233.1.1) -> db.1 (/db, 10.233.1.2)  tcp/5432  [gd-r1-egress] {}",
                r.reason
            )
        );
    }

    #[test]
    fn the_ring_keeps_the_newest_and_filters_by_task_and_seq() {
        let st = state(true);
        let mut recent = Recent::new(st.policy(), 3);
        for _ in 0..5 {
            recent.record(&st, packet(DropRule::Ingress), 0.0);
        }
        let all = recent.answer(None, None);
        assert_eq!(all.last_seq, 5);
        let seqs: Vec<u64> = all.drops.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(recent.answer(None, Some(4)).drops.len(), 1);
        assert_eq!(recent.answer(Some("db.1"), None).drops.len(), 3);
        assert!(recent.answer(Some("other.1"), None).drops.is_empty());
    }

    #[test]
    fn log_off_means_no_log_rules_and_disabled_answers() {
        let st = state(false);
        let (inet, bridge) = compile::skeleton(st.policy());
        let logs = inet
            .chains
            .iter()
            .chain(&bridge.chains)
            .flat_map(|c| &c.rules)
            .filter(|r| matches!(r.action, Action::Log { .. }))
            .count();
        assert_eq!(logs, 0);
        assert!(!Recent::new(st.policy(), 5).answer(None, None).enabled);
    }

    #[test]
    fn every_dropping_rule_is_preceded_by_its_log_rule_when_on() {
        let st = state(true);
        let (inet, bridge) = compile::skeleton(st.policy());
        let mut seen = std::collections::BTreeSet::new();
        for c in inet.chains.iter().chain(&bridge.chains) {
            for (i, r) in c.rules.iter().enumerate() {
                if r.action == Action::Verdict(crate::ruleset::Verdict::Drop) {
                    let Some(prev) = i.checked_sub(1).map(|j| &c.rules[j]) else {
                        panic!("drop without a log rule in {}", c.name);
                    };
                    let Action::Log { prefix, group } = &prev.action else {
                        panic!("drop without a log rule in {}: {}", c.name, r.text());
                    };
                    assert_eq!(*group, 4290);
                    let rule = DropRule::from_id(prefix).expect("known id");
                    assert_eq!(rule.chain(), c.name);
                    seen.insert(rule);
                    // The same matches as the drop, then the limit.
                    let (limit, same) = prev.matches.split_last().expect("a limit");
                    assert!(matches!(limit, crate::ruleset::Match::Limit { .. }));
                    assert_eq!(same, r.matches.as_slice());
                }
            }
        }
        // Egress non-endpoint drops exist only with egress_non_endpoint = "deny".
        assert_eq!(seen.len(), DropRule::ALL.len() - 1);
    }
}
