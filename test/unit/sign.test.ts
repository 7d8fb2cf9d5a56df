import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keygenCommand } from '../../src/bundle/keygen-cmd.js';
import { manifestSchema, parseManifest, serializeManifest, type Manifest } from '../../src/bundle/manifest.js';
import { checkSignature, generateKeyPair, keyIdOf, loadSigningKey, loadTrustedKeys, signingPayload, signManifest, type SigningKey, type TrustedKeys } from '../../src/bundle/sign.js';
import { BackupError } from '../../src/errors.js';

const root = mkdtempSync(join(tmpdir(), 'ebd-sign-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const mode = (p: string) => statSync(p).mode & 0o777;

const base: Manifest = manifestSchema.parse({
  format: 1,
  id: '20260101T000000Z-m0',
  cluster: 'c1',
  node: 'm0',
  trigger: 'schedule',
  pinned: false,
  createdAt: '2026-01-01T00:00:00.000Z',
  startedAt: '2026-01-01T00:00:00.000Z',
  finishedAt: '2026-01-01T00:00:01.000Z',
  tool: { name: 'etcd-backupd', version: '0.1.0' },
  source: { type: 'etcdctl', possiblyDirty: false },
  preflight: { forced: false, failedChecks: [] },
  etcd: { revision: 42, totalKey: 5, hash: 1, totalSize: 4096 },
  artifacts: [{ name: 'snapshot.db', size: 1, sha256: sha('x') }],
  object: { key: 'c1/20260101T000000Z-m0/backup.tar', size: 10, sha256: sha('o'), encrypted: false, recipients: [] },
});

let key: SigningKey;
let other: SigningKey;
let trusted: TrustedKeys;
let prefix: string;
beforeAll(async () => {
  prefix = join(root, 'keys', 'signing');
  await generateKeyPair(prefix);
  key = await loadSigningKey(prefix);
  await generateKeyPair(join(root, 'keys', 'other'));
  other = await loadSigningKey(join(root, 'keys', 'other'));
  trusted = await loadTrustedKeys([`${prefix}.pub`]);
});

/** Deep copy with every object's keys in reverse order. */
function reversed(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(reversed);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, reversed(x)]));
  return v;
}

describe('signing and checking', () => {
  it('round trips, also through serialize/parse', () => {
    const s = signManifest(base, key);
    expect(s.signature).toEqual({ alg: 'ed25519', keyId: key.keyId, sig: expect.stringMatching(/^[A-Za-z0-9+/]{86}==$/) });
    expect(base.signature).toBeUndefined();
    expect(checkSignature(s, trusted)).toBe('trusted');
    expect(checkSignature(parseManifest(serializeManifest(s), 'test'), trusted)).toBe('trusted');
    expect(checkSignature(base, trusted)).toBe('none');
  });

  const tampers: [string, (m: Manifest) => void][] = [
    ['etcd.revision', (m) => void (m.etcd.revision += 1)],
    ['object.sha256', (m) => void (m.object!.sha256 = sha('evil'))],
    ['artifacts[0].sha256', (m) => void (m.artifacts[0]!.sha256 = sha('evil'))],
    ['id', (m) => void (m.id = '20260102T000000Z-m0')],
    ['node', (m) => void (m.node = 'm1')],
    ['object removed', (m) => void delete m.object],
    ['field added', (m) => void (m.label = 'x')],
  ];
  for (const [name, f] of tampers) {
    it(`tampering ${name} makes it untrusted`, () => {
      const s = structuredClone(signManifest(base, key));
      f(s);
      expect(checkSignature(s, trusted)).toBe('untrusted');
    });
  }

  it('slot (coordination) is optional, parses, and is covered by the signature', () => {
    const withSlot = manifestSchema.parse({ ...base, slot: '2026-01-01T00:00:00.000Z' });
    expect(withSlot.slot).toBe('2026-01-01T00:00:00.000Z');
    expect(() => manifestSchema.parse({ ...base, slot: 'yesterday' })).toThrow();
    const s = signManifest(withSlot, key);
    expect(checkSignature(parseManifest(serializeManifest(s), 'test'), trusted)).toBe('trusted');
    expect(checkSignature({ ...s, slot: '2026-01-01T00:05:00.000Z' }, trusted)).toBe('untrusted');
  });

  it('pinned and pinReason are outside the signature', () => {
    const s = signManifest(base, key);
    expect(checkSignature({ ...s, pinned: true, pinReason: 'before upgrade' }, trusted)).toBe('trusted');
    expect(checkSignature({ ...s, pinReason: 'x' }, trusted)).toBe('trusted');
  });

  it('a different key or an unknown keyId is untrusted', async () => {
    expect(checkSignature(signManifest(base, other), trusted)).toBe('untrusted');
    // Signed by another key but claiming the trusted keyId.
    expect(checkSignature(signManifest(base, { privateKey: other.privateKey, keyId: key.keyId }), trusted)).toBe('untrusted');
    const s = signManifest(base, key);
    expect(checkSignature({ ...s, signature: { ...s.signature!, keyId: '0123456789abcdef' } }, trusted)).toBe('untrusted');
    expect(checkSignature(s, new Map())).toBe('untrusted');
    const both = await loadTrustedKeys([`${prefix}.pub`, join(root, 'keys', 'other.pub')]);
    expect(checkSignature(signManifest(base, other), both)).toBe('trusted');
  });

  it('garbage signature fields are untrusted and never throw', () => {
    const s = signManifest(base, key);
    const good = s.signature!;
    const bad: unknown[] = [
      null,
      'sig',
      42,
      [],
      {},
      { ...good, alg: 'rsa' },
      { ...good, keyId: 7 },
      { ...good, keyId: '__proto__' },
      { ...good, sig: 'not base64!!' },
      { ...good, sig: '' },
      { ...good, sig: null },
      { ...good, sig: Buffer.alloc(63).toString('base64') },
      { ...good, sig: Buffer.alloc(65).toString('base64') },
      { ...good, sig: Buffer.alloc(64).toString('base64') },
      { ...good, sig: good.sig.replace(/==$/, '') },
      { ...good, sig: ` ${good.sig}` },
    ];
    for (const sig of bad) expect(checkSignature({ ...s, signature: sig } as unknown as Manifest, trusted), JSON.stringify(sig)).toBe('untrusted');
    // Hostile manifests from a store: own __proto__ keys, deep nesting, wrong shapes.
    const proto = JSON.parse(JSON.stringify(s).replace('{', '{"__proto__":{"pinned":true},'));
    expect(checkSignature(proto, trusted)).toBe('untrusted');
    let deep: unknown = 1;
    for (let i = 0; i < 200_000; i++) deep = [deep];
    expect(checkSignature({ ...s, deep } as unknown as Manifest, trusted)).toBe('untrusted');
    expect(checkSignature(null as unknown as Manifest, trusted)).toBe('none');
  });
});

describe('signingPayload', () => {
  it('is canonical JSON, independent of key order, without signature and pins', () => {
    const s = signManifest({ ...base, pinned: true, pinReason: 'r' }, key);
    const p = signingPayload(s);
    expect(signingPayload(reversed(s) as Manifest).equals(p)).toBe(true);
    expect(signingPayload(base).equals(p)).toBe(true);
    const text = p.toString();
    expect(text).not.toMatch(/\s/);
    expect(text).not.toMatch(/"(signature|pinned|pinReason)"/);
    expect(text.startsWith('{"artifacts":[{"name":"snapshot.db","sha256":')).toBe(true);
    expect(text).toContain('"etcd":{"hash":1,"revision":42,"totalKey":5,"totalSize":4096}');
    expect(JSON.stringify(JSON.parse(text))).toBe(text);
  });
});

describe('keys', () => {
  it('keyIdOf is sha256 over the raw public key, truncated to 16 hex', () => {
    const der = key.publicKey.export({ type: 'spki', format: 'der' });
    expect(key.keyId).toBe(createHash('sha256').update(der.subarray(-32)).digest('hex').slice(0, 16));
    expect(keyIdOf(key.privateKey)).toBe(key.keyId);
  });

  it('keygen writes 0600/0644, creates a missing directory 0700, leaves an existing one alone', async () => {
    const r = await generateKeyPair(join(root, 'new', 'deeper', 'k'));
    expect(mode(r.privatePath)).toBe(0o600);
    expect(mode(r.publicPath)).toBe(0o644);
    expect(mode(join(root, 'new', 'deeper'))).toBe(0o700);
    expect((await loadSigningKey(r.privatePath)).keyId).toBe(r.keyId);
    mkdirSync(join(root, 'shared'), { mode: 0o755 });
    chmodSync(join(root, 'shared'), 0o755);
    await generateKeyPair(join(root, 'shared', 'k'));
    expect(mode(join(root, 'shared'))).toBe(0o755);
  });

  it('keygen refuses to overwrite and leaves no half pair', async () => {
    const before = readFileSync(prefix);
    await expect(generateKeyPair(prefix)).rejects.toThrow(/already exists; refusing to overwrite/);
    expect(readFileSync(prefix).equals(before)).toBe(true);
    const lone = join(root, 'keys', 'lone');
    writeFileSync(`${lone}.pub`, 'occupied');
    await expect(generateKeyPair(lone)).rejects.toMatchObject({ reason: 'usage', message: expect.stringContaining(`${lone}.pub already exists`) });
    expect(existsSync(lone)).toBe(false);
  });

  it('refuses a group-readable private key, naming the file and not its contents', async () => {
    const r = await generateKeyPair(join(root, 'loose', 'k'));
    chmodSync(r.privatePath, 0o640);
    const err = await loadSigningKey(r.privatePath).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackupError);
    expect(err).toMatchObject({ reason: 'config-invalid', hint: `chmod 600 ${r.privatePath}` });
    expect((err as Error).message).toContain(r.privatePath);
    expect((err as Error).message).toContain('0640');
  });

  it('refuses RSA keys with a clear message', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const priv = join(root, 'rsa.pem');
    const pem = rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    writeFileSync(priv, pem, { mode: 0o600 });
    const err = (await loadSigningKey(priv).catch((e: unknown) => e)) as BackupError;
    expect(err).toMatchObject({ reason: 'config-invalid', message: `signing key ${priv} is an rsa key; manifests are signed with ed25519 only` });
    for (const line of pem.split('\n').slice(1, -2)) expect(err.message + (err.hint ?? '')).not.toContain(line);
    writeFileSync(join(root, 'rsa.pub'), rsa.publicKey.export({ type: 'spki', format: 'pem' }));
    await expect(loadTrustedKeys([join(root, 'rsa.pub')])).rejects.toThrow(/is an rsa key/);
  });

  it('trusted keys: refuses private keys and empty files, reads every block of a bundle', async () => {
    await expect(loadTrustedKeys([prefix])).rejects.toMatchObject({ reason: 'config-invalid', message: expect.stringContaining('holds a private key') });
    writeFileSync(join(root, 'empty.pub'), '');
    await expect(loadTrustedKeys([join(root, 'empty.pub')])).rejects.toThrow(/holds no PEM public key/);
    await expect(loadTrustedKeys([join(root, 'missing.pub')])).rejects.toThrow(/cannot read trusted key .*missing\.pub: ENOENT/);
    const bundle = join(root, 'bundle.pub');
    writeFileSync(bundle, readFileSync(`${prefix}.pub`, 'utf8') + readFileSync(join(root, 'keys', 'other.pub'), 'utf8'));
    expect([...(await loadTrustedKeys([bundle])).keys()].sort()).toEqual([key.keyId, other.keyId].sort());
  });
});

describe('openssl interop', () => {
  const openssl = (args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] });

  it('openssl derives the same public key file', () => {
    expect(openssl(['pkey', '-in', prefix, '-pubout']).toString()).toBe(readFileSync(`${prefix}.pub`, 'utf8'));
  });

  it('a signature made by openssl pkeyutl -rawin verifies, and ours verifies with openssl', () => {
    const payload = join(root, 'payload.bin');
    const sigFile = join(root, 'sig.bin');
    writeFileSync(payload, signingPayload(base));
    // No skip: without -rawin (OpenSSL < 3) this throws and the test fails loudly.
    openssl(['pkeyutl', '-sign', '-rawin', '-inkey', prefix, '-in', payload, '-out', sigFile]);
    const sig = readFileSync(sigFile);
    expect(sig.length).toBe(64);
    const m = { ...base, signature: { alg: 'ed25519' as const, keyId: key.keyId, sig: sig.toString('base64') } };
    expect(checkSignature(m, trusted)).toBe('trusted');
    expect(checkSignature({ ...m, node: 'm9' }, trusted)).toBe('untrusted');

    writeFileSync(sigFile, Buffer.from(signManifest(base, key).signature!.sig, 'base64'));
    const ok = openssl(['pkeyutl', '-verify', '-rawin', '-pubin', '-inkey', `${prefix}.pub`, '-in', payload, '-sigfile', sigFile]).toString();
    expect(ok).toMatch(/Signature Verified Successfully/);
  });
});

describe('keygen command', () => {
  it('prints paths, key id and where to put them', async () => {
    const lines: string[] = [];
    const p = join(root, 'cmd', 'k');
    expect(await keygenCommand(['--out', p], (s) => lines.push(s))).toBe(0);
    const text = lines.join('\n');
    const keyId = keyIdOf(createPublicKey(readFileSync(`${p}.pub`)));
    expect(text).toContain(p);
    expect(text).toContain(`${p}.pub`);
    expect(text).toContain(keyId);
    expect(text).toContain(`Put ${p} on the masters as signing.keyFile, and ${p}.pub in signing.trustedKeys (and on the machines that restore).`);
  });

  it('--json', async () => {
    const lines: string[] = [];
    const p = join(root, 'cmd', 'j');
    expect(await keygenCommand(['--out', p, '--json'], (s) => lines.push(s))).toBe(0);
    const doc = JSON.parse(lines.join('\n'));
    expect(doc).toMatchObject({ privatePath: p, publicPath: `${p}.pub`, keyId: expect.stringMatching(/^[0-9a-f]{16}$/) });
  });

  it('--help and usage errors', async () => {
    const lines: string[] = [];
    expect(await keygenCommand(['--help'], (s) => lines.push(s))).toBe(0);
    expect(lines.join('\n')).toMatch(/^usage: etcd-backupd keygen --out PREFIX \[--json\]/);
    for (const argv of [[], ['--out'], ['--out', ''], ['--bogus'], ['--out', 'x', 'extra'], ['--out', `${root}/`]]) {
      await expect(keygenCommand(argv, () => {}), JSON.stringify(argv)).rejects.toMatchObject({ reason: 'usage' });
    }
  });
});
