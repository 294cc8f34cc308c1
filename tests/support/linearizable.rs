//! A linearizability checker for histories of per-key registers: Wing & Gong's search for a
//! sequential order consistent with real time, with Lowe's memoisation (a configuration, the set
//! of operations placed so far and the register's value, is explored once), as in Porcupine and
//! Knossos. Registers are independent, so each key is checked alone (linearizability is local).
//!
//! A history is what clients saw: each operation's client, key, kind (write v, or read that
//! returned v), when it was invoked and when it completed, and its outcome: `Ok`, `Failed` (it
//! certainly did not take effect: refused before anything was proposed, or never sent), or
//! `Maybe` (timed out or failed ambiguously: it may have taken effect, at any time after its
//! invocation). A `Maybe` write completes "at infinity"; reads that did not return are dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Write(String),
    /// What the read returned (`None`: the key was not set).
    Read(Option<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// It may or may not have taken effect.
    Maybe,
    /// It certainly did not take effect.
    Failed,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub client: usize,
    pub key: String,
    pub op: Op,
    /// Since the history's epoch.
    pub start: Duration,
    pub end: Duration,
    pub outcome: Outcome,
}

/// One key whose operations have no linearization.
#[derive(Clone, Debug)]
pub struct Violation {
    pub key: String,
    pub explanation: String,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Operations checked (failed ones and reads that did not return are not).
    pub checked: usize,
    pub keys: usize,
    pub violations: Vec<Violation>,
}

/// Bound on configurations explored per key, so a pathological history fails loudly instead of
/// running for ever.
pub const MAX_STEPS: u64 = 50_000_000;

/// Checks every key of `history`.
pub fn check(history: &[Event]) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in history {
        by_key.entry(e.key.as_str()).or_default().push(e);
    }
    let mut report = Report { keys: by_key.len(), ..Default::default() };
    for (key, events) in by_key {
        let ops = ops_of(&events);
        report.checked += ops.len();
        if let Err(explanation) = check_register(&ops) {
            report.violations.push(Violation { key: key.to_string(), explanation });
        }
    }
    report
}

/// An operation as the search sees it: values interned (0 = unset), times in ns, `end` =
/// `u128::MAX` for a write that may have taken effect.
#[derive(Clone, Debug)]
struct RegOp {
    write: bool,
    value: u32,
    start: u128,
    end: u128,
    shown: String,
}

fn ops_of(events: &[&Event]) -> Vec<RegOp> {
    let mut values: HashMap<String, u32> = HashMap::new();
    let mut intern = |v: &Option<String>| match v {
        None => 0,
        Some(s) => {
            let next = values.len() as u32 + 1;
            *values.entry(s.clone()).or_insert(next)
        }
    };
    let mut ops = vec![];
    for e in events {
        let (write, value) = match (&e.op, e.outcome) {
            (_, Outcome::Failed) | (Op::Read(_), Outcome::Maybe) => continue,
            (Op::Write(v), _) => (true, intern(&Some(v.clone()))),
            (Op::Read(v), Outcome::Ok) => (false, intern(v)),
        };
        let end = if e.outcome == Outcome::Maybe { u128::MAX } else { e.end.as_nanos() };
        ops.push(RegOp { write, value, start: e.start.as_nanos(), end, shown: show(e) });
    }
    // A write that may have happened matters only through the reads that saw it (values are
    // unique): if none did, leaving it out (it never took effect) is always a valid choice; if
    // some did, it took effect before the first of them completed. Without this, each such
    // write doubles the orders a failing search must rule out.
    let mut first_seen: HashMap<u32, u128> = HashMap::new();
    for o in ops.iter().filter(|o| !o.write && o.value != 0) {
        let t = first_seen.entry(o.value).or_insert(o.end);
        *t = (*t).min(o.end);
    }
    ops.retain_mut(|o| {
        if !o.write || o.end != u128::MAX {
            return true;
        }
        match first_seen.get(&o.value) {
            Some(&seen) => {
                o.end = seen.max(o.start);
                true
            }
            None => false,
        }
    });
    ops
}

fn show(e: &Event) -> String {
    let what = match &e.op {
        Op::Write(v) => format!("write {v:?}"),
        Op::Read(v) => format!("read -> {v:?}"),
    };
    let end = if e.outcome == Outcome::Maybe { "?".to_string() } else { format!("{:.3}s", e.end.as_secs_f64()) };
    format!("client {} {what} [{:.3}s, {end}] ({:?})", e.client, e.start.as_secs_f64(), e.outcome)
}

/// Set of operation indices, as words (hashable for the memo).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Box<[u64]>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)].into_boxed_slice())
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The search over one register's operations.
fn check_register(ops: &[RegOp]) -> Result<(), String> {
    let n = ops.len();
    if n == 0 {
        return Ok(());
    }
    let written: HashSet<u32> = ops.iter().filter(|o| o.write).map(|o| o.value).collect();
    if let Some(r) = ops.iter().find(|o| !o.write && o.value != 0 && !written.contains(&o.value)) {
        return Err(format!("not linearizable: {} returned a value no write that may have happened wrote", r.shown));
    }
    // Entries: a call and a return per operation, in time order; at equal times calls come
    // first (operations that touch are taken as concurrent, the weaker claim).
    let mut entries: Vec<(u128, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in ops.iter().enumerate() {
        entries.push((o.start, true, i));
        entries.push((o.end, false, i));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    // A doubly linked list over the entries; index 2n is the head.
    let head = 2 * n;
    let none = usize::MAX;
    let mut next = vec![none; 2 * n + 1];
    let mut prev = vec![none; 2 * n + 1];
    let mut call_of = vec![0; n];
    let mut ret_of = vec![0; n];
    let mut last = head;
    for (pos, &(_, is_call, op)) in entries.iter().enumerate() {
        next[last] = pos;
        prev[pos] = last;
        last = pos;
        if is_call {
            call_of[op] = pos;
        } else {
            ret_of[op] = pos;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = nx;
        if nx != none {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = e;
        if nx != none {
            prev[nx] = e;
        }
    };
    let mut state = 0u32;
    let mut placed = Bits::new(n);
    let mut seen: HashSet<(Bits, u32)> = HashSet::new();
    let mut stack: Vec<(usize, u32)> = vec![];
    let mut entry = next[head];
    let mut steps = 0u64;
    // For the explanation: the deepest the search got, and the operation it stopped at there.
    let mut deepest = (0usize, 0usize);
    while next[head] != none {
        steps += 1;
        if steps > MAX_STEPS {
            return Err(format!("inconclusive: more than {MAX_STEPS} configurations explored over {n} operations"));
        }
        let (_, is_call, op) = entries[entry];
        if is_call {
            let o = &ops[op];
            let ok = o.write || o.value == state;
            let new_state = if o.write { o.value } else { state };
            if ok {
                let mut p = placed.clone();
                p.set(op);
                if seen.insert((p.clone(), new_state)) {
                    stack.push((op, state));
                    state = new_state;
                    placed = p;
                    unlink(&mut next, &mut prev, call_of[op]);
                    unlink(&mut next, &mut prev, ret_of[op]);
                    entry = next[head];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // `op` returned before being placed: undo the last placement and try further on.
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), op);
            }
            let Some((undo, old)) = stack.pop() else {
                let (depth, stuck) = deepest;
                let state_note = "no order of the operations before it leaves the register holding what it needs";
                return Err(format!(
                    "not linearizable: the longest consistent order places {depth} of {n} operations, then {}: {state_note}; \
                     operations overlapping it: {}",
                    ops[stuck].shown,
                    overlapping(ops, stuck)
                ));
            };
            state = old;
            placed.clear(undo);
            relink(&mut next, &mut prev, ret_of[undo]);
            relink(&mut next, &mut prev, call_of[undo]);
            entry = next[call_of[undo]];
        }
    }
    Ok(())
}

fn overlapping(ops: &[RegOp], i: usize) -> String {
    let o = &ops[i];
    let near: Vec<&str> = ops
        .iter()
        .enumerate()
        .filter(|(j, x)| *j != i && x.start <= o.end && o.start <= x.end)
        .map(|(_, x)| x.shown.as_str())
        .take(8)
        .collect();
    if near.is_empty() {
        "none".into()
    } else {
        near.join("; ")
    }
}

/// Acknowledged writes whose effect is gone: the key's final value (`finals`, read after the
/// workload stopped) was written by an operation that completed before the acknowledged write
/// began, or the key ends unset, or holds a value nobody wrote. Each is named.
pub fn lost_writes(history: &[Event], finals: &BTreeMap<String, Option<String>>) -> Vec<String> {
    let mut lost = vec![];
    for (key, fin) in finals {
        let writer = fin.as_ref().and_then(|v| history.iter().find(|e| e.key == *key && e.op == Op::Write(v.clone())));
        if let (Some(v), None) = (fin, writer) {
            lost.push(format!("key {key} ends as {v:?}, which no client wrote"));
            continue;
        }
        for w in history.iter().filter(|e| e.key == *key && e.outcome == Outcome::Ok && matches!(e.op, Op::Write(_))) {
            let gone = match writer {
                None => true,
                Some(f) => f.outcome != Outcome::Maybe && f.end < w.start,
            };
            if gone {
                lost.push(format!("{} on key {key}: the key ends as {fin:?}", show(w)));
            }
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn w(client: usize, key: &str, v: &str, s: u64, e: u64) -> Event {
        Event { client, key: key.into(), op: Op::Write(v.into()), start: ms(s), end: ms(e), outcome: Outcome::Ok }
    }

    fn r(client: usize, key: &str, v: Option<&str>, s: u64, e: u64) -> Event {
        Event { client, key: key.into(), op: Op::Read(v.map(str::to_string)), start: ms(s), end: ms(e), outcome: Outcome::Ok }
    }

    fn with(mut e: Event, outcome: Outcome) -> Event {
        e.outcome = outcome;
        e
    }

    fn ok(h: &[Event]) {
        let rep = check(h);
        assert!(rep.violations.is_empty(), "{:?}", rep.violations);
    }

    fn bad(h: &[Event]) -> String {
        let rep = check(h);
        assert_eq!(rep.violations.len(), 1, "expected one violation");
        rep.violations[0].explanation.clone()
    }

    #[test]
    fn sequential_and_concurrent_histories_that_are_linearizable() {
        ok(&[]);
        ok(&[r(0, "k", None, 0, 1), w(0, "k", "a", 2, 3), r(1, "k", Some("a"), 4, 5), w(1, "k", "b", 6, 7), r(0, "k", Some("b"), 8, 9)]);
        // A read overlapping a write may see either value, and two overlapping reads may see
        // old then new, but not new then old once the first completed.
        ok(&[w(0, "k", "a", 0, 1), w(1, "k", "b", 2, 10), r(2, "k", Some("a"), 3, 4), r(2, "k", Some("b"), 5, 6)]);
        ok(&[w(0, "k", "a", 0, 1), w(1, "k", "b", 2, 10), r(2, "k", Some("b"), 3, 4), r(3, "k", Some("b"), 5, 6)]);
        // Concurrent writes may land in either order.
        ok(&[w(0, "k", "a", 0, 5), w(1, "k", "b", 0, 5), r(2, "k", Some("a"), 6, 7)]);
        ok(&[w(0, "k", "a", 0, 5), w(1, "k", "b", 0, 5), r(2, "k", Some("b"), 6, 7)]);
        // Keys are independent.
        ok(&[w(0, "x", "a", 0, 1), w(0, "y", "b", 2, 3), r(1, "x", Some("a"), 4, 5), r(1, "y", Some("b"), 4, 5)]);
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_a_violation() {
        let why = bad(&[w(0, "k", "a", 0, 1), w(0, "k", "b", 2, 3), r(1, "k", Some("a"), 4, 5)]);
        assert!(why.contains("read -> Some(\"a\")"), "{why}");
        // New then old: the second read began after the first saw "b".
        bad(&[w(0, "k", "a", 0, 1), w(1, "k", "b", 2, 10), r(2, "k", Some("b"), 3, 4), r(2, "k", Some("a"), 5, 6)]);
    }

    #[test]
    fn a_lost_write_is_a_violation_and_is_named() {
        let h = [w(0, "k", "a", 0, 1), r(1, "k", None, 5, 6)];
        bad(&h);
        let finals: BTreeMap<String, Option<String>> = [("k".to_string(), None)].into();
        let lost = lost_writes(&h, &finals);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains("write \"a\""), "{lost:?}");
        // Overwritten by a later write: not lost.
        let h = [w(0, "k", "a", 0, 1), w(1, "k", "b", 2, 3), r(1, "k", Some("b"), 5, 6)];
        ok(&h);
        assert!(lost_writes(&h, &[("k".to_string(), Some("b".to_string()))].into()).is_empty());
        // An older value at the end: "b" was lost.
        let lost = lost_writes(&h, &[("k".to_string(), Some("a".to_string()))].into());
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains("write \"b\""), "{lost:?}");
    }

    #[test]
    fn a_read_of_a_value_never_written_is_a_violation() {
        bad(&[w(0, "k", "a", 0, 1), r(1, "k", Some("zzz"), 2, 3)]);
        // A write that certainly failed was never written either.
        bad(&[with(w(0, "k", "a", 0, 1), Outcome::Failed), r(1, "k", Some("a"), 2, 3)]);
        let lost = lost_writes(&[w(0, "k", "a", 0, 1)], &[("k".to_string(), Some("zzz".to_string()))].into());
        assert!(lost[0].contains("no client wrote"), "{lost:?}");
    }

    #[test]
    fn a_write_that_may_have_happened_may_show_late_or_never_but_not_come_and_go() {
        let maybe = with(w(0, "k", "a", 0, 1), Outcome::Maybe);
        ok(&[maybe.clone(), r(1, "k", None, 5, 6)]);
        ok(&[maybe.clone(), r(1, "k", None, 5, 6), r(1, "k", Some("a"), 100, 101)]);
        bad(&[maybe.clone(), r(1, "k", Some("a"), 5, 6), r(1, "k", None, 100, 101)]);
        // Not lost: it was never acknowledged, and it may have landed after any other write.
        let h = [w(1, "k", "b", 2, 3), maybe, r(1, "k", Some("a"), 5, 6)];
        ok(&h);
        assert!(lost_writes(&h, &[("k".to_string(), Some("a".to_string()))].into()).is_empty());
        // Reads that did not return say nothing.
        ok(&[w(0, "k", "a", 0, 1), with(r(1, "k", Some("zzz"), 2, 3), Outcome::Maybe)]);
    }

    /// A small PRNG (xorshift): the tests need no crate for it.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Clients run operations back to back with random durations; each takes effect at a random
    /// point inside its interval, and reads return what a real register holds then. A tenth of
    /// the writes are `Maybe` (half of those never take effect).
    fn linearizable_history(clients: usize, keys: usize, ops_per_client: usize, seed: u64) -> Vec<Event> {
        let mut rng = Rng(seed);
        let mut planned = vec![];
        for c in 0..clients {
            let mut t = rng.below(5);
            for i in 0..ops_per_client {
                let start = t;
                let point = start + rng.below(20);
                let end = point + rng.below(20);
                let key = format!("k{}", rng.below(keys as u64));
                let write = rng.below(2) == 0;
                let maybe = write && rng.below(10) == 0;
                let lands = !maybe || rng.below(2) == 0;
                planned.push((point, c, key, write.then(|| format!("c{c}-{i}")), start, end, maybe, lands));
                t = end + rng.below(5);
            }
        }
        planned.sort_by_key(|p| p.0);
        let mut reg: HashMap<String, Option<String>> = HashMap::new();
        planned
            .into_iter()
            .map(|(_, client, key, write, start, end, maybe, lands)| {
                let op = match write {
                    Some(v) => {
                        if lands {
                            reg.insert(key.clone(), Some(v.clone()));
                        }
                        Op::Write(v)
                    }
                    None => Op::Read(reg.get(&key).cloned().flatten()),
                };
                let outcome = if maybe { Outcome::Maybe } else { Outcome::Ok };
                Event { client, key, op, start: ms(start), end: ms(end), outcome }
            })
            .collect()
    }

    #[test]
    fn thousands_of_operations_check_quickly_and_one_stale_read_among_them_is_found() {
        let h = linearizable_history(6, 4, 1000, 0x5eed_1234_abcd_0001);
        let started = std::time::Instant::now();
        let rep = check(&h);
        eprintln!("checked {} operations over {} keys in {:?}", rep.checked, rep.keys, started.elapsed());
        assert!(rep.violations.is_empty(), "{:?}", rep.violations);
        assert!(rep.checked > 5000);
        // Turn one late read into a stale one: it returns the value of an acknowledged write A
        // that a second acknowledged write B followed (B began after A ended) before the read
        // began, so no order can place it.
        let mut h = h;
        let acked = |e: &Event| e.outcome == Outcome::Ok && matches!(e.op, Op::Write(_));
        let (i, old) = (h.len() / 2..h.len())
            .filter(|&i| matches!(h[i].op, Op::Read(_)))
            .find_map(|i| {
                let rd = &h[i];
                let a = h
                    .iter()
                    .filter(|b| b.key == rd.key && acked(b) && b.end < rd.start)
                    .find_map(|b| h.iter().find(|a| a.key == rd.key && acked(a) && a.end < b.start))?;
                let Op::Write(v) = &a.op else { return None };
                Some((i, v.clone()))
            })
            .expect("a read to spoil");
        let key = h[i].key.clone();
        h[i].op = Op::Read(Some(old));
        let rep = check(&h);
        assert_eq!(rep.violations.len(), 1, "{:?}", rep.violations);
        assert_eq!(rep.violations[0].key, key);
    }
}
