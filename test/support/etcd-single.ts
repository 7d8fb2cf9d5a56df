/**
 * A throwaway single-member etcd (Debian's etcd 3.4 binary) on 127.0.0.1
 * with free ports and a temp data dir, plus small helpers to fill it over
 * gRPC (etcd-grpc.ts; much faster than one `etcdctl put` per key).
 * Fails loudly when the binaries are missing: these tests never skip.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { grpcClient, within } from './etcd-grpc.js';

const execFileP = promisify(execFile);

export interface SingleEtcd {
  endpoint: string;
  dataDir: string;
  /** Runs `etcdctl --endpoints <endpoint> ...args` (API v3) and returns stdout. */
  ctl(...args: string[]): Promise<string>;
  put(key: string | Buffer, value: string | Buffer, lease?: string): Promise<number>;
  /** Puts many keys, `concurrency` requests in flight at a time. Returns the last revision seen. */
  putMany(entries: Array<[string | Buffer, string | Buffer]>, concurrency?: number): Promise<number>;
  deleteRange(key: string, rangeEnd?: string): Promise<number>;
  grantLease(ttlSeconds: number): Promise<string>;
  revision(): Promise<number>;
  /** Stops etcd; removes the data dir unless keepData (then call cleanup() later). */
  stop(opts?: { keepData?: boolean }): Promise<void>;
  cleanup(): Promise<void>;
}

export async function requireBinary(name: string): Promise<string> {
  try {
    const { stdout } = await execFileP('sh', ['-c', `command -v ${name}`]);
    return stdout.trim();
  } catch {
    throw new Error(`${name} is not installed: apt-get install -y etcd-server etcd-client`);
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export async function etcdctl(args: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  const bin = await requireBinary('etcdctl');
  const { stdout } = await execFileP(bin, args, {
    env: { ...process.env, ETCDCTL_API: '3' },
    maxBuffer: 64 * 1024 * 1024,
    timeout: opts.timeoutMs ?? 120_000,
  });
  return stdout;
}

const buf = (v: string | Buffer): Buffer => Buffer.from(v);

export async function startSingleEtcd(opts: { quotaBytes?: number } = {}): Promise<SingleEtcd> {
  const bin = await requireBinary('etcd');
  await requireBinary('etcdctl');
  const dataDir = await mkdtemp(join(tmpdir(), 'etcd-single-'));
  const clientPort = await freePort();
  let peerPort = await freePort();
  while (peerPort === clientPort) peerPort = await freePort();
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const args = [
    '--name', 'n1',
    '--data-dir', join(dataDir, 'data'),
    '--listen-client-urls', endpoint,
    '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peer,
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `n1=${peer}`,
    '--log-level', 'error',
    ...(opts.quotaBytes ? ['--quota-backend-bytes', String(opts.quotaBytes)] : []),
  ];
  const child: ChildProcess = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-8192);
  });
  let exited: string | undefined;
  child.on('exit', (code, sig) => {
    exited = `etcd exited (code ${code}, signal ${sig}): ${stderr}`;
  });

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(exited);
    try {
      const res = await fetch(`${endpoint}/health`);
      if (res.ok && ((await res.json()) as { health?: string }).health === 'true') break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`etcd did not become healthy within 30s: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  const grpc = grpcClient(endpoint);
  const etcd: SingleEtcd = {
    endpoint,
    dataDir: join(dataDir, 'data'),
    ctl: (...a: string[]) => etcdctl(['--endpoints', endpoint, ...a]),
    async put(key, value, lease) {
      return Number((await grpc.kv.put({ key: buf(key), value: buf(value), ...(lease ? { lease } : {}) }, within())).header.revision);
    },
    async putMany(entries, concurrency = 32) {
      let next = 0;
      let last = 0;
      const worker = async (): Promise<void> => {
        while (next < entries.length) {
          const [k, v] = entries[next++]!;
          const rev = await etcd.put(k, v);
          last = Math.max(last, rev);
        }
      };
      await Promise.all(Array.from({ length: Math.min(concurrency, entries.length) }, worker));
      return last;
    },
    async deleteRange(key, rangeEnd) {
      return Number((await grpc.kv.deleteRange({ key: buf(key), ...(rangeEnd ? { range_end: buf(rangeEnd) } : {}) }, within())).header.revision);
    },
    async grantLease(ttlSeconds) {
      const r = await grpc.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: 0 }, within());
      return String(r.ID);
    },
    async revision() {
      return Number((await grpc.kv.range({ key: Buffer.from([0]), limit: 1 }, within())).header.revision);
    },
    async stop(o = {}) {
      grpc.close();
      if (!exited && child.exitCode === null) {
        const done = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await done;
        clearTimeout(timer);
      }
      if (!o.keepData) await etcd.cleanup();
    },
    async cleanup() {
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return etcd;
}
