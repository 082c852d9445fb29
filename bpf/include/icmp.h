/* ICMP: errors Sluice sends (port unreachable for a Service without backends, fragmentation
 * needed before the tunnel) and errors about NATed flows translated back to what the client used. */
#pragma once
#include "common.h"
#include "config.h"
#include "packet.h"

struct sl_icmp_err {
	struct iphdr ip;
	struct icmphdr icmp;
	struct iphdr orig;
	__u8 orig_l4[8];
} __attribute__((packed));

/* Turns the packet into an ICMP error back to its sender, from `src` (`what` packs type, code
 * and next-hop MTU: SL_ICMP_WHAT). The caller redirects it
 * out of the interface it arrived on. Packets with IP options are not answered (returns -1). */
#define SL_ICMP_WHAT(type, code, mtu) (((__u32)(type) << 24) | ((__u32)(code) << 16) | (__u16)(mtu))

SL_SUBPROG int sl_icmp_reply(struct __sk_buff *skb, struct sl_pkt *p, __u32 what, __u32 src)
{
	__u8 type = what >> 24, code = (what >> 16) & 0xff;
	__u16 mtu = what & 0xffff;
	if (p->ip.ihl != 5)
		return -1;
	struct ethhdr eth;
	struct sl_icmp_err e = {};
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)))
		return -1;
	e.orig = p->ip;
	/* Up to 8 bytes of the original L4 header (RFC 792); shorter packets leave zeros. */
	if (bpf_skb_load_bytes(skb, p->l4_off, e.orig_l4, sizeof(e.orig_l4)))
		__builtin_memset(e.orig_l4, 0, sizeof(e.orig_l4));
	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(e), 0))
		return -1;
	__u8 tmp[ETH_ALEN];
	__builtin_memcpy(tmp, eth.h_dest, ETH_ALEN);
	__builtin_memcpy(eth.h_dest, eth.h_source, ETH_ALEN);
	__builtin_memcpy(eth.h_source, tmp, ETH_ALEN);
	struct iphdr ip = {};
	ip.version = 4;
	ip.ihl = 5;
	ip.ttl = 64;
	ip.protocol = IPPROTO_ICMP;
	ip.tot_len = bpf_htons(sizeof(e));
	ip.saddr = src;
	ip.daddr = p->saddr;
	ip.check = sl_ip_csum(&ip);
	e.ip = ip;
	e.icmp.type = type;
	e.icmp.code = code;
	e.icmp.un.frag.mtu = bpf_htons(mtu);
	__s64 sum = bpf_csum_diff(0, 0, (__be32 *)((void *)&e + sizeof(struct iphdr)), sizeof(e) - sizeof(struct iphdr), 0);
	if (sum < 0)
		return -1;
	e.icmp.checksum = sl_fold(sum);
	if (bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0))
		return -1;
	return bpf_skb_store_bytes(skb, ETH_HLEN, &e, sizeof(e), 0);
}

/* The flow an ICMP error is about: the quoted header, as the original sender sent it. */
SL_INLINE int sl_icmp_inner(struct __sk_buff *skb, struct sl_pkt *p, struct iphdr *inner, __u16 *ports)
{
	if (p->frag || p->ip.ihl != 5)
		return -1;
	if (p->icmp_type != ICMP_DEST_UNREACH && p->icmp_type != ICMP_TIME_EXCEEDED && p->icmp_type != ICMP_PARAMETERPROB)
		return -1;
	__u32 off = p->l4_off + sizeof(struct icmphdr);
	if (bpf_skb_load_bytes(skb, off, inner, sizeof(*inner)) || inner->ihl != 5)
		return -1;
	if (inner->protocol != IPPROTO_TCP && inner->protocol != IPPROTO_UDP)
		return -1;
	return bpf_skb_load_bytes(skb, off + sizeof(*inner), ports, 2 * sizeof(__u16));
}

/* Rewrites the quoted destination (what the client sent to) from backend to frontend, and the
 * error's own source when the backend sent it, keeping every checksum right. The quoted L4
 * checksum is not updated: it covers data the quote does not hold. */
SL_SUBPROG int sl_icmp_translate(struct __sk_buff *skb, struct sl_pkt *p, struct iphdr *inner, __u32 fe_addr, __u16 fe_port)
{
	__u32 icmp_csum = p->l4_off + offsetof(struct icmphdr, checksum);
	__u32 inner_off = p->l4_off + sizeof(struct icmphdr);
	__u32 old_addr = inner->daddr;
	__u16 ports[2];
	if (bpf_skb_load_bytes(skb, inner_off + sizeof(*inner), ports, sizeof(ports)))
		return -1;
	__u16 old_port = ports[1];
	__u16 old_check = inner->check;

	/* Inner IP header checksum, then the ICMP checksum for every inner byte that changed. */
	if (bpf_l3_csum_replace(skb, inner_off + offsetof(struct iphdr, check), old_addr, fe_addr, 4))
		return -1;
	if (bpf_skb_store_bytes(skb, inner_off + offsetof(struct iphdr, daddr), &fe_addr, 4, 0))
		return -1;
	__u16 new_check;
	if (bpf_skb_load_bytes(skb, inner_off + offsetof(struct iphdr, check), &new_check, 2))
		return -1;
	if (bpf_l4_csum_replace(skb, icmp_csum, old_addr, fe_addr, 4) ||
	    bpf_l4_csum_replace(skb, icmp_csum, old_check, new_check, 2))
		return -1;
	if (old_port != fe_port) {
		if (bpf_skb_store_bytes(skb, inner_off + sizeof(*inner) + 2, &fe_port, 2, 0) ||
		    bpf_l4_csum_replace(skb, icmp_csum, old_port, fe_port, 2))
			return -1;
	}
	if (p->saddr == old_addr) {
		if (bpf_l3_csum_replace(skb, SL_IP_CSUM_OFF, old_addr, fe_addr, 4) ||
		    bpf_skb_store_bytes(skb, SL_IP_SADDR_OFF, &fe_addr, 4, 0))
			return -1;
		p->saddr = fe_addr;
	}
	return 0;
}
