/* Per-interface, per-hook packet counters (sl_counters_v1). */
#pragma once
#include "common.h"

enum sl_hook {
	SL_HOOK_TC_INGRESS = 0,
	SL_HOOK_TC_EGRESS = 1,
	SL_HOOK_XDP = 2,
};

enum sl_counter {
	SL_CNT_PACKETS = 0,
	SL_CNT_BYTES,
	SL_CNT_IPV4,
	SL_CNT_TCP,
	SL_CNT_UDP,
	SL_CNT_ICMP,
	SL_CNT_OTHER,
	SL_CNT_ACCEPTED,
	SL_CNT_NAT,
	SL_CNT_DROP_MALFORMED,
	SL_CNT_DROP_POLICY,
	SL_CNT_DROP_NO_BACKEND,
	SL_CNT_DROP_OTHER,
	SL_CNT_DROP_RPF, /* a workload sending from an address that is not its own */
	SL_CNT_KERNEL_PATH, /* a TCP segment of a connection conntrack does not know, left to the kernel */
	SL_CNT_MAX = 16,
};

struct sl_counters_key {
	__u32 ifindex;
	__u32 hook;
};
SL_ASSERT_SIZE(struct sl_counters_key, 8);

struct sl_counters {
	__u64 c[SL_CNT_MAX];
};
SL_ASSERT_SIZE(struct sl_counters, 128);

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct sl_counters_key);
	__type(value, struct sl_counters);
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_counters_v1 SEC(".maps");

static const struct sl_counters sl_zero_counters = {};

/* The counters of one interface and hook, created on first use. */
SL_INLINE struct sl_counters *sl_counters_get(__u32 ifindex, __u32 hook)
{
	struct sl_counters_key k = { .ifindex = ifindex, .hook = hook };
	struct sl_counters *c = bpf_map_lookup_elem(&sl_counters_v1, &k);
	if (c)
		return c;
	/* The zero value lives in .rodata: 128 bytes are too many for the 512-byte stack. */
	bpf_map_update_elem(&sl_counters_v1, &k, &sl_zero_counters, BPF_NOEXIST);
	return bpf_map_lookup_elem(&sl_counters_v1, &k);
}

SL_INLINE void sl_count(struct sl_counters *c, enum sl_counter which)
{
	if (c && which < SL_CNT_MAX)
		c->c[which]++;
}
