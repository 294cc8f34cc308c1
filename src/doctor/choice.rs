//! Which backends shoal picks from what the probes found (pure).

use shoal_dataplane::lb::{Choice, LbKind, ProbeReport};

use super::feature::{has, why_not, Feature, Finding};

/// The backends for this kernel; `Err` holds why none can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choices {
    /// The overlay's data path.
    pub overlay: Result<String, String>,
    /// The load balancer `--lb auto` picks, and why.
    pub lb: Result<(LbKind, String), String>,
    /// Each load balancer's own verdict (shoal's implementation on this kernel).
    pub lb_each: Vec<(LbKind, Result<(), String>)>,
    /// `--opt encrypted=wireguard`.
    pub wireguard: Result<String, String>,
    /// `--opt encrypted=ipsec`.
    pub ipsec: Result<String, String>,
}

impl Choices {
    /// Why shoal cannot run here at all, if so.
    pub fn blocker(&self) -> Option<String> {
        match (&self.overlay, &self.lb) {
            (Err(o), _) => Some(format!("no overlay: {o}")),
            (_, Err(l)) => Some(format!("no load balancer: {l}")),
            _ => None,
        }
    }
}

pub fn choose(findings: &[Finding], lb: &ProbeReport) -> Choices {
    let overlay = match [Feature::Vxlan, Feature::Bridge, Feature::Veth]
        .into_iter()
        .find_map(|f| why_not(findings, f).map(|why| format!("{f}: {why}")))
    {
        None => Ok("vxlan (bridge + VXLAN device per network, veth per task)".to_string()),
        Some(missing) => Err(missing),
    };
    let wireguard = if has(findings, Feature::WireGuard) {
        Ok("kernel WireGuard".to_string())
    } else if has(findings, Feature::Tun) {
        Ok("userspace WireGuard (gotatun on a TUN device; no kernel WireGuard)".to_string())
    } else {
        Err(format!(
            "neither kernel WireGuard ({}) nor TUN ({})",
            why_not(findings, Feature::WireGuard).map(|e| e.to_string()).unwrap_or_default(),
            why_not(findings, Feature::Tun).map(|e| e.to_string()).unwrap_or_default()
        ))
    };
    let ipsec = match why_not(findings, Feature::Esp) {
        None => Ok("XFRM ESP, AES-GCM".to_string()),
        Some(why) => Err(format!("no ESP: {why}")),
    };
    Choices {
        overlay,
        lb: lb.choose(Choice::Auto).map_err(|e| e.to_string()),
        lb_each: LbKind::ALL.iter().map(|k| (*k, lb.get(*k).clone().map_err(|e| e.to_string()))).collect(),
        wireguard,
        ipsec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(missing: &[Feature]) -> Vec<Finding> {
        Feature::ALL
            .iter()
            .map(|f| Finding {
                feature: *f,
                result: if missing.contains(f) { Err(super::super::feature::ProbeError::Netlink(format!("no {f}"))) } else { Ok(()) },
            })
            .collect()
    }

    fn lb(ebpf: bool, nft: bool, ipvs: bool) -> ProbeReport {
        use shoal_dataplane::lb::{ipvs::FamilyError, nft, Unavailable};
        let r = |ok: bool, why: Unavailable| if ok { Ok(()) } else { Err(why) };
        let no_ebpf = shoal_ebpf::LbUnsupported {
            sock_lb: shoal_ebpf::Support::Unavailable { reason: "ebpf missing".into() },
            tc_nat: shoal_ebpf::Support::Available,
        };
        ProbeReport {
            ebpf: r(ebpf, no_ebpf.into()),
            nftables: r(nft, nft::Unavailable::Refused { command: "nft list tables", stderr: "nft missing".into() }.into()),
            ipvs: r(ipvs, FamilyError::Ask { detail: "ipvs missing".into() }.into()),
        }
    }

    #[test]
    fn a_full_kernel_gets_ebpf_kernel_wireguard_and_esp() {
        let c = choose(&findings(&[]), &lb(true, true, true));
        assert_eq!(c.lb.as_ref().unwrap().0, LbKind::Ebpf);
        assert_eq!(c.wireguard.as_deref(), Ok("kernel WireGuard"));
        assert!(c.ipsec.is_ok());
        assert!(c.overlay.is_ok());
        assert_eq!(c.blocker(), None);
    }

    #[test]
    fn this_machine_kind_gets_boringtun_and_no_ipsec() {
        let c = choose(&findings(&[Feature::Ipvs, Feature::Esp, Feature::WireGuard]), &lb(true, true, false));
        assert_eq!(c.wireguard.as_deref(), Ok("userspace WireGuard (gotatun on a TUN device; no kernel WireGuard)"));
        assert_eq!(c.ipsec, Err("no ESP: no esp".to_string()));
        assert_eq!(c.lb.as_ref().unwrap().0, LbKind::Ebpf);
    }

    #[test]
    fn without_ebpf_the_next_balancer_is_picked_and_the_reason_kept() {
        let c = choose(&findings(&[]), &lb(false, true, true));
        let (kind, why) = c.lb.unwrap();
        assert_eq!(kind, LbKind::Nftables);
        assert!(why.contains("ebpf missing"), "{why}");
        let c = choose(&findings(&[]), &lb(false, false, true));
        assert_eq!(c.lb.unwrap().0, LbKind::Ipvs);
    }

    #[test]
    fn no_vxlan_or_no_balancer_blocks_and_says_which() {
        let c = choose(&findings(&[Feature::Vxlan]), &lb(true, true, true));
        assert_eq!(c.blocker(), Some("no overlay: vxlan: no vxlan".into()));
        let c = choose(&findings(&[]), &lb(false, false, false));
        let why = c.blocker().unwrap();
        assert!(why.starts_with("no load balancer") && why.contains("nft missing"), "{why}");
    }

    #[test]
    fn no_wireguard_at_all_names_both_missing_pieces() {
        let c = choose(&findings(&[Feature::WireGuard, Feature::Tun]), &lb(true, true, true));
        assert_eq!(c.wireguard, Err("neither kernel WireGuard (no wireguard) nor TUN (no tun)".into()));
    }
}
