//! Loading an embedded object, the same way for both: map sizes from the
//! options, maps pinned and reused when a pin directory is given, layout of
//! reused maps checked, programs loaded (not attached), service maps adopted.

use std::{mem::size_of, path::PathBuf};

use aya::{maps::MapInfo, programs::Program, Ebpf, EbpfLoader};

use crate::{
    error::Error,
    maps::{BeKey, BeRefKey, BeVal, SvcKey, SvcVal},
    pin::PinDir,
    plan::Limits,
    service_table::{ServiceMapNames, ServiceTable},
    tc_legacy::TcAttach,
};

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
    /// How the NAT's classifiers are attached (tcx links where the kernel
    /// has them, else legacy netlink filters).
    pub tc_attach: TcAttach,
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
            tc_attach: TcAttach::Auto,
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
#[derive(Clone, Copy)]
pub(crate) struct MapSpec {
    pub name: &'static str,
    pub key: usize,
    pub value: usize,
    pub size: fn(&LoadOptions) -> u32,
}

/// The specs of an object's three service maps (`lib/service_maps.h`).
pub(crate) const fn service_specs(names: ServiceMapNames) -> [MapSpec; 3] {
    [
        MapSpec { name: names[0], key: size_of::<SvcKey>(), value: size_of::<SvcVal>(), size: |o| o.max_services },
        MapSpec { name: names[1], key: size_of::<BeKey>(), value: size_of::<BeVal>(), size: |o| o.max_backends },
        MapSpec { name: names[2], key: size_of::<BeRefKey>(), value: size_of::<u32>(), size: |o| o.max_backends },
    ]
}

/// What tells one embedded object from the other.
pub(crate) struct ObjectSpec {
    /// `sock_lb` or `tc_nat` (in errors).
    pub name: &'static str,
    /// The ELF built by build.rs.
    pub bytes: &'static [u8],
    /// Its subdirectory of the pin directory.
    pub pin_subdir: &'static str,
    /// Its three service maps.
    pub service_maps: ServiceMapNames,
    /// Its other maps.
    pub other_maps: &'static [MapSpec],
    /// Every program, loaded by `load_program`.
    pub programs: &'static [&'static str],
}

/// An object loaded into the kernel (programs verified, not attached) with
/// its service maps adopted.
pub(crate) struct Loaded {
    pub ebpf: Ebpf,
    pub table: ServiceTable,
    pub pin: Option<PinDir>,
}

impl ObjectSpec {
    /// Load the object, adopting the services of pinned maps when
    /// `opts.pin_dir` holds them; `load_program` loads one program by name.
    pub(crate) fn load(&self, opts: &LoadOptions, load_program: fn(&mut Ebpf, &'static str) -> Result<(), Error>) -> Result<Loaded, Error> {
        let pin = opts.pin_dir.as_deref().map(|d| PinDir::create(d, self.pin_subdir)).transpose()?;
        let maps: Vec<MapSpec> = service_specs(self.service_maps).iter().chain(self.other_maps).copied().collect();
        let mut ebpf = load(self.name, self.bytes, &maps, opts, pin.as_ref())?;
        for name in self.programs {
            load_program(&mut ebpf, name)?;
        }
        let table = ServiceTable::adopt(&mut ebpf, self.service_maps, opts.limits())?;
        Ok(Loaded { ebpf, table, pin })
    }
}

/// Program `name` of an object, as its type `T`.
pub(crate) fn program<'a, T>(ebpf: &'a mut Ebpf, object: &'static str, name: &'static str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(Error::MissingProgram { object, program: name })?
        .try_into()
        .map_err(|source| Error::Program { program: name, source })
}

impl Loaded {
    /// Close the object (links owned by the caller must be dropped first),
    /// then detach every pinned link and remove the pins. Keeps going on
    /// errors and returns them all.
    pub(crate) fn teardown(self) -> Vec<Error> {
        let Self { ebpf, table, pin } = self;
        drop(table);
        drop(ebpf);
        pin.map(|p| p.remove()).unwrap_or_default()
    }
}

fn load(object: &'static str, bytes: &[u8], maps: &[MapSpec], opts: &LoadOptions, pin: Option<&PinDir>) -> Result<Ebpf, Error> {
    let mut loader = EbpfLoader::new();
    let paths: Vec<(&'static str, PathBuf)> = pin.map(|p| maps.iter().map(|m| (m.name, p.map(m.name))).collect()).unwrap_or_default();
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
