//! nftables "userdata": type-length-value bytes that the kernel stores
//! verbatim and the `nft` CLI uses to print keys and comments. groupd writes
//! the same records as `nft` so that `nft list` shows its objects readably.

// libnftnl's NFTNL_UDATA_* numbers.
const RULE_COMMENT: u8 = 0;
const SET_KEYBYTEORDER: u8 = 0;
const SET_DATABYTEORDER: u8 = 1;
const SET_MERGE_ELEMENTS: u8 = 2;

// nft's enum byteorder.
pub const HOST_ENDIAN: u32 = 1;
pub const BIG_ENDIAN: u32 = 2;

fn put(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    let len = value.len().min(255);
    out.push(kind);
    out.push(len as u8);
    out.extend_from_slice(&value[..len]);
}

/// A rule comment (NUL-terminated, like nft writes it).
pub fn rule_comment_bytes(comment: &str) -> Vec<u8> {
    let mut v = comment.as_bytes().to_vec();
    v.push(0);
    let mut out = Vec::with_capacity(v.len() + 2);
    put(&mut out, RULE_COMMENT, &v);
    out
}

/// The comment of a rule, if its userdata carries one.
pub fn rule_comment(udata: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 2 <= udata.len() {
        let (kind, len) = (udata[i], udata[i + 1] as usize);
        let value = udata.get(i + 2..i + 2 + len)?;
        if kind == RULE_COMMENT {
            let text: Vec<u8> = value.iter().copied().take_while(|c| *c != 0).collect();
            return String::from_utf8(text).ok();
        }
        i += 2 + len;
    }
    None
}

/// Set userdata as nft writes it: key byte order (and data byte order for maps).
pub fn set_bytes(key_byteorder: u32, data_byteorder: Option<u32>, merge: bool) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, SET_KEYBYTEORDER, &key_byteorder.to_ne_bytes());
    if let Some(d) = data_byteorder {
        put(&mut out, SET_DATABYTEORDER, &d.to_ne_bytes());
    }
    if merge {
        put(&mut out, SET_MERGE_ELEMENTS, &1u32.to_ne_bytes());
    }
    out
}
