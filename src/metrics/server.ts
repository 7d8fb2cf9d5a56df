import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { BackupMetrics } from './metrics.js';

export interface Readiness {
  ready: boolean;
  reason?: string;
}

export interface MetricsServerOptions {
  /** `HOST:PORT`, `[IPv6]:PORT`; port 0 picks a free port. */
  listen: string;
  metrics: BackupMetrics;
  readiness: () => Readiness;
}

export interface MetricsServer {
  /** The address bound, as the OS reports it (`127.0.0.1`, `::1`, ...). */
  address: string;
  port: number;
  close(): Promise<void>;
}

/** Splits `HOST:PORT` / `[V6]:PORT`; throws with the offending value otherwise. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`metrics.listen: expected HOST:PORT or [IPv6]:PORT, got "${listen}"`);
  return { host: (m[1] ?? m[2])!, port };
}

function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}, head = false): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store', ...headers, 'Content-Length': Buffer.byteLength(body) });
  res.end(head ? undefined : body);
}

/**
 * The daemon's HTTP face: `/metrics` for Prometheus, `/healthz` (the process
 * answers: liveness), `/readyz` (the daemon can do its job: readiness).
 * GET only (HEAD as GET without a body); anything else is 405, unknown paths 404.
 */
export async function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const { host, port } = parseListen(opts.listen);

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0];
    const known = path === '/metrics' || path === '/healthz' || path === '/readyz';
    if (!known) return send(res, 404, 'not found\n');
    const head = req.method === 'HEAD';
    if (req.method !== 'GET' && !head) return send(res, 405, 'method not allowed\n', { Allow: 'GET, HEAD' });
    switch (path) {
      case '/metrics': {
        let text: string;
        try {
          text = await opts.metrics.render();
        } catch (e) {
          return send(res, 500, `metrics: ${(e as Error).message}\n`);
        }
        return send(res, 200, text, { 'Content-Type': opts.metrics.contentType }, head);
      }
      case '/healthz':
        return send(res, 200, 'ok\n', {}, head);
      default: {
        let r: Readiness;
        try {
          r = opts.readiness();
        } catch (e) {
          r = { ready: false, reason: `readiness check failed: ${(e as Error).message}` };
        }
        if (r.ready) return send(res, 200, 'ready\n', {}, head);
        return send(res, 503, `not ready: ${r.reason ?? 'unknown'}\n`, {}, head);
      }
    }
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) send(res, 500, `${(e as Error).message}\n`);
      else res.destroy();
    });
  });
  // A slow or stuck scraper must not hold connections open for long.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;

  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error): void => reject(new Error(`metrics server cannot listen on ${opts.listen}: ${e.message}`));
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;

  let closing: Promise<void> | undefined;
  return {
    address: addr.address,
    port: addr.port,
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve, reject) => {
        server.close((e) => (e ? reject(e) : resolve()));
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
