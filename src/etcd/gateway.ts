import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';

export interface EtcdTls {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/**
 * A tiny client for etcd's v3 JSON gateway (grpc-gateway on the client URL).
 * It needs no etcdctl and speaks mutual TLS with the node's etcd client
 * certificate. uint64 fields arrive as decimal strings.
 */
export class EtcdGateway {
  private readonly tlsOpts: Pick<RequestOptions, 'ca' | 'cert' | 'key'>;
  constructor(
    tls: EtcdTls,
    private readonly timeoutMs: number,
  ) {
    this.tlsOpts = {
      ca: tls.caFile ? readFileSync(tls.caFile) : undefined,
      cert: tls.certFile ? readFileSync(tls.certFile) : undefined,
      key: tls.keyFile ? readFileSync(tls.keyFile) : undefined,
    };
  }

  /**
   * POSTs `body` as JSON (GET without one) to `path` below the endpoint.
   * `opts.timeoutMs` overrides the client's timeout for this call; aborting
   * `opts.signal` ends the request.
   */
  call<T>(endpoint: string, path: string, body?: unknown, opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<T> {
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const url = new URL(path, endpoint.endsWith('/') ? endpoint : endpoint + '/');
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const isHttps = url.protocol === 'https:';
    return new Promise<T>((resolve, reject) => {
      const req = (isHttps ? httpsRequest : httpRequest)(
        url,
        {
          method: payload ? 'POST' : 'GET',
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
          timeout: timeoutMs,
          signal: opts.signal,
          ...(isHttps ? this.tlsOpts : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if ((res.statusCode ?? 500) >= 300) {
              reject(new Error(`HTTP ${res.statusCode} from ${url.origin}${url.pathname}: ${text.slice(0, 200)}`));
              return;
            }
            try {
              resolve(JSON.parse(text) as T);
            } catch {
              reject(new Error(`non-JSON answer from ${url.origin}${url.pathname}: ${text.slice(0, 200)}`));
            }
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer from ${url.origin} within ${timeoutMs}ms`)));
      req.on('error', (e: NodeJS.ErrnoException) => reject(new Error(`${url.origin}: ${e.code ?? ''} ${e.message}`.trim())));
      req.end(payload);
    });
  }
}
