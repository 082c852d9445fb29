/* Network policy: rule tables that a bounded loop walks for a flow's first packet.
 *
 *   sl_ep_v2      interface (ifindex) -> the endpoint behind it: its address, and where its
 *                 rule tables start in sl_rules_v1 and how long they are (ingress, egress; for
 *                 host endpoints also forwarded traffic and preDNAT)
 *   sl_rules_v1   an array of compiled rules; userspace writes a table into free slots, then
 *                 points the endpoint at it with one update, so no packet meets half a policy
 *   sl_ipsets_v1  IP sets (selectors, nets, named ports) as one LPM trie keyed by set id
 *   sl_log_v1     ring buffer of Log-action events for the agent
 *
 * Tiers, orders, Pass and default actions are flattened by userspace (src/policy/compile.ts)
 * into one table per endpoint and direction: Pass jumps to the next tier's first rule, a tier's
 * end is a match-all rule with its default action, and the table ends with the profile's
 * verdict. Established flows never come here: conntrack remembers which side's policy allowed
 * the flow (sl_ct.pol). */
#pragma once
#include "common.h"
#include "packet.h"

/* Most rules one evaluation may step through: the verifier-safe bound, and the limit userspace
 * enforces per table. */
#define SL_MAX_RULE_STEPS 8192
#define SL_RULE_PORTS 4

enum sl_ep_flags {
	SL_EP_RPF = 1 << 0,           /* packets from this workload must come from its address */
	SL_EP_HOST = 1 << 1,          /* a host endpoint (policy for traffic to/from the node) */
	SL_EP_IN_POLICY = 1 << 2,     /* the ingress table applies */
	SL_EP_EG_POLICY = 1 << 3,     /* the egress table applies */
	SL_EP_FWD_IN_POLICY = 1 << 4, /* host endpoint: applyOnForward policy for forwarded traffic in */
	SL_EP_FWD_EG_POLICY = 1 << 5, /* ... and out */
	SL_EP_PRE_POLICY = 1 << 6,    /* host endpoint: preDNAT policy, before Service NAT */
};

struct sl_ep {
	__u32 addr; /* the workload's IPv4 address (RPF) */
	__u32 flags;
	__u32 in_start;
	__u32 in_len;
	__u32 eg_start;
	__u32 eg_len;
	__u32 fwd_in_start;
	__u32 fwd_in_len;
	__u32 fwd_eg_start;
	__u32 fwd_eg_len;
	__u32 pre_start;
	__u32 pre_len;
};
SL_ASSERT_SIZE(struct sl_ep, 48);

/* Set by userspace while some host endpoint has applyOnForward policy: only then do established
 * flows crossing host interfaces need the forwarded-traffic verdict (a global: no lookup). */
volatile __u32 sl_fwd_policy = 0;

enum sl_rule_action {
	SL_ACT_NONE = 0, /* an unused slot: no match */
	SL_ACT_ALLOW = 1,
	SL_ACT_DENY = 2,
	SL_ACT_PASS = 3, /* continue at rule `jump` (the next tier) */
	SL_ACT_LOG = 4,  /* emit an event and continue */
};

enum sl_rule_flags {
	SL_R_ICMP_TYPE = 1 << 0,
	SL_R_ICMP_CODE = 1 << 1,
	SL_R_NOT_ICMP_TYPE = 1 << 2,
	SL_R_NOT_ICMP_CODE = 1 << 3,
};

/* Ports in host byte order, inclusive. */
struct sl_port_range {
	__u16 lo;
	__u16 hi;
};

struct sl_rule {
	__u8 action;
	__u8 proto;     /* 0 = any */
	__u8 not_proto; /* 0 = none */
	__u8 flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 not_icmp_type;
	__u8 not_icmp_code;
	__u8 n_sport; /* ranges used in sport[] ... */
	__u8 n_not_sport;
	__u8 n_dport;
	__u8 n_not_dport;
	__u32 jump; /* Pass: absolute index of the next tier's first rule */
	__u32 id;   /* identifies the rule in logs and dumps */
	/* IP set ids, 0 = unused. Positive sets must all contain the address, negative ones none. */
	__u32 src_set[2];
	__u32 src_not_set[2];
	__u32 dst_set[2];
	__u32 dst_not_set[2];
	/* Named destination ports: a set keyed by (protocol, port, address). A destination port
	 * matches if it is in dport[] or the (protocol, port, address) is in this set. */
	__u32 dst_named_set;
	__u32 pad[2];
	struct sl_port_range sport[SL_RULE_PORTS];
	struct sl_port_range not_sport[SL_RULE_PORTS];
	struct sl_port_range dport[SL_RULE_PORTS];
	struct sl_port_range not_dport[SL_RULE_PORTS];
};
SL_ASSERT_SIZE(struct sl_rule, 128);

/* prefixlen counts from set_id: 64 fixed bits (set id, port key), then the address's. */
struct sl_ipset_key {
	__u32 prefixlen;
	__u32 set_id;
	__u32 port_key; /* 0 for address sets; protocol << 16 | port for named-port sets */
	__u32 addr;
};
SL_ASSERT_SIZE(struct sl_ipset_key, 16);
#define SL_IPSET_PREFIX_FIXED 64

struct sl_log_event {
	__u64 ts_ns;
	__u32 rule_id;
	__u32 ifindex;
	__u32 saddr;
	__u32 daddr;
	__u16 sport; /* host byte order */
	__u16 dport;
	__u8 proto;
	__u8 ingress; /* 1: the endpoint's ingress table, 0: egress */
	__u8 pad[2];
};
SL_ASSERT_SIZE(struct sl_log_event, 32);

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct sl_ep);
	__uint(max_entries, 16 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_ep_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sl_rule);
	__uint(max_entries, 64 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_rules_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct sl_ipset_key);
	__type(value, __u32);
	__uint(max_entries, 1024 * 1024); /* Calico's bpfMapSizeIPSets default */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_ipsets_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_log_v1 SEC(".maps");

/* The flow a verdict is about: after Service DNAT, in the direction of its first packet. */
struct sl_flow {
	__u32 saddr;
	__u32 daddr;
	__u16 sport; /* host byte order; ICMP: 0 */
	__u16 dport;
	__u8 proto;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 has_ports;
};

SL_INLINE int sl_in_set(__u32 set_id, __u32 port_key, __u32 addr)
{
	struct sl_ipset_key k = { .prefixlen = SL_IPSET_PREFIX_FIXED + 32, .set_id = set_id, .port_key = port_key, .addr = addr };
	return bpf_map_lookup_elem(&sl_ipsets_v1, &k) != NULL;
}

SL_INLINE int sl_in_ranges(const struct sl_port_range *r, __u8 n, __u16 port)
{
	int hit = 0;
#pragma unroll
	for (int i = 0; i < SL_RULE_PORTS; i++)
		if (i < n && port >= r[i].lo && port <= r[i].hi)
			hit = 1;
	return hit;
}

/* Whether every criterion of the rule holds for the flow. Cheap tests first: set lookups are
 * LPM trie walks. Global, so the verifier checks it once rather than in every caller's state. */
__attribute__((noinline)) int sl_rule_matches(const struct sl_rule *r, const struct sl_flow *f)
{
	if (!r || !f)
		return 0;
	if (r->proto && r->proto != f->proto)
		return 0;
	if (r->not_proto && r->not_proto == f->proto)
		return 0;
	if (r->flags) {
		if (f->proto != IPPROTO_ICMP)
			return 0;
		if ((r->flags & SL_R_ICMP_TYPE) && f->icmp_type != r->icmp_type)
			return 0;
		if ((r->flags & SL_R_ICMP_CODE) && f->icmp_code != r->icmp_code)
			return 0;
		if ((r->flags & SL_R_NOT_ICMP_TYPE) && f->icmp_type == r->not_icmp_type &&
		    (!(r->flags & SL_R_NOT_ICMP_CODE) || f->icmp_code == r->not_icmp_code))
			return 0;
	}
	if (r->n_sport || r->n_not_sport || r->n_dport || r->n_not_dport || r->dst_named_set) {
		if (!f->has_ports)
			return 0;
		if (r->n_sport && !sl_in_ranges(r->sport, r->n_sport, f->sport))
			return 0;
		if (r->n_not_sport && sl_in_ranges(r->not_sport, r->n_not_sport, f->sport))
			return 0;
		if (r->n_not_dport && sl_in_ranges(r->not_dport, r->n_not_dport, f->dport))
			return 0;
		if (r->n_dport || r->dst_named_set) {
			int hit = r->n_dport && sl_in_ranges(r->dport, r->n_dport, f->dport);
			if (!hit && r->dst_named_set)
				hit = sl_in_set(r->dst_named_set, (__u32)f->proto << 16 | f->dport, f->daddr);
			if (!hit)
				return 0;
		}
	}
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (r->src_set[i] && !sl_in_set(r->src_set[i], 0, f->saddr))
			return 0;
		if (r->dst_set[i] && !sl_in_set(r->dst_set[i], 0, f->daddr))
			return 0;
		if (r->src_not_set[i] && sl_in_set(r->src_not_set[i], 0, f->saddr))
			return 0;
		if (r->dst_not_set[i] && sl_in_set(r->dst_not_set[i], 0, f->daddr))
			return 0;
	}
	return 1;
}

struct sl_policy_walk {
	const struct sl_flow *f;
	__u32 pc;
	__u32 end;
	__u32 start;
	__u32 ifindex;
	__u8 ingress;
	__u8 verdict; /* SL_ACT_ALLOW or SL_ACT_DENY once decided */
};

SL_INLINE void sl_policy_log(const struct sl_rule *r, struct sl_policy_walk *w)
{
	struct sl_log_event *e = bpf_ringbuf_reserve(&sl_log_v1, sizeof(*e), 0);
	if (!e)
		return; /* the agent is behind: events are dropped, never packets */
	e->ts_ns = bpf_ktime_get_ns();
	e->rule_id = r->id;
	e->ifindex = w->ifindex;
	e->saddr = w->f->saddr;
	e->daddr = w->f->daddr;
	e->sport = w->f->sport;
	e->dport = w->f->dport;
	e->proto = w->f->proto;
	e->ingress = w->ingress;
	e->pad[0] = 0;
	e->pad[1] = 0;
	bpf_ringbuf_submit(e, 0);
}

static long sl_policy_step(__u32 i, void *arg)
{
	struct sl_policy_walk *w = arg;
	if (w->pc >= w->end)
		return 1;
	__u32 pc = w->pc;
	struct sl_rule *r = bpf_map_lookup_elem(&sl_rules_v1, &pc);
	if (!r)
		return 1;
	w->pc = pc + 1;
	if (r->action == SL_ACT_NONE || !sl_rule_matches(r, w->f))
		return 0;
	switch (r->action) {
	case SL_ACT_ALLOW:
	case SL_ACT_DENY:
		w->verdict = r->action;
		return 1;
	case SL_ACT_PASS:
		/* Only forward, and inside the table: a bad jump cannot loop. */
		if (r->jump > pc && r->jump <= w->end)
			w->pc = r->jump;
		return 0;
	case SL_ACT_LOG:
		sl_policy_log(r, w);
		return 0;
	}
	return 0;
}

/* The verdict of the endpoint's table for the flow: 1 allow, 0 deny. A table that ends without
 * a verdict denies (userspace always ends tables with the profile's verdict).
 * A global function: the verifier checks it once, not once per caller (it is the heavy part). */
__attribute__((noinline)) int sl_policy_eval(__u32 ifindex, __u32 start, __u32 len, const struct sl_flow *f, int ingress)
{
	if (!f || len > SL_MAX_RULE_STEPS)
		return 0;
	struct sl_policy_walk w = {
		.f = f,
		.pc = start,
		.end = start + len,
		.start = start,
		.ifindex = ifindex,
		.ingress = ingress,
	};
	bpf_loop(SL_MAX_RULE_STEPS, sl_policy_step, &w, 0);
	return w.verdict == SL_ACT_ALLOW;
}

SL_INLINE struct sl_ep *sl_ep_lookup(__u32 ifindex)
{
	return bpf_map_lookup_elem(&sl_ep_v2, &ifindex);
}

/* The endpoint's verdict on a flow in one direction: tables that do not apply allow. */
SL_INLINE int sl_policy_allows(__u32 ifindex, const struct sl_ep *ep, const struct sl_flow *f, int ingress)
{
	if (!ep)
		return 1;
	if (ingress)
		return !(ep->flags & SL_EP_IN_POLICY) || sl_policy_eval(ifindex, ep->in_start, ep->in_len, f, 1);
	return !(ep->flags & SL_EP_EG_POLICY) || sl_policy_eval(ifindex, ep->eg_start, ep->eg_len, f, 0);
}
