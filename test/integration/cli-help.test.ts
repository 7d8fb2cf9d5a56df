/**
 * Issue 18, the CLI a new user meets: every verb answers `--help` (exit 0,
 * its own usage on stdout) and `help VERB` the same; with `--json` every
 * failure is one JSON document on stdout with a reason; `pin latest` works as
 * `verify latest` does; `list` shows the pin's reason and counts in English.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempDir, writeConfig } from '../support/cli.js';
import { ensureTool, startEtcdCluster, type EtcdCluster } from '../support/etcd.js';

const VERBS = ['backup', 'list', 'verify', 'fetch', 'restore', 'prune', 'retention', 'pin', 'unpin', 'run', 'inspect', 'keygen', 'check-config'];

let cluster: EtcdCluster;
let dir: string;
let cfg: string;
let id: string;

beforeAll(async () => {
  dir = tempDir('cli-help');
  cluster = await startEtcdCluster({ members: 1, tls: false });
  await cluster.putMany([['/registry/a', '1'], ['/registry/b', '2']]);
  const manifests = join(dir, 'manifests');
  mkdirSync(manifests, { recursive: true });
  writeFileSync(join(manifests, 'etcd-pod.yaml'), 'kind: Pod\n');
  cfg = writeConfig(dir, {
    cluster: 'help-cluster',
    node: 'master-0',
    workDir: join(dir, 'work'),
    source: { type: 'etcdctl', etcdctl: ensureTool('etcdctl'), staticPodDir: manifests, timeout: '30s' },
    etcd: { endpoints: cluster.endpoints },
    stores: [{ name: 'nfs', type: 'local', path: join(dir, 'store') }],
  });
  const r = await runCli(['backup', '--config', cfg, '--json']);
  expect(r.code, r.stderr).toBe(0);
  id = (JSON.parse(r.stdout) as { id: string }).id;
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('help', () => {
  it.each(VERBS)('%s --help and help %s: exit 0, the verb\'s own usage on stdout', async (verb) => {
    for (const args of [[verb, '--help'], ['help', verb], [verb, '-h']]) {
      const r = await runCli(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      expect(r.stdout.toLowerCase()).toContain(`usage:`);
      expect(r.stdout).toContain(`etcd-backupd ${verb}`);
      expect(r.stderr).toBe('');
    }
  });

  it('help of an unknown verb is a usage error; the top-level help says every command has --help', async () => {
    const r = await runCli(['help', 'frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('no command "frobnicate"');
    expect((await runCli(['--help'])).stdout).toContain('Every command answers --help');
  });
});

describe('--json on failure: one JSON document on stdout with a reason', () => {
  const cases: [string, () => string[], string][] = [
    ['an unknown store', () => ['list', '--config', cfg, '--store', 'nope', '--json'], 'usage'],
    ['an unknown backup id', () => ['verify', '--config', cfg, '20200101T000000Z-nobody', '--json'], 'not-found'],
    ['a missing config file', () => ['list', '--config', join(dir, 'missing.yaml'), '--json'], 'config-invalid'],
    ['a --to that holds a backup already', () => ['fetch', '--config', cfg, 'latest', '--to', join(dir, 'fetched'), '--json'], 'usage'],
  ];
  beforeAll(async () => {
    const first = await runCli(['fetch', '--config', cfg, 'latest', '--to', join(dir, 'fetched')]);
    expect(first.code, first.stderr).toBe(0);
  });
  it.each(cases)('%s', async (_name, args, reason) => {
    const r = await runCli(args());
    expect(r.code).not.toBe(0);
    const doc = JSON.parse(r.stdout) as { reason: string; error: string; hint?: string };
    expect(doc.reason).toBe(reason);
    expect(doc.error.length).toBeGreaterThan(0);
  });

  it('a missing config file is not told to "fix the keys named above"', async () => {
    const r = await runCli(['list', '--config', join(dir, 'missing.yaml'), '--json']);
    const doc = JSON.parse(r.stdout) as { hint: string };
    expect(doc.hint).not.toContain('keys named above');
    expect(doc.hint).toContain('--config');
  });
});

describe('inspect says what a file is', () => {
  it('a missing file: not-found, no stack trace; a snapshot whose trailer does not match: exit 1 and why', async () => {
    const missing = await runCli(['inspect', join(dir, 'nope.db')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('reason: not-found');
    expect(missing.stderr).not.toMatch(/\n\s+at /);
    const fetched = await runCli(['fetch', '--config', cfg, 'latest', '--to', join(dir, 'for-inspect'), '--json']);
    expect(fetched.code, fetched.stderr).toBe(0);
    const snap = (JSON.parse(fetched.stdout) as { snapshot: string }).snapshot;
    const bytes = readFileSync(snap);
    bytes[bytes.length - 1] ^= 0xff; // inside the sha256 trailer
    const bad = join(dir, 'bad-trailer.db');
    writeFileSync(bad, bytes);
    const r = await runCli(['inspect', bad]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('HASH (hex)');
    expect(r.stdout).toContain('mismatch');
    expect(r.stderr).toContain('does not match its content');
  });
});

describe('check-config', () => {
  it('prints a config that loads again to the same effective configuration', async () => {
    const first = await runCli(['check-config', '--config', cfg]);
    expect(first.code, first.stderr).toBe(0);
    const again = join(dir, 'effective.yaml');
    writeFileSync(again, first.stdout, { mode: 0o600 });
    const second = await runCli(['check-config', '--config', again]);
    expect(second.code, second.stderr).toBe(0);
    const body = (t: string) => t.replace(/^#.*\n/, '');
    expect(body(second.stdout)).toBe(body(first.stdout));
    const asJson = await runCli(['check-config', '--config', again, '--json']);
    const doc = JSON.parse(asJson.stdout) as Record<string, unknown>;
    expect(doc.configPath).toBeUndefined();
    expect((doc.retention as Record<string, unknown>).keepWithinSeconds).toBeUndefined();
  });
});

describe('pin latest and list', () => {
  it('pins the newest backup by `latest`, and list shows the reason', async () => {
    const p = await runCli(['pin', '--config', cfg, 'latest', '--reason', 'before the 4.18 upgrade', '--json']);
    expect(p.code, p.stderr).toBe(0);
    expect(JSON.parse(p.stdout)).toMatchObject({ id, pinned: true });
    const l = await runCli(['list', '--config', cfg]);
    expect(l.code, l.stderr).toBe(0);
    expect(l.stdout).toContain('yes: before the 4.18 upgrade');
    expect(l.stdout).toContain('1 backup in store nfs');
    const u = await runCli(['unpin', '--config', cfg, 'latest']);
    expect(u.code, u.stderr).toBe(0);
    expect(u.stdout).toContain(`unpinned ${id}`);
  });
});
