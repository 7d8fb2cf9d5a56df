#!/usr/bin/env node
// Steady background write load on etcd, open loop: one put every 1/rate
// seconds over gRPC (KV.Put through the `etcd3` package, as
// src/etcd/client.ts talks to etcd; grpc-js multiplexes the calls on one
// HTTP/2 channel), whatever the previous ones are doing, so a stall shows up
// as latency instead of as fewer requests (no coordinated omission). Latency
// is measured from the moment a request was due. Every put has a 30 s
// deadline and is tried once (no retries). Runs until SIGTERM (or --seconds),
// then prints one JSON line: [[dueEpochMs, latencyMs, ok], ...], or with
// --revisions [[dueEpochMs, latencyMs, ok, revision, ackEpochMs], ...].
//
// Values: `small` (default): 256 bytes, 1000 rotating keys. `k8s`: updates
// of --keys Kubernetes-shaped objects (test/support/k8s-data.ts: pods with
// managedFields, configmaps, secrets, events, leases, 1 in 10 opaque binary),
// round robin; a JSON object's resourceVersion is rewritten on every write
// (as the API server does), so no two writes store the same bytes.
//
//   node bench/latency.mjs --endpoint http://127.0.0.1:PORT [--rate 100] [--seconds N]
//   node bench/latency.mjs --endpoint ... --rate 500 --values k8s --keys 20000 --revisions
import { parseArgs } from 'node:util';
import { k8sPool } from './lib/k8s-values.mjs';
import { etcdClient } from './lib/etcd-grpc.mjs';

const { values } = parseArgs({
  options: {
    endpoint: { type: 'string' },
    rate: { type: 'string', default: '100' },
    seconds: { type: 'string' },
    values: { type: 'string', default: 'small' },
    keys: { type: 'string' },
    revisions: { type: 'boolean', default: false },
  },
});
if (!values.endpoint) throw new Error('--endpoint http://host:port is required');
if (!['small', 'k8s'].includes(values.values)) throw new Error('--values: small | k8s');
const rate = Number(values.rate);
const withRev = values.revisions;
const client = etcdClient(values.endpoint, { timeoutMs: 30_000 });
let next;
if (values.values === 'k8s') {
  const pool = await k8sPool(Number(values.keys ?? 20_000));
  next = (n) => pool.write(n);
} else {
  const value = Buffer.alloc(256, 'v');
  const keys = Array.from({ length: Number(values.keys ?? 1000) }, (_, k) => Buffer.from(`/bench/latency/${k}`));
  next = (n) => ({ key: keys[n % keys.length], value });
}
const samples = [];
let inflight = 0;
let stopping = false;
let i = 0;
let t0 = 0;
let epoch0 = 0;
process.on('SIGTERM', finish);
process.on('SIGINT', finish);

function put(n) {
  const due = t0 + (n * 1000) / rate;
  const { key, value } = next(n);
  inflight++;
  const done = (ok, res) => {
    inflight--;
    const now = performance.now();
    const s = [Math.round(epoch0 + (due - t0)), +(now - due).toFixed(3), ok ? 1 : 0];
    if (withRev) s.push(ok ? Number(res.header.revision) : 0, Math.round(epoch0 + (now - t0)));
    samples.push(s);
  };
  client.put(key, value).then(
    (res) => done(true, res),
    () => done(false),
  );
}

// Connect before the clock starts: the first put must not carry the channel's set-up.
await client.status(30_000).catch(() => undefined);
t0 = performance.now();
epoch0 = Date.now();
// The parent may wait for this line (the values are generated, the clock runs).
process.stderr.write(`latency.mjs: started ${epoch0}\n`);
function tick() {
  if (stopping) return;
  const now = performance.now();
  // Issue every request that is due (catches up after an event-loop stall: those get the latency they deserve).
  while (t0 + (i * 1000) / rate <= now) put(i++);
  setTimeout(tick, Math.max(0, t0 + (i * 1000) / rate - performance.now()));
}
tick();

async function finish() {
  if (stopping) return;
  stopping = true;
  const deadline = Date.now() + 35_000;
  while (inflight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  client.close();
  process.stdout.write(JSON.stringify(samples) + '\n', () => process.exit(0));
}
if (values.seconds) setTimeout(finish, Number(values.seconds) * 1000);
