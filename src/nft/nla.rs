//! Netlink attributes by hand: a minimal reader for the two large dumps (set
//! elements and rules) that groupd decodes itself (see `socket::dump_raw`),
//! and a writer for the set elements it sends by the ten thousand.

/// Header bytes before the attributes of an nf_tables message
/// (nlmsghdr + nfgenmsg).
pub const NFT_HEADER: usize = 16 + 4;

/// The attributes in `buf`: (type without flag bits, value).
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        let head = buf.get(offset..offset + 4)?;
        let len = u16::from_ne_bytes([head[0], head[1]]) as usize;
        let kind = u16::from_ne_bytes([head[2], head[3]]) & 0x3fff;
        if len < 4 {
            return None;
        }
        let value = buf.get(offset + 4..offset + len)?;
        offset += (len + 3) & !3;
        Some((kind, value))
    })
}

/// The first attribute of type `kind`.
pub fn find(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(buf).find(|(k, _)| *k == kind).map(|(_, v)| v)
}

/// A NUL-terminated string attribute.
pub fn string(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

pub fn u32_be(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

pub fn u64_be(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

/// NLA_F_NESTED: the attribute holds attributes.
const NESTED: u16 = 0x8000;

/// Append attribute `kind` with payload `value` (padded to 4 bytes).
pub fn put(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// Append a NUL-terminated string attribute.
pub fn put_str(buf: &mut Vec<u8>, kind: u16, value: &str) {
    let mut v = Vec::with_capacity(value.len() + 1);
    v.extend_from_slice(value.as_bytes());
    v.push(0);
    put(buf, kind, &v);
}

/// Append an attribute holding the (already encoded) attributes `inner`.
pub fn put_nested(buf: &mut Vec<u8>, kind: u16, inner: &[u8]) {
    put(buf, kind | NESTED, inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_attributes_and_stops_at_garbage() {
        // type 1 "ab\0" (len 7, padded to 8), type 2 u32, then a bad length.
        let buf = [
            7, 0, 1, 0, b'a', b'b', 0, 0, 8, 0, 2, 0x80, 0, 0, 0, 5, 2, 0, 9, 0,
        ];
        let got: Vec<(u16, Vec<u8>)> = attrs(&buf).map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(string(&got[0].1), "ab");
        assert_eq!(got[1].0, 2, "the nested flag is masked");
        assert_eq!(u32_be(&got[1].1), Some(5));
    }
}
