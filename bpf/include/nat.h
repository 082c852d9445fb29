/* Service NAT: frontends (sl_nat_fe_v1), backends (sl_nat_be_v1), session affinity
 * (sl_nat_aff_v1). Only a flow's first packet reads these; conntrack carries the rest. */
#pragma once
#include "common.h"

/* Frontend key in an LPM trie so loadBalancerSourceRanges can match on the client's network:
 * the first 64 bits (address, port, protocol, pad) always match in full, then src_prefix bits
 * of the source. A Service without source ranges has one entry with prefixlen 64. */
struct sl_nat_fe_key {
	__u32 prefixlen;
	__u32 addr; /* frontend IP; 0 = any node IP (NodePort) */
	__u16 port; /* network byte order */
	__u8 proto;
	__u8 pad;
	__u32 src; /* client network */
};
SL_ASSERT_SIZE(struct sl_nat_fe_key, 16);
#define SL_FE_PREFIX_FIXED 64

enum sl_fe_flags {
	SL_FE_EXT_LOCAL = 1 << 0,   /* externalTrafficPolicy: Local */
	SL_FE_INT_LOCAL = 1 << 1,   /* internalTrafficPolicy: Local */
	SL_FE_NODEPORT = 1 << 2,    /* a NodePort frontend (addr 0 = every node IP) */
	SL_FE_EXTERNAL = 1 << 3,    /* LoadBalancer IP or externalIP: external traffic policy applies */
	SL_FE_SRC_DENIED = 1 << 4,  /* loadBalancerSourceRanges exist and this source is not in them */
};

struct sl_nat_fe {
	__u32 svc_id;
	__u32 count;       /* backends, local ones first */
	__u32 local_count; /* backends on this node */
	__u32 affinity_timeout; /* seconds; 0 = no session affinity */
	__u32 flags;
	__u32 pad;
};
SL_ASSERT_SIZE(struct sl_nat_fe, 24);

struct sl_nat_be_key {
	__u32 svc_id;
	__u32 ordinal;
};
SL_ASSERT_SIZE(struct sl_nat_be_key, 8);

struct sl_nat_be {
	__u32 addr; /* network byte order */
	__u16 port; /* network byte order */
	__u16 pad;
};
SL_ASSERT_SIZE(struct sl_nat_be, 8);

struct sl_nat_aff_key {
	__u32 svc_id;
	__u32 client;
};
SL_ASSERT_SIZE(struct sl_nat_aff_key, 8);

struct sl_nat_aff {
	__u64 ts_ns;
	__u32 ordinal;
	__u32 addr;
	__u16 port;
	__u16 pad;
	__u32 pad2;
};
SL_ASSERT_SIZE(struct sl_nat_aff, 24);

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct sl_nat_fe_key);
	__type(value, struct sl_nat_fe);
	__uint(max_entries, 64 * 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_nat_fe_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sl_nat_be_key);
	__type(value, struct sl_nat_be);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_nat_be_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sl_nat_aff_key);
	__type(value, struct sl_nat_aff);
	__uint(max_entries, 64 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_nat_aff_v1 SEC(".maps");

SL_INLINE struct sl_nat_fe *sl_fe_lookup(__u32 addr, __u16 port, __u8 proto, __u32 src)
{
	struct sl_nat_fe_key k = {
		.prefixlen = SL_FE_PREFIX_FIXED + 32,
		.addr = addr,
		.port = port,
		.proto = proto,
		.src = src,
	};
	return bpf_map_lookup_elem(&sl_nat_fe_v1, &k);
}

/* Picks a backend among the first `n` (local ones come first), honouring session affinity.
 * Returns 0 and fills *be, or -1 when there is none. */
SL_INLINE int sl_pick_backend(struct sl_nat_fe *fe, __u32 n, __u32 client, struct sl_nat_be *be)
{
	if (n == 0)
		return -1;
	__u64 now = bpf_ktime_get_ns();
	struct sl_nat_aff_key ak = { .svc_id = fe->svc_id, .client = client };
	if (fe->affinity_timeout) {
		struct sl_nat_aff *a = bpf_map_lookup_elem(&sl_nat_aff_v1, &ak);
		if (a && now - a->ts_ns < (__u64)fe->affinity_timeout * 1000000000ull && a->ordinal < n) {
			/* Only while that backend is still at its ordinal: a changed list breaks affinity,
			 * as kube-proxy's does when the endpoint goes. */
			struct sl_nat_be_key bk = { .svc_id = fe->svc_id, .ordinal = a->ordinal };
			struct sl_nat_be *cur = bpf_map_lookup_elem(&sl_nat_be_v1, &bk);
			if (cur && cur->addr == a->addr && cur->port == a->port) {
				a->ts_ns = now;
				*be = *cur;
				return 0;
			}
		}
	}
	struct sl_nat_be_key bk = { .svc_id = fe->svc_id, .ordinal = bpf_get_prandom_u32() % n };
	struct sl_nat_be *b = bpf_map_lookup_elem(&sl_nat_be_v1, &bk);
	if (!b)
		return -1;
	*be = *b;
	if (fe->affinity_timeout) {
		struct sl_nat_aff na = { .ts_ns = now, .ordinal = bk.ordinal, .addr = b->addr, .port = b->port };
		bpf_map_update_elem(&sl_nat_aff_v1, &ak, &na, BPF_ANY);
	}
	return 0;
}
