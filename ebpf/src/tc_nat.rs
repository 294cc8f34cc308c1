//! Loader of the published-port NAT (`tc_nat.bpf.c`).

use std::{fs, mem::size_of, net::SocketAddrV4, os::fd::AsFd};

use aya::{
    programs::{links::FdLink, tc, tc::SchedClassifierLink, SchedClassifier, TcAttachType},
    util::KernelVersion,
    Ebpf,
};

use crate::{
    error::Error,
    loader::{self, LoadOptions, Loaded, MapSpec, ObjectSpec},
    maps::{self, CtFwd, CtKey, CtRev},
    model::{Backend, ServiceKey, ServiceOptions},
    objects,
    pin::{self, Adopted, PinDir},
    service_table::ServiceTable,
    sys::{self, LinkTarget},
};

const OBJECT: &str = "tc_nat";

/// The two classifiers of the NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcHook {
    /// `nat_ingress`, on the underlay interface's ingress.
    Ingress,
    /// `nat_reply`, on the overlay bridge's ingress.
    Reply,
}

impl TcHook {
    const fn program(self) -> &'static str {
        match self {
            Self::Ingress => "nat_ingress",
            Self::Reply => "nat_reply",
        }
    }

    const fn pin_name(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Reply => "reply",
        }
    }
}

/// The object: its service maps (`nat_*`), the flow tables, both classifiers.
const SPEC: ObjectSpec = ObjectSpec {
    name: OBJECT,
    bytes: objects::TC_NAT,
    pin_subdir: "nat",
    service_maps: maps::nat::SERVICE,
    other_maps: &MAPS,
    programs: &[TcHook::Ingress.program(), TcHook::Reply.program()],
};

const MAPS: [MapSpec; 2] = [
    MapSpec { name: maps::nat::CT, key: size_of::<CtKey>(), value: size_of::<CtFwd>(), size: |o| o.max_flows },
    MapSpec { name: maps::nat::REV, key: size_of::<CtKey>(), value: size_of::<CtRev>(), size: |o| o.max_flows },
];

/// The routing-mesh NAT for published ports.
pub struct TcNat {
    ebpf: Ebpf,
    table: ServiceTable,
    pin: Option<PinDir>,
    /// Links owned by this process (no pin directory): dropped = detached.
    links: Vec<SchedClassifierLink>,
}

impl TcNat {
    /// Load both classifiers into the kernel (not attached yet) and adopt the
    /// services and tracked flows of pinned maps when `opts.pin_dir` holds them.
    pub fn load(opts: &LoadOptions) -> Result<Self, Error> {
        let Loaded { ebpf, table, pin } = SPEC.load(opts, |ebpf, name| {
            loader::program::<SchedClassifier>(ebpf, OBJECT, name)?
                .load()
                .map_err(|source| Error::Program { program: name, source })
        })?;
        Ok(Self { ebpf, table, pin, links: Vec::new() })
    }

    /// Attach `nat_ingress` to the ingress of the node's underlay interface
    /// (in the calling thread's network namespace), chained.
    pub fn attach_ingress(mut self, underlay: &str) -> Result<Self, Error> {
        self.attach_hook(TcHook::Ingress, underlay)?;
        Ok(self)
    }

    /// Attach `nat_reply` to the ingress of an overlay bridge, chained.
    pub fn attach_reply(mut self, bridge: &str) -> Result<Self, Error> {
        self.attach_hook(TcHook::Reply, bridge)?;
        Ok(self)
    }

    /// Attach one classifier to the ingress of `ifname`, taking over a pinned
    /// attachment from an earlier run in place. Also sets the interface's
    /// `accept_local=1` and `rp_filter=0`: translated packets carry one of
    /// the node's own addresses as source and must pass the route lookup.
    pub fn attach_hook(&mut self, hook: TcHook, ifname: &str) -> Result<(), Error> {
        let name = hook.program();
        let attach_err = |source| Error::Attach { program: name, target: ifname.to_owned(), source };
        let ifindex = ifindex(ifname)?;
        allow_local_source(ifname)?;
        let pin_path = self.pin.as_ref().map(|p| p.link(hook.pin_name(), ifname));
        let prog = program(&mut self.ebpf, hook)?;
        if let Some(path) = &pin_path {
            let fd = prog.fd().map_err(|source| Error::Program { program: name, source })?;
            if let Adopted::Swapped = pin::adopt_link(path, LinkTarget::Tcx { ifindex }, fd.as_fd())? {
                return Ok(());
            }
        }
        if KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0)) {
            match tc::qdisc_add_clsact(ifname) {
                Ok(()) | Err(tc::TcError::AlreadyAttached) => {}
                Err(e) => return Err(attach_err(e.into())),
            }
        }
        let id = prog.attach(ifname, TcAttachType::Ingress).map_err(attach_err)?;
        let link = prog.take_link(id).map_err(attach_err)?;
        match &pin_path {
            Some(path) => {
                let link = FdLink::try_from(link).map_err(|e| {
                    attach_err(aya::programs::ProgramError::IOError(std::io::Error::other(format!(
                        "cannot pin a netlink tc attachment (kernel < 6.6 has no tcx links): {e}"
                    ))))
                })?;
                pin::pin_link(link, path)?;
            }
            None => self.links.push(link),
        }
        tracing::info!(ifname, program = name, pinned = self.pin.is_some(), "NAT classifier attached");
        Ok(())
    }

    /// Run one classifier on a packet (BPF_PROG_TEST_RUN), as if it arrived
    /// on an interface: returns the tc verdict and the packet as it leaves.
    pub fn test_run(&mut self, hook: TcHook, packet: &[u8]) -> Result<(i32, Vec<u8>), Error> {
        let prog = program(&mut self.ebpf, hook)?;
        let fd = prog.fd().map_err(|source| Error::Program { program: hook.program(), source })?;
        let (ret, out) = sys::test_run(fd.as_fd(), packet).map_err(|source| Error::Sys {
            call: "BPF_PROG_TEST_RUN",
            object: hook.program().to_owned(),
            source,
        })?;
        Ok((ret as i32, out))
    }

    /// The programmed published ports.
    pub fn table(&self) -> &ServiceTable {
        &self.table
    }

    /// Publish a port: `key` is (node address or 0.0.0.0 for all, published port, proto).
    pub fn upsert_service(&mut self, key: ServiceKey, opts: ServiceOptions) -> Result<(), Error> {
        self.table.upsert_service(key, opts)
    }

    /// Unpublish a port. Tracked flows keep their translation until they age out.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<(), Error> {
        self.table.remove_service(key)
    }

    /// Make the backends of `key` exactly `backends`; each needs its SNAT
    /// address ([`Backend::nat`]). O(1) map writes per backend change.
    pub fn set_backends(&mut self, key: &ServiceKey, backends: &[Backend]) -> Result<usize, Error> {
        for b in backends {
            check_snat(key, b)?;
        }
        self.table.set_backends(key, backends)
    }

    /// Add or update one backend.
    pub fn add_backend(&mut self, key: &ServiceKey, backend: Backend) -> Result<usize, Error> {
        check_snat(key, &backend)?;
        self.table.add_backend(key, backend)
    }

    /// Remove one backend: new flows avoid it, tracked TCP flows to it keep
    /// going, tracked UDP flows move to another backend.
    pub fn remove_backend(&mut self, key: &ServiceKey, addr: SocketAddrV4) -> Result<usize, Error> {
        self.table.remove_backend(key, addr)
    }

    /// Detach everything and remove the pins. Keeps going on errors and
    /// returns them all.
    pub fn teardown(self) -> Vec<Error> {
        let Self { ebpf, table, pin, links } = self;
        drop(links);
        Loaded { ebpf, table, pin }.teardown()
    }
}

fn check_snat(key: &ServiceKey, b: &Backend) -> Result<(), Error> {
    match b.snat {
        Some(ip) if !ip.is_unspecified() => Ok(()),
        _ => Err(Error::MissingSnat { service: *key, backend: b.addr }),
    }
}

fn program(ebpf: &mut Ebpf, hook: TcHook) -> Result<&mut SchedClassifier, Error> {
    loader::program(ebpf, OBJECT, hook.program())
}

fn ifindex(ifname: &str) -> Result<u32, Error> {
    let err = |source| Error::Sys { call: "if_nametoindex", object: ifname.to_owned(), source };
    let c = std::ffi::CString::new(ifname).map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(idx)
}

fn allow_local_source(ifname: &str) -> Result<(), Error> {
    for (knob, value) in [("accept_local", "1"), ("rp_filter", "0")] {
        let path = format!("/proc/sys/net/ipv4/conf/{ifname}/{knob}");
        fs::write(&path, value).map_err(|source| Error::Sys { call: "write sysctl", object: path.clone(), source })?;
    }
    let all = fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter").unwrap_or_default();
    if all.trim() == "1" {
        tracing::warn!(ifname, "net.ipv4.conf.all.rp_filter=1 (strict) drops NATed packets; set it to 0 or 2");
    }
    Ok(())
}
