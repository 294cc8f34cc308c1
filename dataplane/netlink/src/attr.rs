//! Walking the attributes (TLVs) of a message: pure, and never past the bytes given.

use crate::consts::{align4, NLA_TYPE_MASK};

/// One attribute: its type (nested and byte-order flags masked off) and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    pub kind: u16,
    pub data: &'a [u8],
}

impl<'a> Attr<'a> {
    pub fn nested(&self) -> Vec<Attr<'a>> {
        attrs(self.data)
    }

    pub fn u8(&self) -> Option<u8> {
        self.data.first().copied()
    }

    pub fn u16_be(&self) -> Option<u16> {
        Some(u16::from_be_bytes(self.data.get(..2)?.try_into().ok()?))
    }

    pub fn u16_ne(&self) -> Option<u16> {
        Some(u16::from_ne_bytes(self.data.get(..2)?.try_into().ok()?))
    }

    pub fn u32_ne(&self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.data.get(..4)?.try_into().ok()?))
    }

    pub fn ipv4(&self) -> Option<std::net::Ipv4Addr> {
        let b: [u8; 4] = self.data.get(..4)?.try_into().ok()?;
        Some(b.into())
    }

    /// A C string: the bytes up to the first NUL (all of them when there is none), lossily.
    pub fn c_string(&self) -> String {
        String::from_utf8_lossy(self.data.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
    }
}

/// Parses a run of attributes; stops at the first malformed one.
pub fn attrs(mut b: &[u8]) -> Vec<Attr<'_>> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            break;
        }
        out.push(Attr { kind, data: &b[4..len] });
        b = &b[align4(len).min(b.len())..];
    }
    out
}

pub fn find<'a>(attrs: &[Attr<'a>], kind: u16) -> Option<Attr<'a>> {
    attrs.iter().find(|a| a.kind == kind).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MsgBuilder, NLMSG_HDR_LEN, NLM_F_REQUEST};

    #[test]
    fn nested_attributes_round_trip_with_padding() {
        let mut m = MsgBuilder::new(0x0101, NLM_F_REQUEST, 7, &[2, 0, 0, 0]);
        m.begin_nested(1).begin_nested(2).u8(1, 17).u16_be(2, 53).end_nested().end_nested().str(3, "ab");
        let bytes = m.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize, bytes.len());
        let top = attrs(&bytes[NLMSG_HDR_LEN + 4..]);
        assert_eq!(top.len(), 2);
        let inner = top[0].nested()[0].nested();
        assert_eq!(find(&inner, 1).unwrap().u8(), Some(17));
        assert_eq!(find(&inner, 2).unwrap().u16_be(), Some(53));
        assert_eq!(top[1].data, b"ab\0");
        assert_eq!(top[1].c_string(), "ab");
    }

    #[test]
    fn a_malformed_attribute_ends_the_walk_without_reading_past_the_bytes() {
        // A valid u32 attribute, then one that claims 200 bytes.
        let mut b = Vec::new();
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&1u16.to_ne_bytes());
        b.extend_from_slice(&7u32.to_ne_bytes());
        b.extend_from_slice(&200u16.to_ne_bytes());
        b.extend_from_slice(&2u16.to_ne_bytes());
        let a = attrs(&b);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].u32_ne(), Some(7));
        // A length below the header's own 4 bytes, and a last attribute without its padding.
        assert!(attrs(&[2, 0, 1, 0]).is_empty());
        assert_eq!(attrs(&[5, 0, 3, 0, 9]), vec![Attr { kind: 3, data: &[9] }]);
        assert_eq!(Attr { kind: 1, data: &[1] }.u32_ne(), None, "too short for a u32");
    }
}
