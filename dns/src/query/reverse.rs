//! Parsing reverse-lookup names (`4.3.2.1.in-addr.arpa`, `...ip6.arpa`) into addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address a lower-cased reverse name (without trailing dot) stands for, if it is one.
pub fn parse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() != 4 {
            return None;
        }
        for (i, label) in labels.iter().rev().enumerate() {
            if label.is_empty() || label.len() > 3 || (label.len() > 1 && label.starts_with('0')) {
                return None;
            }
            octets[i] = label.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        let nibbles: Vec<&str> = rest.split('.').collect();
        if nibbles.len() != 32 {
            return None;
        }
        let mut value: u128 = 0;
        for nibble in nibbles.iter().rev() {
            if nibble.len() != 1 {
                return None;
            }
            value = (value << 4) | u128::from(u8::from_str_radix(nibble, 16).ok()?);
        }
        return Some(IpAddr::V6(Ipv6Addr::from(value)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6() {
        assert_eq!(parse("4.3.2.10.in-addr.arpa"), Some("10.2.3.4".parse().unwrap()));
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";
        assert_eq!(parse(v6), Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn rejects_partial_and_bogus_names() {
        for name in [
            "3.2.10.in-addr.arpa",
            "256.3.2.10.in-addr.arpa",
            "04.3.2.10.in-addr.arpa",
            "a.3.2.10.in-addr.arpa",
            "in-addr.arpa",
            "1.0.ip6.arpa",
            "web",
        ] {
            assert_eq!(parse(name), None, "{name}");
        }
    }
}
