use std::net::{Ipv4Addr, SocketAddrV4};

use super::*;
use crate::maps::REF_WEIGHTED;

/// The three maps as plain hash maps, checking after every write that a
/// program reading them could never pick a missing slot.
#[derive(Default, Debug, Clone)]
struct FakeMaps {
    svc: HashMap<SvcKey, SvcVal>,
    be: HashMap<BeKey, BeVal>,
    refs: HashMap<BeRefKey, u32>,
}

impl FakeMaps {
    fn apply(&mut self, ops: &[MapOp]) {
        for op in ops {
            match *op {
                MapOp::PutService(k, v) => {
                    self.svc.insert(k, v);
                }
                MapOp::DeleteService(k) => {
                    self.svc.remove(&k);
                }
                MapOp::PutBackend(k, v) => {
                    self.be.insert(k, v);
                }
                MapOp::DeleteBackend(k) => {
                    self.be.remove(&k);
                }
                MapOp::PutRef(k, s) => {
                    self.refs.insert(k, s);
                }
                MapOp::DeleteRef(k) => {
                    self.refs.remove(&k);
                }
            }
            self.assert_readable();
        }
    }

    fn assert_readable(&self) {
        for v in self.svc.values() {
            for slot in 0..u32::from(v.count) {
                assert!(self.be.contains_key(&BeKey { svc_id: v.id, slot }), "slot {slot} of {v:?} missing");
            }
            for slot in 0..u32::from(v.local_count) {
                assert!(self.be.contains_key(&BeKey { svc_id: v.id, slot: SLOT_LOCAL | slot }));
            }
        }
    }

    /// How often the program would pick each backend of `key`: (selection
    /// slots per address, local slots per address).
    fn picks(&self, key: &ServiceKey) -> (HashMap<SocketAddrV4, u32>, HashMap<SocketAddrV4, u32>) {
        let v = self.svc[&SvcKey::from(*key)];
        let count = |base: u32, n: u16| {
            let mut m = HashMap::new();
            for slot in 0..u32::from(n) {
                *m.entry(self.be[&BeKey { svc_id: v.id, slot: base | slot }].socket_addr()).or_default() += 1;
            }
            m
        };
        (count(0, v.count), count(SLOT_LOCAL, v.local_count))
    }

    /// Exactly the entries of the table, nothing stale, and slot counts as
    /// the weights ask.
    fn assert_matches(&self, table: &LbTable) {
        let mut svc = HashMap::new();
        let mut be = HashMap::new();
        let mut refs = HashMap::new();
        for (key, s) in &table.services {
            svc.insert(SvcKey::from(*key), s.val());
            let (slots, r) = s.entries();
            be.extend(slots);
            refs.extend(r);
            let weights: Vec<u16> = s.backends.iter().map(|b| b.weight).collect();
            let counts = slot_counts(&weights, u32::from(table.limits.max_slots_per_service));
            let (main, local) = self.picks(key);
            for (b, c) in s.backends.iter().zip(counts) {
                assert_eq!(main.get(&b.addr).copied().unwrap_or(0), c, "{key}: slots of {b}");
                assert_eq!(local.get(&b.addr).copied().unwrap_or(0), if b.local { c } else { 0 }, "{key}: local slots of {b}");
                assert_eq!(self.refs[&BeRefKey::new(s.id, b.addr)], REF_WEIGHTED | u32::from(b.weight));
            }
        }
        assert_eq!(self.svc, svc);
        assert_eq!(self.be, be, "backend slots differ");
        assert_eq!(self.refs, refs);
    }

    fn adopt(&self, limits: Limits) -> (LbTable, Vec<MapOp>) {
        LbTable::adopt(
            limits,
            self.svc.iter().map(|(k, v)| (*k, *v)).collect(),
            self.be.iter().map(|(k, v)| (*k, *v)).collect(),
            self.refs.iter().map(|(k, v)| (*k, *v)).collect(),
        )
    }
}

fn be(last: u8) -> Backend {
    Backend::new(SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, last), 8080))
}

fn local(last: u8) -> Backend {
    Backend::nat(SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, last), 8080), Ipv4Addr::new(10, 0, 1, 254), true)
}

fn vip(n: u8) -> ServiceKey {
    ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, n), 80)
}

fn writes(ops: &[MapOp]) -> usize {
    ops.len()
}

#[test]
fn add_and_remove_keep_slots_dense() {
    let mut t = LbTable::new(Limits::default());
    let mut m = FakeMaps::default();
    m.apply(&t.upsert_service(vip(1), ServiceOptions::default()).unwrap());
    m.apply(&t.set_backends(&vip(1), &[be(1), be(2), be(3), be(4)]).unwrap());
    m.assert_matches(&t);
    let ops = t.remove_backend(&vip(1), be(2).addr).unwrap();
    // The last slot fills the hole: one slot write, the ref, the count, the freed slot.
    assert_eq!(writes(&ops), 4, "{ops:?}");
    m.apply(&ops);
    m.assert_matches(&t);
    assert_eq!(t.backends(&vip(1)).unwrap(), &[be(1), be(3), be(4)]);
    m.apply(&t.remove_backend(&vip(1), be(3).addr).unwrap());
    assert!(t.remove_backend(&vip(1), be(9).addr).unwrap().is_empty());
    m.assert_matches(&t);
}

#[test]
fn one_backend_change_is_constant_work() {
    let mut t = LbTable::new(Limits::default());
    let mut m = FakeMaps::default();
    for n in 0..200u8 {
        let k = ServiceKey::tcp(Ipv4Addr::new(10, 1, 0, n), 80);
        m.apply(&t.upsert_service(k, ServiceOptions::default()).unwrap());
        m.apply(&t.set_backends(&k, &[be(1), be(2), be(3)]).unwrap());
    }
    let k = ServiceKey::tcp(Ipv4Addr::new(10, 1, 0, 7), 80);
    let ops = t.set_backends(&k, &[be(1), be(3), be(4)]).unwrap();
    assert!(ops.len() <= 5, "{ops:?}");
    m.apply(&ops);
    m.assert_matches(&t);
    let ops = t.add_backend(&k, be(5)).unwrap();
    assert_eq!(writes(&ops), 3, "ref, slot, count: {ops:?}");
    m.apply(&ops);
    assert!(t.set_backends(&k, &[be(1), be(3), be(4), be(5)]).unwrap().is_empty(), "re-applying writes nothing");
}

#[test]
fn weights_give_proportional_slots_and_change_only_what_differs() {
    let mut t = LbTable::new(Limits::default());
    let mut m = FakeMaps::default();
    m.apply(&t.upsert_service(vip(1), ServiceOptions::default()).unwrap());
    m.apply(&t.set_backends(&vip(1), &[be(1).with_weight(3), be(2), be(3).with_weight(2)]).unwrap());
    m.assert_matches(&t);
    let (main, _) = m.picks(&vip(1));
    assert_eq!((main[&be(1).addr], main[&be(2).addr], main[&be(3).addr]), (3, 1, 2));
    assert_eq!(t.slots(&vip(1)).unwrap().0.len(), 6);

    // 3 -> 1: the ref, the count and two freed slots (or moves into holes).
    let ops = t.add_backend(&vip(1), be(1)).unwrap();
    assert!(writes(&ops) <= 6, "{ops:?}");
    m.apply(&ops);
    m.assert_matches(&t);

    // Equal weights, whatever their value, take one slot each.
    m.apply(&t.set_backends(&vip(1), &[be(1).with_weight(50), be(2).with_weight(50)]).unwrap());
    m.assert_matches(&t);
    assert_eq!(t.slots(&vip(1)).unwrap().0.len(), 2);
}

#[test]
fn weight_zero_drains_keeps_the_ref_and_parks_the_data() {
    let mut t = LbTable::new(Limits::default());
    let mut m = FakeMaps::default();
    let opts = ServiceOptions { keep_client_ip: true, ..ServiceOptions::default() };
    m.apply(&t.upsert_service(vip(1), opts).unwrap());
    m.apply(&t.set_backends(&vip(1), &[local(1), be(2), local(3)]).unwrap());
    m.apply(&t.add_backend(&vip(1), local(1).with_weight(0)).unwrap());
    m.assert_matches(&t);
    let (main, locals) = m.picks(&vip(1));
    assert!(!main.contains_key(&local(1).addr) && !locals.contains_key(&local(1).addr), "drained backend picked");
    let id = m.svc[&SvcKey::from(vip(1))].id;
    assert_eq!(m.refs[&BeRefKey::new(id, local(1).addr)], REF_WEIGHTED, "drained backend must stay present");
    assert_eq!(m.be[&BeKey { svc_id: id, slot: SLOT_PARKED }], BeVal::from(&local(1)));

    // Every backend drained: nothing to pick.
    m.apply(&t.set_backends(&vip(1), &[local(1).with_weight(0), be(2).with_weight(0)]).unwrap());
    m.assert_matches(&t);
    assert_eq!(m.svc[&SvcKey::from(vip(1))].count, 0);

    // Back from drain.
    m.apply(&t.add_backend(&vip(1), local(1)).unwrap());
    m.assert_matches(&t);
    assert_eq!(m.picks(&vip(1)).1[&local(1).addr], 1);
}

#[test]
fn local_backends_get_their_own_slots() {
    let mut t = LbTable::new(Limits::default());
    let mut m = FakeMaps::default();
    let opts = ServiceOptions { keep_client_ip: true, ..ServiceOptions::default() };
    m.apply(&t.upsert_service(vip(2), opts).unwrap());
    m.apply(&t.set_backends(&vip(2), &[local(1), be(2), local(3), local(4).with_weight(2)]).unwrap());
    m.assert_matches(&t);
    assert_eq!(m.svc[&SvcKey::from(vip(2))].flags, SVC_F_KEEP_CLIENT_IP);
    assert_eq!(t.options(&vip(2)), Some(opts));
    m.apply(&t.remove_backend(&vip(2), local(1).addr).unwrap());
    m.assert_matches(&t);
    // A backend that stops being local moves out of the local list.
    m.apply(&t.add_backend(&vip(2), be(4)).unwrap());
    m.assert_matches(&t);
    assert_eq!(m.svc[&SvcKey::from(vip(2))].local_count, 1);
}

#[test]
fn changed_backend_data_is_rewritten_in_place() {
    let mut t = LbTable::new(Limits::default());
    let mut m = FakeMaps::default();
    m.apply(&t.upsert_service(vip(1), ServiceOptions::default()).unwrap());
    let a = Backend::nat(be(1).addr, Ipv4Addr::new(10, 0, 1, 250), false).with_weight(2);
    m.apply(&t.set_backends(&vip(1), &[a, be(2)]).unwrap());
    let moved = Backend { snat: Some(Ipv4Addr::new(10, 0, 1, 251)), ..a };
    let ops = t.add_backend(&vip(1), moved).unwrap();
    assert!(ops.iter().all(|o| matches!(o, MapOp::PutBackend(..))), "{ops:?}");
    assert_eq!(ops.len(), 2);
    m.apply(&ops);
    m.assert_matches(&t);
}

#[test]
fn removing_a_service_frees_everything_and_reuses_its_id() {
    let mut t = LbTable::new(Limits::default());
    let mut m = FakeMaps::default();
    m.apply(&t.upsert_service(vip(1), ServiceOptions::default()).unwrap());
    m.apply(&t.upsert_service(vip(2), ServiceOptions::default()).unwrap());
    m.apply(&t.set_backends(&vip(1), &[be(1).with_weight(3), local(2), be(3).with_weight(0)]).unwrap());
    let id = m.svc[&SvcKey::from(vip(1))].id;
    m.apply(&t.remove_service(&vip(1)));
    m.assert_matches(&t);
    m.apply(&t.upsert_service(vip(3), ServiceOptions::default()).unwrap());
    assert_eq!(m.svc[&SvcKey::from(vip(3))].id, id);
}

#[test]
fn bad_input_is_refused_without_changes() {
    let mut t = LbTable::new(Limits { max_services: 1, max_backends_per_service: 2, ..Limits::default() });
    let mut m = FakeMaps::default();
    assert!(matches!(t.set_backends(&vip(1), &[be(1)]), Err(Error::UnknownService { .. })));
    m.apply(&t.upsert_service(vip(1), ServiceOptions::default()).unwrap());
    assert!(matches!(t.upsert_service(vip(2), ServiceOptions::default()), Err(Error::ServiceTableFull { max: 1, .. })));
    assert!(matches!(t.set_backends(&vip(1), &[be(1), be(1)]), Err(Error::DuplicateBackend { .. })));
    assert!(matches!(t.set_backends(&vip(1), &[be(1), be(2), be(3)]), Err(Error::TooManyBackends { .. })));
    assert_eq!(t.backends(&vip(1)).unwrap(), &[] as &[Backend]);
    m.assert_matches(&t);
}

#[test]
fn random_changes_keep_the_maps_readable_and_exact() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let limits = Limits { max_slots_per_service: 12, ..Limits::default() };
    let mut t = LbTable::new(limits);
    let mut m = FakeMaps::default();
    for n in 1..=3 {
        m.apply(&t.upsert_service(vip(n), ServiceOptions { keep_client_ip: n == 2, ..ServiceOptions::default() }).unwrap());
    }
    for _ in 0..400 {
        let key = vip(1 + next(3) as u8);
        let pick = |r: u64| {
            let b = if r.is_multiple_of(2) { be(r as u8 % 7) } else { local(r as u8 % 7) };
            b.with_weight((r / 7 % 5) as u16)
        };
        let ops = match next(3) {
            0 => t.add_backend(&key, pick(next(1000))).unwrap(),
            1 => t.remove_backend(&key, be(next(7) as u8).addr).unwrap(),
            _ => {
                let mut bes: Vec<Backend> = (0..next(5)).map(|_| pick(next(1000))).collect();
                bes.sort_by_key(|b| b.addr);
                bes.dedup_by_key(|b| b.addr);
                t.set_backends(&key, &bes).unwrap()
            }
        };
        m.apply(&ops);
        m.assert_matches(&t);
    }
    // What the maps hold adopts as is: no write.
    let (adopted, ops) = m.adopt(limits);
    assert!(ops.is_empty(), "{ops:?}");
    m.assert_matches(&adopted);
}

#[test]
fn adopt_rebuilds_the_table_and_cleans_stale_entries() {
    let mut t = LbTable::new(Limits::default());
    let mut m = FakeMaps::default();
    m.apply(&t.upsert_service(vip(1), ServiceOptions::default()).unwrap());
    m.apply(&t.upsert_service(vip(2), ServiceOptions { keep_client_ip: true, ..ServiceOptions::default() }).unwrap());
    m.apply(&t.set_backends(&vip(1), &[be(1), be(2).with_weight(2), be(3).with_weight(0)]).unwrap());
    m.apply(&t.set_backends(&vip(2), &[local(4), be(5)]).unwrap());
    // Leftovers of an interrupted change.
    let id = m.svc[&SvcKey::from(vip(1))].id;
    m.be.insert(BeKey { svc_id: id, slot: 3 }, BeVal::from(&be(9)));
    m.refs.insert(BeRefKey::new(id, be(9).addr), REF_WEIGHTED | 1);
    m.be.insert(BeKey { svc_id: 77, slot: 0 }, BeVal::from(&be(9)));

    let (mut adopted, ops) = m.adopt(Limits::default());
    m.apply(&ops);
    m.assert_matches(&adopted);
    let sorted = |k: &ServiceKey, t: &LbTable| {
        let mut v = t.backends(k).unwrap().to_vec();
        v.sort_by_key(|b| b.addr);
        v
    };
    assert_eq!(sorted(&vip(1), &adopted), sorted(&vip(1), &t), "weights and drained backends adopted");
    assert_eq!(sorted(&vip(2), &adopted), sorted(&vip(2), &t));
    assert_eq!(adopted.options(&vip(2)), Some(ServiceOptions { keep_client_ip: true, ..ServiceOptions::default() }));
    // New services do not reuse a live id.
    m.apply(&adopted.upsert_service(vip(3), ServiceOptions::default()).unwrap());
    let ids: HashSet<u32> = m.svc.values().map(|v| v.id).collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn maps_of_a_build_without_weights_adopt_as_weight_one() {
    // Before weights: refs held the slot, be_val had no flags.
    let mut m = FakeMaps::default();
    let key = SvcKey::from(vip(1));
    m.svc.insert(key, SvcVal { id: 0, count: 3, local_count: 1, flags: SVC_F_KEEP_CLIENT_IP });
    for (slot, b) in [local(1), be(2), be(3)].iter().enumerate() {
        let old = BeVal { flags: 0, ..BeVal::from(b) };
        m.be.insert(BeKey { svc_id: 0, slot: slot as u32 }, old);
        m.refs.insert(BeRefKey::new(0, b.addr), slot as u32);
    }
    m.be.insert(BeKey { svc_id: 0, slot: SLOT_LOCAL }, BeVal { flags: 0, ..BeVal::from(&local(1)) });

    let (t, ops) = m.adopt(Limits::default());
    assert_eq!(t.backends(&vip(1)).unwrap(), &[local(1), be(2), be(3)]);
    m.apply(&ops);
    m.assert_matches(&t);
    // Only the refs (now with weights) and the local backend's flags were rewritten.
    assert!(ops.len() <= 5, "{ops:?}");
}
