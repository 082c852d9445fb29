/* Connect-time load balancing for host-networked processes (a node's own processes and
 * hostNetwork pods): their traffic to a Service never crosses a workload or host interface
 * before leaving, so the destination is chosen when the socket connects (TCP, connected UDP) or
 * sends (unconnected UDP), and replies are shown as coming from the frontend. Attached only to
 * sub-cgroups that hold those processes, never to a cgroup root. */
#include "common.h"
#include "config.h"
#include "routes.h"
#include "nat.h"
#include "ctlb.h"

#define SOCK_STREAM 1
#define SOCK_DGRAM 2

/* Rewrites ctx's destination to a backend. Returns 1 to let the call go on, 0 to refuse it. */
SL_INLINE int sl_ctlb(struct bpf_sock_addr *ctx)
{
	__u8 proto;
	if (ctx->type == SOCK_STREAM)
		proto = IPPROTO_TCP;
	else if (ctx->type == SOCK_DGRAM)
		proto = IPPROTO_UDP;
	else
		return 1;
	__u32 addr = ctx->user_ip4;
	__u16 port = (__u16)ctx->user_port;
	/* Host processes are inside the cluster: source ranges do not restrict them, so the lookup
	 * uses the broadest source entry's match without its deny flag. */
	struct sl_nat_fe *fe = sl_fe_lookup(addr, port, proto, 0);
	if (!fe) {
		__u32 rf = sl_route_flags(addr);
		if (!(rf & (SL_RT_LOCAL_HOST | SL_RT_REMOTE_HOST)))
			return 1;
		fe = sl_fe_lookup(0, port, proto, 0);
		if (!fe)
			return 1;
	}
	struct sl_nat_fe f = *fe;
	__u32 n = (f.flags & SL_FE_INT_LOCAL) ? f.local_count : f.count;
	struct sl_nat_be be;
	if (sl_pick_backend(&f, n, sl_host_ip, &be))
		return 0; /* no backend: refuse at once rather than time out */
	struct sl_ctlb_key k = { .cookie = bpf_get_socket_cookie(ctx), .addr = be.addr, .port = be.port };
	struct sl_ctlb v = { .addr = addr, .port = port };
	bpf_map_update_elem(&sl_ctlb_v1, &k, &v, BPF_ANY);
	ctx->user_ip4 = be.addr;
	ctx->user_port = be.port;
	return 1;
}

/* Shows the frontend instead of the backend to recvmsg (UDP) and getpeername. */
SL_INLINE int sl_ctlb_reverse(struct bpf_sock_addr *ctx)
{
	struct sl_ctlb_key k = { .cookie = bpf_get_socket_cookie(ctx), .addr = ctx->user_ip4, .port = (__u16)ctx->user_port };
	struct sl_ctlb *v = bpf_map_lookup_elem(&sl_ctlb_v1, &k);
	if (v) {
		ctx->user_ip4 = v->addr;
		ctx->user_port = v->port;
	}
	return 1;
}

SEC("cgroup/connect4")
int sl_connect4(struct bpf_sock_addr *ctx)
{
	return sl_ctlb(ctx);
}

SEC("cgroup/sendmsg4")
int sl_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sl_ctlb(ctx);
}

SEC("cgroup/recvmsg4")
int sl_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sl_ctlb_reverse(ctx);
}

SEC("cgroup/getpeername4")
int sl_getpeername4(struct bpf_sock_addr *ctx)
{
	return sl_ctlb_reverse(ctx);
}

char LICENSE[] SEC("license") = "GPL";
