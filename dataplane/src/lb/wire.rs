//! Raw netlink messages for the families no crate here speaks (ctnetlink for conntrack, generic
//! netlink for IPVS): attribute encoding and parsing (pure), and a blocking socket that sends one
//! request and collects its answer.

use netlink_sys::{Socket, SocketAddr};

pub const NLMSG_HDR_LEN: usize = 16;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A netlink message under construction: header, family header, attributes.
#[derive(Debug, Clone)]
pub struct MsgBuilder {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl MsgBuilder {
    /// `family_header` is e.g. nfgenmsg (4 bytes) or genlmsghdr (4 bytes).
    pub fn new(msg_type: u16, flags: u16, seq: u32, family_header: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        buf.extend_from_slice(family_header);
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
        Self { buf, nests: Vec::new() }
    }

    pub fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self
    }

    pub fn u8(&mut self, kind: u16, v: u8) -> &mut Self {
        self.attr(kind, &[v])
    }

    pub fn u16_ne(&mut self, kind: u16, v: u16) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    pub fn u16_be(&mut self, kind: u16, v: u16) -> &mut Self {
        self.attr(kind, &v.to_be_bytes())
    }

    pub fn u32_ne(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    pub fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.attr(kind, &b)
    }

    pub fn begin_nested(&mut self, kind: u16) -> &mut Self {
        self.begin_nest(kind | NLA_F_NESTED)
    }

    /// A nest without NLA_F_NESTED, as older families (IPVS) and their tools write it.
    pub fn begin_nest(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self
    }

    pub fn end_nested(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// One attribute: its type (nested flag masked off) and payload.
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

    pub fn u32_ne(&self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.data.get(..4)?.try_into().ok()?))
    }

    pub fn u16_ne(&self) -> Option<u16> {
        Some(u16::from_ne_bytes(self.data.get(..2)?.try_into().ok()?))
    }

    pub fn ipv4(&self) -> Option<std::net::Ipv4Addr> {
        let b: [u8; 4] = self.data.get(..4)?.try_into().ok()?;
        Some(b.into())
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

/// One received message: type, and the bytes after the netlink header.
#[derive(Debug, Clone)]
pub struct Received {
    pub msg_type: u16,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("kernel refused: {}", std::io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
}

impl From<WireError> for std::io::Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Io(e) => e,
            WireError::Kernel(errno) => std::io::Error::from_raw_os_error(errno),
        }
    }
}

impl WireError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            WireError::Kernel(e) => Some(*e),
            WireError::Io(e) => e.raw_os_error(),
        }
    }
}

/// A blocking netlink socket of one protocol.
/// A receive timeout, said in words (the raw error is EAGAIN's "temporarily unavailable").
fn said_timeout(e: std::io::Error) -> std::io::Error {
    if crate::netlink::timed_out(&e) {
        let after = crate::netlink::RECV_TIMEOUT;
        return std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the kernel did not answer within {after:?} (receive timed out)"),
        );
    }
    e
}

pub struct RawSocket {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl RawSocket {
    pub fn open(protocol: isize) -> Result<Self, WireError> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        crate::netlink::bound_receives(&socket, crate::netlink::RECV_TIMEOUT)?;
        Ok(Self { socket, seq: 1, buf: vec![0; 1 << 16] })
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `msg` (built with sequence `seq`) and collects answers until ACK or DONE.
    pub fn transact(&mut self, msg: &[u8], seq: u32) -> Result<Vec<Received>, WireError> {
        self.socket.send(msg, 0)?;
        let mut out = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0).map_err(said_timeout)?;
            let mut b = &self.buf[..n];
            while b.len() >= NLMSG_HDR_LEN {
                let len = u32::from_ne_bytes(b[0..4].try_into().unwrap_or_default()) as usize;
                let msg_type = u16::from_ne_bytes([b[4], b[5]]);
                let mseq = u32::from_ne_bytes(b[8..12].try_into().unwrap_or_default());
                if len < NLMSG_HDR_LEN || len > b.len() {
                    return Err(WireError::Io(std::io::Error::other("truncated netlink message")));
                }
                let payload = &b[NLMSG_HDR_LEN..len];
                b = &b[align4(len).min(b.len())..];
                if mseq != seq {
                    continue;
                }
                match msg_type {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = i32::from_ne_bytes(payload.get(..4).and_then(|s| s.try_into().ok()).unwrap_or_default());
                        return if code == 0 { Ok(out) } else { Err(WireError::Kernel(-code)) };
                    }
                    _ => out.push(Received { msg_type, payload: payload.to_vec() }),
                }
            }
        }
    }
}

impl RawSocket {
    /// Sends a batch in which `acks` messages asked for an ACK and waits for all of them.
    /// Returns the index (in ACK order) and errno of the first refusal.
    pub fn transact_batch(&mut self, batch: &[u8], acks: usize) -> Result<(), (usize, WireError)> {
        self.socket.send(batch, 0).map_err(|e| (0, WireError::Io(e)))?;
        let mut seen = 0;
        let mut first_err = None;
        while seen < acks {
            let n = self.socket.recv(&mut &mut self.buf[..], 0).map_err(|e| (seen, WireError::Io(said_timeout(e))))?;
            let mut b = &self.buf[..n];
            while b.len() >= NLMSG_HDR_LEN {
                let len = u32::from_ne_bytes(b[0..4].try_into().unwrap_or_default()) as usize;
                let msg_type = u16::from_ne_bytes([b[4], b[5]]);
                if len < NLMSG_HDR_LEN || len > b.len() {
                    return Err((seen, WireError::Io(std::io::Error::other("truncated netlink message"))));
                }
                if msg_type == NLMSG_ERROR {
                    let code = i32::from_ne_bytes(b[NLMSG_HDR_LEN..NLMSG_HDR_LEN + 4].try_into().unwrap_or_default());
                    if code != 0 && first_err.is_none() {
                        first_err = Some((seen, WireError::Kernel(-code)));
                    }
                    seen += 1;
                }
                b = &b[align4(len).min(b.len())..];
            }
            if first_err.is_some() && seen >= 1 {
                // An aborted batch acknowledges no further messages.
                break;
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
