// SPDX-License-Identifier: GPL-2.0
/*
 * Routing mesh NAT for published ports, and the packet path of service VIPs
 * (tc cls_bpf, direct action).
 *
 * nat_ingress, on the ingress of a node's underlay interface: a new flow to
 * (node address, published port, proto) gets a backend; the packet is DNATed
 * to it and SNATed to the node's address on the backend's network (unless the
 * service keeps the client address and a local backend exists). The flow is
 * tracked by its 5-tuple, so it stays on its backend. The kernel then routes
 * the packet as usual. Only a TCP SYN (without ACK), or a UDP packet that no
 * connected local socket owns, opens a flow: publishing a port never takes
 * over a connection already open to that port on the node.
 *
 * nat_reply, on the ingress of the overlay bridge:
 * - a backend's reply is translated back (client as destination, node
 *   address or VIP and the port the client used as source), and the kernel
 *   routes it to the client;
 * - a packet to a service VIP that no socket hook translated (a process in a
 *   task's network namespace but not in the node's task cgroup; the VIP is a
 *   /32 on the bridge, so such packets come up the bridge) is balanced as
 *   nat_ingress balances published ports: same slot choice, DNAT keeping the
 *   port (an any-port VIP), SNAT to the node's LB address on that network so
 *   the reply comes back here, tracked in the same tables. Cilium does this
 *   on the task-side veth; the bridge is one attachment per network (which
 *   the NAT already has and follows), where one per task would have to
 *   follow every task.
 */
#include "lib/common.h"
#include "lib/types.h"
#include "lib/nat_maps.h"
#include "lib/select.h"
#include "lib/packet.h"

#define SNAT_PORT_MIN 32768
#define SNAT_PORT_SPAN 28232 /* up to 60999 */
#define SNAT_PORT_TRIES 8

/* Where a packet came from: which services it may open a flow to. */
enum nat_path {
	FROM_UNDERLAY, /* published ports */
	FROM_BRIDGE,   /* service VIPs */
};

SHOAL_INLINE struct svc_val *lookup_service(const struct pkt *p, enum nat_path from)
{
	struct svc_key k = { .addr = p->daddr, .port = p->dport, .proto = p->proto };
	struct svc_val *svc;

	if (from == FROM_BRIDGE) {
		svc = lookup_service_any_port(&nat_svc, &k);
		return svc && (svc->flags & SVC_F_VIP) ? svc : NULL;
	}
	svc = bpf_map_lookup_elem(&nat_svc, &k);
	if (!svc) {
		k.addr = 0; /* a published port on every node address */
		svc = bpf_map_lookup_elem(&nat_svc, &k);
	}
	return svc && !(svc->flags & SVC_F_VIP) ? svc : NULL;
}

/* The reply tuple of flow `f`, keyed as nat_rev has it. */
SHOAL_INLINE struct ct_key reply_key(const struct ct_key *fk, const struct ct_fwd *f)
{
	struct ct_key rk = {
		.saddr = f->be_addr, .daddr = f->snat_addr,
		.sport = backend_port(f->be_port, fk->dport), .dport = f->snat_port,
		.proto = fk->proto,
	};

	return rk;
}

SHOAL_INLINE void forget_flow(const struct ct_key *fk, const struct ct_fwd *f)
{
	struct ct_key rk = reply_key(fk, f);

	bpf_map_delete_elem(&nat_rev, &rk);
	bpf_map_delete_elem(&nat_ct, fk);
}

/* Claim a reply tuple for the new flow: the client's port when free, else a
 * random one. Returns 0 and sets f->snat_port on success. */
SHOAL_INLINE int claim_reply_tuple(const struct pkt *p, const struct ct_key *fk,
				   struct ct_fwd *f, int keep_port_only)
{
	struct ct_rev rv = {
		.client_addr = p->saddr, .node_addr = p->daddr,
		.client_port = p->sport, .node_port = p->dport,
	};
	struct ct_key rk;
	int i;

	rk = reply_key(fk, f);
#pragma unroll
	for (i = 0; i < SNAT_PORT_TRIES; i++) {
		rk.dport = i == 0 ? p->sport :
			bpf_htons(SNAT_PORT_MIN + bpf_get_prandom_u32() % SNAT_PORT_SPAN);
		if (bpf_map_update_elem(&nat_rev, &rk, &rv, BPF_NOEXIST) == 0) {
			f->snat_port = rk.dport;
			return 0;
		}
		if (keep_port_only)
			return -1;
	}
	return -1;
}

/* A connected local UDP socket owns this packet's 4-tuple: the node talks
 * with that peer on that port itself, not through a published port. */
SHOAL_INLINE int owned_by_local_udp_socket(struct __sk_buff *skb, const struct pkt *p)
{
	struct bpf_sock_tuple t = {
		.ipv4 = { .saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport },
	};
	struct bpf_sock *sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	int owned;

	if (!sk)
		return 0;
	owned = sk->dst_ip4 == p->saddr && sk->dst_port == p->sport;
	bpf_sk_release(sk);
	return owned;
}

/* May this packet open a flow? A TCP SYN without ACK; any UDP packet on the
 * bridge; on the underlay, a UDP packet no connected local socket owns. */
SHOAL_INLINE int may_open_flow(struct __sk_buff *skb, const struct pkt *p, enum nat_path from)
{
	if (p->proto == IPPROTO_TCP)
		return is_tcp_open(p);
	return from == FROM_BRIDGE || !owned_by_local_udp_socket(skb, p);
}

SHOAL_INLINE int new_flow(struct __sk_buff *skb, const struct pkt *p, const struct ct_key *fk,
			  struct ct_fwd *f, enum nat_path from)
{
	struct svc_val *svc = lookup_service(p, from);
	struct be_val *be;

	if (!svc || !may_open_flow(skb, p, from))
		return -1;
	f->svc_id = svc->id;

	if ((svc->flags & SVC_F_KEEP_CLIENT_IP) && svc->local_count > 0) {
		be = pick_backend(&nat_be, svc, SLOT_LOCAL, svc->local_count);
		if (be) {
			f->be_addr = be->addr;
			f->be_port = be->port;
			f->snat_addr = p->saddr;
			if (claim_reply_tuple(p, fk, f, 1) == 0)
				goto track;
		}
	}

	be = pick_backend(&nat_be, svc, 0, svc->count);
	if (!be)
		return -1;
	f->be_addr = be->addr;
	f->be_port = be->port;
	f->snat_addr = be->snat_addr;
	if (claim_reply_tuple(p, fk, f, 0) < 0)
		return -1;
track:
	bpf_map_update_elem(&nat_ct, fk, f, BPF_ANY);
	return 0;
}

/* Translate a packet of a tracked flow, or of a new one to a service this
 * path serves; anything else goes on untouched. */
SHOAL_INLINE int balance(struct __sk_buff *skb, const struct pkt *p, enum nat_path from)
{
	struct ct_fwd f = {};
	struct ct_fwd *found;
	struct ct_key fk = {
		.saddr = p->saddr, .daddr = p->daddr,
		.sport = p->sport, .dport = p->dport, .proto = p->proto,
	};

	found = bpf_map_lookup_elem(&nat_ct, &fk);
	if (found) {
		f = *found;
		/* A UDP flow whose backend left moves to another one; TCP flows
		 * stay until they end (graceful drain). A TCP SYN on a tracked
		 * tuple is a new connection that reuses a client port: it must
		 * not follow the old one to a backend that left (a rolling
		 * update would time it out). */
		if ((p->proto == IPPROTO_UDP || is_tcp_open(p)) &&
		    !backend_present(&nat_be_ref, f.svc_id, f.be_addr, f.be_port)) {
			forget_flow(&fk, &f);
			found = NULL;
		}
	}
	if (!found && new_flow(skb, p, &fk, &f, from) < 0)
		return TC_ACT_OK; /* not a service, or no backend: host stack */

	if (rewrite_tuple(skb, p, f.snat_addr, f.snat_port, f.be_addr,
			  backend_port(f.be_port, p->dport)) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

SEC("classifier")
int nat_ingress(struct __sk_buff *skb)
{
	struct pkt p = {};

	if (parse_pkt(skb, &p) < 0)
		return TC_ACT_OK;
	return balance(skb, &p, FROM_UNDERLAY);
}

SEC("classifier")
int nat_reply(struct __sk_buff *skb)
{
	struct pkt p = {};
	struct ct_rev *rv;

	if (parse_pkt(skb, &p) < 0)
		return TC_ACT_OK;

	struct ct_key rk = {
		.saddr = p.saddr, .daddr = p.daddr,
		.sport = p.sport, .dport = p.dport, .proto = p.proto,
	};

	rv = bpf_map_lookup_elem(&nat_rev, &rk);
	if (!rv)
		return balance(skb, &p, FROM_BRIDGE);
	if (rewrite_tuple(skb, &p, rv->node_addr, rv->node_port, rv->client_addr,
			  rv->client_port) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
