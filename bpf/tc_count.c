/* The first Sluice tc program: classifies and counts what passes an interface, then lets it
 * through untouched. The Service datapath grows from here. */
#include "common.h"
#include "counters.h"
#include "parsing.h"

/* Set per attachment by the loader (.rodata): which hook this copy serves. */
const volatile __u32 sl_hook = SL_HOOK_TC_INGRESS;

SEC("tc")
int sl_tc_count(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct sl_counters *c = sl_counters_get(skb->ifindex, sl_hook);
	if (!c)
		return TC_ACT_UNSPEC;
	sl_count(c, SL_CNT_PACKETS);
	c->c[SL_CNT_BYTES] += skb->len;

	struct sl_l3 l3 = {};
	if (sl_parse_ipv4(data, data_end, &l3) == 0) {
		sl_count(c, SL_CNT_IPV4);
		switch (l3.proto) {
		case IPPROTO_TCP:
			sl_count(c, SL_CNT_TCP);
			break;
		case IPPROTO_UDP:
			sl_count(c, SL_CNT_UDP);
			break;
		case IPPROTO_ICMP:
			sl_count(c, SL_CNT_ICMP);
			break;
		default:
			sl_count(c, SL_CNT_OTHER);
		}
	} else {
		sl_count(c, SL_CNT_OTHER);
	}
	sl_count(c, SL_CNT_ACCEPTED);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
