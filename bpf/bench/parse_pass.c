/* Benchmark baseline: parses a packet the way the Service datapath does, then passes it. The
 * datapath's per-packet cost is quoted as a ratio to this program's. */
#include "common.h"
#include "packet.h"

SEC("tc")
int sl_parse_pass(struct __sk_buff *skb)
{
	struct sl_pkt p;
	if (sl_parse(skb, &p) != SL_PARSE_OK)
		return TC_ACT_OK;
	/* Keep the parse from being optimised away. */
	return p.dport == 0xffff ? TC_ACT_SHOT : TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
