//! Splitting what one receive returned into its messages.

use crate::consts::{align4, NLMSG_HDR_LEN};

/// One message of a receive: its header's fields and the bytes after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub msg_type: u16,
    pub flags: u16,
    pub seq: u32,
    /// The bytes after the netlink header (family header and attributes).
    pub payload: &'a [u8],
    /// The whole message, header included (for decoders that want it, as netlink-packet-route).
    pub bytes: &'a [u8],
}

/// The messages of `buf`, in order. A message whose length is shorter than a header or runs
/// past the buffer ends the walk with `Err(())`: the rest cannot be framed.
pub fn frames(mut buf: &[u8]) -> impl Iterator<Item = Result<Frame<'_>, ()>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDR_LEN {
            return None;
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDR_LEN || len > buf.len() {
            buf = &[];
            return Some(Err(()));
        }
        let frame = Frame {
            msg_type: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[NLMSG_HDR_LEN..len],
            bytes: &buf[..len],
        };
        buf = &buf[align4(len).min(buf.len())..];
        Some(Ok(frame))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MsgBuilder, NLMSG_DONE, NLM_F_ACK};

    #[test]
    fn a_receive_splits_into_its_messages_with_their_headers() {
        let mut buf = MsgBuilder::new(20, NLM_F_ACK, 5, &[1, 2, 3]).finish();
        buf.extend(MsgBuilder::new(NLMSG_DONE, 0, 6, &[]).finish());
        let f: Vec<_> = frames(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].msg_type, f[0].flags, f[0].seq, f[0].payload), (20, NLM_F_ACK, 5, &[1, 2, 3, 0][..]));
        assert_eq!(f[0].bytes.len(), NLMSG_HDR_LEN + 4);
        assert_eq!((f[1].msg_type, f[1].seq, f[1].payload.len()), (NLMSG_DONE, 6, 0));
    }

    #[test]
    fn a_truncated_message_ends_the_walk_with_an_error() {
        let mut buf = MsgBuilder::new(20, 0, 1, &[0; 8]).finish();
        buf.truncate(20);
        assert_eq!(frames(&buf).collect::<Vec<_>>(), vec![Err(())]);
        let mut short = MsgBuilder::new(20, 0, 1, &[]).finish();
        short[0] = 4; // shorter than a header
        assert_eq!(frames(&short).collect::<Vec<_>>(), vec![Err(())]);
        assert_eq!(frames(&[0u8; 8]).count(), 0, "less than a header: nothing");
    }
}
