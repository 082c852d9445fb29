/* Test object: behaviour chosen by read-only globals the loader sets per load. */
#include "common.h"

const volatile __u32 verdict = TC_ACT_OK;
const volatile __u8 drop_udp = 0;
const volatile __u64 magic = 0;

SEC("tc")
int ro_verdict(struct __sk_buff *skb)
{
	if (drop_udp && skb->protocol == bpf_htons(ETH_P_IP)) {
		void *data = (void *)(long)skb->data;
		void *data_end = (void *)(long)skb->data_end;
		struct iphdr *ip = data + sizeof(struct ethhdr);
		if ((void *)(ip + 1) <= data_end && ip->protocol == IPPROTO_UDP)
			return TC_ACT_SHOT;
	}
	if (magic == 0x5111ce)
		return 77;
	return verdict;
}

char LICENSE[] SEC("license") = "GPL";
