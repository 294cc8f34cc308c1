//! Loader of the published-port NAT and the VIP packet path (`tc_nat.bpf.c`).

use std::{collections::BTreeMap, fs, mem::size_of, net::SocketAddrV4, os::fd::AsFd};

use aya::{
    programs::{
        links::{FdLink, LinkOrder},
        tc::{SchedClassifierLink, TcAttachOptions},
        SchedClassifier, TcAttachType,
    },
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
    tc_legacy::{self, Record, TcAttach},
};

const OBJECT: &str = "tc_nat";

/// The two classifiers of the NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TcHook {
    /// `nat_ingress`, on the underlay interface's ingress.
    Ingress,
    /// `nat_reply`, on the overlay bridge's ingress: replies translated
    /// back, and packets to a VIP balanced.
    Reply,
}

impl TcHook {
    /// The program's name.
    pub const fn program(self) -> &'static str {
        match self {
            Self::Ingress => "nat_ingress",
            Self::Reply => "nat_reply",
        }
    }

    pub(crate) const fn pin_name(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Reply => "reply",
        }
    }

    pub(crate) fn from_pin_name(name: &str) -> Option<Self> {
        [Self::Ingress, Self::Reply].into_iter().find(|h| h.pin_name() == name)
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
    /// `Tcx` or `Netlink`.
    mode: TcAttach,
    /// Attachments owned by this process (no pin directory): dropped = detached.
    links: Vec<(TcHook, String, SchedClassifierLink)>,
}

impl TcNat {
    /// Load both classifiers into the kernel (not attached yet) and adopt the
    /// services and tracked flows of pinned maps when `opts.pin_dir` holds them.
    pub fn load(opts: &LoadOptions) -> Result<Self, Error> {
        let Loaded { ebpf, table, pin } = SPEC.load(opts, |ebpf, name| {
            loader::program::<SchedClassifier>(ebpf, OBJECT, name)?.load().map_err(|source| Error::Program { program: name, source })
        })?;
        Ok(Self { ebpf, table, pin, mode: opts.tc_attach.resolve(), links: Vec::new() })
    }

    /// How this NAT attaches: [`TcAttach::Tcx`] or [`TcAttach::Netlink`].
    pub fn attach_mode(&self) -> TcAttach {
        self.mode
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

    /// Attach one classifier to the ingress of `ifname`, taking over the
    /// attachment of an earlier run in place (a pinned tcx link, or our legacy
    /// filter: see `tc_legacy.rs`). Also sets the interface's
    /// `accept_local=1` and `rp_filter=0`: translated packets carry one of
    /// the node's own addresses as source and must pass the route lookup.
    /// Uses the programs already loaded: no verifier pass.
    pub fn attach_hook(&mut self, hook: TcHook, ifname: &str) -> Result<(), Error> {
        let ifindex = ifindex(ifname)?;
        allow_local_source(ifname)?;
        match self.mode {
            TcAttach::Netlink => self.attach_filter(hook, ifname, ifindex)?,
            TcAttach::Tcx | TcAttach::Auto => self.attach_tcx(hook, ifname, ifindex)?,
        }
        tracing::info!(ifname, program = hook.program(), mode = ?self.mode, pinned = self.pin.is_some(), "NAT classifier attached");
        Ok(())
    }

    fn attach_tcx(&mut self, hook: TcHook, ifname: &str, ifindex: u32) -> Result<(), Error> {
        let name = hook.program();
        let attach_err = |source| Error::Attach { program: name, target: ifname.to_owned(), source };
        let pin_path = self.pin.as_ref().map(|p| p.link(hook.pin_name(), ifname));
        let prog = program(&mut self.ebpf, hook)?;
        if let Some(path) = &pin_path {
            let fd = prog.fd().map_err(|source| Error::Program { program: name, source })?;
            if let Adopted::Swapped = pin::adopt_link(path, LinkTarget::Tcx { ifindex }, fd.as_fd())? {
                return Ok(());
            }
        }
        let opts = TcAttachOptions::TcxOrder(LinkOrder::default());
        let id = prog.attach_with_options(ifname, TcAttachType::Ingress, opts).map_err(attach_err)?;
        let link = prog.take_link(id).map_err(attach_err)?;
        match &pin_path {
            Some(path) => {
                let link = FdLink::try_from(link)
                    .map_err(|e| attach_err(aya::programs::ProgramError::IOError(std::io::Error::other(format!("not a tcx link: {e}")))))?;
                pin::pin_link(link, path)?;
            }
            None => self.links.push((hook, ifname.to_owned(), link)),
        }
        Ok(())
    }

    fn attach_filter(&mut self, hook: TcHook, ifname: &str, ifindex: u32) -> Result<(), Error> {
        let prog = program(&mut self.ebpf, hook)?;
        // Recorded first: a filter is never left without the record that lets teardown find it.
        if let Some(pin) = &self.pin {
            tc_legacy::record(pin.dir(), prog, hook, ifname)?;
        }
        let link = tc_legacy::attach(prog, hook, ifname, ifindex)?;
        if self.pin.is_some() {
            // The filter must outlive this process (its record says it is ours): the link holds
            // no descriptor, only (ifindex, priority, handle), and dropping it deletes the filter.
            std::mem::forget(link);
        } else {
            self.links.push((hook, ifname.to_owned(), link));
        }
        Ok(())
    }

    /// Where the classifiers are attached in this network namespace: by this
    /// process, or (with a pin directory) by any run, as pinned links and
    /// filter records say. The value tells whether the attachment is live
    /// (false: its interface went, or was made anew, since).
    pub fn attachments(&self) -> Result<BTreeMap<(TcHook, String), bool>, Error> {
        let mut out: BTreeMap<_, _> = self.links.iter().map(|(h, i, _)| ((*h, i.clone()), true)).collect();
        let Some(pin) = &self.pin else { return Ok(out) };
        let here = tc_legacy::netns()?;
        for name in pin.names() {
            if let Some(r) = Record::parse(&name) {
                if r.netns == here {
                    let live = tc_legacy::is_attached(r.hook, &r.ifname)?;
                    out.insert((r.hook, r.ifname), live);
                }
            } else if let Some((hook, ifname)) = parse_link_pin(&name) {
                let target = sys::obj_get(&pin.dir().join(&name)).and_then(|fd| sys::link_target(fd.as_fd()));
                let live = match (target, ifindex(&ifname)) {
                    (Ok(LinkTarget::Tcx { ifindex: linked }), Ok(now)) => linked == now,
                    _ => false,
                };
                out.insert((hook, ifname), live);
            }
        }
        Ok(out)
    }

    /// Detach one classifier from `ifname` (this process's attachment, the
    /// pinned link, or our legacy filter there), leaving the others.
    pub fn detach_hook(&mut self, hook: TcHook, ifname: &str) -> Result<(), Error> {
        self.links.retain(|(h, i, _)| !(*h == hook && i == ifname));
        let Some(pin) = &self.pin else { return Ok(()) };
        let link = pin.link(hook.pin_name(), ifname);
        if link.exists() {
            let sys_err = |call, source| Error::Sys { call, object: link.display().to_string(), source };
            let fd = sys::obj_get(&link).map_err(|e| sys_err("BPF_OBJ_GET", e))?;
            let gone = matches!(sys::link_target(fd.as_fd()), Ok(LinkTarget::Tcx { ifindex: 0 }));
            if !gone {
                sys::link_detach(fd.as_fd()).map_err(|e| sys_err("BPF_LINK_DETACH", e))?;
            }
            fs::remove_file(&link).map_err(|e| sys_err("unlink pin", e))?;
        }
        let record = Record { hook, netns: tc_legacy::netns()?, ifname: ifname.to_owned() };
        let path = pin.dir().join(record.pin_name());
        if path.exists() {
            tc_legacy::delete(hook, ifname)?;
            fs::remove_file(&path).map_err(|source| Error::Sys { call: "unlink record", object: path.display().to_string(), source })?;
        }
        tracing::info!(ifname, program = hook.program(), "NAT classifier detached");
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

    /// Run one classifier `repeat` times on the same packet
    /// (BPF_PROG_TEST_RUN): the tc verdict, the packet as the last run left
    /// it, and the kernel's mean time per run in nanoseconds.
    pub fn test_run_repeat(&mut self, hook: TcHook, packet: &[u8], repeat: u32) -> Result<(i32, Vec<u8>, u32), Error> {
        let prog = program(&mut self.ebpf, hook)?;
        let fd = prog.fd().map_err(|source| Error::Program { program: hook.program(), source })?;
        let (ret, out, ns) = sys::test_run_repeat(fd.as_fd(), packet, repeat).map_err(|source| Error::Sys {
            call: "BPF_PROG_TEST_RUN",
            object: hook.program().to_owned(),
            source,
        })?;
        Ok((ret as i32, out, ns))
    }

    /// The programmed published ports and VIPs.
    pub fn table(&self) -> &ServiceTable {
        &self.table
    }

    /// Publish a port: `key` is (node address or 0.0.0.0 for all, published port, proto);
    /// or, with [`ServiceOptions::vip`], a VIP (usually on [`crate::ANY_PORT`]) balanced on
    /// the overlay bridge for packets no socket hook translated.
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
    /// Legacy filters recorded from another network namespace are left to
    /// that namespace (deleting it removes them); only their records go.
    pub fn teardown(self) -> Vec<Error> {
        let Self { ebpf, table, pin, links, mode: _ } = self;
        drop(links);
        let mut errors = Vec::new();
        if let Some(pin) = &pin {
            let here = tc_legacy::netns();
            for r in pin.names().iter().filter_map(|n| Record::parse(n)) {
                match &here {
                    Ok(here) if *here == r.netns => {
                        if let Err(e) = tc_legacy::delete(r.hook, &r.ifname) {
                            errors.push(e);
                        }
                    }
                    _ => tracing::info!(
                        ifname = r.ifname,
                        netns = r.netns,
                        "tc filter recorded in another network namespace: record removed"
                    ),
                }
            }
        }
        errors.extend(Loaded { ebpf, table, pin }.teardown());
        errors
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

/// (hook, ifname) of a pinned link's name `link_<hook>_<ifname>`.
fn parse_link_pin(name: &str) -> Option<(TcHook, String)> {
    let (hook, ifname) = name.strip_prefix("link_")?.split_once('_')?;
    Some((TcHook::from_pin_name(hook)?, ifname.replace(':', ".")))
}

pub(crate) fn ifindex(ifname: &str) -> Result<u32, Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pins_name_their_hook_and_interface() {
        assert_eq!(parse_link_pin("link_reply_shb-4097"), Some((TcHook::Reply, "shb-4097".into())));
        assert_eq!(parse_link_pin("link_ingress_eth0:5"), Some((TcHook::Ingress, "eth0.5".into())));
        assert_eq!(parse_link_pin("link_egress_eth0"), None);
        assert_eq!(parse_link_pin("nat_ct"), None);
    }
}
