import { createHash, createPrivateKey, createPublicKey, generateKeyPair as genKeyPair, sign, verify, type KeyObject } from 'node:crypto';
import { mkdir, open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { promisify } from 'node:util';
import { BackupError } from '../errors.js';
import type { Manifest } from './manifest.js';

/**
 * Signed manifests: the masters sign each manifest with an ed25519 key, and
 * `list`/`verify`/`fetch`/restore check it against public keys they trust. A
 * writer to the bucket without the key can then delete backups but not forge
 * or alter one (say, swap the object and its sha256 together).
 */

export type SigningKey = { privateKey: KeyObject; publicKey: KeyObject; keyId: string };
/** keyId -> ed25519 public key. */
export type TrustedKeys = ReadonlyMap<string, KeyObject>;
export type SignatureStatus = 'trusted' | 'untrusted' | 'none';

const KEYGEN_HINT = 'create one with `etcd-backupd keygen --out PREFIX`';

/**
 * The bytes that are signed: canonical JSON (keys sorted at every level, no
 * whitespace) of the manifest without `signature`, `pinned` and `pinReason`.
 * Pins are left out because `pin`/`unpin` rewrite them later on hosts that
 * do not hold the signing key. That lets anyone who can write the store
 * change a pin, which such a writer could do anyway: it can delete objects.
 */
export function signingPayload(m: Manifest | SignedDocument): Buffer {
  const { signature: _s, pinned: _p, pinReason: _r, ...rest } = m as Record<string, unknown>;
  return Buffer.from(canonicalJson(rest));
}

/**
 * Serialises straight to a string instead of building a sorted copy: a copy
 * would turn a hostile own `__proto__` key into a prototype change. Keys with
 * `undefined` values are dropped, as JSON.stringify drops them.
 */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map((x) => (x === undefined ? 'null' : canonicalJson(x))).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
  }
  const s = JSON.stringify(v);
  // Functions and symbols (undefined here) and bigints (stringify throws) cannot come from JSON.parse: refuse them.
  if (s === undefined) throw new TypeError(`cannot canonicalise a ${typeof v}`);
  return s;
}

/** First 16 hex chars of sha256 over the raw 32-byte ed25519 public key. */
export function keyIdOf(publicKey: KeyObject): string {
  const pub = publicKey.type === 'private' ? createPublicKey(publicKey) : publicKey;
  if (pub.asymmetricKeyType !== 'ed25519') throw new TypeError(`keyIdOf: expected an ed25519 key, got ${pub.asymmetricKeyType}`);
  const raw = Buffer.from(pub.export({ format: 'jwk' }).x!, 'base64url');
  return createHash('sha256').update(raw).digest('hex').slice(0, 16);
}

async function readKeyFile(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new BackupError('config-invalid', `cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/**
 * Loads the PKCS#8 PEM private key the masters sign with. Error messages name
 * the file and the kind of problem only: never any of its contents.
 */
export async function loadSigningKey(path: string): Promise<SigningKey> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw new BackupError('config-invalid', `cannot read signing key ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { hint: KEYGEN_HINT });
  }
  let text: string;
  try {
    // fstat the handle we read from, so the mode checked is that of the file read.
    const st = await fh.stat();
    if (!st.isFile()) throw new BackupError('config-invalid', `signing key ${path} is not a regular file`);
    if (st.mode & 0o077) {
      throw new BackupError('config-invalid', `signing key ${path} is readable or writable by group/others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')})`, {
        hint: `chmod 600 ${path}`,
      });
    }
    text = await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
  if (text.includes('ENCRYPTED PRIVATE KEY')) {
    throw new BackupError('config-invalid', `signing key ${path} is passphrase-protected; the daemon signs unattended and needs an unencrypted key`, { hint: KEYGEN_HINT });
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: text, format: 'pem' });
  } catch (e) {
    // Only the error code: OpenSSL messages do not echo the input, but nothing here needs to risk it.
    throw new BackupError('config-invalid', `signing key ${path} is not a PEM private key (${(e as NodeJS.ErrnoException).code ?? 'unreadable'})`, { hint: KEYGEN_HINT });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') {
    throw new BackupError('config-invalid', `signing key ${path} is an ${privateKey.asymmetricKeyType ?? 'unknown'} key; manifests are signed with ed25519 only`, { hint: KEYGEN_HINT });
  }
  const publicKey = createPublicKey(privateKey);
  return { privateKey, publicKey, keyId: keyIdOf(publicKey) };
}

const PUBLIC_PEM_RE = /-----BEGIN PUBLIC KEY-----[\s\S]*?-----END PUBLIC KEY-----/g;

/**
 * Loads SPKI PEM public keys (the PREFIX.pub files keygen writes). A file may
 * hold several PEM blocks; every one is read, because createPublicKey alone
 * would silently take the first and ignore the rest of a concatenated file.
 */
export async function loadTrustedKeys(paths: string[]): Promise<TrustedKeys> {
  const keys = new Map<string, KeyObject>();
  for (const path of paths) {
    const text = await readKeyFile(path, 'trusted key');
    // A private key here means it was copied to machines that should only verify.
    if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) {
      throw new BackupError('config-invalid', `trusted key ${path} holds a private key; give the public PREFIX.pub file instead`, {
        hint: `remove the private key from this machine; \`openssl pkey -in KEY -pubout\` prints the public half`,
      });
    }
    const blocks = text.match(PUBLIC_PEM_RE) ?? [];
    if (blocks.length === 0) throw new BackupError('config-invalid', `trusted key ${path} holds no PEM public key (-----BEGIN PUBLIC KEY-----)`, { hint: KEYGEN_HINT });
    for (const pem of blocks) {
      let key: KeyObject;
      try {
        key = createPublicKey({ key: pem, format: 'pem' });
      } catch (e) {
        throw new BackupError('config-invalid', `trusted key ${path} holds an unreadable public key (${(e as NodeJS.ErrnoException).code ?? 'invalid'})`);
      }
      if (key.asymmetricKeyType !== 'ed25519') {
        throw new BackupError('config-invalid', `trusted key ${path} is an ${key.asymmetricKeyType ?? 'unknown'} key; manifests are signed with ed25519 only`, { hint: KEYGEN_HINT });
      }
      keys.set(keyIdOf(key), key);
    }
  }
  return keys;
}

/**
 * Any document signed the same way as a backup's manifest (a segment's
 * manifest, src/continuous/segment.ts): canonical JSON without `signature`.
 */
export type SignedDocument = object & { signature?: { alg: 'ed25519'; keyId: string; sig: string } | undefined };

/** A copy of `m` with `signature` set (any previous signature is replaced). */
export function signManifest<T extends Manifest | SignedDocument>(m: T, key: Pick<SigningKey, 'privateKey' | 'keyId'>): T {
  const sig = sign(null, signingPayload(m), key.privateKey).toString('base64');
  return { ...m, signature: { alg: 'ed25519', keyId: key.keyId, sig } };
}

const BASE64_SIG_RE = /^[A-Za-z0-9+/]{86}==$/; // exactly 64 bytes, canonical padding

/**
 * Pure and total: the manifest may come from a hostile store and may not even
 * match the schema, so every field is checked by hand and anything thrown
 * while checking counts as 'untrusted'.
 */
export function checkSignature(m: Manifest | SignedDocument, trusted: TrustedKeys): SignatureStatus {
  const s: unknown = (m as { signature?: unknown } | null | undefined)?.signature;
  if (s === undefined) return 'none';
  try {
    if (s === null || typeof s !== 'object') return 'untrusted';
    const { alg, keyId, sig } = s as Record<string, unknown>;
    if (alg !== 'ed25519' || typeof keyId !== 'string' || typeof sig !== 'string' || !BASE64_SIG_RE.test(sig)) return 'untrusted';
    const key = trusted.get(keyId);
    if (!key) return 'untrusted';
    const raw = Buffer.from(sig, 'base64');
    if (raw.length !== 64) return 'untrusted';
    return verify(null, signingPayload(m), key, raw) ? 'trusted' : 'untrusted';
  } catch {
    return 'untrusted';
  }
}

const genKeyPairAsync = promisify(genKeyPair);

/**
 * Writes PREFIX (PKCS#8 PEM, 0600) and PREFIX.pub (SPKI PEM, 0644). Both are
 * created exclusively: overwriting a signing key would orphan every trusted
 * key list that names the old one. A missing directory is created 0700; an
 * existing one is left as it is (it may be shared, e.g. /etc/etcd-backupd).
 */
export async function generateKeyPair(outPrefix: string): Promise<{ privatePath: string; publicPath: string; keyId: string }> {
  const privatePath = resolve(outPrefix);
  const publicPath = `${privatePath}.pub`;
  try {
    await mkdir(dirname(privatePath), { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new BackupError('usage', `cannot create directory ${dirname(privatePath)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const { privateKey, publicKey } = await genKeyPairAsync('ed25519');
  const created: string[] = [];
  try {
    await writeNew(privatePath, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
    created.push(privatePath);
    await writeNew(publicPath, publicKey.export({ type: 'spki', format: 'pem' }) as string, 0o644);
    created.push(publicPath);
  } catch (e) {
    // Leave no half pair behind: a lone private key is easy to mistake for a complete one.
    for (const p of created) await rm(p, { force: true });
    throw e;
  }
  return { privatePath, publicPath, keyId: keyIdOf(publicKey) };
}

async function writeNew(path: string, body: string, mode: number): Promise<void> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'wx', mode);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      throw new BackupError('usage', `${path} already exists; refusing to overwrite a key`, {
        hint: 'choose another --out PREFIX, or remove the old pair first (and its .pub from signing.trustedKeys)',
      });
    }
    throw new BackupError('usage', `cannot create ${path}: ${code ?? (e as Error).message}`);
  }
  try {
    // open()'s mode is filtered by the umask; set the exact mode on the file we created.
    await fh.chmod(mode);
    await fh.writeFile(body);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await rm(path, { force: true }); // ours: 'wx' created it just now
    throw e;
  }
  await fh.close();
}
