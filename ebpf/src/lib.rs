//! eBPF programs (C, built by clang) and their aya loader: socket-level VIP load balancing and tc NAT for published ports.
