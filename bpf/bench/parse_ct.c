/* Benchmark reference: parses a packet and looks its flow up in conntrack, then passes it. No
 * conntrack-based datapath can do less for an established flow; the bench quotes the Service
 * datapath against this floor as well as against parse-and-pass. */
#include "common.h"
#include "packet.h"
#include "conntrack.h"

SEC("tc")
int sl_parse_ct(struct __sk_buff *skb)
{
	struct sl_pkt p;
	if (sl_parse(skb, &p) != SL_PARSE_OK)
		return TC_ACT_OK;
	struct sl_tuple t = { .saddr = p.saddr, .daddr = p.daddr, .sport = p.sport, .dport = p.dport, .proto = p.proto };
	struct sl_ct_key k;
	sl_ct_key_of(&t, &k);
	struct sl_ct *ct = bpf_map_lookup_elem(&sl_ct_v1, &k);
	return ct && ct->type == 0xff ? TC_ACT_SHOT : TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
