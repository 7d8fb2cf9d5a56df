import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';

export interface EtcdTls {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/** Larger answers are refused: a misbehaving endpoint must not fill the memory of a control-plane node. */
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

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
   * The whole call, answer included, has a deadline: `opts.timeoutMs`, else
   * the client's timeout (a server that trickles bytes cannot hold it open);
   * aborting `opts.signal` ends it too.
   */
  call<T>(endpoint: string, path: string, body?: unknown, opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<T> {
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const url = new URL(path, endpoint.endsWith('/') ? endpoint : endpoint + '/');
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const isHttps = url.protocol === 'https:';
    const deadline = AbortSignal.timeout(timeoutMs);
    const signal = opts.signal ? AbortSignal.any([opts.signal, deadline]) : deadline;
    const late = () => new Error(`no answer from ${url.origin} within ${timeoutMs}ms`);
    return new Promise<T>((resolve, reject) => {
      const req = (isHttps ? httpsRequest : httpRequest)(
        url,
        {
          method: payload ? 'POST' : 'GET',
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
          signal,
          ...(isHttps ? this.tlsOpts : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          let bytes = 0;
          res.on('data', (c: Buffer) => {
            bytes += c.length;
            if (bytes > MAX_ANSWER_BYTES) req.destroy(new Error(`answer from ${url.origin}${url.pathname} is larger than ${MAX_ANSWER_BYTES} bytes`));
            else chunks.push(c);
          });
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
          res.on('error', (e) => reject(deadline.aborted ? late() : e));
        },
      );
      req.on('error', (e: NodeJS.ErrnoException) => reject(deadline.aborted ? late() : new Error(`${url.origin}: ${e.code ?? ''} ${e.message}`.trim())));
      req.end(payload);
    });
  }
}
