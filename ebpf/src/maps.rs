//! Rust mirrors of the map keys and values declared in `ebpf/lib/types.h`,
//! and the names of the maps. Addresses and ports are stored in network byte
//! order, as the programs read them from packets and sockets.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::model::{Backend, ServiceKey};

/// `svc_val.flags`: prefer a local backend (NAT: and keep the client address).
pub const SVC_F_KEEP_CLIENT_IP: u32 = 0x1;
/// `svc_val.flags`: socket LB service that is a published port for
/// node-local clients, not a VIP (the programs ignore it).
pub const SVC_F_PUBLISHED: u32 = 0x2;
/// `svc_val.flags`: NAT service that is a VIP, balanced on the overlay
/// bridge (`nat_reply`), never on the underlay.
pub const SVC_F_VIP: u32 = 0x4;
/// `be_key.slot` bit selecting the list of local backends.
pub const SLOT_LOCAL: u32 = 0x8000_0000;
/// `be_key.slot` bit selecting the list of parked (weight 0) backends, which
/// the programs never read: kept so an adopting agent knows their data.
pub const SLOT_PARKED: u32 = 0x4000_0000;
/// `be_val.flags`: the task runs on this node.
pub const BE_F_LOCAL: u16 = 0x1;
/// `be_ref` values are `REF_WEIGHTED | weight`. Builds before weights stored
/// the slot (always below this bit): those read back as weight 1.
pub const REF_WEIGHTED: u32 = 0x1_0000;

/// The `be_ref` value recording `weight`.
pub fn ref_value(weight: u16) -> u32 {
    REF_WEIGHTED | u32::from(weight)
}

/// The weight a `be_ref` value records.
pub fn ref_weight(value: u32) -> u16 {
    if value & REF_WEIGHTED != 0 {
        value as u16
    } else {
        1
    }
}

/// Map names of the socket LB object (`lib/sock_maps.h`; `sock` service maps).
pub mod sock {
    /// Services by VIP.
    pub const SVC: &str = "sock_svc";
    /// Backends by (service id, slot).
    pub const BE: &str = "sock_be";
    /// Presence of a backend in a service.
    pub const BE_REF: &str = "sock_be_ref";
    /// The service maps (`lib/service_maps.h`).
    pub const SERVICE: [&str; 3] = [SVC, BE, BE_REF];
    /// UDP per-socket affinity (LRU).
    pub const AFF: &str = "sock_aff";
    /// Per-socket reverse translation (LRU).
    pub const REV: &str = "sock_rev";
    /// The node whose own processes are balanced (array of one `HostCfg`).
    pub const HOST: &str = "sock_host";
    /// Every map of the object.
    pub const ALL: [&str; 6] = [SVC, BE, BE_REF, AFF, REV, HOST];
}

/// Map names of the NAT object (`lib/nat_maps.h`; `nat` service maps).
pub mod nat {
    /// Services by (node address, published port).
    pub const SVC: &str = "nat_svc";
    /// Backends by (service id, slot).
    pub const BE: &str = "nat_be";
    /// Presence of a backend in a service.
    pub const BE_REF: &str = "nat_be_ref";
    /// The service maps (`lib/service_maps.h`).
    pub const SERVICE: [&str; 3] = [SVC, BE, BE_REF];
    /// Connection tracking, client tuple -> backend (LRU).
    pub const CT: &str = "nat_ct";
    /// Reply tuple -> client (LRU).
    pub const REV: &str = "nat_rev";
    /// Every map of the object.
    pub const ALL: [&str; 5] = [SVC, BE, BE_REF, CT, REV];
}

/// Address as stored in maps (network byte order in memory).
pub fn addr_to_map(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// Inverse of [`addr_to_map`].
pub fn addr_from_map(addr: u32) -> Ipv4Addr {
    Ipv4Addr::from(addr.to_ne_bytes())
}

/// Port as stored in maps (network byte order in memory).
pub fn port_to_map(port: u16) -> u16 {
    u16::from_ne_bytes(port.to_be_bytes())
}

/// Inverse of [`port_to_map`].
pub fn port_from_map(port: u16) -> u16 {
    u16::from_be_bytes(port.to_ne_bytes())
}

macro_rules! pod {
    ($($ty:ty = $size:expr),* $(,)?) => {$(
        const _: () = assert!(std::mem::size_of::<$ty>() == $size, "layout differs from lib/types.h");
        // SAFETY: a #[repr(C)] struct of integers whose padding is spelled out
        // as fields (the size assertion above proves there is no implicit
        // padding), so every bit pattern is valid and all bytes are initialised.
        unsafe impl aya::Pod for $ty {}
    )*};
}

/// `struct svc_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SvcKey {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
}

/// `struct svc_val`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SvcVal {
    pub id: u32,
    pub count: u16,
    pub local_count: u16,
    pub flags: u32,
}

/// `struct be_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BeKey {
    pub svc_id: u32,
    pub slot: u32,
}

/// `struct be_val`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BeVal {
    pub addr: u32,
    pub port: u16,
    /// `BE_F_*`.
    pub flags: u16,
    pub snat_addr: u32,
}

/// `struct be_ref_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BeRefKey {
    pub svc_id: u32,
    pub addr: u32,
    pub port: u16,
    pub pad: u16,
}

/// `struct host_cfg`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HostCfg {
    /// The node's network namespace cookie (0: no node).
    pub netns_cookie: u64,
    /// 127.0.0.0/8 destinations are looked up as this address (0: not).
    pub loopback_addr: u32,
    pub pad: u32,
}

/// `struct aff_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffKey {
    pub cookie: u64,
    pub svc_id: u32,
    pub pad: u32,
}

/// `struct aff_val`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffVal {
    pub addr: u32,
    pub port: u16,
    pub pad: u16,
}

/// `struct rev_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RevKey {
    pub cookie: u64,
    pub addr: u32,
    pub port: u16,
    pub pad: u16,
}

/// `struct rev_val`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RevVal {
    pub addr: u32,
    pub port: u16,
    pub pad: u16,
}

/// `struct ct_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

/// `struct ct_fwd`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtFwd {
    pub be_addr: u32,
    pub snat_addr: u32,
    pub be_port: u16,
    pub snat_port: u16,
    pub svc_id: u32,
}

/// `struct ct_rev`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtRev {
    pub client_addr: u32,
    pub node_addr: u32,
    pub client_port: u16,
    pub node_port: u16,
    pub pad: u32,
}

pod!(
    SvcKey = 8,
    SvcVal = 12,
    BeKey = 8,
    BeVal = 12,
    BeRefKey = 12,
    AffKey = 16,
    AffVal = 8,
    RevKey = 16,
    RevVal = 8,
    HostCfg = 16,
    CtKey = 16,
    CtFwd = 16,
    CtRev = 16,
);

impl From<ServiceKey> for SvcKey {
    fn from(k: ServiceKey) -> Self {
        Self { addr: addr_to_map(k.addr), port: port_to_map(k.port), proto: k.proto.number(), pad: 0 }
    }
}

impl SvcKey {
    /// Back to the public form; `None` for a protocol shoal never writes.
    pub fn to_service(self) -> Option<ServiceKey> {
        Some(ServiceKey {
            addr: addr_from_map(self.addr),
            port: port_from_map(self.port),
            proto: crate::model::Proto::from_number(self.proto)?,
        })
    }
}

impl From<&Backend> for BeVal {
    fn from(b: &Backend) -> Self {
        Self {
            addr: addr_to_map(*b.addr.ip()),
            port: port_to_map(b.addr.port()),
            flags: if b.local { BE_F_LOCAL } else { 0 },
            snat_addr: b.snat.map(addr_to_map).unwrap_or(0),
        }
    }
}

impl BeVal {
    /// The backend's address.
    pub fn socket_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(addr_from_map(self.addr), port_from_map(self.port))
    }

    /// The backend this value was written for, with `weight`.
    pub fn to_backend(&self, weight: u16) -> Backend {
        Backend {
            addr: self.socket_addr(),
            snat: (self.snat_addr != 0).then(|| addr_from_map(self.snat_addr)),
            local: self.flags & BE_F_LOCAL != 0,
            weight,
        }
    }
}

impl BeRefKey {
    /// Presence key of `addr` in service `svc_id`.
    pub fn new(svc_id: u32, addr: SocketAddrV4) -> Self {
        Self { svc_id, addr: addr_to_map(*addr.ip()), port: port_to_map(addr.port()), pad: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ports_are_stored_in_network_order() {
        let k = SvcKey::from(ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 80));
        // SAFETY: SvcKey is Pod (see pod! above), so viewing it as bytes is sound.
        let bytes: [u8; 8] = unsafe { std::mem::transmute(k) };
        assert_eq!(bytes, [10, 0, 0, 1, 0, 80, 6, 0]);
        assert_eq!(k.to_service(), Some(ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 80)));
    }

    #[test]
    fn ref_values_carry_the_weight_and_old_slot_values_read_as_weight_one() {
        assert_eq!(ref_weight(ref_value(0)), 0);
        assert_eq!(ref_weight(ref_value(7)), 7);
        assert_eq!(ref_weight(ref_value(u16::MAX)), u16::MAX);
        assert_eq!(ref_weight(0), 1);
        assert_eq!(ref_weight(4095), 1);
    }

    #[test]
    fn backend_values_round_trip() {
        let b = Backend::nat(SocketAddrV4::new(Ipv4Addr::new(10, 0, 9, 3), 80), Ipv4Addr::new(10, 0, 9, 250), true).with_weight(5);
        assert_eq!(BeVal::from(&b).to_backend(5), b);
        let v = Backend::new(SocketAddrV4::new(Ipv4Addr::new(10, 0, 9, 4), 80));
        assert_eq!(BeVal::from(&v).to_backend(1), v);
    }
}
