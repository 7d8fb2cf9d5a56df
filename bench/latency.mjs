#!/usr/bin/env node
// Steady background write load on etcd, open loop: one small put (256-byte
// value, 1000 rotating keys) every 1/rate seconds over gRPC (KV.Put through
// the `etcd3` package, as src/etcd/client.ts talks to etcd; grpc-js
// multiplexes the calls on one HTTP/2 channel), whatever the previous ones are
// doing, so a stall shows up as latency instead of as fewer requests (no
// coordinated omission). Latency is measured from the moment a request was
// due. Every put has a 30 s deadline and is tried once (no retries). Runs until
// SIGTERM (or --seconds), then prints one JSON line: [[dueEpochMs, latencyMs, ok], ...].
//
//   node bench/latency.mjs --endpoint http://127.0.0.1:PORT [--rate 100] [--seconds N]
import { parseArgs } from 'node:util';
import { etcdClient } from './lib/etcd-grpc.mjs';

const { values } = parseArgs({ options: { endpoint: { type: 'string' }, rate: { type: 'string', default: '100' }, seconds: { type: 'string' } } });
if (!values.endpoint) throw new Error('--endpoint http://host:port is required');
const rate = Number(values.rate);
const client = etcdClient(values.endpoint, { timeoutMs: 30_000 });
const value = Buffer.alloc(256, 'v');
const keys = Array.from({ length: 1000 }, (_, k) => Buffer.from(`/bench/latency/${k}`));
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
  inflight++;
  const done = (ok) => {
    inflight--;
    samples.push([Math.round(epoch0 + (due - t0)), +(performance.now() - due).toFixed(3), ok ? 1 : 0]);
  };
  client.put(keys[n % 1000], value).then(
    () => done(true),
    () => done(false),
  );
}

// Connect before the clock starts: the first put must not carry the channel's set-up.
await client.status(30_000).catch(() => undefined);
t0 = performance.now();
epoch0 = Date.now();
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
