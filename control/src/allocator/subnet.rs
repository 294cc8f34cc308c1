//! Carving overlay subnets from the default address pools. A subnet never overlaps another
//! network's subnet and never contains a node's address (that would black-hole the underlay).

use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Why an explicit subnet cannot be used, naming it and what it collides with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    #[error("subnet {subnet} is too small: use a prefix of /29 or shorter")]
    TooSmall { subnet: Ipv4Net },
    #[error("{subnet} is not a network address: did you mean {}?", .subnet.trunc())]
    NotNetworkAddress { subnet: Ipv4Net },
    #[error("subnet {subnet} overlaps {other} of network {network}")]
    Overlaps { subnet: Ipv4Net, other: Ipv4Net, network: String },
    #[error("subnet {subnet} contains node address {addr}")]
    HoldsNode { subnet: Ipv4Net, addr: Ipv4Addr },
}

/// Why an explicit subnet cannot be used, if it cannot.
pub fn check_subnet(subnet: &Ipv4Net, taken: &[(String, Ipv4Net)], node_addrs: &[Ipv4Addr]) -> Result<(), SubnetError> {
    let subnet = *subnet;
    if subnet.prefix_len() > 29 {
        return Err(SubnetError::TooSmall { subnet });
    }
    if subnet.network() != subnet.addr() {
        return Err(SubnetError::NotNetworkAddress { subnet });
    }
    if let Some((name, other)) = taken.iter().find(|(_, t)| overlaps(t, &subnet)) {
        return Err(SubnetError::Overlaps { subnet, other: *other, network: name.clone() });
    }
    if let Some(a) = node_addrs.iter().find(|a| subnet.contains(*a)) {
        return Err(SubnetError::HoldsNode { subnet, addr: *a });
    }
    Ok(())
}

/// The first `/size` subnet of the pools that overlaps nothing taken and holds no node address.
pub fn carve(pools: &[Ipv4Net], size: u8, taken: &[Ipv4Net], node_addrs: &[Ipv4Addr]) -> Option<Ipv4Net> {
    for pool in pools {
        if size < pool.prefix_len() || size > 32 {
            continue;
        }
        let Ok(mut subnets) = pool.subnets(size) else { continue };
        let found = subnets.find(|s| !taken.iter().any(|t| overlaps(t, s)) && !node_addrs.iter().any(|a| s.contains(a)));
        if found.is_some() {
            return found;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn first_subnet_of_the_pool() {
        assert_eq!(carve(&[net("10.0.0.0/8")], 24, &[], &[]), Some(net("10.0.0.0/24")));
    }

    #[test]
    fn skips_taken_and_node_addresses() {
        let taken = [net("10.0.0.0/24"), net("10.0.2.0/23")];
        let nodes = ["10.0.1.7".parse().unwrap()];
        assert_eq!(carve(&[net("10.0.0.0/8")], 24, &taken, &nodes), Some(net("10.0.4.0/24")));
    }

    #[test]
    fn skips_subnets_inside_a_bigger_taken_one() {
        let taken = [net("10.0.0.0/16")];
        assert_eq!(carve(&[net("10.0.0.0/8")], 24, &taken, &[]), Some(net("10.1.0.0/24")));
    }

    #[test]
    fn moves_to_the_next_pool_when_full() {
        let pools = [net("10.0.0.0/24"), net("192.168.0.0/16")];
        assert_eq!(carve(&pools, 24, &[net("10.0.0.0/24")], &[]), Some(net("192.168.0.0/24")));
        assert_eq!(carve(&[net("10.0.0.0/24")], 24, &[net("10.0.0.0/24")], &[]), None);
    }

    #[test]
    fn explicit_subnet_checks() {
        let taken = vec![("front".to_string(), net("10.0.0.0/24"))];
        assert!(check_subnet(&net("10.0.0.0/16"), &taken, &[]).unwrap_err().to_string().contains("front"));
        assert!(check_subnet(&net("10.1.0.0/24"), &taken, &["10.1.0.5".parse().unwrap()])
            .unwrap_err()
            .to_string()
            .contains("node address"));
        assert!(check_subnet(&net("10.1.0.1/24"), &taken, &[]).unwrap_err().to_string().contains("10.1.0.0/24"));
        assert!(check_subnet(&net("10.1.0.0/30"), &taken, &[]).unwrap_err().to_string().contains("too small"));
        assert!(check_subnet(&net("10.1.0.0/24"), &taken, &[]).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn carved_subnets_never_overlap(n in 1usize..40, size in 20u8..28, node_octets in proptest::collection::vec(0u8..8, 0..5)) {
            let pools = [net("10.0.0.0/16")];
            let nodes: Vec<Ipv4Addr> = node_octets.iter().map(|o| Ipv4Addr::new(10, 0, *o, 9)).collect();
            let mut taken: Vec<Ipv4Net> = vec![];
            for _ in 0..n {
                match carve(&pools, size, &taken, &nodes) {
                    Some(s) => {
                        for t in &taken { proptest::prop_assert!(!overlaps(t, &s)); }
                        for a in &nodes { proptest::prop_assert!(!s.contains(a)); }
                        taken.push(s);
                    }
                    None => break,
                }
            }
        }
    }
}
