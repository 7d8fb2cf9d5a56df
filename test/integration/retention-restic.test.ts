/**
 * restic as an oracle for the retention planner.
 *
 * One repository holds two series (restic groups `forget` by host+paths):
 *   - host "utc":   ~62 snapshots over 2+ years, created with TZ=UTC, so
 *                   restic buckets them in UTC;
 *   - host "tokyo": ~16 snapshots created with TZ=Asia/Tokyo, so restic
 *                   records +09:00 and buckets them in Tokyo wall-clock time.
 * For each policy, `restic forget --dry-run --json` is compared with
 * planRetention (timeZone 'UTC' resp. 'Asia/Tokyo'): the multiset of kept
 * snapshot times and, per kept snapshot, the matched rules. Times rather
 * than ids are compared because restic orders snapshots with equal times
 * arbitrarily (there is a deliberate duplicate timestamp).
 *
 * restic is required: the suite fails (does not skip) when it is missing.
 *
 * Speed: every restic command spends ~0.5 s of CPU in scrypt (restic
 * calibrates the KDF to that at `init`). To keep ~80 backups well under a
 * minute, the test adds a second key for the same master key with cheap scrypt
 * parameters (see addCheapKey; restic's documented key-file format) and
 * selects it with RESTIC_KEY_HINT. That only changes how the repository is
 * unlocked, not anything `forget` computes. Backups run one at a time:
 * restic 0.14 racing on another process's vanishing lock file retries with
 * backoff for ~45 s ("Load(<lock/...>) returned error, retrying"). The
 * `forget --dry-run --no-lock` runs take no lock and run in parallel.
 */
import { execFile } from 'node:child_process';
import { createCipheriv, createDecipheriv, createHash, randomBytes, scryptSync } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { parseDuration, planRetention, type RetentionItem, type RetentionPolicy } from '../../src/retention/plan.js';
import { rng } from '../support/rng.js';

const execFileP = promisify(execFile);

const PASSWORD = 'retention-oracle';
let dir = '';
let repo = '';
let data = '';
let keyHint = '';

function resticEnv(tz: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('RESTIC_')) env[k] = v;
  return { ...env, TZ: tz, RESTIC_PASSWORD: PASSWORD, ...(keyHint !== '' ? { RESTIC_KEY_HINT: keyHint } : {}) };
}

async function restic(args: string[], tz = 'UTC'): Promise<string> {
  try {
    const { stdout } = await execFileP('restic', ['--no-cache', '--repo', repo, ...args], {
      env: resticEnv(tz),
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout;
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`restic ${args.join(' ')} failed: ${err.message}\n${err.stderr ?? ''}`);
  }
}

async function pool<T>(tasks: (() => Promise<T>)[], width: number): Promise<T[]> {
  const out: T[] = new Array(tasks.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < tasks.length) {
      const i = next++;
      out[i] = await tasks[i]!();
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, tasks.length) }, worker));
  return out;
}

/** Little-endian bytes -> bigint. */
function le(b: Uint8Array): bigint {
  const hex = Buffer.from(b).reverse().toString('hex');
  return hex === '' ? 0n : BigInt(`0x${hex}`);
}

/** restic's MAC: Poly1305-AES (RFC 7539 Poly1305 with s = AES-128_k(nonce)). */
function poly1305Aes(k: Buffer, r: Buffer, nonce: Buffer, msg: Buffer): Buffer {
  const aes = createCipheriv('aes-128-ecb', k, null).setAutoPadding(false);
  const s = Buffer.concat([aes.update(nonce), aes.final()]);
  const clamped = le(r) & 0x0ffffffc0ffffffc0ffffffc0fffffffn;
  const p = (1n << 130n) - 5n;
  let acc = 0n;
  for (let i = 0; i < msg.length; i += 16) {
    const chunk = msg.subarray(i, i + 16);
    acc = ((acc + le(chunk) + (1n << BigInt(8 * chunk.length))) * clamped) % p;
  }
  acc = (acc + le(s)) & ((1n << 128n) - 1n);
  return Buffer.from(acc.toString(16).padStart(32, '0'), 'hex').reverse();
}

/**
 * Adds a key file that unlocks the repository's master key with cheap scrypt
 * parameters and returns its id (for RESTIC_KEY_HINT). Format: keys/<sha256>
 * is JSON {kdf:"scrypt", N, r, p, salt, data}; scrypt(password, salt) gives 64
 * bytes = AES-256 key || MAC k || MAC r; data = IV || AES-256-CTR(master key
 * JSON) || Poly1305-AES(ciphertext). The MAC of the existing key is checked
 * first, which proves this implementation before restic ever sees its output.
 */
async function addCheapKey(repoDir: string, password: string): Promise<string> {
  const keysDir = join(repoDir, 'keys');
  const names = await readdir(keysDir);
  expect(names).toHaveLength(1);
  const orig = JSON.parse(await readFile(join(keysDir, names[0]!), 'utf8')) as {
    N: number; r: number; p: number; salt: string; data: string;
  };
  const userKey = scryptSync(password, Buffer.from(orig.salt, 'base64'), 64, {
    N: orig.N, r: orig.r, p: orig.p, maxmem: 1024 * 1024 * 1024,
  });
  const blob = Buffer.from(orig.data, 'base64');
  const iv = blob.subarray(0, 16);
  const ct = blob.subarray(16, blob.length - 16);
  const mac = blob.subarray(blob.length - 16);
  expect(poly1305Aes(userKey.subarray(32, 48), userKey.subarray(48, 64), iv, ct).equals(mac)).toBe(true);
  const dec = createDecipheriv('aes-256-ctr', userKey.subarray(0, 32), iv);
  const master = Buffer.concat([dec.update(ct), dec.final()]);

  const cheap = { N: 1024, r: 8, p: 1 };
  const salt = randomBytes(64);
  const newKey = scryptSync(password, salt, 64, cheap);
  const newIv = randomBytes(16);
  const enc = createCipheriv('aes-256-ctr', newKey.subarray(0, 32), newIv);
  const newCt = Buffer.concat([enc.update(master), enc.final()]);
  const newMac = poly1305Aes(newKey.subarray(32, 48), newKey.subarray(48, 64), newIv, newCt);
  const file = Buffer.from(
    JSON.stringify({
      created: new Date().toISOString(),
      username: 'test',
      hostname: 'test',
      kdf: 'scrypt',
      ...cheap,
      salt: salt.toString('base64'),
      data: Buffer.concat([newIv, newCt, newMac]).toString('base64'),
    }),
  );
  const id = createHash('sha256').update(file).digest('hex');
  await writeFile(join(keysDir, id), file);
  return id;
}

/** "YYYY-MM-DD HH:MM:SS" of an instant in UTC shifted by offsetHours (restic --time is local time). */
function resticTime(ms: number, offsetHours = 0): string {
  return new Date(ms + offsetHours * 3_600_000).toISOString().slice(0, 19).replace('T', ' ');
}

const U = (s: string): number => Date.parse(`${s}Z`);

/** The UTC series: irregular, multiple per day, ISO-year boundaries, a leap day, a dense recent tail, a duplicate. */
function utcSeries(): number[] {
  const fixed = [
    '2019-11-15T08:00:00',
    '2019-12-29T23:59:59', // Sunday, 2019-W52
    '2019-12-30T00:00:00', // Monday, 2020-W01
    '2020-01-01T12:00:00',
    '2020-02-29T12:00:00', // leap day
    '2020-03-01T00:00:00',
    '2020-12-27T12:00:00', // Sunday, 2020-W52
    '2020-12-28T00:00:01', // Monday, 2020-W53
    '2020-12-31T23:59:59', // 2020-W53
    '2021-01-01T00:00:00', // 2020-W53 in ISO terms
    '2021-01-03T23:59:59', // Sunday, still 2020-W53
    '2021-01-04T00:00:00', // Monday, 2021-W01
    '2021-06-30T23:59:59',
    '2021-07-01T00:00:00',
    '2022-01-01T10:00:00', // Saturday, 2021-W52
    '2022-01-02T18:00:00', // Sunday, 2021-W52
    '2022-01-03T06:00:00', // Monday, 2022-W01
  ].map(U);
  const r = rng(20240501);
  const random: number[] = [];
  const from = U('2019-11-20T00:00:00');
  const to = U('2022-01-25T00:00:00');
  for (let i = 0; i < 22; i++) random.push(from + Math.floor((r() * (to - from)) / 1000) * 1000);
  // A few clusters: several backups within one day / one hour.
  for (const day of ['2020-06-10', '2021-03-15', '2021-11-02']) {
    const base = U(`${day}T00:00:00`);
    for (let i = 0; i < 3; i++) random.push(base + Math.floor(r() * 86_400) * 1000);
  }
  // Dense tail: the last ~5 days, irregular, several per day and per hour.
  const tail: number[] = [];
  const tailStart = U('2022-02-01T00:00:00');
  for (let i = 0; i < 10; i++) tail.push(tailStart + Math.floor(r() * 5 * 86_400) * 1000);
  tail.push(U('2022-02-03T10:05:00'), U('2022-02-03T10:55:00'));
  const dup = U('2022-02-04T12:00:00');
  tail.push(dup, dup); // two snapshots at the very same second
  return [...fixed, ...random, ...tail];
}

/** The Tokyo series (instants), clustered around Tokyo midnight = 15:00 UTC and Tokyo month/year/week ends. */
function tokyoSeries(): number[] {
  return [
    '2020-12-31T14:30:00', // Tokyo 2020-12-31 23:30 (Thursday, 2020-W53)
    '2020-12-31T15:30:00', // Tokyo 2021-01-01 00:30
    '2021-01-03T14:59:59', // Tokyo Sunday 23:59:59, 2020-W53
    '2021-01-03T15:00:00', // Tokyo Monday 00:00, 2021-W01 (UTC: still Sunday, 2020-W53)
    '2021-01-31T16:00:00', // Tokyo Feb 1
    '2021-01-31T10:00:00', // Tokyo Jan 31
    '2021-06-10T14:00:00',
    '2021-06-10T16:00:00',
    '2021-06-11T01:00:00',
    '2021-06-11T14:59:00',
    '2021-06-11T15:01:00',
    '2021-06-12T03:00:00',
    '2021-06-12T03:30:00',
    '2021-06-12T04:10:00',
    '2021-12-31T15:00:00', // Tokyo 2022-01-01 00:00
    '2021-12-31T14:00:00', // Tokyo 2021-12-31 23:00
  ].map(U);
}

const POLICIES: string[][] = [
  ['--keep-last', '3'],
  ['--keep-daily', '7', '--keep-weekly', '4', '--keep-monthly', '12'],
  ['--keep-hourly', '5'],
  ['--keep-yearly', '2'],
  ['--keep-within', '3d'],
  ['--keep-weekly', '200'],
  ['--keep-weekly', '60', '--keep-yearly', '1'],
  ['--keep-daily', '400'],
  ['--keep-monthly', '30', '--keep-within', '10d'],
  ['--keep-within', '1d12h', '--keep-weekly', '3'],
  ['--keep-hourly', '200', '--keep-yearly', '10'],
  ['--keep-within', '400d'],
  ['--keep-last', '1000'],
  [
    '--keep-last', '2', '--keep-hourly', '3', '--keep-daily', '5', '--keep-weekly', '6',
    '--keep-monthly', '8', '--keep-yearly', '3', '--keep-within', '2d',
  ],
];

function policyFromFlags(flags: string[]): RetentionPolicy {
  const p: RetentionPolicy = { keepLast: 0, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0, keepWithinSeconds: 0 };
  for (let i = 0; i < flags.length; i += 2) {
    const v = flags[i + 1]!;
    switch (flags[i]) {
      case '--keep-last': p.keepLast = Number(v); break;
      case '--keep-hourly': p.hourly = Number(v); break;
      case '--keep-daily': p.daily = Number(v); break;
      case '--keep-weekly': p.weekly = Number(v); break;
      case '--keep-monthly': p.monthly = Number(v); break;
      case '--keep-yearly': p.yearly = Number(v); break;
      case '--keep-within': p.keepWithinSeconds = parseDuration(v); break;
      default: throw new Error(`unknown flag ${flags[i]}`);
    }
  }
  return p;
}

interface ResticSnapshot { time: string; id: string; hostname: string }
interface ResticGroup {
  host: string;
  keep: ResticSnapshot[] | null;
  remove: ResticSnapshot[] | null;
  reasons: { snapshot: { time: string }; matches: string[] }[] | null;
}

/** restic's match text -> our reason. */
function ourReason(match: string): string {
  if (match.startsWith('within ')) return 'within';
  const m = /^(last|hourly|daily|weekly|monthly|yearly) snapshot$/.exec(match);
  if (!m) throw new Error(`unexpected restic match "${match}"`);
  return m[1]!;
}

const SERIES = [
  { host: 'utc', tz: 'UTC', offsetHours: 0, times: utcSeries() },
  { host: 'tokyo', tz: 'Asia/Tokyo', offsetHours: 9, times: tokyoSeries() },
] as const;

const itemsByHost = new Map<string, RetentionItem[]>();
const forgetResults = new Map<string, ResticGroup[]>();
const key = (flags: string[]): string => flags.join(' ');

beforeAll(async () => {
  try {
    await execFileP('restic', ['version']);
  } catch (e) {
    throw new Error(`restic is required for this test (apt-get install -y restic): ${(e as Error).message}`);
  }
  dir = await mkdtemp(join(tmpdir(), 'retention-restic-'));
  repo = join(dir, 'repo');
  data = join(dir, 'data');
  await mkdir(data);
  await writeFile(join(data, 'snapshot.db'), 'tiny');
  await restic(['init']);
  keyHint = await addCheapKey(repo, PASSWORD);
  // The cheap key really is the one restic uses from now on.
  expect(await restic(['key', 'list'])).toMatch(new RegExp(`^\\*${keyHint.slice(0, 8)}`, 'm'));

  const jobs = SERIES.flatMap((s) =>
    s.times.map(
      (ms) => () => restic(['backup', '--quiet', '--host', s.host, '--time', resticTime(ms, s.offsetHours), data], s.tz),
    ),
  );
  await pool(jobs, 1); // see the header: concurrent backups trip restic 0.14's lock race

  const all = JSON.parse(await restic(['snapshots', '--json'])) as ResticSnapshot[];
  for (const s of SERIES) {
    const mine = all.filter((sn) => sn.hostname === s.host);
    expect(mine).toHaveLength(s.times.length);
    // restic stored what we asked for, in the zone we asked for.
    const byNumber = (a: number, b: number): number => a - b;
    expect(mine.map((sn) => Date.parse(sn.time)).sort(byNumber)).toEqual([...s.times].sort(byNumber));
    if (s.offsetHours === 9) for (const sn of mine) expect(sn.time).toMatch(/\+09:00$/);
    itemsByHost.set(s.host, mine.map((sn) => ({ id: sn.id, time: new Date(sn.time) })));
  }

  // Every dry run against the same repository (--dry-run needs no lock, so in parallel).
  const outs = await pool(
    POLICIES.map((flags) => () => restic(['--no-lock', 'forget', '--dry-run', '--json', ...flags])),
    4,
  );
  POLICIES.forEach((flags, i) => forgetResults.set(key(flags), JSON.parse(outs[i]!) as ResticGroup[]));
}, 180_000);

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

describe('planRetention agrees with restic forget', () => {
  for (const flags of POLICIES) {
    for (const s of SERIES) {
      it(`${s.host} (${s.tz}): ${flags.join(' ')}`, () => {
        const groups = forgetResults.get(key(flags))!;
        const group = groups.find((g) => g.host === s.host);
        expect(group, `restic output has a group for host ${s.host}`).toMatchObject({ host: s.host });
        const keep = group!.keep ?? [];
        const reasons = group!.reasons ?? [];
        expect(reasons).toHaveLength(keep.length);

        const resticKept = keep
          .map((sn, i) => `${new Date(sn.time).toISOString()} ${reasons[i]!.matches.map(ourReason).join(',')}`)
          .sort();
        const resticRemoved = (group!.remove ?? []).map((sn) => new Date(sn.time).toISOString()).sort();

        const plan = planRetention(itemsByHost.get(s.host)!, policyFromFlags(flags), new Date(), s.tz);
        const ourKept = plan.keep
          .map((k) => `${k.time.toISOString()} ${k.reasons.filter((r) => r !== 'newest-verified').join(',')}`)
          .sort();
        const ourRemoved = plan.prune.map((p) => p.time.toISOString()).sort();

        expect(ourKept).toEqual(resticKept);
        expect(ourRemoved).toEqual(resticRemoved);
        // restic keeps the newest snapshot under every non-empty policy, so our
        // 'newest-verified' extra never adds an item here.
        expect(plan.keep[0]!.reasons).toContain('newest-verified');
        expect(plan.keep[0]!.reasons.length).toBeGreaterThan(1);
      });
    }
  }

  it('a config whose retention block names only some tiers keeps exactly those, as restic does with only those flags', async () => {
    // Only the retention block matters here: the rest of the config is the smallest that parses.
    const base = { cluster: 'c', node: 'n', source: { type: 'etcdctl', staticPodDir: dir }, etcd: { endpoints: ['http://127.0.0.1:2379'] }, stores: [{ name: 'nfs', type: 'local', path: join(dir, 'nfs') }], coordination: { mode: 'none' } };
    for (const [block, flags] of [
      [{ keepLast: 5 }, ['--keep-last', '5']],
      [{ daily: 3, monthly: 2 }, ['--keep-daily', '3', '--keep-monthly', '2']],
    ] as [Record<string, number>, string[]][]) {
      const policy = parseConfig({ ...base, retention: block }).retention;
      const out = await restic(['--no-lock', 'forget', '--dry-run', '--json', ...flags]);
      const group = (JSON.parse(out) as ResticGroup[]).find((g) => g.host === 'utc')!;
      const plan = planRetention(itemsByHost.get('utc')!, policy, new Date());
      expect(plan.keep.map((k) => k.time.toISOString()).sort(), JSON.stringify(block)).toEqual((group.keep ?? []).map((sn) => new Date(sn.time).toISOString()).sort());
    }
    // No block at all: the documented defaults.
    expect(parseConfig(base).retention).toMatchObject({ keepLast: 3, hourly: 0, daily: 7, weekly: 4, monthly: 12, yearly: 0 });
    // A block that names nothing would keep nothing: refused.
    expect(() => parseConfig({ ...base, retention: {} })).toThrow(/names no tier/);
  });

  it('an empty policy removes nothing in restic and in the planner', async () => {
    const out = await restic(['--no-lock', 'forget', '--dry-run', '--json']);
    const groups = out.trim() === '' ? [] : (JSON.parse(out) as ResticGroup[]);
    for (const g of groups) expect(g.remove ?? []).toEqual([]);
    const plan = planRetention(itemsByHost.get('utc')!, policyFromFlags([]), new Date());
    expect(plan.prune).toEqual([]);
    expect(plan.keep).toHaveLength(SERIES[0].times.length);
  });
});
