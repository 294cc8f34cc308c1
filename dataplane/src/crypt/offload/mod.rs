//! Kernel offloads for the userspace tunnel ([`super::userspace`]): gotatun moves one packet
//! per kernel crossing on both of its sides; these join packets into the kernel's
//! super-packets, UDP GSO towards peers ([`udp`]) and UDP segmentation into the TUN device
//! ([`tun`]). What to join is decided in [`batch`], apart from the I/O.

pub mod batch;
#[cfg(test)]
mod batch_tests;
pub mod tun;
pub mod udp;
