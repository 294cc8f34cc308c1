//! Kernel WireGuard: the "wireguard" generic netlink family (uapi/linux/wireguard.h), written
//! over the raw netlink layer the IPVS balancer uses. Messages and their parse are pure; [`Genl`]
//! is the thin socket.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::key::{Key, PrivateKey};
use super::plan::{DeviceConfig, ObservedPeer, WgOp};
use super::wg_error::WgError;
use shoal_netlink::{self as wire, MsgBuilder, Socket, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const FAMILY: &str = "wireguard";
const VERSION: u8 = 1;

const CMD_GET_DEVICE: u8 = 0;
const CMD_SET_DEVICE: u8 = 1;

const DEVICE_IFNAME: u16 = 2;
const DEVICE_PRIVATE_KEY: u16 = 3;
const DEVICE_LISTEN_PORT: u16 = 6;
const DEVICE_PEERS: u16 = 8;

const PEER_PUBLIC_KEY: u16 = 1;
const PEER_PRESHARED_KEY: u16 = 2;
const PEER_FLAGS: u16 = 3;
const PEER_ENDPOINT: u16 = 4;
const PEER_ALLOWEDIPS: u16 = 9;
const PEER_F_REMOVE_ME: u32 = 1;
const PEER_F_REPLACE_ALLOWEDIPS: u32 = 2;

const ALLOWEDIP_FAMILY: u16 = 1;
const ALLOWEDIP_IPADDR: u16 = 2;
const ALLOWEDIP_CIDR_MASK: u16 = 3;
const AF_INET: u16 = 2;

fn get_family(seq: u32) -> Vec<u8> {
    let mut m = MsgBuilder::new(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, seq, &[CTRL_CMD_GETFAMILY, 1, 0, 0]);
    m.str(CTRL_ATTR_FAMILY_NAME, FAMILY);
    m.finish()
}

/// WG_CMD_GET_DEVICE for one device (the kernel answers it as a dump).
pub fn get_device(family: u16, seq: u32, ifname: &str) -> Vec<u8> {
    let mut m = MsgBuilder::new(family, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP, seq, &[CMD_GET_DEVICE, VERSION, 0, 0]);
    m.str(DEVICE_IFNAME, ifname);
    m.finish()
}

fn sockaddr_in(a: SocketAddrV4) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..2].copy_from_slice(&AF_INET.to_ne_bytes());
    b[2..4].copy_from_slice(&a.port().to_be_bytes());
    b[4..8].copy_from_slice(&a.ip().octets());
    b
}

fn parse_sockaddr_in(b: &[u8]) -> Option<SocketAddrV4> {
    (b.len() >= 8 && u16::from_ne_bytes([b[0], b[1]]) == AF_INET)
        .then(|| SocketAddrV4::new(Ipv4Addr::new(b[4], b[5], b[6], b[7]), u16::from_be_bytes([b[2], b[3]])))
}

/// WG_CMD_SET_DEVICE carrying `ops` (one message: the kernel applies it whole or not at all).
pub fn set_device(family: u16, seq: u32, ifname: &str, ops: &[WgOp]) -> Vec<u8> {
    let mut m = MsgBuilder::new(family, NLM_F_REQUEST | NLM_F_ACK, seq, &[CMD_SET_DEVICE, VERSION, 0, 0]);
    m.str(DEVICE_IFNAME, ifname);
    for op in ops {
        match op {
            WgOp::SetPrivateKey(k) => {
                m.attr(DEVICE_PRIVATE_KEY, &k.expose().0);
            }
            WgOp::SetPort(p) => {
                m.u16_ne(DEVICE_LISTEN_PORT, *p);
            }
            _ => {}
        }
    }
    let peers: Vec<&WgOp> = ops.iter().filter(|o| matches!(o, WgOp::SetPeer { .. } | WgOp::RemovePeer { .. })).collect();
    if !peers.is_empty() {
        m.begin_nested(DEVICE_PEERS);
        for (i, op) in peers.into_iter().enumerate() {
            m.begin_nested(i as u16);
            match op {
                WgOp::RemovePeer { key } => {
                    m.attr(PEER_PUBLIC_KEY, &key.0).u32_ne(PEER_FLAGS, PEER_F_REMOVE_ME);
                }
                WgOp::SetPeer { key, endpoint, address, psk, .. } => {
                    m.attr(PEER_PUBLIC_KEY, &key.0).u32_ne(PEER_FLAGS, PEER_F_REPLACE_ALLOWEDIPS);
                    // Zeros clear it.
                    m.attr(PEER_PRESHARED_KEY, &psk.as_ref().map_or([0; 32], |k| k.expose().0));
                    m.attr(PEER_ENDPOINT, &sockaddr_in(*endpoint));
                    m.begin_nested(PEER_ALLOWEDIPS).begin_nested(0);
                    m.u16_ne(ALLOWEDIP_FAMILY, AF_INET).attr(ALLOWEDIP_IPADDR, &address.octets()).u8(ALLOWEDIP_CIDR_MASK, 32);
                    m.end_nested().end_nested();
                }
                _ => {}
            }
            m.end_nested();
        }
        m.end_nested();
    }
    m.finish()
}

/// Folds the answers of a GET_DEVICE dump (a device with many peers comes in several messages).
pub fn parse_device(payloads: &[Vec<u8>]) -> DeviceConfig {
    let mut cfg = DeviceConfig::default();
    for p in payloads {
        let Some(body) = p.get(4..) else { continue };
        for a in wire::attrs(body) {
            match a.kind {
                DEVICE_PRIVATE_KEY => {
                    if let Ok(k) = <[u8; 32]>::try_from(a.data) {
                        // An unset key reads as zeros.
                        cfg.private_key = (k != [0; 32]).then(|| PrivateKey::from_bytes(k));
                    }
                }
                DEVICE_LISTEN_PORT => cfg.port = a.u16_ne().unwrap_or(0),
                DEVICE_PEERS => {
                    for peer in a.nested() {
                        let attrs = peer.nested();
                        let Some(key) = wire::find(&attrs, PEER_PUBLIC_KEY).and_then(|k| <[u8; 32]>::try_from(k.data).ok()) else {
                            continue;
                        };
                        let entry = cfg.peers.entry(Key(key)).or_insert_with(ObservedPeer::default);
                        if let Some(k) = wire::find(&attrs, PEER_PRESHARED_KEY).and_then(|k| <[u8; 32]>::try_from(k.data).ok()) {
                            entry.psk = (k != [0; 32]).then(|| PrivateKey::from_bytes(k));
                        }
                        if let Some(e) = wire::find(&attrs, PEER_ENDPOINT) {
                            entry.endpoint = parse_sockaddr_in(e.data);
                        }
                        if let Some(ips) = wire::find(&attrs, PEER_ALLOWEDIPS) {
                            for ip in ips.nested() {
                                let ip = ip.nested();
                                let fam = wire::find(&ip, ALLOWEDIP_FAMILY).and_then(|f| f.u16_ne());
                                let addr = wire::find(&ip, ALLOWEDIP_IPADDR).and_then(|a| a.ipv4());
                                let mask = wire::find(&ip, ALLOWEDIP_CIDR_MASK).and_then(|m| m.u8());
                                if let (Some(AF_INET), Some(addr), Some(mask)) = (fam, addr, mask) {
                                    entry.allowed_ips.insert((addr, mask));
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    cfg
}

/// A generic netlink socket speaking the wireguard family, in the calling thread's namespace.
pub struct Genl {
    sock: Socket,
    family: u16,
}

/// The family id, or why the kernel has no WireGuard (asking loads the module where it can).
pub fn probe() -> Result<(), WgError> {
    Genl::open().map(|_| ())
}

impl Genl {
    pub fn open() -> Result<Self, WgError> {
        let mut sock =
            Socket::open(wire::NETLINK_GENERIC).map_err(|source| WgError::Netlink { what: "open generic netlink".into(), source })?;
        let seq = sock.next_seq();
        let family = match sock.transact(&get_family(seq), seq) {
            Ok(answers) => answers
                .iter()
                .find_map(|a| wire::find(&wire::attrs(a.payload.get(4..)?), CTRL_ATTR_FAMILY_ID)?.u16_ne())
                .ok_or(WgError::NoFamilyId)?,
            Err(e) if e.is(wire::Errno::NotFound) => return Err(WgError::NoKernelWireGuard),
            Err(source) => return Err(WgError::Netlink { what: "ask generic netlink for wireguard".into(), source }),
        };
        Ok(Self { sock, family })
    }

    pub fn get(&mut self, ifname: &str) -> Result<DeviceConfig, WgError> {
        let seq = self.sock.next_seq();
        let answers = self
            .sock
            .transact(&get_device(self.family, seq, ifname), seq)
            .map_err(|source| WgError::Netlink { what: format!("read wireguard device {ifname}"), source })?;
        let payloads: Vec<Vec<u8>> = answers.into_iter().map(|a| a.payload).collect();
        Ok(parse_device(&payloads))
    }

    pub fn set(&mut self, ifname: &str, ops: &[WgOp]) -> Result<(), WgError> {
        let seq = self.sock.next_seq();
        self.sock
            .transact(&set_device(self.family, seq, ifname, ops), seq)
            .map_err(|source| WgError::Netlink { what: format!("configure wireguard device {ifname}"), source })?;
        Ok(())
    }
}

/// Allowed IPs as the planner compares them.
pub fn single(ip: Ipv4Addr) -> BTreeSet<(Ipv4Addr, u8)> {
    BTreeSet::from([(ip, 32)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel would answer to GET_DEVICE, built the way it nests peers and allowed IPs.
    fn answer(ops: &[WgOp]) -> Vec<u8> {
        let msg = set_device(30, 1, "shw0", ops);
        // Drop the netlink header: parse_device gets what follows it (genl header first).
        msg[16..].to_vec()
    }

    #[test]
    fn a_set_message_parses_back_to_the_same_configuration() {
        let private = PrivateKey::from_bytes([5; 32]);
        let peer = Key([6; 32]);
        let endpoint: SocketAddrV4 = "192.168.33.20:51820".parse().unwrap();
        let address: Ipv4Addr = "10.254.0.2".parse().unwrap();
        let ops = vec![
            WgOp::SetPrivateKey(private.clone()),
            WgOp::SetPort(51820),
            WgOp::SetPeer { key: peer, node: "snode1".into(), endpoint, address, psk: Some(PrivateKey::from_bytes([7; 32])) },
        ];
        let cfg = parse_device(&[answer(&ops)]);
        assert_eq!(cfg.private_key, Some(private));
        assert_eq!(cfg.port, 51820);
        assert_eq!(cfg.peers[&peer].endpoint, Some(endpoint));
        assert_eq!(cfg.peers[&peer].allowed_ips, single(address));
        assert_eq!(cfg.peers[&peer].psk, Some(PrivateKey::from_bytes([7; 32])), "the preshared key reads back");
        let sa = sockaddr_in(endpoint);
        assert_eq!(&sa[2..4], &51820u16.to_be_bytes(), "the port is in network order");
    }
}
