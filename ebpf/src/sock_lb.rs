//! Loader of the socket-level VIP load balancer (`sock_lb.bpf.c`).
//!
//! # The root cgroup (node-local clients)
//! [`SockLb::attach_host`] attaches a second set of hooks to the ROOT of the
//! cgroup v2 hierarchy, as Cilium's socket LB does, so that the node's own
//! processes (which run in no shoal cgroup) are balanced too: `curl VIP`,
//! `curl 127.0.0.1:5000` and `curl <node address>:5000` on the node reach the
//! service's tasks, as Docker's routing mesh answers `curl localhost:5000`.
//!
//! **Every process of the machine runs these hooks**, whatever its network
//! namespace, so they are written to be inert elsewhere: each first compares
//! `bpf_get_netns_cookie()` of the socket with the node's namespace cookie
//! (written to `sock_host` before the hooks are attached) and returns "allow,
//! unchanged" at once on any other namespace. Processes of the host and of
//! other nodes (other labs on the same machine) are never translated; a
//! namespace cookie is never reused, so hooks left behind by a node whose
//! namespace is gone are inert too. The links are pinned per instance
//! (`sock/link_host_<hook>_<root cgroup id>`); [`SockLb::teardown`] detaches
//! exactly those pinned links, never another program on the root cgroup.

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddrV4},
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::Path,
};

use aya::{
    maps::{Array, MapData},
    programs::{links::FdLink, CgroupAttachMode, CgroupSockAddr},
    Ebpf,
};

use crate::{
    error::Error,
    loader::{self, LoadOptions, Loaded, MapSpec, ObjectSpec},
    maps::{self, addr_to_map, AffKey, AffVal, HostCfg, RevKey, RevVal},
    model::{Backend, ServiceKey, ServiceOptions},
    objects,
    pin::{self, Adopted, PinDir},
    service_table::ServiceTable,
    sys::{self, LinkTarget},
};

const OBJECT: &str = "sock_lb";

/// Hooks for the tasks' cgroup: (program, hook name used in pin names).
const TASK_PROGRAMS: [(&str, &str); 4] =
    [("shoal_connect4", "connect4"), ("shoal_sendmsg4", "sendmsg4"), ("shoal_recvmsg4", "recvmsg4"), ("shoal_getpeer4", "getpeername4")];

/// Hooks for the root cgroup, inert outside the node's network namespace.
const HOST_PROGRAMS: [(&str, &str); 4] = [
    ("shoal_host_connect4", "host_connect4"),
    ("shoal_host_sendmsg4", "host_sendmsg4"),
    ("shoal_host_recvmsg4", "host_recvmsg4"),
    ("shoal_host_getpeer4", "host_getpeername4"),
];

use std::mem::size_of;

/// The object: its service maps (`sock_*`), these, and both sets of hooks.
const SPEC: ObjectSpec = ObjectSpec {
    name: OBJECT,
    bytes: objects::SOCK_LB,
    pin_subdir: "sock",
    service_maps: maps::sock::SERVICE,
    other_maps: &MAPS,
    programs: &[
        TASK_PROGRAMS[0].0,
        TASK_PROGRAMS[1].0,
        TASK_PROGRAMS[2].0,
        TASK_PROGRAMS[3].0,
        HOST_PROGRAMS[0].0,
        HOST_PROGRAMS[1].0,
        HOST_PROGRAMS[2].0,
        HOST_PROGRAMS[3].0,
    ],
};

const MAPS: [MapSpec; 3] = [
    MapSpec { name: maps::sock::AFF, key: size_of::<AffKey>(), value: size_of::<AffVal>(), size: |o| o.max_flows },
    MapSpec { name: maps::sock::REV, key: size_of::<RevKey>(), value: size_of::<RevVal>(), size: |o| o.max_flows },
    MapSpec { name: maps::sock::HOST, key: 4, value: size_of::<HostCfg>(), size: |_| 1 },
];

/// The socket-level load balancer: connections to a VIP go straight to a
/// backend, chosen at connect (TCP) or send (UDP) time.
pub struct SockLb {
    ebpf: Ebpf,
    table: ServiceTable,
    host: Array<MapData, HostCfg>,
    pin: Option<PinDir>,
    /// Links owned by this process (no pin directory): dropped = detached.
    links: Vec<FdLink>,
}

impl SockLb {
    /// Load the programs into the kernel (not attached yet) and adopt the
    /// services of pinned maps when `opts.pin_dir` holds them.
    pub fn load(opts: &LoadOptions) -> Result<Self, Error> {
        let Loaded { mut ebpf, table, pin } =
            SPEC.load(opts, |ebpf, name| program(ebpf, name)?.load().map_err(|source| Error::Program { program: name, source }))?;
        let host = ebpf
            .take_map(maps::sock::HOST)
            .ok_or(Error::Map { map: maps::sock::HOST, source: aya::maps::MapError::InvalidName { name: maps::sock::HOST.into() } })?;
        let host = Array::try_from(host).map_err(|source| Error::Map { map: maps::sock::HOST, source })?;
        Ok(Self { ebpf, table, host, pin, links: Vec::new() })
    }

    /// [`SockLb::attach_cgroup`], chained.
    pub fn attach(mut self, cgroup: &Path) -> Result<Self, Error> {
        self.attach_cgroup(cgroup)?;
        Ok(self)
    }

    /// Attach the four hooks to a cgroup v2 directory: every process in it
    /// (and its descendants) gets VIP translation. Links always coexist with
    /// other programs on the cgroup (the kernel attaches links as multi). With a pin directory, a
    /// pinned attachment from an earlier run is taken over in place.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<(), Error> {
        self.attach_hooks(&TASK_PROGRAMS, cgroup)?;
        tracing::info!(cgroup = %cgroup.display(), pinned = self.pin.is_some(), "socket LB attached");
        Ok(())
    }

    /// Balance the node's own processes too: attach the netns-filtered hooks
    /// to `cgroup_root` (the root of the cgroup v2 hierarchy, which every
    /// process of the machine is under). Only sockets of the calling thread's
    /// network namespace (the node's) are ever translated; see the module
    /// docs. With `published_addr` (the node's address that published ports
    /// are served on), destinations in 127.0.0.0/8 are looked up as that
    /// address, so `127.0.0.1:<published port>` reaches the service.
    pub fn attach_host(&mut self, cgroup_root: &Path, published_addr: Option<Ipv4Addr>) -> Result<(), Error> {
        let netns_cookie = sys::netns_cookie().map_err(|source| Error::Sys {
            call: "getsockopt SO_NETNS_COOKIE",
            object: "this network namespace".into(),
            source,
        })?;
        let cfg = HostCfg { netns_cookie, loopback_addr: published_addr.map(addr_to_map).unwrap_or(0), pad: 0 };
        // Written before any hook runs: a hook never sees a half-made node.
        self.host.set(0, cfg, 0).map_err(|source| Error::Map { map: maps::sock::HOST, source })?;
        self.attach_hooks(&HOST_PROGRAMS, cgroup_root)?;
        tracing::info!(
            cgroup = %cgroup_root.display(),
            netns_cookie,
            ?published_addr,
            pinned = self.pin.is_some(),
            "socket LB attached for the node's own processes (root cgroup, filtered by network namespace)"
        );
        Ok(())
    }

    /// What the root-cgroup hooks serve, as the last [`SockLb::attach_host`]
    /// wrote it (by this process or, from the pinned map, an earlier one):
    /// (network namespace cookie, published address). `None` before any.
    pub fn host_node(&self) -> Result<Option<(u64, Option<Ipv4Addr>)>, Error> {
        let cfg = self.host.get(&0, 0).map_err(|source| Error::Map { map: maps::sock::HOST, source })?;
        Ok((cfg.netns_cookie != 0).then(|| (cfg.netns_cookie, (cfg.loopback_addr != 0).then(|| maps::addr_from_map(cfg.loopback_addr)))))
    }

    fn attach_hooks(&mut self, programs: &[(&'static str, &'static str)], cgroup: &Path) -> Result<(), Error> {
        let target = cgroup.display().to_string();
        let dir = File::open(cgroup).map_err(|source| Error::Sys { call: "open cgroup", object: target.clone(), source })?;
        let cgroup_id = dir.metadata().map_err(|source| Error::Sys { call: "stat cgroup", object: target.clone(), source })?.ino();
        for &(name, hook) in programs {
            let prog = program(&mut self.ebpf, name)?;
            let pin_path = self.pin.as_ref().map(|p| p.link(hook, &cgroup_id.to_string()));
            if let Some(path) = &pin_path {
                let fd = prog.fd().map_err(|source| Error::Program { program: name, source })?;
                if let Adopted::Swapped = pin::adopt_link(path, LinkTarget::Cgroup { cgroup_id }, fd.as_fd())? {
                    continue;
                }
            }
            let attach_err = |source| Error::Attach { program: name, target: target.clone(), source };
            let id = prog.attach(&dir, CgroupAttachMode::Single).map_err(attach_err)?;
            let link = prog.take_link(id).map_err(attach_err)?;
            let link = FdLink::try_from(link)
                .map_err(|e| attach_err(aya::programs::ProgramError::IOError(std::io::Error::other(e.to_string()))))?;
            match &pin_path {
                Some(path) => pin::pin_link(link, path)?,
                None => self.links.push(link),
            }
        }
        Ok(())
    }

    /// The programmed services.
    pub fn table(&self) -> &ServiceTable {
        &self.table
    }

    /// Create a service (no backends yet) or change its options: a VIP, or
    /// with [`ServiceOptions::published`] a published port (node address and
    /// port) for node-local clients. With `keep_client_ip`, new connections
    /// prefer a local backend.
    pub fn upsert_service(&mut self, key: ServiceKey, opts: ServiceOptions) -> Result<(), Error> {
        self.table.upsert_service(key, opts)
    }

    /// Remove a VIP service. Connections to the VIP then go to the VIP itself.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<(), Error> {
        self.table.remove_service(key)
    }

    /// Make the backends of `key` exactly `backends` (healthy tasks only);
    /// O(1) map writes per backend added or removed. Returns the write count.
    pub fn set_backends(&mut self, key: &ServiceKey, backends: &[Backend]) -> Result<usize, Error> {
        self.table.set_backends(key, backends)
    }

    /// Add or update one backend.
    pub fn add_backend(&mut self, key: &ServiceKey, backend: Backend) -> Result<usize, Error> {
        self.table.add_backend(key, backend)
    }

    /// Remove one backend: no new connection goes to it; established TCP
    /// connections are untouched; UDP sockets that used it move to another
    /// backend on their next send.
    pub fn remove_backend(&mut self, key: &ServiceKey, addr: SocketAddrV4) -> Result<usize, Error> {
        self.table.remove_backend(key, addr)
    }

    /// Detach everything and remove the pins (the maps go with the last
    /// reference). Keeps going on errors and returns them all.
    pub fn teardown(self) -> Vec<Error> {
        let Self { ebpf, table, host, pin, links } = self;
        drop(links);
        drop(host);
        Loaded { ebpf, table, pin }.teardown()
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut CgroupSockAddr, Error> {
    loader::program(ebpf, OBJECT, name)
}
