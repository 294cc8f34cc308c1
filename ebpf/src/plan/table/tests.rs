use std::net::{Ipv4Addr, SocketAddrV4};

use super::*;

/// The three maps as plain hash maps, checking after every write that a
/// program reading them could never pick a missing slot.
#[derive(Default, Debug)]
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

    /// Exactly the backends of the table, nothing stale.
    fn assert_matches(&self, table: &LbTable) {
        assert_eq!(self.svc.len(), table.len());
        let mut slots = 0;
        let mut refs = 0;
        for key in table.services() {
            let v = self.svc[&SvcKey::from(*key)];
            let bes = table.backends(key).unwrap();
            assert_eq!(usize::from(v.count), bes.len());
            for (i, b) in bes.iter().enumerate() {
                assert_eq!(self.be[&BeKey { svc_id: v.id, slot: i as u32 }], BeVal::from(b));
                assert_eq!(self.refs[&BeRefKey::new(v.id, b.addr)], i as u32);
            }
            let locals = bes.iter().filter(|b| b.local).count();
            assert_eq!(usize::from(v.local_count), locals);
            slots += bes.len() + locals;
            refs += bes.len();
        }
        assert_eq!(self.be.len(), slots, "stale backend slots: {:?}", self.be);
        assert_eq!(self.refs.len(), refs);
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

#[test]
fn add_and_remove_keep_slots_dense() {
    let mut t = LbTable::new(Limits::default());
    let mut m = FakeMaps::default();
    m.apply(&t.upsert_service(vip(1), ServiceOptions::default()).unwrap());
    m.apply(&t.set_backends(&vip(1), &[be(1), be(2), be(3), be(4)]).unwrap());
    m.assert_matches(&t);
    m.apply(&t.remove_backend(&vip(1), be(2).addr).unwrap());
    m.assert_matches(&t);
    assert_eq!(t.backends(&vip(1)).unwrap(), &[be(1), be(4), be(3)]);
    m.apply(&t.remove_backend(&vip(1), be(3).addr).unwrap());
    m.apply(&t.remove_backend(&vip(1), be(9).addr).unwrap());
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
    assert!(ops.len() <= 9, "{ops:?}");
    m.apply(&ops);
    m.assert_matches(&t);
}

#[test]
fn local_backends_get_their_own_slots() {
    let mut t = LbTable::new(Limits::default());
    let mut m = FakeMaps::default();
    let opts = ServiceOptions { keep_client_ip: true };
    m.apply(&t.upsert_service(vip(2), opts).unwrap());
    m.apply(&t.set_backends(&vip(2), &[local(1), be(2), local(3), local(4)]).unwrap());
    m.assert_matches(&t);
    assert_eq!(m.svc[&SvcKey::from(vip(2))].flags, SVC_F_KEEP_CLIENT_IP);
    m.apply(&t.remove_backend(&vip(2), local(1).addr).unwrap());
    m.assert_matches(&t);
    // A backend that stops being local moves out of the local list.
    m.apply(&t.add_backend(&vip(2), be(4)).unwrap());
    m.assert_matches(&t);
    assert_eq!(m.svc[&SvcKey::from(vip(2))].local_count, 1);
}

#[test]
fn removing_a_service_frees_everything_and_reuses_its_id() {
    let mut t = LbTable::new(Limits::default());
    let mut m = FakeMaps::default();
    m.apply(&t.upsert_service(vip(1), ServiceOptions::default()).unwrap());
    m.apply(&t.upsert_service(vip(2), ServiceOptions::default()).unwrap());
    m.apply(&t.set_backends(&vip(1), &[be(1), local(2)]).unwrap());
    let id = m.svc[&SvcKey::from(vip(1))].id;
    m.apply(&t.remove_service(&vip(1)));
    m.assert_matches(&t);
    m.apply(&t.upsert_service(vip(3), ServiceOptions::default()).unwrap());
    assert_eq!(m.svc[&SvcKey::from(vip(3))].id, id);
}

#[test]
fn bad_input_is_refused_without_changes() {
    let mut t = LbTable::new(Limits { max_services: 1, max_backends_per_service: 2 });
    let mut m = FakeMaps::default();
    assert!(matches!(t.set_backends(&vip(1), &[be(1)]), Err(Error::UnknownService { .. })));
    m.apply(&t.upsert_service(vip(1), ServiceOptions::default()).unwrap());
    assert!(matches!(
        t.upsert_service(vip(2), ServiceOptions::default()),
        Err(Error::ServiceTableFull { max: 1, .. })
    ));
    assert!(matches!(t.set_backends(&vip(1), &[be(1), be(1)]), Err(Error::DuplicateBackend { .. })));
    assert!(matches!(t.set_backends(&vip(1), &[be(1), be(2), be(3)]), Err(Error::TooManyBackends { .. })));
    assert_eq!(t.backends(&vip(1)).unwrap(), &[] as &[Backend]);
    m.assert_matches(&t);
}

#[test]
fn adopt_rebuilds_the_table_and_cleans_stale_entries() {
    let mut t = LbTable::new(Limits::default());
    let mut m = FakeMaps::default();
    m.apply(&t.upsert_service(vip(1), ServiceOptions::default()).unwrap());
    m.apply(&t.upsert_service(vip(2), ServiceOptions { keep_client_ip: true }).unwrap());
    m.apply(&t.set_backends(&vip(1), &[be(1), be(2), be(3)]).unwrap());
    m.apply(&t.set_backends(&vip(2), &[local(4), be(5)]).unwrap());
    // Leftovers of an interrupted change.
    m.be.insert(BeKey { svc_id: 0, slot: 3 }, BeVal::from(&be(9)));
    m.refs.insert(BeRefKey::new(0, be(9).addr), 3);

    let (mut adopted, ops) = LbTable::adopt(
        Limits::default(),
        m.svc.iter().map(|(k, v)| (*k, *v)).collect(),
        m.be.iter().map(|(k, v)| (*k, *v)).collect(),
        m.refs.keys().copied().collect(),
    );
    m.apply(&ops);
    m.assert_matches(&adopted);
    assert_eq!(adopted.backends(&vip(1)).unwrap(), t.backends(&vip(1)).unwrap());
    assert_eq!(adopted.backends(&vip(2)).unwrap(), t.backends(&vip(2)).unwrap());
    // New services do not reuse a live id.
    m.apply(&adopted.upsert_service(vip(3), ServiceOptions::default()).unwrap());
    let ids: HashSet<u32> = m.svc.values().map(|v| v.id).collect();
    assert_eq!(ids.len(), 3);
}
