//! Pure planning of the nftables load balancer: the table shoal owns, as kube-proxy's nftables
//! mode lays it out, and the batch of changes from what the kernel holds to what is desired.
//!
//! ```text
//! table ip shoal
//!   map vips      { ipv4_addr . inet_proto . inet_service : verdict }   VIP:port   -> goto v_*
//!   map published { ipv4_addr . inet_proto . inet_service : verdict }   node:port  -> goto p_*
//!   chain prerouting  (nat, dstnat)  ip daddr . meta l4proto . th dport vmap @vips / @published
//!   chain postrouting (nat, srcnat)  meta mark & MARK == MARK jump mesh_snat
//!   chain mesh_snat                  oifname "shb-<vni>" snat to <node LB address>
//!   chain v_<vip>_<port>_<proto>     one rule per backend, a random cascade:
//!       meta l4proto tcp numgen random mod 3 < 1 meta mark set meta mark | MARK dnat ip to A
//!       meta l4proto tcp numgen random mod 2 < 1 meta mark set meta mark | MARK dnat ip to B
//!       meta l4proto tcp meta mark set meta mark | MARK dnat ip to C
//! ```
//! The mark asks for SNAT (mesh and VIP flows); flows that keep the client address go without.
//! The lookup is one verdict-map access whatever the number of services. A frontend's rules
//! carry a hash of the frontend as comment, so a changed frontend is found without parsing
//! rules. One backend change rewrites one frontend chain (flush + one rule per backend): O(1)
//! in the number of services.
//!
//! Why a cascade rather than `numgen ... map { ... }` or per-backend chains as kube-proxy does:
//! every inline map is an anonymous set, and the kernel names those by scanning the table's
//! sets, which made programming 10,000 services quadratic (58 s here against 2 s).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddrV4;

use crate::lb::plan::{Frontend, Kind, LbTable, Proto, ServiceKey, Target};

pub const TABLE: &str = "shoal";
/// Packet mark bits that ask postrouting for SNAT to the node's LB address.
pub const MARK: u32 = 0x5300;
const PRE_RULES: [&str; 2] = ["shoal-vips", "shoal-published"];
const POST_RULES: [&str; 1] = ["shoal-snat"];
/// (`snat` is a keyword of nft's grammar.)
const SNAT_CHAIN: &str = "mesh_snat";

/// What the kernel holds in table `ip shoal` (see `observe.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftObserved {
    pub table: bool,
    /// Chain -> the comments of its rules, in order ("" for a rule without one).
    pub chains: BTreeMap<String, Vec<String>>,
    /// Map elements: (map, frontend) -> the chain they jump to.
    pub elements: BTreeMap<(Kind, ServiceKey), String>,
    /// Frontend chain -> the backend chains its rule jumps to (for `show`).
    pub targets: BTreeMap<String, Vec<String>>,
}

/// One line of an `nft -f` batch; a batch is one kernel transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftOp {
    AddTable,
    AddMap(Kind),
    AddBaseChain { name: &'static str, hook: &'static str, priority: &'static str },
    AddChain(String),
    FlushChain(String),
    DeleteChain(String),
    AddRule { chain: String, rule: String, comment: String },
    AddElement { kind: Kind, key: ServiceKey, chain: String },
    DeleteElement { kind: Kind, key: ServiceKey },
    DeleteTable,
}

fn map_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Vip => "vips",
        Kind::Published => "published",
    }
}

fn element(key: &ServiceKey) -> String {
    format!("{} . {} . {}", key.addr, key.proto, key.port)
}

impl fmt::Display for NftOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NftOp::AddTable => write!(f, "add table ip {TABLE}"),
            NftOp::DeleteTable => write!(f, "delete table ip {TABLE}"),
            NftOp::AddMap(kind) => write!(f, "add map ip {TABLE} {} {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}", map_name(*kind)),
            NftOp::AddBaseChain { name, hook, priority } => {
                write!(f, "add chain ip {TABLE} {name} {{ type nat hook {hook} priority {priority} ; policy accept ; }}")
            }
            NftOp::AddChain(c) => write!(f, "add chain ip {TABLE} {c}"),
            NftOp::FlushChain(c) => write!(f, "flush chain ip {TABLE} {c}"),
            NftOp::DeleteChain(c) => write!(f, "delete chain ip {TABLE} {c}"),
            NftOp::AddRule { chain, rule, comment } => write!(f, "add rule ip {TABLE} {chain} {rule} comment \"{comment}\""),
            NftOp::AddElement { kind, key, chain } => {
                write!(f, "add element ip {TABLE} {} {{ {} : goto {chain} }}", map_name(*kind), element(key))
            }
            NftOp::DeleteElement { kind, key } => write!(f, "delete element ip {TABLE} {} {{ {} }}", map_name(*kind), element(key)),
        }
    }
}

fn dotted(addr: &SocketAddrV4) -> String {
    let [a, b, c, d] = addr.ip().octets();
    format!("{a}_{b}_{c}_{d}_{}", addr.port())
}

/// Name of a frontend's chain.
pub fn frontend_chain(kind: Kind, key: &ServiceKey) -> String {
    let prefix = match kind {
        Kind::Vip => 'v',
        Kind::Published => 'p',
    };
    format!("{prefix}_{}_{}", dotted(&SocketAddrV4::new(key.addr, key.port)), key.proto)
}

/// FNV-1a 64: a stable content hash for rule comments.
fn hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("h{h:016x}")
}

/// The backends a frontend's new flows go to, and whether they are SNATed.
fn chosen(kind: Kind, f: &Frontend) -> (Vec<&Target>, bool) {
    if kind == Kind::Published && f.keep_client_ip && f.backends.iter().any(|b| b.local) {
        (f.backends.iter().filter(|b| b.local).collect(), false)
    } else {
        (f.backends.iter().collect(), true)
    }
}

/// The nftables objects that serve `t`.
#[derive(Debug, Default)]
struct Want {
    /// Frontend chain -> (comment hash, rules).
    frontends: BTreeMap<String, (String, Vec<String>)>,
    elements: BTreeMap<(Kind, ServiceKey), String>,
    snat: Vec<(String, String)>,
}

/// The rules of a frontend chain: a cascade where rule i of n matches with probability
/// w_i / (weights left), so every backend gets its share.
fn frontend_rules(proto: Proto, bes: &[&Target], snat: bool) -> Vec<String> {
    let mut left: u32 = bes.iter().map(|b| u32::from(b.weight.max(1))).sum();
    let mark = if snat { format!("meta mark set meta mark | {MARK:#x} ") } else { String::new() };
    bes.iter()
        .enumerate()
        .map(|(i, b)| {
            let w = u32::from(b.weight.max(1));
            let pick = if i + 1 == bes.len() { String::new() } else { format!("numgen random mod {left} < {w} ") };
            left -= w;
            format!("meta l4proto {proto} {pick}{mark}dnat ip to {}", b.addr)
        })
        .collect()
}

fn want(t: &LbTable) -> Want {
    let mut w = Want::default();
    for kind in [Kind::Vip, Kind::Published] {
        for (key, f) in t.frontends(kind) {
            let (bes, snat) = chosen(kind, f);
            if bes.is_empty() {
                continue; // no healthy task: the node's own stack answers (refused)
            }
            let rules = frontend_rules(key.proto, &bes, snat);
            let chain = frontend_chain(kind, key);
            w.elements.insert((kind, *key), chain.clone());
            w.frontends.insert(chain, (hash(&rules.join("\n")), rules));
        }
    }
    for (bridge, lb) in &t.bridges {
        w.snat.push((format!("oifname \"{bridge}\" snat to {lb}"), format!("snat {bridge} {lb}")));
    }
    w
}

fn is_frontend(chain: &str) -> bool {
    chain.starts_with("v_") || chain.starts_with("p_")
}

/// The batch that turns `obs` into what serves `desired`. Empty when nothing differs.
pub fn plan(desired: &LbTable, obs: &NftObserved) -> Vec<NftOp> {
    let w = want(desired);
    let mut ops = Vec::new();
    if !obs.table {
        ops.push(NftOp::AddTable);
        ops.push(NftOp::AddMap(Kind::Vip));
        ops.push(NftOp::AddMap(Kind::Published));
    }
    let has = |c: &str| obs.chains.contains_key(c);
    let comments = |c: &str| obs.chains.get(c).cloned().unwrap_or_default();
    // SNAT chain first: postrouting jumps to it.
    let snat_comments: Vec<String> = w.snat.iter().map(|(_, c)| c.clone()).collect();
    if !has(SNAT_CHAIN) {
        ops.push(NftOp::AddChain(SNAT_CHAIN.into()));
    } else if comments(SNAT_CHAIN) != snat_comments {
        ops.push(NftOp::FlushChain(SNAT_CHAIN.into()));
    }
    if !has(SNAT_CHAIN) || comments(SNAT_CHAIN) != snat_comments {
        for (rule, comment) in &w.snat {
            ops.push(NftOp::AddRule { chain: SNAT_CHAIN.into(), rule: rule.clone(), comment: comment.clone() });
        }
    }
    // Frontend chains, then the map elements that reach them.
    for (chain, (h, rules)) in &w.frontends {
        match obs.chains.get(chain) {
            None => ops.push(NftOp::AddChain(chain.clone())),
            Some(c) if c.len() == rules.len() && c.iter().all(|x| x == h) => continue,
            Some(_) => ops.push(NftOp::FlushChain(chain.clone())),
        }
        for rule in rules {
            ops.push(NftOp::AddRule { chain: chain.clone(), rule: rule.clone(), comment: h.clone() });
        }
    }
    for (k, chain) in &w.elements {
        match obs.elements.get(k) {
            Some(c) if c == chain => {}
            Some(_) => {
                ops.push(NftOp::DeleteElement { kind: k.0, key: k.1 });
                ops.push(NftOp::AddElement { kind: k.0, key: k.1, chain: chain.clone() });
            }
            None => ops.push(NftOp::AddElement { kind: k.0, key: k.1, chain: chain.clone() }),
        }
    }
    // Base chains last among the adds, so traffic is steered only once everything exists.
    let base = [("prerouting", "prerouting", "dstnat", &PRE_RULES[..]), ("postrouting", "postrouting", "srcnat", &POST_RULES[..])];
    for (name, hook, priority, rules) in base {
        let want_comments: Vec<String> = rules.iter().map(|s| s.to_string()).collect();
        if !has(name) {
            ops.push(NftOp::AddBaseChain { name, hook, priority });
        } else if comments(name) == want_comments {
            continue;
        } else {
            ops.push(NftOp::FlushChain(name.into()));
        }
        for comment in rules {
            let rule = match *comment {
                "shoal-vips" => "ip daddr . meta l4proto . th dport vmap @vips".to_string(),
                "shoal-published" => "ip daddr . meta l4proto . th dport vmap @published".to_string(),
                _ => format!("meta mark & {MARK:#x} == {MARK:#x} jump {SNAT_CHAIN}"),
            };
            ops.push(NftOp::AddRule { chain: name.into(), rule, comment: comment.to_string() });
        }
    }
    // Removals: elements, then the frontend chains they reached (and chains of an older layout).
    for k in obs.elements.keys().filter(|k| !w.elements.contains_key(k)) {
        ops.push(NftOp::DeleteElement { kind: k.0, key: k.1 });
    }
    for chain in obs.chains.keys().filter(|c| is_frontend(c) && !w.frontends.contains_key(*c)) {
        ops.push(NftOp::DeleteChain(chain.clone()));
    }
    for chain in obs.chains.keys().filter(|c| c.starts_with("b_")) {
        ops.push(NftOp::DeleteChain(chain.clone()));
    }
    ops
}

/// The batch for just the frontends in `touched` (the agent's incremental path: O(touched), no
/// look at the rest of the table). Backend chains no longer used are left for the next full
/// [`plan`] to collect.
pub fn plan_touched(desired: &LbTable, obs: &NftObserved, touched: &BTreeSet<(Kind, ServiceKey)>) -> Vec<NftOp> {
    let mut sub = LbTable { underlay: desired.underlay, bridges: desired.bridges.clone(), ..LbTable::default() };
    for (kind, key) in touched {
        if let Some(f) = desired.frontends(*kind).get(key) {
            sub.frontends_mut(*kind).insert(*key, f.clone());
        }
    }
    let mut o = NftObserved { table: obs.table, ..NftObserved::default() };
    let keep = |o: &mut NftObserved, chain: &str| {
        if let Some(c) = obs.chains.get(chain) {
            o.chains.insert(chain.to_string(), c.clone());
        }
    };
    for chain in ["prerouting", "postrouting", SNAT_CHAIN] {
        keep(&mut o, chain);
    }
    for (kind, key) in touched {
        keep(&mut o, &frontend_chain(*kind, key));
        if let Some(e) = obs.elements.get(&(*kind, *key)) {
            o.elements.insert((*kind, *key), e.clone());
        }
    }
    plan(&sub, &o)
}

/// Everything shoal made: one operation (the table goes with its chains, maps and rules).
pub fn plan_teardown(obs: &NftObserved) -> Vec<NftOp> {
    if obs.table {
        vec![NftOp::DeleteTable]
    } else {
        vec![]
    }
}

impl NftObserved {
    /// The model after `ops` were committed (keeps a cache in step without listing the table).
    pub fn apply(&mut self, ops: &[NftOp]) {
        for op in ops {
            match op {
                NftOp::AddTable => self.table = true,
                NftOp::DeleteTable => *self = NftObserved::default(),
                NftOp::AddMap(_) => {}
                NftOp::AddBaseChain { name, .. } => {
                    self.chains.entry(name.to_string()).or_default();
                }
                NftOp::AddChain(c) => {
                    self.chains.entry(c.clone()).or_default();
                }
                NftOp::FlushChain(c) => {
                    self.chains.insert(c.clone(), vec![]);
                    self.targets.remove(c);
                }
                NftOp::DeleteChain(c) => {
                    self.chains.remove(c);
                    self.targets.remove(c);
                }
                NftOp::AddRule { chain, rule, comment } => {
                    self.chains.entry(chain.clone()).or_default().push(comment.clone());
                    if let Some(to) = rule.split("dnat ip to ").nth(1).and_then(|s| s.split(' ').next()) {
                        self.targets.entry(chain.clone()).or_default().push(to.to_string());
                    }
                }
                NftOp::AddElement { kind, key, chain } => {
                    self.elements.insert((*kind, *key), chain.clone());
                }
                NftOp::DeleteElement { kind, key } => {
                    self.elements.remove(&(*kind, *key));
                }
            }
        }
    }

    /// Frontends and their backend addresses.
    pub fn summary(&self) -> BTreeMap<(Kind, ServiceKey), BTreeSet<String>> {
        self.elements.iter().map(|(k, chain)| (*k, self.targets.get(chain).into_iter().flatten().cloned().collect())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::plan::{desired, diff};
    use std::net::Ipv4Addr;

    fn table() -> LbTable {
        desired(&crate::lb::plan::tests::state("a"))
    }

    fn converge(t: &LbTable) -> NftObserved {
        let mut obs = NftObserved::default();
        obs.apply(&plan(t, &obs));
        obs
    }

    #[test]
    fn first_batch_builds_the_table_and_the_second_is_empty() {
        let t = table();
        let ops = plan(&t, &NftObserved::default());
        let text: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
        assert_eq!(text[0], "add table ip shoal");
        let vip: Vec<&String> = text.iter().filter(|l| l.starts_with("add rule ip shoal v_10_0_9_100_80_tcp ")).collect();
        assert_eq!(vip.len(), 3, "{text:#?}");
        assert!(vip[0].starts_with("add rule ip shoal v_10_0_9_100_80_tcp meta l4proto tcp numgen random mod 3 < 1 meta mark set meta mark | 0x5300 dnat ip to 10.0.9.2:80 comment \"h"), "{text:#?}");
        assert!(vip[1].contains(" numgen random mod 2 < 1 meta mark set meta mark | 0x5300 dnat ip to 10.0.9.3:80 "));
        assert!(vip[2].contains(" meta l4proto tcp meta mark set meta mark | 0x5300 dnat ip to 10.0.9.4:80 "));
        assert!(text.contains(&"add element ip shoal vips { 10.0.9.100 . tcp . 80 : goto v_10_0_9_100_80_tcp }".to_string()));
        assert!(text.contains(&"add element ip shoal published { 192.168.33.10 . udp . 5353 : goto p_192_168_33_10_5353_udp }".to_string()));
        assert!(text.contains(&"add rule ip shoal mesh_snat oifname \"shb-4097\" snat to 10.0.9.250 comment \"snat shb-4097 10.0.9.250\"".to_string()));
        // the host-mode port goes to the local task without the SNAT mark
        assert!(text.iter().any(|l| l.starts_with("add rule ip shoal p_192_168_33_10_6000_tcp meta l4proto tcp dnat ip to 10.0.9.2:8080 comment")), "{text:#?}");
        // steering comes after everything it steers to
        let pre = text.iter().position(|l| l.contains("vmap @vips")).unwrap();
        let last_elem = text.iter().rposition(|l| l.starts_with("add element")).unwrap();
        assert!(pre > last_elem);
        let obs = converge(&t);
        assert_eq!(plan(&t, &obs), vec![]);
    }

    #[test]
    fn one_backend_change_is_constant_work_at_any_table_size() {
        let base = table();
        let count = |n: u32| {
            let mut t = base.clone();
            for i in 0..n {
                let key = ServiceKey::tcp(Ipv4Addr::from(0x0a60_0000 + i), 80);
                let be = Target { addr: SocketAddrV4::new(Ipv4Addr::from(0x0a00_0900 + (i % 200)), 80), snat: Ipv4Addr::new(10, 0, 9, 250), local: false, weight: 1 };
                t.vips.insert(key, Frontend { keep_client_ip: false, backends: vec![be] });
            }
            let obs = converge(&t);
            let key = ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), 80);
            let mut after = t.clone();
            after.vips.get_mut(&key).unwrap().backends.retain(|b| b.addr.ip() != &Ipv4Addr::new(10, 0, 9, 4));
            plan(&after, &obs)
        };
        let small = count(10);
        let large = count(2000);
        assert_eq!(small.len(), large.len(), "{large:#?}");
        // flush the frontend chain, one rule per remaining backend
        assert_eq!(small.len(), 3, "{small:#?}");
        assert_eq!(small.iter().filter(|o| matches!(o, NftOp::FlushChain(_))).count(), 1);
    }

    #[test]
    fn touched_plans_only_the_changed_frontend() {
        let t = table();
        let obs = converge(&t);
        let key = ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), 80);
        let mut after = t.clone();
        after.vips.get_mut(&key).unwrap().backends.remove(0);
        let touched = [(Kind::Vip, key)].into_iter().collect();
        let text: Vec<String> = plan_touched(&after, &obs, &touched).iter().map(|o| o.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:#?}");
        assert_eq!(text[0], "flush chain ip shoal v_10_0_9_100_80_tcp");
        assert!(text[1].starts_with("add rule ip shoal v_10_0_9_100_80_tcp meta l4proto tcp numgen random mod 2 < 1 "), "{text:#?}");
    }

    #[test]
    fn removing_a_service_removes_its_element_and_chain() {
        let t = table();
        let obs = converge(&t);
        let mut after = t.clone();
        after.published.retain(|k, _| k.port != 6000);
        let ops = plan(&after, &obs);
        let text: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
        assert_eq!(
            text,
            vec![
                "delete element ip shoal published { 192.168.33.10 . tcp . 6000 }",
                "delete chain ip shoal p_192_168_33_10_6000_tcp",
            ]
        );
        assert!(diff(&t, &after).len() == 1);
    }

    #[test]
    fn keep_client_ip_uses_local_backends_without_mark_and_weights_shape_the_cascade() {
        let mut t = table();
        let key = ServiceKey::tcp(Ipv4Addr::new(192, 168, 33, 10), 5000);
        t.published.get_mut(&key).unwrap().keep_client_ip = true;
        let ops = plan(&t, &NftObserved::default());
        let p: Vec<String> = ops.iter().map(|o| o.to_string()).filter(|l| l.starts_with("add rule ip shoal p_192_168_33_10_5000_tcp ")).collect();
        assert_eq!(p.len(), 1, "only the local backend, without the SNAT mark: {p:#?}");
        assert!(p[0].contains("meta l4proto tcp dnat ip to 10.0.9.2:80 comment"), "{p:#?}");
        let vip = ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), 80);
        t.vips.get_mut(&vip).unwrap().backends[1].weight = 3;
        let ops = plan(&t, &NftObserved::default());
        let v: Vec<String> = ops.iter().map(|o| o.to_string()).filter(|l| l.starts_with("add rule ip shoal v_10_0_9_100_80_tcp ")).collect();
        assert!(v[0].contains("numgen random mod 5 < 1 ") && v[0].contains("10.0.9.2:80"), "{v:#?}");
        assert!(v[1].contains("numgen random mod 4 < 3 ") && v[1].contains("10.0.9.3:80"), "{v:#?}");
        assert!(!v[2].contains("numgen") && v[2].contains("10.0.9.4:80"), "{v:#?}");
    }

    #[test]
    fn a_frontend_without_healthy_backends_is_not_steered() {
        let mut t = table();
        let vip = ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), 80);
        t.vips.get_mut(&vip).unwrap().backends.clear();
        let obs = converge(&table());
        let text: Vec<String> = plan(&t, &obs).iter().map(|o| o.to_string()).collect();
        assert!(text.contains(&"delete element ip shoal vips { 10.0.9.100 . tcp . 80 }".to_string()), "{text:#?}");
        assert!(text.contains(&"delete chain ip shoal v_10_0_9_100_80_tcp".to_string()));
        assert_eq!(plan_teardown(&obs), vec![NftOp::DeleteTable]);
        assert!(!converge(&t).summary().contains_key(&(Kind::Vip, vip)));
        assert_eq!(obs.summary()[&(Kind::Vip, vip)].len(), 3);
    }
}
