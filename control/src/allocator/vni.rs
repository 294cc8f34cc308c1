//! VXLAN network identifiers: the lowest free one from 4096 (below is left to local use, as in
//! Docker), up to the 24-bit maximum.

use std::collections::BTreeSet;

pub const VNI_FIRST: u32 = 4096;
pub const VNI_LAST: u32 = (1 << 24) - 1;

pub fn next_vni(used: &BTreeSet<u32>) -> Option<u32> {
    let mut candidate = VNI_FIRST;
    for &v in used.range(VNI_FIRST..) {
        if v > candidate {
            break;
        }
        if v == candidate {
            candidate += 1;
        }
    }
    (candidate <= VNI_LAST).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_4096() {
        assert_eq!(next_vni(&BTreeSet::new()), Some(4096));
    }

    #[test]
    fn fills_holes_first() {
        let used: BTreeSet<u32> = [4096, 4097, 4099].into_iter().collect();
        assert_eq!(next_vni(&used), Some(4098));
    }

    #[test]
    fn ignores_low_numbers() {
        let used: BTreeSet<u32> = [1, 2, 4096].into_iter().collect();
        assert_eq!(next_vni(&used), Some(4097));
    }

    #[test]
    fn exhausted_at_the_top() {
        let used: BTreeSet<u32> = (VNI_FIRST..=VNI_LAST).collect();
        assert_eq!(next_vni(&used), None);
    }

    proptest::proptest! {
        #[test]
        fn never_returns_a_used_vni(used in proptest::collection::btree_set(4090u32..4200, 0..80)) {
            let v = next_vni(&used).unwrap();
            proptest::prop_assert!(v >= VNI_FIRST);
            proptest::prop_assert!(!used.contains(&v));
            // and it is the lowest free one
            for x in VNI_FIRST..v { proptest::prop_assert!(used.contains(&x)); }
        }
    }
}
