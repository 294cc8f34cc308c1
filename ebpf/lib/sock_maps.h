/* Maps of the socket-level VIP load balancer (sock_lb.bpf.c). Sizes are
 * defaults; the loader may override max_entries. */
#ifndef SHOAL_SOCK_MAPS_H
#define SHOAL_SOCK_MAPS_H

#include "service_maps.h"

SHOAL_SERVICE_MAPS(sock);

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct aff_key);
	__type(value, struct aff_val);
} sock_aff SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct rev_key);
	__type(value, struct rev_val);
} sock_rev SEC(".maps");

/* One entry (key 0): struct host_cfg. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct host_cfg);
} sock_host SEC(".maps");

#endif
