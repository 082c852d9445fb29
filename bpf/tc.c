/* The Service datapath: tc programs for workload (pod) interfaces and host data interfaces.
 *
 *   sl_from_wep  ingress of a pod's host-side veth (packets from the pod)
 *   sl_to_wep    egress of a pod's host-side veth (packets to the pod)
 *   sl_from_hep  ingress of a host data interface (packets from the underlay)
 *   sl_to_hep    egress of a host data interface
 *
 * A flow's first packet looks up the Service frontend, picks a backend and records the flow
 * in conntrack; later packets only consult conntrack. NodePort traffic whose backend is on
 * another node goes there inside Sluice's VXLAN tunnel with the client's address intact.
 * Network policy judges a flow's first packet on each workload interface it crosses (the
 * opener's egress table, after Service DNAT; the responder's ingress table); conntrack remembers
 * the verdicts, so established packets only test a bit. */
#include "common.h"
#include "config.h"
#include "counters.h"
#include "packet.h"
#include "routes.h"
#include "nat.h"
#include "conntrack.h"
#include "vxlan.h"
#include "icmp.h"
#include "forward.h"
#include "policy.h"

enum sl_role {
	SL_FROM_WEP = 0,
	SL_TO_WEP = 1,
	SL_FROM_HEP = 2,
	SL_TO_HEP = 3,
};

/* What one packet's processing carries between the program and its sub-programs. */
struct sl_ctx {
	struct sl_pkt p;
	struct sl_tuple t;
	struct sl_nat_fe fe;
	struct sl_counters *c;
	struct sl_ep *ep; /* the workload behind this interface, for new flows */
	__u32 role;
	__u32 from_tunnel; /* decapsulated from Sluice's tunnel */
	__u32 tun_src;     /* the tunnel's sender (a node IP) */
};

/* Counter hook ids: tc ingress/egress per role, as in counters.h. */
SL_INLINE __u32 sl_hook_of(int role)
{
	return role == SL_FROM_WEP || role == SL_FROM_HEP ? SL_HOOK_TC_INGRESS : SL_HOOK_TC_EGRESS;
}

SL_INLINE int sl_drop(struct sl_counters *c, enum sl_counter why)
{
	sl_count(c, why);
	return TC_ACT_SHOT;
}

/* Rejects a connection to a Service with no backend, as kube-proxy does: ICMP port unreachable
 * from the address the client used, sent back out of the interface the packet came in on. */
SL_INLINE int sl_reject(struct __sk_buff *skb, struct sl_ctx *x)
{
	sl_count(x->c, SL_CNT_DROP_NO_BACKEND);
	if (sl_icmp_reply(skb, &x->p, SL_ICMP_WHAT(ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, 0), x->p.daddr))
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

/* Sends the packet to another node inside the tunnel. */
SL_SUBPROG int sl_to_tunnel(struct __sk_buff *skb, struct sl_ctx *x, __u32 node_ip)
{
	if (bpf_ntohs(x->p.ip.tot_len) > sl_tunnel_mtu && (x->p.ip.frag_off & bpf_htons(0x4000))) {
		/* Too big for the tunnel and not to be fragmented: tell the client the path MTU. */
		sl_count(x->c, SL_CNT_DROP_OTHER);
		if (sl_icmp_reply(skb, &x->p, SL_ICMP_WHAT(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, sl_tunnel_mtu), sl_host_ip))
			return TC_ACT_SHOT;
		return bpf_redirect(skb->ifindex, 0);
	}
	if (sl_vxlan_encap(skb, node_ip, bpf_ntohs(x->p.sport) ^ bpf_ntohs(x->p.dport)))
		return sl_drop(x->c, SL_CNT_DROP_OTHER);
	sl_count(x->c, SL_CNT_NAT);
	return sl_forward(skb, NULL, sl_host_ip, node_ip, 0);
}

/* Sends a packet back into the pod it came from: the MACs swap roles. */
SL_INLINE int sl_hairpin_out(struct __sk_buff *skb, struct sl_ctx *x)
{
	struct ethhdr eth;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)))
		return sl_drop(x->c, SL_CNT_DROP_MALFORMED);
	if (bpf_skb_store_bytes(skb, 0, eth.h_source, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, eth.h_dest, ETH_ALEN, 0))
		return sl_drop(x->c, SL_CNT_DROP_OTHER);
	return bpf_redirect(skb->ifindex, 0);
}

/* Whether the endpoint behind this interface sends the packet (or receives it). */
SL_INLINE int sl_local_sends(int role)
{
	return role == SL_FROM_WEP || role == SL_TO_HEP;
}

/* The flow as its opener sent it, after DNAT, from one of its packets. */
SL_INLINE void sl_flow_of(struct sl_ctx *x, int forward, __u32 daddr, __u16 dport, struct sl_flow *f)
{
	f->proto = x->p.proto;
	f->has_ports = x->p.has_ports;
	f->icmp_type = x->p.icmp_type;
	f->icmp_code = x->p.icmp_code;
	if (forward) {
		f->saddr = x->p.saddr;
		f->sport = bpf_ntohs(x->p.sport);
	} else {
		f->saddr = x->p.daddr;
		f->sport = bpf_ntohs(x->p.dport);
	}
	f->daddr = daddr;
	f->dport = bpf_ntohs(dport);
	if (!f->has_ports) {
		f->sport = 0;
		f->dport = 0;
	}
}

/* The local workload's verdict on a new flow it opens (egress) or receives (ingress). */
SL_INLINE int sl_wep_allows(struct __sk_buff *skb, struct sl_ctx *x, const struct sl_flow *f)
{
	return sl_policy_allows(skb->ifindex, x->ep, f, !sl_local_sends(x->role));
}

/* A pod reaching itself through its own Service. Its kernel would refuse a packet from its own
 * address, so the source becomes this node's address (as kube-proxy masquerades hairpin traffic),
 * and conntrack remembers both translations for the replies. */
SL_SUBPROG int sl_new_hairpin_flow(struct __sk_buff *skb, struct sl_ctx *x, struct sl_nat_be *be)
{
	struct sl_ct_new ct = {
		.type = SL_CT_NAT_FWD,
		.flags = SL_CT_F_HAIRPIN,
		.tcp_seen = x->p.tcp_seen,
		.nat_addr = be->addr,
		.nat_port = be->port,
		.snat_addr = sl_host_ip,
		.snat_port = x->t.sport,
	};
	if (sl_ct_create(&x->t, &ct))
		return sl_drop(x->c, SL_CNT_DROP_OTHER);
	struct sl_tuple rev = { .saddr = sl_host_ip, .daddr = be->addr, .sport = x->t.sport, .dport = be->port, .proto = x->t.proto };
	ct.type = SL_CT_NAT_REV;
	ct.nat_addr = x->t.daddr;
	ct.nat_port = x->t.dport;
	ct.snat_addr = x->t.saddr;
	ct.snat_port = x->t.sport;
	if (sl_ct_create(&rev, &ct))
		return sl_drop(x->c, SL_CNT_DROP_OTHER);
	if (sl_rewrite(skb, &x->p, 0, be->addr, be->port) || sl_rewrite(skb, &x->p, 1, sl_host_ip, x->t.sport))
		return sl_drop(x->c, SL_CNT_DROP_OTHER);
	sl_count(x->c, SL_CNT_NAT);
	return sl_hairpin_out(skb, x);
}

/* A new flow to a frontend (x->fe): pick a backend and record the flow. */
SL_SUBPROG int sl_new_nat_flow(struct __sk_buff *skb, struct sl_ctx *x)
{
	int external = x->role == SL_FROM_HEP;
	if (x->fe.flags & SL_FE_SRC_DENIED)
		return sl_drop(x->c, SL_CNT_DROP_POLICY);
	if (x->fe.count == 0)
		return sl_reject(skb, x);

	__u32 n = x->fe.count;
	/* Only local backends: traffic another node forwarded to us (it chose this node), external
	 * traffic under externalTrafficPolicy Local, pod traffic under internalTrafficPolicy Local. */
	if (x->from_tunnel || (external && (x->fe.flags & SL_FE_EXT_LOCAL)) || (!external && (x->fe.flags & SL_FE_INT_LOCAL)))
		n = x->fe.local_count;
	struct sl_nat_be be;
	if (sl_pick_backend(&x->fe, n, x->p.saddr, &be))
		return sl_drop(x->c, SL_CNT_DROP_NO_BACKEND);

	struct sl_ct_new ct = { .type = SL_CT_NAT_FWD, .tcp_seen = x->p.tcp_seen };
	struct sl_route *rt = sl_route_lookup(be.addr);
	if (external && !x->from_tunnel && rt && (rt->flags & SL_RT_REMOTE_WL)) {
		/* NodePort/LoadBalancer with the backend elsewhere: its node does the NAT. */
		ct.flags = SL_CT_F_FWD_TUNNEL | SL_CT_F_EXTERNAL;
		ct.tun_ip = rt->next_hop;
		sl_ct_create(&x->t, &ct);
		return sl_to_tunnel(skb, x, ct.tun_ip);
	}

	if (x->role == SL_FROM_WEP) {
		struct sl_flow f;
		sl_flow_of(x, 1, be.addr, be.port, &f);
		if (!sl_wep_allows(skb, x, &f))
			return sl_drop(x->c, SL_CNT_DROP_POLICY);
		ct.pol = SL_CT_POL_OPENER;
	}
	if (be.addr == x->p.saddr && x->role == SL_FROM_WEP)
		return sl_new_hairpin_flow(skb, x, &be);
	if (x->from_tunnel)
		ct.flags = SL_CT_F_FROM_TUNNEL | (sl_dsr ? SL_CT_F_DSR : SL_CT_F_REPLY_TUNNEL);
	if (external)
		ct.flags |= SL_CT_F_EXTERNAL;
	ct.tun_ip = x->tun_src;
	ct.nat_addr = be.addr;
	ct.nat_port = be.port;
	if (sl_ct_create(&x->t, &ct))
		return sl_drop(x->c, SL_CNT_DROP_OTHER);
	struct sl_tuple rev = { .saddr = x->t.saddr, .daddr = be.addr, .sport = x->t.sport, .dport = be.port, .proto = x->t.proto };
	ct.type = SL_CT_NAT_REV;
	ct.nat_addr = x->t.daddr;
	ct.nat_port = x->t.dport;
	if (sl_ct_create(&rev, &ct))
		return sl_drop(x->c, SL_CNT_DROP_OTHER);
	if (sl_rewrite(skb, &x->p, 0, be.addr, be.port))
		return sl_drop(x->c, SL_CNT_DROP_OTHER);
	sl_count(x->c, SL_CNT_NAT);
	return sl_forward(skb, &x->p, x->p.saddr, x->p.daddr, 1);
}

/* A new flow without Service NAT through a workload's interface, or to or from this host through
 * a host endpoint: the endpoint's policy judges it, and conntrack remembers the verdict so
 * replies and later packets pass. */
SL_SUBPROG int sl_new_wep_flow(struct __sk_buff *skb, struct sl_ctx *x)
{
	struct sl_flow f;
	sl_flow_of(x, 1, x->p.daddr, x->p.dport, &f);
	if (!sl_wep_allows(skb, x, &f))
		return sl_drop(x->c, SL_CNT_DROP_POLICY);
	struct sl_ct_new ct = {
		.type = SL_CT_NORMAL,
		.flags = (x->role == SL_FROM_HEP || x->role == SL_TO_HEP) ? SL_CT_F_HOST : 0,
		.tcp_seen = x->p.tcp_seen,
		.pol = sl_local_sends(x->role) ? SL_CT_POL_OPENER : SL_CT_POL_RESPONDER,
	};
	sl_ct_create(&x->t, &ct);
	sl_count(x->c, SL_CNT_ACCEPTED);
	return TC_ACT_OK;
}

/* A new flow forwarded through a host interface (neither end is this host) whose host endpoint
 * has applyOnForward policy: that policy judges it in the direction it crosses. */
SL_SUBPROG int sl_new_fwd_flow(struct __sk_buff *skb, struct sl_ctx *x, struct sl_ep *hep)
{
	struct sl_flow f;
	int in = x->role == SL_FROM_HEP;
	sl_flow_of(x, 1, x->p.daddr, x->p.dport, &f);
	__u32 start = in ? hep->fwd_in_start : hep->fwd_eg_start;
	__u32 len = in ? hep->fwd_in_len : hep->fwd_eg_len;
	if (!sl_policy_eval(skb->ifindex, start, len, &f, in))
		return sl_drop(x->c, SL_CNT_DROP_POLICY);
	struct sl_ct_new ct = {
		.type = SL_CT_NORMAL,
		.tcp_seen = x->p.tcp_seen,
		.pol = in ? SL_CT_POL_FWD_IN : SL_CT_POL_FWD_OUT,
	};
	sl_ct_create(&x->t, &ct);
	sl_count(x->c, SL_CNT_ACCEPTED);
	return TC_ACT_OK;
}

/* Whether host endpoint policy applies to a packet on a host interface: only traffic to (from
 * the underlay) or from (to the underlay) this host's own addresses, and never Sluice's own
 * tunnel, which the datapath itself sends. */
SL_INLINE int sl_is_tunnel_port(struct sl_pkt *p)
{
	return p->proto == IPPROTO_UDP && (p->dport == bpf_htons(sl_vxlan_port) || p->sport == bpf_htons(sl_vxlan_port));
}

SL_INLINE int sl_host_local(struct sl_pkt *p, int role)
{
	__u32 local = role == SL_FROM_HEP ? p->daddr : p->saddr;
	return (sl_route_flags(local) & SL_RT_LOCAL_HOST) != 0;
}

/* Frontend lookup: the exact address first, then the NodePort wildcard when the destination is
 * a node address (this node's, or any node's for traffic another node forwarded to us). */
SL_INLINE struct sl_nat_fe *sl_frontend(struct sl_ctx *x)
{
	struct sl_nat_fe *fe = sl_fe_lookup(x->p.daddr, x->p.dport, x->p.proto, x->p.saddr);
	if (fe)
		return fe;
	__u32 rf = sl_route_flags(x->p.daddr);
	if (rf & SL_RT_LOCAL_HOST || (x->from_tunnel && (rf & SL_RT_REMOTE_HOST)))
		return sl_fe_lookup(0, x->p.dport, x->p.proto, x->p.saddr);
	return NULL;
}

/* ICMP errors about a NATed flow: show the client the frontend it used. */
SL_SUBPROG int sl_icmp_error(struct __sk_buff *skb, struct sl_ctx *x)
{
	struct iphdr inner;
	__u16 ports[2];
	if (sl_icmp_inner(skb, &x->p, &inner, ports))
		return TC_ACT_OK;
	struct sl_tuple t = { .saddr = inner.saddr, .daddr = inner.daddr, .sport = ports[0], .dport = ports[1], .proto = inner.protocol };
	struct sl_ct_key k;
	sl_ct_key_of(&t, &k);
	struct sl_ct *ct = bpf_map_lookup_elem(&sl_ct_v1, &k);
	if (!ct || ct->type != SL_CT_NAT_REV)
		return TC_ACT_OK;
	if (sl_icmp_translate(skb, &x->p, &inner, ct->nat_addr, ct->nat_port))
		return sl_drop(x->c, SL_CNT_DROP_OTHER);
	sl_count(x->c, SL_CNT_NAT);
	return TC_ACT_OK;
}

/* A packet of a flow conntrack knows. */
SL_SUBPROG int sl_established(struct __sk_buff *skb, struct sl_ctx *x, struct sl_ct *ct, int src_is_b)
{
	int forward = src_is_b == ct->opener_is_b;
	if (x->role == SL_FROM_WEP || x->role == SL_TO_WEP || (ct->flags & SL_CT_F_HOST)) {
		__u8 bit = sl_local_sends(x->role) == forward ? SL_CT_POL_OPENER : SL_CT_POL_RESPONDER;
		if (!(ct->pol & bit)) {
			/* First packet here, or the endpoint's policy changed since: judge the flow. */
			struct sl_flow f;
			__u32 daddr = forward ? x->p.daddr : x->p.saddr;
			__u16 dport = forward ? x->p.dport : x->p.sport;
			if (ct->type == SL_CT_NAT_FWD) {
				daddr = ct->nat_addr;
				dport = ct->nat_port;
			}
			sl_flow_of(x, forward, daddr, dport, &f);
			x->ep = sl_ep_lookup(skb->ifindex);
			if (!sl_policy_allows(skb->ifindex, x->ep, &f, bit == SL_CT_POL_RESPONDER))
				return sl_drop(x->c, SL_CNT_DROP_POLICY);
			ct->pol |= bit;
		}
	} else if (sl_fwd_policy && forward && (x->role == SL_FROM_HEP || x->role == SL_TO_HEP) && !x->from_tunnel &&
		   !sl_is_tunnel_port(&x->p)) {
		/* Forwarded through a host endpoint that has applyOnForward policy: judged once per
		 * direction it crosses (replies pass). */
		int in = x->role == SL_FROM_HEP;
		__u8 bit = in ? SL_CT_POL_FWD_IN : SL_CT_POL_FWD_OUT;
		if (!(ct->pol & bit)) {
			struct sl_ep *hep = sl_ep_lookup(skb->ifindex);
			if (hep && (hep->flags & (in ? SL_EP_FWD_IN_POLICY : SL_EP_FWD_EG_POLICY))) {
				struct sl_flow f;
				__u32 daddr = x->p.daddr;
				__u16 dport = x->p.dport;
				if (ct->type == SL_CT_NAT_FWD) {
					daddr = ct->nat_addr;
					dport = ct->nat_port;
				}
				sl_flow_of(x, 1, daddr, dport, &f);
				if (!sl_policy_eval(skb->ifindex, in ? hep->fwd_in_start : hep->fwd_eg_start,
						    in ? hep->fwd_in_len : hep->fwd_eg_len, &f, in))
					return sl_drop(x->c, SL_CNT_DROP_POLICY);
			}
			ct->pol |= bit;
		}
	}
	sl_ct_touch(ct, src_is_b, x->p.tcp_seen);
	sl_count(x->c, SL_CNT_ACCEPTED);
	if (ct->type == SL_CT_NAT_FWD) {
		if (forward) {
			if (ct->flags & SL_CT_F_FWD_TUNNEL)
				return sl_to_tunnel(skb, x, ct->tun_ip);
			if (ct->flags & SL_CT_F_HAIRPIN) {
				__u32 sa = ct->snat_addr;
				__u16 sp = ct->snat_port;
				if (sl_rewrite(skb, &x->p, 0, ct->nat_addr, ct->nat_port) || sl_rewrite(skb, &x->p, 1, sa, sp))
					return sl_drop(x->c, SL_CNT_DROP_OTHER);
				sl_count(x->c, SL_CNT_NAT);
				return sl_hairpin_out(skb, x);
			}
			if (sl_rewrite(skb, &x->p, 0, ct->nat_addr, ct->nat_port))
				return sl_drop(x->c, SL_CNT_DROP_OTHER);
			sl_count(x->c, SL_CNT_NAT);
			return sl_forward(skb, &x->p, x->p.saddr, x->p.daddr, 1);
		}
		/* A reply already carrying the frontend address; from the tunnel its source is one of
		 * our addresses, which the kernel's input path would refuse. */
		if (x->from_tunnel)
			return sl_forward(skb, &x->p, x->p.saddr, x->p.daddr, 1);
		return TC_ACT_OK;
	}
	if (ct->type == SL_CT_NAT_REV && !forward) {
		__u8 flags = ct->flags;
		__u32 tun = ct->tun_ip;
		if (flags & SL_CT_F_HAIRPIN) {
			__u32 ca = ct->snat_addr;
			__u16 cp = ct->snat_port;
			if (sl_rewrite(skb, &x->p, 1, ct->nat_addr, ct->nat_port) || sl_rewrite(skb, &x->p, 0, ca, cp))
				return sl_drop(x->c, SL_CNT_DROP_OTHER);
			sl_count(x->c, SL_CNT_NAT);
			return sl_hairpin_out(skb, x);
		}
		if (sl_rewrite(skb, &x->p, 1, ct->nat_addr, ct->nat_port))
			return sl_drop(x->c, SL_CNT_DROP_OTHER);
		sl_count(x->c, SL_CNT_NAT);
		if (flags & SL_CT_F_REPLY_TUNNEL)
			return sl_to_tunnel(skb, x, tun);
		if (x->role == SL_FROM_WEP || x->role == SL_FROM_HEP)
			return sl_forward(skb, &x->p, x->p.saddr, x->p.daddr, 1);
	}
	return TC_ACT_OK;
}

SL_INLINE int sl_tc(struct __sk_buff *skb, int role)
{
	struct sl_ctx x = { .role = role };
	x.c = sl_counters_get(skb->ifindex, sl_hook_of(role));
	sl_count(x.c, SL_CNT_PACKETS);
	if (x.c)
		x.c->c[SL_CNT_BYTES] += skb->len;

	int pr = sl_parse(skb, &x.p);
	if (pr == SL_PARSE_NOT_IPV4) {
		sl_count(x.c, SL_CNT_OTHER);
		return TC_ACT_OK;
	}
	if (pr != SL_PARSE_OK)
		return sl_drop(x.c, SL_CNT_DROP_MALFORMED);
	sl_count(x.c, SL_CNT_IPV4);

	if (role == SL_FROM_HEP && sl_is_our_tunnel(skb, &x.p, &x.tun_src)) {
		if (sl_vxlan_decap(skb))
			return sl_drop(x.c, SL_CNT_DROP_MALFORMED);
		if (sl_parse(skb, &x.p) != SL_PARSE_OK)
			return sl_drop(x.c, SL_CNT_DROP_MALFORMED);
		x.from_tunnel = 1;
	}

	switch (x.p.proto) {
	case IPPROTO_TCP:
		sl_count(x.c, SL_CNT_TCP);
		break;
	case IPPROTO_UDP:
		sl_count(x.c, SL_CNT_UDP);
		break;
	case IPPROTO_ICMP:
		sl_count(x.c, SL_CNT_ICMP);
		/* Echo is a flow (its identifier stands for both ports); errors belong to the flow
		 * they quote. */
		if (x.p.icmp_type != ICMP_ECHO && x.p.icmp_type != ICMP_ECHOREPLY) {
			sl_count(x.c, SL_CNT_ACCEPTED);
			return sl_icmp_error(skb, &x);
		}
		break;
	default:
		/* SCTP and others go to the kernel untouched (a documented limitation). */
		sl_count(x.c, SL_CNT_OTHER);
		return TC_ACT_OK;
	}
	if (x.p.frag) {
		/* A non-first fragment has no ports to translate; the kernel handles it. */
		sl_count(x.c, SL_CNT_ACCEPTED);
		return TC_ACT_OK;
	}

	x.t.saddr = x.p.saddr;
	x.t.daddr = x.p.daddr;
	x.t.sport = x.p.sport;
	x.t.dport = x.p.dport;
	x.t.proto = x.p.proto;
	struct sl_ct_key k;
	int src_is_b = sl_ct_key_of(&x.t, &k);
	int opening_syn = x.p.proto == IPPROTO_TCP && (x.p.tcp_seen & (SL_TCP_SYN | SL_TCP_ACK)) == SL_TCP_SYN;
	struct sl_ct *ct = bpf_map_lookup_elem(&sl_ct_v1, &k);
	if (ct && opening_syn && sl_ct_reopen(&k, ct))
		ct = NULL;
	if (ct) {
		skb->mark |= SL_MARK_SEEN;
		return sl_established(skb, &x, ct, src_is_b);
	}
	/* A TCP segment conntrack does not know that is not an opening SYN (a SYN-ACK included):
	 * part of a connection the kernel carried before the eBPF dataplane took over, whose NAT
	 * (kube-proxy's) lives on in the kernel's conntrack. Left to the kernel untouched, so that
	 * enabling eBPF mode breaks no connection, not even one mid-handshake; the node's guard
	 * rule (SL_MARK_KERNEL_PATH) drops it there unless the kernel knows the connection. */
	if (x.p.proto == IPPROTO_TCP && !opening_syn) {
		skb->mark |= SL_MARK_KERNEL_PATH;
		sl_count(x.c, SL_CNT_KERNEL_PATH);
		return TC_ACT_OK;
	}

	if (role == SL_FROM_WEP || role == SL_TO_WEP) {
		x.ep = sl_ep_lookup(skb->ifindex);
		if (role == SL_FROM_WEP && x.ep && (x.ep->flags & SL_EP_RPF) && x.ep->addr != x.p.saddr)
			return sl_drop(x.c, SL_CNT_DROP_RPF);
	}
	/* Host endpoint policy: preDNAT on what arrives, before Service NAT; the rest below. */
	struct sl_ep *hep = NULL;
	if (((role == SL_FROM_HEP && !x.from_tunnel) || role == SL_TO_HEP) && !sl_is_tunnel_port(&x.p)) {
		struct sl_ep *ep = sl_ep_lookup(skb->ifindex);
		if (ep && (ep->flags & SL_EP_HOST)) {
			asm volatile("" : "+r"(ep));
			hep = ep;
		}
	}
	if (role == SL_FROM_HEP && hep && (hep->flags & SL_EP_PRE_POLICY)) {
		struct sl_flow f;
		sl_flow_of(&x, 1, x.p.daddr, x.p.dport, &f);
		if (!sl_policy_eval(skb->ifindex, hep->pre_start, hep->pre_len, &f, 1))
			return sl_drop(x.c, SL_CNT_DROP_POLICY);
	}
	if (role == SL_FROM_WEP || role == SL_FROM_HEP) {
		struct sl_nat_fe *fe = sl_frontend(&x);
		if (fe) {
			x.fe = *fe;
			skb->mark |= SL_MARK_SEEN;
			return sl_new_nat_flow(skb, &x);
		}
	}
	if (hep) {
		if (sl_host_local(&x.p, role)) {
			/* Keeps clang from turning the choice into arithmetic on the pointer. */
			asm volatile("" : "+r"(hep));
			x.ep = hep;
		} else if (hep->flags & (role == SL_FROM_HEP ? SL_EP_FWD_IN_POLICY : SL_EP_FWD_EG_POLICY)) {
			skb->mark |= SL_MARK_SEEN;
			return sl_new_fwd_flow(skb, &x, hep);
		}
	}
	if (x.ep) {
		skb->mark |= SL_MARK_SEEN;
		return sl_new_wep_flow(skb, &x);
	}
	/* A flow the dataplane neither translates nor judges: the kernel's, conntrack included
	 * (kube-proxy's rules, while they are still there, serve what no frontend matched yet). */
	sl_count(x.c, SL_CNT_ACCEPTED);
	if (x.from_tunnel)
		return sl_forward(skb, &x.p, x.p.saddr, x.p.daddr, 1);
	return TC_ACT_OK;
}

/* The kernel's overlay device (vxlan.sl, vxlan.calico, tunl0), where pod traffic from other
 * nodes arrives decapsulated. The programs on the pods' interfaces serve these flows; here a
 * packet only learns which path it is on, as the kernel's conntrack must know: the eBPF
 * dataplane's (a flow conntrack knows, or a new one: bypass the kernel's conntrack) or the
 * kernel's (a connection from before eBPF mode: its replies need the kernel's NAT). */
SEC("tc")
int sl_from_overlay(struct __sk_buff *skb)
{
	struct sl_pkt p;
	if (sl_parse(skb, &p) != SL_PARSE_OK || p.frag)
		return TC_ACT_OK;
	if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP && p.proto != IPPROTO_ICMP)
		return TC_ACT_OK;
	struct sl_tuple t = { .saddr = p.saddr, .daddr = p.daddr, .sport = p.sport, .dport = p.dport, .proto = p.proto };
	struct sl_ct_key k;
	sl_ct_key_of(&t, &k);
	if (!bpf_map_lookup_elem(&sl_ct_v1, &k) && p.proto == IPPROTO_TCP &&
	    (p.tcp_seen & (SL_TCP_SYN | SL_TCP_ACK)) != SL_TCP_SYN)
		skb->mark |= SL_MARK_KERNEL_PATH;
	else
		skb->mark |= SL_MARK_SEEN;
	return TC_ACT_OK;
}

SEC("tc")
int sl_from_wep(struct __sk_buff *skb)
{
	return sl_tc(skb, SL_FROM_WEP);
}

SEC("tc")
int sl_to_wep(struct __sk_buff *skb)
{
	return sl_tc(skb, SL_TO_WEP);
}

SEC("tc")
int sl_from_hep(struct __sk_buff *skb)
{
	return sl_tc(skb, SL_FROM_HEP);
}

SEC("tc")
int sl_to_hep(struct __sk_buff *skb)
{
	return sl_tc(skb, SL_TO_HEP);
}

char LICENSE[] SEC("license") = "GPL";
