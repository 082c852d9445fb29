/* XDP counterpart of tc_count: counts at the earliest hook and passes. */
#include "common.h"
#include "counters.h"
#include "parsing.h"

SEC("xdp")
int sl_xdp_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct sl_counters *c = sl_counters_get(ctx->ingress_ifindex, SL_HOOK_XDP);
	if (!c)
		return XDP_PASS;
	sl_count(c, SL_CNT_PACKETS);
	c->c[SL_CNT_BYTES] += data_end - data;
	struct sl_l3 l3 = {};
	if (sl_parse_ipv4(data, data_end, &l3) == 0) {
		sl_count(c, SL_CNT_IPV4);
		if (l3.proto == IPPROTO_TCP)
			sl_count(c, SL_CNT_TCP);
		else if (l3.proto == IPPROTO_UDP)
			sl_count(c, SL_CNT_UDP);
		else if (l3.proto == IPPROTO_ICMP)
			sl_count(c, SL_CNT_ICMP);
		else
			sl_count(c, SL_CNT_OTHER);
	} else {
		sl_count(c, SL_CNT_OTHER);
	}
	sl_count(c, SL_CNT_ACCEPTED);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
