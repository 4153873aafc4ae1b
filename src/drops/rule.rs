//! The dropping rules of groupd's tables, each with a short stable id: the
//! nflog prefix of its log rule, and what `groupctl drops` shows.
//!
//! The ids are part of the operator interface (grep, alerts): never rename one.

use serde::{Deserialize, Serialize};

use crate::compile::{DEST_CHECK, EGRESS, GATED, INGRESS, PORT_IN, PORT_OUT, SOURCE_CHECK};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropRule {
    /// R7/R8: a source address not bound to its task interface (inet).
    SourceCheck,
    /// R8: to a task interface the destination is not bound to (inet).
    DestCheck,
    /// R1: from an endpoint to an endpoint it shares no group with.
    EgressNoSharedGroup,
    /// R4: from an endpoint to a non-endpoint, `egress_non_endpoint = "deny"`.
    EgressNonEndpoint,
    /// R9: to a port-restricted endpoint, not on one of its ports.
    Gated,
    /// R1/R5/R9 at the receiving endpoint (which one depends on the packet).
    Ingress,
    /// R7: a bridge port sending from an address not bound to it.
    PortIn,
    /// R8: a bridge port receiving for an address not bound to it.
    PortOut,
}

impl DropRule {
    pub const ALL: [DropRule; 8] = [
        DropRule::SourceCheck,
        DropRule::DestCheck,
        DropRule::EgressNoSharedGroup,
        DropRule::EgressNonEndpoint,
        DropRule::Gated,
        DropRule::Ingress,
        DropRule::PortIn,
        DropRule::PortOut,
    ];

    /// The nflog prefix of the rule's log rule.
    pub fn id(&self) -> &'static str {
        match self {
            DropRule::SourceCheck => "gd-r7-source-check",
            DropRule::DestCheck => "gd-r8-dest-check",
            DropRule::EgressNoSharedGroup => "gd-r1-egress",
            DropRule::EgressNonEndpoint => "gd-r4-egress",
            DropRule::Gated => "gd-r9-gated",
            DropRule::Ingress => "gd-ingress",
            DropRule::PortIn => "gd-r7-port-in",
            DropRule::PortOut => "gd-r8-port-out",
        }
    }

    pub fn from_id(id: &str) -> Option<DropRule> {
        DropRule::ALL.into_iter().find(|r| r.id() == id)
    }

    /// The chain the rule sits in.
    pub fn chain(&self) -> &'static str {
        match self {
            DropRule::SourceCheck => SOURCE_CHECK,
            DropRule::DestCheck => DEST_CHECK,
            DropRule::EgressNoSharedGroup | DropRule::EgressNonEndpoint => EGRESS,
            DropRule::Gated => GATED,
            DropRule::Ingress => INGRESS,
            DropRule::PortIn => PORT_IN,
            DropRule::PortOut => PORT_OUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip() {
        let mut ids: Vec<&str> = DropRule::ALL.iter().map(|r| r.id()).collect();
        for r in DropRule::ALL {
            assert_eq!(DropRule::from_id(r.id()), Some(r));
            // nflog prefixes are at most 127 bytes; short ones read better.
            assert!(r.id().len() < 32 && r.id().starts_with("gd-"));
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), DropRule::ALL.len());
        assert_eq!(DropRule::from_id("gd-nope"), None);
    }
}
