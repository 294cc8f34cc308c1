//! Pure planning of the IPVS balancer: what the kernel holds ([`Observed`]: our fwmark
//! services with their destinations, the nftables table, the IPVS sysctls) and the operations
//! ([`IpvsOp`], in execution order) that bring it to a desired [`LbTable`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddrV4;

use super::table::{self, NftLine, TableObserved, BASE_CHAINS, SNAT_CHAIN};
use crate::lb::plan::{Kind, LbTable, Proto, ServiceKey, Target, ANY_PORT};

/// The fwmarks shoal's IPVS balancer uses: this tag in the top byte, the frontend's number in
/// the low 24 bits. IPVS services with other marks (or address services) are not ours.
pub const MARK_TAG: u32 = 0x5e00_0000;
pub const MARK_TAG_MASK: u32 = 0xff00_0000;
/// Weighted round robin: equal weights make it plain round robin; Target weights are honoured.
pub const SCHEDULER: &str = "wrr";
/// The IPVS sysctls (per network namespace) and the values the balancer needs.
pub const SYSCTLS: [(&str, &str); 3] = [
    // IPVS connections are seen by nf_conntrack, so nft's SNAT applies to them.
    ("conntrack", "1"),
    // A packet of a connection whose destination was deleted expires it (and its conntrack
    // entry) and is scheduled anew: UDP flows move off a removed backend.
    ("expire_nodest_conn", "1"),
    // Persistence templates to a quiescent (weight 0) destination expire too.
    ("expire_quiescent_template", "1"),
];

pub fn is_ours(mark: u32) -> bool {
    mark & MARK_TAG_MASK == MARK_TAG
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObservedDest {
    pub weight: u32,
    /// Forwarded with NAT (IP_VS_CONN_F_MASQ).
    pub masq: bool,
    /// Established TCP connections on it.
    pub active: u32,
    pub inactive: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedService {
    pub scheduler: String,
    pub dests: BTreeMap<SocketAddrV4, ObservedDest>,
}

/// What the kernel holds for the IPVS balancer in this network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub table: TableObserved,
    /// Our fwmark services by mark.
    pub services: BTreeMap<u32, ObservedService>,
    /// `net.ipv4.vs.<name>` -> its value (None: unreadable).
    pub sysctls: BTreeMap<String, Option<String>>,
}

pub type FrontendId = (Kind, ServiceKey);

/// One change, in the order the applier runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsOp {
    Sysctl {
        name: &'static str,
        value: &'static str,
    },
    NewService {
        mark: u32,
        fe: FrontendId,
    },
    /// Fixes the scheduler of an adopted service.
    SetService {
        mark: u32,
        fe: FrontendId,
    },
    /// Removes the service and its destinations (`fe` None: an orphan no frontend reaches).
    DelService {
        mark: u32,
        fe: Option<FrontendId>,
    },
    NewDest {
        mark: u32,
        fe: FrontendId,
        dest: SocketAddrV4,
        weight: u32,
    },
    /// Weight 0 quiesces a removed backend that still has established connections.
    SetDest {
        mark: u32,
        fe: FrontendId,
        dest: SocketAddrV4,
        weight: u32,
        active: u32,
    },
    DelDest {
        mark: u32,
        fe: FrontendId,
        dest: SocketAddrV4,
    },
    /// One line of the nftables batch (consecutive lines are committed as one transaction).
    Nft(NftLine),
}

fn label(fe: &FrontendId) -> String {
    match fe.0 {
        Kind::Vip => format!("vip {}:*/{}", fe.1.addr, fe.1.proto),
        Kind::Published => format!("{} {}", fe.0, fe.1),
    }
}

impl fmt::Display for IpvsOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpvsOp::Sysctl { name, value } => write!(f, "sysctl net.ipv4.vs.{name}={value}"),
            IpvsOp::NewService { mark, fe } => write!(f, "ipvs add service fwmark {mark:#010x} ({}) scheduler {SCHEDULER}", label(fe)),
            IpvsOp::SetService { mark, fe } => write!(f, "ipvs set service fwmark {mark:#010x} ({}) scheduler {SCHEDULER}", label(fe)),
            IpvsOp::DelService { mark, fe: Some(fe) } => write!(f, "ipvs remove service fwmark {mark:#010x} ({})", label(fe)),
            IpvsOp::DelService { mark, fe: None } => write!(f, "ipvs remove service fwmark {mark:#010x} (no frontend)"),
            IpvsOp::NewDest { mark, fe, dest, weight } => {
                write!(f, "ipvs add dest {dest} masq weight {weight} to fwmark {mark:#010x} ({})", label(fe))
            }
            IpvsOp::SetDest { mark, fe, dest, weight: 0, active } => {
                write!(f, "ipvs drain dest {dest} (weight 0, {active} established) of fwmark {mark:#010x} ({})", label(fe))
            }
            IpvsOp::SetDest { mark, fe, dest, weight, .. } => {
                write!(f, "ipvs set dest {dest} masq weight {weight} of fwmark {mark:#010x} ({})", label(fe))
            }
            IpvsOp::DelDest { mark, fe, dest } => write!(f, "ipvs remove dest {dest} from fwmark {mark:#010x} ({})", label(fe)),
            IpvsOp::Nft(l) => write!(f, "nft {l}"),
        }
    }
}

/// FNV-1a of the frontend, folded to 24 bits: the first mark tried for it.
fn mark_hash(fe: &FrontendId) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let proto = match fe.1.proto {
        Proto::Tcp => 6u8,
        Proto::Udp => 17,
    };
    let kind = fe.0 as u8;
    for b in [kind, proto].iter().chain(fe.1.addr.octets().iter()).chain(fe.1.port.to_be_bytes().iter()) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h >> 24) ^ (h & 0x00ff_ffff)
}

/// The fwmark of every frontend in `want`: the one the table already maps it to (adoption),
/// else its hash, probing past marks the table maps to other frontends. An IPVS service left
/// without a map element (the table was lost) is adopted when its mark comes up again.
pub fn assign_marks<'a>(want: impl Iterator<Item = &'a FrontendId>, table: &TableObserved) -> BTreeMap<FrontendId, u32> {
    let mut taken: BTreeSet<u32> = table.elements.values().copied().collect();
    let mut out = BTreeMap::new();
    let mut fresh = Vec::new();
    for fe in want {
        match table.elements.get(fe) {
            Some(m) => {
                out.insert(*fe, *m);
            }
            None => fresh.push(*fe),
        }
    }
    for fe in fresh {
        let mut n = mark_hash(&fe);
        let mark = loop {
            let m = MARK_TAG | (n & 0x00ff_ffff);
            if taken.insert(m) {
                break m;
            }
            n = n.wrapping_add(1);
        };
        out.insert(fe, mark);
    }
    out
}

/// A frontend as IPVS should hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Want {
    snat: bool,
    dests: BTreeMap<SocketAddrV4, u32>,
}

fn wanted(desired: &LbTable, scope: Option<&BTreeSet<FrontendId>>) -> BTreeMap<FrontendId, Want> {
    let mut w = BTreeMap::new();
    for kind in [Kind::Vip, Kind::Published] {
        for (key, f) in desired.frontends(kind) {
            if scope.is_some_and(|s| !s.contains(&(kind, *key))) {
                continue;
            }
            // A VIP carries every port: a VIP key with a port is not one (lb::plan never
            // makes it), and its destinations' port 0 is the packet's own port in IPVS.
            if kind == Kind::Vip && key.port != ANY_PORT {
                continue;
            }
            let (bes, snat) = f.chosen(kind);
            let port = |b: &Target| if kind == Kind::Vip { ANY_PORT } else { b.addr.port() };
            let dests = bes.iter().map(|b| (SocketAddrV4::new(*b.addr.ip(), port(b)), u32::from(b.weight.max(1)))).collect();
            w.insert((kind, *key), Want { snat, dests });
        }
    }
    w
}

fn snat_rules(desired: &LbTable) -> Vec<(String, String)> {
    desired.bridges.iter().map(|(bridge, lb)| (format!("oifname \"{bridge}\" snat to {lb}"), format!("snat {bridge} {lb}"))).collect()
}

/// The nft lines that build the table's skeleton and bring its chains to `desired`.
fn skeleton(desired: &LbTable, t: &TableObserved) -> Vec<NftLine> {
    let mut lines = Vec::new();
    if !t.present {
        lines.push(NftLine::AddTable);
    }
    for kind in [Kind::Vip, Kind::Published] {
        if !t.sets.contains(table::map_name(kind)) {
            lines.push(NftLine::AddMap(kind));
        }
    }
    if !t.sets.contains(table::SNAT_SET) {
        lines.push(NftLine::AddSnatSet);
    }
    let mut chain = |name: &'static str, base: bool, rules: Vec<(String, String)>| {
        let comments: Vec<String> = rules.iter().map(|(_, c)| c.clone()).collect();
        match t.chains.get(name) {
            Some(have) if *have == comments => return,
            Some(_) => lines.push(NftLine::FlushChain(name)),
            None if base => lines.push(NftLine::AddBaseChain(name)),
            None => lines.push(NftLine::AddChain(name)),
        }
        for (rule, comment) in rules {
            lines.push(NftLine::AddRule { chain: name, rule, comment });
        }
    };
    // The SNAT chain first: postrouting jumps to it.
    chain(SNAT_CHAIN, false, snat_rules(desired));
    for base in BASE_CHAINS {
        chain(base, true, table::base_rules(base).into_iter().map(|(c, r)| (r, c.to_string())).collect());
    }
    // Sets of another layout, once no rule uses them (the chains were rewritten above).
    let ours = [table::map_name(Kind::Vip), table::map_name(Kind::Published), table::SNAT_SET];
    for name in t.sets.iter().filter(|s| !ours.contains(&s.as_str())) {
        lines.push(NftLine::DeleteSet(name.clone()));
    }
    lines
}

/// The operations that bring `obs` to `desired`, in execution order:
/// 1. sysctls; 2. new services and new or re-weighted destinations (before anything steers to
///    them); 3. one nftables batch (table, chains, map elements, SNAT marks; removed frontends'
///    elements); 4. removed backends drained or deleted, removed frontends' services deleted.
///
/// A removed backend with established TCP connections is set to weight 0 (quiescent: no new
/// flows, its connections go on) and deleted by a later plan once it has none; a removed UDP
/// backend, or one without established connections, is deleted at once (with
/// `expire_nodest_conn`, its flows' next packets are scheduled anew).
///
/// `scope` limits the plan to some frontends (the incremental path): nothing else is looked at
/// or removed, and `obs.services` needs to hold only theirs.
pub fn plan(desired: &LbTable, obs: &Observed, scope: Option<&BTreeSet<FrontendId>>) -> Vec<IpvsOp> {
    let want = wanted(desired, scope);
    let marks = assign_marks(want.keys(), &obs.table);
    let mut ops = Vec::new();
    for (name, value) in SYSCTLS {
        if obs.sysctls.get(name).and_then(|v| v.as_deref()) != Some(value) {
            ops.push(IpvsOp::Sysctl { name, value });
        }
    }
    let mut nft: Vec<NftLine> = skeleton(desired, &obs.table);
    let mut removes = Vec::new();
    let mut del_services = Vec::new();
    for (fe, w) in &want {
        let (fe, mark) = (*fe, marks[fe]);
        let empty = ObservedService::default();
        let have = match obs.services.get(&mark) {
            Some(s) => {
                if s.scheduler != SCHEDULER {
                    ops.push(IpvsOp::SetService { mark, fe });
                }
                s
            }
            None => {
                ops.push(IpvsOp::NewService { mark, fe });
                &empty
            }
        };
        for (dest, weight) in &w.dests {
            match have.dests.get(dest) {
                None => ops.push(IpvsOp::NewDest { mark, fe, dest: *dest, weight: *weight }),
                Some(d) if d.weight != *weight || !d.masq => {
                    ops.push(IpvsOp::SetDest { mark, fe, dest: *dest, weight: *weight, active: d.active })
                }
                Some(_) => {}
            }
        }
        for (dest, d) in have.dests.iter().filter(|(a, _)| !w.dests.contains_key(a)) {
            if fe.1.proto == Proto::Udp || d.active == 0 {
                removes.push(IpvsOp::DelDest { mark, fe, dest: *dest });
            } else if d.weight != 0 {
                removes.push(IpvsOp::SetDest { mark, fe, dest: *dest, weight: 0, active: d.active });
            }
        }
        match obs.table.elements.get(&fe) {
            Some(m) if *m == mark => {}
            Some(_) => {
                nft.push(NftLine::DeleteElement { kind: fe.0, key: fe.1 });
                nft.push(NftLine::AddElement { kind: fe.0, key: fe.1, mark });
            }
            None => nft.push(NftLine::AddElement { kind: fe.0, key: fe.1, mark }),
        }
        match (w.snat, obs.table.snat_marks.contains(&mark)) {
            (true, false) => nft.push(NftLine::AddSnatMark(mark)),
            (false, true) => nft.push(NftLine::DeleteSnatMark(mark)),
            _ => {}
        }
    }
    // Frontends that went: stop steering, then remove their services.
    let in_scope = |fe: &FrontendId| scope.is_none_or(|s| s.contains(fe));
    let used: BTreeSet<u32> = marks.values().copied().collect();
    for (fe, mark) in obs.table.elements.iter().filter(|(fe, _)| in_scope(fe) && !want.contains_key(fe)) {
        nft.push(NftLine::DeleteElement { kind: fe.0, key: fe.1 });
        if used.contains(mark) {
            continue;
        }
        if obs.table.snat_marks.contains(mark) {
            nft.push(NftLine::DeleteSnatMark(*mark));
        }
        if obs.services.contains_key(mark) {
            del_services.push(IpvsOp::DelService { mark: *mark, fe: Some(*fe) });
        }
    }
    if scope.is_none() {
        let mapped: BTreeSet<u32> = obs.table.elements.values().copied().collect();
        for mark in obs.services.keys().filter(|m| !used.contains(m) && !mapped.contains(m)) {
            del_services.push(IpvsOp::DelService { mark: *mark, fe: None });
        }
        for mark in obs.table.snat_marks.iter().filter(|m| !used.contains(m) && !mapped.contains(m)) {
            nft.push(NftLine::DeleteSnatMark(*mark));
        }
    }
    ops.extend(nft.into_iter().map(IpvsOp::Nft));
    ops.extend(removes);
    ops.extend(del_services);
    ops
}

/// Everything the balancer made: the table first (nothing is steered any more), then every
/// service of ours. The sysctls stay (they change nothing without services).
pub fn plan_teardown(obs: &Observed) -> Vec<IpvsOp> {
    let mut ops = Vec::new();
    if obs.table.present {
        ops.push(IpvsOp::Nft(NftLine::DeleteTable));
    }
    let by_mark: BTreeMap<u32, FrontendId> = obs.table.elements.iter().map(|(fe, m)| (*m, *fe)).collect();
    for mark in obs.services.keys() {
        ops.push(IpvsOp::DelService { mark: *mark, fe: by_mark.get(mark).copied() });
    }
    ops
}

impl Observed {
    /// The model after `ops` were applied (connection counts of new destinations start at 0).
    pub fn apply(&mut self, ops: &[IpvsOp]) {
        let mut lines = Vec::new();
        for op in ops {
            match op {
                IpvsOp::Sysctl { name, value } => {
                    self.sysctls.insert(name.to_string(), Some(value.to_string()));
                }
                IpvsOp::NewService { mark, .. } | IpvsOp::SetService { mark, .. } => {
                    self.services.entry(*mark).or_default().scheduler = SCHEDULER.to_string();
                }
                IpvsOp::DelService { mark, .. } => {
                    self.services.remove(mark);
                }
                IpvsOp::NewDest { mark, dest, weight, .. } | IpvsOp::SetDest { mark, dest, weight, .. } => {
                    let d = self.services.entry(*mark).or_default().dests.entry(*dest).or_default();
                    d.weight = *weight;
                    d.masq = true;
                }
                IpvsOp::DelDest { mark, dest, .. } => {
                    if let Some(s) = self.services.get_mut(mark) {
                        s.dests.remove(dest);
                    }
                }
                IpvsOp::Nft(l) => lines.push(l.clone()),
            }
        }
        self.table.apply(&lines);
    }

    /// Frontends and their destinations, one label each (for `show`).
    pub fn summary(&self) -> Vec<(Kind, ServiceKey, Vec<String>)> {
        self.table
            .elements
            .iter()
            .map(|((kind, key), mark)| {
                let dests = self.services.get(mark).map(|s| s.dests.iter().collect::<Vec<_>>()).unwrap_or_default();
                let labels = dests
                    .into_iter()
                    .map(|(a, d)| match d.weight {
                        0 => format!("{a} draining ({} established)", d.active),
                        1 => a.to_string(),
                        w => format!("{a} weight {w}"),
                    })
                    .collect();
                (*kind, *key, labels)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::plan::{desired, diff, Frontend};
    use std::net::Ipv4Addr;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn table() -> LbTable {
        desired(&crate::lb::plan::tests::state("a"))
    }

    fn converge(t: &LbTable) -> Observed {
        let mut obs = Observed::default();
        obs.apply(&plan(t, &obs, None));
        obs
    }

    fn text(ops: &[IpvsOp]) -> Vec<String> {
        ops.iter().map(|o| o.to_string()).collect()
    }

    /// web's TCP VIP (every port).
    fn vip80() -> FrontendId {
        (Kind::Vip, ServiceKey::tcp(ip("10.0.9.100"), ANY_PORT))
    }

    #[test]
    fn first_plan_builds_everything_in_order_and_the_second_is_empty() {
        let t = table();
        let ops = plan(&t, &Observed::default(), None);
        let lines = text(&ops);
        assert_eq!(
            &lines[..3],
            ["sysctl net.ipv4.vs.conntrack=1", "sysctl net.ipv4.vs.expire_nodest_conn=1", "sysctl net.ipv4.vs.expire_quiescent_template=1"]
        );
        let frontends = t.vips.len() + t.published.len();
        assert_eq!(ops.iter().filter(|o| matches!(o, IpvsOp::NewService { .. })).count(), frontends);
        // services and destinations exist before the first nft line steers to them
        let first_nft = ops.iter().position(|o| matches!(o, IpvsOp::Nft(_))).unwrap();
        let last_ipvs = ops.iter().rposition(|o| matches!(o, IpvsOp::NewService { .. } | IpvsOp::NewDest { .. })).unwrap();
        assert!(last_ipvs < first_nft, "{lines:#?}");
        assert!(ops[first_nft..].iter().all(|o| matches!(o, IpvsOp::Nft(_))), "{lines:#?}");
        assert!(lines.contains(
            &"nft add rule ip shoal_ipvs mesh_snat oifname \"shb-4097\" snat to 10.0.9.250 comment \"snat shb-4097 10.0.9.250\""
                .to_string()
        ));
        let mark = assign_marks([vip80()].iter(), &TableObserved::default())[&vip80()];
        // a VIP's destinations have port 0: the packet's own port
        assert!(
            lines.contains(&format!("ipvs add dest 10.0.9.3:0 masq weight 1 to fwmark {mark:#010x} (vip 10.0.9.100:*/tcp)")),
            "{lines:#?}"
        );
        assert!(lines.contains(&format!("nft add element ip shoal_ipvs vips_any {{ 10.0.9.100 . tcp : {mark:#010x} }}")), "{lines:#?}");
        assert!(
            lines.contains(
                &"nft add rule ip shoal_ipvs prerouting meta mark set ip daddr . meta l4proto map @vips_any comment \"shoal-vips-any\""
                    .to_string()
            ),
            "{lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("nft add element ip shoal_ipvs published { 192.168.33.10 . tcp . 5000 : ")),
            "{lines:#?}"
        );
        let obs = converge(&t);
        assert_eq!(plan(&t, &obs, None), vec![]);
        assert_eq!(obs.table.elements.len(), frontends);
        // every frontend has its own mark, all ours
        let marks: BTreeSet<u32> = obs.table.elements.values().copied().collect();
        assert_eq!(marks.len(), frontends);
        assert!(marks.iter().all(|m| is_ours(*m)));
    }

    #[test]
    fn snat_follows_the_frontend_and_host_mode_keeps_the_client_address() {
        let t = table();
        let obs = converge(&t);
        let mark = |fe: &FrontendId| obs.table.elements[fe];
        let host = (Kind::Published, ServiceKey::tcp(ip("192.168.33.10"), 6000));
        assert!(!obs.table.snat_marks.contains(&mark(&host)));
        assert_eq!(obs.services[&mark(&host)].dests.keys().copied().collect::<Vec<_>>(), vec![sa("10.0.9.2:8080")]);
        assert!(obs.table.snat_marks.contains(&mark(&vip80())));
        let mesh = (Kind::Published, ServiceKey::tcp(ip("192.168.33.10"), 5000));
        assert!(obs.table.snat_marks.contains(&mark(&mesh)));
        assert_eq!(obs.services[&mark(&mesh)].dests.len(), 3);
        // keep_client_ip: the local task alone, unSNATed; without a local task, all of them SNATed
        let mut keep = t.clone();
        keep.published.get_mut(&mesh.1).unwrap().keep_client_ip = true;
        let ops = plan(&keep, &obs, None);
        let m = mark(&mesh);
        assert_eq!(
            ops,
            vec![
                IpvsOp::Nft(NftLine::DeleteSnatMark(m)),
                IpvsOp::DelDest { mark: m, fe: mesh, dest: sa("10.0.9.3:80") },
                IpvsOp::DelDest { mark: m, fe: mesh, dest: sa("10.0.9.4:80") },
            ]
        );
        let mut obs2 = obs.clone();
        obs2.apply(&ops);
        let mut no_local = keep.clone();
        no_local.published.get_mut(&mesh.1).unwrap().backends.retain(|b| !b.local);
        let ops = plan(&no_local, &obs2, None);
        assert!(ops.contains(&IpvsOp::Nft(NftLine::AddSnatMark(m))), "{:#?}", text(&ops));
        assert_eq!(ops.iter().filter(|o| matches!(o, IpvsOp::NewDest { .. })).count(), 2);
    }

    #[test]
    fn a_removed_backend_drains_while_it_has_established_tcp_and_udp_moves_at_once() {
        let t = table();
        let mut obs = converge(&t);
        let m80 = obs.table.elements[&vip80()];
        let udp = (Kind::Vip, ServiceKey::udp(ip("10.0.9.100"), ANY_PORT));
        let m53 = obs.table.elements[&udp];
        obs.services.get_mut(&m80).unwrap().dests.get_mut(&sa("10.0.9.3:0")).unwrap().active = 2;
        obs.services.get_mut(&m53).unwrap().dests.get_mut(&sa("10.0.9.3:0")).unwrap().inactive = 5;
        let mut after = t.clone();
        for f in after.vips.values_mut().chain(after.published.values_mut()) {
            f.backends.retain(|b| b.addr.ip() != &ip("10.0.9.3"));
        }
        let ops = plan(&after, &obs, None);
        assert!(
            ops.contains(&IpvsOp::SetDest { mark: m80, fe: vip80(), dest: sa("10.0.9.3:0"), weight: 0, active: 2 }),
            "{:#?}",
            text(&ops)
        );
        assert!(ops.contains(&IpvsOp::DelDest { mark: m53, fe: udp, dest: sa("10.0.9.3:0") }));
        // no established connection: deleted at once
        let mesh = (Kind::Published, ServiceKey::tcp(ip("192.168.33.10"), 5000));
        assert!(ops.contains(&IpvsOp::DelDest { mark: obs.table.elements[&mesh], fe: mesh, dest: sa("10.0.9.3:80") }));
        assert!(ops.iter().all(|o| !matches!(o, IpvsOp::Nft(_) | IpvsOp::DelService { .. })), "no frontend changed: {:#?}", text(&ops));
        obs.apply(&ops);
        // draining with its connection still open: nothing to do (a restart changes nothing)
        assert_eq!(plan(&after, &obs, None), vec![]);
        // the connection ended: the next plan deletes it
        obs.services.get_mut(&m80).unwrap().dests.get_mut(&sa("10.0.9.3:0")).unwrap().active = 0;
        assert_eq!(plan(&after, &obs, None), vec![IpvsOp::DelDest { mark: m80, fe: vip80(), dest: sa("10.0.9.3:0") }]);
        // the backend comes back while draining: weight restored, not re-added
        obs.services.get_mut(&m80).unwrap().dests.get_mut(&sa("10.0.9.3:0")).unwrap().active = 1;
        let back = plan(&t, &obs, None);
        assert!(
            back.contains(&IpvsOp::SetDest { mark: m80, fe: vip80(), dest: sa("10.0.9.3:0"), weight: 1, active: 1 }),
            "{:#?}",
            text(&back)
        );
    }

    #[test]
    fn one_backend_change_is_one_ipvs_op_per_frontend_whatever_the_table_size() {
        let count = |n: u32| {
            let mut t = table();
            for i in 0..n {
                let key = ServiceKey::tcp(Ipv4Addr::from(0x0a60_0000 + i), ANY_PORT);
                let be = Target {
                    addr: SocketAddrV4::new(Ipv4Addr::from(0x0a00_0900 + (i % 200)), ANY_PORT),
                    snat: ip("10.0.9.250"),
                    local: false,
                    weight: 1,
                };
                t.vips.insert(key, Frontend { keep_client_ip: false, backends: vec![be] });
            }
            let obs = converge(&t);
            let mut after = t.clone();
            after.vips.get_mut(&vip80().1).unwrap().backends.retain(|b| b.addr.ip() != &ip("10.0.9.4"));
            plan(&after, &obs, None)
        };
        let small = count(10);
        let large = count(3000);
        assert_eq!(small.len(), 1, "{:#?}", text(&small));
        assert_eq!(large.len(), 1, "{:#?}", text(&large));
        assert!(matches!(large[0], IpvsOp::DelDest { dest, .. } if dest == sa("10.0.9.4:0")));
    }

    #[test]
    fn weights_are_destination_weights() {
        let mut t = table();
        t.vips.get_mut(&vip80().1).unwrap().backends[1].weight = 3;
        let obs = converge(&table());
        let ops = plan(&t, &obs, None);
        let m = obs.table.elements[&vip80()];
        assert_eq!(ops, vec![IpvsOp::SetDest { mark: m, fe: vip80(), dest: sa("10.0.9.3:0"), weight: 3, active: 0 }]);
        assert_eq!(text(&ops)[0], format!("ipvs set dest 10.0.9.3:0 masq weight 3 of fwmark {m:#010x} (vip 10.0.9.100:*/tcp)"));
    }

    #[test]
    fn a_removed_frontend_stops_being_steered_before_its_service_goes() {
        let t = table();
        let obs = converge(&t);
        let mut after = t.clone();
        after.published.retain(|k, _| k.port != 6000);
        let host = (Kind::Published, ServiceKey::tcp(ip("192.168.33.10"), 6000));
        let m = obs.table.elements[&host];
        assert_eq!(
            plan(&after, &obs, None),
            vec![IpvsOp::Nft(NftLine::DeleteElement { kind: host.0, key: host.1 }), IpvsOp::DelService { mark: m, fe: Some(host) }]
        );
        assert_eq!(diff(&t, &after).len(), 1);
        // a frontend left without backends keeps its service and element: nothing new is
        // scheduled (IPVS answers port unreachable) and established flows drain
        let mut empty = t.clone();
        empty.vips.get_mut(&vip80().1).unwrap().backends.clear();
        let ops = plan(&empty, &obs, None);
        assert_eq!(ops.len(), 3);
        assert!(ops.iter().all(|o| matches!(o, IpvsOp::DelDest { .. })));
    }

    #[test]
    fn a_new_process_adopts_what_the_kernel_holds() {
        let t = table();
        let obs = converge(&t);
        // the table was lost but the services survived: same marks, only nft lines
        let lost = Observed { table: TableObserved::default(), ..obs.clone() };
        let ops = plan(&t, &lost, None);
        assert!(ops.iter().all(|o| matches!(o, IpvsOp::Nft(_))), "{:#?}", text(&ops));
        let mut repaired = lost.clone();
        repaired.apply(&ops);
        assert_eq!(repaired, obs);
        // a service changed behind our back is repaired, foreign marks are never touched
        let mut bent = obs.clone();
        let m = obs.table.elements[&vip80()];
        bent.services.get_mut(&m).unwrap().scheduler = "lc".into();
        bent.services.get_mut(&m).unwrap().dests.get_mut(&sa("10.0.9.2:0")).unwrap().masq = false;
        bent.services.insert(MARK_TAG | 0xabcdef, ObservedService { scheduler: "rr".into(), dests: BTreeMap::new() });
        let ops = plan(&t, &bent, None);
        assert_eq!(
            ops,
            vec![
                IpvsOp::SetService { mark: m, fe: vip80() },
                IpvsOp::SetDest { mark: m, fe: vip80(), dest: sa("10.0.9.2:0"), weight: 1, active: 0 },
                IpvsOp::DelService { mark: MARK_TAG | 0xabcdef, fe: None },
            ]
        );
        assert!(!is_ours(0x100) && !is_ours(0x5f00_0001));
    }

    #[test]
    fn marks_never_collide_and_keep_what_the_table_maps() {
        let mut t = TableObserved::default();
        let a = vip80();
        let b = (Kind::Published, ServiceKey::tcp(ip("192.168.33.10"), 5000));
        let first = assign_marks([a].iter(), &t)[&a];
        // another frontend already holds a's hash: a probes to the next mark
        t.elements.insert(b, first);
        let marks = assign_marks([a, b].iter(), &t);
        assert_eq!(marks[&b], first);
        assert_eq!(marks[&a], MARK_TAG | ((first + 1) & 0x00ff_ffff));
        let many: Vec<FrontendId> = (0..20_000u16).map(|p| (Kind::Published, ServiceKey::udp(ip("10.0.9.7"), p))).collect();
        let m = assign_marks(many.iter(), &TableObserved::default());
        assert_eq!(m.values().collect::<BTreeSet<_>>().len(), many.len());
    }

    #[test]
    fn a_scoped_plan_looks_only_at_its_frontends() {
        let t = table();
        let mut obs = converge(&t);
        let mut after = t.clone();
        after.vips.get_mut(&vip80().1).unwrap().backends.remove(0);
        let new = ServiceKey::tcp(ip("10.0.9.101"), ANY_PORT);
        after.vips.insert(new, t.vips[&vip80().1].clone());
        let scope: BTreeSet<FrontendId> = [vip80(), (Kind::Vip, new)].into_iter().collect();
        // the incremental path knows only the touched services
        let m = obs.table.elements[&vip80()];
        let mine = obs.services[&m].clone();
        obs.services = [(m, mine)].into_iter().collect();
        let ops = plan(&after, &obs, Some(&scope));
        let lines = text(&ops);
        assert_eq!(ops.iter().filter(|o| matches!(o, IpvsOp::DelDest { .. })).count(), 1, "{lines:#?}");
        assert_eq!(ops.iter().filter(|o| matches!(o, IpvsOp::NewService { .. })).count(), 1, "{lines:#?}");
        assert!(!ops.iter().any(|o| matches!(o, IpvsOp::DelService { .. })), "services outside the scope are not orphans: {lines:#?}");
        let new_mark = ops.iter().find_map(|o| if let IpvsOp::NewService { mark, .. } = o { Some(*mark) } else { None }).unwrap();
        assert!(!converge(&t).table.elements.values().any(|x| *x == new_mark), "a new mark avoids every mapped one");
    }

    #[test]
    fn a_vip_key_with_a_port_is_not_served_and_a_vips_dests_have_port_0() {
        let mut t = table();
        let f = t.vips[&vip80().1].clone();
        t.vips.insert(ServiceKey::tcp(ip("10.0.9.101"), 80), f);
        assert_eq!(converge(&t), converge(&table()));
        let obs = converge(&table());
        let m = obs.table.elements[&vip80()];
        assert_eq!(obs.services[&m].dests.keys().copied().collect::<Vec<_>>(), vec![sa("10.0.9.2:0"), sa("10.0.9.3:0"), sa("10.0.9.4:0")]);
    }

    #[test]
    fn the_port_keyed_vips_map_is_replaced_and_its_services_removed() {
        let t = table();
        let new = converge(&t);
        // the layout before any-port VIPs: map `vips` keyed by port (its elements are not read
        // back), its rule in prerouting, and the fwmark services it pointed to
        let mut old = new.clone();
        old.table.sets.remove(table::map_name(Kind::Vip));
        old.table.sets.insert("vips".into());
        old.table.chains.insert(table::PREROUTING.into(), vec!["shoal-vips".into(), "shoal-published".into()]);
        let vip_marks: Vec<u32> = old.table.elements.iter().filter(|((k, _), _)| *k == Kind::Vip).map(|(_, m)| *m).collect();
        old.table.elements.retain(|(k, _), _| *k == Kind::Published);
        for m in &vip_marks {
            old.table.snat_marks.remove(m);
            let s = old.services.remove(m).unwrap();
            old.services.insert(MARK_TAG | (m.wrapping_add(7) & 0x00ff_ffff), s);
        }
        let ops = plan(&t, &old, None);
        let lines = text(&ops);
        let at = |l: &str| lines.iter().position(|x| x == l).unwrap_or_else(|| panic!("no {l}: {lines:#?}"));
        let flush = at("nft flush chain ip shoal_ipvs prerouting");
        assert!(at("nft add map ip shoal_ipvs vips_any { type ipv4_addr . inet_proto : mark ; }") < flush);
        assert!(flush < at("nft delete set ip shoal_ipvs vips"), "the map goes once no rule uses it");
        assert_eq!(ops.iter().filter(|o| matches!(o, IpvsOp::DelService { fe: None, .. })).count(), vip_marks.len(), "{lines:#?}");
        let mut after = old.clone();
        after.apply(&ops);
        assert!(plan(&t, &after, None).is_empty());
        assert!(!after.table.sets.contains("vips"));
    }

    #[test]
    fn teardown_removes_the_table_then_every_service() {
        let obs = converge(&table());
        let ops = plan_teardown(&obs);
        assert_eq!(ops[0], IpvsOp::Nft(NftLine::DeleteTable));
        assert_eq!(ops.len(), 1 + obs.services.len());
        let mut gone = obs.clone();
        gone.apply(&ops);
        assert!(gone.services.is_empty() && !gone.table.present);
        assert_eq!(plan_teardown(&gone), vec![]);
    }
}
