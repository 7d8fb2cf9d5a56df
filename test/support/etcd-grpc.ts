/**
 * Test support: raw etcd gRPC clients (the `etcd3` package, as src/etcd/client.ts
 * uses it) for filling and reading test clusters. One client per endpoint,
 * no retries inside etcd3 (the callers retry over endpoints), a deadline on
 * every call. Replaces the v3 JSON gateway the helpers used before.
 */
import { Etcd3 } from 'etcd3';

/** An etcd3 policy that runs the call once: no retry, no circuit breaker. */
const ONCE = { execute: <T>(fn: (ctx: { signal: AbortSignal; attempt: number }) => T) => fn({ signal: new AbortController().signal, attempt: 0 }) };

export interface GrpcTls {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export function grpcClient(endpoint: string, tls?: GrpcTls): Etcd3 {
  return new Etcd3({
    hosts: [endpoint],
    credentials: tls && endpoint.startsWith('https:') ? { rootCertificate: tls.ca, certChain: tls.cert, privateKey: tls.key } : undefined,
    faultHandling: { host: () => ONCE as never, global: ONCE as never },
    grpcOptions: { 'grpc.max_receive_message_length': 64 * 1024 * 1024, 'grpc.initial_reconnect_backoff_ms': 100 },
  });
}

/** Call options with a deadline `ms` from now. */
export const within = (ms = 10_000) => ({ deadline: Date.now() + ms });
