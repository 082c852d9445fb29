// The agent's HTTP endpoints: Felix-style liveness/readiness, kube-proxy-style /healthz (so
// load balancers and existing probes keep working after kube-proxy is gone), Prometheus metrics,
// and one health-check server per externalTrafficPolicy Local Service (healthCheckNodePort).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AgentMetrics } from './metrics.js';

export interface HealthState {
  /** Set once the first full sync reached the datapath. */
  ready: boolean;
  /** Time of the last successful datapath sync (ms since epoch). */
  lastSyncMs: number;
  /** Whether an update is pending longer than it should. */
  stale(): boolean;
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

function listen(port: number, host: string, handler: Handler): Promise<http.Server> {
  const server = http.createServer(handler);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

function close(s: http.Server | undefined): Promise<void> {
  return new Promise((resolve) => (s ? s.close(() => resolve()) : resolve()));
}

function send(res: http.ServerResponse, code: number, body: unknown, type = 'application/json'): void {
  res.writeHead(code, { 'Content-Type': type });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

export interface HealthCheckService {
  namespace: string;
  name: string;
  localEndpoints: number;
}

export class HealthServers {
  private servers: http.Server[] = [];
  private readonly hcServers = new Map<number, { server: http.Server; svc: HealthCheckService }>();

  private retry: NodeJS.Timeout | undefined;

  constructor(
    private readonly state: HealthState,
    private readonly metrics: AgentMetrics,
    private readonly host = '0.0.0.0',
    /** Told when kube-proxy's health port is taken (kube-proxy itself still runs). */
    private readonly onBusy: (port: number, err: Error) => void = () => undefined,
    private readonly retryMs = 10_000,
  ) {}

  async start(opts: { healthPort?: number; healthzPort?: number; metricsPort?: number }): Promise<void> {
    if (opts.healthPort !== undefined) {
      this.servers.push(
        await listen(opts.healthPort, this.host, (req, res) => {
          if (req.url === '/liveness') send(res, 200, { live: true });
          else if (req.url === '/readiness') send(res, this.state.ready ? 200 : 503, { ready: this.state.ready });
          else send(res, 404, { error: 'not found' });
        }),
      );
    }
    if (opts.healthzPort !== undefined) {
      const port = opts.healthzPort;
      const handler: Handler = (req, res) => {
        // kube-proxy answers 200 while its rules are fresh, 503 when an update is overdue.
        const body = {
          lastUpdated: new Date(this.state.lastSyncMs).toISOString(),
          currentTime: new Date().toISOString(),
        };
        if (req.url === '/healthz' || req.url === '/livez')
          send(res, this.state.ready && !this.state.stale() ? 200 : 503, body);
        else send(res, 404, { error: 'not found' });
      };
      // While kube-proxy still runs on the node it holds this port: the agent must not fail (or
      // fight it), so it serves /healthz once the port is free.
      const attempt = async (): Promise<boolean> => {
        try {
          this.servers.push(await listen(port, this.host, handler));
          return true;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
          return false;
        }
      };
      if (!(await attempt())) {
        this.onBusy(port, new Error(`port ${port} is in use (kube-proxy's health server?)`));
        this.retry = setInterval(() => {
          void attempt().then(
            (ok) => {
              if (ok) clearInterval(this.retry);
            },
            () => clearInterval(this.retry),
          );
        }, this.retryMs);
        this.retry.unref();
      }
    }
    if (opts.metricsPort !== undefined) {
      this.servers.push(
        await listen(opts.metricsPort, this.host, (req, res) => {
          if (req.url !== '/metrics') return send(res, 404, 'not found\n', 'text/plain');
          this.metrics.registry.metrics().then(
            (text) => send(res, 200, text, this.metrics.registry.contentType),
            (err: unknown) => send(res, 500, String(err), 'text/plain'),
          );
        }),
      );
    }
  }

  /** The listening port of the i-th server started (tests start them on port 0). */
  port(i: number): number {
    return (this.servers[i].address() as AddressInfo).port;
  }

  /** Keeps one server per healthCheckNodePort: 200 while the Service has local endpoints. */
  async setHealthChecks(wanted: Map<number, HealthCheckService>): Promise<void> {
    for (const [port, entry] of this.hcServers) {
      if (!wanted.has(port)) {
        await close(entry.server);
        this.hcServers.delete(port);
      }
    }
    for (const [port, svc] of wanted) {
      const have = this.hcServers.get(port);
      if (have) {
        have.svc = svc;
        continue;
      }
      const entry = { svc, server: undefined as unknown as http.Server };
      entry.server = await listen(port, this.host, (_req, res) => {
        const s = entry.svc;
        send(res, s.localEndpoints > 0 ? 200 : 503, {
          service: { namespace: s.namespace, name: s.name },
          localEndpoints: s.localEndpoints,
        });
      });
      this.hcServers.set(port, entry);
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.retry);
    for (const s of this.servers) await close(s);
    for (const e of this.hcServers.values()) await close(e.server);
    this.servers = [];
    this.hcServers.clear();
  }
}
