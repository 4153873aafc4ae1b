//! Wide groups: how a group of any size costs one element per member.
//!
//! Address pairs ([`super::pair_elements`]) let one lookup decide a packet,
//! but a group with `m` members of which `l` are local costs `l x m`
//! elements: a 100,000-member group with 100 local members would be ten
//! million. So a group that has a local member and at least
//! [`WIDE_MIN_MEMBERS`] members is *wide* on this agent, and its members
//! are told apart by *identity* instead of by address, as Cilium does:
//!
//! - an endpoint's identity is the set of wide groups it is in (hashed to
//!   128 bits like group ids: [`identity`]); endpoints in the same wide
//!   groups share one;
//! - `ident4`/`ident6` map every endpoint's address (cluster-wide) to its
//!   identity: one element per address;
//! - `wide_egress4`/`6` hold `identity . interface . local address` for each
//!   local endpoint and each identity it shares a wide group with (the
//!   interface proves the source, R7); `wide_ingress4`/`6` the same for
//!   local endpoints that are not port-restricted, `wide_gated4`/`6` for
//!   those that are (R9: reached only through the `gated` chain).
//!
//! A packet is decided by two lookups ([`Match::ViaIdentity`]): the peer's
//! address to its identity, then `identity . interface . local address`.
//! The cost is one element per endpoint address plus local endpoints x the
//! identities they share a wide group with — a handful where groups are
//! large, since all members of a large group that are in no other wide group
//! share one identity. Small groups keep pairs (one lookup, and the common
//! cluster of many small groups compiles exactly as before).

use std::collections::BTreeSet;

use super::{v4v6, Endpoint, Sink};
use crate::ruleset::{Dir, Element, Family, Field, GroupId, KeyPart, KeyValue, Match, Table, L3};

pub const IDENT4: &str = "ident4";
pub const IDENT6: &str = "ident6";
pub const WIDE_EGRESS4: &str = "wide_egress4";
pub const WIDE_EGRESS6: &str = "wide_egress6";
pub const WIDE_INGRESS4: &str = "wide_ingress4";
pub const WIDE_INGRESS6: &str = "wide_ingress6";
pub const WIDE_GATED4: &str = "wide_gated4";
pub const WIDE_GATED6: &str = "wide_gated6";

/// A group with a local member is wide once it has this many members;
/// below, its pairs cost at most `local members x 15` elements.
pub const WIDE_MIN_MEMBERS: usize = 16;

/// Bytes of an identity.
pub const IDENTITY_BYTES: usize = 16;

/// What an endpoint is, seen from this agent's wide groups.
pub type Identity = [u8; IDENTITY_BYTES];

/// The identity of an endpoint whose wide groups are `wide` (sorted, not
/// empty): a hash of their ids.
pub fn identity(wide: &[GroupId]) -> Identity {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for g in wide {
        h.update(g);
    }
    let digest = h.finalize();
    let mut id = [0u8; IDENTITY_BYTES];
    id.copy_from_slice(&digest[..IDENTITY_BYTES]);
    id
}

/// `e`'s address -> identity elements.
pub fn identity_elements(e: &Endpoint, id: &Identity, out: &mut Sink) {
    for ip in &e.ips {
        out(
            Family::Inet,
            v4v6(ip, IDENT4, IDENT6),
            Element::map(&[KeyValue::Ip(*ip)], id),
        );
    }
}

/// The elements that let local endpoint `local` talk to every endpoint of
/// identity `id` (they share a wide group): its egress to them, and their
/// ingress to it (port-gated under R9).
pub fn wide_elements(local: &Endpoint, id: &Identity, out: &mut Sink) {
    for b in local.local.iter() {
        let key = |set| (set, identity_key(b.l3_iface(), b.ip, id));
        let (set, e) = key(v4v6(&b.ip, WIDE_EGRESS4, WIDE_EGRESS6));
        out(Family::Inet, set, e);
        let ingress = if local.gated() {
            v4v6(&b.ip, WIDE_GATED4, WIDE_GATED6)
        } else {
            v4v6(&b.ip, WIDE_INGRESS4, WIDE_INGRESS6)
        };
        let (set, e) = key(ingress);
        out(Family::Inet, set, e);
    }
}

/// `identity . interface . address`: the identity first, so that every
/// part of the concatenation starts on a 16-byte register.
fn identity_key(iface: &str, ip: std::net::IpAddr, id: &Identity) -> Element {
    let mut key = id.to_vec();
    key.extend_from_slice(&Element::set(&[KeyValue::Ifname(iface), KeyValue::Ip(ip)]).key);
    Element { key: key.into() }
}

/// The value length of a set of groupd's inet table: an identity for the
/// identity maps, 0 for plain sets.
pub fn data_len(set: &str) -> usize {
    match set {
        IDENT4 | IDENT6 => IDENTITY_BYTES,
        _ => 0,
    }
}

/// The maps and sets above.
pub fn add_sets(t: &mut Table) {
    let (v4, v6, ifname, id) = (
        KeyPart::Ipv4,
        KeyPart::Ipv6,
        KeyPart::Ifname,
        KeyPart::Identity,
    );
    t.add_map(IDENT4, vec![v4], IDENTITY_BYTES);
    t.add_map(IDENT6, vec![v6], IDENTITY_BYTES);
    for (name, key) in [
        (WIDE_EGRESS4, vec![id, ifname, v4]),
        (WIDE_EGRESS6, vec![id, ifname, v6]),
        (WIDE_INGRESS4, vec![id, ifname, v4]),
        (WIDE_INGRESS6, vec![id, ifname, v6]),
        (WIDE_GATED4, vec![id, ifname, v4]),
        (WIDE_GATED6, vec![id, ifname, v6]),
    ] {
        t.add_set(name, key);
    }
}

/// `ip daddr map @ident4 . iifname . ip saddr @set4` (local endpoint as
/// the source, `Dir::In`) or `ip saddr map @ident4 . oifname . ip daddr
/// @set4` (as the destination), for both families.
pub fn matches(local: Dir, sets: [&str; 2]) -> [Match; 2] {
    let peer = if local == Dir::In { Dir::Out } else { Dir::In };
    let m = |l3, ident: &str, set: &str| Match::ViaIdentity {
        key: vec![Field::Ifname(local), Field::Addr(local, l3)],
        peer: Field::Addr(peer, l3),
        ident_map: ident.to_string(),
        set: set.to_string(),
    };
    [m(L3::Ip, IDENT4, sets[0]), m(L3::Ip6, IDENT6, sets[1])]
}

/// The wide groups among `gids` (sorted as `gids` is).
pub fn wide_of(gids: &[GroupId], wide: &BTreeSet<GroupId>) -> Vec<GroupId> {
    gids.iter().filter(|g| wide.contains(*g)).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_in_the_same_wide_groups_share_an_identity() {
        let (a, b) = ([1u8; 16], [2u8; 16]);
        assert_eq!(identity(&[a, b]), identity(&[a, b]));
        assert_ne!(identity(&[a]), identity(&[a, b]));
        assert_ne!(identity(&[a]), identity(&[b]));
    }

    #[test]
    fn only_wide_groups_count() {
        let wide: BTreeSet<GroupId> = [[1u8; 16]].into_iter().collect();
        assert_eq!(wide_of(&[[1u8; 16], [3u8; 16]], &wide), vec![[1u8; 16]]);
    }
}
