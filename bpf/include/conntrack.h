/* Conntrack (sl_ct_v1): times come from the coarse monotonic clock (jiffies resolution is
 * plenty for expiry and it costs less per packet). one entry per direction-independent 5-tuple. A NAT flow has two: the
 * NAT_FWD entry on the client<->frontend tuple holds the chosen backend, the NAT_REV entry on the
 * client<->backend tuple holds the frontend to restore on replies. Userspace expires entries
 * from created/last_seen and the TCP flags seen, per protocol (BPFConntrackTimeouts). */
#pragma once
#include "common.h"

enum sl_ct_type {
	SL_CT_NORMAL = 0,
	SL_CT_NAT_FWD = 1,
	SL_CT_NAT_REV = 2,
};

enum sl_ct_flags {
	SL_CT_F_FWD_TUNNEL = 1 << 0,   /* ingress node: packets go to tun_ip in the tunnel */
	SL_CT_F_FROM_TUNNEL = 1 << 1,  /* backend node: the flow arrived through tun_ip's tunnel */
	SL_CT_F_REPLY_TUNNEL = 1 << 2, /* backend node: replies return through tun_ip (Tunnel mode) */
	SL_CT_F_DSR = 1 << 3,          /* backend node: replies go straight to the client */
	SL_CT_F_EXTERNAL = 1 << 4,     /* entered the cluster from outside */
	SL_CT_F_HAIRPIN = 1 << 5,      /* a pod reaching itself through its Service: source NATed too */
	SL_CT_F_HOST = 1 << 6,         /* to or from this host, through a host endpoint with policy */
};

/* A flow's first packet is judged by the policy of each endpoint on the node it meets: the
 * opener's egress table, the responder's ingress table. Later packets only test these bits;
 * userspace clears them when an endpoint's policy changes, so the next packet is judged again. */
enum sl_ct_pol {
	SL_CT_POL_OPENER = 1 << 0,
	SL_CT_POL_RESPONDER = 1 << 1,
	/* Forwarded through a host endpoint with applyOnForward policy: in (from the underlay), out. */
	SL_CT_POL_FWD_IN = 1 << 2,
	SL_CT_POL_FWD_OUT = 1 << 3,
};

enum sl_tcp_seen {
	SL_TCP_SYN = 1 << 0,
	SL_TCP_ACK = 1 << 1,
	SL_TCP_FIN = 1 << 2,
	SL_TCP_RST = 1 << 3,
};

struct sl_ct_key {
	__u32 addr_a; /* the lower (address, port) pair */
	__u32 addr_b;
	__u16 port_a;
	__u16 port_b;
	__u8 proto;
	__u8 pad[3];
};
SL_ASSERT_SIZE(struct sl_ct_key, 16);

struct sl_ct {
	__u64 created_ns;
	__u64 last_seen_ns;
	__u8 type;
	__u8 flags;
	__u8 tcp_a; /* sl_tcp_seen bits sent by side a */
	__u8 tcp_b;
	__u8 opener_is_b; /* the side that sent the first packet */
	__u8 pol;         /* sl_ct_pol: whose policy on this node has allowed the flow */
	__u8 pad[2];
	__u32 tun_ip;   /* tunnel peer (node IP) */
	__u32 nat_addr; /* NAT_FWD: backend; NAT_REV: frontend */
	__u16 nat_port;
	__u16 snat_port; /* hairpin: NAT_FWD the source to use; NAT_REV the client to restore */
	__u32 snat_addr;
};
SL_ASSERT_SIZE(struct sl_ct, 40);

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sl_ct_key);
	__type(value, struct sl_ct);
	__uint(max_entries, 512000); /* Calico's bpfMapSizeConntrack default */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_ct_v1 SEC(".maps");

struct sl_tuple {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
};

/* Builds the normalised key; returns 1 when the packet's source is side b. */
SL_INLINE int sl_ct_key_of(const struct sl_tuple *t, struct sl_ct_key *k)
{
	__u32 s = bpf_ntohl(t->saddr), d = bpf_ntohl(t->daddr);
	int src_is_b = s > d || (s == d && bpf_ntohs(t->sport) > bpf_ntohs(t->dport));
	__builtin_memset(k, 0, sizeof(*k));
	k->proto = t->proto;
	if (src_is_b) {
		k->addr_a = t->daddr;
		k->port_a = t->dport;
		k->addr_b = t->saddr;
		k->port_b = t->sport;
	} else {
		k->addr_a = t->saddr;
		k->port_a = t->sport;
		k->addr_b = t->daddr;
		k->port_b = t->dport;
	}
	return src_is_b;
}

SL_INLINE void sl_ct_touch(struct sl_ct *ct, int src_is_b, __u8 tcp_seen)
{
	ct->last_seen_ns = bpf_ktime_get_coarse_ns();
	if (tcp_seen) {
		if (src_is_b)
			ct->tcp_b |= tcp_seen;
		else
			ct->tcp_a |= tcp_seen;
	}
}

/* What a new conntrack entry holds besides its tuple. */
struct sl_ct_new {
	__u8 type;
	__u8 flags;
	__u8 tcp_seen;
	__u8 pol;
	__u32 tun_ip;
	__u32 nat_addr;
	__u16 nat_port;
	__u16 snat_port;
	__u32 snat_addr;
};

SL_SUBPROG int sl_ct_create(const struct sl_tuple *t, const struct sl_ct_new *n)
{
	struct sl_ct_key k;
	int src_is_b = sl_ct_key_of(t, &k);
	__u64 now = bpf_ktime_get_coarse_ns();
	struct sl_ct v = {
		.created_ns = now,
		.last_seen_ns = now,
		.type = n->type,
		.flags = n->flags,
		.opener_is_b = src_is_b,
		.pol = n->pol,
		.tun_ip = n->tun_ip,
		.nat_addr = n->nat_addr,
		.nat_port = n->nat_port,
		.snat_addr = n->snat_addr,
		.snat_port = n->snat_port,
	};
	if (src_is_b)
		v.tcp_b = n->tcp_seen;
	else
		v.tcp_a = n->tcp_seen;
	return bpf_map_update_elem(&sl_ct_v1, &k, &v, BPF_ANY);
}

/* Whether a TCP connection has ended, from what each side sent: a reset, or a FIN from both. */
SL_INLINE int sl_tcp_closed(__u8 opener, __u8 peer)
{
	return ((opener | peer) & SL_TCP_RST) || ((opener & SL_TCP_FIN) && (peer & SL_TCP_FIN));
}

SL_INLINE int sl_ct_key_eq(const struct sl_ct_key *x, const struct sl_ct_key *y)
{
	return x->addr_a == y->addr_a && x->addr_b == y->addr_b && x->port_a == y->port_a && x->port_b == y->port_b &&
	       x->proto == y->proto;
}

/* The key of the other entry of a NAT flow, as userspace's expiry pairs them. Returns 0 for an
 * entry without one (no NAT here, or the NAT is another node's). */
SL_INLINE int sl_ct_pair_key(const struct sl_ct_key *k, const struct sl_ct *ct, struct sl_ct_key *pk)
{
	if (ct->type == SL_CT_NORMAL || !ct->nat_addr)
		return 0;
	struct sl_tuple t = { .daddr = ct->nat_addr, .dport = ct->nat_port, .proto = k->proto };
	if (ct->snat_addr) {
		/* Hairpin: the other entry starts at the address that stood in for the client. */
		t.saddr = ct->snat_addr;
		t.sport = ct->snat_port;
	} else if (ct->opener_is_b) {
		t.saddr = k->addr_b;
		t.sport = k->port_b;
	} else {
		t.saddr = k->addr_a;
		t.sport = k->port_a;
	}
	sl_ct_key_of(&t, pk);
	return 1;
}

/* An opening SYN on the tuple of a connection that has ended starts a new connection (a client
 * reusing its port before the old entries expire). As the kernel's conntrack does, the old flow
 * is forgotten, both entries of a NAT flow, so the SYN is a first packet again: a backend chosen
 * from the Service as it is now, policy judged afresh, TCP state from the start. A SYN while the
 * connection is still open (a retransmit, a half-close) keeps it. Returns 1 when it was removed. */
SL_SUBPROG int sl_ct_reopen(const struct sl_ct_key *k, struct sl_ct *ct)
{
	__u8 opener = ct->opener_is_b ? ct->tcp_b : ct->tcp_a;
	__u8 peer = ct->opener_is_b ? ct->tcp_a : ct->tcp_b;
	struct sl_ct_key pk;
	int paired = sl_ct_pair_key(k, ct, &pk);
	if (paired) {
		/* Each entry of a NAT flow sees mostly one side's packets (a reply's translation hits the
		 * other entry), so only both together tell whether both sides closed. The other entry
		 * counts only while it points back: a later flow may have taken its key (the same client
		 * port to the same backend through another frontend), and that flow is not ours to end. */
		struct sl_ct *pair = bpf_map_lookup_elem(&sl_ct_v1, &pk);
		struct sl_ct_key back;
		if (pair && pair->type != ct->type && sl_ct_pair_key(&pk, pair, &back) && sl_ct_key_eq(&back, k)) {
			opener |= pair->opener_is_b ? pair->tcp_b : pair->tcp_a;
			peer |= pair->opener_is_b ? pair->tcp_a : pair->tcp_b;
		} else {
			paired = 0;
		}
	}
	if (!sl_tcp_closed(opener, peer))
		return 0;
	if (paired)
		bpf_map_delete_elem(&sl_ct_v1, &pk);
	bpf_map_delete_elem(&sl_ct_v1, k);
	return 1;
}
