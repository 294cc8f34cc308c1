//! IPsec for encrypted overlays (`--opt encrypted=ipsec`): ESP in transport mode over XFRM,
//! between the nodes' underlay addresses, on IPsec networks' own VXLAN port. [`plan`] is pure
//! (desired SAs and policies, the diff, rotation steps), [`derive`] computes the per-pair keys
//! and SPIs both ends agree on, [`xfrm`] encodes and decodes XFRM netlink messages, and
//! [`kernel`] applies a plan.

pub mod derive;
pub mod kernel;
#[cfg(test)]
mod kernel_tests;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod xfrm;
