/* Shared definitions for Sluice's BPF programs. Every struct shared with userspace has
 * explicit padding and a size assertion; src/datapath mirrors it and a test compares both
 * against this object's BTF. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define SL_INLINE static __always_inline
/* A BPF-to-BPF call: its own stack frame, so the 512-byte limit applies per call chain rather
 * than to everything inlined into one function. At most five arguments. */
#define SL_SUBPROG static __attribute__((noinline))

#ifndef LIBBPF_PIN_BY_NAME
#define LIBBPF_PIN_BY_NAME 1
#endif

#define SL_ASSERT_SIZE(type, size) _Static_assert(sizeof(type) == (size), #type " size")
