//! The thin applier: reads the kernel's XFRM tables (ours: [`REQID`]) and carries out a plan's
//! operations over NETLINK_XFRM, in the calling thread's network namespace. One message per
//! operation (XFRM has no transactions); the plan orders them so every moment fails closed.

use shoal_netlink::{Socket, NETLINK_XFRM};

use std::net::Ipv4Addr;

use super::derive::{SaKey, AEAD_KEY_LEN};
use super::plan::{Dir, Observed, Sa, XfrmOp, REQID};
use super::xfrm::{self, SaDumped, XFRM_MSG_GETPOLICY, XFRM_MSG_GETSA, XFRM_MSG_NEWPOLICY, XFRM_MSG_NEWSA};

#[derive(Debug, thiserror::Error)]
pub enum XfrmError {
    #[error("open an XFRM netlink socket (IPsec): {0}")]
    Open(#[source] shoal_netlink::Error),
    #[error("read the kernel's XFRM {what}: {source}")]
    Dump { what: &'static str, source: shoal_netlink::Error },
    /// The kernel has no ESP (or no AES-GCM for it): IPsec cannot run on this node.
    #[error("{op}: the kernel has no ESP with AES-GCM (modules esp4 and gcm; `shoal doctor` shows it): {source}")]
    NoEsp { op: String, source: shoal_netlink::Error },
    #[error("{op}: {source}")]
    Op { op: String, source: shoal_netlink::Error },
}

impl XfrmError {
    /// Whether this node cannot run IPsec at all (as opposed to one operation failing).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, XfrmError::NoEsp { .. })
    }
}

/// Whether this namespace's kernel runs ESP with AES-GCM: adds one SA between documentation
/// addresses (RFC 5737) and deletes it again. Run it where a stray SA for a minute would harm
/// nothing (a throwaway namespace, or a node's own: nothing sends to 192.0.2.0/24).
pub fn probe() -> Result<(), XfrmError> {
    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 201);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 202);
    const SPI: u32 = 0x5348_0bad;
    let mut x = Xfrm::open()?;
    // A probe cut short earlier (a daemon killed between the two steps) left its SA: clear it
    // first, or adding it again would be refused and read as "no ESP".
    let _ = x.apply(&[XfrmOp::DelSa { src: SRC, dst: DST, spi: SPI }]);
    let sa = Sa { src: SRC, dst: DST, spi: SPI, key: SaKey([0x5a; AEAD_KEY_LEN]) };
    x.apply(&[XfrmOp::AddSa { sa, dir: Dir::Out, node: "(ESP probe)".into() }])?;
    x.apply(&[XfrmOp::DelSa { src: SRC, dst: DST, spi: SPI }])
}

pub struct Xfrm {
    sock: Socket,
}

impl Xfrm {
    pub fn open() -> Result<Self, XfrmError> {
        Ok(Self { sock: Socket::open(NETLINK_XFRM).map_err(XfrmError::Open)? })
    }

    /// Every IPv4 ESP SA of the namespace, ours or not, with its counters.
    pub fn sas(&mut self) -> Result<Vec<SaDumped>, XfrmError> {
        let seq = self.sock.next_seq();
        let answers =
            self.sock.transact(&xfrm::dump(seq, XFRM_MSG_GETSA), seq).map_err(|source| XfrmError::Dump { what: "SAs", source })?;
        Ok(answers.iter().filter(|a| a.msg_type == XFRM_MSG_NEWSA).filter_map(|a| xfrm::parse_sa(&a.payload)).collect())
    }

    /// Our SAs and policies, as the planner compares them.
    pub fn observe(&mut self) -> Result<Observed, XfrmError> {
        let sas = self.sas()?.into_iter().filter(|s| s.reqid == REQID).map(|s| s.sa).collect();
        let seq = self.sock.next_seq();
        let answers =
            self.sock.transact(&xfrm::dump(seq, XFRM_MSG_GETPOLICY), seq).map_err(|source| XfrmError::Dump { what: "policies", source })?;
        let policies = answers.iter().filter(|a| a.msg_type == XFRM_MSG_NEWPOLICY).filter_map(|a| xfrm::parse_policy(&a.payload)).collect();
        Ok(Observed { sas, policies })
    }

    /// Carries out `ops` in order; stops at the first refusal (the next pass re-plans).
    pub fn apply(&mut self, ops: &[XfrmOp]) -> Result<(), XfrmError> {
        for op in ops {
            let seq = self.sock.next_seq();
            let msg = match op {
                XfrmOp::AddSa { sa, .. } => xfrm::new_sa(seq, sa),
                XfrmOp::DelSa { dst, spi, .. } => xfrm::del_sa(seq, *dst, *spi),
                XfrmOp::SetPolicy(p) => xfrm::set_policy(seq, p),
                XfrmOp::DelPolicy(p) => xfrm::del_policy(seq, p),
            };
            match self.sock.transact(&msg, seq) {
                Ok(_) => {}
                // Already gone: what a delete wanted.
                Err(e) if e.is(shoal_netlink::Errno::NotFound) && matches!(op, XfrmOp::DelSa { .. } | XfrmOp::DelPolicy(_)) => {}
                // No ESP type or no AEAD: the errnos xfrm_init_state gives for a missing module.
                Err(e)
                    if matches!(op, XfrmOp::AddSa { .. })
                        && matches!(e.errno(), Some(libc::EPROTONOSUPPORT | libc::ENOENT | libc::ENOSYS)) =>
                {
                    return Err(XfrmError::NoEsp { op: op.to_string(), source: e })
                }
                Err(source) => return Err(XfrmError::Op { op: op.to_string(), source }),
            }
        }
        Ok(())
    }
}
