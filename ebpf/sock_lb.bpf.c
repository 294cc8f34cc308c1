// SPDX-License-Identifier: GPL-2.0
/*
 * Socket-level load balancing of service VIPs: the destination is rewritten
 * when the socket connects (TCP, connected UDP) or sends (unconnected UDP),
 * so no packet is ever NATed. recvmsg4/getpeername4 translate the backend
 * address back to the VIP so the application only ever sees the VIP.
 */
#include "lib/common.h"
#include "lib/types.h"
#include "lib/sock_maps.h"
#include "lib/select.h"

#define SYSCALL_ALLOW 1
#define SYSCALL_REJECT 0 /* the syscall fails with EPERM */

SHOAL_INLINE int sock_proto(const struct bpf_sock_addr *ctx)
{
	if (ctx->type == SOCK_STREAM)
		return IPPROTO_TCP;
	if (ctx->type == SOCK_DGRAM)
		return IPPROTO_UDP;
	return -1;
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

SHOAL_INLINE int sock4_xlate(struct bpf_sock_addr *ctx)
{
	int proto = sock_proto(ctx);
	struct svc_key sk = {};
	struct svc_val *svc;
	struct aff_val chosen = {};
	struct be_val *be;
	__u64 cookie;

	if (proto < 0)
		return SYSCALL_ALLOW;
	sk.addr = ctx->user_ip4;
	sk.port = (__u16)ctx->user_port;
	sk.proto = (__u8)proto;
	svc = bpf_map_lookup_elem(&sock_svc, &sk);
	if (!svc)
		return SYSCALL_ALLOW;
	if (svc->count == 0)
		return SYSCALL_REJECT;

	cookie = bpf_get_socket_cookie(ctx);
	if (proto != IPPROTO_UDP || udp_affine_backend(cookie, svc, &chosen) < 0) {
		be = pick_backend(&sock_be, svc, 0, svc->count);
		if (!be)
			return SYSCALL_REJECT;
		chosen.addr = be->addr;
		chosen.port = be->port;
		if (proto == IPPROTO_UDP) {
			struct aff_key ak = { .cookie = cookie, .svc_id = svc->id };

			bpf_map_update_elem(&sock_aff, &ak, &chosen, BPF_ANY);
		}
	}

	struct rev_key rk = { .cookie = cookie, .addr = chosen.addr, .port = chosen.port };
	struct rev_val rv = { .addr = sk.addr, .port = sk.port };

	bpf_map_update_elem(&sock_rev, &rk, &rv, BPF_ANY);
	ctx->user_ip4 = chosen.addr;
	ctx->user_port = (__u32)chosen.port;
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
	return sock4_xlate(ctx);
}

SEC("cgroup/sendmsg4")
int shoal_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate(ctx);
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

char _license[] SEC("license") = "GPL";
