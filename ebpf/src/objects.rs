//! The eBPF objects built by build.rs, embedded in the binary.

/// `sock_lb.bpf.c`: cgroup connect4/sendmsg4/recvmsg4/getpeername4.
pub(crate) static SOCK_LB: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock_lb.bpf.o"));

/// `tc_nat.bpf.c`: nat_ingress and nat_reply classifiers.
pub(crate) static TC_NAT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tc_nat.bpf.o"));
