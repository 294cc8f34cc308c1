// SPDX-License-Identifier: GPL-2.0
/*
 * Socket-level load balancing of service VIPs: the destination is rewritten
 * when the socket connects (TCP, connected UDP) or sends (unconnected UDP),
 * so no packet is ever NATed. recvmsg4/getpeername4 translate the backend
 * address back to the VIP so the application only ever sees the VIP.
 *
 * Two sets of the four hooks:
 * - shoal_*: attached to the cgroup of the node's tasks; every socket there
 *   is balanced (each task has its own network namespace).
 * - shoal_host_*: attached to the ROOT cgroup so the node's own processes
 *   (curl localhost:5000 on the node) are balanced too. Every process of the
 *   machine runs them, so they first compare the socket's network namespace
 *   with the node's (sock_host) and return at once when it is another one:
 *   processes of other namespaces (the host, other nodes) are never touched.
 *   Only those hooks map 127.0.0.0/8 to the node's published ports.
 *
 * A VIP carries every port: its service is keyed (VIP, ANY_PORT, proto) and
 * its backends' port is ANY_PORT, so a connection to VIP:6379 goes to
 * backend:6379 whatever ports the service lists. An exact (VIP, port) entry
 * wins. UDP affinity records the backend as the service has it (port
 * ANY_PORT), so its presence check is the service's; the reverse entry
 * records the port actually used, which is what recvmsg/getpeername see.
 */
#include "lib/common.h"
#include "lib/types.h"
#include "lib/sock_maps.h"
#include "lib/select.h"

#define SYSCALL_ALLOW 1
#define SYSCALL_REJECT 0 /* the syscall fails with EPERM */

#define LOOPBACK_NET 0x7f000000u /* 127.0.0.0/8, host order */
#define LOOPBACK_MASK 0xff000000u

SHOAL_INLINE int sock_proto(const struct bpf_sock_addr *ctx)
{
	if (ctx->type == SOCK_STREAM)
		return IPPROTO_TCP;
	if (ctx->type == SOCK_DGRAM)
		return IPPROTO_UDP;
	return -1;
}

/* The node's configuration when `ctx` is a socket of the node's own network
 * namespace; NULL for every other socket of the machine. */
SHOAL_INLINE const struct host_cfg *host_socket(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	const struct host_cfg *cfg = bpf_map_lookup_elem(&sock_host, &zero);

	if (!cfg || cfg->netns_cookie == 0)
		return NULL;
	if (bpf_get_netns_cookie(ctx) != cfg->netns_cookie)
		return NULL;
	return cfg;
}

/* UDP keeps the backend chosen for this socket and service as long as that
 * backend is still in the service; otherwise it gets a new one. */
SHOAL_INLINE int udp_affine_backend(__u64 cookie, const struct svc_val *svc,
				    struct aff_val *out)
{
	struct aff_key ak = { .cookie = cookie, .svc_id = svc->id };
	struct aff_val *aff = bpf_map_lookup_elem(&sock_aff, &ak);

	if (!aff || !backend_present(&sock_be_ref, svc->id, aff->addr, aff->port))
		return -1;
	*out = *aff;
	return 0;
}

/* A new backend for `svc`: a local one when the service prefers them. */
SHOAL_INLINE struct be_val *new_backend(const struct svc_val *svc)
{
	if ((svc->flags & SVC_F_KEEP_CLIENT_IP) && svc->local_count > 0) {
		struct be_val *be = pick_backend(&sock_be, svc, SLOT_LOCAL, svc->local_count);

		if (be)
			return be;
	}
	return pick_backend(&sock_be, svc, 0, svc->count);
}

SHOAL_INLINE int sock4_xlate(struct bpf_sock_addr *ctx, const struct host_cfg *host)
{
	int proto = sock_proto(ctx);
	struct svc_key sk = {};
	struct svc_val *svc;
	struct aff_val chosen = {};
	struct be_val *be;
	__u32 dst = ctx->user_ip4;
	__u64 cookie;

	if (proto < 0)
		return SYSCALL_ALLOW;
	__u16 dport = (__u16)ctx->user_port;
	__u16 port;

	sk.addr = dst;
	sk.port = dport;
	sk.proto = (__u8)proto;
	if (host && host->loopback_addr &&
	    (bpf_ntohl(dst) & LOOPBACK_MASK) == LOOPBACK_NET)
		sk.addr = host->loopback_addr;
	svc = lookup_service_any_port(&sock_svc, &sk);
	if (!svc)
		return SYSCALL_ALLOW;
	if (svc->count == 0)
		return SYSCALL_REJECT;

	cookie = bpf_get_socket_cookie(ctx);
	if (proto != IPPROTO_UDP || udp_affine_backend(cookie, svc, &chosen) < 0) {
		be = new_backend(svc);
		if (!be)
			return SYSCALL_REJECT;
		chosen.addr = be->addr;
		chosen.port = be->port;
		if (proto == IPPROTO_UDP) {
			struct aff_key ak = { .cookie = cookie, .svc_id = svc->id };

			bpf_map_update_elem(&sock_aff, &ak, &chosen, BPF_ANY);
		}
	}

	/* The application keeps seeing the address it used. */
	port = backend_port(chosen.port, dport);
	struct rev_key rk = { .cookie = cookie, .addr = chosen.addr, .port = port };
	struct rev_val rv = { .addr = dst, .port = dport };

	bpf_map_update_elem(&sock_rev, &rk, &rv, BPF_ANY);
	ctx->user_ip4 = chosen.addr;
	ctx->user_port = (__u32)port;
	return SYSCALL_ALLOW;
}

SHOAL_INLINE int sock4_rev_xlate(struct bpf_sock_addr *ctx)
{
	struct rev_key rk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = ctx->user_ip4,
		.port = (__u16)ctx->user_port,
	};
	struct rev_val *rv = bpf_map_lookup_elem(&sock_rev, &rk);

	if (rv) {
		ctx->user_ip4 = rv->addr;
		ctx->user_port = (__u32)rv->port;
	}
	return SYSCALL_ALLOW;
}

SEC("cgroup/connect4")
int shoal_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate(ctx, NULL);
}

SEC("cgroup/sendmsg4")
int shoal_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate(ctx, NULL);
}

SEC("cgroup/recvmsg4")
int shoal_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_rev_xlate(ctx);
}

SEC("cgroup/getpeername4")
int shoal_getpeer4(struct bpf_sock_addr *ctx)
{
	return sock4_rev_xlate(ctx);
}

/* Root cgroup: the node's own network namespace only, nothing else. */

SEC("cgroup/connect4")
int shoal_host_connect4(struct bpf_sock_addr *ctx)
{
	const struct host_cfg *host = host_socket(ctx);

	return host ? sock4_xlate(ctx, host) : SYSCALL_ALLOW;
}

SEC("cgroup/sendmsg4")
int shoal_host_sendmsg4(struct bpf_sock_addr *ctx)
{
	const struct host_cfg *host = host_socket(ctx);

	return host ? sock4_xlate(ctx, host) : SYSCALL_ALLOW;
}

SEC("cgroup/recvmsg4")
int shoal_host_recvmsg4(struct bpf_sock_addr *ctx)
{
	return host_socket(ctx) ? sock4_rev_xlate(ctx) : SYSCALL_ALLOW;
}

SEC("cgroup/getpeername4")
int shoal_host_getpeer4(struct bpf_sock_addr *ctx)
{
	return host_socket(ctx) ? sock4_rev_xlate(ctx) : SYSCALL_ALLOW;
}

char _license[] SEC("license") = "GPL";
