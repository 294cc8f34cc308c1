//! Errors of the eBPF load balancers. Each variant names the object it failed on.

use std::{io, net::SocketAddrV4, path::PathBuf};

use crate::model::ServiceKey;

/// Anything that can go wrong loading, attaching or programming the eBPF LB.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object could not be loaded (map creation, ELF parsing).
    #[error("loading eBPF object {object}: {source}")]
    Load {
        /// `sock_lb` or `tc_nat`.
        object: &'static str,
        /// aya's error.
        #[source]
        source: aya::EbpfError,
    },
    /// A program is missing from the embedded object (a build problem).
    #[error("eBPF object {object} has no program {program}")]
    MissingProgram {
        /// Object name.
        object: &'static str,
        /// Program name.
        program: &'static str,
    },
    /// A map is missing or has the wrong type.
    #[error("map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// aya's error.
        #[source]
        source: aya::maps::MapError,
    },
    /// The kernel refused a program (the verifier log is in the source).
    #[error("program {program}: {source}")]
    Program {
        /// Program name.
        program: &'static str,
        /// aya's error, with the verifier log for load failures.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Attaching a program failed.
    #[error("attaching {program} to {target}: {source}")]
    Attach {
        /// Program name.
        program: &'static str,
        /// Cgroup path or interface name.
        target: String,
        /// aya's error.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Our tc filter slot on an interface holds a filter that is not ours.
    #[error(
        "tc filter priority {priority} handle {handle} on the ingress of {target} is {holder}'s, not shoal's; \
         delete it (tc filter del dev {target} ingress prio {priority} handle {handle} bpf) or use tcx (kernel 6.6+)"
    )]
    FilterTaken {
        /// Interface name.
        target: String,
        /// The priority shoal uses.
        priority: u16,
        /// The handle shoal uses for this hook.
        handle: u32,
        /// The name (or classifier kind) of the filter found.
        holder: String,
    },
    /// A raw bpf(2) call or file operation failed.
    #[error("{call} on {object}: {source}")]
    Sys {
        /// What was called.
        call: &'static str,
        /// What it was called on.
        object: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A pinned map from an earlier run does not have the layout this build expects.
    #[error(
        "pinned map {path} has key/value sizes {found:?}, this build expects {expected:?}; \
         remove the pin directory {dir} to start fresh (tracked flows are lost)"
    )]
    PinnedLayout {
        /// The pinned map.
        path: PathBuf,
        /// The pin directory to remove.
        dir: PathBuf,
        /// (key, value) sizes found.
        found: (u32, u32),
        /// (key, value) sizes expected.
        expected: (u32, u32),
    },
    /// A service was used before `upsert_service`.
    #[error("service {service} does not exist; call upsert_service first")]
    UnknownService {
        /// The service.
        service: ServiceKey,
    },
    /// No service id left.
    #[error("cannot add service {service}: {max} services are programmed (raise LoadOptions::max_services)")]
    ServiceTableFull {
        /// The service.
        service: ServiceKey,
        /// The limit.
        max: u32,
    },
    /// Too many backends for one service.
    #[error("service {service}: more than {max} backends (raise LoadOptions::max_backends_per_service)")]
    TooManyBackends {
        /// The service.
        service: ServiceKey,
        /// The limit.
        max: u16,
    },
    /// The same backend address was given twice.
    #[error("service {service}: backend {backend} is listed twice")]
    DuplicateBackend {
        /// The service.
        service: ServiceKey,
        /// The duplicate.
        backend: SocketAddrV4,
    },
    /// A NAT backend without its SNAT address.
    #[error(
        "published port {service}: backend {backend} has no SNAT address; give the node's LB \
         address on the backend's network (Backend::nat)"
    )]
    MissingSnat {
        /// The service.
        service: ServiceKey,
        /// The backend.
        backend: SocketAddrV4,
    },
    /// A kernel map write failed; the service will be rewritten whole on its next change.
    #[error("service {service}: writing {map}: {source}")]
    MapWrite {
        /// The service being changed.
        service: ServiceKey,
        /// Map name.
        map: &'static str,
        /// aya's error.
        #[source]
        source: aya::maps::MapError,
    },
}
