//! Loader of the socket-level VIP load balancer (`sock_lb.bpf.c`).

use std::{
    fs::File,
    net::SocketAddrV4,
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::Path,
};

use aya::{
    programs::{links::FdLink, CgroupAttachMode, CgroupSockAddr},
    Ebpf,
};

use crate::{
    error::Error,
    loader::{self, LoadOptions, MapSpec},
    maps::{self, AffKey, AffVal, BeKey, BeRefKey, BeVal, RevKey, RevVal, SvcKey, SvcVal},
    model::{Backend, ServiceKey, ServiceOptions},
    objects,
    pin::{self, Adopted, PinDir},
    service_table::ServiceTable,
    sys::LinkTarget,
};

const OBJECT: &str = "sock_lb";

/// (program, hook name used in pin names).
const PROGRAMS: [(&str, &str); 4] = [
    ("shoal_connect4", "connect4"),
    ("shoal_sendmsg4", "sendmsg4"),
    ("shoal_recvmsg4", "recvmsg4"),
    ("shoal_getpeer4", "getpeername4"),
];

use std::mem::size_of;

pub(crate) const MAPS: [MapSpec; 5] = [
    MapSpec { name: maps::sock::SVC, key: size_of::<SvcKey>(), value: size_of::<SvcVal>(), size: |o| o.max_services },
    MapSpec { name: maps::sock::BE, key: size_of::<BeKey>(), value: size_of::<BeVal>(), size: |o| o.max_backends },
    MapSpec { name: maps::sock::BE_REF, key: size_of::<BeRefKey>(), value: 4, size: |o| o.max_backends },
    MapSpec { name: maps::sock::AFF, key: size_of::<AffKey>(), value: size_of::<AffVal>(), size: |o| o.max_flows },
    MapSpec { name: maps::sock::REV, key: size_of::<RevKey>(), value: size_of::<RevVal>(), size: |o| o.max_flows },
];

/// The socket-level load balancer: connections to a VIP go straight to a
/// backend, chosen at connect (TCP) or send (UDP) time.
pub struct SockLb {
    ebpf: Ebpf,
    table: ServiceTable,
    pin: Option<PinDir>,
    /// Links owned by this process (no pin directory): dropped = detached.
    links: Vec<FdLink>,
}

impl SockLb {
    /// Load the programs into the kernel (not attached yet) and adopt the
    /// services of pinned maps when `opts.pin_dir` holds them.
    pub fn load(opts: &LoadOptions) -> Result<Self, Error> {
        let pin = opts.pin_dir.as_deref().map(|d| PinDir::create(d, "sock")).transpose()?;
        let mut ebpf = loader::load(OBJECT, objects::SOCK_LB, &MAPS, opts, pin.as_ref())?;
        for (name, _) in PROGRAMS {
            let prog = program(&mut ebpf, name)?;
            prog.load().map_err(|source| Error::Program { program: name, source })?;
        }
        let table = ServiceTable::adopt(
            &mut ebpf,
            [maps::sock::SVC, maps::sock::BE, maps::sock::BE_REF],
            opts.limits(),
        )?;
        Ok(Self { ebpf, table, pin, links: Vec::new() })
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
        let target = cgroup.display().to_string();
        let dir = File::open(cgroup).map_err(|source| Error::Sys { call: "open cgroup", object: target.clone(), source })?;
        let cgroup_id = dir
            .metadata()
            .map_err(|source| Error::Sys { call: "stat cgroup", object: target.clone(), source })?
            .ino();
        for (name, hook) in PROGRAMS {
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
        tracing::info!(cgroup = %target, pinned = self.pin.is_some(), "socket LB attached");
        Ok(())
    }

    /// The programmed services.
    pub fn table(&self) -> &ServiceTable {
        &self.table
    }

    /// Create a VIP service (no backends yet); options are ignored here.
    pub fn upsert_service(&mut self, key: ServiceKey) -> Result<(), Error> {
        self.table.upsert_service(key, ServiceOptions::default())
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
        let Self { ebpf, table, pin, links } = self;
        drop(links);
        drop(table);
        drop(ebpf);
        pin.map(|p| p.remove()).unwrap_or_default()
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut CgroupSockAddr, Error> {
    ebpf.program_mut(name)
        .ok_or(Error::MissingProgram { object: OBJECT, program: name })?
        .try_into()
        .map_err(|source| Error::Program { program: name, source })
}
