/* Maps of the socket-level VIP load balancer (sock_lb.bpf.c). Sizes are
 * defaults; the loader may override max_entries. */
#ifndef SHOAL_SOCK_MAPS_H
#define SHOAL_SOCK_MAPS_H

#include "types.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct svc_key);
	__type(value, struct svc_val);
} sock_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct be_key);
	__type(value, struct be_val);
} sock_be SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct be_ref_key);
	__type(value, __u32);
} sock_be_ref SEC(".maps");

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
