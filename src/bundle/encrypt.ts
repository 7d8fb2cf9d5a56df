import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { BackupError } from '../errors.js';

/**
 * age and its crypto dependencies cost ~15 MiB of RSS once loaded: loaded
 * only by a node that encrypts or decrypts (the bench's peak-RSS goal).
 */
const loadAge = () => import('age-encryption');

/**
 * Client-side encryption with age (X25519 recipients), in the stream: the
 * bundle is encrypted before a byte of it leaves the node, and the node only
 * ever holds public keys. The output is a standard age file: `age -d -i KEY`
 * decrypts it.
 */
export async function encryptStream(plain: Readable, recipients: string[]): Promise<Readable> {
  const age = await loadAge();
  const e = new age.Encrypter();
  for (const r of recipients) e.addRecipient(r);
  const out = await e.encrypt(Readable.toWeb(plain) as unknown as ReadableStream<Uint8Array>);
  return Readable.fromWeb(out as unknown as WebReadableStream<Uint8Array>);
}

/** Reads AGE-SECRET-KEY-1... lines from an identity file (as written by age-keygen). */
export async function loadIdentities(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new BackupError('usage', `cannot read identity file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const ids = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('AGE-SECRET-KEY-1'));
  if (ids.length === 0) throw new BackupError('usage', `${file} holds no age identity (AGE-SECRET-KEY-1...)`, { hint: 'create one with age-keygen; give the matching age1... recipient to encryption.recipients' });
  return ids;
}

export async function decryptStream(cipher: Readable, identities: string[]): Promise<Readable> {
  const age = await loadAge();
  const d = new age.Decrypter();
  for (const id of identities) d.addIdentity(id);
  try {
    const out = await d.decrypt(Readable.toWeb(cipher) as unknown as ReadableStream<Uint8Array>);
    return Readable.fromWeb(out as unknown as WebReadableStream<Uint8Array>);
  } catch (e) {
    throw new BackupError('checksum-mismatch', `cannot decrypt the backup: ${(e as Error).message}`, {
      hint: 'use the identity whose recipient (age1...) is listed in the manifest (etcd-backupd list --json shows it)',
    });
  }
}

/** The recipient (public key) of an identity, so a fetch can say which key it needs. */
export async function recipientOf(identity: string): Promise<string> {
  const age = await loadAge();
  return age.identityToRecipient(identity);
}
