/* Per-load constants (.rodata), set by the loader for each node (and each attach when needed).
 * Frozen before load, so the verifier prunes what a node does not use. */
#pragma once
#include "common.h"

/* This node's primary IP (network byte order): source of tunnel packets and ICMP errors. */
const volatile __u32 sl_host_ip = 0;
/* UDP port and VNI of Sluice's own NodePort-forwarding tunnel (not the pod overlay's VNI). */
const volatile __u16 sl_vxlan_port = 4789;
const volatile __u32 sl_vxlan_vni = 0x5c1;
/* Largest inner packet the tunnel carries (Calico's VXLANMTU): larger DF packets get frag-needed. */
const volatile __u32 sl_tunnel_mtu = 1450;
/* bpfExternalServiceMode: 0 = Tunnel (replies return through the ingress node), 1 = DSR. */
const volatile __u8 sl_dsr = 0;
/* Enables the FIB-lookup redirect shortcut; off falls back to the kernel's forwarding. */
const volatile __u8 sl_fib_redirect = 1;

/* skb->mark bit set on packets handed to the kernel's path (connections opened before the eBPF
 * dataplane took over): the node's guard rule drops them unless the kernel's conntrack knows the
 * connection. A bit that kube-proxy's marks (0x4000 masquerade, 0x8000 drop) leave alone. */
#define SL_MARK_KERNEL_PATH 0x01000000

/* skb->mark bit set on packets of flows the eBPF dataplane serves (its conntrack holds them): the
 * node's raw-table rule exempts them from the kernel's conntrack, which sees only some of a flow's
 * packets (replies are redirected past it) and would call the rest INVALID (kube-proxy drops
 * INVALID in its forward chain). */
#define SL_MARK_SEEN 0x02000000
