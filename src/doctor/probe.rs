//! The probes: each tries the real thing in a throwaway network namespace (the probing thread
//! unshares its own, so every link, table and XFRM state made here vanishes when it ends).

use std::cell::OnceCell;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use nix::sched::{unshare, CloneFlags};
use shoal_dataplane::lb::{self, ProbeReport};
use shoal_dataplane::netlink::{Netlink, VxlanSpec};

use super::feature::{Feature, Finding, ProbeError};

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("cannot make a throwaway network namespace for the probes: {0} (run shoal doctor as root)")]
    Unshare(#[source] nix::Error),
    #[error("the probe thread panicked")]
    Panicked,
}

/// Everything the probes found.
pub struct Probed {
    /// The running kernel's release.
    pub kernel: String,
    pub findings: Vec<Finding>,
    /// Each load balancer's own probe (shoal's implementation, not only the kernel feature).
    pub lb: ProbeReport,
}

const ALIAS: &str = "shoal doctor probe";

pub fn all() -> Result<Probed, DoctorError> {
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_else(|e| format!("(unknown: {e})"));
    let (findings, lb) = std::thread::spawn(|| -> Result<_, DoctorError> {
        // This thread only: the process stays where it was.
        unshare(CloneFlags::CLONE_NEWNET).map_err(DoctorError::Unshare)?;
        let ebpf = OnceCell::new();
        let findings = Feature::ALL.iter().map(|f| Finding { feature: *f, result: try_feature(*f, &ebpf) }).collect();
        Ok((findings, lb::probe_with(ebpf.get_or_init(shoal_ebpf::probe))))
    })
    .join()
    .map_err(|_| DoctorError::Panicked)??;
    Ok(Probed { kernel, findings, lb })
}

/// `ebpf`: the eBPF loader's probe, run once for both hooks.
fn try_feature(feature: Feature, ebpf: &OnceCell<shoal_ebpf::Probe>) -> Result<(), ProbeError> {
    match feature {
        Feature::Vxlan => netlink()?
            .add_vxlan(&VxlanSpec {
                name: "doc-vx".into(),
                vni: 4242,
                local: Ipv4Addr::LOCALHOST,
                port: 4789,
                underlay_index: None,
                mtu: 1450,
                alias: ALIAS.into(),
            })
            .map_err(nl_err),
        Feature::Bridge => netlink()?.add_bridge("doc-br", 1500, None, ALIAS).map_err(nl_err),
        Feature::Veth => {
            let here = std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| ProbeError::Namespace(e.to_string()))?;
            netlink()?.add_veth("doc-v0", "doc-v1", here.as_fd(), 1500, None, ALIAS).map_err(nl_err)
        }
        Feature::Tun => run("ip", &["tuntap", "add", "dev", "doc-tun", "mode", "tun"], None),
        Feature::Nftables => run(
            "nft",
            &["-f", "-"],
            Some("add table ip shoal_doctor\nadd chain ip shoal_doctor pre { type nat hook prerouting priority -100; }\n"),
        ),
        Feature::EbpfSockAddr => support(&ebpf.get_or_init(shoal_ebpf::probe).sock_lb),
        Feature::EbpfTc => support(&ebpf.get_or_init(shoal_ebpf::probe).tc_nat),
        Feature::Ipvs => lb::ipvs::family_id().map(drop).map_err(ProbeError::from),
        Feature::Esp => run(
            "ip",
            &[
                "xfrm",
                "state",
                "add",
                "src",
                "192.0.2.1",
                "dst",
                "192.0.2.2",
                "proto",
                "esp",
                "spi",
                "0x101",
                "mode",
                "transport",
                "aead",
                "rfc4106(gcm(aes))",
                "0x000102030405060708090a0b0c0d0e0f10111213",
                "128",
            ],
            None,
        ),
        Feature::WireGuard => run("ip", &["link", "add", "doc-wg", "type", "wireguard"], None),
    }
}

/// Netlink errors are not Clone: a finding keeps their text.
fn nl_err(e: shoal_dataplane::netlink::NetlinkError) -> ProbeError {
    ProbeError::Netlink(e.to_string())
}

fn netlink() -> Result<Netlink, ProbeError> {
    Netlink::open().map_err(nl_err)
}

fn support(s: &shoal_ebpf::Support) -> Result<(), ProbeError> {
    s.to_result().map_err(ProbeError::from)
}

/// Runs a tool (in this thread's namespace: children inherit it) and returns its complaint.
fn run(tool: &str, args: &[&str], stdin: Option<&str>) -> Result<(), ProbeError> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ProbeError::CannotRun { tool: tool.to_string(), detail: e.to_string() })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| ProbeError::Write { tool: tool.to_string(), detail: e.to_string() })?;
    }
    let out = child.wait_with_output().map_err(|e| ProbeError::Wait { tool: tool.to_string(), detail: e.to_string() })?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim().lines().next().unwrap_or("").trim_start_matches("Error: ");
        Err(ProbeError::Refused {
            tool: tool.to_string(),
            command: args.first().copied().unwrap_or("").to_string(),
            complaint: if err.is_empty() { "failed" } else { err }.to_string(),
        })
    }
}
