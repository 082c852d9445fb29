/* Test object: a chain of three programs joined by tail calls through a program array. Each
 * stage records that it ran; the last returns a value only the full chain can produce. */
#include "common.h"

struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(key_size, 4); __uint(value_size, 4); __uint(max_entries, 8); } chain SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __type(key, __u32); __type(value, __u64); __uint(max_entries, 4); } visits SEC(".maps");

SL_INLINE void visit(__u32 stage)
{
	__u64 *v = bpf_map_lookup_elem(&visits, &stage);
	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("tc")
int chain_entry(struct __sk_buff *skb)
{
	visit(0);
	bpf_tail_call(skb, &chain, 1);
	return 100; /* the tail call failed */
}

SEC("tc")
int chain_stage1(struct __sk_buff *skb)
{
	visit(1);
	bpf_tail_call(skb, &chain, 2);
	return 101;
}

SEC("tc")
int chain_stage2(struct __sk_buff *skb)
{
	visit(2);
	return 42;
}

char LICENSE[] SEC("license") = "GPL";
