/* Test object: one record reserved in a ring buffer per run, for the TypeScript reader
 * (src/bpf/ringbuf.ts). Every run takes the next sequence number. A packet of odd length is
 * reserved then discarded; skb->mark bit 0 picks a 44-byte record (not a multiple of 8, so the
 * reader's rounding is exercised) instead of a 16-byte one. The return code says what happened:
 * 0 submitted, 1 discarded, 2 the reserve failed (ring full); state slot 1 counts failures. */
#include "common.h"

struct t_rb_small {
	__u64 seq;
	__u32 len;  /* skb->len */
	__u32 mark; /* skb->mark */
};
SL_ASSERT_SIZE(struct t_rb_small, 16);

struct t_rb_big { /* 4-byte aligned, so its size stays 44 */
	__u32 seq;
	__u32 len;
	__u32 mark;
	__u8 fill[32]; /* fill[i] = (seq + i) & 0xff */
};
SL_ASSERT_SIZE(struct t_rb_big, 44);

struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } t_ringbuf SEC(".maps");
/* Slot 0: next sequence number; 1: reserve failures; 2: discards. */
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __type(key, __u32); __type(value, __u64); __uint(max_entries, 3); } t_rb_state SEC(".maps");

SL_INLINE void t_count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&t_rb_state, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("tc")
int t_ringbuf_emit(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u64 *next = bpf_map_lookup_elem(&t_rb_state, &zero);
	if (!next)
		return TC_ACT_SHOT;
	__u64 seq = __sync_fetch_and_add(next, 1);

	if (skb->mark & 1) {
		struct t_rb_big *b = bpf_ringbuf_reserve(&t_ringbuf, sizeof(*b), 0);
		if (!b) {
			t_count(1);
			return 2;
		}
		b->seq = (__u32)seq;
		b->len = skb->len;
		b->mark = skb->mark;
#pragma unroll
		for (int i = 0; i < 32; i++)
			b->fill[i] = (__u8)(seq + i);
		if (skb->len & 1) {
			bpf_ringbuf_discard(b, 0);
			t_count(2);
			return 1;
		}
		bpf_ringbuf_submit(b, 0);
		return 0;
	}

	struct t_rb_small *s = bpf_ringbuf_reserve(&t_ringbuf, sizeof(*s), 0);
	if (!s) {
		t_count(1);
		return 2;
	}
	s->seq = seq;
	s->len = skb->len;
	s->mark = skb->mark;
	if (skb->len & 1) {
		bpf_ringbuf_discard(s, 0);
		t_count(2);
		return 1;
	}
	bpf_ringbuf_submit(s, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
