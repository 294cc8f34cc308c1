/* Backend selection over the slot layout shared by both load balancers:
 * a service owns slots [0, count) (and SLOT_LOCAL|[0, local_count)); the
 * loader keeps them dense, so a random slot is a uniform choice. */
#ifndef SHOAL_SELECT_H
#define SHOAL_SELECT_H

#include "types.h"

/* Pick a backend of `svc` among `n` slots starting at `base`. The loader
 * fills a hole before shrinking count, so a miss is a transient race: fall
 * back to slot 0 once. */
SHOAL_INLINE struct be_val *pick_backend(void *be_map, const struct svc_val *svc,
					 __u32 base, __u32 n)
{
	struct be_key k = { .svc_id = svc->id };
	struct be_val *be;

	if (n == 0)
		return NULL;
	k.slot = base | (bpf_get_prandom_u32() % n);
	be = bpf_map_lookup_elem(be_map, &k);
	if (be)
		return be;
	k.slot = base;
	return bpf_map_lookup_elem(be_map, &k);
}

/* The service of (addr, port, proto) in `svc_map`: the exact entry, else
 * the address's every-port entry (a VIP). `k` is left as the key found. */
SHOAL_INLINE struct svc_val *lookup_service_any_port(void *svc_map, struct svc_key *k)
{
	struct svc_val *svc = bpf_map_lookup_elem(svc_map, k);

	if (svc || k->port == ANY_PORT)
		return svc;
	k->port = ANY_PORT;
	return bpf_map_lookup_elem(svc_map, k);
}

/* The port to send to on a backend whose port is `be_port`, for a client
 * that asked for `dport` (both in network order). */
SHOAL_INLINE __u16 backend_port(__u16 be_port, __u16 dport)
{
	return be_port == ANY_PORT ? dport : be_port;
}

SHOAL_INLINE int backend_present(void *ref_map, __u32 svc_id, __u32 addr, __u16 port)
{
	struct be_ref_key k = { .svc_id = svc_id, .addr = addr, .port = port };

	return bpf_map_lookup_elem(ref_map, &k) != NULL;
}

#endif
