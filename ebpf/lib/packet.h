/* IPv4 TCP/UDP tuple parsing and address/port rewriting with checksum
 * fix-ups, for tc programs (packet starts at the Ethernet header). */
#ifndef SHOAL_PACKET_H
#define SHOAL_PACKET_H

#include "common.h"

#define IP_OFF ETH_HLEN
#define IP_CSUM_OFF (IP_OFF + 10)
#define IP_SADDR_OFF (IP_OFF + 12)
#define IP_DADDR_OFF (IP_OFF + 16)
#define IP_FRAGMENT_MASK 0x3fff /* MF flag or a fragment offset */

#define TCP_FLAGS_OFF 13 /* in the TCP header */
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10

struct pkt {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 tcp_flags; /* TCP only */
	__u32 l4_off;
};

/* Fills `p` for an unfragmented IPv4 TCP or UDP packet; -1 otherwise (the
 * packet is then left alone: fragments and other protocols pass as is). */
SHOAL_INLINE int parse_pkt(struct __sk_buff *skb, struct pkt *p)
{
	struct iphdr ip;
	__u16 ports[2];

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return -1;
	if (bpf_skb_load_bytes(skb, IP_OFF, &ip, sizeof(ip)) < 0)
		return -1;
	if (ip.version != 4 || ip.ihl < 5)
		return -1;
	if (ip.frag_off & bpf_htons(IP_FRAGMENT_MASK))
		return -1;
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return -1;
	p->l4_off = IP_OFF + ip.ihl * 4;
	if (bpf_skb_load_bytes(skb, p->l4_off, ports, sizeof(ports)) < 0)
		return -1;
	if (ip.protocol == IPPROTO_TCP &&
	    bpf_skb_load_bytes(skb, p->l4_off + TCP_FLAGS_OFF, &p->tcp_flags, 1) < 0)
		return -1;
	p->saddr = ip.saddr;
	p->daddr = ip.daddr;
	p->sport = ports[0];
	p->dport = ports[1];
	p->proto = ip.protocol;
	return 0;
}

/* A TCP packet that opens a connection (SYN without ACK). */
SHOAL_INLINE int is_tcp_open(const struct pkt *p)
{
	return (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
}

SHOAL_INLINE __u32 l4_csum_off(const struct pkt *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? 16 : 6);
}

SHOAL_INLINE __u64 l4_csum_flags(const struct pkt *p)
{
	/* A UDP checksum of 0 means "none": keep it so. */
	return p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/* Replace the source (is_src) or destination address; fixes the IP header
 * checksum and the L4 pseudo-header checksum. */
SHOAL_INLINE int set_addr(struct __sk_buff *skb, const struct pkt *p, int is_src,
			  __u32 old, __u32 new)
{
	if (old == new)
		return 0;
	if (bpf_l4_csum_replace(skb, l4_csum_off(p), old, new,
				BPF_F_PSEUDO_HDR | sizeof(new) | l4_csum_flags(p)) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, new, sizeof(new)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, is_src ? IP_SADDR_OFF : IP_DADDR_OFF, &new,
				   sizeof(new), 0);
}

SHOAL_INLINE int set_port(struct __sk_buff *skb, const struct pkt *p, int is_src,
			  __u16 old, __u16 new)
{
	if (old == new)
		return 0;
	if (bpf_l4_csum_replace(skb, l4_csum_off(p), old, new,
				sizeof(new) | l4_csum_flags(p)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, p->l4_off + (is_src ? 0 : 2), &new, sizeof(new), 0);
}

/* Rewrite the whole tuple to (saddr:sport -> daddr:dport). */
SHOAL_INLINE int rewrite_tuple(struct __sk_buff *skb, const struct pkt *p, __u32 saddr,
			       __u16 sport, __u32 daddr, __u16 dport)
{
	if (set_addr(skb, p, 1, p->saddr, saddr) < 0 ||
	    set_addr(skb, p, 0, p->daddr, daddr) < 0 ||
	    set_port(skb, p, 1, p->sport, sport) < 0 ||
	    set_port(skb, p, 0, p->dport, dport) < 0)
		return -1;
	return 0;
}

#endif
