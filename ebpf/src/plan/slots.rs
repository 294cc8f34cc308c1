//! Weighted selection by slot multiplicity, as Cilium's random selection and
//! Maglev tables do: a backend of weight `w` fills about `w / gcd` slots of
//! its service's dense slot list, so the program's uniformly random slot picks
//! it in proportion to its weight. Weight 0 fills no slot: the backend takes
//! no new flow (drain) while staying present for the flows it has.
//!
//! [`slot_counts`] turns weights into slot counts; [`rebalance`] changes a
//! slot list to new counts with as few slot writes as it can (only slots whose
//! backend changes are written), so one backend change stays O(its weight).

use std::{collections::HashMap, hash::Hash};

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Slots of each backend for `weights`: `w / g` where `g` is the gcd of the
/// non-zero weights (so equal weights cost one slot each, whatever their
/// value), 0 for weight 0.
///
/// When those exceed `budget` slots, the budget (raised to the number of
/// non-zero weights, so every such backend keeps a slot) is apportioned by
/// largest remainder: every non-zero weight gets one slot plus its share of
/// the rest; shares are then exact to within one slot.
pub fn slot_counts(weights: &[u16], budget: u32) -> Vec<u32> {
    let g = weights.iter().fold(0, |g, &w| gcd(g, u32::from(w)));
    if g == 0 {
        return vec![0; weights.len()];
    }
    let reduced: Vec<u32> = weights.iter().map(|&w| u32::from(w) / g).collect();
    let sum: u64 = reduced.iter().map(|&r| u64::from(r)).sum();
    let nonzero = weights.iter().filter(|&&w| w > 0).count() as u32;
    let budget = budget.max(nonzero);
    if sum <= u64::from(budget) {
        return reduced;
    }
    // Largest remainder over the slots left once every backend has one.
    let spare = u64::from(budget - nonzero);
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let mut counts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (i, &w) in weights.iter().enumerate() {
        if w == 0 {
            counts.push(0);
            continue;
        }
        let exact = spare * u64::from(w);
        counts.push(1 + (exact / total) as u32);
        remainders.push((exact % total, i));
    }
    let given: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    let left = u64::from(budget) - given;
    // Largest remainder first; ties to the earlier backend (deterministic).
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in remainders.iter().take(left as usize) {
        counts[i] += 1;
    }
    counts
}

/// Slot writes of one [`rebalance`]: which slots get which backend, and the
/// list's length before and after (slots `new_len..old_len` are to free).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebalanced<T> {
    /// (slot, backend) to write, in slot order.
    pub fills: Vec<(usize, T)>,
    /// Length before.
    pub old_len: usize,
    /// Length after.
    pub new_len: usize,
}

/// Make `list` hold each item of `want` exactly its count of times (items of
/// `list` absent from `want` count 0), writing as few slots as possible:
/// surplus occurrences in the tail that goes away are dropped for free, the
/// other surplus occurrences become holes, filled first with the kept items
/// stranded in that tail, then with the items that need more slots. `want`
/// gives the order new items are placed in.
pub fn rebalance<T: Copy + Eq + Hash>(list: &mut Vec<T>, want: &[(T, u32)]) -> Rebalanced<T> {
    let old_len = list.len();
    let new_len: usize = want.iter().map(|(_, c)| *c as usize).sum();
    let target: HashMap<T, u32> = want.iter().copied().collect();
    let mut have: HashMap<T, u32> = HashMap::new();
    for item in list.iter() {
        *have.entry(*item).or_default() += 1;
    }
    // Occurrences to drop per item.
    let mut surplus: HashMap<T, u32> = have
        .iter()
        .filter_map(|(item, &n)| {
            let keep = target.get(item).copied().unwrap_or(0);
            (n > keep).then(|| (*item, n - keep))
        })
        .collect();
    let mut take_surplus = |item: &T| match surplus.get_mut(item) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    };

    // The tail that goes away: drop surplus there, strand the rest.
    let mut to_place = Vec::new();
    for slot in (new_len..old_len).rev() {
        if !take_surplus(&list[slot]) {
            to_place.push(list[slot]);
        }
    }
    to_place.reverse();
    // The kept head: its remaining surplus becomes holes.
    let mut holes = Vec::new();
    for (slot, item) in list.iter().enumerate().take(new_len) {
        if take_surplus(item) {
            holes.push(slot);
        }
    }
    holes.extend(old_len..new_len);
    for &(item, count) in want {
        let had = have.get(&item).copied().unwrap_or(0);
        to_place.extend(std::iter::repeat_n(item, count.saturating_sub(had) as usize));
    }
    debug_assert_eq!(holes.len(), to_place.len(), "every hole gets exactly one item");

    list.truncate(new_len);
    let mut fills = Vec::with_capacity(holes.len());
    for (slot, item) in holes.into_iter().zip(to_place) {
        if slot < list.len() {
            list[slot] = item;
        } else {
            list.push(item);
        }
        fills.push((slot, item));
    }
    Rebalanced { fills, old_len, new_len }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts_of(list: &[char]) -> HashMap<char, u32> {
        let mut m = HashMap::new();
        for c in list {
            *m.entry(*c).or_default() += 1;
        }
        m
    }

    #[test]
    fn equal_weights_take_one_slot_each_whatever_their_value() {
        assert_eq!(slot_counts(&[1, 1, 1], 1024), [1, 1, 1]);
        assert_eq!(slot_counts(&[100, 100], 1024), [1, 1]);
        assert_eq!(slot_counts(&[3, 1, 2], 1024), [3, 1, 2]);
        assert_eq!(slot_counts(&[40, 20, 0], 1024), [2, 1, 0]);
        assert_eq!(slot_counts(&[0, 0], 1024), [0, 0]);
        assert_eq!(slot_counts(&[], 1024), [] as [u32; 0]);
    }

    #[test]
    fn weights_past_the_budget_are_apportioned_within_one_slot() {
        let weights = [1000, 1, 500, 0, 250];
        let counts = slot_counts(&weights, 100);
        assert_eq!(counts.iter().sum::<u32>(), 100);
        assert_eq!(counts[3], 0);
        assert!(counts.iter().zip(weights).all(|(&c, w)| (c > 0) == (w > 0)), "{counts:?}");
        // Each non-zero weight: 1 + its exact share of the 96 spare slots, rounded either way.
        for (i, &w) in weights.iter().enumerate().filter(|(_, w)| **w > 0) {
            let exact = 1.0 + 96.0 * f64::from(w) / 1751.0;
            assert!((f64::from(counts[i]) - exact).abs() < 1.0, "backend {i}: {counts:?}");
        }
        // More backends than the budget: each keeps one slot.
        assert_eq!(slot_counts(&[7, 3, 5], 2), [1, 1, 1]);
        assert_eq!(slot_counts(&[u16::MAX, 1], 4), [3, 1]);
    }

    #[test]
    fn removing_one_writes_one_slot_and_frees_the_last() {
        let mut list = vec!['a', 'b', 'c', 'd'];
        let r = rebalance(&mut list, &[('a', 1), ('c', 1), ('d', 1)]);
        assert_eq!(r, Rebalanced { fills: vec![(1, 'd')], old_len: 4, new_len: 3 });
        assert_eq!(list, ['a', 'd', 'c']);
        // The last one goes for free.
        let r = rebalance(&mut list, &[('a', 1), ('d', 1)]);
        assert_eq!(r.fills, []);
        assert_eq!(list, ['a', 'd']);
    }

    #[test]
    fn adding_weight_appends_only_the_new_slots() {
        let mut list = vec!['a', 'b'];
        let r = rebalance(&mut list, &[('a', 1), ('b', 1), ('c', 3)]);
        assert_eq!(r.fills, [(2, 'c'), (3, 'c'), (4, 'c')]);
        assert_eq!(list, ['a', 'b', 'c', 'c', 'c']);
        // c 3 -> 1: two slots go, nothing else moves.
        let r = rebalance(&mut list, &[('a', 1), ('b', 1), ('c', 1)]);
        assert_eq!(r.fills, []);
        assert_eq!((r.old_len, r.new_len), (5, 3));
    }

    #[test]
    fn random_changes_reach_exact_counts_with_minimal_writes() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let items = ['a', 'b', 'c', 'd', 'e', 'f'];
        let mut list = Vec::new();
        for _ in 0..500 {
            let want: Vec<(char, u32)> = items.iter().map(|&c| (c, next(5) as u32)).collect();
            let before = list.clone();
            let r = rebalance(&mut list, &want);
            let counts = counts_of(&list);
            for (c, n) in &want {
                assert_eq!(counts.get(c).copied().unwrap_or(0), *n, "{want:?} -> {list:?}");
            }
            assert_eq!(list.len(), r.new_len);
            // Every slot that changed was written, and nothing else was.
            for (slot, now) in list.iter().enumerate() {
                let written = r.fills.iter().any(|(s, _)| *s == slot);
                let changed = before.get(slot) != Some(now);
                assert!(!changed || written, "slot {slot} changed unwritten");
            }
            // Writes: each item gets at most (its slots outside the kept head) new slots.
            let bound: usize = want
                .iter()
                .map(|(c, n)| {
                    let kept = before[..before.len().min(r.new_len)].iter().filter(|x| *x == c).count();
                    (*n as usize).saturating_sub(kept)
                })
                .sum();
            assert!(r.fills.len() <= bound, "{} writes, bound {bound}", r.fills.len());
        }
    }
}
