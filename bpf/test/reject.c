/* Test object: a program the verifier must refuse (packet read with no bounds check). */
#include "common.h"

SEC("tc")
int bad_unchecked_read(struct __sk_buff *skb)
{
	unsigned char *data = (void *)(long)skb->data;
	return data[20];
}

char LICENSE[] SEC("license") = "GPL";
