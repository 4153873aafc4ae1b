//! The `nft -f` peer: the alternative design "ONE concatenated set of
//! (iifname . member) pairs", byte for byte what `gen.sh nft-flat G N routed`
//! of the data-plane baseline (docs/notes/dataplane-baseline.md; its scripts
//! are not part of this repository) prints, so the numbers compare with that
//! baseline. Rewritten here because a clone of this repository has no gen.sh.
//!
//! Model (from gen.sh): groups dp_g0..dp_g<G-1> of 10 IPv4 members; real
//! tasks 1..N all own the last three groups; the other G-3 groups belong to
//! phantom tasks (3 groups each, interface gw-ph<o>). Filler members are
//! 10.233.16.0 onwards (wrapping after 61440 addresses).

use std::fmt::Write as _;

const GS: usize = 10;

fn member(k: usize, j: usize) -> String {
    let idx = (k * GS + j) % 61440;
    format!("10.233.{}.{}", 16 + idx / 256, idx % 256)
}

fn task_ip(i: usize) -> String {
    format!("10.233.1.{i}")
}

/// The members of group k; the last group also holds task1 and task2.
fn members(k: usize, g: usize) -> Vec<String> {
    let mut m = Vec::with_capacity(GS);
    if k == g - 1 {
        m.push(task_ip(1));
        m.push(task_ip(2));
    }
    let mut j = 0;
    while m.len() < GS {
        m.push(member(k, j));
        j += 1;
    }
    m
}

/// `gen.sh nft-flat G N routed`.
pub fn nft_flat(g: usize, n: usize) -> String {
    assert!(g >= 3 && n >= 3, "gen.sh needs G >= 3 and N >= 3");
    let mut s = String::with_capacity(g * GS * 32);
    s.push_str("table inet dp_pol {}\ndelete table inet dp_pol\ntable inet dp_pol {\n");
    s.push_str("  set allowed { type ifname . ipv4_addr; elements = { ");
    let mut sep = "";
    for i in 1..=n {
        for k in g - 3..g {
            for m in members(k, g) {
                let _ = write!(s, "{sep}\"gw-task{i}\" . {m}");
                sep = ", ";
            }
        }
    }
    for k in 0..g - 3 {
        let o = k / 3;
        for m in members(k, g) {
            let _ = write!(s, "{sep}\"gw-ph{o}\" . {m}");
            sep = ", ";
        }
    }
    s.push_str(" } }\n");
    s.push_str("  chain forward {\n");
    s.push_str("    type filter hook forward priority filter; policy accept;\n");
    s.push_str("    ct state established,related accept\n");
    s.push_str("    iifname . ip daddr @allowed accept\n");
    s.push_str("    iifname \"gw-*\" drop\n");
    s.push_str("  }\n}\n");
    s
}
