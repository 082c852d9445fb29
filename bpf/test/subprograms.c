/* Test object: static functions in .text called from a program (BPF-to-BPF calls). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __type(key, __u32); __type(value, __u64); __uint(max_entries, 4); } m SEC(".maps");
static __noinline int helper2(int x) { __u32 k = 0; __u64 *v = bpf_map_lookup_elem(&m, &k); if (v) *v += x; return x * 3; }
static __noinline int helper(struct __sk_buff *skb, int x) { return helper2(x + 1) + skb->len; }
SEC("tc") int prog(struct __sk_buff *skb) { return helper(skb, 5) + helper2(2); }
char LICENSE[] SEC("license") = "GPL";
