//! Addresses inside one overlay subnet: the gateway, VIPs, per-node load-balancer addresses
//! and task addresses all come from here. The network and broadcast addresses are never given.

use ipnet::Ipv4Net;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

#[derive(Clone, Debug)]
pub struct AddressPool {
    subnet: Ipv4Net,
    used: BTreeSet<u32>,
    /// Where the next search starts; addresses below it are known used.
    cursor: u32,
}

impl AddressPool {
    pub fn new(subnet: Ipv4Net) -> AddressPool {
        let first = u32::from(subnet.network()) + 1;
        AddressPool { subnet, used: BTreeSet::new(), cursor: first }
    }

    fn first(&self) -> u32 {
        u32::from(self.subnet.network()) + 1
    }

    fn last(&self) -> u32 {
        u32::from(self.subnet.broadcast()) - 1
    }

    /// Mark an address as used (the gateway, or one found in the state).
    pub fn reserve(&mut self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        if a < self.first() || a > self.last() {
            return false;
        }
        if a < self.cursor {
            // Reservations out of order do not move the cursor back: it only skips used ones.
        }
        self.used.insert(a)
    }

    pub fn release(&mut self, addr: Ipv4Addr) {
        let a = u32::from(addr);
        if self.used.remove(&a) && a < self.cursor {
            self.cursor = a;
        }
    }

    /// The lowest free address, or None when the subnet is full.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let last = self.last();
        let mut a = self.cursor.max(self.first());
        while a <= last {
            if !self.used.contains(&a) {
                self.used.insert(a);
                self.cursor = a + 1;
                return Some(Ipv4Addr::from(a));
            }
            a += 1;
        }
        None
    }

    /// The first free address after `after`, wrapping around to the start of the subnet once
    /// past its end; None when the subnet is full.
    pub fn allocate_after(&mut self, after: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        let (first, last) = (self.first(), self.last());
        let start = after.map(u32::from).filter(|a| (first..last).contains(a)).map_or(first, |a| a + 1);
        let a = (start..=last).chain(first..start).find(|a| !self.used.contains(a))?;
        self.used.insert(a);
        Some(Ipv4Addr::from(a))
    }

    pub fn prefix(&self) -> u8 {
        self.subnet.prefix_len()
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_gives_the_next_free_one_and_wraps() {
        let mut p = AddressPool::new("10.0.0.0/29".parse().unwrap());
        p.reserve("10.0.0.1".parse().unwrap());
        let a = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
        assert_eq!(p.allocate_after(None), a("10.0.0.2"));
        assert_eq!(p.allocate_after(a("10.0.0.2")), a("10.0.0.3"));
        p.release("10.0.0.2".parse().unwrap());
        assert_eq!(p.allocate_after(a("10.0.0.3")), a("10.0.0.4"), "not the one just freed");
        assert_eq!(p.allocate_after(a("10.0.0.4")), a("10.0.0.5"));
        assert_eq!(p.allocate_after(a("10.0.0.5")), a("10.0.0.6"));
        assert_eq!(p.allocate_after(a("10.0.0.6")), a("10.0.0.2"), "wraps to the freed one");
        assert_eq!(p.allocate_after(a("10.0.0.2")), None, "full");
        // An address outside the subnet starts from the beginning.
        p.release("10.0.0.4".parse().unwrap());
        assert_eq!(p.allocate_after(a("192.168.0.1")), a("10.0.0.4"));
    }

    #[test]
    fn gives_lowest_free_and_skips_reserved() {
        let mut p = AddressPool::new("10.0.1.0/24".parse().unwrap());
        assert!(p.reserve("10.0.1.1".parse().unwrap()));
        assert_eq!(p.allocate(), Some("10.0.1.2".parse().unwrap()));
        assert_eq!(p.allocate(), Some("10.0.1.3".parse().unwrap()));
        p.release("10.0.1.2".parse().unwrap());
        assert_eq!(p.allocate(), Some("10.0.1.2".parse().unwrap()));
        assert_eq!(p.allocate(), Some("10.0.1.4".parse().unwrap()));
    }

    #[test]
    fn never_network_or_broadcast_and_exhausts() {
        let mut p = AddressPool::new("10.0.1.0/29".parse().unwrap());
        let got: Vec<Ipv4Addr> = std::iter::from_fn(|| p.allocate()).collect();
        assert_eq!(got.len(), 6);
        assert!(!got.contains(&"10.0.1.0".parse().unwrap()));
        assert!(!got.contains(&"10.0.1.7".parse().unwrap()));
        assert!(!p.reserve("10.0.1.7".parse().unwrap()));
    }

    proptest::proptest! {
        #[test]
        fn allocations_are_unique_and_inside(ops in proptest::collection::vec(proptest::bool::ANY, 1..300)) {
            let subnet: Ipv4Net = "10.9.0.0/24".parse().unwrap();
            let mut p = AddressPool::new(subnet);
            let mut held: Vec<Ipv4Addr> = vec![];
            for alloc in ops {
                if alloc || held.is_empty() {
                    if let Some(a) = p.allocate() {
                        proptest::prop_assert!(subnet.contains(&a));
                        proptest::prop_assert!(a != subnet.network() && a != subnet.broadcast());
                        proptest::prop_assert!(!held.contains(&a));
                        held.push(a);
                    } else {
                        proptest::prop_assert_eq!(held.len(), 254);
                    }
                } else {
                    let a = held.swap_remove(held.len() / 2);
                    p.release(a);
                }
            }
        }
    }
}
