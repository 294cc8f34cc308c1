//! The in-memory image of the service maps and the planner that keeps the
//! kernel maps equal to it.
//!
//! Layout of a service (key -> id, count, local_count, flags):
//! - slots (id, 0..count): the selection list. A backend holds as many slots
//!   as [`slot_counts`] gives its weight, so a uniformly random slot is a
//!   weighted choice; weight 0 holds none.
//! - slots (id, SLOT_LOCAL | 0..local_count): the same for local backends.
//! - slots (id, SLOT_PARKED | i): one per weight-0 backend. The programs
//!   never read them; they keep its data (SNAT address, local) in the maps
//!   so an adopting agent can rebuild it.
//! - refs (id, ip, port) -> REF_WEIGHTED | weight: every backend, whatever
//!   its weight: tracked flows and UDP sockets stay on a backend while its
//!   ref exists.
//!
//! Lists stay dense; a change writes only the slots whose backend changes
//! ([`rebalance`]), so adding or removing a backend of weight w costs O(w)
//! writes (O(1) with the default weight 1), whatever the number of services.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddrV4,
};

use super::slots::{rebalance, slot_counts};
use crate::{
    error::Error,
    maps::{
        ref_value, ref_weight, BeKey, BeRefKey, BeVal, SvcKey, SvcVal, SLOT_LOCAL, SLOT_PARKED, SVC_F_KEEP_CLIENT_IP, SVC_F_PUBLISHED,
        SVC_F_VIP,
    },
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
    /// Slots a service's weights may use before they are scaled down (see
    /// [`slot_counts`]); raised to the number of backends when below it.
    pub max_slots_per_service: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_services: 16384, max_backends_per_service: 4096, max_slots_per_service: 4096 }
    }
}

/// A service's map entries: (slots, refs).
type Entries = (Vec<(BeKey, BeVal)>, Vec<(BeRefKey, u32)>);

/// The three slot lists of a service, with their `be_key.slot` base bits.
const LISTS: [u32; 3] = [0, SLOT_LOCAL, SLOT_PARKED];

#[derive(Clone, Debug, Default)]
struct Service {
    id: u32,
    flags: u32,
    /// Every backend (also weight 0), in the order they came.
    backends: Vec<Backend>,
    /// Slot lists: selection, local selection, parked (index as in [`LISTS`]).
    lists: [Vec<SocketAddrV4>; 3],
}

impl Service {
    fn val(&self) -> SvcVal {
        SvcVal { id: self.id, count: self.lists[0].len() as u16, local_count: self.lists[1].len() as u16, flags: self.flags }
    }

    fn position(&self, addr: SocketAddrV4) -> Option<usize> {
        self.backends.iter().position(|b| b.addr == addr)
    }

    fn be_val(&self, addr: SocketAddrV4) -> BeVal {
        BeVal::from(&self.backends[self.position(addr).expect("slot lists hold known backends")])
    }

    fn key(&self, list: usize, slot: usize) -> BeKey {
        BeKey { svc_id: self.id, slot: LISTS[list] | slot as u32 }
    }

    /// How many slots each backend wants in each list.
    fn wanted(&self, budget: u16) -> [Vec<(SocketAddrV4, u32)>; 3] {
        let weights: Vec<u16> = self.backends.iter().map(|b| b.weight).collect();
        let counts = slot_counts(&weights, u32::from(budget));
        let per = |f: &dyn Fn(&Backend, u32) -> u32| -> Vec<(SocketAddrV4, u32)> {
            self.backends.iter().zip(&counts).map(|(b, &c)| (b.addr, f(b, c))).collect()
        };
        [per(&|_, c| c), per(&|b, c| if b.local { c } else { 0 }), per(&|b, _| u32::from(b.weight == 0))]
    }

    /// Bring the slot lists to the weights: (slot writes, slots to free
    /// once the service no longer counts them, keys written).
    fn resync(&mut self, budget: u16) -> (Vec<MapOp>, Vec<MapOp>, HashSet<BeKey>) {
        let wanted = self.wanted(budget);
        let mut fills = Vec::new();
        let mut frees = Vec::new();
        let mut written = HashSet::new();
        for (list, want) in wanted.iter().enumerate() {
            let r = rebalance(&mut self.lists[list], want);
            for (slot, addr) in r.fills {
                let key = self.key(list, slot);
                written.insert(key);
                fills.push(MapOp::PutBackend(key, self.be_val(addr)));
            }
            frees.extend((r.new_len..r.old_len).map(|slot| MapOp::DeleteBackend(self.key(list, slot))));
        }
        (fills, frees, written)
    }

    /// Every map entry of this service (what the maps must hold).
    fn entries(&self) -> Entries {
        let mut slots = Vec::new();
        for (list, addrs) in self.lists.iter().enumerate() {
            slots.extend(addrs.iter().enumerate().map(|(slot, a)| (self.key(list, slot), self.be_val(*a))));
        }
        let refs = self.backends.iter().map(|b| (BeRefKey::new(self.id, b.addr), ref_value(b.weight))).collect();
        (slots, refs)
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
    let bit = |on: bool, flag: u32| if on { flag } else { 0 };
    bit(opts.keep_client_ip, SVC_F_KEEP_CLIENT_IP) | bit(opts.published, SVC_F_PUBLISHED) | bit(opts.vip, SVC_F_VIP)
}

fn options_of(flags: u32) -> ServiceOptions {
    ServiceOptions {
        keep_client_ip: flags & SVC_F_KEEP_CLIENT_IP != 0,
        published: flags & SVC_F_PUBLISHED != 0,
        vip: flags & SVC_F_VIP != 0,
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

    /// The backends of `key` (with their weights), in the order they came.
    pub fn backends(&self, key: &ServiceKey) -> Option<&[Backend]> {
        self.services.get(key).map(|s| s.backends.as_slice())
    }

    /// The options of `key`, as its flags in the maps say.
    pub fn options(&self, key: &ServiceKey) -> Option<ServiceOptions> {
        self.services.get(key).map(|s| options_of(s.flags))
    }

    /// The backend address in each selection slot of `key` (slot order), and
    /// in each local selection slot: what the programs choose from.
    pub fn slots(&self, key: &ServiceKey) -> Option<(&[SocketAddrV4], &[SocketAddrV4])> {
        self.services.get(key).map(|s| (s.lists[0].as_slice(), s.lists[1].as_slice()))
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
        let (slots, refs) = svc.entries();
        let mut ops = vec![MapOp::DeleteService((*key).into())];
        ops.extend(refs.into_iter().map(|(k, _)| MapOp::DeleteRef(k)));
        ops.extend(slots.into_iter().map(|(k, _)| MapOp::DeleteBackend(k)));
        self.free_ids.push(svc.id);
        ops
    }

    /// Make the backends of `key` `edit(backends)`, in an order readers can
    /// follow: refs and slot writes, then the service (new counts), then
    /// freed slots.
    fn change(&mut self, key: &ServiceKey, edit: impl FnOnce(&mut Vec<Backend>)) -> Result<Vec<MapOp>, Error> {
        let budget = self.limits.max_slots_per_service;
        let svc = self.services.get_mut(key).ok_or(Error::UnknownService { service: *key })?;
        let before: HashMap<SocketAddrV4, Backend> = svc.backends.iter().map(|b| (b.addr, *b)).collect();
        let old_val = svc.val();
        edit(&mut svc.backends);

        let mut ops = Vec::new();
        for b in &svc.backends {
            if before.get(&b.addr).is_none_or(|old| old.weight != b.weight) {
                ops.push(MapOp::PutRef(BeRefKey::new(svc.id, b.addr), ref_value(b.weight)));
            }
        }
        let (fills, frees, written) = svc.resync(budget);
        ops.extend(fills);
        // A backend whose data changed is rewritten in the slots it kept.
        for b in &svc.backends {
            if before.get(&b.addr).is_some_and(|old| BeVal::from(old) != BeVal::from(b)) {
                for list in 0..LISTS.len() {
                    for (slot, _) in svc.lists[list].iter().enumerate().filter(|(_, a)| **a == b.addr) {
                        let k = svc.key(list, slot);
                        if !written.contains(&k) {
                            ops.push(MapOp::PutBackend(k, BeVal::from(b)));
                        }
                    }
                }
            }
        }
        for addr in before.keys().filter(|a| svc.position(**a).is_none()) {
            ops.push(MapOp::DeleteRef(BeRefKey::new(svc.id, *addr)));
        }
        if svc.val() != old_val {
            ops.push(MapOp::PutService((*key).into(), svc.val()));
        }
        ops.extend(frees);
        Ok(ops)
    }

    fn check_count(&self, key: &ServiceKey, n: usize) -> Result<(), Error> {
        if n > usize::from(self.limits.max_backends_per_service) {
            return Err(Error::TooManyBackends { service: *key, max: self.limits.max_backends_per_service });
        }
        Ok(())
    }

    /// Add one backend (or update it when its address is already there: a
    /// new weight moves only the slots that change hands).
    pub fn add_backend(&mut self, key: &ServiceKey, backend: Backend) -> Result<Vec<MapOp>, Error> {
        let svc = self.services.get(key).ok_or(Error::UnknownService { service: *key })?;
        match svc.position(backend.addr) {
            Some(i) if svc.backends[i] == backend => Ok(Vec::new()),
            Some(i) => self.change(key, |bes| bes[i] = backend),
            None => {
                self.check_count(key, svc.backends.len() + 1)?;
                self.change(key, |bes| bes.push(backend))
            }
        }
    }

    /// Remove the backend at `addr`; no-op when absent.
    pub fn remove_backend(&mut self, key: &ServiceKey, addr: SocketAddrV4) -> Result<Vec<MapOp>, Error> {
        let svc = self.services.get(key).ok_or(Error::UnknownService { service: *key })?;
        match svc.position(addr) {
            None => Ok(Vec::new()),
            Some(i) => self.change(key, |bes| {
                bes.remove(i);
            }),
        }
    }

    /// Make the backends of `key` exactly `backends` (by address), writing
    /// only what differs.
    pub fn set_backends(&mut self, key: &ServiceKey, backends: &[Backend]) -> Result<Vec<MapOp>, Error> {
        let svc = self.services.get(key).ok_or(Error::UnknownService { service: *key })?;
        let mut seen = HashSet::with_capacity(backends.len());
        for b in backends {
            if !seen.insert(b.addr) {
                return Err(Error::DuplicateBackend { service: *key, backend: b.addr });
            }
        }
        self.check_count(key, backends.len())?;
        let have: HashMap<SocketAddrV4, &Backend> = svc.backends.iter().map(|b| (b.addr, b)).collect();
        let unchanged = have.len() == backends.len() && backends.iter().all(|b| have.get(&b.addr) == Some(&b));
        if unchanged {
            return Ok(Vec::new());
        }
        let wanted: HashMap<SocketAddrV4, Backend> = backends.iter().map(|b| (b.addr, *b)).collect();
        self.change(key, |bes| {
            // Keep the order of those staying, then the new ones as given.
            bes.retain_mut(|b| match wanted.get(&b.addr) {
                Some(w) => {
                    *b = *w;
                    true
                }
                None => false,
            });
            let kept: HashSet<SocketAddrV4> = bes.iter().map(|b| b.addr).collect();
            bes.extend(backends.iter().filter(|b| !kept.contains(&b.addr)));
        })
    }

    /// Every write that recreates `key` from scratch (used to repair a
    /// service after a failed kernel write).
    pub fn full_ops(&self, key: &ServiceKey) -> Vec<MapOp> {
        let Some(svc) = self.services.get(key) else {
            return vec![MapOp::DeleteService((*key).into())];
        };
        let (slots, refs) = svc.entries();
        let mut ops: Vec<MapOp> = slots.into_iter().map(|(k, v)| MapOp::PutBackend(k, v)).collect();
        ops.extend(refs.into_iter().map(|(k, v)| MapOp::PutRef(k, v)));
        ops.push(MapOp::PutService((*key).into(), svc.val()));
        ops
    }

    /// Rebuild the table from the maps' contents (agent restart), and the
    /// writes that bring the maps to it: entries a crash or an older build
    /// left (stale slots and refs, services shoal could not have written,
    /// slot counts that do not match the weights) are rewritten or removed;
    /// consistent maps get no write at all.
    pub fn adopt(
        limits: Limits,
        services: Vec<(SvcKey, SvcVal)>,
        backends: Vec<(BeKey, BeVal)>,
        refs: Vec<(BeRefKey, u32)>,
    ) -> (Self, Vec<MapOp>) {
        let mut table = Self::new(limits);
        let by_slot: HashMap<BeKey, BeVal> = backends.iter().copied().collect();
        let mut refs_of: HashMap<u32, Vec<(SocketAddrV4, u16)>> = HashMap::new();
        for (k, v) in &refs {
            let addr = SocketAddrV4::new(crate::maps::addr_from_map(k.addr), crate::maps::port_from_map(k.port));
            refs_of.entry(k.svc_id).or_default().push((addr, ref_weight(*v)));
        }
        let mut ids = HashSet::new();
        for (k, v) in &services {
            let Some(key) = k.to_service() else { continue };
            if v.id >= limits.max_services || !ids.insert(v.id) {
                continue;
            }
            let svc = adopt_service(v, refs_of.remove(&v.id).unwrap_or_default(), &by_slot, limits);
            table.services.insert(key, svc);
        }
        let mut used: Vec<u32> = ids.iter().copied().collect();
        used.sort_unstable();
        table.next_id = used.last().map_or(0, |m| m + 1);
        table.free_ids = (0..table.next_id).rev().filter(|i| !ids.contains(i)).collect();
        let ops = table.repair(&services, &backends, &refs);
        (table, ops)
    }

    /// The writes that turn the given map contents into this table's.
    fn repair(&self, services: &[(SvcKey, SvcVal)], backends: &[(BeKey, BeVal)], refs: &[(BeRefKey, u32)]) -> Vec<MapOp> {
        let mut want_svc = HashMap::new();
        let mut want_be = HashMap::new();
        let mut want_ref = HashMap::new();
        for (key, svc) in &self.services {
            want_svc.insert(SvcKey::from(*key), svc.val());
            let (slots, refs) = svc.entries();
            want_be.extend(slots);
            want_ref.extend(refs);
        }
        let have_svc: HashMap<SvcKey, SvcVal> = services.iter().copied().collect();
        let have_be: HashMap<BeKey, BeVal> = backends.iter().copied().collect();
        let have_ref: HashMap<BeRefKey, u32> = refs.iter().copied().collect();
        let mut ops = Vec::new();
        ops.extend(want_be.iter().filter(|(k, v)| have_be.get(k) != Some(v)).map(|(k, v)| MapOp::PutBackend(*k, *v)));
        ops.extend(want_ref.iter().filter(|(k, v)| have_ref.get(k) != Some(v)).map(|(k, v)| MapOp::PutRef(*k, *v)));
        ops.extend(want_svc.iter().filter(|(k, v)| have_svc.get(k) != Some(v)).map(|(k, v)| MapOp::PutService(*k, *v)));
        ops.extend(have_svc.keys().filter(|k| !want_svc.contains_key(k)).map(|k| MapOp::DeleteService(*k)));
        ops.extend(have_ref.keys().filter(|k| !want_ref.contains_key(k)).map(|k| MapOp::DeleteRef(*k)));
        ops.extend(have_be.keys().filter(|k| !want_be.contains_key(k)).map(|k| MapOp::DeleteBackend(*k)));
        ops
    }
}

/// One service as its map entries describe it: backends from the refs (and
/// from counted slots without one), their data from any slot holding them,
/// slot lists as found (invalid entries dropped), then brought to the weights.
fn adopt_service(v: &SvcVal, refs: Vec<(SocketAddrV4, u16)>, by_slot: &HashMap<BeKey, BeVal>, limits: Limits) -> Service {
    let slot = |base: u32, i: u32| by_slot.get(&BeKey { svc_id: v.id, slot: base | i });
    let main: Vec<BeVal> = (0..u32::from(v.count)).filter_map(|i| slot(0, i)).copied().collect();
    let local: Vec<BeVal> = (0..u32::from(v.local_count)).filter_map(|i| slot(SLOT_LOCAL, i)).copied().collect();
    let parked: Vec<BeVal> = (0..refs.len() as u32).map_while(|i| slot(SLOT_PARKED, i)).copied().collect();

    let mut weights: HashMap<SocketAddrV4, u16> = refs.iter().copied().collect();
    let mut backends: Vec<Backend> = Vec::new();
    let locals: HashSet<SocketAddrV4> = local.iter().map(BeVal::socket_addr).collect();
    for val in main.iter().chain(&parked).chain(&local) {
        let addr = val.socket_addr();
        if backends.iter().any(|b| b.addr == addr) {
            continue;
        }
        // A counted slot without a ref: an interrupted add; keep it at weight 1.
        let weight = weights.remove(&addr).unwrap_or(1);
        let mut b = val.to_backend(weight);
        b.local |= locals.contains(&addr);
        backends.push(b);
    }
    // Refs with no slot anywhere have no data: dropped (their ref is removed).
    backends.truncate(usize::from(limits.max_backends_per_service));
    let known: HashSet<SocketAddrV4> = backends.iter().map(|b| b.addr).collect();
    let keep = |vals: &[BeVal]| vals.iter().map(BeVal::socket_addr).filter(|a| known.contains(a)).collect();
    let mut svc = Service { id: v.id, flags: v.flags, lists: [keep(&main), keep(&local), keep(&parked)], backends };
    let _ = svc.resync(limits.max_slots_per_service);
    svc
}

#[cfg(test)]
mod tests;
