/* Test object: one map of every kind the runtime supports, and a program that reads and writes
 * each so tests can check both directions (TypeScript -> kernel -> TypeScript). */
#include "common.h"

struct lpm_v4_key {
	__u32 prefixlen;
	__u32 addr; /* network byte order */
};

struct pair {
	__u32 a;
	__u32 b;
	__u64 c;
};
SL_ASSERT_SIZE(struct pair, 16);

struct { __uint(type, BPF_MAP_TYPE_HASH); __type(key, __u32); __type(value, struct pair); __uint(max_entries, 200000); } t_hash SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __type(key, __u32); __type(value, __u64); __uint(max_entries, 8); } t_array SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __type(key, __u32); __type(value, __u64); __uint(max_entries, 128); } t_lru SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LPM_TRIE); __type(key, struct lpm_v4_key); __type(value, __u32); __uint(max_entries, 64); __uint(map_flags, BPF_F_NO_PREALLOC); } t_lpm SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __type(key, __u32); __type(value, __u64); __uint(max_entries, 4); } t_pcpu_array SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_HASH); __type(key, __u32); __type(value, __u64); __uint(max_entries, 16); } t_pcpu_hash SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH); __type(key, __u32); __type(value, __u64); __uint(max_entries, 16); } t_lru_pcpu SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(key_size, 4); __uint(value_size, 4); __uint(max_entries, 4); } t_progs SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __type(key, __u32); __type(value, __u64); __uint(max_entries, 16); __uint(pinning, LIBBPF_PIN_BY_NAME); } t_pinned SEC(".maps");

/* Results: slot 0 hash a+b, 1 lru value, 2 lpm value for skb->mark as address, 3 pinned value. */
SEC("tc")
int t_touch_maps(struct __sk_buff *skb)
{
	__u32 k = 1, zero = 0, one = 1, two = 2, three = 3;
	__u64 *slot;

	struct pair *p = bpf_map_lookup_elem(&t_hash, &k);
	if (p) {
		__u64 sum = p->a + p->b;
		bpf_map_update_elem(&t_array, &zero, &sum, BPF_ANY);
		struct pair np = { .a = p->a * 2, .b = p->b * 2, .c = p->c + 1 };
		__u32 k2 = 2;
		bpf_map_update_elem(&t_hash, &k2, &np, BPF_ANY);
	}
	__u64 *l = bpf_map_lookup_elem(&t_lru, &k);
	if (l)
		bpf_map_update_elem(&t_array, &one, l, BPF_ANY);

	struct lpm_v4_key lk = { .prefixlen = 32, .addr = skb->mark };
	__u32 *route = bpf_map_lookup_elem(&t_lpm, &lk);
	if (route) {
		__u64 v = *route;
		bpf_map_update_elem(&t_array, &two, &v, BPF_ANY);
	}
	__u64 *pv = bpf_map_lookup_elem(&t_pinned, &k);
	if (pv)
		bpf_map_update_elem(&t_array, &three, pv, BPF_ANY);

	slot = bpf_map_lookup_elem(&t_pcpu_array, &zero);
	if (slot)
		(*slot)++;
	__u64 init = 1;
	slot = bpf_map_lookup_elem(&t_pcpu_hash, &k);
	if (slot)
		(*slot)++;
	else
		bpf_map_update_elem(&t_pcpu_hash, &k, &init, BPF_ANY);
	slot = bpf_map_lookup_elem(&t_lru_pcpu, &k);
	if (slot)
		(*slot) += 10;
	else
		bpf_map_update_elem(&t_lru_pcpu, &k, &init, BPF_ANY);

	bpf_tail_call(skb, &t_progs, 0);
	return TC_ACT_OK;
}

/* Tail-call target: proves the program array was filled. */
SEC("tc")
int t_tail_target(struct __sk_buff *skb)
{
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "GPL";
