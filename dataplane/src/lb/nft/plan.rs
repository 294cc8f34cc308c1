//! Pure planning of the nftables load balancer: the table shoal owns and the batch of changes
//! from what the kernel holds to what is desired.
//!
//! ```text
//! table ip shoal
//!   set masq     { type ipv4_addr . inet_proto . inet_service }    published ports whose flows are SNATed
//!   set masq_any { type ipv4_addr . inet_proto }                   VIPs whose flows are SNATed
//!   map vip_any_<S> { typeof ip daddr . meta l4proto . numgen random mod <S> : ip daddr }
//!                                                                  (VIP . proto . slot) -> backend address
//!   map pub_<S> { typeof ip daddr . meta l4proto . th dport . numgen random mod <S>
//!                 : ip daddr . tcp dport }                         (published port . slot) -> backend
//!                                                                  one map per slot count in use
//!   chain prerouting (nat, dstnat) and chain output (nat, dstnat; the node's own clients):
//!       ip daddr . meta l4proto . th dport @masq meta mark set meta mark | MARK
//!       ip daddr . meta l4proto @masq_any meta mark set meta mark | MARK
//!       dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @pub_1
//!       dnat ip to ip daddr . meta l4proto . numgen random mod 3 map @vip_any_3   ...
//!   chain postrouting (nat, srcnat)  meta mark & MARK == MARK jump mesh_snat
//!   chain mesh_snat                  oifname "shb-<vni>" snat to <node LB address>
//! ```
//! A VIP carries every port ([`ANY_PORT`]): its maps are keyed without the port and hold
//! backend addresses only, and `dnat` to an address alone keeps the destination port the
//! client used. A published port maps published -> target port.
//!
//! A frontend with S slots has S elements in map `<kind>_<S>`: slot i holds the backend that
//! new flows drawing i go to. S is the sum of the backends' weights (divided by their gcd), so
//! equal weights give one slot per backend; when that sum exceeds 64, S is max(64, backends)
//! (at most 1024) shared out by weight. A frontend lives in exactly one map, so one `dnat` rule
//! per slot count finds it; the rule of another slot count misses and the next one is tried.
//!
//! There is no chain, verdict or rule per service. One backend change rewrites that frontend's
//! elements (delete its S old slots, add its new ones: two nfnetlink messages) and the kernel
//! does not re-validate the table: element changes of data maps are O(1), whatever the number
//! of services. Rules change only when a slot count comes into use or goes out of use.
//! Measured on 6.18: a transaction that adds or deletes elements takes ~0.1 ms; deleted
//! elements are freed after an RCU grace period, which the kernel waits for (~5-8 ms) when an
//! nfnetlink socket closes, so the balancer keeps its socket open (see `netlink.rs`).
//!
//! Only a connection's first packet goes through nat chains: the NAT binding lives in
//! conntrack, so established flows to a removed backend keep flowing (graceful TCP drain);
//! the balancer deletes the conntrack entries of UDP flows to a removed backend so they move.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddrV4;

use crate::lb::plan::{Frontend, Kind, LbTable, Proto, ServiceKey, Target, ANY_PORT};

pub const TABLE: &str = "shoal";
/// Packet mark bits that ask postrouting for SNAT to the node's LB address.
pub const MARK: u32 = 0x5300;
/// The sets of frontends whose new flows are SNATed: published ports, and VIPs (any port).
pub const MASQ_SET: &str = "masq";
pub const MASQ_ANY_SET: &str = "masq_any";
/// Slots a frontend gets when its weights do not fit in this many.
pub const WEIGHTED_SLOTS: u32 = 64;
/// The most slots (and so backends) a frontend gets.
pub const MAX_SLOTS: u32 = 1024;
/// (`snat` is a keyword of nft's grammar.)
const SNAT_CHAIN: &str = "mesh_snat";
const MARK_RULE: &str = "shoal-mark";
const MARK_ANY_RULE: &str = "shoal-mark-any";
const SNAT_RULE: &str = "shoal-snat";
/// The nat chains that balance: (name, hook, priority). `output` serves clients on the node
/// itself (nft 1.0.6 knows `dstnat` only for prerouting: -100 is its value).
const NAT_CHAINS: [(&str, &str, &str); 2] = [("prerouting", "prerouting", "dstnat"), ("output", "output", "-100")];
const CHAINS: [&str; 4] = ["prerouting", "output", "postrouting", SNAT_CHAIN];

/// A frontend: which map it is in.
pub type FrontendId = (Kind, ServiceKey);

/// What the kernel holds in table `ip shoal` (see `observe.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftObserved {
    pub table: bool,
    /// Chain -> the comments of its rules, in order ("" for a rule without one).
    pub chains: BTreeMap<String, Vec<String>>,
    /// Names of the table's sets and maps.
    pub sets: BTreeSet<String>,
    /// Elements of the `masq` (published) and `masq_any` (VIP) sets.
    pub masq: BTreeSet<FrontendId>,
    /// Frontend -> slot count (the map it is in) -> slot -> backend.
    pub slots: BTreeMap<FrontendId, BTreeMap<u32, BTreeMap<u32, SocketAddrV4>>>,
    /// UDP backend -> how many slots reach it (to tell when its flows must be forgotten).
    pub udp_refs: BTreeMap<SocketAddrV4, usize>,
}

/// One change of table `ip shoal`; a batch of them is one kernel transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftOp {
    AddTable,
    DeleteTable,
    /// The `masq` set of `kind`'s frontends ([`masq_set`]).
    AddMasqSet(Kind),
    AddSlotMap {
        kind: Kind,
        size: u32,
    },
    DeleteSlotMap {
        kind: Kind,
        size: u32,
    },
    AddBaseChain {
        name: &'static str,
        hook: &'static str,
        priority: &'static str,
    },
    AddChain(String),
    FlushChain(String),
    AddRule {
        chain: String,
        rule: String,
        comment: String,
    },
    /// Elements of one frontend in map `<kind>_<size>`: (slot, backend; a VIP's backend port
    /// is not stored).
    AddSlots {
        kind: Kind,
        key: ServiceKey,
        size: u32,
        slots: Vec<(u32, SocketAddrV4)>,
    },
    DeleteSlots {
        kind: Kind,
        key: ServiceKey,
        size: u32,
        slots: Vec<u32>,
    },
    AddMasq(FrontendId),
    DeleteMasq(FrontendId),
}

impl NftOp {
    /// Map and set element changes: the only ops of a backend change, encoded in-process.
    pub fn is_element(&self) -> bool {
        matches!(self, NftOp::AddSlots { .. } | NftOp::DeleteSlots { .. } | NftOp::AddMasq(_) | NftOp::DeleteMasq(_))
    }
}

fn prefix(kind: Kind) -> &'static str {
    match kind {
        Kind::Vip => "vip_any",
        Kind::Published => "pub",
    }
}

/// The set of `kind`'s frontends whose flows are SNATed.
pub fn masq_set(kind: Kind) -> &'static str {
    match kind {
        Kind::Vip => MASQ_ANY_SET,
        Kind::Published => MASQ_SET,
    }
}

/// Name of the map holding the frontends of `kind` with `size` slots.
pub fn slot_map(kind: Kind, size: u32) -> String {
    format!("{}_{size}", prefix(kind))
}

/// The inverse of [`slot_map`]. The port-keyed `vip_<S>` maps of the layout before any-port
/// VIPs are not ours any more (the table is replaced).
pub fn parse_slot_map(name: &str) -> Option<(Kind, u32)> {
    let (p, n) = name.rsplit_once('_')?;
    let kind = match p {
        "vip_any" => Kind::Vip,
        "pub" => Kind::Published,
        _ => return None,
    };
    let size: u32 = n.parse().ok()?;
    (1..=MAX_SLOTS).contains(&size).then_some((kind, size))
}

/// A frontend as its sets and maps key it: a VIP without its port (it carries every one).
fn frontend_text(kind: Kind, key: &ServiceKey) -> String {
    match kind {
        Kind::Vip => format!("{} . {}", key.addr, key.proto),
        Kind::Published => format!("{} . {} . {}", key.addr, key.proto, key.port),
    }
}

fn slot_element(kind: Kind, key: &ServiceKey, slot: u32, to: Option<&SocketAddrV4>) -> String {
    let fe = frontend_text(kind, key);
    match (to, kind) {
        (Some(to), Kind::Vip) => format!("{fe} . {slot} : {}", to.ip()),
        (Some(to), Kind::Published) => format!("{fe} . {slot} : {} . {}", to.ip(), to.port()),
        (None, _) => format!("{fe} . {slot}"),
    }
}

impl fmt::Display for NftOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NftOp::AddTable => write!(f, "add table ip {TABLE}"),
            NftOp::DeleteTable => write!(f, "delete table ip {TABLE}"),
            NftOp::AddMasqSet(Kind::Vip) => write!(f, "add set ip {TABLE} {MASQ_ANY_SET} {{ type ipv4_addr . inet_proto ; }}"),
            NftOp::AddMasqSet(Kind::Published) => {
                write!(f, "add set ip {TABLE} {MASQ_SET} {{ type ipv4_addr . inet_proto . inet_service ; }}")
            }
            NftOp::AddSlotMap { kind: Kind::Vip, size } => write!(
                f,
                "add map ip {TABLE} {} {{ typeof ip daddr . meta l4proto . numgen random mod {size} : ip daddr ; }}",
                slot_map(Kind::Vip, *size)
            ),
            NftOp::AddSlotMap { kind: Kind::Published, size } => write!(
                f,
                "add map ip {TABLE} {} {{ typeof ip daddr . meta l4proto . th dport . numgen random mod {size} : ip daddr . tcp dport ; }}",
                slot_map(Kind::Published, *size)
            ),
            NftOp::DeleteSlotMap { kind, size } => write!(f, "delete map ip {TABLE} {}", slot_map(*kind, *size)),
            NftOp::AddBaseChain { name, hook, priority } => {
                write!(f, "add chain ip {TABLE} {name} {{ type nat hook {hook} priority {priority} ; policy accept ; }}")
            }
            NftOp::AddChain(c) => write!(f, "add chain ip {TABLE} {c}"),
            NftOp::FlushChain(c) => write!(f, "flush chain ip {TABLE} {c}"),
            NftOp::AddRule { chain, rule, comment } => write!(f, "add rule ip {TABLE} {chain} {rule} comment \"{comment}\""),
            NftOp::AddSlots { kind, key, size, slots } => {
                let e: Vec<String> = slots.iter().map(|(i, to)| slot_element(*kind, key, *i, Some(to))).collect();
                write!(f, "add element ip {TABLE} {} {{ {} }}", slot_map(*kind, *size), e.join(", "))
            }
            NftOp::DeleteSlots { kind, key, size, slots } => {
                let e: Vec<String> = slots.iter().map(|i| slot_element(*kind, key, *i, None)).collect();
                write!(f, "delete element ip {TABLE} {} {{ {} }}", slot_map(*kind, *size), e.join(", "))
            }
            NftOp::AddMasq((kind, key)) => write!(f, "add element ip {TABLE} {} {{ {} }}", masq_set(*kind), frontend_text(*kind, key)),
            NftOp::DeleteMasq((kind, key)) => {
                write!(f, "delete element ip {TABLE} {} {{ {} }}", masq_set(*kind), frontend_text(*kind, key))
            }
        }
    }
}

/// The `nft -f` text of `ops`: one line per op, except that each run of element ops becomes
/// one `delete element` and one `add element` line per set (nft parses one long line far
/// faster than many short ones). Deletes go before adds: a slot that changes backend is
/// deleted and added again in the same transaction.
pub fn batch_text(ops: &[NftOp]) -> String {
    const PER_LINE: usize = 20_000;
    let mut out = String::new();
    let mut i = 0;
    while i < ops.len() {
        if !ops[i].is_element() {
            out.push_str(&ops[i].to_string());
            out.push('\n');
            i += 1;
            continue;
        }
        let end = ops[i..].iter().position(|o| !o.is_element()).map_or(ops.len(), |n| i + n);
        let mut dels: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut adds: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for op in &ops[i..end] {
            match op {
                NftOp::AddSlots { kind, key, size, slots } => {
                    let e = adds.entry(slot_map(*kind, *size)).or_default();
                    e.extend(slots.iter().map(|(s, to)| slot_element(*kind, key, *s, Some(to))));
                }
                NftOp::DeleteSlots { kind, key, size, slots } => {
                    let e = dels.entry(slot_map(*kind, *size)).or_default();
                    e.extend(slots.iter().map(|s| slot_element(*kind, key, *s, None)));
                }
                NftOp::AddMasq((kind, key)) => adds.entry(masq_set(*kind).into()).or_default().push(frontend_text(*kind, key)),
                NftOp::DeleteMasq((kind, key)) => dels.entry(masq_set(*kind).into()).or_default().push(frontend_text(*kind, key)),
                _ => {}
            }
        }
        for (verb, groups) in [("delete", dels), ("add", adds)] {
            for (set, elems) in groups {
                for chunk in elems.chunks(PER_LINE) {
                    out.push_str(&format!("{verb} element ip {TABLE} {set} {{ {} }}\n", chunk.join(", ")));
                }
            }
        }
        i = end;
    }
    out
}

/// The slots of a frontend: slot i -> backend. Each backend gets slots in proportion to its
/// weight (exactly when the reduced weights sum to at most [`WEIGHTED_SLOTS`], else by largest
/// remainder: the one apportionment, shared with the eBPF balancer), handed out round-robin.
/// Backends past [`MAX_SLOTS`] get none.
pub fn slot_layout(bes: &[&Target]) -> Vec<SocketAddrV4> {
    let bes = &bes[..bes.len().min(MAX_SLOTS as usize)];
    if bes.is_empty() {
        return vec![];
    }
    // Weight 0 still gets a slot here (the table gives every backend weight >= 1 anyway).
    let weights: Vec<u16> = bes.iter().map(|b| b.weight.max(1)).collect();
    let counts = shoal_ebpf::plan::slot_counts(&weights, WEIGHTED_SLOTS);
    let size: u32 = counts.iter().sum();
    let mut left = counts;
    let mut out = Vec::with_capacity(size as usize);
    while out.len() < size as usize {
        for (i, b) in bes.iter().enumerate() {
            if left[i] > 0 {
                out.push(b.addr);
                left[i] -= 1;
            }
        }
    }
    out
}

/// What one frontend should be in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WantFrontend {
    /// Slot i -> backend; the length is the slot count.
    slots: Vec<SocketAddrV4>,
    masq: bool,
}

fn want_frontend(kind: Kind, key: &ServiceKey, f: &Frontend) -> Option<WantFrontend> {
    // A VIP carries every port: a VIP key with a port is not one (lb::plan never makes it).
    if kind == Kind::Vip && key.port != ANY_PORT {
        return None;
    }
    let (bes, masq) = f.chosen(kind);
    let mut slots = slot_layout(&bes);
    if kind == Kind::Vip {
        // The client's port: the maps hold addresses only.
        slots.iter_mut().for_each(|s| s.set_port(ANY_PORT));
    }
    // No healthy task: not steered, the node's own stack answers (refused).
    (!slots.is_empty()).then_some(WantFrontend { slots, masq })
}

fn want_all(t: &LbTable) -> BTreeMap<FrontendId, WantFrontend> {
    let mut w = BTreeMap::new();
    for kind in [Kind::Vip, Kind::Published] {
        for (key, f) in t.frontends(kind) {
            if let Some(fe) = want_frontend(kind, key, f) {
                w.insert((kind, *key), fe);
            }
        }
    }
    w
}

/// Whether `obs` is this layout (else it is replaced whole, e.g. the older chain-per-service one).
fn adoptable(obs: &NftObserved) -> bool {
    [MASQ_SET, MASQ_ANY_SET].iter().all(|m| obs.sets.contains(*m))
        && obs.sets.iter().all(|s| s == MASQ_SET || s == MASQ_ANY_SET || parse_slot_map(s).is_some())
        && obs.chains.keys().all(|c| CHAINS.contains(&c.as_str()))
}

fn dnat_rule(kind: Kind, size: u32) -> (String, String) {
    let map = slot_map(kind, size);
    let port = if kind == Kind::Vip { "" } else { " . th dport" };
    (format!("dnat ip to ip daddr . meta l4proto{port} . numgen random mod {size} map @{map}"), format!("shoal-{map}"))
}

/// The batch that turns `obs` into what serves `desired`. Empty when nothing differs.
pub fn plan(desired: &LbTable, obs: &NftObserved) -> Vec<NftOp> {
    let want = want_all(desired);
    if obs.table && !adoptable(obs) {
        // Another layout: replace it in the same transaction (no moment without balancing;
        // established flows keep their conntrack NAT bindings).
        let mut ops = vec![NftOp::DeleteTable];
        ops.extend(plan_with(desired, &want, &NftObserved::default(), true));
        return ops;
    }
    plan_with(desired, &want, obs, true)
}

/// The batch for just the frontends in `touched` (the agent's incremental path): O(touched),
/// no look at the rest of the table. Slot maps no longer used are left for the next full
/// [`plan`] to remove.
pub fn plan_touched(desired: &LbTable, obs: &NftObserved, touched: &BTreeSet<FrontendId>) -> Vec<NftOp> {
    if !obs.table || !adoptable(obs) {
        return plan(desired, obs);
    }
    let want = touched
        .iter()
        .filter_map(|(kind, key)| Some(((*kind, *key), want_frontend(*kind, key, desired.frontends(*kind).get(key)?)?)))
        .collect();
    let mut o = NftObserved { table: true, chains: obs.chains.clone(), sets: obs.sets.clone(), ..NftObserved::default() };
    for id in touched {
        if let Some(s) = obs.slots.get(id) {
            o.slots.insert(*id, s.clone());
        }
        if obs.masq.contains(id) {
            o.masq.insert(*id);
        }
    }
    plan_with(desired, &want, &o, false)
}

/// `full`: `obs` is the whole table (remove what is not wanted, slot maps included); else it
/// holds only the frontends of `want` and the others are left alone.
fn plan_with(desired: &LbTable, want: &BTreeMap<FrontendId, WantFrontend>, obs: &NftObserved, full: bool) -> Vec<NftOp> {
    let mut ops = Vec::new();
    if !obs.table {
        ops.push(NftOp::AddTable);
    }
    for kind in [Kind::Published, Kind::Vip] {
        if !obs.sets.contains(masq_set(kind)) {
            ops.push(NftOp::AddMasqSet(kind));
        }
    }
    let wanted_classes: BTreeSet<(u32, Kind)> = want.iter().map(|((kind, _), f)| (f.slots.len() as u32, *kind)).collect();
    let mut classes = wanted_classes.clone();
    if !full {
        classes.extend(obs.sets.iter().filter_map(|s| parse_slot_map(s)).map(|(k, n)| (n, k)));
    }
    for (size, kind) in &wanted_classes {
        if !obs.sets.contains(&slot_map(*kind, *size)) {
            ops.push(NftOp::AddSlotMap { kind: *kind, size: *size });
        }
    }
    // SNAT chain first: postrouting jumps to it.
    let snat: Vec<(String, String)> =
        desired.bridges.iter().map(|(bridge, lb)| (format!("oifname \"{bridge}\" snat to {lb}"), format!("snat {bridge} {lb}"))).collect();
    chain_rules(&mut ops, obs, SNAT_CHAIN, None, &snat);
    // The balancing chains: the mark rules, then one dnat rule per slot count in use.
    let mut nat = vec![
        (format!("ip daddr . meta l4proto . th dport @{MASQ_SET} meta mark set meta mark | {MARK:#x}"), MARK_RULE.to_string()),
        (format!("ip daddr . meta l4proto @{MASQ_ANY_SET} meta mark set meta mark | {MARK:#x}"), MARK_ANY_RULE.to_string()),
    ];
    nat.extend(classes.iter().map(|(size, kind)| dnat_rule(*kind, *size)));
    for (name, hook, priority) in NAT_CHAINS {
        chain_rules(&mut ops, obs, name, Some((hook, priority)), &nat);
    }
    let post = [(format!("meta mark & {MARK:#x} == {MARK:#x} jump {SNAT_CHAIN}"), SNAT_RULE.to_string())];
    chain_rules(&mut ops, obs, "postrouting", Some(("postrouting", "srcnat")), &post);
    // Elements: each frontend's slots, deletes before adds.
    for ((kind, key), f) in want {
        let size = f.slots.len() as u32;
        let have = obs.slots.get(&(*kind, *key));
        for (n, m) in have.into_iter().flatten() {
            let del: Vec<u32> = if *n == size {
                m.iter().filter(|(i, to)| f.slots.get(**i as usize) != Some(to)).map(|(i, _)| *i).collect()
            } else {
                m.keys().copied().collect()
            };
            if !del.is_empty() {
                ops.push(NftOp::DeleteSlots { kind: *kind, key: *key, size: *n, slots: del });
            }
        }
        let same = have.and_then(|h| h.get(&size));
        let add: Vec<(u32, SocketAddrV4)> =
            f.slots.iter().enumerate().map(|(i, to)| (i as u32, *to)).filter(|(i, to)| same.and_then(|m| m.get(i)) != Some(to)).collect();
        if !add.is_empty() {
            ops.push(NftOp::AddSlots { kind: *kind, key: *key, size, slots: add });
        }
    }
    let masq: BTreeSet<FrontendId> = want.iter().filter(|(_, f)| f.masq).map(|(id, _)| *id).collect();
    for id in masq.difference(&obs.masq) {
        ops.push(NftOp::AddMasq(*id));
    }
    // Removals: frontends no longer served, then the set members and maps nothing uses.
    for ((kind, key), sizes) in obs.slots.iter().filter(|(id, _)| !want.contains_key(id)) {
        for (n, m) in sizes.iter().filter(|(_, m)| !m.is_empty()) {
            ops.push(NftOp::DeleteSlots { kind: *kind, key: *key, size: *n, slots: m.keys().copied().collect() });
        }
    }
    for id in obs.masq.difference(&masq) {
        ops.push(NftOp::DeleteMasq(*id));
    }
    if full {
        for (kind, size) in obs.sets.iter().filter_map(|s| parse_slot_map(s)) {
            if !wanted_classes.contains(&(size, kind)) {
                ops.push(NftOp::DeleteSlotMap { kind, size });
            }
        }
    }
    ops
}

/// Brings chain `name` (a base chain when `hook` is given) to `rules` (rule, comment): made
/// when missing, flushed and refilled when its comments differ, else untouched.
fn chain_rules(
    ops: &mut Vec<NftOp>,
    obs: &NftObserved,
    name: &'static str,
    hook: Option<(&'static str, &'static str)>,
    rules: &[(String, String)],
) {
    match obs.chains.get(name) {
        None => ops.push(match hook {
            Some((hook, priority)) => NftOp::AddBaseChain { name, hook, priority },
            None => NftOp::AddChain(name.into()),
        }),
        Some(c) if c.iter().eq(rules.iter().map(|(_, c)| c)) => return,
        Some(_) => ops.push(NftOp::FlushChain(name.into())),
    }
    for (rule, comment) in rules {
        ops.push(NftOp::AddRule { chain: name.into(), rule: rule.clone(), comment: comment.clone() });
    }
}

/// Everything shoal made: one operation (the table goes with its chains, maps and rules).
pub fn plan_teardown(obs: &NftObserved) -> Vec<NftOp> {
    if obs.table {
        vec![NftOp::DeleteTable]
    } else {
        vec![]
    }
}

/// One line per change, for people: a frontend's slot changes are one line, a chain's new
/// rules are one line.
pub fn describe(ops: &[NftOp]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut frontends: BTreeMap<FrontendId, (usize, Vec<SocketAddrV4>, Option<bool>)> = BTreeMap::new();
    let mut order = Vec::new();
    fn touch(id: FrontendId, order: &mut Vec<FrontendId>) {
        if !order.contains(&id) {
            order.push(id);
        }
    }
    let mut i = 0;
    while i < ops.len() {
        match &ops[i] {
            NftOp::AddRule { chain, .. } | NftOp::FlushChain(chain) => {
                let flush = matches!(ops[i], NftOp::FlushChain(_));
                let start = if flush { i + 1 } else { i };
                let n = ops[start..].iter().take_while(|o| matches!(o, NftOp::AddRule { chain: c, .. } if c == chain)).count();
                let comments: Vec<&str> = ops[start..start + n]
                    .iter()
                    .filter_map(|o| match o {
                        NftOp::AddRule { comment, .. } => Some(comment.as_str()),
                        _ => None,
                    })
                    .collect();
                let verb = if flush { "rewrite" } else { "fill" };
                lines.push(format!("nft: {verb} chain {chain}: {}", comments.join(", ")));
                i = start + n;
                continue;
            }
            NftOp::AddSlots { kind, key, slots, .. } => {
                touch((*kind, *key), &mut order);
                frontends.entry((*kind, *key)).or_default().1.extend(slots.iter().map(|(_, to)| *to));
            }
            NftOp::DeleteSlots { kind, key, slots, .. } => {
                touch((*kind, *key), &mut order);
                frontends.entry((*kind, *key)).or_default().0 += slots.len();
            }
            NftOp::AddMasq(id) | NftOp::DeleteMasq(id) => {
                touch(*id, &mut order);
                frontends.entry(*id).or_default().2 = Some(matches!(ops[i], NftOp::AddMasq(_)));
            }
            other => lines.push(format!("nft: {other}")),
        }
        i += 1;
    }
    for id in order {
        let (del, mut add, masq) = frontends.remove(&id).unwrap_or_default();
        let (kind, key) = id;
        add.dedup();
        // A VIP carries every port to the same port of its backends: name them without one.
        let fe = match kind {
            Kind::Vip => format!("{}:*/{}", key.addr, key.proto),
            Kind::Published => key.to_string(),
        };
        let to = |a: &SocketAddrV4| if kind == Kind::Vip { a.ip().to_string() } else { a.to_string() };
        let mut line = format!("nft: {kind} {fe}: slots -{del} +{}", add.len());
        if !add.is_empty() {
            let set: BTreeSet<String> = add.iter().map(to).collect();
            line.push_str(&format!(" -> [{}]", set.into_iter().collect::<Vec<_>>().join(", ")));
        }
        match masq {
            Some(true) => line.push_str(", snat on"),
            Some(false) => line.push_str(", snat off"),
            None => {}
        }
        lines.push(line);
    }
    lines
}

impl NftObserved {
    /// Records slot `slot` of frontend `id` in the map of `size` slots.
    pub fn insert_slot(&mut self, id: FrontendId, size: u32, slot: u32, to: SocketAddrV4) {
        let old = self.slots.entry(id).or_default().entry(size).or_default().insert(slot, to);
        if id.1.proto == Proto::Udp {
            if let Some(old) = old {
                self.unref_udp(old);
            }
            *self.udp_refs.entry(to).or_default() += 1;
        }
    }

    fn remove_slot(&mut self, id: FrontendId, size: u32, slot: u32) {
        let Some(sizes) = self.slots.get_mut(&id) else { return };
        let Some(m) = sizes.get_mut(&size) else { return };
        let old = m.remove(&slot);
        if m.is_empty() {
            sizes.remove(&size);
        }
        if sizes.is_empty() {
            self.slots.remove(&id);
        }
        if let (Some(old), Proto::Udp) = (old, id.1.proto) {
            self.unref_udp(old);
        }
    }

    fn unref_udp(&mut self, addr: SocketAddrV4) {
        if let Some(n) = self.udp_refs.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.udp_refs.remove(&addr);
            }
        }
    }

    /// The UDP backends a slot of `ops` pointed to before they are applied (candidates for
    /// forgetting their flows once no slot reaches them).
    pub fn udp_backends_in(&self, ops: &[NftOp]) -> BTreeSet<SocketAddrV4> {
        let mut out = BTreeSet::new();
        for op in ops {
            match op {
                NftOp::DeleteSlots { kind, key, size, slots } if key.proto == Proto::Udp => {
                    let m = self.slots.get(&(*kind, *key)).and_then(|s| s.get(size));
                    out.extend(slots.iter().filter_map(|i| m.and_then(|m| m.get(i))));
                }
                NftOp::DeleteSlotMap { kind, size } => {
                    for ((k, key), sizes) in &self.slots {
                        if k == kind && key.proto == Proto::Udp {
                            out.extend(sizes.get(size).into_iter().flat_map(|m| m.values()));
                        }
                    }
                }
                NftOp::DeleteTable => out.extend(self.udp_refs.keys()),
                _ => {}
            }
        }
        out
    }

    /// Whether a UDP slot reaches `addr`: one to it, or a VIP's to its address (every port).
    pub fn reaches_udp(&self, addr: &SocketAddrV4) -> bool {
        self.udp_refs.contains_key(addr) || self.udp_refs.contains_key(&SocketAddrV4::new(*addr.ip(), ANY_PORT))
    }

    /// Of `candidates` (see [`Self::udp_backends_in`]), once the ops are applied: the backends
    /// whose UDP flows must be forgotten (port [`ANY_PORT`]: every port of the address), and the
    /// backends at those addresses that slots still reach (their flows stay).
    pub fn udp_gone(&self, candidates: BTreeSet<SocketAddrV4>) -> (Vec<SocketAddrV4>, Vec<SocketAddrV4>) {
        let gone: Vec<SocketAddrV4> = candidates.into_iter().filter(|a| !self.reaches_udp(a)).collect();
        let any: BTreeSet<_> = gone.iter().filter(|a| a.port() == ANY_PORT).map(|a| *a.ip()).collect();
        let keep = self.udp_refs.keys().filter(|a| any.contains(a.ip())).copied().collect();
        (gone, keep)
    }

    /// The model after `ops` were committed (keeps a cache in step without listing the table):
    /// O(ops).
    pub fn apply(&mut self, ops: &[NftOp]) {
        for op in ops {
            match op {
                NftOp::AddTable => self.table = true,
                NftOp::DeleteTable => *self = NftObserved::default(),
                NftOp::AddMasqSet(kind) => {
                    self.sets.insert(masq_set(*kind).into());
                }
                NftOp::AddSlotMap { kind, size } => {
                    self.sets.insert(slot_map(*kind, *size));
                }
                NftOp::DeleteSlotMap { kind, size } => {
                    self.sets.remove(&slot_map(*kind, *size));
                    let ids: Vec<FrontendId> =
                        self.slots.iter().filter(|((k, _), s)| k == kind && s.contains_key(size)).map(|(id, _)| *id).collect();
                    for id in ids {
                        let slots: Vec<u32> = self.slots[&id][size].keys().copied().collect();
                        for s in slots {
                            self.remove_slot(id, *size, s);
                        }
                    }
                }
                NftOp::AddBaseChain { name, .. } => {
                    self.chains.entry(name.to_string()).or_default();
                }
                NftOp::AddChain(c) => {
                    self.chains.entry(c.clone()).or_default();
                }
                NftOp::FlushChain(c) => {
                    self.chains.insert(c.clone(), vec![]);
                }
                NftOp::AddRule { chain, comment, .. } => self.chains.entry(chain.clone()).or_default().push(comment.clone()),
                NftOp::AddSlots { kind, key, size, slots } => {
                    for (s, to) in slots {
                        self.insert_slot((*kind, *key), *size, *s, *to);
                    }
                }
                NftOp::DeleteSlots { kind, key, size, slots } => {
                    for s in slots {
                        self.remove_slot((*kind, *key), *size, *s);
                    }
                }
                NftOp::AddMasq(id) => {
                    self.masq.insert(*id);
                }
                NftOp::DeleteMasq(id) => {
                    self.masq.remove(id);
                }
            }
        }
    }

    /// Frontends and their backend addresses.
    pub fn summary(&self) -> BTreeMap<FrontendId, BTreeSet<String>> {
        self.slots.iter().map(|(id, sizes)| (*id, sizes.values().flat_map(|m| m.values()).map(|a| a.to_string()).collect())).collect()
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

    fn text(ops: &[NftOp]) -> Vec<String> {
        ops.iter().map(|o| o.to_string()).collect()
    }

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn target(addr: &str, weight: u16) -> Target {
        Target { addr: sa(addr), snat: Ipv4Addr::new(10, 0, 9, 250), local: false, weight }
    }

    /// `n` extra VIP services (TCP, every port) with 3 backends each.
    fn big(n: u32) -> LbTable {
        let mut t = table();
        for i in 0..n {
            let key = ServiceKey::tcp(Ipv4Addr::from(0x0a60_0000 + i), ANY_PORT);
            let backends = (0..3)
                .map(|j| Target { addr: SocketAddrV4::new(Ipv4Addr::from(0x0a80_0000 + i * 3 + j), ANY_PORT), ..target("0.0.0.0:0", 1) })
                .collect();
            t.vips.insert(key, Frontend { keep_client_ip: false, backends });
        }
        t
    }

    /// web's TCP VIP (every port).
    const VIP: ServiceKey = ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT);
    const VIP_UDP: ServiceKey = ServiceKey::udp(Ipv4Addr::new(10, 0, 9, 100), ANY_PORT);

    #[test]
    fn first_batch_builds_the_table_and_the_second_is_empty() {
        let t = table();
        let ops = plan(&t, &NftObserved::default());
        let text = text(&ops);
        assert_eq!(text[0], "add table ip shoal");
        assert_eq!(text[1], "add set ip shoal masq { type ipv4_addr . inet_proto . inet_service ; }");
        assert_eq!(text[2], "add set ip shoal masq_any { type ipv4_addr . inet_proto ; }");
        assert!(
            text.contains(&"add map ip shoal vip_any_3 { typeof ip daddr . meta l4proto . numgen random mod 3 : ip daddr ; }".to_string()),
            "{text:#?}"
        );
        assert!(
            text.contains(
                &"add map ip shoal pub_3 { typeof ip daddr . meta l4proto . th dport . numgen random mod 3 : ip daddr . tcp dport ; }"
                    .to_string()
            ),
            "{text:#?}"
        );
        // a VIP's slots hold addresses only: the client's port is kept
        assert!(text.contains(&"add element ip shoal vip_any_3 { 10.0.9.100 . tcp . 0 : 10.0.9.2, 10.0.9.100 . tcp . 1 : 10.0.9.3, 10.0.9.100 . tcp . 2 : 10.0.9.4 }".to_string()), "{text:#?}");
        assert!(text.contains(&"add element ip shoal vip_any_3 { 10.0.9.100 . udp . 0 : 10.0.9.2, 10.0.9.100 . udp . 1 : 10.0.9.3, 10.0.9.100 . udp . 2 : 10.0.9.4 }".to_string()), "{text:#?}");
        assert!(text.contains(&"add element ip shoal pub_3 { 192.168.33.10 . udp . 5353 . 0 : 10.0.9.2 . 53, 192.168.33.10 . udp . 5353 . 1 : 10.0.9.3 . 53, 192.168.33.10 . udp . 5353 . 2 : 10.0.9.4 . 53 }".to_string()), "{text:#?}");
        assert!(text.contains(&"add element ip shoal masq_any { 10.0.9.100 . tcp }".to_string()), "{text:#?}");
        assert!(text.contains(&"add element ip shoal masq_any { 10.0.9.100 . udp }".to_string()), "{text:#?}");
        assert!(text.contains(&"add element ip shoal masq { 192.168.33.10 . tcp . 5000 }".to_string()), "{text:#?}");
        assert!(text.contains(
            &"add rule ip shoal mesh_snat oifname \"shb-4097\" snat to 10.0.9.250 comment \"snat shb-4097 10.0.9.250\"".to_string()
        ));
        for chain in ["prerouting", "output"] {
            let rules: Vec<&String> = text.iter().filter(|l| l.starts_with(&format!("add rule ip shoal {chain} "))).collect();
            assert_eq!(rules.len(), 5, "mark, mark-any, pub_1, vip_any_3, pub_3: {text:#?}");
            assert_eq!(*rules[0], format!("add rule ip shoal {chain} ip daddr . meta l4proto . th dport @masq meta mark set meta mark | 0x5300 comment \"shoal-mark\""));
            assert_eq!(*rules[1], format!("add rule ip shoal {chain} ip daddr . meta l4proto @masq_any meta mark set meta mark | 0x5300 comment \"shoal-mark-any\""));
            assert_eq!(*rules[2], format!("add rule ip shoal {chain} dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @pub_1 comment \"shoal-pub_1\""));
            assert_eq!(*rules[3], format!("add rule ip shoal {chain} dnat ip to ip daddr . meta l4proto . numgen random mod 3 map @vip_any_3 comment \"shoal-vip_any_3\""));
        }
        // the host-mode port goes to the local task, one slot, without SNAT
        assert!(text.contains(&"add element ip shoal pub_1 { 192.168.33.10 . tcp . 6000 . 0 : 10.0.9.2 . 8080 }".to_string()), "{text:#?}");
        assert!(!text.iter().any(|l| l.contains("masq { 192.168.33.10 . tcp . 6000 }")));
        // no rule per service
        assert_eq!(text.iter().filter(|l| l.starts_with("add rule")).count(), 1 + 1 + 5 + 5);
        let obs = converge(&t);
        assert_eq!(plan(&t, &obs), vec![]);
    }

    #[test]
    fn a_vip_key_with_a_port_is_not_steered() {
        // lb::plan never makes one; the maps could not hold it
        let mut t = table();
        let f = t.vips[&VIP].clone();
        t.vips.insert(ServiceKey::tcp(Ipv4Addr::new(10, 0, 9, 101), 80), f);
        assert_eq!(converge(&t), converge(&table()));
    }

    #[test]
    fn one_backend_change_rewrites_only_that_frontends_slots_at_any_table_size() {
        let count = |n: u32| {
            let t = big(n);
            let obs = converge(&t);
            let mut after = t.clone();
            // 10.0.9.4 -> 10.0.9.5: the same place in the sorted backends
            after.vips.get_mut(&VIP).unwrap().backends[2].addr = sa("10.0.9.5:0");
            let ops = plan(&after, &obs);
            let touched = [(Kind::Vip, VIP)].into_iter().collect();
            assert_eq!(plan_touched(&after, &obs, &touched), ops, "the incremental plan is the full plan's");
            ops
        };
        let small = count(10);
        let large = count(10_000);
        assert_eq!(small, large);
        // the same slot count: only the slot whose backend changed
        assert_eq!(
            text(&large),
            vec![
                "delete element ip shoal vip_any_3 { 10.0.9.100 . tcp . 2 }",
                "add element ip shoal vip_any_3 { 10.0.9.100 . tcp . 2 : 10.0.9.5 }"
            ]
        );
        // a published port's target port change is one slot too
        let t = big(10);
        let obs = converge(&t);
        let mut after = t.clone();
        let web = ServiceKey::tcp(Ipv4Addr::new(192, 168, 33, 10), 5000);
        after.published.get_mut(&web).unwrap().backends[1].addr = sa("10.0.9.3:81");
        assert_eq!(
            text(&plan(&after, &obs)),
            vec![
                "delete element ip shoal pub_3 { 192.168.33.10 . tcp . 5000 . 1 }",
                "add element ip shoal pub_3 { 192.168.33.10 . tcp . 5000 . 1 : 10.0.9.3 . 81 }"
            ]
        );
    }

    #[test]
    fn a_backend_leaving_moves_the_frontend_to_the_smaller_map_and_costs_the_same_at_10k_services() {
        let count = |n: u32| {
            let t = big(n);
            let obs = converge(&t);
            let mut after = t.clone();
            after.vips.get_mut(&VIP).unwrap().backends.remove(1);
            let touched = [(Kind::Vip, VIP)].into_iter().collect();
            (plan(&after, &obs), plan_touched(&after, &obs, &touched))
        };
        let (small_full, small_touched) = count(10);
        let (large_full, large_touched) = count(10_000);
        assert_eq!(small_touched, large_touched);
        assert_eq!(small_full, large_full);
        let t = text(&large_touched);
        // vip_any_2 is new: the map, the dnat rule in both nat chains, then the elements
        assert_eq!(t[0], "add map ip shoal vip_any_2 { typeof ip daddr . meta l4proto . numgen random mod 2 : ip daddr ; }");
        assert!(
            t.contains(
                &"delete element ip shoal vip_any_3 { 10.0.9.100 . tcp . 0, 10.0.9.100 . tcp . 1, 10.0.9.100 . tcp . 2 }".to_string()
            ),
            "{t:#?}"
        );
        assert!(
            t.contains(&"add element ip shoal vip_any_2 { 10.0.9.100 . tcp . 0 : 10.0.9.2, 10.0.9.100 . tcp . 1 : 10.0.9.4 }".to_string()),
            "{t:#?}"
        );
        let elements = large_touched.iter().filter(|o| o.is_element()).count();
        assert_eq!(elements, 2, "{t:#?}");
        // once vip_any_2 exists, the next change is elements only
        let t10k = big(10_000);
        let mut obs = converge(&t10k);
        let mut after = t10k.clone();
        after.vips.get_mut(&VIP).unwrap().backends.remove(1);
        obs.apply(&plan(&after, &obs));
        let other = ServiceKey::tcp(Ipv4Addr::from(0x0a60_0000 + 5000), ANY_PORT);
        let mut next = after.clone();
        next.vips.get_mut(&other).unwrap().backends.remove(0);
        let touched = diff(&after, &next).iter().map(|o| o.frontend()).collect();
        let ops = plan_touched(&next, &obs, &touched);
        assert!(ops.iter().all(NftOp::is_element), "{ops:#?}");
        assert_eq!(ops.len(), 2);
    }

    #[test]
    fn weights_are_slot_counts_and_large_weights_share_64_slots() {
        let a = target("10.0.9.2:80", 1);
        let b = target("10.0.9.3:80", 3);
        let c = target("10.0.9.4:80", 2);
        assert_eq!(slot_layout(&[&a, &b, &c]), vec![a.addr, b.addr, c.addr, b.addr, c.addr, b.addr]);
        // equal weights: one slot each, whatever the weight
        let (a5, b5) = (target("10.0.9.2:80", 5), target("10.0.9.3:80", 5));
        assert_eq!(slot_layout(&[&a5, &b5]), vec![a5.addr, b5.addr]);
        let heavy = target("10.0.9.3:80", 100);
        let s = slot_layout(&[&a, &heavy]);
        assert_eq!(s.len(), 64);
        assert!(s.iter().filter(|x| **x == a.addr).count() <= 2, "{s:?}");
        assert!(s.iter().filter(|x| **x == heavy.addr).count() >= 62, "{s:?}");
        // more backends than the weighted slot count: one each (up to MAX_SLOTS)
        let many: Vec<Target> =
            (0..100u32).map(|i| Target { weight: 1 + (i % 2) as u16, ..target(&format!("10.1.{}.{}:80", i / 200, i % 200), 1) }).collect();
        let refs: Vec<&Target> = many.iter().collect();
        let s = slot_layout(&refs);
        assert_eq!(s.len(), 100);
        assert_eq!(s.iter().collect::<BTreeSet<_>>().len(), 100);
        assert!(slot_layout(&[]).is_empty());
    }

    #[test]
    fn a_vips_weights_are_slot_counts_too() {
        let mut t = table();
        t.vips.get_mut(&VIP).unwrap().backends[1].weight = 3;
        let obs = converge(&t);
        let slots: Vec<&SocketAddrV4> = obs.slots[&(Kind::Vip, VIP)][&5].values().collect();
        assert_eq!(
            slots,
            [sa("10.0.9.2:0"), sa("10.0.9.3:0"), sa("10.0.9.4:0"), sa("10.0.9.3:0"), sa("10.0.9.3:0")].iter().collect::<Vec<_>>()
        );
        assert!(obs.sets.contains("vip_any_5"));
    }

    #[test]
    fn keep_client_ip_uses_local_backends_without_snat_and_falls_back_with_snat() {
        let mut t = table();
        let key = ServiceKey::tcp(Ipv4Addr::new(192, 168, 33, 10), 5000);
        t.published.get_mut(&key).unwrap().keep_client_ip = true;
        let obs = converge(&t);
        assert_eq!(obs.slots[&(Kind::Published, key)][&1].values().collect::<Vec<_>>(), vec![&sa("10.0.9.2:80")]);
        assert!(!obs.masq.contains(&(Kind::Published, key)));
        // the local task leaves: the remote ones, SNATed
        let mut after = t.clone();
        after.published.get_mut(&key).unwrap().backends.retain(|b| !b.local);
        let ops = plan(&after, &obs);
        assert!(ops.contains(&NftOp::AddMasq((Kind::Published, key))), "{ops:#?}");
        assert!(ops.contains(&NftOp::DeleteSlots { kind: Kind::Published, key, size: 1, slots: vec![0] }));
        assert!(ops.contains(&NftOp::AddSlots {
            kind: Kind::Published,
            key,
            size: 2,
            slots: vec![(0, sa("10.0.9.3:80")), (1, sa("10.0.9.4:80"))]
        }));
    }

    #[test]
    fn removing_a_service_removes_its_elements_and_an_unused_map() {
        let t = table();
        let obs = converge(&t);
        let mut after = t.clone();
        after.published.retain(|k, _| k.port != 6000);
        let text = text(&plan(&after, &obs));
        let mut want = Vec::new();
        for chain in ["prerouting", "output"] {
            want.extend([
                format!("flush chain ip shoal {chain}"),
                format!("add rule ip shoal {chain} ip daddr . meta l4proto . th dport @masq meta mark set meta mark | 0x5300 comment \"shoal-mark\""),
                format!("add rule ip shoal {chain} ip daddr . meta l4proto @masq_any meta mark set meta mark | 0x5300 comment \"shoal-mark-any\""),
                format!("add rule ip shoal {chain} dnat ip to ip daddr . meta l4proto . numgen random mod 3 map @vip_any_3 comment \"shoal-vip_any_3\""),
                format!("add rule ip shoal {chain} dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @pub_3 comment \"shoal-pub_3\""),
            ]);
        }
        want.push("delete element ip shoal pub_1 { 192.168.33.10 . tcp . 6000 . 0 }".into());
        want.push("delete map ip shoal pub_1".into());
        assert_eq!(text, want);
        assert_eq!(diff(&t, &after).len(), 1);
        // the incremental path leaves the empty map (and its rules) for the next full plan
        let touched = [(Kind::Published, ServiceKey::tcp(Ipv4Addr::new(192, 168, 33, 10), 6000))].into_iter().collect();
        let inc = plan_touched(&after, &obs, &touched);
        assert_eq!(super::tests::text(&inc), vec!["delete element ip shoal pub_1 { 192.168.33.10 . tcp . 6000 . 0 }"]);
    }

    #[test]
    fn a_frontend_without_healthy_backends_is_not_steered() {
        let mut t = table();
        t.vips.get_mut(&VIP).unwrap().backends.clear();
        let obs = converge(&table());
        let ops = plan(&t, &obs);
        assert!(ops.contains(&NftOp::DeleteSlots { kind: Kind::Vip, key: VIP, size: 3, slots: vec![0, 1, 2] }), "{ops:#?}");
        assert!(ops.contains(&NftOp::DeleteMasq((Kind::Vip, VIP))));
        assert_eq!(plan_teardown(&obs), vec![NftOp::DeleteTable]);
        assert!(!converge(&t).summary().contains_key(&(Kind::Vip, VIP)));
        assert_eq!(obs.summary()[&(Kind::Vip, VIP)].len(), 3);
    }

    #[test]
    fn the_older_chain_per_service_layout_is_replaced_in_one_transaction() {
        let mut old = NftObserved { table: true, ..NftObserved::default() };
        old.sets.extend(["vips".to_string(), "published".to_string()]);
        for c in ["prerouting", "postrouting", "mesh_snat", "v_10_0_9_100_80_tcp"] {
            old.chains.insert(c.into(), vec!["h1".into()]);
        }
        let t = table();
        let ops = plan(&t, &old);
        assert_eq!(ops[0], NftOp::DeleteTable);
        assert_eq!(ops[1], NftOp::AddTable);
        assert_eq!(ops[1..], plan(&t, &NftObserved::default())[..]);
        let mut obs = old.clone();
        obs.apply(&ops);
        assert_eq!(obs, converge(&t));
        assert!(plan(&t, &obs).is_empty());
        // the incremental path also replaces a foreign layout whole
        let touched = [(Kind::Vip, VIP)].into_iter().collect();
        assert_eq!(plan_touched(&t, &old, &touched)[0], NftOp::DeleteTable);
    }

    #[test]
    fn the_port_keyed_vip_layout_is_replaced_in_one_transaction() {
        // slot maps before any-port VIPs: `vip_<S>` keyed by port, one masq set
        let mut old = NftObserved { table: true, ..NftObserved::default() };
        old.sets.extend(["masq", "vip_3", "pub_3", "pub_1"].map(String::from));
        for c in ["prerouting", "output", "postrouting", "mesh_snat"] {
            old.chains.insert(c.into(), vec!["shoal-mark".into()]);
        }
        let t = table();
        let ops = plan(&t, &old);
        assert_eq!(ops[0], NftOp::DeleteTable);
        assert_eq!(ops[1..], plan(&t, &NftObserved::default())[..]);
        let touched = [(Kind::Vip, VIP)].into_iter().collect();
        assert_eq!(plan_touched(&t, &old, &touched)[0], NftOp::DeleteTable);
        // and a table of this layout is adopted
        assert!(plan(&t, &converge(&t)).is_empty());
    }

    #[test]
    fn udp_backends_are_forgotten_only_when_no_slot_reaches_them() {
        let t = table();
        let mut obs = converge(&t);
        let dns = ServiceKey::udp(Ipv4Addr::new(192, 168, 33, 10), 5353);
        // 10.0.9.3:53 leaves the published port only: the VIP still reaches 10.0.9.3 on every port
        let mut after = t.clone();
        after.published.get_mut(&dns).unwrap().backends.retain(|b| b.addr != sa("10.0.9.3:53"));
        let ops = plan(&after, &obs);
        let cand = obs.udp_backends_in(&ops);
        assert!(cand.contains(&sa("10.0.9.3:53")));
        obs.apply(&ops);
        assert!(obs.reaches_udp(&sa("10.0.9.3:53")));
        assert_eq!(obs.udp_gone(cand), (vec![], vec![]));
        // and now the VIP too: nothing reaches 10.0.9.3, every UDP port of it is forgotten
        let mut after2 = after.clone();
        after2.vips.get_mut(&VIP_UDP).unwrap().backends.retain(|b| b.addr.ip() != &Ipv4Addr::new(10, 0, 9, 3));
        let ops = plan(&after2, &obs);
        let cand = obs.udp_backends_in(&ops);
        assert!(cand.contains(&sa("10.0.9.3:0")), "{cand:?}");
        obs.apply(&ops);
        assert!(!obs.reaches_udp(&sa("10.0.9.3:53")));
        assert_eq!(obs.udp_gone(cand), (vec![sa("10.0.9.3:0")], vec![]));
        // 10.0.9.2 leaves the VIP but not the published port: its flows there stay
        let mut after3 = after2.clone();
        after3.vips.get_mut(&VIP_UDP).unwrap().backends.retain(|b| b.addr.ip() != &Ipv4Addr::new(10, 0, 9, 2));
        let ops = plan(&after3, &obs);
        let cand = obs.udp_backends_in(&ops);
        obs.apply(&ops);
        assert_eq!(obs.udp_gone(cand), (vec![sa("10.0.9.2:0")], vec![sa("10.0.9.2:53")]));
        assert_eq!(obs.udp_refs[&sa("10.0.9.2:53")], 1);
        // TCP backends are never candidates
        let mut after4 = after3.clone();
        after4.vips.get_mut(&VIP).unwrap().backends.clear();
        assert!(obs.udp_backends_in(&plan(&after4, &obs)).is_empty());
    }

    #[test]
    fn batch_text_groups_element_runs_per_set_deletes_first() {
        let t = big(3);
        let ops = plan(&t, &NftObserved::default());
        let text = batch_text(&ops);
        let vip3: Vec<&str> = text.lines().filter(|l| l.starts_with("add element ip shoal vip_any_3 ")).collect();
        assert_eq!(vip3.len(), 1, "{text}");
        assert_eq!(vip3[0].matches(" : ").count(), 3 * 3 + 2 * 3, "3 extra services and the TCP and UDP VIPs of web");
        let obs = converge(&t);
        let mut after = t.clone();
        after.vips.get_mut(&VIP).unwrap().backends[0].addr = sa("10.0.9.9:0");
        after.vips.get_mut(&VIP).unwrap().backends.sort();
        let text = batch_text(&plan(&after, &obs));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("delete element ip shoal vip_any_3 { 10.0.9.100 . tcp . "), "{text}");
        assert!(lines[1].starts_with("add element ip shoal vip_any_3 { 10.0.9.100 . tcp . "), "{text}");
    }

    #[test]
    fn describe_gives_one_line_per_frontend_and_per_rewritten_chain() {
        let t = table();
        let obs = converge(&t);
        let mut after = t.clone();
        for f in after.vips.values_mut().chain(after.published.values_mut()) {
            f.backends.retain(|b| b.addr.ip() != &Ipv4Addr::new(10, 0, 9, 2));
        }
        let ops = plan(&after, &obs);
        let lines = describe(&ops);
        // the TCP and UDP VIPs and 3 published ports change
        let frontends = lines.iter().filter(|l| l.contains(": slots -")).count();
        assert_eq!(frontends, 5, "{lines:#?}");
        // maps vip_any_2, pub_2 come; pub_1, vip_any_3, pub_3 go; two chains rewritten
        assert_eq!(lines.len(), 5 + 2 + 3 + 2, "{lines:#?}");
        assert!(
            lines.contains(&"nft: rewrite chain prerouting: shoal-mark, shoal-mark-any, shoal-vip_any_2, shoal-pub_2".to_string()),
            "{lines:#?}"
        );
        assert!(lines.contains(&"nft: vip 10.0.9.100:*/tcp: slots -3 +2 -> [10.0.9.3, 10.0.9.4]".to_string()), "{lines:#?}");
        assert!(
            lines.contains(&"nft: published 192.168.33.10:5000/tcp: slots -3 +2 -> [10.0.9.3:80, 10.0.9.4:80]".to_string()),
            "{lines:#?}"
        );
        assert!(describe(&plan(&t, &obs)).is_empty());
    }
}
