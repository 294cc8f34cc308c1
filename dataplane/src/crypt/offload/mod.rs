//! Kernel offloads for the userspace tunnel ([`super::userspace`]): gotatun moves one packet
//! per kernel crossing on both of its sides; these let the kernel hand over and take
//! super-packets instead. Towards peers: UDP GSO sends ([`udp`]). The TUN device ([`tun`]):
//! reads of TCP super-packets (TSO, and TSO inside VXLAN) cut into segments here
//! ([`segment`]), writes of joined runs ([`batch`]). The cutting and joining are pure; the
//! virtio-net header both carry is [`vnet`].

pub mod batch;
#[cfg(test)]
mod batch_tests;
pub mod segment;
#[cfg(test)]
mod segment_tests;
pub mod tun;
mod tun_write;
pub mod udp;
pub mod vnet;
