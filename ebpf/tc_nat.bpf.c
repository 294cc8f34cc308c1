// SPDX-License-Identifier: GPL-2.0
/*
 * Routing mesh NAT for published ports (tc cls_bpf, direct action).
 *
 * nat_ingress, on the ingress of a node's underlay interface: a new flow to
 * (node address, published port, proto) gets a backend; the packet is DNATed
 * to it and SNATed to the node's address on the backend's network (unless the
 * service keeps the client address and a local backend exists). The flow is
 * tracked by its 5-tuple, so it stays on its backend. The kernel then routes
 * the packet as usual.
 *
 * nat_reply, on the ingress of the overlay bridge: a backend's reply is
 * translated back (client as destination, node address and published port as
 * source) and the kernel routes it out of the underlay.
 */
#include "lib/common.h"
#include "lib/types.h"
#include "lib/nat_maps.h"
#include "lib/select.h"
#include "lib/packet.h"

#define SNAT_PORT_MIN 32768
#define SNAT_PORT_SPAN 28232 /* up to 60999 */
#define SNAT_PORT_TRIES 8

SHOAL_INLINE struct svc_val *lookup_service(const struct pkt *p)
{
	struct svc_key k = { .addr = p->daddr, .port = p->dport, .proto = p->proto };
	struct svc_val *svc = bpf_map_lookup_elem(&nat_svc, &k);

	if (svc)
		return svc;
	k.addr = 0; /* a published port on every node address */
	return bpf_map_lookup_elem(&nat_svc, &k);
}

SHOAL_INLINE void forget_flow(const struct ct_key *fk, const struct ct_fwd *f)
{
	struct ct_key rk = {
		.saddr = f->be_addr, .daddr = f->snat_addr,
		.sport = f->be_port, .dport = f->snat_port, .proto = fk->proto,
	};

	bpf_map_delete_elem(&nat_rev, &rk);
	bpf_map_delete_elem(&nat_ct, fk);
}

/* Claim a reply tuple for the new flow: the client's port when free, else a
 * random one. Returns 0 and sets f->snat_port on success. */
SHOAL_INLINE int claim_reply_tuple(const struct pkt *p, struct ct_fwd *f, int keep_port_only)
{
	struct ct_rev rv = {
		.client_addr = p->saddr, .node_addr = p->daddr,
		.client_port = p->sport, .node_port = p->dport,
	};
	struct ct_key rk = {
		.saddr = f->be_addr, .daddr = f->snat_addr,
		.sport = f->be_port, .proto = p->proto,
	};
	int i;

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

SHOAL_INLINE int new_flow(const struct pkt *p, const struct ct_key *fk, struct ct_fwd *f)
{
	struct svc_val *svc = lookup_service(p);
	struct be_val *be;

	if (!svc)
		return -1;
	f->svc_id = svc->id;

	if ((svc->flags & SVC_F_KEEP_CLIENT_IP) && svc->local_count > 0) {
		be = pick_backend(&nat_be, svc, SLOT_LOCAL, svc->local_count);
		if (be) {
			f->be_addr = be->addr;
			f->be_port = be->port;
			f->snat_addr = p->saddr;
			if (claim_reply_tuple(p, f, 1) == 0)
				goto track;
		}
	}

	be = pick_backend(&nat_be, svc, 0, svc->count);
	if (!be)
		return -1;
	f->be_addr = be->addr;
	f->be_port = be->port;
	f->snat_addr = be->snat_addr;
	if (claim_reply_tuple(p, f, 0) < 0)
		return -1;
track:
	bpf_map_update_elem(&nat_ct, fk, f, BPF_ANY);
	return 0;
}

SEC("classifier")
int nat_ingress(struct __sk_buff *skb)
{
	struct pkt p = {};
	struct ct_fwd f = {};
	struct ct_fwd *found;

	if (parse_pkt(skb, &p) < 0)
		return TC_ACT_OK;

	struct ct_key fk = {
		.saddr = p.saddr, .daddr = p.daddr,
		.sport = p.sport, .dport = p.dport, .proto = p.proto,
	};

	found = bpf_map_lookup_elem(&nat_ct, &fk);
	if (found) {
		f = *found;
		/* A UDP flow whose backend left moves to another one; TCP flows
		 * stay until they end (graceful drain). */
		if (p.proto == IPPROTO_UDP &&
		    !backend_present(&nat_be_ref, f.svc_id, f.be_addr, f.be_port)) {
			forget_flow(&fk, &f);
			found = NULL;
		}
	}
	if (!found && new_flow(&p, &fk, &f) < 0)
		return TC_ACT_OK; /* not a published port, or no backend: host stack */

	if (rewrite_tuple(skb, &p, f.snat_addr, f.snat_port, f.be_addr, f.be_port) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
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
		return TC_ACT_OK;
	if (rewrite_tuple(skb, &p, rv->node_addr, rv->node_port, rv->client_addr,
			  rv->client_port) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
