import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, runCli, tempDir, writeConfig } from '../support/cli.js';
import { startDaemonProcess } from '../support/daemon.js';
import { startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { startS3rver, type S3rver } from '../support/s3.js';

/**
 * Live progress (issue 19) as an operator sees it: the real CLI under a
 * pseudo-terminal (util-linux script(1)), backing up a real etcd to s3rver
 * and a local store, by itself and through a running daemon. With --json or
 * with stderr not a terminal, none of it.
 */
let cluster: EtcdCluster;
let s3: S3rver;
let dir: string;
let file: string;

/** Cursor movement and line erasing: what a live area draws with (colours alone are not progress). */
const LIVE_ESCAPES = /\x1b\[(?:\d*[ABG]|2K|\?25l)/;
const strip = (s: string) => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');

/** Runs the CLI with stdin, stdout and stderr on a fresh pseudo-terminal; returns everything the terminal got. */
function runOnTty(args: string[], timeoutMs = 120_000): Promise<{ code: number; out: string }> {
  const cmd = [process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ETCD_BACKUPD_LOG_LEVEL: 'info', TERM: 'xterm' } });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, out });
    });
  });
}

const PHASES = ['source', 'verify-local', 'bundle', 'deliver nfs', 'deliver s3', 'read-back s3'];

/** Every phase drew a live line (a bar and a percentage) and left a final static one. */
function expectProgress(out: string): void {
  const text = strip(out);
  expect(out).toMatch(LIVE_ESCAPES);
  expect(text).toMatch(/backup \S+ succeeded/);
  for (const p of PHASES) expectPhase(out, p);
}

/** `phase` drew a live line and a final one. */
function expectPhase(out: string, p: string): void {
  const text = strip(out);
  expect(text, p).toMatch(new RegExp(`^${p}\\s+\\[[#-]{20}\\] .+ / .+\\s+\\d+%`, 'm'));
  expect(text, p).toMatch(new RegExp(`^${p}\\s+done \\d`, 'm'));
}

function expectNoProgress(s: string): void {
  expect(s).not.toMatch(LIVE_ESCAPES);
  expect(strip(s)).not.toMatch(/\[[#-]{20}\]|^deliver s3\s+done/m);
}

beforeAll(async () => {
  dir = tempDir('progress');
  [cluster, s3] = await Promise.all([startEtcdCluster({ members: 1, tls: false }), startS3rver()]);
  // ~8 MiB of values that do not compress (the bundle is zstd): small, yet a few chunks per phase.
  await cluster.putMany(Array.from({ length: 2000 }, (_, i) => [`/registry/configmaps/cm${i}`, randomBytes(3000).toString('base64')] as [string, string]));
  mkdirSync(join(dir, 'manifests'));
  writeFileSync(join(dir, 'manifests', 'etcd.yaml'), 'kind: Pod\n');
  writeFileSync(join(dir, 'ak'), `${s3.accessKeyId}\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'sk'), `${s3.secretAccessKey}\n`, { mode: 0o600 });
  file = writeConfig(dir, {
    cluster: 'prod',
    node: 'master-0',
    workDir: 'work',
    schedule: '0 0 1 1 *',
    source: { type: 'etcdctl', staticPodDir: 'manifests' },
    etcd: { endpoints: [cluster.endpoints[0]] },
    stores: [
      { name: 'nfs', type: 'local', path: 'nfs' },
      { name: 's3', type: 's3', bucket: s3.bucket, prefix: 'clusters', endpoint: s3.endpoint, forcePathStyle: true, accessKeyIdFile: 'ak', secretAccessKeyFile: 'sk' },
    ],
    retention: { keepLast: 10 },
    metrics: { listen: '127.0.0.1:0' },
    control: { socket: 'ctl/control.sock' },
  });
});

afterAll(async () => {
  await Promise.all([cluster?.stop(), s3?.dispose()]);
});

describe('live progress of a backup', () => {
  it('on a terminal: one live line per phase and per store, then a static line each', async () => {
    const r = await runOnTty(['backup', '--config', file]);
    expect(r.code, r.out).toBe(0);
    expectProgress(r.out);
    expect(strip(r.out)).toMatch(/backup \S+ succeeded/);
  });

  it('--json on a terminal: no progress, one JSON document on stdout', async () => {
    const r = await runOnTty(['backup', '--config', file, '--json']);
    expect(r.code, r.out).toBe(0);
    expectNoProgress(r.out);
    expect(strip(r.out)).toMatch(/"result": "success"/);
  });

  it('stderr not a terminal (a pipe): plain log lines only', async () => {
    const r = await runCli(['backup', '--config', file]);
    expect(r.code, r.stderr).toBe(0);
    expectNoProgress(r.stderr);
    expect(r.stderr).toMatch(/"msg":"phase deliver done"/);
  });

  it('fetch and verify on a terminal: the download per store and the snapshot check; fetch --json: none', async () => {
    const to = join(tempDir('progress-fetch'), 'r');
    const f = await runOnTty(['fetch', '--config', file, '--store', 's3', 'latest', '--to', to]);
    expect(f.code, f.out).toBe(0);
    expect(f.out).toMatch(LIVE_ESCAPES);
    expectPhase(f.out, 'download s3');
    const v = await runOnTty(['verify', '--config', file, '--store', 's3', 'latest']);
    expect(v.code, v.out).toBe(0);
    expectPhase(v.out, 'download s3');
    expectPhase(v.out, 'verify');
    const j = await runOnTty(['fetch', '--config', file, '--store', 's3', 'latest', '--to', join(tempDir('progress-fetch'), 'j'), '--json']);
    expect(j.code, j.out).toBe(0);
    expectNoProgress(j.out);
  });

  it('verify --restore (a drill) on a terminal: the download and the snapshot check', async () => {
    const r = await runOnTty(['verify', '--config', file, '--store', 's3', 'latest', '--restore']);
    expect(r.code, r.out).toBe(0);
    expectPhase(r.out, 'download s3');
    expectPhase(r.out, 'verify');
    expect(strip(r.out)).toMatch(/restores: a throwaway etcd served/);
  });

  it('restore on a terminal: download, check, and the restore tool\'s time', async () => {
    const peer = 'http://127.0.0.1:2380';
    const dataDir = join(tempDir('progress-restore'), 'data');
    const r = await runOnTty(['restore', '--config', file, '--store', 's3', 'latest', '--data-dir', dataDir, '--name', 'r1', '--initial-cluster', `r1=${peer}`, '--initial-advertise-peer-urls', peer]);
    expect(r.code, r.out).toBe(0);
    expectPhase(r.out, 'download s3');
    expectPhase(r.out, 'verify');
    expect(strip(r.out)).toMatch(/^restore\s+running \d+s/m);
    expect(strip(r.out)).toMatch(/^restore\s+done in \d+s/m);
  });

  it('forwarded to a running daemon: the CLI that asked shows the progress', async () => {
    // A recent success: the daemon does not catch up on its own at start.
    writeFileSync(join(dir, 'work', 'state.json'), JSON.stringify({ lastSuccess: new Date().toISOString(), consecutiveFailures: 0, stores: {} }));
    const d = await startDaemonProcess(file);
    try {
      const r = await runOnTty(['backup', '--config', file]);
      expect(r.code, r.out).toBe(0);
      expect(strip(r.out)).toMatch(/^\[daemon\] backup run started/m);
      expectProgress(r.out);
      // Through the daemon, --json still carries none of it.
      const j = await runOnTty(['backup', '--config', file, '--json']);
      expect(j.code, j.out).toBe(0);
      expectNoProgress(j.out);
    } finally {
      expect(await d.stop()).toBe(0);
    }
  });
});
