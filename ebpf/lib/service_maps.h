/* The three service maps every shoal load balancer keeps the same way (see
 * types.h and ebpf/src/plan): <prefix>_svc (front end -> service),
 * <prefix>_be (service id, slot -> backend) and <prefix>_be_ref (service id,
 * backend -> REF_WEIGHTED | weight). Declared once here, instantiated per
 * program with its prefix. Sizes are defaults; the loader sets max_entries. */
#ifndef SHOAL_SERVICE_MAPS_H
#define SHOAL_SERVICE_MAPS_H

#include "types.h"

#define SHOAL_SERVICE_MAPS(prefix)                              \
	struct {                                                \
		__uint(type, BPF_MAP_TYPE_HASH);                \
		__uint(map_flags, BPF_F_NO_PREALLOC);           \
		__uint(max_entries, 16384);                     \
		__type(key, struct svc_key);                    \
		__type(value, struct svc_val);                  \
	} prefix##_svc SEC(".maps");                            \
	struct {                                                \
		__uint(type, BPF_MAP_TYPE_HASH);                \
		__uint(map_flags, BPF_F_NO_PREALLOC);           \
		__uint(max_entries, 65536);                     \
		__type(key, struct be_key);                     \
		__type(value, struct be_val);                   \
	} prefix##_be SEC(".maps");                             \
	struct {                                                \
		__uint(type, BPF_MAP_TYPE_HASH);                \
		__uint(map_flags, BPF_F_NO_PREALLOC);           \
		__uint(max_entries, 65536);                     \
		__type(key, struct be_ref_key);                 \
		__type(value, __u32);                           \
	} prefix##_be_ref SEC(".maps")

#endif
