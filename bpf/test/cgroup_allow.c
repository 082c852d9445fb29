/* Test object: a connect4 hook that allows every connection unchanged. */
#include "common.h"

SEC("cgroup/connect4")
int allow_connect4(struct bpf_sock_addr *ctx)
{
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
