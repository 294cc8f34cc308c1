//! Load balancing for service VIPs and published ports (the routing mesh), behind one trait with
//! eBPF, nftables and IPVS implementations. Placeholder until issue 4 lands.
