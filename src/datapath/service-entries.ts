// Turning one Service frontend into NAT map entries: backends (local ones first) written before
// the frontend, so no packet meets a frontend whose backends are not there yet. The agent's
// proxy builds on this; tests use it directly.
import { FrontendFlags, frontendKey, type NatMaps } from './nat.js';

export interface FrontendBackend {
  addr: string;
  port: number;
  /** On this node. */
  local?: boolean;
}

export interface FrontendSpec {
  svcId: number;
  /** Frontend address; 0.0.0.0 is a NodePort on every node address. */
  addr: string;
  port: number;
  proto: number;
  backends: FrontendBackend[];
  flags?: number;
  affinityTimeout?: number;
  /** loadBalancerSourceRanges; other sources are denied. */
  sourceRanges?: string[];
}

export function writeFrontend(nat: NatMaps, s: FrontendSpec): void {
  const ordered = [...s.backends.filter((b) => b.local), ...s.backends.filter((b) => !b.local)];
  nat.backends.setMany(
    ordered.map((b, ordinal) => [
      { svcId: s.svcId, ordinal },
      { addr: b.addr, port: b.port },
    ]),
  );
  const value = {
    svcId: s.svcId,
    count: ordered.length,
    localCount: ordered.filter((b) => b.local).length,
    affinityTimeout: s.affinityTimeout ?? 0,
    flags: s.flags ?? 0,
  };
  // A 0.0.0.0/0 range allows everyone: no deny entry (it would share that range's key).
  if (s.sourceRanges?.length && !s.sourceRanges.some((r) => r.endsWith('/0'))) {
    for (const r of s.sourceRanges) nat.frontends.set(frontendKey(s.addr, s.port, s.proto, r), value);
    nat.frontends.set(frontendKey(s.addr, s.port, s.proto), {
      ...value,
      flags: value.flags | FrontendFlags.SRC_DENIED,
    });
  } else {
    nat.frontends.set(frontendKey(s.addr, s.port, s.proto), value);
  }
}
