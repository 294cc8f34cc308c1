//! eBPF programs (C, built by clang) and their aya loader: socket-level VIP
//! load balancing ([`SockLb`]) and tc NAT for published ports and for VIP
//! packets no socket hook translated ([`TcNat`]).
//!
//! # Map layout (`ebpf/lib/types.h`, mirrored in [`maps`])
//! Both objects keep services the same way; addresses and ports are stored
//! in network byte order.
//! - `*_svc`: (addr, port, proto) -> (id, count, local_count, flags). For the
//!   NAT, addr 0.0.0.0 is "every node address". Port [`ANY_PORT`] (0) is
//!   "every port of this address" (a VIP, looked up when the exact port
//!   misses), and a backend on port 0 gets the port the client asked for.
//!   The NAT also holds a copy of each VIP tagged `SVC_F_VIP`
//!   ([`ServiceOptions::vip`]): `nat_reply` balances packets to it on the
//!   overlay bridge (processes outside the task cgroup), `nat_ingress` never.
//! - `*_be`: (id, slot) -> (ip, port, flags, snat ip). Slots `0..count` are
//!   dense and a backend holds as many as its weight asks
//!   ([`plan::slot_counts`]), so a random slot is a weighted choice (Cilium's
//!   random selection does the same); local NAT backends are listed again at
//!   slots `SLOT_LOCAL | 0..local_count`; drained (weight 0) backends hold no
//!   selection slot, only a parked one (`SLOT_PARKED | i`) no program reads.
//! - `*_be_ref`: (id, ip, port) -> `REF_WEIGHTED | weight`: is a backend
//!   still in the service (tracked flows and UDP sockets stay on it while so)?
//! - `sock_aff` (LRU): (socket cookie, id) -> backend, UDP affinity.
//! - `sock_rev` (LRU): (socket cookie, backend ip, port) -> VIP, for
//!   recvmsg4/getpeername4.
//! - `sock_host` (array of one): the node whose own processes the root-cgroup
//!   hooks balance (its network namespace cookie; the address 127.0.0.0/8
//!   stands for). See [`SockLb::attach_host`]: those hooks run for every
//!   process of the machine and return at once outside that namespace.
//! - `nat_ct` (LRU): client 5-tuple -> (backend, SNAT ip:port, id), for
//!   published ports and VIPs alike. Only a TCP SYN without ACK opens a flow,
//!   and on the underlay not a UDP packet a connected local socket owns.
//! - `nat_rev` (LRU): backend reply 5-tuple -> (client, node ip or VIP:port).
//!
//! One backend change of weight 1 is a handful of map writes (an add: 3, or
//! 4 for a local NAT backend; a weight w: w slot writes), whatever the number
//! of services, planned by [`plan::LbTable`] without touching the kernel and
//! applied in an order the programs can read at any point.
//!
//! # Pinning and restarts
//! With [`LoadOptions::pin_dir`] (a directory on a bpffs, see
//! [`ensure_bpffs`]), maps and attachments (bpf links) are pinned there. The
//! programs then keep running when the agent exits; the next
//! `load` reuses the pinned maps (services, UDP affinity, NAT flows) and
//! `attach` swaps the new programs into the pinned links atomically
//! (`BPF_LINK_UPDATE`). `teardown` detaches and unpins everything.
//!
//! Kernels without tcx links (< 6.6) get the NAT as legacy cls_bpf filters
//! at shoal's own tc priority and handles instead ([`TcAttach`]): filters
//! outlive the process by themselves, a new agent swaps its program into
//! the same filter in place, and a pinned record per filter tells teardown
//! which to delete (see `tc_legacy.rs`).

pub mod bench;
mod error;
mod loader;
pub mod maps;
mod model;
mod objects;
mod pin;
pub mod plan;
mod probe;
mod service_table;
mod sock_lb;
pub mod sys;
mod tc_legacy;
mod tc_nat;

pub use error::Error;
pub use loader::LoadOptions;
pub use model::{Backend, Proto, ServiceKey, ServiceOptions, ANY_PORT};
pub use pin::{ensure_bpffs, is_bpffs};
pub use probe::{cgroup2_mount, probe, LbUnsupported, PartUnavailable, Probe, Support};
pub use service_table::ServiceTable;
pub use sock_lb::SockLb;
pub use tc_legacy::{TcAttach, PRIORITY as TC_PRIORITY};
pub use tc_nat::{TcHook, TcNat};
