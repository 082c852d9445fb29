/* Reading and rewriting IPv4 packets from tc programs. Reads go through bpf_skb_load_bytes
 * so non-linear packets are handled; writes use the checksum helpers so every rewrite leaves
 * IP and L4 checksums correct (UDP's "no checksum" 0 stays 0). */
#pragma once
#include "common.h"
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stddef.h>

/* linux/icmp.h drags in libc's socket headers, which do not build for BPF; the few ICMP
 * definitions needed are here. */
struct icmphdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	union {
		struct {
			__u16 id;
			__u16 sequence;
		} echo;
		__u32 gateway;
		struct {
			__u16 unused;
			__u16 mtu;
		} frag;
	} un;
};
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define ICMP_PORT_UNREACH 3
#define ICMP_FRAG_NEEDED 4

#define SL_IP_OFF ETH_HLEN
#define SL_IP_SADDR_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define SL_IP_DADDR_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))
#define SL_IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))

struct sl_pkt {
	struct iphdr ip;
	__u32 l4_off;
	__u32 saddr;
	__u32 daddr;
	__u16 sport; /* network byte order; ICMP echo: the identifier */
	__u16 dport;
	__u8 proto;
	__u8 tcp_seen; /* sl_tcp_seen bits of this TCP segment */
	__u8 frag;     /* 1 = non-first fragment: no L4 header */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 has_ports;
};

enum sl_parse_result {
	SL_PARSE_OK = 0,
	SL_PARSE_NOT_IPV4 = 1,
	SL_PARSE_MALFORMED = 2,
};

/* Fills what follows from the IPv4 header already copied into p->ip; L4 fields start empty. */
SL_INLINE void sl_pkt_from_ip(struct sl_pkt *p, __u32 l4_off)
{
	p->l4_off = l4_off;
	p->saddr = p->ip.saddr;
	p->daddr = p->ip.daddr;
	p->proto = p->ip.protocol;
	p->frag = (p->ip.frag_off & bpf_htons(0x1fff)) != 0;
	p->sport = 0;
	p->dport = 0;
	p->tcp_seen = 0;
	p->has_ports = 0;
	p->icmp_type = 0;
	p->icmp_code = 0;
}

/* The slow path: headers read with bpf_skb_load_bytes, which also works when they are not in
 * the linear part of the packet. */
SL_INLINE int sl_parse_copy(struct __sk_buff *skb, struct sl_pkt *p)
{
	if (bpf_skb_load_bytes(skb, SL_IP_OFF, &p->ip, sizeof(p->ip)))
		return SL_PARSE_MALFORMED;
	if (p->ip.version != 4 || p->ip.ihl < 5)
		return SL_PARSE_MALFORMED;
	sl_pkt_from_ip(p, ETH_HLEN + p->ip.ihl * 4);
	if (p->frag)
		return SL_PARSE_OK;
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr th;
		if (bpf_skb_load_bytes(skb, p->l4_off, &th, sizeof(th)))
			return SL_PARSE_MALFORMED;
		p->sport = th.source;
		p->dport = th.dest;
		p->has_ports = 1;
		p->tcp_seen = (th.syn ? 1 : 0) | (th.ack ? 2 : 0) | (th.fin ? 4 : 0) | (th.rst ? 8 : 0);
	} else if (p->proto == IPPROTO_UDP) {
		struct udphdr uh;
		if (bpf_skb_load_bytes(skb, p->l4_off, &uh, sizeof(uh)))
			return SL_PARSE_MALFORMED;
		p->sport = uh.source;
		p->dport = uh.dest;
		p->has_ports = 1;
	} else if (p->proto == IPPROTO_ICMP) {
		struct icmphdr ih;
		if (bpf_skb_load_bytes(skb, p->l4_off, &ih, sizeof(ih)))
			return SL_PARSE_MALFORMED;
		p->icmp_type = ih.type;
		p->icmp_code = ih.code;
		if (ih.type == ICMP_ECHO || ih.type == ICMP_ECHOREPLY) {
			p->sport = ih.un.echo.id;
			p->dport = ih.un.echo.id;
		}
	}
	return SL_PARSE_OK;
}

/* The fast path reads the headers in place; packets whose headers are not all in the linear
 * area (or are truncated) take the copying path, which tells the two apart. */
SL_INLINE int sl_parse(struct __sk_buff *skb, struct sl_pkt *p)
{
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return SL_PARSE_NOT_IPV4;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > end)
		return sl_parse_copy(skb, p);
	if (ip->version != 4 || ip->ihl < 5)
		return SL_PARSE_MALFORMED;
	__u32 l4_off = ETH_HLEN + (ip->ihl & 0xf) * 4;
	void *l4 = data + l4_off;
	/* 20 bytes cover a TCP header and more than UDP's or ICMP's 8. */
	if (l4 + sizeof(struct tcphdr) > end)
		return sl_parse_copy(skb, p);
	__builtin_memcpy(&p->ip, ip, sizeof(p->ip));
	sl_pkt_from_ip(p, l4_off);
	if (p->frag)
		return SL_PARSE_OK;
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		p->sport = th->source;
		p->dport = th->dest;
		p->has_ports = 1;
		p->tcp_seen = (th->syn ? 1 : 0) | (th->ack ? 2 : 0) | (th->fin ? 4 : 0) | (th->rst ? 8 : 0);
	} else if (p->proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;
		p->sport = uh->source;
		p->dport = uh->dest;
		p->has_ports = 1;
	} else if (p->proto == IPPROTO_ICMP) {
		struct icmphdr *ih = l4;
		p->icmp_type = ih->type;
		p->icmp_code = ih->code;
		if (ih->type == ICMP_ECHO || ih->type == ICMP_ECHOREPLY) {
			p->sport = ih->un.echo.id;
			p->dport = ih->un.echo.id;
		}
	}
	return SL_PARSE_OK;
}

SL_INLINE __u32 sl_l4_csum_off(__u8 proto)
{
	return proto == IPPROTO_TCP ? offsetof(struct tcphdr, check) : offsetof(struct udphdr, check);
}

/* Incremental checksum update (RFC 1624) for a 16-bit word changing from `from` to `to`. */
SL_INLINE __u16 sl_csum_update16(__u16 csum, __u16 from, __u16 to)
{
	__u32 sum = (__u16)~csum + (__u16)~from + to;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

SL_INLINE __u16 sl_csum_update32(__u16 csum, __u32 from, __u32 to)
{
	csum = sl_csum_update16(csum, from & 0xffff, to & 0xffff);
	return sl_csum_update16(csum, from >> 16, to >> 16);
}

/* Rewrites in place, with checksums updated by hand: no helper calls on the hot path. Returns 1
 * when the headers are not in the linear area, for the caller to use the helpers instead. */
SL_INLINE int sl_rewrite_direct(struct __sk_buff *skb, struct sl_pkt *p, int is_src, __u32 new_addr, __u16 new_port, int l4)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > end)
		return 1;
	__u32 l4_off = p->l4_off & 0x7f;
	__u16 *csum = 0;
	__u16 *portp = 0;
	if (l4) {
		void *h = data + l4_off;
		if (h + sizeof(struct tcphdr) > end)
			return 1;
		if (p->proto == IPPROTO_TCP) {
			struct tcphdr *th = h;
			csum = &th->check;
			portp = is_src ? &th->source : &th->dest;
		} else {
			struct udphdr *uh = h;
			csum = uh->check ? &uh->check : 0; /* 0: the sender used no checksum */
			portp = is_src ? &uh->source : &uh->dest;
		}
	}
	__u32 old_addr = is_src ? ip->saddr : ip->daddr;
	if (old_addr != new_addr) {
		ip->check = sl_csum_update32(ip->check, old_addr, new_addr);
		if (is_src)
			ip->saddr = new_addr;
		else
			ip->daddr = new_addr;
		if (csum)
			*csum = sl_csum_update32(*csum, old_addr, new_addr);
	}
	if (portp && *portp != new_port) {
		if (csum)
			*csum = sl_csum_update16(*csum, *portp, new_port);
		*portp = new_port;
	}
	if (csum && p->proto == IPPROTO_UDP && *csum == 0)
		*csum = 0xffff; /* a computed zero is sent as all ones */
	return 0;
}

/* Rewrites the source (is_src) or destination address and port of a TCP or UDP packet. */
SL_INLINE int sl_rewrite(struct __sk_buff *skb, struct sl_pkt *p, int is_src, __u32 new_addr, __u16 new_port)
{
	__u32 old_addr = is_src ? p->saddr : p->daddr;
	__u16 old_port = is_src ? p->sport : p->dport;
	__u32 addr_off = is_src ? SL_IP_SADDR_OFF : SL_IP_DADDR_OFF;
	int l4 = p->has_ports && (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP);
	__u64 mangled = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__u32 csum_off = p->l4_off + sl_l4_csum_off(p->proto);

	if (sl_rewrite_direct(skb, p, is_src, new_addr, new_port, l4) == 0)
		goto done;
	if (l4 && old_addr != new_addr &&
	    bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, BPF_F_PSEUDO_HDR | mangled | sizeof(new_addr)))
		return -1;
	if (l4 && old_port != new_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | sizeof(new_port)))
			return -1;
		if (bpf_skb_store_bytes(skb, p->l4_off + (is_src ? 0 : 2), &new_port, sizeof(new_port), 0))
			return -1;
	}
	if (old_addr != new_addr) {
		if (bpf_l3_csum_replace(skb, SL_IP_CSUM_OFF, old_addr, new_addr, sizeof(new_addr)))
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0))
			return -1;
	}
done:
	if (is_src) {
		p->saddr = new_addr;
		p->sport = l4 ? new_port : p->sport;
	} else {
		p->daddr = new_addr;
		p->dport = l4 ? new_port : p->dport;
	}
	return 0;
}

/* One's-complement checksum of a 20-byte IPv4 header held on the stack. */
SL_INLINE __u16 sl_ip_csum(struct iphdr *ip)
{
	__u32 sum = 0;
	__u16 *w = (__u16 *)ip;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

SL_INLINE __u16 sl_fold(__s64 csum)
{
	__u32 sum = (__u32)csum;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}
