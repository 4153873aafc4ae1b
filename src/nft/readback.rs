//! Read groupd's table back from the kernel: what exists, as plain data that
//! can be diffed against the desired [`crate::ruleset::Table`].

use std::collections::{BTreeMap, BTreeSet};

use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Hook, HookNumber, InetHookNumber, NfTablesMessage, RuleAttribute,
    RuleMessage, SetAttribute, SetElementList, SetElementMessage, SetMessage, TableAttribute,
    TableMessage,
};

use super::nla;
use super::ownership::TableHead;
use super::socket::{NfSocket, NftError};
use super::udata;
use crate::ruleset::{Element, Family, Hook as RHook};

/// A set as the kernel reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelSet {
    pub key_len: u32,
    pub key_type: u32,
    pub flags: u32,
    pub data_type: Option<u32>,
    pub data_len: Option<u32>,
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
    /// NFT_TABLE_F_* (owner, persist) as the kernel reports them.
    pub flags: u32,
    /// Sets whose elements were not read (a scoped read): they are taken
    /// to hold what they should.
    pub unread_sets: BTreeSet<String>,
    pub sets: BTreeMap<String, KernelSet>,
    pub chains: BTreeMap<String, KernelChain>,
}

impl KernelTable {
    pub fn element_count(&self) -> usize {
        self.sets.values().map(|s| s.elements.len()).sum()
    }
}

/// Table `name`'s flags and owner, `None` when it does not exist (a dump of
/// the table list only).
pub fn read_table_head(
    sock: &mut NfSocket,
    family: Family,
    name: &str,
) -> Result<Option<TableHead>, NftError> {
    let tables = sock.dump(
        super::encode::nl_family(family),
        NfTablesMessage::GetTable(TableMessage { attributes: vec![] }),
    )?;
    Ok(tables.iter().find_map(|m| match m {
        NfTablesMessage::NewTable(t)
            if t.attributes
                .iter()
                .any(|a| matches!(a, TableAttribute::Name(n) if n == name)) =>
        {
            let mut head = TableHead {
                flags: 0,
                owner: None,
            };
            for a in &t.attributes {
                match a {
                    TableAttribute::Flags(f) => head.flags = f.bits(),
                    TableAttribute::Owner(port) => head.owner = Some(*port),
                    _ => {}
                }
            }
            Some(head)
        }
        _ => None,
    }))
}

/// Dump table `name` of `family`, the elements only of the sets in
/// `elements_of` (all when `None`; the others are listed in `unread_sets`).
/// A missing table reads as `exists: false`.
pub fn read_table(
    sock: &mut NfSocket,
    family: Family,
    name: &str,
    elements_of: Option<&BTreeSet<String>>,
) -> Result<KernelTable, NftError> {
    let fam = super::encode::nl_family(family);
    let head = read_table_head(sock, family, name)?;
    let mut out = KernelTable {
        exists: head.is_some(),
        flags: head.map(|h| h.flags).unwrap_or(0),
        ..Default::default()
    };
    if !out.exists {
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
    let (set_names, unread): (Vec<String>, Vec<String>) = out
        .sets
        .keys()
        .cloned()
        .partition(|n| elements_of.map_or(true, |only| only.contains(n)));
    out.unread_sets = unread.into_iter().collect();
    for set_name in set_names {
        let req = NfTablesMessage::GetSetElement(SetElementMessage {
            attributes: vec![
                SetElementList::Table(name.to_string()),
                SetElementList::Set(set_name.clone()),
            ],
        });
        let mut elements = BTreeSet::new();
        for raw in sock.dump_raw(fam, req)? {
            parse_elements(
                raw.get(nla::NFT_HEADER..).unwrap_or_default(),
                &mut elements,
            );
        }
        if let Some(s) = out.sets.get_mut(&set_name) {
            s.elements = elements;
        }
    }
    out.chains = read_chains(sock, family, name)?;
    Ok(out)
}

/// The chains of table `name` with their rules (and rule counters), without
/// the sets: what `groupctl status` needs, at a fraction of a full read.
pub fn read_chains(
    sock: &mut NfSocket,
    family: Family,
    name: &str,
) -> Result<BTreeMap<String, KernelChain>, NftError> {
    let fam = super::encode::nl_family(family);
    let mut chains = BTreeMap::new();
    for m in sock.dump(
        fam,
        NfTablesMessage::GetChain(ChainMessage {
            attributes: vec![ChainAttribute::Table(name.to_string())],
        }),
    )? {
        if let NfTablesMessage::NewChain(c) = m {
            if let Some((chain_name, chain)) = parse_chain(&c.attributes, name) {
                chains.insert(chain_name, chain);
            }
        }
    }
    let rules = NfTablesMessage::GetRule(RuleMessage {
        attributes: vec![RuleAttribute::Table(name.to_string())],
    });
    for raw in sock.dump_raw(fam, rules)? {
        parse_rule(
            raw.get(nla::NFT_HEADER..).unwrap_or_default(),
            name,
            &mut chains,
        );
    }
    Ok(chains)
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
            SetAttribute::DataLen(l) => set.data_len = Some(*l),
            SetAttribute::UserData(u) => set.userdata = u.clone(),
            _ => {}
        }
    }
    if !in_table {
        return None;
    }
    name.map(|n| (n, set))
}

/// Elements of one NEWSETELEM message (raw attributes after the header).
fn parse_elements(msg: &[u8], out: &mut BTreeSet<Element>) {
    const ELEMENTS: u16 = 3;
    const KEY: u16 = 1;
    const DATA: u16 = 2;
    const DATA_VALUE: u16 = 1;
    let Some(list) = nla::find(msg, ELEMENTS) else {
        return;
    };
    for (_, elem) in nla::attrs(list) {
        let Some(key) = nla::find(elem, KEY).and_then(|k| nla::find(k, DATA_VALUE)) else {
            continue;
        };
        // A map element: its value follows its key, as groupd keeps it.
        let data = nla::find(elem, DATA).and_then(|d| nla::find(d, DATA_VALUE));
        let mut bytes = key.to_vec();
        bytes.extend_from_slice(data.unwrap_or_default());
        out.insert(Element { key: bytes.into() });
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

/// One NEWRULE message: its chain, handle, comment tag and counter.
fn parse_rule(msg: &[u8], table: &str, chains: &mut BTreeMap<String, KernelChain>) {
    const TABLE: u16 = 1;
    const CHAIN: u16 = 2;
    const HANDLE: u16 = 3;
    const EXPRESSIONS: u16 = 4;
    const USERDATA: u16 = 7;
    if nla::find(msg, TABLE).map(nla::string).as_deref() != Some(table) {
        return;
    }
    let Some(chain) = nla::find(msg, CHAIN).map(nla::string) else {
        return;
    };
    let handle = nla::find(msg, HANDLE).and_then(nla::u64_be).unwrap_or(0);
    let tag = nla::find(msg, USERDATA).and_then(udata::rule_comment);
    let counter = nla::find(msg, EXPRESSIONS).and_then(counter_of);
    let chain = chains.entry(chain).or_default();
    chain.rules.push((handle, tag));
    chain.rule_counters.push(counter);
}

/// (packets, bytes) of the rule's `counter` expression, if it has one.
fn counter_of(exprs: &[u8]) -> Option<(u64, u64)> {
    const NAME: u16 = 1;
    const DATA: u16 = 2;
    nla::attrs(exprs).find_map(|(_, e)| {
        if nla::find(e, NAME).map(nla::string).as_deref() != Some("counter") {
            return None;
        }
        let data = nla::find(e, DATA)?;
        let bytes = nla::find(data, 1).and_then(nla::u64_be).unwrap_or(0);
        let packets = nla::find(data, 2).and_then(nla::u64_be).unwrap_or(0);
        Some((packets, bytes))
    })
}
