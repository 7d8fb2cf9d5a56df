import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ConfigError, keyPath, loadConfig, parseConfig, type Config } from '../../src/config/load.js';
import { allPaths, clone, deepNest, deleteAt, getAt, hostileValue, Rng, setAt, type Path } from '../support/fuzz.js';

/**
 * The config loader on hostile input: thousands of mutated documents. Each
 * must end as a valid config or as a ConfigError whose every problem names
 * the key it is about; never another exception, never a hang. A config the
 * loader accepts must be one the daemon can run with.
 */
const dir = mkdtempSync(join(tmpdir(), 'ebd-fuzz-config-'));
const script = join(dir, 'cluster-backup.sh');
writeFileSync(script, '#!/bin/sh\n', { mode: 0o755 });
mkdirSync(join(dir, 'manifests'));
for (const f of ['ca.crt', 'client.crt', 'client.key', 'ak', 'sk', 'id_ed25519', 'known_hosts']) writeFileSync(join(dir, f), 'x\n', { mode: 0o600 });
const file = join(dir, 'config.yaml');

/** A valid config using every section, so mutations can reach every key. */
function full(): Record<string, unknown> {
  return {
    cluster: 'prod-east',
    node: 'master-0',
    workDir: join(dir, 'work'),
    schedule: '0 2 * * *',
    timezone: 'Europe/Berlin',
    jitter: '30s',
    shutdownTimeout: '60s',
    readyFailureThreshold: 3,
    source: { type: 'cluster-backup', script, timeout: '30m', env: { KUBECONFIG: '/etc/kubernetes/kubeconfig' } },
    etcd: {
      endpoints: ['https://127.0.0.1:2379', 'https://10.0.0.2:2379'],
      caFile: join(dir, 'ca.crt'),
      certFile: join(dir, 'client.crt'),
      keyFile: join(dir, 'client.key'),
      timeout: '10s',
    },
    preflight: { requireHealthy: true, freeSpaceFactor: 2 },
    stores: [
      { name: 'nfs', type: 'local', path: '/mnt/backups', verify: 'readback', incompleteGrace: '24h' },
      {
        name: 's3',
        type: 's3',
        bucket: 'etcd-backups',
        prefix: 'clusters',
        region: 'us-east-1',
        endpoint: 'https://s3.example.internal',
        forcePathStyle: true,
        accessKeyIdFile: join(dir, 'ak'),
        secretAccessKeyFile: join(dir, 'sk'),
        sse: 'aws:kms',
        kmsKeyId: 'alias/etcd',
        partSize: 16777216,
        queueSize: 4,
        verify: 'size',
      },
      { name: 'vault', type: 'sftp', host: 'backup.example.internal', port: 22, username: 'etcd', privateKeyFile: join(dir, 'id_ed25519'), knownHostsFile: join(dir, 'known_hosts'), path: '/srv/etcd', timeout: '30s' },
    ],
    retention: { keepLast: 3, hourly: 0, daily: 7, weekly: 4, monthly: 12, yearly: 0, keepWithin: '1y2mo' },
    local: { keep: 1, maxPending: 5, retryMin: '1m', retryMax: '1h' },
    encryption: { recipients: [] },
    metrics: { listen: '127.0.0.1:9979' },
    control: { socket: '/run/etcd-backupd/control.sock' },
    coordination: { mode: 'etcd', onNoQuorum: 'backup', leaderDelay: '5s', leaseTtl: '15s', maxAttempts: 3 },
  };
}

/** Node timers fire at once for a delay above this (TimeoutOverflowWarning): a "30d" timeout would mean "now". */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** What a config the loader accepts must satisfy for the daemon to run with it. */
function checkRunnable(c: Config): string[] {
  const bad: string[] = [];
  const dur = (what: string, seconds: number) => {
    if (!Number.isFinite(seconds) || seconds < 0 || seconds * 1000 > MAX_TIMER_MS) bad.push(`${what} = ${seconds}s cannot be a Node timer`);
  };
  dur('source.timeout', c.source.timeoutSeconds);
  dur('etcd.timeout', c.etcd.timeoutSeconds);
  for (const k of ['jitter', 'shutdownTimeout'] as const) dur(k, secondsOf(c[k]));
  for (const k of ['retryMin', 'retryMax'] as const) dur(`local.${k}`, secondsOf(c.local[k]));
  dur('coordination.leaderDelay', secondsOf(c.coordination.leaderDelay));
  const ttl = secondsOf(c.coordination.leaseTtl);
  if (!Number.isInteger(ttl) || ttl < 2 || ttl > 300) bad.push(`coordination.leaseTtl = ${ttl}s is no etcd lease TTL`);
  c.stores.forEach((s, i) => {
    if (s.type === 'sftp') dur(`stores[${i}].timeout`, secondsOf(s.timeout));
    if (s.type === 'sftp' && !(s.port >= 1 && s.port <= 65535)) bad.push(`stores[${i}].port ${s.port}`);
  });
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(c.metrics.listen);
  if (!m || Number(m[3]) > 65535) bad.push(`metrics.listen ${c.metrics.listen} is no address the metrics server can bind`);
  if (!Number.isFinite(c.preflight.freeSpaceFactor)) bad.push('preflight.freeSpaceFactor');
  if (typeof c.cluster !== 'string' || typeof c.node !== 'string') bad.push('cluster/node');
  return bad;
}

function secondsOf(d: string): number {
  // The same grammar as src/units/duration.ts, evaluated independently.
  if (d.trim() === '0') return 0;
  const unit: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
  let total = 0;
  for (const m of d.trim().matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)) total += Number(m[1]) * unit[m[2]!]!;
  return total;
}

/** A problem line names a key: `a.b[0].c: ...`, `(top level): ...` or, for YAML text, `YAML syntax: ...`. */
const NAMES_A_KEY = /^(\(top level\)|YAML syntax|cannot read config file|[\s\S]+?): \S/;

type Outcome = { ok: true; cfg: Config } | { ok: false; problems: string[] };

function outcome(fn: () => Config): Outcome {
  try {
    return { ok: true, cfg: fn() };
  } catch (e) {
    if (!(e instanceof ConfigError)) {
      throw new Error(`not a ConfigError but ${(e as Error)?.constructor?.name}: ${(e as Error)?.message?.slice(0, 300)}`);
    }
    return { ok: false, problems: e.problems };
  }
}

function mutateDoc(r: Rng, doc: Record<string, unknown>): { doc: unknown; touched: Path[] } {
  const touched: Path[] = [];
  const rounds = 1 + r.int(3);
  let root: unknown = doc;
  for (let i = 0; i < rounds; i++) {
    const paths = allPaths(root);
    const p = paths.length ? r.pick(paths) : [];
    switch (r.int(9)) {
      case 0:
        deleteAt(root, p);
        touched.push(p);
        break;
      case 1:
      case 2:
      case 3:
        setAt(root, p, hostileValue(r));
        touched.push(p);
        break;
      case 4: {
        // an unknown key next to a known one
        const at = p.slice(0, -1);
        const parent = at.length ? getAt(root, at) : root;
        if (parent && typeof parent === 'object' && !Array.isArray(parent)) {
          const k = r.pick(['bogus', 'keeplast', 'Stores', 'retention ', '__proto__', 'constructor', 'toString', r.string(8) || 'k']);
          setAt(root, [...at, k], hostileValue(r));
          touched.push([...at, k]);
        }
        break;
      }
      case 5: {
        // a typo: the key renamed
        const v = getAt(root, p);
        if (typeof p[p.length - 1] === 'string') {
          deleteAt(root, p);
          setAt(root, [...p.slice(0, -1), `${String(p[p.length - 1])}s`], v);
          touched.push(p);
        }
        break;
      }
      case 6:
        // copy a value from elsewhere (type confusion between sections)
        if (paths.length) setAt(root, p, clone(getAt(root, r.pick(paths))));
        touched.push(p);
        break;
      case 7:
        setAt(root, p, deepNest(r.pick([10, 200, 2000]), r.bool()));
        touched.push(p);
        break;
      default:
        if (r.bool(0.1)) root = hostileValue(r);
        break;
    }
  }
  return { doc: root, touched };
}

describe('parseConfig on mutated documents', () => {
  it('the base document is valid (so each mutation is what breaks it)', () => {
    const o = outcome(() => parseConfig(full(), file));
    expect(o.ok, o.ok ? '' : o.problems.join('\n')).toBe(true);
  });

  it('3000 mutations: a valid, runnable config or a ConfigError naming the key, never anything else', () => {
    const failures: string[] = [];
    let valid = 0;
    let slowest = 0;
    for (let seed = 1; seed <= 3000; seed++) {
      const r = new Rng(seed);
      const { doc, touched } = mutateDoc(r, full());
      const t0 = performance.now();
      let o: Outcome;
      try {
        o = outcome(() => parseConfig(doc, file));
      } catch (e) {
        failures.push(`seed ${seed}: ${(e as Error).message}`);
        continue;
      }
      slowest = Math.max(slowest, performance.now() - t0);
      if (o.ok) {
        valid++;
        const bad = checkRunnable(o.cfg);
        if (bad.length) failures.push(`seed ${seed}: accepted but not runnable: ${bad.join('; ')} (mutated ${touched.map(keyPath).join(', ')})`);
        continue;
      }
      const unnamed = o.problems.filter((p) => !NAMES_A_KEY.test(p));
      if (o.problems.length === 0 || unnamed.length) failures.push(`seed ${seed}: problems without a key: ${JSON.stringify(unnamed.length ? unnamed : o.problems).slice(0, 300)}`);
      // A problem about the key we broke (or one of its parents) is reported.
      const named = touched.some((t) => o.problems.some((p) => t.some((_, i) => p.startsWith(keyPath(t.slice(0, i + 1))))));
      if (!named && !o.problems.some((p) => p.startsWith('(top level)'))) {
        // Breaking one key can surface as a problem elsewhere (a discriminator, a pair of keys); it must still name a real key.
        if (!o.problems.every((p) => /^[A-Za-z_]/.test(p))) failures.push(`seed ${seed}: ${o.problems.join(' | ').slice(0, 300)}`);
      }
    }
    expect(failures.slice(0, 25).join('\n')).toBe('');
    expect(valid).toBeGreaterThan(20); // some mutations are harmless: the test sees both outcomes
    expect(slowest).toBeLessThan(2000);
  });

  it('durations the daemon turns into timers are bounded (Node fires an oversized timer at once)', () => {
    // source.timeout: 30d would kill cluster-backup.sh after 1 ms with reason source-timeout;
    // local.retryMin: 30d would make the outbox retry loop spin every millisecond.
    for (const [path, value] of [
      [['source', 'timeout'], '30d'],
      [['local', 'retryMin'], '30d'],
      [['shutdownTimeout'], '4w'],
      [['etcd', 'timeout'], '25d'],
    ] as [Path, string][]) {
      const doc = full();
      setAt(doc, path, value);
      if (path[1] === 'retryMin') setAt(doc, ['local', 'retryMax'], '60d');
      const o = outcome(() => parseConfig(doc, file));
      if (o.ok) expect(checkRunnable(o.cfg), `${keyPath(path)}: ${value} was accepted`).toEqual([]);
      else expect(o.problems.join('\n')).toMatch(new RegExp(`^${keyPath(path).replace(/[.[\]]/g, '\\$&')}: `, 'm'));
    }
  });

  it('metrics.listen with a port above 65535 is refused at load time, not when the daemon binds', () => {
    const doc = full();
    setAt(doc, ['metrics', 'listen'], '127.0.0.1:99999');
    const o = outcome(() => parseConfig(doc, file));
    expect(o.ok ? checkRunnable(o.cfg) : o.problems.join('\n')).toEqual(expect.stringMatching(/^metrics\.listen: /m));
  });
});

describe('loadConfig on mutated YAML text', () => {
  const baseText = stringify(full());
  const write = (text: string | Buffer) => {
    writeFileSync(file, text);
    return file;
  };

  const aliasBomb = [
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]',
    'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]',
    'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]',
    'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]',
    'f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]',
    'g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]',
  ].join('\n');

  const special: [string, string][] = [
    ['billion laughs (alias bomb)', `${aliasBomb}\n${baseText}`],
    ['an alias bomb inside a known key', baseText.replace(/^jitter: .*$/m, `jitter: *g`).replace(/^/, `${aliasBomb}\n`)],
    ['an alias to an anchor that does not exist', baseText.replace(/^node: .*$/m, 'node: *nowhere')],
    ['an anchor used before it is defined', `node: *later\n${baseText.replace(/^cluster: (.*)$/m, 'cluster: &later $1')}`],
    ['a legitimate alias (anchors are YAML, people use them)', baseText.replace(/^cluster: (.*)$/m, 'cluster: &c $1').replace(/^node: .*$/m, 'node: *c')],
    ['a merge key', `x: &x {keepLast: 1}\n${baseText}`.replace(/^retention:$/m, 'retention:\n  <<: *x')],
    ['duplicate keys', `${baseText}\ncluster: again\n`],
    ['two documents', `${baseText}---\n${baseText}`],
    ['a scalar document', '42\n'],
    ['a list document', '- a\n- b\n'],
    ['an empty file', ''],
    ['only a comment', '# nothing here\n'],
    ['a byte order mark', `\ufeff${baseText}`],
    ['NUL bytes', baseText.replace('prod-east', 'prod\0east')],
    ['tabs as indentation', baseText.replace(/^ {2}/gm, '\t')],
    ['CRLF line ends', baseText.replace(/\n/g, '\r\n')],
    ['a 1 MiB string value', baseText.replace(/^cluster: .*$/m, `cluster: ${'x'.repeat(1 << 20)}`)],
    ['deeply nested flow sequences', `${baseText}deep: ${'['.repeat(20000)}${']'.repeat(20000)}\n`],
    ['deeply nested block mappings', `${baseText}deep:\n${Array.from({ length: 3000 }, (_, i) => `${' '.repeat(i + 1)}k${i}:`).join('\n')} 1\n`],
    ['a huge integer', baseText.replace(/keepLast: \d+/, `keepLast: ${'9'.repeat(400)}`)],
    ['a hex / octal / infinity number', baseText.replace(/keepLast: \d+/, 'keepLast: .inf').replace(/daily: \d+/, 'daily: 0x10').replace(/weekly: \d+/, 'weekly: 0o17')],
    ['binary and custom tags', baseText.replace(/^cluster: .*$/m, 'cluster: !!binary cHJvZC1lYXN0').replace(/^node: .*$/m, 'node: !custom master-0')],
    ['a complex mapping key', `${baseText}? [a, b]\n: c\n`],
    ['an unknown YAML directive', `%FOO bar\n---\n${baseText}`],
    ['random binary', ''],
  ];

  it.each(special)('%s: a valid config or a ConfigError (names the key), quickly', (_what, text) => {
    const t0 = performance.now();
    const o = outcome(() => loadConfig(write(text || new Rng(7).bytes(4096))));
    expect(performance.now() - t0).toBeLessThan(5000);
    if (o.ok) expect(checkRunnable(o.cfg)).toEqual([]);
    else for (const p of o.problems) expect(p).toMatch(NAMES_A_KEY);
  });

  it('1000 byte-level mutations of the YAML text (truncation, flips, insertions, line shuffles)', () => {
    const failures: string[] = [];
    const lines = baseText.split('\n');
    let valid = 0;
    for (let seed = 1; seed <= 1000; seed++) {
      const r = new Rng(100_000 + seed);
      let text: Buffer;
      switch (r.int(7)) {
        case 0:
          text = Buffer.from(baseText.slice(0, r.int(baseText.length)));
          break;
        case 1: {
          text = Buffer.from(baseText);
          for (let i = 1 + r.int(5); i > 0; i--) text[r.int(text.length)] = r.int(256);
          break;
        }
        case 2: {
          const at = r.int(baseText.length);
          text = Buffer.from(baseText.slice(0, at) + r.pick(['&a ', '*a', '!!str ', '{', '[', ']', '}', ': ', '- ', '|\n', '>-\n', '"', "'", '#', '\t', '? ', '---\n', '...\n', '%YAML 1.1\n']) + baseText.slice(at));
          break;
        }
        case 3: {
          const l = [...lines];
          const i = r.int(l.length);
          const j = r.int(l.length);
          [l[i], l[j]] = [l[j]!, l[i]!];
          text = Buffer.from(l.join('\n'));
          break;
        }
        case 4: {
          const l = [...lines];
          const i = r.int(l.length);
          l[i] = r.bool() ? `  ${l[i]}` : l[i]!.replace(/^ {2}/, '');
          text = Buffer.from(l.join('\n'));
          break;
        }
        case 5: {
          const l = [...lines];
          l.splice(r.int(l.length), 1);
          text = Buffer.from(l.join('\n'));
          break;
        }
        default:
          text = r.bytes(r.int(2048));
      }
      const t0 = performance.now();
      try {
        const o = outcome(() => loadConfig(write(text)));
        if (o.ok) {
          valid++;
          const bad = checkRunnable(o.cfg);
          if (bad.length) failures.push(`seed ${seed}: accepted but not runnable: ${bad.join('; ')}`);
        } else {
          const unnamed = o.problems.filter((p) => !NAMES_A_KEY.test(p));
          if (unnamed.length) failures.push(`seed ${seed}: problems without a key: ${JSON.stringify(unnamed).slice(0, 300)}`);
        }
      } catch (e) {
        failures.push(`seed ${seed}: ${(e as Error).message}`);
      }
      if (performance.now() - t0 > 3000) failures.push(`seed ${seed}: took ${Math.round(performance.now() - t0)} ms`);
    }
    expect(failures.slice(0, 25).join('\n')).toBe('');
    expect(valid).toBeGreaterThan(10);
  });
});
