/* Connect-time load balancing state (sl_ctlb_v1): which frontend a socket asked for when the
 * connect/sendmsg hook sent it to a backend, so recvmsg and getpeername can show the frontend. */
#pragma once
#include "common.h"

struct sl_ctlb_key {
	__u64 cookie; /* socket cookie */
	__u32 addr;   /* backend, network byte order */
	__u16 port;   /* backend, network byte order */
	__u16 pad;
};
SL_ASSERT_SIZE(struct sl_ctlb_key, 16);

struct sl_ctlb {
	__u32 addr; /* frontend */
	__u16 port;
	__u16 pad;
};
SL_ASSERT_SIZE(struct sl_ctlb, 8);

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sl_ctlb_key);
	__type(value, struct sl_ctlb);
	__uint(max_entries, 64 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_ctlb_v1 SEC(".maps");
