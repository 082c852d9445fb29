// Prometheus metrics of the agent (prom-client), one registry per agent so tests can run several.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class AgentMetrics {
  readonly registry = new Registry();
  /**
   * Set by the agent: fill the datapath gauges when the registry is read, not on a timer. Counting
   * maps of 100,000 entries every few seconds cost the agent a tenth of a core while nothing changed.
   */
  readMapEntries?: () => void;
  readPackets?: () => void;
  readonly syncSeconds = new Histogram({
    name: 'sluice_sync_duration_seconds',
    help: 'Time to program the datapath after a change, from the first pending event to the maps written',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly mapEntries = new Gauge({
    name: 'sluice_map_entries',
    help: 'Entries in a datapath map',
    labelNames: ['map'],
    registers: [this.registry],
    collect: () => this.readMapEntries?.(),
  });
  readonly mapCapacity = new Gauge({
    name: 'sluice_map_capacity',
    help: 'Maximum entries of a datapath map',
    labelNames: ['map'],
    registers: [this.registry],
  });
  readonly conntrackEntries = new Gauge({
    name: 'sluice_conntrack_entries',
    help: 'Conntrack entries seen by the last scan',
    registers: [this.registry],
  });
  readonly otherModeNodes = new Gauge({
    name: 'sluice_mixed_cluster_other_mode_nodes',
    help: 'Nodes whose dataplane (eBPF or standard) differs from this one (see the mixed-cluster warning)',
    registers: [this.registry],
  });
  readonly conntrackExpired = new Counter({
    name: 'sluice_conntrack_expired_total',
    help: 'Conntrack entries removed by the scanner',
    registers: [this.registry],
  });
  readonly packets = new Gauge({
    name: 'sluice_datapath_packets',
    help: 'Packets counted by the datapath, by hook and counter (drops carry their reason)',
    labelNames: ['hook', 'counter'],
    registers: [this.registry],
    collect: () => this.readPackets?.(),
  });
  readonly resyncs = new Counter({
    name: 'sluice_resyncs_total',
    help: 'Full resynchronisations of the datapath (start, relist after a watch gap, retry after an error)',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly events = new Counter({
    name: 'sluice_datastore_events_total',
    help: 'Resource events received from the datastore',
    labelNames: ['kind', 'type'],
    registers: [this.registry],
  });
  readonly policyLogEvents = new Counter({
    name: 'sluice_policy_log_events_total',
    help: 'Packets that matched a policy rule with the Log action (logged or over the rate limit)',
    registers: [this.registry],
  });
  readonly errors = new Counter({
    name: 'sluice_object_errors_total',
    help: 'Objects refused (invalid Service, policy or configuration), by kind',
    labelNames: ['kind'],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'sluice_' });
  }
}
