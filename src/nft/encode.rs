//! [`crate::ruleset`] objects -> nf_tables netlink messages.
//!
//! Expressions are laid out exactly as `nft` 1.0.6 lays out the same rule
//! text (checked with `nft --debug=netlink`), including the implicit protocol
//! dependencies, so that `nft list` prints groupd's rules as the text that
//! [`crate::ruleset::Rule::text`] renders.

use netlink_packet_core::{DefaultNla, NLM_F_CREATE};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook as NlHook, HookNumber, Immediate, InetHookNumber, ListAttribute, Lookup, Meta, MetaKey,
    NfTablesMessage, Operator, Payload, Register, RuleAttribute, RuleMessage, SetAttribute,
    SetFlags, SetMessage, TableAttribute, TableMessage, Verdict as NlVerdict, VerdictAttribute,
};
use netlink_packet_netfilter::NetfilterProtoFamily;

use super::nla;
use super::socket::{Body, Request};
use super::udata;
use crate::ruleset::{
    Action, Chain, Dir, Element, Family, Field, KeyPart, Match, Rule, SetDef, Verdict, L3,
};

const NFT_CT_STATE: u32 = 0;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
// Payload bases.
const LL_HEADER: u32 = 0;
const NETWORK_HEADER: u32 = 1;
const TRANSPORT_HEADER: u32 = 2;
/// nft datatype ids (for NFTA_SET_KEY_TYPE; concatenations shift by 6 bits).
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_IFNAME: u32 = 41;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
/// The values of groupd's maps (identities) are typed as IPv6 addresses:
/// 128 bits nft can print (see [`KeyPart::Identity`]).
pub const MAP_DATA_TYPE: u32 = TYPE_IP6ADDR;
/// Bytes of elements per NEWSETELEM message: the element list is one
/// netlink attribute whose length field is 16 bits (an element is at most
/// ~130 bytes, so this leaves room for the last one).
const ELEMENT_BYTES_PER_MESSAGE: usize = 60_000;

pub fn nl_family(f: Family) -> NetfilterProtoFamily {
    match f {
        Family::Inet => NetfilterProtoFamily::Inet,
        Family::Bridge => NetfilterProtoFamily::Bridge,
    }
}

fn req(family: Family, message: NfTablesMessage, flags: u16) -> Request {
    Request {
        family: nl_family(family),
        body: Body::Typed(message),
        flags,
    }
}

pub fn new_table(family: Family, table: &str) -> Request {
    req(
        family,
        NfTablesMessage::NewTable(TableMessage {
            attributes: vec![TableAttribute::Name(table.to_string())],
        }),
        NLM_F_CREATE,
    )
}

/// NEWTABLE with NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST: creates the table
/// owned by the sending socket, or claims an orphaned persistent one.
pub fn new_owned_table(family: Family, table: &str) -> Request {
    use netlink_packet_netfilter::nftables::TableFlags;
    req(
        family,
        NfTablesMessage::NewTable(TableMessage {
            attributes: vec![
                TableAttribute::Name(table.to_string()),
                TableAttribute::Flags(TableFlags::Owner | TableFlags::Persisent),
            ],
        }),
        NLM_F_CREATE,
    )
}

pub fn delete_table(family: Family, table: &str) -> Request {
    req(
        family,
        NfTablesMessage::DeleteTable(TableMessage {
            attributes: vec![TableAttribute::Name(table.to_string())],
        }),
        0,
    )
}

fn key_type(key: &[KeyPart]) -> u32 {
    key.iter().fold(0u32, |acc, k| {
        let t = match k {
            KeyPart::Ipv4 => TYPE_IPADDR,
            KeyPart::Ipv6 => TYPE_IP6ADDR,
            KeyPart::Ifname => TYPE_IFNAME,
            KeyPart::InetProto => TYPE_INET_PROTOCOL,
            KeyPart::InetService => TYPE_INET_SERVICE,
            // nft knows no 128-bit integer type it could print inside a
            // concatenation; an identity is shown as an IPv6 address.
            KeyPart::Identity => TYPE_IP6ADDR,
        };
        (acc << 6) | t
    })
}

pub fn key_len(key: &[KeyPart]) -> u32 {
    key.iter().map(|k| k.byte_len() as u32).sum()
}

pub fn new_set(family: Family, table: &str, name: &str, def: &SetDef, id: u32) -> Request {
    let mut attrs = vec![
        SetAttribute::Table(table.to_string()),
        SetAttribute::Name(name.to_string()),
    ];
    attrs.push(SetAttribute::Flags(if def.is_map() {
        SetFlags::Map
    } else {
        SetFlags::empty()
    }));
    attrs.push(SetAttribute::KeyType(key_type(&def.key)));
    attrs.push(SetAttribute::KeyLen(key_len(&def.key)));
    if def.is_map() {
        attrs.push(SetAttribute::DataType(MAP_DATA_TYPE));
        attrs.push(SetAttribute::DataLen(def.data_len as u32));
    }
    attrs.push(SetAttribute::Id(id));
    attrs.push(SetAttribute::UserData(set_userdata(def)));
    req(
        family,
        NfTablesMessage::NewSet(SetMessage { attributes: attrs }),
        NLM_F_CREATE,
    )
}

/// What nft writes: big-endian keys for plain addresses, host order for
/// anything that involves a string or a concatenation.
pub fn set_userdata(def: &SetDef) -> Vec<u8> {
    let key_order = match def.key.as_slice() {
        [KeyPart::Ipv4] | [KeyPart::Ipv6] => udata::BIG_ENDIAN,
        _ => udata::HOST_ENDIAN,
    };
    udata::set_bytes(key_order, None, false)
}

pub fn set_key_type(def: &SetDef) -> u32 {
    key_type(&def.key)
}

/// Add or delete elements, split into messages that fit a netlink
/// attribute. Encoded straight to netlink attributes (see [`Body::Raw`]).
/// `data_len`: the bytes of a map element's value (0 for a plain set); a
/// deletion names the key only.
pub fn elements<'a>(
    family: Family,
    table: &str,
    set: &str,
    data_len: usize,
    elems: impl IntoIterator<Item = &'a Element>,
    add: bool,
) -> Vec<Request> {
    const NFT_MSG_NEWSETELEM: u8 = 12;
    const NFT_MSG_DELSETELEM: u8 = 14;
    const LIST_TABLE: u16 = 1;
    const LIST_SET: u16 = 2;
    const LIST_ELEMENTS: u16 = 3;
    const LIST_ELEM: u16 = 1;
    const ELEM_KEY: u16 = 1;
    const ELEM_DATA: u16 = 2;
    const DATA_VALUE: u16 = 1;
    let mut out = Vec::new();
    let mut elements = Vec::new();
    let mut count = 0;
    let mut flush = |elements: &mut Vec<u8>, count: &mut usize| {
        if *count == 0 {
            return;
        }
        let mut attributes = Vec::with_capacity(elements.len() + 64);
        nla::put_str(&mut attributes, LIST_TABLE, table);
        nla::put_str(&mut attributes, LIST_SET, set);
        nla::put_nested(&mut attributes, LIST_ELEMENTS, elements);
        let what = format!(
            "{} {count} element(s) of set {set:?}",
            if add { "add" } else { "delete" }
        );
        out.push(Request {
            family: nl_family(family),
            body: Body::Raw {
                kind: if add {
                    NFT_MSG_NEWSETELEM
                } else {
                    NFT_MSG_DELSETELEM
                },
                attributes,
                what,
            },
            flags: if add { NLM_F_CREATE } else { 0 },
        });
        elements.clear();
        *count = 0;
    };
    for e in elems {
        let (k, data) = e.split(data_len);
        let mut value = Vec::with_capacity(k.len() + 4);
        nla::put(&mut value, DATA_VALUE, k);
        let mut elem = Vec::with_capacity(e.key.len() + 16);
        nla::put_nested(&mut elem, ELEM_KEY, &value);
        if add && !data.is_empty() {
            value.clear();
            nla::put(&mut value, DATA_VALUE, data);
            nla::put_nested(&mut elem, ELEM_DATA, &value);
        }
        nla::put_nested(&mut elements, LIST_ELEM, &elem);
        count += 1;
        if elements.len() >= ELEMENT_BYTES_PER_MESSAGE {
            flush(&mut elements, &mut count);
        }
    }
    flush(&mut elements, &mut count);
    out
}

pub fn new_chain(family: Family, table: &str, chain: &Chain) -> Request {
    let mut attrs = vec![
        ChainAttribute::Table(table.to_string()),
        ChainAttribute::Name(chain.name.clone()),
    ];
    if let Some(b) = chain.base {
        attrs.push(ChainAttribute::Hook(vec![
            NlHook::Number(HookNumber::Inet(inet_hook(b.hook.number()))),
            NlHook::Priority(b.priority as u32),
        ]));
        attrs.push(ChainAttribute::Policy(1));
        attrs.push(ChainAttribute::Type("filter".to_string()));
    }
    req(
        family,
        NfTablesMessage::NewChain(ChainMessage { attributes: attrs }),
        NLM_F_CREATE,
    )
}

fn inet_hook(n: u32) -> InetHookNumber {
    match n {
        0 => InetHookNumber::PreRouting,
        1 => InetHookNumber::LocalIn,
        2 => InetHookNumber::Forward,
        3 => InetHookNumber::LocalOut,
        _ => InetHookNumber::PostRouting,
    }
}

pub fn delete_chain(family: Family, table: &str, chain: &str) -> Request {
    req(
        family,
        NfTablesMessage::DeleteChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(table.to_string()),
                ChainAttribute::Name(chain.to_string()),
            ],
        }),
        0,
    )
}

/// Delete every rule of a chain (the chain stays).
pub fn flush_chain(family: Family, table: &str, chain: &str) -> Request {
    req(
        family,
        NfTablesMessage::DeleteRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(table.to_string()),
                RuleAttribute::Chain(chain.to_string()),
            ],
        }),
        0,
    )
}

pub fn delete_rule(family: Family, table: &str, chain: &str, handle: u64) -> Request {
    req(
        family,
        NfTablesMessage::DeleteRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(table.to_string()),
                RuleAttribute::Chain(chain.to_string()),
                RuleAttribute::Handle(handle),
            ],
        }),
        0,
    )
}

/// Append `rule` at the end of `chain`.
pub fn new_rule(family: Family, table: &str, chain: &str, rule: &Rule) -> Request {
    let attrs = vec![
        RuleAttribute::Table(table.to_string()),
        RuleAttribute::Chain(chain.to_string()),
        RuleAttribute::Expressions(rule_expressions(family, rule)),
        RuleAttribute::UserData(udata::rule_comment_bytes(&rule.tag())),
    ];
    req(
        family,
        NfTablesMessage::NewRule(RuleMessage { attributes: attrs }),
        NLM_F_CREATE | netlink_packet_core::NLM_F_APPEND,
    )
}

type Expr = ListAttribute<ExpressionAttribute>;

fn meta(key: MetaKey, reg: Register) -> Expr {
    Expressions::Meta(vec![Meta::DestinationRegister(reg), Meta::Key(key)]).into()
}

fn payload(base: u32, offset: u32, len: u32, reg: Register) -> Expr {
    Expressions::Payload(vec![
        Payload::DestinationRegister(reg),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
    .into()
}

fn cmp(op: Operator, data: Vec<u8>) -> Expr {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(data)),
    ])
    .into()
}

fn bitwise(len: u32, mask: Vec<u8>) -> Expr {
    let xor = vec![0u8; mask.len()];
    Expressions::Bitwise(vec![
        Bitwise::SourceRegister(Register::Reg1),
        Bitwise::DestinationRegister(Register::Reg1),
        Bitwise::Length(len),
        Bitwise::Mask(DataAttribute::Value(mask)),
        Bitwise::Xor(DataAttribute::Value(xor)),
    ])
    .into()
}

/// Load the fields of a lookup key into the registers from byte `start` on.
fn load_key(key: &[Field], start: usize, out: &mut Vec<Expr>) {
    let mut offset = start;
    for field in key {
        let reg = key_register(offset);
        out.push(match field {
            Field::Ifname(dir) => meta(ifname_key(*dir), reg),
            Field::Addr(dir, l3) => {
                let (off, len) = addr_offset(*l3, *dir);
                payload(NETWORK_HEADER, off, len, reg)
            }
            Field::L4Proto => meta(MetaKey::L4Proto, reg),
            Field::Dport => payload(TRANSPORT_HEADER, 2, 2, reg),
        });
        offset += field.key_part().byte_len();
    }
}

/// Look the key at `reg` up in map `set`, its value into `reg` (the key is
/// no longer needed); no element: the rule does not match.
fn map_lookup(set: &str, key: Register, value: Register) -> Expr {
    Expressions::Lookup(vec![
        Lookup::Set(set.to_string()),
        Lookup::SourceRegister(key),
        Lookup::DestinationRegister(value),
    ])
    .into()
}

fn lookup(set: &str) -> Expr {
    Expressions::Lookup(vec![
        Lookup::Set(set.to_string()),
        Lookup::SourceRegister(Register::Reg1),
    ])
    .into()
}

/// The register a key component at byte `offset` of a concatenation is
/// loaded into, numbered the way nft numbers it: the 16-byte registers at
/// their boundaries, the 32-bit ones in between.
fn key_register(offset: usize) -> Register {
    match offset {
        0 => Register::Reg1,
        16 => Register::Reg2,
        32 => Register::Reg3,
        48 => Register::Reg4,
        o => Register::Other(8 + (o / 4) as u32),
    }
}

fn verdict_attrs(v: &Verdict) -> Vec<VerdictAttribute> {
    match v {
        Verdict::Accept => vec![VerdictAttribute::Code(NlVerdict::Other(1))],
        Verdict::Drop => vec![VerdictAttribute::Code(NlVerdict::Other(0))],
        Verdict::Return => vec![VerdictAttribute::Code(NlVerdict::Return)],
        Verdict::Jump(c) => vec![
            VerdictAttribute::Code(NlVerdict::Jump),
            VerdictAttribute::Chain(c.clone()),
        ],
        Verdict::Goto(c) => vec![
            VerdictAttribute::Code(NlVerdict::Goto),
            VerdictAttribute::Chain(c.clone()),
        ],
    }
}

fn immediate_verdict(v: &Verdict) -> Expr {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(verdict_attrs(v))),
    ])
    .into()
}

fn counter() -> Expr {
    Expressions::Other {
        expression_type: "counter".to_string(),
        attributes: vec![],
    }
    .into()
}

fn ct_state() -> Expr {
    Expressions::Other {
        expression_type: "ct".to_string(),
        attributes: vec![
            DefaultNla::new(
                NFTA_CT_DREG,
                u32::from(Register::Reg1).to_be_bytes().to_vec(),
            ),
            DefaultNla::new(NFTA_CT_KEY, NFT_CT_STATE.to_be_bytes().to_vec()),
        ],
    }
    .into()
}

/// Offset of the source/destination address in the L3 header.
fn addr_offset(l3: L3, dir: Dir) -> (u32, u32) {
    match (l3, dir) {
        (L3::Ip, Dir::In) => (12, 4),
        (L3::Ip, Dir::Out) => (16, 4),
        (L3::Ip6, Dir::In) => (8, 16),
        (L3::Ip6, Dir::Out) => (24, 16),
        // ARP over Ethernet/IPv4: sender IP at 14, target IP at 24.
        (L3::Arp, Dir::In) => (14, 4),
        (L3::Arp, Dir::Out) => (24, 4),
    }
}

fn ifname_key(dir: Dir) -> MetaKey {
    if dir == Dir::In {
        MetaKey::Iifname
    } else {
        MetaKey::Oifname
    }
}

/// The protocol dependency nft inserts before an L3 payload access.
fn l3_dependency(family: Family, l3: L3, out: &mut Vec<Expr>) {
    match (family, l3) {
        (Family::Inet, L3::Ip) => {
            out.push(meta(MetaKey::Nfproto, Register::Reg1));
            out.push(cmp(Operator::Equal, vec![2]));
        }
        (Family::Inet, L3::Ip6) => {
            out.push(meta(MetaKey::Nfproto, Register::Reg1));
            out.push(cmp(Operator::Equal, vec![10]));
        }
        (Family::Bridge, L3::Ip) => {
            out.push(meta(MetaKey::EtherTypeProtocol, Register::Reg1));
            out.push(cmp(Operator::Equal, vec![0x08, 0x00]));
        }
        (Family::Bridge, L3::Ip6) => {
            out.push(meta(MetaKey::EtherTypeProtocol, Register::Reg1));
            out.push(cmp(Operator::Equal, vec![0x86, 0xdd]));
        }
        (_, L3::Arp) => {
            out.push(payload(LL_HEADER, 12, 2, Register::Reg1));
            out.push(cmp(Operator::Equal, vec![0x08, 0x06]));
        }
    }
}

fn ifname_bytes(name: &str, prefix: bool) -> Vec<u8> {
    let mut b: Vec<u8> = name.as_bytes().iter().copied().take(15).collect();
    if !prefix {
        b.resize(16, 0);
    }
    b
}

pub fn rule_expressions(family: Family, rule: &Rule) -> Vec<Expr> {
    let mut out = Vec::new();
    let mut have_l3: Option<L3> = None;
    let mut dep = |l3: L3, out: &mut Vec<Expr>| {
        if have_l3 != Some(l3) {
            l3_dependency(family, l3, out);
            have_l3 = Some(l3);
        }
    };
    for m in &rule.matches {
        if let Some(l3) = m.l3() {
            dep(l3, &mut out);
        }
        match m {
            Match::Ifname { dir, name, prefix } => {
                out.push(meta(ifname_key(*dir), Register::Reg1));
                out.push(cmp(Operator::Equal, ifname_bytes(name, *prefix)));
            }
            Match::Lookup { key, set } => {
                load_key(key, 0, &mut out);
                out.push(lookup(set));
            }
            Match::ViaIdentity {
                key,
                peer,
                ident_map,
                set,
            } => {
                // The peer's identity first (the peer's address loaded into
                // the last register and looked up there), then the key's
                // fields: each part starts on a 16-byte register, the way nft
                // lays out a concatenation it can print.
                load_key(std::slice::from_ref(peer), 48, &mut out);
                out.push(map_lookup(ident_map, Register::Reg4, Register::Reg1));
                load_key(key, 16, &mut out);
                out.push(lookup(set));
            }
            Match::AddrPrefix { dir, prefix } => {
                let l3 = if prefix.is_ipv4() { L3::Ip } else { L3::Ip6 };
                let (off, len) = addr_offset(l3, *dir);
                let addr: Vec<u8> = match prefix.addr {
                    std::net::IpAddr::V4(a) => a.octets().to_vec(),
                    std::net::IpAddr::V6(a) => a.octets().to_vec(),
                };
                let bits = u32::from(prefix.prefix);
                if bits == len * 8 {
                    out.push(payload(NETWORK_HEADER, off, len, Register::Reg1));
                    out.push(cmp(Operator::Equal, addr));
                } else if bits % 8 == 0 {
                    // nft loads only the bytes the prefix covers.
                    let n = bits / 8;
                    out.push(payload(NETWORK_HEADER, off, n, Register::Reg1));
                    out.push(cmp(Operator::Equal, addr[..n as usize].to_vec()));
                } else {
                    let mut mask = vec![0u8; len as usize];
                    for (i, m) in mask.iter_mut().enumerate() {
                        let covered = bits.saturating_sub(i as u32 * 8).min(8);
                        *m = if covered == 0 {
                            0
                        } else {
                            0xffu8 << (8 - covered)
                        };
                    }
                    out.push(payload(NETWORK_HEADER, off, len, Register::Reg1));
                    out.push(bitwise(len, mask));
                    out.push(cmp(Operator::Equal, addr));
                }
            }
            Match::Icmpv6Type(t) => {
                out.push(meta(MetaKey::L4Proto, Register::Reg1));
                out.push(cmp(Operator::Equal, vec![58]));
                out.push(payload(TRANSPORT_HEADER, 0, 1, Register::Reg1));
                out.push(cmp(Operator::Equal, vec![*t]));
            }
            Match::L4Proto(p) => {
                out.push(meta(MetaKey::L4Proto, Register::Reg1));
                out.push(cmp(Operator::Equal, vec![*p]));
            }
            Match::Dport { udp, port } => {
                out.push(meta(MetaKey::L4Proto, Register::Reg1));
                out.push(cmp(Operator::Equal, vec![if *udp { 17 } else { 6 }]));
                out.push(payload(TRANSPORT_HEADER, 2, 2, Register::Reg1));
                out.push(cmp(Operator::Equal, port.to_be_bytes().to_vec()));
            }
            Match::Limit {
                rate,
                unit_secs,
                burst,
            } => out.push(limit(*rate, *unit_secs, *burst)),
            Match::CtState(bits) => {
                out.push(ct_state());
                out.push(bitwise(4, bits.to_ne_bytes().to_vec()));
                out.push(cmp(Operator::NotEqual, vec![0, 0, 0, 0]));
            }
        }
    }
    if rule.counter {
        out.push(counter());
    }
    match &rule.action {
        Action::None => {}
        Action::Verdict(v) => out.push(immediate_verdict(v)),
        Action::Log { prefix, group } => out.push(log(prefix, *group)),
    }
    out
}

/// `limit rate R/UNIT burst B packets` (NFTA_LIMIT_*; type 0 = packets).
fn limit(rate: u64, unit_secs: u64, burst: u32) -> Expr {
    const RATE: u16 = 1;
    const UNIT: u16 = 2;
    const BURST: u16 = 3;
    const TYPE: u16 = 4;
    const FLAGS: u16 = 5;
    const PACKETS: u32 = 0;
    Expressions::Other {
        expression_type: "limit".to_string(),
        attributes: vec![
            DefaultNla::new(RATE, rate.to_be_bytes().to_vec()),
            DefaultNla::new(UNIT, unit_secs.to_be_bytes().to_vec()),
            DefaultNla::new(BURST, burst.to_be_bytes().to_vec()),
            DefaultNla::new(TYPE, PACKETS.to_be_bytes().to_vec()),
            DefaultNla::new(FLAGS, 0u32.to_be_bytes().to_vec()),
        ],
    }
    .into()
}

/// `log prefix "P" group G` (NFTA_LOG_GROUP, NFTA_LOG_PREFIX): to nflog.
/// No snaplen: the listener sets the copy range for its group.
fn log(prefix: &str, group: u16) -> Expr {
    const GROUP: u16 = 1;
    const PREFIX: u16 = 2;
    let mut p = prefix.as_bytes().to_vec();
    p.push(0);
    Expressions::Other {
        expression_type: "log".to_string(),
        attributes: vec![
            DefaultNla::new(GROUP, group.to_be_bytes().to_vec()),
            DefaultNla::new(PREFIX, p),
        ],
    }
    .into()
}
