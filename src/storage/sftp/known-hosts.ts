import { createHash, createHmac } from 'node:crypto';
import type { ServerHostKeyAlgorithm } from 'ssh2';

/** `SHA256:<base64 without padding>` of an SSH public key blob, as `ssh-keygen -l -E sha256` prints it. */
export function sshFingerprint(keyBlob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '');
}

export interface KnownHostsMatch {
  /** Fingerprints of keys listed for the host. */
  accepted: string[];
  /** Key types of those keys (`ssh-ed25519`, `ssh-rsa`...), in file order. */
  keyTypes: string[];
  /** Fingerprints marked `@revoked` (for any host): never accepted. */
  revoked: string[];
}

function globToRegExp(glob: string): RegExp {
  const esc = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${esc}$`, 'i');
}

function hostPatternMatches(patterns: string, name: string): boolean {
  if (patterns.startsWith('|1|')) {
    const [, , salt, hash] = patterns.split('|');
    if (!salt || !hash) return false;
    const mac = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64');
    return mac === hash;
  }
  let matched = false;
  for (const raw of patterns.split(',')) {
    const negated = raw.startsWith('!');
    const pat = negated ? raw.slice(1) : raw;
    if (!pat || !globToRegExp(pat).test(name)) continue;
    if (negated) return false;
    matched = true;
  }
  return matched;
}

/** The name OpenSSH looks up in known_hosts: `host` on port 22, `[host]:port` elsewhere. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/**
 * Reads OpenSSH known_hosts text: plain and hashed (`|1|salt|hmac`) host
 * fields, comma lists, `*`/`?` wildcards, `!` negation, `@revoked`.
 * `@cert-authority` lines are ignored (no certificate support).
 */
export function parseKnownHosts(text: string, host: string, port: number): KnownHostsMatch {
  const name = knownHostsName(host, port);
  const accepted: string[] = [];
  const keyTypes: string[] = [];
  const revoked: string[] = [];
  for (const rawLine of text.split(/\r?\n/)) {
    const line = rawLine.trim();
    if (!line || line.startsWith('#')) continue;
    const fields = line.split(/\s+/);
    let marker: string | undefined;
    if (fields[0]!.startsWith('@')) marker = fields.shift();
    const [hosts, keyType, keyB64] = fields;
    if (!hosts || !keyB64) continue;
    let blob: Buffer;
    try {
      blob = Buffer.from(keyB64, 'base64');
    } catch {
      continue;
    }
    if (blob.length === 0) continue;
    const fp = sshFingerprint(blob);
    if (marker === '@revoked') revoked.push(fp);
    else if (marker === undefined && hostPatternMatches(hosts, name)) {
      accepted.push(fp);
      if (keyType && !keyTypes.includes(keyType)) keyTypes.push(keyType);
    }
  }
  return { accepted, keyTypes, revoked };
}

/** The host key algorithms ssh2 can negotiate for a known_hosts key type. */
export const HOST_KEY_ALGORITHMS: Record<string, ServerHostKeyAlgorithm[]> = {
  'ssh-ed25519': ['ssh-ed25519'],
  'ecdsa-sha2-nistp256': ['ecdsa-sha2-nistp256'],
  'ecdsa-sha2-nistp384': ['ecdsa-sha2-nistp384'],
  'ecdsa-sha2-nistp521': ['ecdsa-sha2-nistp521'],
  'ssh-rsa': ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'],
};

/** The key type named inside an SSH public key blob (`string` name first). */
export function keyTypeOf(blob: Buffer): string {
  if (blob.length < 4) return 'unknown';
  const len = blob.readUInt32BE(0);
  return len > 0 && len < 64 && blob.length >= 4 + len ? blob.subarray(4, 4 + len).toString('latin1') : 'unknown';
}
