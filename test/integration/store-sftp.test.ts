import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFile, mkdir, readdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStore } from '../../src/storage/index.js';
import { parseKnownHosts } from '../../src/storage/sftp/known-hosts.js';
import { SftpStore, type SftpStoreConfig } from '../../src/storage/sftp/store.js';
import { verifyRemoteCopy } from '../../src/storage/verify.js';
import { removeSshdDir, startSshd, type Sshd } from '../support/sshd.js';
import { generated, storeContract } from '../support/store-contract.js';
import { backupErrorOf } from '../support/rejections.js';
import { drain } from '../support/streams.js';

const execFileP = promisify(execFile);
let seq = 0;

function configFor(sshd: Sshd, over: Partial<SftpStoreConfig> = {}): SftpStoreConfig {
  return {
    name: 'vault',
    type: 'sftp',
    host: sshd.host,
    port: sshd.port,
    username: sshd.username,
    privateKeyFile: sshd.privateKeyFile,
    hostKey: sshd.hostKeyFingerprint,
    path: join(sshd.root, `store-${++seq}`),
    timeout: '5s',
    verify: 'readback',
    serverHash: true,
    incompleteGrace: '24h',
    ...over,
  };
}

async function keys(store: SftpStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of store.list(prefix)) out.push(o.key);
  return out;
}

/** Every file under dir, relative, dot-files included: what the server's disk holds. */
async function filesOnDisk(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.isDirectory()) await walk(join(d, e.name), `${rel}${e.name}/`);
      else out.push(`${rel}${e.name}`);
    }
  };
  await walk(dir, '');
  return out.sort();
}

// ---------------------------------------------------------------------------
// The shared contract, against a real sshd, host key pinned by fingerprint.
// ---------------------------------------------------------------------------
let contractSshd: Sshd | undefined;
storeContract('sftp (OpenSSH sshd, pinned hostKey)', {
  async make() {
    contractSshd = await startSshd();
    const sshd = contractSshd;
    return {
      store: new SftpStore(configFor(sshd)),
      cleanup: async () => {
        await sshd.stop();
        await removeSshdDir(sshd);
      },
    };
  },
});

describe('known_hosts matching', () => {
  const a = 'AAAAC3NzaC1lZDI1NTE5AAAAIB0Yxy6uWwqaYx0o4UqkSTo1v0uI3bQ0q8DtQmMkXcI1';
  const b = 'AAAAC3NzaC1lZDI1NTE5AAAAIM2Dq0c9vXqzZoxMzK3GZ7j1uQvY0x5rS1cHk5G2aYfT';
  const fp = (k: string): string => 'SHA256:' + createHash('sha256').update(Buffer.from(k, 'base64')).digest('base64').replace(/=+$/, '');

  it('matches host on port 22 and [host]:port elsewhere, with lists, wildcards and negation', () => {
    const text = [
      '# comment',
      `backup.example,10.0.0.5 ssh-ed25519 ${a} root@backup`,
      `[backup.example]:2222 ssh-ed25519 ${b}`,
      `*.example,!evil.example ssh-ed25519 ${b}`,
      `@cert-authority *.example ssh-ed25519 ${a}`,
      '',
    ].join('\n');
    expect(parseKnownHosts(text, 'backup.example', 22).accepted).toEqual([fp(a), fp(b)]);
    expect(parseKnownHosts(text, 'backup.example', 2222).accepted).toEqual([fp(b)]);
    expect(parseKnownHosts(text, 'evil.example', 22).accepted).toEqual([]);
    expect(parseKnownHosts(text, 'other.test', 22).accepted).toEqual([]);
  });

  it('reports @revoked keys', () => {
    const m = parseKnownHosts(`backup.example ssh-ed25519 ${a}\n@revoked * ssh-ed25519 ${a}\n`, 'backup.example', 22);
    expect(m.revoked).toEqual([fp(a)]);
  });
});

describe('SftpStore against OpenSSH sshd', () => {
  let sshd: Sshd;
  beforeAll(async () => {
    sshd = await startSshd();
  });
  afterAll(async () => {
    await sshd?.stop();
    if (sshd) await removeSshdDir(sshd);
  });

  it('is what createStore builds for type sftp', async () => {
    const store = await createStore(configFor(sshd));
    // Guarded (deadlines, stall watchdog): the methods of an SftpStore behind it.
    expect(store).not.toBeInstanceOf(SftpStore);
    await store.put('k/created.txt', Readable.from([Buffer.from('via createStore')]));
    expect(await store.head('k/created.txt')).toMatchObject({ size: 15 });
    expect(store.type).toBe('sftp');
    await store.close?.();
  });

  it('pins the host key through a plain known_hosts file', async () => {
    const store = new SftpStore(configFor(sshd, { hostKey: undefined, knownHostsFile: sshd.knownHostsFile }));
    try {
      await store.put('k/a.txt', Readable.from([Buffer.from('known')]));
      expect(await store.head('k/a.txt')).toMatchObject({ size: 5 });
    } finally {
      await store.close();
    }
  });

  it('pins the host key through a hashed known_hosts file (ssh-keygen -H)', async () => {
    const file = join(sshd.dir, 'known_hosts.hashed');
    const userPub = (await readFile(`${sshd.privateKeyFile}.pub`, 'utf8')).trim();
    await writeFile(file, `otherhost ${userPub}\n`);
    await appendFile(file, await readFile(sshd.knownHostsFile));
    await execFileP('ssh-keygen', ['-H', '-f', file]);
    const text = await readFile(file, 'utf8');
    expect(text).toContain('|1|');
    expect(text).not.toContain('127.0.0.1');
    expect(parseKnownHosts(text, '127.0.0.1', sshd.port).accepted).toEqual([sshd.hostKeyFingerprint]);
    const store = new SftpStore(configFor(sshd, { hostKey: undefined, knownHostsFile: file }));
    try {
      await store.put('k/hashed.txt', Readable.from([Buffer.from('hashed')]));
      expect(await store.head('k/hashed.txt')).toMatchObject({ size: 6 });
    } finally {
      await store.close();
    }
  });

  it('refuses a server whose key is not in known_hosts, naming the key it saw', async () => {
    const file = join(sshd.dir, 'known_hosts.other');
    // The right key, but for another port: must not match [127.0.0.1]:PORT.
    await writeFile(file, `[127.0.0.1]:${sshd.port + 1} ${sshd.hostPublicKey}\n127.0.0.1 ${sshd.hostPublicKey}\n`);
    const store = new SftpStore(configFor(sshd, { hostKey: undefined, knownHostsFile: file }));
    const e = await backupErrorOf(store.head('k/a.txt'));
    expect(e.reason).toBe('store-unavailable');
    expect(e.message).toContain(`host key of 127.0.0.1:${sshd.port} is ${sshd.hostKeyFingerprint}, which is not the pinned one`);
    expect(e.message).toContain(`has no key for [127.0.0.1]:${sshd.port}`);
    await store.close();

    // Listed, but also marked @revoked: refused.
    await writeFile(file, `[127.0.0.1]:${sshd.port} ${sshd.hostPublicKey}\n@revoked * ${sshd.hostPublicKey}\n`);
    const revoked = new SftpStore(configFor(sshd, { hostKey: undefined, knownHostsFile: file }));
    const e2 = await backupErrorOf(revoked.head('k/a.txt'));
    expect(e2.reason).toBe('store-unavailable');
    expect(e2.message).toContain(`is ${sshd.hostKeyFingerprint}, which is not the pinned one`);
    await revoked.close();
  });

  it('with several host keys, negotiates the type known_hosts lists; a hostKey pin names the key type shown', async () => {
    const multi = await startSshd({ extraHostKeyTypes: ['ecdsa', 'rsa'] });
    try {
      for (const k of multi.hostKeys.slice(1)) {
        const file = join(multi.dir, `known_hosts.${k.type}`);
        await writeFile(file, `[127.0.0.1]:${multi.port} ${k.publicKey}\n`);
        const store = new SftpStore(configFor(multi, { hostKey: undefined, knownHostsFile: file }));
        await store.put('m/x', Readable.from([Buffer.from(k.type)]));
        expect(await store.head('m/x')).toMatchObject({ size: k.type.length });
        await store.close();
      }
      // A bare fingerprint carries no type: the server shows its ed25519 key first.
      const ecdsa = multi.hostKeys[1]!;
      const store = new SftpStore(configFor(multi, { hostKey: ecdsa.fingerprint }));
      const e = await backupErrorOf(store.head('m/x'));
      expect(e.message).toBe(
        `store vault: host key of 127.0.0.1:${multi.port} is ${multi.hostKeyFingerprint}, which is not the pinned one (hostKey is ${ecdsa.fingerprint}; the server showed its ssh-ed25519 key)`,
      );
      await store.close();
    } finally {
      await multi.stop();
      await removeSshdDir(multi);
    }
  });

  it('refuses a wrong pinned fingerprint before authenticating, and shows the one seen', async () => {
    const logBefore = sshd.log().length;
    const wrong = 'SHA256:' + createHash('sha256').update('not the key').digest('base64').replace(/=+$/, '');
    const store = new SftpStore(configFor(sshd, { hostKey: wrong }));
    const e = await backupErrorOf(store.put('k/never.txt', Readable.from([Buffer.from('x')])));
    expect(e.reason).toBe('store-unavailable');
    expect(e.message).toBe(
      `store vault: host key of 127.0.0.1:${sshd.port} is ${sshd.hostKeyFingerprint}, which is not the pinned one (hostKey is ${wrong}; the server showed its ssh-ed25519 key)`,
    );
    expect(e.hint).toMatch(/ssh-keygen -lf/);
    await new Promise((r) => setTimeout(r, 300));
    // The connection was dropped during key exchange: no key was ever offered.
    expect(sshd.log().slice(logBefore)).toMatch(/127\.0\.0\.1/);
    expect(sshd.log().slice(logBefore)).not.toMatch(/Accepted publickey|Failed publickey|Postponed publickey/);
    await store.close();
  });

  it('refuses a key the server does not accept, and reads an encrypted key with passphraseFile', async () => {
    const other = join(sshd.dir, 'id_other');
    await execFileP('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const refused = new SftpStore(configFor(sshd, { privateKeyFile: other }));
    const e = await backupErrorOf(refused.head('k/a'));
    expect(e.reason).toBe('store-unavailable');
    expect(e.message).toContain(`refused the key in ${other}`);
    await refused.close();

    const locked = join(sshd.dir, 'id_locked');
    const secret = 'correct horse battery staple';
    await execFileP('ssh-keygen', ['-q', '-t', 'ed25519', '-N', secret, '-f', locked]);
    await appendFile(join(sshd.dir, 'authorized_keys'), await readFile(`${locked}.pub`));
    const passFile = join(sshd.dir, 'passphrase');
    await writeFile(passFile, `${secret}\n`, { mode: 0o600 });
    const ok = new SftpStore(configFor(sshd, { privateKeyFile: locked, passphraseFile: passFile }));
    await ok.put('k/locked.txt', Readable.from([Buffer.from('locked')]));
    expect(await ok.head('k/locked.txt')).toMatchObject({ size: 6 });
    await ok.close();

    const wrongPass = join(sshd.dir, 'passphrase.wrong');
    await writeFile(wrongPass, 'wrong\n', { mode: 0o600 });
    const bad = new SftpStore(configFor(sshd, { privateKeyFile: locked, passphraseFile: wrongPass }));
    const e2 = await backupErrorOf(bad.head('k/a'));
    expect(e2.reason).toBe('store-unavailable');
    expect(e2.message).not.toContain('wrong');
    expect(e2.message).not.toContain(secret);
    await bad.close();
  });

  it('refuses keys and prefixes that leave the store', async () => {
    const store = new SftpStore(configFor(sshd));
    await expect(store.put('../escape', Readable.from([Buffer.from('x')]))).rejects.toThrow(/outside the store/);
    await expect(store.put('/etc/passwd', Readable.from([Buffer.from('x')]))).rejects.toThrow(/outside the store/);
    await expect(store.head('a/../../b')).rejects.toThrow(/outside the store/);
    await expect(store.get('a//b')).rejects.toThrow(/outside the store/);
    await expect(store.delete(['ok', '../x'])).rejects.toThrow(/outside the store/);
    await expect(keys(store, '../')).rejects.toThrow(/outside the store/);
    await store.close();
  });

  it('writes under a temp name (0600, dirs 0700) and only the rename makes the object visible', async () => {
    const cfg = configFor(sshd);
    const store = new SftpStore(cfg);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let firstSent!: () => void;
    const sent = new Promise<void>((r) => (firstSent = r));
    const body = Readable.from(
      (async function* () {
        yield Buffer.alloc(300 * 1024, 1);
        firstSent();
        await gate;
        yield Buffer.alloc(100 * 1024, 2);
      })(),
    );
    const putting = store.put('cl/20260101T000000Z-m0/backup.tar', body, { size: 400 * 1024 });
    await sent;
    // Let the first writes reach the server.
    await new Promise((r) => setTimeout(r, 300));
    expect(await store.head('cl/20260101T000000Z-m0/backup.tar')).toBeUndefined();
    expect(await keys(store, 'cl/')).toEqual([]);
    const onDisk = await filesOnDisk(cfg.path);
    expect(onDisk).toHaveLength(1);
    expect(onDisk[0]).toMatch(/^cl\/20260101T000000Z-m0\/\.backup\.tar\.tmp-[0-9a-f]+$/);
    expect((await stat(join(cfg.path, onDisk[0]!))).mode & 0o777).toBe(0o600);
    expect((await stat(join(cfg.path, 'cl'))).mode & 0o777).toBe(0o700);
    expect((await stat(join(cfg.path, 'cl/20260101T000000Z-m0'))).mode & 0o777).toBe(0o700);
    release();
    expect(await putting).toEqual({ key: 'cl/20260101T000000Z-m0/backup.tar', size: 400 * 1024 });
    expect(await filesOnDisk(cfg.path)).toEqual(['cl/20260101T000000Z-m0/backup.tar']);
    expect((await stat(join(cfg.path, 'cl/20260101T000000Z-m0/backup.tar'))).mode & 0o777).toBe(0o600);
    await store.close();
  });

  it('after a failed put lists nothing and leaves no temp file; a short body is refused', async () => {
    const cfg = configFor(sshd);
    const store = new SftpStore(cfg);
    const failing = Readable.from(
      (async function* () {
        yield Buffer.alloc(1 << 20, 7);
        throw new Error('source disk died');
      })(),
    );
    const e = await backupErrorOf(store.put('f/x/backup.tar', failing));
    expect(e.reason).toBe('upload-failed');
    expect(e.message).toContain('source disk died');
    expect(await keys(store, 'f/')).toEqual([]);
    expect((await filesOnDisk(cfg.path)).filter((f) => f.includes('.tmp-'))).toEqual([]);

    const short = await backupErrorOf(store.put('f/x/short.tar', Readable.from([Buffer.alloc(10)]), { size: 11 }));
    expect(short.reason).toBe('upload-failed');
    expect(short.message).toContain('10 bytes, 11 were announced');
    expect(await filesOnDisk(cfg.path)).toEqual([]);
    await store.close();
  });

  it('lists in key order with sizes and times, skips dot-files, and delete prunes empty dirs but not the root', async () => {
    const cfg = configFor(sshd);
    const store = new SftpStore(cfg);
    const names = ['b/20260102T000000Z-m0/manifest.json', 'b/20260101T000000Z-m0/backup.tar', 'b/20260101T000000Z-m0/manifest.json', 'b.x', 'b/a.b', 'b/a/c'];
    for (const k of names) await store.put(k, Readable.from([Buffer.from(k)]));
    await writeFile(join(cfg.path, 'b/.hidden'), 'x');
    const all: { key: string; size: number; modifiedAt?: Date }[] = [];
    for await (const o of store.list('')) all.push(o);
    expect(all.map((o) => o.key)).toEqual([...names].sort());
    for (const o of all) {
      expect(o.size).toBe(Buffer.byteLength(o.key));
      expect(Math.abs(o.modifiedAt!.getTime() - Date.now())).toBeLessThan(60_000);
    }
    expect(await keys(store, 'b/2026010')).toEqual(['b/20260101T000000Z-m0/backup.tar', 'b/20260101T000000Z-m0/manifest.json', 'b/20260102T000000Z-m0/manifest.json']);
    expect(await keys(store, 'nothing/here/')).toEqual([]);

    await store.delete(['b/20260101T000000Z-m0/backup.tar', 'b/20260101T000000Z-m0/manifest.json', 'b/20260102T000000Z-m0/manifest.json']);
    expect(await keys(store, 'b/')).toEqual(['b/a.b', 'b/a/c']);
    await expect(stat(join(cfg.path, 'b/20260101T000000Z-m0'))).rejects.toMatchObject({ code: 'ENOENT' });
    await store.delete(['b/a.b', 'b/a/c', 'b.x']);
    // b/ still holds .hidden, so it stays; the store root always stays.
    expect(await filesOnDisk(cfg.path)).toEqual(['b/.hidden']);
    expect((await stat(cfg.path)).isDirectory()).toBe(true);
    await store.close();
  });

  it('cleanupIncomplete removes old leftover temp files only', async () => {
    const cfg = configFor(sshd);
    const store = new SftpStore(cfg);
    await store.put('cl/20260101T000000Z-m0/manifest.json', Readable.from([Buffer.from('{}')]));
    const dir = join(cfg.path, 'cl/20260102T000000Z-m0');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const oldTemp = join(dir, '.backup.tar.tmp-0123456789ab');
    const newTemp = join(cfg.path, 'cl/20260101T000000Z-m0/.backup.tar.tmp-ba9876543210');
    await writeFile(oldTemp, 'half a backup');
    await writeFile(newTemp, 'in progress');
    const twoDaysAgo = new Date(Date.now() - 2 * 86400_000);
    await utimes(oldTemp, twoDaysAgo, twoDaysAgo);
    await writeFile(join(cfg.path, 'cl/.keep'), 'not a temp file');
    await utimes(join(cfg.path, 'cl/.keep'), twoDaysAgo, twoDaysAgo);

    const removed = await store.cleanupIncomplete('cl/', new Date(Date.now() - 86400_000));
    expect(removed).toEqual(['cl/20260102T000000Z-m0/.backup.tar.tmp-0123456789ab']);
    expect(await filesOnDisk(cfg.path)).toEqual(['cl/.keep', 'cl/20260101T000000Z-m0/.backup.tar.tmp-ba9876543210', 'cl/20260101T000000Z-m0/manifest.json']);
    expect(await keys(store, 'cl/')).toEqual(['cl/20260101T000000Z-m0/manifest.json']);
    await store.close();
  });

  it('reconnects after the server dropped the connection', async () => {
    const other = await startSshd();
    const store = new SftpStore(configFor(other));
    try {
      await store.put('r/one', Readable.from([Buffer.from('one')]));
      await other.restart();
      // Whether or not the client noticed the drop yet, the next call must work.
      expect(await store.head('r/one')).toMatchObject({ size: 3 });
      await other.restart();
      await store.put('r/two', Readable.from([Buffer.from('two')]));
      await other.restart();
      expect((await drain(await store.get('r/two'))).bytes).toBe(3);
      await other.restart();
      expect(await keys(store, 'r/')).toEqual(['r/one', 'r/two']);
    } finally {
      await store.close();
      await other.stop();
      await removeSshdDir(other);
    }
  });

  it('fails with store-unavailable, within about the timeout, when sshd is down or hangs', async () => {
    const other = await startSshd();
    const cfg = configFor(other, { timeout: '2s' });
    const store = new SftpStore(cfg);
    try {
      // Hung: TCP still connects, but no banner ever comes.
      other.freeze();
      let t0 = Date.now();
      let e = await backupErrorOf(store.head('x'));
      expect(e.reason).toBe('store-unavailable');
      expect(e.message).toContain(`cannot connect to 127.0.0.1:${other.port}`);
      expect(Date.now() - t0).toBeLessThan(5000);
      other.thaw();

      // Hung in the middle of an upload: keepalives give up.
      await store.put('h/warm', Readable.from([Buffer.from('warm')]));
      let frozen = false;
      const endless = Readable.from(
        (async function* () {
          const chunk = Buffer.alloc(1 << 20, 3);
          for (let i = 0; ; i++) {
            if (i === 8 && !frozen) {
              frozen = true;
              other.freeze();
              t0 = Date.now();
            }
            yield chunk;
          }
        })(),
      );
      e = await backupErrorOf(store.put('h/backup.tar', endless));
      expect(frozen).toBe(true);
      expect(e.reason).toBe('store-unavailable');
      expect(e.message).toContain(`127.0.0.1:${other.port}`);
      expect(Date.now() - t0).toBeLessThan(8000);
      other.thaw();
      // The server could not be told to remove the temp file; cleanupIncomplete does it later.
      await new Promise((r) => setTimeout(r, 300));
      const left = (await filesOnDisk(cfg.path)).filter((f) => f.includes('.tmp-'));
      expect(left).toHaveLength(1);
      expect(await keys(store, 'h/')).toEqual(['h/warm']);
      expect(await store.cleanupIncomplete('h/', new Date(Date.now() + 60_000))).toEqual(left);

      // Down: connection refused.
      await other.stop();
      t0 = Date.now();
      e = await backupErrorOf(store.get('h/warm'));
      expect(e.reason).toBe('store-unavailable');
      expect(e.message).toContain(`cannot connect to 127.0.0.1:${other.port}`);
      expect(e.hint).toBe(`check that sshd runs on 127.0.0.1:${other.port} and that this node can reach it (firewall, route); the timeout is 2s`);
      expect(Date.now() - t0).toBeLessThan(5000);
    } finally {
      other.thaw();
      await store.close();
      await other.stop();
      await removeSshdDir(other);
    }
  });

  it('moves 200 MiB each way at a useful speed', async () => {
    const store = new SftpStore(configFor(sshd));
    const size = 200 * 1024 * 1024;
    const g = generated(size, 7);
    try {
      await store.head('warm-up');
      let t0 = process.hrtime.bigint();
      expect(await store.put('perf/backup.tar', g.stream(), size)).toEqual({ key: 'perf/backup.tar', size });
      const up = Number(process.hrtime.bigint() - t0) / 1e9;
      t0 = process.hrtime.bigint();
      expect(await drain(await store.get('perf/backup.tar'))).toEqual({ bytes: size, sha: g.sha256 });
      const down = Number(process.hrtime.bigint() - t0) / 1e9;
      const mib = size / (1 << 20);
      console.log(`sftp loopback: upload ${(mib / up).toFixed(1)} MiB/s (${up.toFixed(2)}s), download ${(mib / down).toFixed(1)} MiB/s (${down.toFixed(2)}s)`);
      // Only a floor against pathological slowness (one small request at a time): the
      // machine running the tests is often busy. An idle 2-core box does ~100 MiB/s.
      expect(mib / up).toBeGreaterThan(5);
      expect(mib / down).toBeGreaterThan(5);
    } finally {
      await store.delete(['perf/backup.tar']);
      await store.close();
    }
  }, 300_000);

  it('proves a copy by the server\'s own sha256 over exec, and reads back when that is off or the object differs', async () => {
    const cfg = configFor(sshd);
    const store = new SftpStore(cfg);
    const off = new SftpStore({ ...cfg, serverHash: false });
    const g = { size: 3 * 1024 * 1024 + 17, ...generated(3 * 1024 * 1024 + 17, 11) };
    try {
      await store.put("it's/-odd name/backup.tar", g.stream(), g.size);
      // A key with a quote and a leading dash reaches the shell as one literal argument.
      expect(await store.serverSha256("it's/-odd name/backup.tar")).toBe(g.sha256);
      expect(await verifyRemoteCopy(store, "it's/-odd name/backup.tar", g.size, g.sha256, 'readback', { serverHash: true })).toEqual({ proof: 'server-sha256' });
      // An operator's verify (no serverHash option) always reads every byte back.
      expect(await verifyRemoteCopy(store, "it's/-odd name/backup.tar", g.size, g.sha256, 'readback')).toEqual({ proof: 'readback' });
      // serverHash: false in the config: the same object is read back.
      expect(await off.serverSha256("it's/-odd name/backup.tar")).toBeUndefined();
      expect((await verifyRemoteCopy(off, "it's/-odd name/backup.tar", g.size, g.sha256, 'readback', { serverHash: true })).proof).toBe('readback');
      // Same size, one byte different on the server's disk: the server's hash disagrees, the read-back confirms it, the copy is refused.
      const path = join((store as unknown as { root: string }).root, "it's/-odd name/backup.tar");
      const fh = await import('node:fs/promises').then((m) => m.open(path, 'r+'));
      await fh.write(Buffer.from([0x55]), 0, 1, 1000);
      await fh.close();
      const e = await backupErrorOf(verifyRemoteCopy(store, "it's/-odd name/backup.tar", g.size, g.sha256, 'readback', { serverHash: true }));
      expect(e.reason).toBe('remote-verify-failed');
      expect(e.message).toMatch(/read back as \d+ bytes with sha256 [0-9a-f]{64}/);
    } finally {
      await store.delete(["it's/-odd name/backup.tar"]);
      await store.close();
      await off.close();
    }
  });

  it('reads back when the server hash is wrong or impossible: a lying openssl, an SFTP-only account', async () => {
    const fake = await import('node:fs/promises').then((m) => m.mkdtemp(join(sshd.root, 'fakebin-')));
    // A hash tool that answers with a well-formed but wrong digest: the read-back decides and the copy is good.
    await writeFile(join(fake, 'openssl'), '#!/bin/sh\necho "0000000000000000000000000000000000000000000000000000000000000000 *$4"\n', { mode: 0o755 });
    const lying = await startSshd({ extraConfig: [`SetEnv PATH=${fake}:/usr/bin:/bin`] });
    const sftpOnly = await startSshd({ extraConfig: ['ForceCommand internal-sftp'] });
    const g = { size: 1024 * 1024, ...generated(1024 * 1024, 12) };
    try {
      for (const [srv, expectNote] of [
        [lying, true],
        [sftpOnly, false],
      ] as const) {
        const store = new SftpStore(configFor(srv));
        try {
          await store.put('b/backup.tar', g.stream(), g.size);
          const t0 = Date.now();
          const v = await verifyRemoteCopy(store, 'b/backup.tar', g.size, g.sha256, 'readback', { serverHash: true });
          expect(v.proof).toBe('readback');
          if (expectNote) expect(v.note).toMatch(/the server's sha256 of b\/backup.tar was 0{64}/);
          else expect(v.note).toBeUndefined();
          // A forced internal-sftp must not hang the exec until some timeout.
          expect(Date.now() - t0).toBeLessThan(4000);
        } finally {
          await store.close();
        }
      }
    } finally {
      for (const srv of [lying, sftpOnly]) {
        await srv.stop();
        await removeSshdDir(srv);
      }
    }
  });
});
