//! Applies the planner's writes to one object's three service maps, and
//! rebuilds the planner from those maps when they were adopted from a pin.

use std::{collections::HashSet, net::SocketAddrV4};

use aya::{
    maps::{HashMap, MapData, MapError},
    Ebpf,
};

use crate::{
    error::Error,
    maps::{BeKey, BeRefKey, BeVal, SvcKey, SvcVal},
    model::{Backend, ServiceKey, ServiceOptions},
    plan::{LbTable, Limits, MapOp},
};

/// Names of an object's service maps: (services, backends, presence).
pub(crate) type ServiceMapNames = [&'static str; 3];

/// The service maps of one object and the table that mirrors them.
pub struct ServiceTable {
    names: ServiceMapNames,
    svc: HashMap<MapData, SvcKey, SvcVal>,
    be: HashMap<MapData, BeKey, BeVal>,
    refs: HashMap<MapData, BeRefKey, u32>,
    table: LbTable,
    /// Services whose last write failed: rewritten whole on their next change.
    dirty: HashSet<ServiceKey>,
}

fn take<K: aya::Pod, V: aya::Pod>(ebpf: &mut Ebpf, name: &'static str) -> Result<HashMap<MapData, K, V>, Error> {
    let map = ebpf.take_map(name).ok_or(Error::Map { map: name, source: MapError::InvalidName { name: name.into() } })?;
    HashMap::try_from(map).map_err(|source| Error::Map { map: name, source })
}

fn collect<K: aya::Pod, V: aya::Pod>(map: &HashMap<MapData, K, V>, name: &'static str) -> Result<Vec<(K, V)>, Error> {
    map.iter().collect::<Result<Vec<_>, _>>().map_err(|source| Error::Map { map: name, source })
}

impl ServiceTable {
    /// Take the maps out of `ebpf` and adopt their contents (empty on a
    /// fresh start), repairing anything an interrupted run left behind.
    pub(crate) fn adopt(ebpf: &mut Ebpf, names: ServiceMapNames, limits: Limits) -> Result<Self, Error> {
        let svc = take(ebpf, names[0])?;
        let be = take(ebpf, names[1])?;
        let refs = take(ebpf, names[2])?;
        let services = collect(&svc, names[0])?;
        let backends = collect(&be, names[1])?;
        let ref_entries = collect(&refs, names[2])?;
        let adopted = services.len();
        let (table, repair) = LbTable::adopt(limits, services, backends, ref_entries);
        let mut this = Self { names, svc, be, refs, table, dirty: HashSet::new() };
        if adopted > 0 {
            tracing::info!(map = names[0], services = adopted, repairs = repair.len(), "adopted pinned services");
        }
        // Repairs only delete stale entries or rewrite inconsistent services.
        let placeholder = ServiceKey::tcp(std::net::Ipv4Addr::UNSPECIFIED, 0);
        this.apply(placeholder, &repair)?;
        Ok(this)
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when no service is programmed.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The backends of a service (with their weights), in the order they came.
    pub fn backends(&self, key: &ServiceKey) -> Option<&[Backend]> {
        self.table.backends(key)
    }

    /// The options of a service, read back from its flags in the maps (so
    /// they survive a restart with the pins).
    pub fn options(&self, key: &ServiceKey) -> Option<ServiceOptions> {
        self.table.options(key)
    }

    /// The backend in each selection slot of a service, and in each local
    /// selection slot: what the programs pick from, uniformly.
    pub fn slots(&self, key: &ServiceKey) -> Option<(&[SocketAddrV4], &[SocketAddrV4])> {
        self.table.slots(key)
    }

    /// Every service.
    pub fn services(&self) -> impl Iterator<Item = &ServiceKey> {
        self.table.services()
    }

    fn apply(&mut self, service: ServiceKey, ops: &[MapOp]) -> Result<(), Error> {
        for op in ops {
            let (map, res) = match op {
                MapOp::PutService(k, v) => (self.names[0], self.svc.insert(k, v, 0)),
                MapOp::DeleteService(k) => (self.names[0], ignore_missing(self.svc.remove(k))),
                MapOp::PutBackend(k, v) => (self.names[1], self.be.insert(k, v, 0)),
                MapOp::DeleteBackend(k) => (self.names[1], ignore_missing(self.be.remove(k))),
                MapOp::PutRef(k, v) => (self.names[2], self.refs.insert(k, v, 0)),
                MapOp::DeleteRef(k) => (self.names[2], ignore_missing(self.refs.remove(k))),
            };
            if let Err(source) = res {
                self.dirty.insert(service);
                return Err(Error::MapWrite { service, map, source });
            }
        }
        Ok(())
    }

    /// Plan with `f` (after re-planning a dirty service whole) and apply.
    fn change(&mut self, key: ServiceKey, f: impl FnOnce(&mut LbTable) -> Result<Vec<MapOp>, Error>) -> Result<usize, Error> {
        let mut ops = f(&mut self.table)?;
        if self.dirty.remove(&key) {
            ops = self.table.full_ops(&key);
        }
        self.apply(key, &ops)?;
        Ok(ops.len())
    }

    /// Create a service (no backends yet) or update its options.
    pub fn upsert_service(&mut self, key: ServiceKey, opts: ServiceOptions) -> Result<(), Error> {
        self.change(key, |t| t.upsert_service(key, opts)).map(drop)
    }

    /// Remove a service and its backends (O(its backends)).
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<(), Error> {
        let key = *key;
        self.change(key, |t| Ok(t.remove_service(&key))).map(drop)
    }

    /// Make the backends of `key` exactly `backends`; returns the number of
    /// map writes (a constant per backend added or removed).
    pub fn set_backends(&mut self, key: &ServiceKey, backends: &[Backend]) -> Result<usize, Error> {
        let key = *key;
        self.change(key, |t| t.set_backends(&key, backends))
    }

    /// Add or update one backend.
    pub fn add_backend(&mut self, key: &ServiceKey, backend: Backend) -> Result<usize, Error> {
        let key = *key;
        self.change(key, |t| t.add_backend(&key, backend))
    }

    /// Remove one backend (no-op when absent). New connections avoid it at
    /// once; established TCP flows to it are untouched.
    pub fn remove_backend(&mut self, key: &ServiceKey, addr: SocketAddrV4) -> Result<usize, Error> {
        let key = *key;
        self.change(key, |t| t.remove_backend(&key, addr))
    }
}

/// Deleting what is already gone is fine (repairs, LRU-evicted entries).
fn ignore_missing(res: Result<(), MapError>) -> Result<(), MapError> {
    match res {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
