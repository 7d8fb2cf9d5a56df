import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ObjectInfo } from '../../src/storage/store.js';
import type { FindListing } from '../../src/storage/sftp/find-list.js';
import { SftpStore, type SftpStoreConfig } from '../../src/storage/sftp/store.js';
import { startLatencyProxy } from '../support/latency-proxy.js';
import { removeSshdDir, startSshd, type Sshd } from '../support/sshd.js';

/**
 * `list` on an SFTP store asks the server for the whole tree with one remote
 * find where it may run commands, and walks the directories over SFTP where
 * it may not. Both must give the same answer (keys, sizes, times, order);
 * the find answer is bounded, and anything odd in it means a walk.
 */

function configFor(sshd: Sshd, path: string, over: Partial<SftpStoreConfig> = {}): SftpStoreConfig {
  return {
    name: 'vault', type: 'sftp', host: sshd.host, port: sshd.port, username: sshd.username,
    privateKeyFile: sshd.privateKeyFile, hostKey: sshd.hostKeyFingerprint, path,
    timeout: '5s', verify: 'readback', serverHash: true, incompleteGrace: '24h',
    ...over,
  };
}

const finderOf = (store: SftpStore) => (store as unknown as { finder: FindListing }).finder;

async function listAll(store: SftpStore, prefix: string): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const o of store.list(prefix)) out.push(o);
  return out;
}

/** The same listing by find (normal) and by the walk (exec refused); asserts which way each went. */
async function bothWays(viaFind: SftpStore, viaWalk: SftpStore, prefix: string): Promise<{ find: ObjectInfo[]; walk: ObjectInfo[] }> {
  const find = await listAll(viaFind, prefix);
  expect(finderOf(viaFind).lastMiss, `find listing of ${JSON.stringify(prefix)}`).toBeUndefined();
  const walk = await listAll(viaWalk, prefix);
  expect(finderOf(viaWalk).lastMiss?.miss).toBe('unsupported');
  return { find, walk };
}

/** Backup-like directories: a manifest and a bundle each, some with a leftover temp file and a dot-file. */
async function plantBackups(root: string, cluster: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const d = join(root, cluster, `2026${String(i).padStart(4, '0')}T000000Z-m${i % 3}`);
    await mkdir(d, { recursive: true });
    await writeFile(join(d, 'manifest.json'), `{"i":${i}}`);
    await writeFile(join(d, 'backup.tar.zst'), Buffer.alloc(i));
    if (i % 7 === 0) await writeFile(join(d, '.backup.tar.zst.tmp-0a1b2c'), 'partial');
    if (i % 11 === 0) await writeFile(join(d, '.hidden'), 'h');
  }
}

const ODD = [
  'with space', 'tab\there', 'new\nline', "quote'single", 'dq"x', 'back\\slash', '%s%n%T@%P', '-dash', '--', 'ünï©ødé', '😀', '$(touch pwned)', '`id`',
  '*', 'trailing space ', 'a.b', 'a-b', 'a', 'a0', ' leading',
];

let normal: Sshd;
let only: Sshd;
let tree: string;

beforeAll(async () => {
  [normal, only] = await Promise.all([startSshd(), startSshd({ extraConfig: ['ForceCommand internal-sftp'] })]);
  tree = await mkdtemp(join(normal.root, 'tree-'));
  await plantBackups(tree, 'c1', 150);
  await plantBackups(tree, 'c10', 5);
  await plantBackups(tree, 'c1-x', 5);
  await writeFile(join(tree, 'c1.b'), 'file beside the directories');
  await mkdir(join(tree, 'c1', '.hidden-dir', 'sub'), { recursive: true });
  await writeFile(join(tree, 'c1', '.hidden-dir', 'sub', 'x'), 'never listed');
  await mkdir(join(tree, 'odd', 'a'), { recursive: true });
  for (const name of ODD.filter((n) => n !== 'a')) await writeFile(join(tree, 'odd', name), name);
  await writeFile(join(tree, 'odd', 'a', 'inside'), 'x');
  execFileSync('mkfifo', [join(tree, 'odd', 'fifo')]); // not a regular file: neither lists it
  await mkdir(join(tree, 'empty', 'deeper'), { recursive: true });
  await writeFile(join(tree, 'top.txt'), 'top');
  // Times with a fraction of a second: both give whole seconds.
  await utimes(join(tree, 'top.txt'), 1_700_000_000.75, 1_700_000_000.75);
  await utimes(join(tree, 'odd', 'new\nline'), 1_600_000_000.5, 1_600_000_000.5);
  // Symlinks are followed (the walk stats them); a broken one is not listed.
  await mkdir(join(tree, 'links'));
  await symlink('../c1/20260001T000000Z-m1/backup.tar.zst', join(tree, 'links', 'to-file'));
  await symlink('../odd', join(tree, 'links', 'to-dir'));
  await symlink('../nowhere', join(tree, 'links', 'broken'));
  await symlink('../c1/.hidden-dir', join(tree, 'links', '.dot-link'));
}, 120_000);

afterAll(async () => {
  for (const s of [normal, only]) {
    await s?.stop();
    if (s) await removeSshdDir(s);
  }
});

describe('SFTP listing by one remote find', () => {
  it('gives what the walk gives: keys, sizes, times and order, for every prefix', async () => {
    const viaFind = new SftpStore(configFor(normal, tree));
    const viaWalk = new SftpStore(configFor(only, tree));
    try {
      let find: ObjectInfo[] = [];
      for (const prefix of ['', 'c1/', 'c1', 'c1/2026000', 'c1/20260001T000000Z-m1/man', 'c', 'odd/', 'odd/a', 'links/to-dir/', 'empty/', 'nothing/', 'nothing/deeper/', 'top']) {
        const r = await bothWays(viaFind, viaWalk, prefix);
        expect(r.find, `prefix ${JSON.stringify(prefix)}`).toEqual(r.walk);
        if (prefix === '') find = r.find;
      }
      const keys = find.map((o) => o.key);
      expect(keys).toHaveLength(2 * 160 + 1 + (ODD.length - 1) + 1 + 1 + 1 + (ODD.length - 1) + 1);
      expect([...keys].sort()).toEqual(keys);
      for (const name of ODD.filter((n) => n !== 'a')) {
        expect(keys).toContain(`odd/${name}`);
        expect(keys).toContain(`links/to-dir/${name}`);
      }
      expect(keys).toContain('links/to-file');
      expect(keys.filter((k) => k.split('/').some((seg) => seg.startsWith('.')))).toEqual([]);
      expect(keys.some((k) => k.endsWith('fifo') || k.includes('broken'))).toBe(false);
      const top = find.find((o) => o.key === 'top.txt')!;
      expect(top).toEqual({ key: 'top.txt', size: 3, modifiedAt: new Date(1_700_000_000_000) });
      expect(find.find((o) => o.key === 'links/to-file')!.size).toBe(1);
      expect(find.find((o) => o.key === 'c1/20260149T000000Z-m2/backup.tar.zst')!.size).toBe(149);
    } finally {
      await Promise.all([viaFind.close(), viaWalk.close()]);
    }
  });

  it('cleanupIncomplete finds the same old temp files by find as by the walk, and removes only those', async () => {
    const trees = await Promise.all(
      [normal, only].map(async (server) => {
        const t = await mkdtemp(join(normal.root, 'temps-'));
        await plantBackups(t, 'c1', 40);
        // A dot-directory is never entered, and a name that only looks like a temp file is kept.
        await mkdir(join(t, 'c1', '.hidden-dir'), { recursive: true });
        await writeFile(join(t, 'c1', '.hidden-dir', '.x.tmp-ab'), 'inside a dot-directory');
        await writeFile(join(t, 'c1', 'x.tmp-ab'), 'not a dot-file');
        await writeFile(join(t, 'c1', '20260001T000000Z-m1', '.y.tmp-zz'), 'not hex');
        return { t, store: new SftpStore(configFor(server, t)) };
      }),
    );
    try {
      const [byFind, byWalk] = await Promise.all(trees.map(({ store }) => store.cleanupIncomplete('c1/', new Date(Date.now() + 60_000))));
      expect(finderOf(trees[0]!.store).lastMiss).toBeUndefined();
      expect(finderOf(trees[1]!.store).lastMiss?.miss).toBe('unsupported');
      expect(byFind!.sort()).toEqual(byWalk!.sort());
      expect(byFind).toHaveLength(6); // backups 0, 7, 14, 21, 28, 35
      expect(byFind!.every((k) => /^c1\/[^/]+\/\.backup\.tar\.zst\.tmp-0a1b2c$/.test(k))).toBe(true);
      for (const { t } of trees) {
        expect(readdirSync(join(t, 'c1', '.hidden-dir'))).toEqual(['.x.tmp-ab']);
        expect(readdirSync(join(t, 'c1', '20260007T000000Z-m1')).sort()).toEqual(['backup.tar.zst', 'manifest.json']);
        expect(existsSync(join(t, 'c1', 'x.tmp-ab')) && existsSync(join(t, 'c1', '20260001T000000Z-m1', '.y.tmp-zz'))).toBe(true);
      }
      // Not yet old: nothing.
      await plantBackups(trees[0]!.t, 'c2', 8);
      expect(await trees[0]!.store.cleanupIncomplete('c2/', new Date(Date.now() - 60_000))).toEqual([]);
    } finally {
      await Promise.all(trees.map(({ store }) => store.close()));
    }
  });

  it('a server that forces internal-sftp (no exec) is walked, and not asked again', async () => {
    const store = new SftpStore(configFor(only, tree));
    try {
      await store.head('c10/none'); // connected
      // Count the exec requests this store's connection sends.
      const client = (store as unknown as { conn: { current: { client: { exec: (...a: unknown[]) => unknown } } } }).conn.current.client;
      const exec = client.exec.bind(client);
      let execs = 0;
      client.exec = (...a: unknown[]) => (execs++, exec(...a));
      const first = await listAll(store, 'c10/');
      expect(first.map((o) => o.key)).toHaveLength(10);
      expect(finderOf(store).lastMiss?.miss).toBe('unsupported');
      expect(execs).toBe(1);
      expect(await listAll(store, 'c10/')).toEqual(first);
      expect(execs).toBe(1); // not asked again
    } finally {
      await store.close();
    }
  });

  it('2000 backup directories behind a 20 ms round trip: one find, a few round trips, not hundreds', async () => {
    const big = await mkdtemp(join(normal.root, 'big-'));
    await plantBackups(big, 'c1', 2000);
    const proxy = await startLatencyProxy({ targetPort: normal.port, oneWayMs: 10 });
    const store = new SftpStore({ ...configFor(normal, big), port: proxy.port });
    try {
      await store.head('c1/none'); // connected
      const turns = proxy.turns();
      const t0 = Date.now();
      const found = await listAll(store, 'c1/');
      const ms = Date.now() - t0;
      expect(finderOf(store).lastMiss).toBeUndefined();
      expect(found).toHaveLength(2 * 2000);
      // realpath, channel open, exec, the answer: ~4 round trips (the walk: hundreds, ~14 s here).
      expect((proxy.turns() - turns) / 2).toBeLessThanOrEqual(8);
      expect(ms).toBeLessThan(3000);
      // Same as the first test shows the walk gives: every file, in key order.
      const want = Array.from({ length: 2000 }, (_, i) => `c1/2026${String(i).padStart(4, '0')}T000000Z-m${i % 3}/`).flatMap((d) => [`${d}backup.tar.zst`, `${d}manifest.json`]);
      expect(found.map((o) => o.key)).toEqual(want);
    } finally {
      await store.close();
      await proxy.close();
    }
  });
});

describe('a find answer that is wrong, endless or never ends: bounded, and the walk answers', () => {
  let hostile: Sshd;
  let small: string;
  let mode: string;
  beforeAll(async () => {
    const bin = await mkdtemp(join(normal.root, 'fakebin-'));
    mode = join(bin, 'mode');
    // A `find` that passes the capability probe, then answers as `mode` says.
    await writeFile(
      join(bin, 'find'),
      [
        '#!/bin/sh',
        'case "$*" in *maxdepth*) exit 0;; esac',
        `case "$(cat ${mode})" in`,
        `  records) yes '1 1 x' | tr '\\n' '\\000';;`,
        `  long-records) n=$(head -c 60000 /dev/zero | tr '\\000' n); while :; do printf '1 1 %s\\000' "$n"; done;;`,
        '  no-nul) yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx;;',
        `  escape) printf '1 1 ok\\000' && printf '1 1 ../../etc/passwd\\000';;`,
        `  absolute) printf '1 1 /etc/passwd\\000';;`,
        '  hang) exec sleep 600;;',
        'esac',
      ].join('\n'),
      { mode: 0o755 },
    );
    hostile = await startSshd({ extraConfig: [`SetEnv PATH=${bin}:/usr/bin:/bin`] });
    small = await mkdtemp(join(normal.root, 'small-'));
    await plantBackups(small, 'c1', 4);
  }, 60_000);
  afterAll(async () => {
    await hostile?.stop();
    if (hostile) await removeSshdDir(hostile);
  });

  for (const [m, miss, within] of [
    ['records', 'too-much', 10_000],
    ['long-records', 'too-much', 10_000],
    ['no-nul', 'malformed', 5_000],
    ['escape', 'malformed', 5_000],
    ['absolute', 'malformed', 5_000],
    ['hang', 'deadline', 9_000],
  ] as const) {
    it(`${m}: given up (${miss}) and walked`, async () => {
      await writeFile(mode, m);
      const store = new SftpStore(configFor(hostile, small));
      const walker = new SftpStore(configFor(only, small));
      try {
        const t0 = Date.now();
        const got = await listAll(store, 'c1/');
        const ms = Date.now() - t0;
        expect(finderOf(store).lastMiss?.miss).toBe(miss);
        expect(got).toEqual(await listAll(walker, 'c1/'));
        expect(got).toHaveLength(8);
        expect(ms).toBeLessThan(within);
      } finally {
        await Promise.all([store.close(), walker.close()]);
      }
    });
  }
});
