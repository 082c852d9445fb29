// Frame builder: stack layers outermost first; lengths, "next protocol"
// fields and checksums are filled in from the layers around each one.
//
//   frame(eth(), ipv4({ src: '10.0.0.1' }), tcp({ dport: 80, flags: 'SA' }), payload('hi'))
//   frame(eth(), ipv4(), udp(), vxlan({ vni: 4096 }), eth(), ipv4(), tcp())

import { assemble, type Layer } from './layer.js';

export { eth, type EthOptions } from './layers/ethernet.js';
export { ipv4, type Ipv4Options, type IpProtocolName } from './layers/ipv4.js';
export { tcp, type TcpOptions } from './layers/tcp.js';
export { udp, type UdpOptions } from './layers/udp.js';
export { icmp, type IcmpOptions } from './layers/icmp.js';
export { vxlan, type VxlanOptions } from './layers/vxlan.js';
export { payload } from './layers/payload.js';
export type { ChecksumOption, Layer, NetworkLayer } from './layer.js';

/** Serialize layers, outermost first, into a new Buffer. */
export function frame(...layers: Layer[]): Buffer {
  return assemble(layers);
}

/**
 * Same as frame(); reads better for packets that start at the IP header
 * (raw-IP tests, ICMP quotes).
 */
export const packet = frame;
