//! Loading an embedded object: map sizes from the options, maps pinned and
//! reused when a pin directory is given, layout of reused maps checked.

use std::path::PathBuf;

use aya::{maps::MapInfo, Ebpf, EbpfLoader};

use crate::{error::Error, pin::PinDir, plan::Limits};

/// How to load the load balancers.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// A directory on a bpffs (see [`crate::ensure_bpffs`]), owned by this
    /// agent, e.g. `/sys/fs/bpf/shoal/<node>`. With it, maps and attachments
    /// are pinned and survive the agent: a new agent adopts them (services,
    /// tracked flows and attachments stay; programs are swapped atomically).
    /// Without it, everything is removed when the loader is dropped.
    pub pin_dir: Option<PathBuf>,
    /// Most services (VIPs or published ports).
    pub max_services: u32,
    /// Most backend slots over all services: a backend takes one slot per
    /// unit of its reduced weight (see [`crate::plan::slot_counts`]), local
    /// NAT backends take theirs twice, drained (weight 0) ones one.
    pub max_backends: u32,
    /// Most backends of one service (at most 65535).
    pub max_backends_per_service: u16,
    /// Most selection slots of one service: weights that need more are
    /// scaled down to this many (each backend keeps at least one slot).
    pub max_slots_per_service: u16,
    /// Size of the flow tables (UDP affinity and reverse translation for the
    /// socket LB; connection tracking for the NAT), LRU-evicted.
    pub max_flows: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            pin_dir: None,
            max_services: 16384,
            max_backends: 65536,
            max_backends_per_service: 4096,
            max_slots_per_service: 4096,
            max_flows: 16384,
        }
    }
}

impl LoadOptions {
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_services: self.max_services,
            max_backends_per_service: self.max_backends_per_service,
            max_slots_per_service: self.max_slots_per_service,
        }
    }
}

/// One map of an object: name, key size, value size, and which option sizes it.
pub(crate) struct MapSpec {
    pub name: &'static str,
    pub key: usize,
    pub value: usize,
    pub size: fn(&LoadOptions) -> u32,
}

pub(crate) fn load(
    object: &'static str,
    bytes: &[u8],
    maps: &[MapSpec],
    opts: &LoadOptions,
    pin: Option<&PinDir>,
) -> Result<Ebpf, Error> {
    let mut loader = EbpfLoader::new();
    let paths: Vec<(&'static str, PathBuf)> =
        pin.map(|p| maps.iter().map(|m| (m.name, p.map(m.name))).collect()).unwrap_or_default();
    for m in maps {
        loader.map_max_entries(m.name, (m.size)(opts));
    }
    for (name, path) in &paths {
        if path.exists() {
            check_layout(maps, name, path, pin.expect("paths come from the pin dir"))?;
        }
        loader.map_pin_path(name, path.as_path());
    }
    loader.load(bytes).map_err(|source| Error::Load { object, source })
}

fn check_layout(maps: &[MapSpec], name: &str, path: &std::path::Path, pin: &PinDir) -> Result<(), Error> {
    let spec = maps.iter().find(|m| m.name == name).expect("name comes from maps");
    let info = MapInfo::from_pin(path).map_err(|source| Error::Map { map: spec.name, source })?;
    let found = (info.key_size(), info.value_size());
    let expected = (spec.key as u32, spec.value as u32);
    if found != expected {
        return Err(Error::PinnedLayout { path: path.to_owned(), dir: pin.dir().to_owned(), found, expected });
    }
    Ok(())
}
