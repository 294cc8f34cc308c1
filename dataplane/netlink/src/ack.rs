//! The one reader of NLMSG_ERROR (an ACK or a refusal), with the kernel's extended-ack text.

use crate::attr::{attrs, find};
use crate::consts::{align4, NLMSGERR_ATTR_MSG, NLMSG_HDR_LEN, NLM_F_ACK_TLVS, NLM_F_CAPPED};

/// What an NLMSG_ERROR says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// 0 for an ACK, else the (positive) errno of the refusal.
    pub errno: i32,
    /// The sequence number of the request it answers (from the echoed header): in a batch, it
    /// names the refused message.
    pub seq: u32,
    /// The kernel's reason in words (NLMSGERR_ATTR_MSG), when it gave one.
    pub message: Option<String>,
}

/// Reads an NLMSG_ERROR payload (the bytes after the netlink header) whose header carried
/// `msg_flags`. The request is echoed whole unless NLM_F_CAPPED says only its header was;
/// extended-ack attributes follow it when NLM_F_ACK_TLVS is set. None when the payload is too
/// short to hold the error code and the echoed header.
pub fn parse_ack(msg_flags: u16, payload: &[u8]) -> Option<Ack> {
    let code = i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?);
    let orig = payload.get(4..4 + NLMSG_HDR_LEN)?;
    let seq = u32::from_ne_bytes(orig[8..12].try_into().ok()?);
    let mut message = None;
    if msg_flags & NLM_F_ACK_TLVS != 0 {
        let orig_len = u32::from_ne_bytes(orig[0..4].try_into().ok()?) as usize;
        let echoed = if msg_flags & NLM_F_CAPPED != 0 { NLMSG_HDR_LEN } else { orig_len };
        let tlvs = payload.get(4 + align4(echoed)..).unwrap_or_default();
        message = find(&attrs(tlvs), NLMSGERR_ATTR_MSG).map(|a| a.c_string()).filter(|m| !m.is_empty());
    }
    Some(Ack { errno: code.saturating_neg(), seq, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MsgBuilder;

    /// An NLMSG_ERROR payload: `code`, the echoed request (`echo` bytes of a message of length
    /// `orig_len` and sequence `seq`), then the extack text when given.
    fn error_payload(code: i32, orig_len: u32, echo: usize, seq: u32, text: Option<&str>) -> Vec<u8> {
        let mut p = code.to_ne_bytes().to_vec();
        let mut orig = vec![0u8; echo];
        orig[0..4].copy_from_slice(&orig_len.to_ne_bytes());
        orig[8..12].copy_from_slice(&seq.to_ne_bytes());
        p.extend_from_slice(&orig);
        p.resize(4 + align4(echo), 0);
        if let Some(text) = text {
            let mut m = MsgBuilder::new(0, 0, 0, &[]);
            m.str(NLMSGERR_ATTR_MSG, text);
            p.extend_from_slice(&m.finish()[NLMSG_HDR_LEN..]);
        }
        p
    }

    #[test]
    fn a_capped_refusal_names_the_request_and_carries_the_kernels_words() {
        let p = error_payload(-2, 200, NLMSG_HDR_LEN, 7, Some("no such set"));
        assert_eq!(parse_ack(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p), Some(Ack { errno: 2, seq: 7, message: Some("no such set".into()) }));
        assert_eq!(parse_ack(NLM_F_CAPPED, &p).unwrap().message, None, "no NLM_F_ACK_TLVS: no text looked for");
    }

    #[test]
    fn an_uncapped_refusal_skips_the_whole_echoed_request() {
        // The request echoed whole (22 bytes, padded to 24), then the text.
        let p = error_payload(-17, 22, 22, 3, Some("VXLAN device with the specified VNI already exists"));
        let ack = parse_ack(NLM_F_ACK_TLVS, &p).unwrap();
        assert_eq!((ack.errno, ack.seq), (17, 3));
        assert_eq!(ack.message.as_deref(), Some("VXLAN device with the specified VNI already exists"));
    }

    #[test]
    fn an_ack_has_errno_zero_and_short_payloads_are_none() {
        let p = error_payload(0, 40, NLMSG_HDR_LEN, 9, None);
        assert_eq!(parse_ack(NLM_F_CAPPED, &p), Some(Ack { errno: 0, seq: 9, message: None }));
        assert_eq!(parse_ack(0, &p[..10]), None);
        assert_eq!(parse_ack(0, &[]), None);
        // An extack flag on a payload without attributes is no text, not a panic.
        assert_eq!(parse_ack(NLM_F_ACK_TLVS, &p).unwrap().message, None);
        assert_eq!(parse_ack(NLM_F_ACK_TLVS, &error_payload(-1, 4000, NLMSG_HDR_LEN, 1, None)).unwrap().message, None);
        assert_eq!(parse_ack(0, &error_payload(i32::MIN, 16, NLMSG_HDR_LEN, 1, None)).unwrap().errno, i32::MAX);
    }
}
