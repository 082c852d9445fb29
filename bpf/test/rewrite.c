/* Test object for the packet harness: a destination rewrite done right (IP and L4 checksums
 * updated) and one done wrong (L4 checksum left stale), which the harness must catch. */
#include "common.h"
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stddef.h>

const volatile __u32 new_daddr = 0; /* network byte order */

#define IP_DST_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))
#define IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))

SL_INLINE int rewrite(struct __sk_buff *skb, int fix_l4)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end || ip->ihl != 5)
		return TC_ACT_OK;
	__u32 old = ip->daddr;
	__u8 proto = ip->protocol;
	__u32 l4_csum_off;
	if (proto == IPPROTO_TCP)
		l4_csum_off = ETH_HLEN + sizeof(struct iphdr) + offsetof(struct tcphdr, check);
	else if (proto == IPPROTO_UDP)
		l4_csum_off = ETH_HLEN + sizeof(struct iphdr) + offsetof(struct udphdr, check);
	else
		return TC_ACT_OK;
	__u32 nd = new_daddr;
	if (fix_l4 && bpf_l4_csum_replace(skb, l4_csum_off, old, nd, BPF_F_PSEUDO_HDR | sizeof(nd) |
					  (proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0)))
		return TC_ACT_SHOT;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, nd, sizeof(nd)))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, IP_DST_OFF, &nd, sizeof(nd), 0))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

SEC("tc")
int rewrite_ok(struct __sk_buff *skb)
{
	return rewrite(skb, 1);
}

SEC("tc")
int rewrite_stale_l4(struct __sk_buff *skb)
{
	return rewrite(skb, 0);
}

char LICENSE[] SEC("license") = "GPL";
