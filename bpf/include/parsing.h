/* Header parsing with bounds checks the verifier accepts. */
#pragma once
#include "common.h"

struct sl_l3 {
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 l4_off;
	__u8 proto;
	__u8 is_fragment; /* a non-first fragment has no L4 header */
};

/* Returns 0 when the frame holds an IPv4 header, -1 otherwise (not IPv4, or truncated). */
SL_INLINE int sl_parse_ipv4(void *data, void *data_end, struct sl_l3 *out)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1;
	out->eth = eth;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return -1;
	if (ip->ihl < 5)
		return -1;
	out->ip = ip;
	out->l4_off = sizeof(*eth) + ip->ihl * 4;
	out->proto = ip->protocol;
	out->is_fragment = (ip->frag_off & bpf_htons(0x1fff)) != 0;
	return 0;
}
