// A small JSON client of the Kubernetes API for the lab's own writes (registering Nodes, CRDs,
// the lab kubelet's Pod status): GET/POST/PUT/PATCH/DELETE over one keep-alive HTTPS agent, with
// the credentials of a kubeconfig (client-node's KubeConfig.applyToHTTPSOptions). Reading with
// list+watch is the agent's KubernetesDatastore; this is only what it does not do.
import http from 'node:http';
import https from 'node:https';
import { KubeConfig } from '@kubernetes/client-node';

export class KubeApiError extends Error {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly reason: string | undefined,
    message: string,
  ) {
    super(`${method} ${path}: ${status}${reason ? ` ${reason}` : ''}: ${message}`);
    this.name = 'KubeApiError';
  }
}

export type PatchType = 'merge' | 'strategic' | 'json';

const PATCH_TYPES: Record<PatchType, string> = {
  merge: 'application/merge-patch+json',
  strategic: 'application/strategic-merge-patch+json',
  json: 'application/json-patch+json',
};

export interface RequestOptions {
  query?: Record<string, string | undefined>;
  contentType?: string;
  timeoutMs?: number;
}

export class KubeApi {
  readonly server: string;
  private readonly agent = new https.Agent({ keepAlive: true, maxSockets: 8 });

  constructor(private readonly kc: KubeConfig) {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('the kubeconfig has no current cluster');
    this.server = cluster.server.replace(/\/+$/, '');
  }

  static fromFile(file: string): KubeApi {
    const kc = new KubeConfig();
    kc.loadFromFile(file);
    return new KubeApi(kc);
  }

  /** One request; resolves with the status and the parsed body (undefined if empty). */
  async request(
    method: string,
    path: string,
    body?: unknown,
    opts: RequestOptions = {},
  ): Promise<{ status: number; body: unknown }> {
    const url = new URL(this.server + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const options: https.RequestOptions = {
      method,
      agent: this.agent,
      headers: {
        Accept: 'application/json',
        'User-Agent': 'sluice-lab',
        ...(payload
          ? { 'Content-Type': opts.contentType ?? 'application/json', 'Content-Length': String(payload.length) }
          : {}),
      },
    };
    await this.kc.applyToHTTPSOptions(options);
    options.agent = this.agent; // applyToHTTPSOptions may set its own
    return new Promise((resolve, reject) => {
      const req = https.request(url, options, (res: http.IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text === '' ? undefined : (JSON.parse(text) as unknown);
          } catch {
            parsed = text;
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      });
      req.setTimeout(opts.timeoutMs ?? 30_000, () => req.destroy(new Error(`${method} ${path}: no answer in time`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** Like request, but a status outside 2xx throws a KubeApiError with the server's message. */
  async call<T = unknown>(method: string, path: string, body?: unknown, opts: RequestOptions = {}): Promise<T> {
    const r = await this.request(method, path, body, opts);
    if (r.status >= 200 && r.status < 300) return r.body as T;
    const st = (typeof r.body === 'object' && r.body !== null ? r.body : {}) as { message?: string; reason?: string };
    throw new KubeApiError(
      method,
      path,
      r.status,
      st.reason,
      st.message ?? (typeof r.body === 'string' ? r.body : (http.STATUS_CODES[r.status] ?? '')),
    );
  }

  get<T = unknown>(path: string, query?: Record<string, string | undefined>): Promise<T> {
    return this.call<T>('GET', path, undefined, { query });
  }

  /** GET, with undefined for 404. */
  async find<T = unknown>(path: string): Promise<T | undefined> {
    try {
      return await this.get<T>(path);
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404) return undefined;
      throw err;
    }
  }

  post<T = unknown>(path: string, body: unknown): Promise<T> {
    return this.call<T>('POST', path, body);
  }

  put<T = unknown>(path: string, body: unknown): Promise<T> {
    return this.call<T>('PUT', path, body);
  }

  patch<T = unknown>(path: string, body: unknown, type: PatchType = 'merge'): Promise<T> {
    return this.call<T>('PATCH', path, body, { contentType: PATCH_TYPES[type] });
  }

  delete<T = unknown>(path: string, body?: unknown): Promise<T> {
    return this.call<T>('DELETE', path, body);
  }

  /**
   * Creates `obj` in `collection`, or replaces the existing one of that name (keeping its
   * resourceVersion, so a concurrent writer makes this fail rather than be overwritten).
   */
  async createOrReplace<T extends { metadata?: { name?: string; resourceVersion?: string } }>(
    collection: string,
    obj: T,
  ): Promise<T> {
    try {
      return await this.post<T>(collection, obj);
    } catch (err) {
      if (!(err instanceof KubeApiError) || err.status !== 409) throw err;
    }
    const itemPath = `${collection}/${obj.metadata?.name ?? ''}`;
    const cur = await this.get<T>(itemPath);
    return this.put<T>(itemPath, {
      ...obj,
      metadata: { ...obj.metadata, resourceVersion: cur.metadata?.resourceVersion },
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

export function isStatus(err: unknown, status: number): boolean {
  return err instanceof KubeApiError && err.status === status;
}
