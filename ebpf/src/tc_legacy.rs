//! Attaching the NAT's classifiers the legacy way, for kernels without tcx
//! links (< 6.6, e.g. Debian 12's 6.1): a cls_bpf filter (direct action) on
//! the interface's clsact qdisc.
//!
//! A filter lives in the kernel until it is deleted or its interface goes,
//! whatever happens to the process that added it, so there is nothing to pin
//! for it to survive a restart. shoal owns one slot per hook: priority
//! [`PRIORITY`] with handle 1 (`nat_ingress`) or 2 (`nat_reply`).
//! - Attach: the filter already in our slot, when it runs a program of ours
//!   (its name), gets the new program in place (RTM_NEWTFILTER without
//!   NLM_F_CREATE on the same priority and handle: cls_bpf swaps the program
//!   under RCU, no packet sees a gap); a free slot gets a new filter; a slot
//!   holding someone else's filter is an error. Repeated opens never stack.
//! - Record: with a pin directory, the program is also pinned at
//!   `tcf_<hook>_<netns cookie>_<ifname>` (see [`Record`]): that is how
//!   teardown and rewire know which interfaces shoal attached to, in which
//!   network namespace.
//! - Detach: delete the filter at our slot on that interface, only when run
//!   from the same network namespace and the filter there is ours by name.

use std::os::fd::AsFd;

use aya::programs::{
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    SchedClassifier, TcAttachType,
};

use crate::{
    error::Error,
    sys::{self, TcFilter},
    tc_nat::TcHook,
};

/// How the NAT's classifiers are attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TcAttach {
    /// tcx links when the kernel has them (6.6 and later), else netlink filters.
    #[default]
    Auto,
    /// tcx links (BPF_LINK_CREATE), pinned with the maps.
    Tcx,
    /// Legacy cls_bpf filters on a clsact qdisc (every kernel since 4.5).
    Netlink,
}

impl TcAttach {
    /// `Tcx` or `Netlink`: what `Auto` means on the running kernel.
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto => {
                let tcx = aya::util::KernelVersion::current().map_or(true, |v| v >= aya::util::KernelVersion::new(6, 6, 0));
                if tcx {
                    Self::Tcx
                } else {
                    Self::Netlink
                }
            }
            other => other,
        }
    }
}

/// The tc priority of shoal's filters ("SH").
pub const PRIORITY: u16 = 0x5348;

/// The filter handle of a hook within [`PRIORITY`].
pub const fn handle(hook: TcHook) -> u32 {
    match hook {
        TcHook::Ingress => 1,
        TcHook::Reply => 2,
    }
}

/// What holds our slot on an interface.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    Free,
    /// A filter of ours: replace its program in place.
    Ours,
    /// Someone else's filter, by its name or kind.
    Taken(String),
}

/// Our slot for `hook` among the filters of an interface's ingress.
pub(crate) fn slot(filters: &[TcFilter], hook: TcHook) -> Slot {
    match filters.iter().find(|f| f.priority == PRIORITY && f.handle == handle(hook)) {
        None => Slot::Free,
        Some(f) if f.kind == "bpf" && f.name.as_deref() == Some(hook.program()) => Slot::Ours,
        Some(f) => Slot::Taken(f.name.clone().unwrap_or_else(|| f.kind.clone())),
    }
}

/// The record of one filter shoal added: which hook, on which interface, in
/// which network namespace (its cookie), as a pin name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub hook: TcHook,
    pub netns: u64,
    pub ifname: String,
}

const RECORD_PREFIX: &str = "tcf_";

impl Record {
    /// `tcf_<hook>_<cookie>_<ifname>` (a dot of the name as a colon: bpffs refuses dots).
    pub(crate) fn pin_name(&self) -> String {
        format!("{RECORD_PREFIX}{}_{}_{}", self.hook.pin_name(), self.netns, self.ifname.replace('.', ":"))
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(RECORD_PREFIX)?;
        let (hook, rest) = rest.split_once('_')?;
        let (netns, ifname) = rest.split_once('_')?;
        let hook = TcHook::from_pin_name(hook)?;
        let netns = netns.parse().ok()?;
        (!ifname.is_empty()).then(|| Self { hook, netns, ifname: ifname.replace(':', ".") })
    }
}

/// The calling thread's network namespace cookie.
pub(crate) fn netns() -> Result<u64, Error> {
    sys::netns_cookie().map_err(|source| Error::Sys { call: "getsockopt SO_NETNS_COOKIE", object: "this network namespace".into(), source })
}

fn list(ifname: &str, ifindex: u32) -> Result<Vec<TcFilter>, Error> {
    sys::list_ingress(ifindex).map_err(|source| Error::Sys { call: "RTM_GETTFILTER", object: ifname.to_owned(), source })
}

/// Attach `prog` (already loaded) for `hook` at our slot on `ifname`'s
/// ingress: replaces our filter's program in place, or adds the filter (and
/// the clsact qdisc). Returns the link; dropping it deletes the filter.
pub(crate) fn attach(prog: &mut SchedClassifier, hook: TcHook, ifname: &str, ifindex: u32) -> Result<SchedClassifierLink, Error> {
    let name = hook.program();
    let attach_err = |source| Error::Attach { program: name, target: ifname.to_owned(), source };
    match tc::qdisc_add_clsact(ifname) {
        Ok(()) | Err(tc::TcError::AlreadyAttached) => {}
        Err(e) if already_exists(&e) => {}
        Err(e) => return Err(attach_err(e.into())),
    }
    let id = match slot(&list(ifname, ifindex)?, hook) {
        Slot::Ours => {
            let ours = SchedClassifierLink::attached(ifname, TcAttachType::Ingress, PRIORITY, TcHandle::from(handle(hook)), None)
                .map_err(|e| attach_err(tc::TcError::IoError(e).into()))?;
            prog.attach_to_link(ours).map_err(attach_err)?
        }
        Slot::Free => {
            let opts = NlOptions { priority: PRIORITY, handle: TcHandle::from(handle(hook)), classid: None };
            prog.attach_with_options(ifname, TcAttachType::Ingress, TcAttachOptions::Netlink(opts)).map_err(attach_err)?
        }
        Slot::Taken(holder) => {
            return Err(Error::FilterTaken { target: ifname.to_owned(), priority: PRIORITY, handle: handle(hook), holder })
        }
    };
    prog.take_link(id).map_err(attach_err)
}

/// aya reports an existing clsact qdisc as the kernel's EEXIST.
fn already_exists(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::AlreadyExists) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Pin `prog` as the record of `hook` on `ifname` in this namespace
/// (replacing an older record of the same).
pub(crate) fn record(dir: &std::path::Path, prog: &SchedClassifier, hook: TcHook, ifname: &str) -> Result<(), Error> {
    let path = dir.join(Record { hook, netns: netns()?, ifname: ifname.to_owned() }.pin_name());
    let sys_err = |call, source| Error::Sys { call, object: path.display().to_string(), source };
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(sys_err("unlink record", e)),
    }
    let fd = prog.fd().map_err(|source| Error::Program { program: hook.program(), source })?;
    sys::obj_pin(fd.as_fd().as_fd(), &path).map_err(|e| sys_err("BPF_OBJ_PIN", e))
}

/// Whether our filter for `hook` is on `ifname` (in the calling namespace).
pub(crate) fn is_attached(hook: TcHook, ifname: &str) -> Result<bool, Error> {
    let Ok(ifindex) = crate::tc_nat::ifindex(ifname) else { return Ok(false) };
    Ok(slot(&list(ifname, ifindex)?, hook) == Slot::Ours)
}

/// Delete our filter for `hook` on `ifname` (in the calling namespace) if it
/// is there and ours. True when one was deleted.
pub(crate) fn delete(hook: TcHook, ifname: &str) -> Result<bool, Error> {
    let Ok(ifindex) = crate::tc_nat::ifindex(ifname) else {
        return Ok(false); // the interface is gone, and its filters with it
    };
    match slot(&list(ifname, ifindex)?, hook) {
        Slot::Ours => {}
        Slot::Free => return Ok(false),
        Slot::Taken(holder) => {
            tracing::warn!(ifname, holder, "our tc filter slot holds someone else's filter: left alone");
            return Ok(false);
        }
    }
    match sys::delete_ingress(ifindex, PRIORITY, handle(hook)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::Sys { call: "RTM_DELTFILTER", object: ifname.to_owned(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(priority: u16, handle: u32, kind: &str, name: Option<&str>) -> TcFilter {
        TcFilter { priority, handle, kind: kind.into(), name: name.map(Into::into), prog_id: Some(7) }
    }

    #[test]
    fn our_slot_is_free_ours_or_taken() {
        assert_eq!(slot(&[], TcHook::Reply), Slot::Free);
        let others = [filter(1, 1, "bpf", Some("cilium")), filter(PRIORITY, 1, "bpf", Some("nat_ingress"))];
        assert_eq!(slot(&others, TcHook::Reply), Slot::Free, "another priority or the other hook's handle");
        assert_eq!(slot(&others, TcHook::Ingress), Slot::Ours);
        let taken = [filter(PRIORITY, 2, "bpf", Some("someone_else"))];
        assert_eq!(slot(&taken, TcHook::Reply), Slot::Taken("someone_else".into()));
        let u32_filter = [filter(PRIORITY, 2, "u32", None)];
        assert_eq!(slot(&u32_filter, TcHook::Reply), Slot::Taken("u32".into()));
    }

    #[test]
    fn records_round_trip_through_their_pin_names() {
        let r = Record { hook: TcHook::Reply, netns: 4096, ifname: "shb_4097.1".into() };
        assert_eq!(r.pin_name(), "tcf_reply_4096_shb_4097:1");
        assert_eq!(Record::parse(&r.pin_name()), Some(r));
        let r = Record { hook: TcHook::Ingress, netns: 1, ifname: "eth0".into() };
        assert_eq!(Record::parse(&r.pin_name()), Some(r));
        for bad in ["link_reply_eth0", "tcf_reply_x_eth0", "tcf_egress_1_eth0", "tcf_reply_1_", "tcf_reply"] {
            assert_eq!(Record::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn auto_means_one_of_the_two() {
        assert_ne!(TcAttach::Auto.resolve(), TcAttach::Auto);
        assert_eq!(TcAttach::Netlink.resolve(), TcAttach::Netlink);
    }
}
