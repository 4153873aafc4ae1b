//! Read groupd's table back from the kernel: what exists, as plain data that
//! can be diffed against the desired [`crate::ruleset::Table`].

use std::collections::{BTreeMap, BTreeSet};

use netlink_packet_core::Nla;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, DataAttribute, Hook, HookNumber, InetHookNumber, ListAttribute,
    NfTablesMessage, RuleAttribute, RuleMessage, SetAttribute, SetElementAttribute, SetElementList,
    SetElementMessage, SetMessage, TableAttribute, TableMessage, Verdict as NlVerdict,
    VerdictAttribute,
};
use netlink_packet_netfilter::nftables::{ChainMessage, ExpressionAttribute, Expressions};

use super::socket::{NfSocket, NftError};
use super::udata;
use crate::ruleset::{Element, Family, Hook as RHook, Verdict};

/// A set as the kernel reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelSet {
    pub key_len: u32,
    pub key_type: u32,
    pub flags: u32,
    pub data_type: Option<u32>,
    pub userdata: Vec<u8>,
    pub elements: BTreeSet<Element>,
}

/// A chain as the kernel reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelChain {
    pub hook: Option<(RHook, i32)>,
    pub policy: Option<u32>,
    /// Rules in order: (handle, tag from the rule comment).
    pub rules: Vec<(u64, Option<String>)>,
    /// Counter (packets, bytes) of each rule that has one, in rule order.
    pub rule_counters: Vec<Option<(u64, u64)>>,
}

impl KernelChain {
    /// (packets, bytes) of every counted rule, in order.
    pub fn counters(&self) -> Vec<(u64, u64)> {
        self.rule_counters.iter().flatten().copied().collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelTable {
    pub exists: bool,
    pub sets: BTreeMap<String, KernelSet>,
    pub chains: BTreeMap<String, KernelChain>,
}

impl KernelTable {
    pub fn element_count(&self) -> usize {
        self.sets.values().map(|s| s.elements.len()).sum()
    }
}

/// Dump table `name` of `family`. A missing table reads as `exists: false`.
pub fn read_table(
    sock: &mut NfSocket,
    family: Family,
    name: &str,
) -> Result<KernelTable, NftError> {
    let fam = super::encode::nl_family(family);
    let tables = sock.dump(
        fam,
        NfTablesMessage::GetTable(TableMessage { attributes: vec![] }),
    )?;
    let exists = tables.iter().any(|m| match m {
        NfTablesMessage::NewTable(t) => t
            .attributes
            .iter()
            .any(|a| matches!(a, TableAttribute::Name(n) if n == name)),
        _ => false,
    });
    let mut out = KernelTable {
        exists,
        ..Default::default()
    };
    if !exists {
        return Ok(out);
    }
    let table_attr = || SetAttribute::Table(name.to_string());
    for m in sock.dump(
        fam,
        NfTablesMessage::GetSet(SetMessage {
            attributes: vec![table_attr()],
        }),
    )? {
        if let NfTablesMessage::NewSet(s) = m {
            if let Some((set_name, set)) = parse_set(&s, name) {
                out.sets.insert(set_name, set);
            }
        }
    }
    let set_names: Vec<String> = out.sets.keys().cloned().collect();
    for set_name in set_names {
        let req = NfTablesMessage::GetSetElement(SetElementMessage {
            attributes: vec![
                SetElementList::Table(name.to_string()),
                SetElementList::Set(set_name.clone()),
            ],
        });
        let mut elements = BTreeSet::new();
        for m in sock.dump(fam, req)? {
            if let NfTablesMessage::NewSetElement(e) = m {
                parse_elements(&e, &mut elements);
            }
        }
        if let Some(s) = out.sets.get_mut(&set_name) {
            s.elements = elements;
        }
    }
    for m in sock.dump(
        fam,
        NfTablesMessage::GetChain(ChainMessage {
            attributes: vec![ChainAttribute::Table(name.to_string())],
        }),
    )? {
        if let NfTablesMessage::NewChain(c) = m {
            if let Some((chain_name, chain)) = parse_chain(&c.attributes, name) {
                out.chains.insert(chain_name, chain);
            }
        }
    }
    for m in sock.dump(
        fam,
        NfTablesMessage::GetRule(RuleMessage {
            attributes: vec![RuleAttribute::Table(name.to_string())],
        }),
    )? {
        if let NfTablesMessage::NewRule(r) = m {
            parse_rule(&r, name, &mut out.chains);
        }
    }
    Ok(out)
}

fn parse_set(s: &SetMessage, table: &str) -> Option<(String, KernelSet)> {
    let mut name = None;
    let mut in_table = false;
    let mut set = KernelSet::default();
    for a in &s.attributes {
        match a {
            SetAttribute::Table(t) => in_table = t == table,
            SetAttribute::Name(n) => name = Some(n.clone()),
            SetAttribute::KeyLen(l) => set.key_len = *l,
            SetAttribute::KeyType(t) => set.key_type = *t,
            SetAttribute::Flags(f) => set.flags = f.bits(),
            SetAttribute::DataType(t) => set.data_type = Some(*t),
            SetAttribute::UserData(u) => set.userdata = u.clone(),
            _ => {}
        }
    }
    if !in_table {
        return None;
    }
    name.map(|n| (n, set))
}

fn parse_elements(m: &SetElementMessage, out: &mut BTreeSet<Element>) {
    for a in &m.attributes {
        let SetElementList::Elements(list) = a else {
            continue;
        };
        for item in list {
            let ListAttribute::Element(attrs) = item else {
                continue;
            };
            let mut key = None;
            let mut verdict = None;
            for ea in attrs {
                match ea {
                    SetElementAttribute::Key(DataAttribute::Value(v)) => key = Some(v.clone()),
                    SetElementAttribute::Data(DataAttribute::Verdict(v)) => {
                        verdict = parse_verdict(v)
                    }
                    _ => {}
                }
            }
            if let Some(key) = key {
                out.insert(Element { key, verdict });
            }
        }
    }
}

pub(crate) fn parse_verdict(attrs: &[VerdictAttribute]) -> Option<Verdict> {
    let mut code = None;
    let mut chain = None;
    for a in attrs {
        match a {
            VerdictAttribute::Code(c) => code = Some(*c),
            VerdictAttribute::Chain(n) => chain = Some(n.clone()),
            _ => {}
        }
    }
    match (code?, chain) {
        (NlVerdict::Jump, Some(c)) => Some(Verdict::Jump(c)),
        (NlVerdict::Goto, Some(c)) => Some(Verdict::Goto(c)),
        (NlVerdict::Return, _) => Some(Verdict::Return),
        (NlVerdict::Other(1), _) => Some(Verdict::Accept),
        (NlVerdict::Other(0), _) => Some(Verdict::Drop),
        _ => None,
    }
}

fn parse_chain(attrs: &[ChainAttribute], table: &str) -> Option<(String, KernelChain)> {
    let mut name = None;
    let mut in_table = false;
    let mut chain = KernelChain::default();
    let mut hooknum = None;
    let mut prio = None;
    for a in attrs {
        match a {
            ChainAttribute::Table(t) => in_table = t == table,
            ChainAttribute::Name(n) => name = Some(n.clone()),
            ChainAttribute::Policy(p) => chain.policy = Some(*p),
            ChainAttribute::Hook(hooks) => {
                for h in hooks {
                    match h {
                        Hook::Number(HookNumber::Inet(n)) => hooknum = inet_hook(n),
                        Hook::Priority(p) => prio = Some(*p as i32),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if let (Some(h), Some(p)) = (hooknum, prio) {
        chain.hook = Some((h, p));
    }
    if !in_table {
        return None;
    }
    name.map(|n| (n, chain))
}

fn inet_hook(n: &InetHookNumber) -> Option<RHook> {
    Some(match n {
        InetHookNumber::PreRouting => RHook::Prerouting,
        InetHookNumber::LocalIn => RHook::Input,
        InetHookNumber::Forward => RHook::Forward,
        InetHookNumber::LocalOut => RHook::Output,
        InetHookNumber::PostRouting => RHook::Postrouting,
        _ => return None,
    })
}

fn parse_rule(r: &RuleMessage, table: &str, chains: &mut BTreeMap<String, KernelChain>) {
    let mut in_table = false;
    let mut chain = None;
    let mut handle = 0;
    let mut tag = None;
    let mut counter = None;
    for a in &r.attributes {
        match a {
            RuleAttribute::Table(t) => in_table = t == table,
            RuleAttribute::Chain(c) => chain = Some(c.clone()),
            RuleAttribute::Handle(h) => handle = *h,
            RuleAttribute::UserData(u) => tag = udata::rule_comment(u),
            RuleAttribute::Expressions(exprs) => counter = exprs.iter().find_map(counter_of),
            _ => {}
        }
    }
    if !in_table {
        return;
    }
    if let Some(c) = chain {
        let chain = chains.entry(c).or_default();
        chain.rules.push((handle, tag));
        chain.rule_counters.push(counter);
    }
}

/// (packets, bytes) of a `counter` expression.
fn counter_of(e: &ListAttribute<ExpressionAttribute>) -> Option<(u64, u64)> {
    let ListAttribute::Element(attrs) = e else {
        return None;
    };
    let mut is_counter = false;
    let mut values = None;
    for a in attrs {
        match a {
            ExpressionAttribute::Name(n) => is_counter = n == "counter",
            ExpressionAttribute::Data(Expressions::Other { attributes, .. })
            | ExpressionAttribute::Data(Expressions::Unknown(attributes)) => {
                let mut bytes = 0;
                let mut packets = 0;
                for nla in attributes {
                    let mut buf = vec![0u8; nla.value_len()];
                    nla.emit_value(&mut buf);
                    let v = buf
                        .get(..8)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(u64::from_be_bytes)
                        .unwrap_or(0);
                    match nla.kind() {
                        1 => bytes = v,
                        2 => packets = v,
                        _ => {}
                    }
                }
                values = Some((packets, bytes));
            }
            _ => {}
        }
    }
    if is_counter {
        values
    } else {
        None
    }
}
