/* Sluice's own VXLAN tunnel for NodePort forwarding: the ingress node wraps the client's packet
 * (addresses unchanged, so the backend node sees the client's IP) and sends it to the backend's
 * node; replies come back the same way in Tunnel mode. The VNI differs from the pod overlay's so
 * the kernel's VXLAN device never sees these packets. */
#pragma once
#include "common.h"
#include "config.h"
#include "packet.h"

struct sl_vxlanhdr {
	__u32 flags; /* network order; 0x08000000 = VNI present */
	__u32 vni;   /* network order; VNI << 8 */
};

struct sl_encap {
	struct iphdr ip;
	struct udphdr udp;
	struct sl_vxlanhdr vx;
	struct ethhdr eth;
} __attribute__((packed));

#define SL_ENCAP_LEN ((int)sizeof(struct sl_encap))
_Static_assert(sizeof(struct sl_encap) == 50, "vxlan overhead");

/* Wraps the packet for `dst` (a node IP). The caller redirects it. */
SL_SUBPROG int sl_vxlan_encap(struct __sk_buff *skb, __u32 dst, __u16 entropy)
{
	__u32 inner = skb->len - ETH_HLEN;
	__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);
	if (bpf_skb_adjust_room(skb, SL_ENCAP_LEN, BPF_ADJ_ROOM_MAC, flags))
		return -1;
	struct iphdr ip = {};
	ip.version = 4;
	ip.ihl = 5;
	ip.ttl = 64;
	ip.protocol = IPPROTO_UDP;
	ip.tot_len = bpf_htons(inner + SL_ENCAP_LEN);
	ip.saddr = sl_host_ip;
	ip.daddr = dst;
	ip.check = sl_ip_csum(&ip);
	struct sl_encap h = {};
	h.ip = ip;
	/* Source ports 49152-65535 spread flows over the underlay's ECMP paths, as RFC 7348 asks. */
	h.udp.source = bpf_htons(49152 | (entropy & 0x3fff));
	h.udp.dest = bpf_htons(sl_vxlan_port);
	h.udp.len = bpf_htons(inner + SL_ENCAP_LEN - sizeof(struct iphdr));
	h.vx.flags = bpf_htonl(0x08000000);
	h.vx.vni = bpf_htonl(sl_vxlan_vni << 8);
	h.eth.h_proto = bpf_htons(ETH_P_IP);
	return bpf_skb_store_bytes(skb, ETH_HLEN, &h, sizeof(h), 0);
}

/* Whether the packet is Sluice's tunnel addressed to this node; fills the outer source. */
SL_INLINE int sl_is_our_tunnel(struct __sk_buff *skb, struct sl_pkt *p, __u32 *outer_src)
{
	if (p->proto != IPPROTO_UDP || p->frag || p->dport != bpf_htons(sl_vxlan_port) || p->ip.ihl != 5)
		return 0;
	struct sl_vxlanhdr vx;
	if (bpf_skb_load_bytes(skb, p->l4_off + sizeof(struct udphdr), &vx, sizeof(vx)))
		return 0;
	if (vx.flags != bpf_htonl(0x08000000) || vx.vni != bpf_htonl(sl_vxlan_vni << 8))
		return 0;
	*outer_src = p->saddr;
	return 1;
}

SL_INLINE int sl_vxlan_decap(struct __sk_buff *skb)
{
	return bpf_skb_adjust_room(skb, -SL_ENCAP_LEN, BPF_ADJ_ROOM_MAC, 0);
}
