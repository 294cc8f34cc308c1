//! The in-memory image of the service maps and the planner that keeps the
//! kernel maps equal to it.
//!
//! Layout: a service (key -> id, count, local_count, flags) owns backend
//! slots (id, 0..count) and, for local backends, (id, SLOT_LOCAL | 0..local_count).
//! Slots stay dense: removing a backend moves the last one into its hole.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddrV4,
};

use crate::{
    error::Error,
    maps::{BeKey, BeRefKey, BeVal, SvcKey, SvcVal, SLOT_LOCAL, SVC_F_KEEP_CLIENT_IP},
    model::{Backend, ServiceKey, ServiceOptions},
    plan::MapOp,
};

/// Sizes the planner must respect (the maps' max_entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most services.
    pub max_services: u32,
    /// Most backends per service (at most 65535, the width of `count`).
    pub max_backends_per_service: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_services: 16384, max_backends_per_service: 4096 }
    }
}

#[derive(Clone, Debug, Default)]
struct Service {
    id: u32,
    flags: u32,
    /// Slot i holds `all[i]`.
    all: Vec<Backend>,
    /// Local slot i holds `local[i]`.
    local: Vec<SocketAddrV4>,
}

impl Service {
    fn val(&self) -> SvcVal {
        SvcVal { id: self.id, count: self.all.len() as u16, local_count: self.local.len() as u16, flags: self.flags }
    }

    fn position(&self, addr: SocketAddrV4) -> Option<usize> {
        self.all.iter().position(|b| b.addr == addr)
    }
}

/// The services and backends programmed into one object's maps.
#[derive(Debug, Default)]
pub struct LbTable {
    limits: Limits,
    services: HashMap<ServiceKey, Service>,
    free_ids: Vec<u32>,
    next_id: u32,
}

fn flags_of(opts: ServiceOptions) -> u32 {
    if opts.keep_client_ip {
        SVC_F_KEEP_CLIENT_IP
    } else {
        0
    }
}

impl LbTable {
    /// An empty table.
    pub fn new(limits: Limits) -> Self {
        Self { limits, ..Self::default() }
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// True when no service is programmed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The backends of `key`, in slot order.
    pub fn backends(&self, key: &ServiceKey) -> Option<&[Backend]> {
        self.services.get(key).map(|s| s.all.as_slice())
    }

    /// Every service key.
    pub fn services(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
    }

    /// Create `key` (with no backends) or update its options.
    pub fn upsert_service(&mut self, key: ServiceKey, opts: ServiceOptions) -> Result<Vec<MapOp>, Error> {
        let flags = flags_of(opts);
        if let Some(svc) = self.services.get_mut(&key) {
            if svc.flags == flags {
                return Ok(Vec::new());
            }
            svc.flags = flags;
            return Ok(vec![MapOp::PutService(key.into(), svc.val())]);
        }
        let id = match self.free_ids.pop() {
            Some(id) => id,
            None if self.next_id < self.limits.max_services => {
                self.next_id += 1;
                self.next_id - 1
            }
            None => return Err(Error::ServiceTableFull { service: key, max: self.limits.max_services }),
        };
        let svc = Service { id, flags, ..Service::default() };
        let op = MapOp::PutService(key.into(), svc.val());
        self.services.insert(key, svc);
        Ok(vec![op])
    }

    /// Remove `key` and all its backends.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Vec<MapOp> {
        let Some(svc) = self.services.remove(key) else {
            return Vec::new();
        };
        let mut ops = vec![MapOp::DeleteService((*key).into())];
        for (slot, b) in svc.all.iter().enumerate() {
            ops.push(MapOp::DeleteRef(BeRefKey::new(svc.id, b.addr)));
            ops.push(MapOp::DeleteBackend(BeKey { svc_id: svc.id, slot: slot as u32 }));
        }
        for slot in 0..svc.local.len() {
            ops.push(MapOp::DeleteBackend(BeKey { svc_id: svc.id, slot: SLOT_LOCAL | slot as u32 }));
        }
        self.free_ids.push(svc.id);
        ops
    }

    /// Add one backend (or update it when its address is already there).
    pub fn add_backend(&mut self, key: &ServiceKey, backend: Backend) -> Result<Vec<MapOp>, Error> {
        let svc = self.services.get(key).ok_or(Error::UnknownService { service: *key })?;
        match svc.position(backend.addr) {
            Some(i) if svc.all[i] == backend => Ok(Vec::new()),
            Some(_) => {
                let mut ops = self.remove_backend(key, backend.addr)?;
                ops.extend(self.add_backend(key, backend)?);
                Ok(ops)
            }
            None => {
                if svc.all.len() >= usize::from(self.limits.max_backends_per_service) {
                    return Err(Error::TooManyBackends {
                        service: *key,
                        max: self.limits.max_backends_per_service,
                    });
                }
                let svc = self.services.get_mut(key).expect("looked up above");
                let id = svc.id;
                let slot = svc.all.len() as u32;
                let mut ops = vec![
                    MapOp::PutBackend(BeKey { svc_id: id, slot }, BeVal::from(&backend)),
                    MapOp::PutRef(BeRefKey::new(id, backend.addr), slot),
                ];
                if backend.local {
                    let lslot = SLOT_LOCAL | svc.local.len() as u32;
                    ops.push(MapOp::PutBackend(BeKey { svc_id: id, slot: lslot }, BeVal::from(&backend)));
                    svc.local.push(backend.addr);
                }
                svc.all.push(backend);
                ops.push(MapOp::PutService((*key).into(), svc.val()));
                Ok(ops)
            }
        }
    }

    /// Remove the backend at `addr`; no-op when absent.
    pub fn remove_backend(&mut self, key: &ServiceKey, addr: SocketAddrV4) -> Result<Vec<MapOp>, Error> {
        let svc = self.services.get_mut(key).ok_or(Error::UnknownService { service: *key })?;
        let Some(i) = svc.position(addr) else {
            return Ok(Vec::new());
        };
        let id = svc.id;
        let mut ops = Vec::with_capacity(7);
        let mut freed = Vec::with_capacity(2);

        // Fill the hole with the last backend, then shrink.
        let last = svc.all.len() - 1;
        if i != last {
            let moved = svc.all[last];
            ops.push(MapOp::PutBackend(BeKey { svc_id: id, slot: i as u32 }, BeVal::from(&moved)));
            ops.push(MapOp::PutRef(BeRefKey::new(id, moved.addr), i as u32));
        }
        ops.push(MapOp::DeleteRef(BeRefKey::new(id, addr)));
        svc.all.swap_remove(i);
        freed.push(BeKey { svc_id: id, slot: last as u32 });

        if let Some(li) = svc.local.iter().position(|a| *a == addr) {
            let llast = svc.local.len() - 1;
            if li != llast {
                let moved = svc.local[llast];
                let moved_be = svc.all[svc.position(moved).expect("local backends are in all")];
                ops.push(MapOp::PutBackend(
                    BeKey { svc_id: id, slot: SLOT_LOCAL | li as u32 },
                    BeVal::from(&moved_be),
                ));
            }
            svc.local.swap_remove(li);
            freed.push(BeKey { svc_id: id, slot: SLOT_LOCAL | llast as u32 });
        }
        ops.push(MapOp::PutService((*key).into(), svc.val()));
        ops.extend(freed.into_iter().map(MapOp::DeleteBackend));
        Ok(ops)
    }

    /// Make the backends of `key` exactly `backends` (by address), with one
    /// add or remove per difference.
    pub fn set_backends(&mut self, key: &ServiceKey, backends: &[Backend]) -> Result<Vec<MapOp>, Error> {
        let svc = self.services.get(key).ok_or(Error::UnknownService { service: *key })?;
        let mut seen = HashSet::with_capacity(backends.len());
        for b in backends {
            if !seen.insert(b.addr) {
                return Err(Error::DuplicateBackend { service: *key, backend: b.addr });
            }
        }
        if backends.len() > usize::from(self.limits.max_backends_per_service) {
            return Err(Error::TooManyBackends { service: *key, max: self.limits.max_backends_per_service });
        }
        let gone: Vec<SocketAddrV4> = svc.all.iter().map(|b| b.addr).filter(|a| !seen.contains(a)).collect();
        let mut ops = Vec::new();
        for addr in gone {
            ops.extend(self.remove_backend(key, addr)?);
        }
        for b in backends {
            ops.extend(self.add_backend(key, *b)?);
        }
        Ok(coalesce_service_writes(ops))
    }

    /// Every write that recreates `key` from scratch (used to repair a
    /// service after a failed kernel write).
    pub fn full_ops(&self, key: &ServiceKey) -> Vec<MapOp> {
        let Some(svc) = self.services.get(key) else {
            return vec![MapOp::DeleteService((*key).into())];
        };
        let mut ops = Vec::with_capacity(svc.all.len() * 2 + svc.local.len() + 1);
        for (slot, b) in svc.all.iter().enumerate() {
            ops.push(MapOp::PutBackend(BeKey { svc_id: svc.id, slot: slot as u32 }, BeVal::from(b)));
            ops.push(MapOp::PutRef(BeRefKey::new(svc.id, b.addr), slot as u32));
        }
        for (slot, a) in svc.local.iter().enumerate() {
            let b = svc.all[svc.position(*a).expect("local backends are in all")];
            ops.push(MapOp::PutBackend(BeKey { svc_id: svc.id, slot: SLOT_LOCAL | slot as u32 }, BeVal::from(&b)));
        }
        ops.push(MapOp::PutService((*key).into(), svc.val()));
        ops
    }

    /// Rebuild the table from the maps' contents (agent restart), and the
    /// writes that remove whatever does not fit the layout (stale slots and
    /// presence entries, services shoal could not have written).
    pub fn adopt(
        limits: Limits,
        services: Vec<(SvcKey, SvcVal)>,
        backends: Vec<(BeKey, BeVal)>,
        refs: Vec<BeRefKey>,
    ) -> (Self, Vec<MapOp>) {
        let mut table = Self::new(limits);
        let mut ops = Vec::new();
        let by_slot: HashMap<BeKey, BeVal> = backends.iter().copied().collect();
        let mut ids = HashMap::new();
        for (k, v) in services {
            let Some(key) = k.to_service() else {
                ops.push(MapOp::DeleteService(k));
                continue;
            };
            if v.id >= limits.max_services || ids.contains_key(&v.id) {
                ops.push(MapOp::DeleteService(k));
                continue;
            }
            let mut svc = Service { id: v.id, flags: v.flags, ..Service::default() };
            let mut repair = false;
            for slot in 0..u32::from(v.count) {
                match by_slot.get(&BeKey { svc_id: v.id, slot }) {
                    Some(b) if svc.position(b.socket_addr()).is_none() => svc.all.push(Backend {
                        addr: b.socket_addr(),
                        snat: (b.snat_addr != 0).then(|| crate::maps::addr_from_map(b.snat_addr)),
                        local: false,
                    }),
                    _ => repair = true,
                }
            }
            for slot in 0..u32::from(v.local_count) {
                let local = by_slot
                    .get(&BeKey { svc_id: v.id, slot: SLOT_LOCAL | slot })
                    .and_then(|b| svc.position(b.socket_addr()));
                match local {
                    Some(i) if !svc.all[i].local => {
                        svc.all[i].local = true;
                        svc.local.push(svc.all[i].addr);
                    }
                    _ => repair = true,
                }
            }
            ids.insert(v.id, key);
            table.services.insert(key, svc);
            if repair {
                ops.extend(table.full_ops(&key));
            }
        }
        // Stale slots and presence entries.
        for (k, _) in &backends {
            let live = ids.get(&k.svc_id).and_then(|key| table.services.get(key)).is_some_and(|s| {
                if k.slot & SLOT_LOCAL != 0 {
                    ((k.slot & !SLOT_LOCAL) as usize) < s.local.len()
                } else {
                    (k.slot as usize) < s.all.len()
                }
            });
            if !live {
                ops.push(MapOp::DeleteBackend(*k));
            }
        }
        for r in refs {
            let live = ids
                .get(&r.svc_id)
                .and_then(|key| table.services.get(key))
                .is_some_and(|s| s.all.iter().any(|b| BeRefKey::new(s.id, b.addr) == r));
            if !live {
                ops.push(MapOp::DeleteRef(r));
            }
        }
        let mut used: Vec<u32> = ids.keys().copied().collect();
        used.sort_unstable();
        table.next_id = used.last().map_or(0, |m| m + 1);
        let used: HashSet<u32> = used.into_iter().collect();
        table.free_ids = (0..table.next_id).rev().filter(|i| !used.contains(i)).collect();
        (table, ops)
    }
}

/// Drop a service write that a later one overrides before any slot is
/// freed (a slot may only go after the count that covered it shrank).
fn coalesce_service_writes(ops: Vec<MapOp>) -> Vec<MapOp> {
    let mut overridden = false;
    let mut kept: Vec<MapOp> = ops
        .into_iter()
        .rev()
        .filter(|op| match op {
            MapOp::PutService(..) => !std::mem::replace(&mut overridden, true),
            MapOp::DeleteBackend(..) => {
                overridden = false;
                true
            }
            _ => true,
        })
        .collect();
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests;
