//! The probe the dataplane uses to choose (or refuse) the eBPF LB.

mod common;

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn probe_loads_every_program() {
    common::require_root("probe_loads_every_program");
    let probe = shoal_ebpf::probe();
    eprintln!("probe: sock_lb {}, tc_nat {}, cgroup2 {:?}", probe.sock_lb, probe.tc_nat, probe.cgroup2);
    for (part, support) in [("sock_lb", &probe.sock_lb), ("tc_nat", &probe.tc_nat)] {
        if let shoal_ebpf::Support::Unavailable { reason } = support {
            common::skip("probe_loads_every_program", &format!("{part}: {reason}"));
            return;
        }
    }
    assert!(probe.sock_lb.is_available() && probe.tc_nat.is_available());
}
