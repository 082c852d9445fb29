// The datapath's maps, one schema module per family (mirroring bpf/include/*.h).
export { COUNTERS_MAP } from './counters.js';
export { ROUTES_MAP, RouteFlags } from './routes.js';
export { NAT_FE_MAP, NAT_BE_MAP, NAT_AFF_MAP, FrontendFlags, Proto } from './nat.js';
export { CT_MAP, CtType, CtFlags } from './conntrack.js';
