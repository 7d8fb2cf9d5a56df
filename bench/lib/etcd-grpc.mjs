// The bench's etcd client: gRPC through the `etcd3` package, as
// src/etcd/client.ts talks to etcd (no part of the project uses etcd's v3
// JSON gateway). Plain http endpoints only (the bench's etcds have no TLS).
// Same rules as src/etcd/client.ts: one client per endpoint (a per-member
// question reaches that member), no retries or circuit breaker inside etcd3
// (a stall must show as latency or an error, not be hidden by a retry), and a
// deadline on every call.
import { Etcd3 } from 'etcd3';

/** An etcd3 policy that runs the call once: no retry, no circuit breaker. */
const ONCE = { execute: (fn) => fn({ signal: new AbortController().signal, attempt: 0 }) };

/**
 * A client for one endpoint (http://host:port).
 * @returns {{ etcd3: Etcd3, put, txnPuts, status, healthy, close }}
 */
export function etcdClient(endpoint, { timeoutMs = 30_000 } = {}) {
  const c = new Etcd3({
    hosts: [endpoint],
    faultHandling: { host: () => ONCE, global: ONCE },
    grpcOptions: {
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      'grpc.max_send_message_length': 64 * 1024 * 1024,
      'grpc.initial_reconnect_backoff_ms': 200,
    },
  });
  const opts = (ms = timeoutMs) => ({ deadline: Date.now() + ms });
  const buf = (x) => (Buffer.isBuffer(x) ? x : Buffer.from(x));
  return {
    endpoint,
    etcd3: c,
    /** KV.Put. */
    put: (key, value, ms) => c.kv.put({ key: buf(key), value: buf(value) }, opts(ms)),
    /** One KV.Txn of unconditional puts: [{ key, value }] (strings or Buffers). */
    txnPuts: (puts, ms) => c.kv.txn({ success: puts.map(({ key, value }) => ({ request_put: { key: buf(key), value: buf(value) } })) }, opts(ms)),
    /** Maintenance.Status of this member: { dbSize, leader, memberId, raftIndex, version } (uint64s as decimal strings). */
    status: async (ms) => {
      const s = await c.maintenance.status(opts(ms));
      return { dbSize: Number(s.dbSize), leader: s.leader, memberId: s.header.member_id, raftIndex: s.raftIndex, version: s.version };
    },
    /** What etcdctl endpoint health asks (leader known, then a linearizable read); false instead of throwing. */
    healthy: async (ms = 2000) => {
      try {
        const s = await c.maintenance.status(opts(ms));
        if (s.leader === '0') return false;
        await c.kv.range({ key: Buffer.from('health') }, opts(ms));
        return true;
      } catch {
        return false;
      }
    },
    close: () => c.close(),
  };
}
