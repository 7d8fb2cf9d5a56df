import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { ROOT, tempDir } from './cli.js';

/**
 * A real S3 HTTP server (s3rver 3.7.1) on 127.0.0.1, in its own process.
 *
 * Facts that shape this helper (see shared TESTING-NOTES): s3rver only accepts
 * the credentials S3RVER/S3RVER; it must run with --openssl-legacy-provider
 * or paginated ListObjectsV2 answers 500; it has no AbortMultipartUpload and
 * no ListMultipartUploads. The test process itself runs plain Node.
 */
export interface S3rver {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  port: number;
  bucket: string;
  /** The server's data directory; kept across stop()/restart(). */
  dir: string;
  accessKeyId: 'S3RVER';
  secretAccessKey: 'S3RVER';
  /** Kills the server (connections are then refused). Idempotent. */
  stop(): Promise<void>;
  /** Starts it again on the same port with the same data, after stop(). */
  restart(): Promise<void>;
  /** SIGSTOP: the port still accepts TCP connections but nothing answers (a hung server). */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  /** stop() and remove the data directory. */
  dispose(): Promise<void>;
}

export const S3RVER_BIN = join(ROOT, 'node_modules', 's3rver', 'bin', 's3rver.js');

const live = new Set<ChildProcess>();
let exitHook = false;
function killAllOnExit(): void {
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
}

/** Resolves once anything answers HTTP on the port (s3rver answers / with XML). */
function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/', method: 'GET', timeout: 1000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

interface Started {
  child: ChildProcess;
  port: number;
}

/** Spawns s3rver; with port 0 the kernel picks a free port and s3rver prints it. */
async function spawnS3rver(dir: string, bucket: string, port: number): Promise<Started> {
  if (!existsSync(S3RVER_BIN)) throw new Error(`${S3RVER_BIN} is missing: run npm ci (s3rver is a devDependency)`);
  const child = spawn(
    process.execPath,
    ['--openssl-legacy-provider', S3RVER_BIN, '-d', dir, '-a', '127.0.0.1', '-p', String(port), '--configure-bucket', bucket, '--silent'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } },
  );
  live.add(child);
  killAllOnExit();
  child.once('exit', () => live.delete(child));
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const deadline = Date.now() + 30_000;
  let bound = 0;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`s3rver exited (${child.exitCode ?? child.signalCode}) before answering:\n${out}\n${err}`);
    }
    const m = /listening on [^\s:]+:(\d+)/.exec(out);
    if (m) bound = Number(m[1]);
    // Wait for s3rver's own "listening" line, so a stranger on a reused port is never mistaken for it.
    if (bound !== 0 && (await answers(bound))) return { child, port: bound };
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`s3rver did not answer within 30s:\n${out}\n${err}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGCONT'); // a paused server cannot act on SIGTERM
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await gone;
  clearTimeout(t);
}

export async function startS3rver(opts: { bucket?: string; dir?: string } = {}): Promise<S3rver> {
  const bucket = opts.bucket ?? 'etcd-backups';
  const dir = opts.dir ?? tempDir('s3rver');
  let { child, port } = await spawnS3rver(dir, bucket, 0);
  let running = true;
  const server: S3rver = {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    bucket,
    dir,
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    async stop() {
      running = false;
      await kill(child);
    },
    async restart() {
      if (running) await kill(child);
      // The port was ours a moment ago; retry briefly in case the kernel holds it.
      for (let i = 0; ; i++) {
        try {
          ({ child } = await spawnS3rver(dir, bucket, port));
          running = true;
          return;
        } catch (e) {
          if (i >= 20) throw e;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    },
    pause() {
      child.kill('SIGSTOP');
    },
    resume() {
      child.kill('SIGCONT');
    },
    async dispose() {
      await server.stop();
      if (!opts.dir) await rm(dir, { recursive: true, force: true });
    },
  };
  return server;
}
