//! The data-plane worker's choice for its load balancer on each pass, without I/O: whether to
//! keep the open balancer, rewire it to a new set of networks, or open one; then whether to
//! program it by difference from the last table or repair it whole. `worker.rs` carries the
//! choice out against the kernel.

use shoal_dataplane::lb::LbTable;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The interfaces a balancer is attached to: the underlay address, and each bridge with its
/// SNAT address.
pub type Wiring = (Option<Ipv4Addr>, BTreeMap<String, Ipv4Addr>);

/// How the pass gets a balancer attached to the networks it wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// The open balancer is attached to these networks already.
    Keep,
    /// Networks came or went: attach the open balancer to the new set in place (no reload);
    /// when it cannot, or fails, it is closed and a new one opened.
    Rewire,
    /// No balancer is open (the first pass, or the last one failed): open one.
    Open,
}

pub fn attach(open: bool, attached: Option<&Wiring>, want: &Wiring) -> Attach {
    match (open, attached) {
        (false, _) | (true, None) => Attach::Open,
        (true, Some(a)) if a == want => Attach::Keep,
        (true, Some(_)) => Attach::Rewire,
    }
}

/// How the pass programs an attached balancer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// Apply the difference from the table it was last brought to: O(change) kernel work.
    Diff,
    /// Read the kernel back and fix everything: the same table again (a repair pass), or none
    /// known (just opened or reopened, so what the kernel holds is unknown).
    Repair,
}

pub fn program(last: Option<&LbTable>, want: &LbTable) -> Program {
    match last {
        Some(prev) if prev != want => Program::Diff,
        _ => Program::Repair,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wiring(bridges: &[&str]) -> Wiring {
        (Some(Ipv4Addr::new(192, 168, 33, 10)), bridges.iter().map(|b| (b.to_string(), Ipv4Addr::new(10, 0, 0, 2))).collect())
    }

    #[test]
    fn the_first_pass_and_a_pass_after_a_failure_open_a_balancer() {
        assert_eq!(attach(false, None, &wiring(&["br-a"])), Attach::Open);
        // A failed pass closed the balancer but the wiring it had is still remembered.
        assert_eq!(attach(false, Some(&wiring(&["br-a"])), &wiring(&["br-a"])), Attach::Open);
        assert_eq!(attach(true, None, &wiring(&["br-a"])), Attach::Open, "an open balancer with no known wiring is opened again");
    }

    #[test]
    fn networks_coming_or_going_rewire_the_open_balancer_and_the_same_set_keeps_it() {
        let now = wiring(&["br-a"]);
        assert_eq!(attach(true, Some(&now), &wiring(&["br-a"])), Attach::Keep);
        assert_eq!(attach(true, Some(&now), &wiring(&["br-a", "br-b"])), Attach::Rewire, "a network came");
        assert_eq!(attach(true, Some(&wiring(&["br-a", "br-b"])), &now), Attach::Rewire, "a network went");
        let moved = (Some(Ipv4Addr::new(192, 168, 33, 11)), now.1.clone());
        assert_eq!(attach(true, Some(&now), &moved), Attach::Rewire, "the underlay address changed");
    }

    #[test]
    fn a_changed_table_is_applied_as_a_difference_and_anything_else_is_a_repair() {
        let empty = LbTable::default();
        let other = LbTable { underlay: Some(Ipv4Addr::new(192, 168, 33, 10)), ..Default::default() };
        assert_eq!(program(Some(&empty), &other), Program::Diff);
        assert_eq!(program(Some(&other), &other), Program::Repair, "the same table again: read back and fix drift");
        assert_eq!(program(None, &other), Program::Repair, "just opened: the kernel's state is unknown");
    }
}
