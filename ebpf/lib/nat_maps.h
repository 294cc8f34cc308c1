/* Maps of the published-port NAT (tc_nat.bpf.c). Sizes are defaults; the
 * loader may override max_entries. */
#ifndef SHOAL_NAT_MAPS_H
#define SHOAL_NAT_MAPS_H

#include "service_maps.h"

SHOAL_SERVICE_MAPS(nat);

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ct_key);
	__type(value, struct ct_fwd);
} nat_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ct_key);
	__type(value, struct ct_rev);
} nat_rev SEC(".maps");

#endif
