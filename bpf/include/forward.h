/* Forwarding shortcuts: after NAT, a FIB lookup tells where the packet goes and the program
 * sends it there directly (bpf_redirect / bpf_redirect_neigh) instead of through the kernel's
 * input path, which would also refuse packets whose new source is one of the node's addresses. */
#pragma once
#include "common.h"
#include "config.h"
#include "packet.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* Decrements the TTL of a forwarded packet; returns -1 when it must not be forwarded. */
SL_INLINE int sl_dec_ttl(struct __sk_buff *skb, struct sl_pkt *p)
{
	if (p->ip.ttl <= 1)
		return -1;
	__u8 ttl = p->ip.ttl - 1;
	/* The TTL shares a 16-bit checksum word with the protocol. */
	__u16 old = bpf_htons((__u16)p->ip.ttl << 8 | p->ip.protocol);
	__u16 new = bpf_htons((__u16)ttl << 8 | p->ip.protocol);
	if (bpf_l3_csum_replace(skb, SL_IP_CSUM_OFF, old, new, 2))
		return -1;
	if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, ttl), &ttl, 1, 0))
		return -1;
	p->ip.ttl = ttl;
	return 0;
}

/* Routes the packet to `daddr` and redirects it there (p is NULL for a packet Sluice built). Falls back to the kernel (TC_ACT_OK)
 * when the shortcut is off or the FIB cannot answer. */
SL_SUBPROG int sl_forward(struct __sk_buff *skb, struct sl_pkt *p, __u32 saddr, __u32 daddr, int dec_ttl)
{
	if (!sl_fib_redirect)
		return TC_ACT_OK;
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.tos = p ? p->ip.tos : 0;
	fib.l4_protocol = p ? p->proto : IPPROTO_UDP;
	fib.tot_len = skb->len - ETH_HLEN;
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.ifindex = skb->ifindex;
	int rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return TC_ACT_OK;
	if (dec_ttl && p && sl_dec_ttl(skb, p))
		return TC_ACT_OK;
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0))
		return TC_ACT_SHOT;
	return bpf_redirect(fib.ifindex, 0);
}
