import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, tempDir, writeConfig, FAKE_CLUSTER_BACKUP } from '../support/cli.js';
import { startDaemonProcess } from '../support/daemon.js';
import { startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { makeEnv, type Env } from '../support/fault-env.js';

/**
 * Every command's output arrives whole through a pipe, however long and
 * however slow the reader: the CLI runs as a real process whose stdout and
 * stderr are OS pipes (python's subprocess: pipe(2), 64 KiB of buffer, unlike
 * node's socketpair stdio) read by a reader that starts late and then takes
 * 16 KiB every 2 ms. A CLI that wrote through process.stdout and then called
 * process.exit lost everything past what the pipe held (the 65,536-byte cut
 * of the issue).
 */

const SLOW_PIPES = `
import os, selectors, subprocess, sys, time
out_path, err_path = sys.argv[1], sys.argv[2]
delay, chunk, pause, limit = float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
p = subprocess.Popen(sys.argv[7:], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
deadline = time.monotonic() + limit
time.sleep(delay)
sinks = {p.stdout.fileno(): open(out_path, 'wb'), p.stderr.fileno(): open(err_path, 'wb')}
sel = selectors.DefaultSelector()
for fd in sinks: sel.register(fd, selectors.EVENT_READ)
while sinks:
    if time.monotonic() > deadline:
        p.kill()
        sys.exit(124)
    for key, _ in sel.select(timeout=1):
        b = os.read(key.fd, chunk)
        if b:
            sinks[key.fd].write(b)
        else:
            sel.unregister(key.fd)
            sinks.pop(key.fd).close()
    time.sleep(pause)
print(p.wait())
`;

interface Piped {
  code: number;
  stdout: string;
  stderr: string;
}

let seq = 0;
/** Runs the built CLI with stdout and stderr on OS pipes drained slowly; returns what came through. */
function runThroughSlowPipes(dir: string, args: string[], env: NodeJS.ProcessEnv = {}, o: { delay?: number; limitS?: number } = {}): Promise<Piped> {
  const n = ++seq;
  const outFile = join(dir, `pipe-${n}.out`);
  const errFile = join(dir, `pipe-${n}.err`);
  const limit = o.limitS ?? 60;
  return new Promise((resolve, reject) => {
    const h = spawn('python3', ['-c', SLOW_PIPES, outFile, errFile, String(o.delay ?? 0.3), '16384', '0.002', String(limit), process.execPath, CLI, ...args], {
      env: { ...process.env, ETCD_BACKUPD_NO_DAEMON: '1', ETCD_BACKUPD_LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let said = '';
    h.stdout.on('data', (d) => (said += d));
    h.stderr.on('data', (d) => (said += d));
    const timer = setTimeout(() => h.kill('SIGKILL'), (limit + 10) * 1000);
    h.on('error', reject);
    h.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`slow-pipe harness exited ${code}: ${said}`));
      resolve({ code: Number(said.trim()), stdout: readFileSync(outFile, 'utf8'), stderr: readFileSync(errFile, 'utf8') });
    });
  });
}

const NODE = 'master-0-' + 'n'.repeat(54); // 63 characters, the longest node name: long ids
const BACKUPS = 2000;
const CORRUPT = 600;
const INCOMPLETE = 16000;
const LABEL_LEN = 2000;
/** Multi-byte characters (a cut in the middle of one shows), and what JSON escapes. */
const labelOf = (i: number) => `é€😀 "q" \\ #${i} `.padEnd(LABEL_LEN, 'x');
const idAt = (ms: number) => `${new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${NODE}`;
const T0 = Date.UTC(2025, 0, 1);

/** Committed backups (manifests as the store holds them; nothing checks the objects when listing), unreadable manifests and manifest-less leftovers. */
function plantStore(store: string, leftovers: number): { ids: string[]; incomplete: string[] } {
  const ids: string[] = [];
  const incomplete: string[] = [];
  for (let i = 0; i < BACKUPS + CORRUPT; i++) {
    const createdAt = new Date(T0 + i * 3600_000).toISOString();
    const id = idAt(T0 + i * 3600_000);
    const d = join(store, 'c1', id);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'backup.tar'), 'x');
    if (i >= BACKUPS) {
      writeFileSync(join(d, 'manifest.json'), `{"not": "a manifest"`);
      continue;
    }
    ids.push(id);
    writeFileSync(
      join(d, 'manifest.json'),
      JSON.stringify({
        format: 1, id, cluster: 'c1', node: NODE, trigger: 'schedule', pinned: false, label: labelOf(i),
        createdAt, startedAt: createdAt, finishedAt: createdAt,
        tool: { name: 'etcd-backupd', version: '0.1.0' }, source: { type: 'etcdctl', possiblyDirty: false },
        preflight: { forced: false, failedChecks: [] }, etcd: { revision: i + 1, totalKey: 1, hash: 1, totalSize: 1 },
        artifacts: [{ name: 'snapshot_x.db', size: 1, sha256: '0'.repeat(64) }],
        object: { key: `c1/${id}/backup.tar`, size: 1, sha256: '0'.repeat(64), encrypted: false, recipients: [] },
      }),
    );
  }
  // Interrupted uploads long ago (past the 1 s grace): prune lists them.
  const old = new Date(Date.now() - 3600_000);
  for (let i = 0; i < leftovers; i++) {
    const id = idAt(T0 - (i + 1) * 1000);
    const d = join(store, 'c1', id);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'backup.tar'), 'x');
    utimesSync(join(d, 'backup.tar'), old, old);
    incomplete.push(id);
  }
  return { ids, incomplete };
}

describe('several MiB of --json through a slow pipe', () => {
  const root = tempDir('pipe');
  let planted: { ids: string[]; incomplete: string[] };
  // Two stores: `nfs` with the backups (a local store lists one directory at a time: each
  // run over it costs seconds), `big` with the same plus many manifest-less leftovers.
  const file = writeConfig(root, {
    cluster: 'c1', node: NODE, workDir: join(root, 'work'),
    source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP },
    etcd: { endpoints: ['http://127.0.0.1:2379'] },
    stores: [
      { name: 'nfs', type: 'local', path: join(root, 'store') },
      { name: 'big', type: 'local', path: join(root, 'big'), incompleteGrace: '1s' },
    ],
    retention: { keepLast: 1, daily: 3, weekly: 0, monthly: 0 },
  });
  beforeAll(() => {
    plantStore(join(root, 'store'), 0);
    planted = plantStore(join(root, 'big'), INCOMPLETE);
  }, 60_000);

  it(`list --json: ${BACKUPS} backups, ~5 MiB, whole; the unreadable manifests' warnings whole on stderr`, async () => {
    const r = await runThroughSlowPipes(root, ['list', '--config', file, '--json']);
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    expect(Buffer.byteLength(r.stdout)).toBeGreaterThan(4.5 * 1024 * 1024);
    const doc = JSON.parse(r.stdout);
    expect(doc.backups).toHaveLength(BACKUPS);
    const byId = new Map<string, { label: string; revision: number }>(doc.backups.map((b: { id: string; label: string; revision: number }) => [b.id, b]));
    planted.ids.forEach((id, i) => {
      expect(byId.get(id)?.label, id).toBe(labelOf(i));
      expect(byId.get(id)?.revision).toBe(i + 1);
    });
    expect(doc.incomplete).toEqual([]);
    expect(doc.problems).toHaveLength(CORRUPT);
    const warnings = r.stderr.split('\n').filter((l) => l.startsWith('warning: skipping unreadable manifest'));
    expect(Buffer.byteLength(r.stderr)).toBeGreaterThan(64 * 1024);
    expect(warnings).toHaveLength(CORRUPT);
    expect(r.stderr.endsWith('\n')).toBe(true);
  }, 60_000);

  it(`the issue's check: list --json | python3 json.load succeeds with ${BACKUPS} backups`, () => {
    const cmd = `set -o pipefail; "$0" "$1" list --config "$2" --json | python3 -c 'import json,sys; d = json.load(sys.stdin); print(len(d["backups"]))'`;
    const said = execFileSync('bash', ['-c', cmd, process.execPath, CLI, file], { env: { ...process.env, ETCD_BACKUPD_NO_DAEMON: '1' }, stdio: ['ignore', 'pipe', 'ignore'], timeout: 60_000 });
    expect(said.toString().trim()).toBe(String(BACKUPS));
  }, 60_000);

  it('a reader that stops early (| head): the CLI ends quietly, as shell tools do, with no error or stack on stderr', () => {
    const cmd = `"$0" "$1" list --config "$2" --json 2>"$3" | head -c 20; echo " status=\${PIPESTATUS[0]}"`;
    const errFile = join(root, 'head-stderr');
    const said = execFileSync('bash', ['-c', cmd, process.execPath, CLI, file, errFile], { env: { ...process.env, ETCD_BACKUPD_NO_DAEMON: '1' }, timeout: 60_000 }).toString();
    expect(said).toMatch(/^\{\n {2}"store": "[^\n]*[\s\S]* status=141\n$/);
    expect(readFileSync(errFile, 'utf8').split('\n').filter((l) => !l.startsWith('warning: skipping unreadable manifest') && l)).toEqual([]);
  }, 60_000);

  it('prune --dry-run --json: the whole plan and every leftover, 1.5 MiB and more', async () => {
    const r = await runThroughSlowPipes(root, ['prune', '--config', file, '--store', 'big', '--dry-run', '--json']);
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    expect(Buffer.byteLength(r.stdout)).toBeGreaterThan(1.5 * 1024 * 1024);
    const plan = JSON.parse(r.stdout);
    expect(plan.dryRun).toBe(true);
    expect(plan.keep.length + plan.prune.length).toBe(BACKUPS);
    expect(plan.keep.map((k: { id: string }) => k.id)).toContain(planted.ids.at(-1));
    expect([...plan.incomplete].sort()).toEqual([...planted.incomplete].sort());
    expect(readdirSync(join(root, 'big', 'c1'))).toHaveLength(BACKUPS + CORRUPT + INCOMPLETE); // a dry run
  }, 60_000);

  it('retention --simulate --json: 100,000 times in, the whole plan out', async () => {
    const times = join(root, 'times.txt');
    const n = 100_000;
    writeFileSync(times, Array.from({ length: n }, (_, i) => new Date(T0 + i * 3600_000).toISOString()).join('\n'));
    const r = await runThroughSlowPipes(root, ['retention', '--config', file, '--simulate', times, '--now', new Date(T0 + n * 3600_000).toISOString(), '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(Buffer.byteLength(r.stdout)).toBeGreaterThan(4 * 1024 * 1024);
    const plan = JSON.parse(r.stdout);
    expect(plan.keep.length + plan.prune.length).toBe(n);
    expect(plan.prune.at(-1)).toEqual({ time: new Date(T0).toISOString() });
  }, 60_000);
});

describe('every other command through a slow pipe', () => {
  let etcd: EtcdCluster;
  let env: Env;
  let root: string;
  let id: string;

  beforeAll(async () => {
    root = tempDir('pipe-small');
    etcd = await startEtcdCluster({ members: 1, tls: false });
    await etcd.putMany([['/registry/configmaps/ns/a', 'v']]);
    env = makeEnv(root, 'env', etcd, { retention: { keepLast: 10, daily: 0, weekly: 0, monthly: 0 } });
  }, 120_000);
  afterAll(async () => {
    await etcd?.stop();
  });

  /** Stderr: JSON log lines (each whole) and the CLI's own lines. */
  const logLines = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);

  it('backup, list, verify, fetch, inspect (snapshot and bundle) --json', async () => {
    const b = await runThroughSlowPipes(root, ['backup', '--config', env.file, '--json']);
    expect(b.code, b.stderr).toBe(0);
    const doc = JSON.parse(b.stdout);
    expect(doc.result).toBe('success');
    id = doc.id;
    expect(logLines(b.stderr).some((l) => l.msg === 'backup run finished')).toBe(true);

    const l = await runThroughSlowPipes(root, ['list', '--config', env.file, '--json']);
    expect(l.code, l.stderr).toBe(0);
    expect(JSON.parse(l.stdout).backups.map((x: { id: string }) => x.id)).toEqual([id]);

    const v = await runThroughSlowPipes(root, ['verify', '--config', env.file, 'latest', '--json']);
    expect(v.code, v.stderr).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ result: 'ok', store: 'nfs' });

    const to = join(root, 'fetched');
    const f = await runThroughSlowPipes(root, ['fetch', '--config', env.file, 'latest', '--to', to, '--json']);
    expect(f.code, f.stderr).toBe(0);
    const fetched = JSON.parse(f.stdout);
    expect(fetched).toMatchObject({ id, result: 'success' });

    const i = await runThroughSlowPipes(root, ['inspect', fetched.snapshot, '--json']);
    expect(i.code, i.stderr).toBe(0);
    expect(JSON.parse(i.stdout).revision).toBe(fetched.revision);

    const dir = join(String((env.cfg.stores as { path: string }[])[0]!.path), 'c1', id);
    const bundle = readdirSync(dir).find((n) => n.startsWith('backup.tar'))!;
    const ib = await runThroughSlowPipes(root, ['inspect', join(dir, bundle), '--json']);
    expect(ib.code, ib.stderr).toBe(0);
    expect(JSON.parse(ib.stdout)).toMatchObject({ revision: fetched.revision, trailer: 'ok' });
  }, 120_000);

  it('keygen, check-config, --version --json, --help, and an error with --json', async () => {
    const k = await runThroughSlowPipes(root, ['keygen', '--out', join(root, 'signing'), '--json']);
    expect(k.code, k.stderr).toBe(0);
    expect(JSON.parse(k.stdout).keyId).toMatch(/^[0-9a-f]{16}$/);
    expect(existsSync(join(root, 'signing.pub'))).toBe(true);

    const c = await runThroughSlowPipes(root, ['check-config', '--config', env.file, '--json']);
    expect(c.code, c.stderr).toBe(0);
    expect(JSON.parse(c.stdout).cluster).toBe('c1');

    const ver = await runThroughSlowPipes(root, ['--version', '--json']);
    expect(ver.code).toBe(0);
    expect(JSON.parse(ver.stdout)).toMatchObject({ name: 'etcd-backupd', node: expect.stringMatching(/^v\d+/) });

    const h = await runThroughSlowPipes(root, ['--help']);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/^etcd-backupd .* verified etcd backups/);
    expect(h.stdout).toMatch(/Exit codes: 0 success, 1 the operation failed, 2 bad usage or config, 141 stdout closed early\.\n+$/);

    const e = await runThroughSlowPipes(root, ['verify', '--config', env.file, '20200101T000000Z-nope', '--json']);
    expect(e.code).toBe(1);
    // --json: the failure is one JSON document on stdout, whole through the slow pipe; the words stay on stderr.
    expect(JSON.parse(e.stdout)).toMatchObject({ reason: 'not-found', error: 'store nfs holds no committed backup with id 20200101T000000Z-nope' });
    expect(e.stderr).toMatch(/^error: store nfs holds no committed backup with id 20200101T000000Z-nope\n {2}what to do: .*\n {2}reason: not-found\n$/);
  }, 60_000);

  it('through a running daemon: the echoed log lines on stderr and the result on stdout', async () => {
    const d = await startDaemonProcess(env.file);
    try {
      await d.waitFor((l) => l.msg === 'etcd-backupd daemon started', 30_000, 'daemon up');
      const withDaemon = { ETCD_BACKUPD_NO_DAEMON: '' };
      let j: Piped | undefined;
      for (let i = 0; i < 40; i++) {
        j = await runThroughSlowPipes(root, ['backup', '--config', env.file, '--label', 'via-daemon', '--json'], withDaemon);
        if (j.code === 0 || !/lock-busy|already running/.test(j.stdout + j.stderr)) break;
        await new Promise((r) => setTimeout(r, 300));
      }
      expect(j!.code, j!.stderr).toBe(0);
      expect(JSON.parse(j!.stdout)).toMatchObject({ result: 'success', trigger: 'manual' });
      const echoed = logLines(j!.stderr);
      expect(echoed.some((l) => l.msg === 'backup run started')).toBe(true);
      expect(echoed.some((l) => l.msg === 'backup run finished')).toBe(true);

      const h = await runThroughSlowPipes(root, ['backup', '--config', env.file, '--label', 'via-daemon-2'], withDaemon);
      expect(h.code, h.stderr).toBe(0);
      expect(h.stdout).toMatch(/^backup \S+ succeeded: /);
      expect(h.stderr).toMatch(/^\[daemon\] backup run started/m);
    } finally {
      await d.stop();
    }
  }, 120_000);
});
