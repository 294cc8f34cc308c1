/*
 * Key and value layouts of every shoal map. Mirrored field by field in Rust
 * by the #[repr(C)] types of ebpf/src/maps.rs; change both together.
 * Addresses and ports are in network byte order everywhere.
 */
#ifndef SHOAL_TYPES_H
#define SHOAL_TYPES_H

#include "common.h"

/* Service flags (svc_val.flags). */
#define SVC_F_KEEP_CLIENT_IP 0x1 /* prefer a local backend (NAT: and no SNAT) */
#define SVC_F_PUBLISHED 0x2      /* socket LB: a published port for node-local
				  * clients, not a VIP (a tag for the loader) */
#define SVC_F_VIP 0x4            /* NAT: a service VIP, balanced on the overlay
				  * bridge (nat_reply) for packets no socket
				  * hook translated; the underlay never takes it */

/* A service keyed with this port carries every destination port of its
 * address (a VIP, Swarm's semantics); a backend with this port gets the
 * port the client asked for. */
#define ANY_PORT 0

/* Slot bits of be_key.slot: the list of local backends, and the list of
 * parked (weight 0, draining) backends that no program reads. */
#define SLOT_LOCAL 0x80000000u
#define SLOT_PARKED 0x40000000u

/* Backend flags (be_val.flags). */
#define BE_F_LOCAL 0x1 /* the task runs on this node */

/* A service: a VIP (socket LB) or a node address + published port (NAT).
 * For NAT, addr 0 is the wildcard "any node address"; for a VIP, port
 * ANY_PORT is the wildcard "every port" (an exact port wins over it). */
struct svc_key {
	__u32 addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct svc_val {
	__u32 id;          /* key into the backend maps */
	__u16 count;       /* backends live in slots [0, count), each in as many
			    * slots as its weight asks: a random slot is a
			    * weighted choice */
	__u16 local_count; /* local backends in slots SLOT_LOCAL|[0, local_count) */
	__u32 flags;       /* SVC_F_* */
};

struct be_key {
	__u32 svc_id;
	__u32 slot;
};

struct be_val {
	__u32 addr;
	__u16 port;      /* ANY_PORT: the client's destination port */
	__u16 flags;     /* BE_F_* */
	__u32 snat_addr; /* NAT: source address towards this backend */
};

/* Presence of a backend in a service, whatever its slots (also with weight
 * 0). Value: REF_WEIGHTED | weight. */
#define REF_WEIGHTED 0x10000u
struct be_ref_key {
	__u32 svc_id;
	__u32 addr;
	__u16 port;
	__u16 pad;
};

/* Socket LB: the node whose own processes (not only tasks) get the socket
 * LB, for the programs attached to the root cgroup. */
struct host_cfg {
	__u64 netns_cookie; /* the node's network namespace; 0: none */
	__u32 loopback_addr; /* 127.0.0.0/8 destinations are looked up as this
			      * address (the node's underlay address); 0: not */
	__u32 pad;
};

/* Socket LB: per-socket backend affinity (UDP). */
struct aff_key {
	__u64 cookie;
	__u32 svc_id;
	__u32 pad;
};

struct aff_val {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

/* Socket LB: reverse translation backend -> VIP, per socket. */
struct rev_key {
	__u64 cookie;
	__u32 addr;
	__u16 port;
	__u16 pad;
};

struct rev_val {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

/* NAT connection tracking: a packet's 5-tuple as seen on the wire. */
struct ct_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* Forward entry, keyed by the client's original tuple. */
struct ct_fwd {
	__u32 be_addr;
	__u32 snat_addr; /* == client address when not SNATed */
	__u16 be_port;   /* as the backend has it: ANY_PORT keeps the tuple's */
	__u16 snat_port;
	__u32 svc_id;
};

/* Reply entry, keyed by the backend's reply tuple. */
struct ct_rev {
	__u32 client_addr;
	__u32 node_addr;
	__u16 client_port;
	__u16 node_port;
	__u32 pad;
};

#endif
