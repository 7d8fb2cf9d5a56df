/**
 * Test support for src/coord/: a claimer as a real child process (the source
 * in coord-child.ts, bundled once per test process with esbuild into .tmp/ so
 * that `etcd3` resolves from node_modules), and an etcd3 client per "node".
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { build } from 'esbuild';
import type { EtcdCluster } from './etcd.js';

const ROOT = resolve(import.meta.dirname, '../..');
let bundled: string | undefined;

async function childScript(): Promise<string> {
  if (bundled) return bundled;
  const dir = join(ROOT, '.tmp');
  mkdirSync(dir, { recursive: true });
  const out = join(dir, `coord-child-${process.pid}-${randomBytes(4).toString('hex')}.mjs`);
  await build({ entryPoints: [join(ROOT, 'test/support/coord-child.ts')], bundle: true, platform: 'node', format: 'esm', target: 'node24', packages: 'external', outfile: out, logLevel: 'error' });
  process.once('exit', () => rmSync(out, { force: true })); // a worker may end without 'exit': cleanupClaimers() too
  bundled = out;
  return out;
}

export interface ChildClaimer {
  child: ChildProcess;
  /** The first line the child prints: its outcome as JSON. */
  firstLine: Promise<Record<string, unknown>>;
  kill(): void;
}

/** Starts a claimer process for one slot of `cluster` on the test etcd. */
export async function spawnClaimer(etcd: EtcdCluster, o: { cluster: string; node: string; slot: Date; deadline: Date; leaseTtlSec: number }): Promise<ChildClaimer> {
  const script = await childScript();
  const env = { ...process.env, COORD_CHILD: JSON.stringify({ endpoints: etcd.endpoints, ...etcd.tls, cluster: o.cluster, node: o.node, slot: o.slot.toISOString(), deadline: o.deadline.toISOString(), leaseTtlSec: o.leaseTtlSec }) };
  const child = spawn(process.execPath, [script], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const firstLine = new Promise<Record<string, unknown>>((res, rej) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) res(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
    });
    child.once('exit', (code, sig) => rej(new Error(`claimer ${o.node} exited (${code ?? sig}) before its outcome: ${err}`)));
  });
  firstLine.catch(() => undefined);
  process.once('exit', () => child.kill('SIGKILL'));
  return { child, firstLine, kill: () => child.kill('SIGKILL') };
}

/** Removes the bundled claimer script (call from afterAll). */
export function cleanupClaimers(): void {
  if (bundled) rmSync(bundled, { force: true });
  bundled = undefined;
}
