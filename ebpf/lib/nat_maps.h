/* Maps of the published-port NAT (tc_nat.bpf.c). Sizes are defaults; the
 * loader may override max_entries. */
#ifndef SHOAL_NAT_MAPS_H
#define SHOAL_NAT_MAPS_H

#include "types.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct svc_key);
	__type(value, struct svc_val);
} nat_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct be_key);
	__type(value, struct be_val);
} nat_be SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct be_ref_key);
	__type(value, __u32);
} nat_be_ref SEC(".maps");

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
