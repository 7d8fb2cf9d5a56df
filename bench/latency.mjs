#!/usr/bin/env node
// Steady background write load on etcd, open loop: one small put (256-byte
// value, 1000 rotating keys) every 1/rate seconds through the v3 JSON gateway,
// whatever the previous ones are doing, so a stall shows up as latency instead
// of as fewer requests (no coordinated omission). Latency is measured from the
// moment a request was due. Runs until SIGTERM (or --seconds), then prints one
// JSON line: [[dueEpochMs, latencyMs, ok], ...].
//
//   node bench/latency.mjs --endpoint http://127.0.0.1:PORT [--rate 100] [--seconds N]
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { endpoint: { type: 'string' }, rate: { type: 'string', default: '100' }, seconds: { type: 'string' } } });
const url = new URL(values.endpoint);
const rate = Number(values.rate);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const value = Buffer.alloc(256, 'v').toString('base64');
const samples = [];
let inflight = 0;
let stopping = false;
let i = 0;

function put(n) {
  const due = t0 + (n * 1000) / rate;
  const body = JSON.stringify({ key: Buffer.from(`/bench/latency/${n % 1000}`).toString('base64'), value });
  inflight++;
  const done = (ok) => {
    inflight--;
    samples.push([Math.round(epoch0 + (due - t0)), +(performance.now() - due).toFixed(3), ok ? 1 : 0]);
  };
  const req = http.request(
    { host: url.hostname, port: url.port, path: '/v3/kv/put', method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, timeout: 30_000 },
    (res) => {
      res.resume();
      res.on('end', () => done(res.statusCode === 200));
      res.on('error', () => done(false));
    },
  );
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', () => done(false));
  req.end(body);
}

const t0 = performance.now();
const epoch0 = Date.now();
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
  process.stdout.write(JSON.stringify(samples) + '\n', () => process.exit(0));
}
process.on('SIGTERM', finish);
process.on('SIGINT', finish);
if (values.seconds) setTimeout(finish, Number(values.seconds) * 1000);
