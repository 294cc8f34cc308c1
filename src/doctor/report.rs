//! The text `shoal doctor` prints (pure).

use std::fmt::Write;

use super::choice::Choices;
use super::feature::{Feature, Finding};

/// `kernel` is the running kernel's release (uname -r).
pub fn render(kernel: &str, findings: &[Finding], choices: &Choices) -> String {
    let mut out = String::new();
    let have: Vec<String> = findings.iter().filter(|f| f.ok()).map(|f| f.feature.to_string()).collect();
    let missing: Vec<String> = findings.iter().filter(|f| !f.ok()).map(|f| f.feature.to_string()).collect();
    let _ = writeln!(out, "kernel {kernel}: has {}; missing {}", list_or_none(&have), list_or_none(&missing));
    for feature in Feature::ALL {
        let Some(f) = findings.iter().find(|f| f.feature == feature) else { continue };
        let verdict = match &f.result {
            Ok(()) => "yes".to_string(),
            Err(why) => format!("no: {why}"),
        };
        let _ = writeln!(out, "  {:<14} {:<50} {verdict}", feature.to_string(), feature.purpose());
    }
    let _ = writeln!(out, "backends shoal picks:");
    let _ = writeln!(out, "  overlay          {}", verdict(&choices.overlay));
    let lb = match &choices.lb {
        Ok((kind, why)) => format!("{kind} ({why})"),
        Err(why) => format!("none: {why}"),
    };
    let _ = writeln!(out, "  load balancer    {lb}");
    for (kind, result) in &choices.lb_each {
        let v = match result {
            Ok(()) => "can run".to_string(),
            Err(why) => format!("cannot run: {why}"),
        };
        let _ = writeln!(out, "    --lb {:<11} {v}", kind.to_string());
    }
    // `--opt encrypted` networks run over WireGuard; `=ipsec` over ESP. What this node would
    // run them on, or why it would refuse their tasks.
    let _ = writeln!(out, "  encryption       {}", verdict(&choices.wireguard));
    let _ = writeln!(out, "    --opt encrypted=wireguard  {}", verdict(&choices.wireguard));
    let _ = writeln!(out, "    --opt encrypted=ipsec      {}", verdict(&choices.ipsec));
    out
}

fn verdict(r: &Result<String, String>) -> String {
    match r {
        Ok(what) => what.clone(),
        Err(why) => format!("unavailable: {why}"),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::choice::choose;
    use shoal_dataplane::lb::ProbeReport;

    #[test]
    fn the_first_line_lists_what_the_kernel_has_and_lacks() {
        let findings: Vec<Finding> = Feature::ALL
            .iter()
            .map(|f| Finding {
                feature: *f,
                result: if *f == Feature::Ipvs {
                    Err(crate::doctor::feature::ProbeError::Netlink("no IPVS family".into()))
                } else {
                    Ok(())
                },
            })
            .collect();
        let lb = ProbeReport { ebpf: Ok(()), nftables: Ok(()), ipvs: Err(shoal_dataplane::lb::ipvs::FamilyError::NotInKernel.into()) };
        let text = render("6.1.0-test", &findings, &choose(&findings, &lb));
        let first = text.lines().next().unwrap();
        assert_eq!(first, "kernel 6.1.0-test: has vxlan bridge veth tun nftables ebpf-sockaddr ebpf-tc esp wireguard; missing ipvs");
        assert!(text.contains("no: no IPVS family"), "{text}");
        assert!(text.contains("load balancer    ebpf (probed: best available)"), "{text}");
        assert!(text.contains("encryption       kernel WireGuard"), "{text}");
        assert!(text.contains("--opt encrypted=ipsec      XFRM ESP, AES-GCM"), "{text}");
    }
}
