/* Routes (sl_routes_v1): what an IPv4 address is to this node. Longest prefix wins. */
#pragma once
#include "common.h"

enum sl_route_flags {
	SL_RT_LOCAL_HOST = 1 << 0,  /* an address of this node */
	SL_RT_REMOTE_HOST = 1 << 1, /* an address of another node */
	SL_RT_LOCAL_WL = 1 << 2,    /* a workload on this node (ifindex valid) */
	SL_RT_REMOTE_WL = 1 << 3,   /* a workload on another node (next_hop = its node IP) */
	SL_RT_IN_POOL = 1 << 4,     /* inside a pod IP pool */
	SL_RT_TUNNELED = 1 << 5,    /* reached over the overlay */
};

struct sl_route_key {
	__u32 prefixlen;
	__u32 addr; /* network byte order */
};
SL_ASSERT_SIZE(struct sl_route_key, 8);

struct sl_route {
	__u32 flags;
	__u32 ifindex;
	__u32 next_hop; /* node IP, network byte order */
	__u32 pad;
};
SL_ASSERT_SIZE(struct sl_route, 16);

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct sl_route_key);
	__type(value, struct sl_route);
	__uint(max_entries, 256 * 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_routes_v1 SEC(".maps");

SL_INLINE struct sl_route *sl_route_lookup(__u32 addr)
{
	struct sl_route_key k = { .prefixlen = 32, .addr = addr };
	return bpf_map_lookup_elem(&sl_routes_v1, &k);
}

SL_INLINE __u32 sl_route_flags(__u32 addr)
{
	struct sl_route *r = sl_route_lookup(addr);
	return r ? r->flags : 0;
}
