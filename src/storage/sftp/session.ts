import { readFile } from 'node:fs/promises';
import ssh2 from 'ssh2';
import type { ConnectConfig, ServerHostKeyAlgorithm, SFTPWrapper } from 'ssh2';
import { BackupError } from '../../errors.js';
import { abortedByShutdown } from '../store.js';
import { HOST_KEY_ALGORITHMS, keyTypeOf, knownHostsName, parseKnownHosts, sshFingerprint } from './known-hosts.js';
import type { SftpStoreConfig } from './index.js';

const { Client } = ssh2;
type SshClient = InstanceType<typeof Client>;

export function errCode(e: unknown): unknown {
  return (e as { code?: unknown } | undefined)?.code;
}

export function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export interface Session {
  client: SshClient;
  sftp: SFTPWrapper;
  alive: boolean;
  /** Operations started on this session; a reused one may have died unnoticed since the last. */
  uses: number;
  /** Why the connection ended, when it did. */
  lostReason?: string;
}

export class ConnectionLost extends Error {}

/**
 * Runs one SFTP request. ssh2 silently drops requests on a closed channel,
 * so a dead session is refused here instead of leaving the caller hanging.
 */
export function call<T>(s: Session, where: string, fn: (sftp: SFTPWrapper, cb: (err: Error | null | undefined, value?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (!s.alive) return reject(new ConnectionLost(`connection to ${where} lost: ${s.lostReason ?? 'closed'}`));
    try {
      fn(s.sftp, (err, value) => (err ? reject(err) : resolve(value as T)));
    } catch (e) {
      reject(e);
    }
  });
}

/**
 * The one SSH connection (and SFTP channel) of a store: opened on first use,
 * shared by concurrent operations, opened afresh once it died. The server's
 * host key must match the pin (hostKey or knownHostsFile) before anything
 * else is sent.
 */
export class SftpConnection {
  private session?: Session;
  private connecting?: Promise<Session>;
  private readonly name: string;

  constructor(
    private readonly cfg: SftpStoreConfig,
    private readonly where: string,
    private readonly timeoutMs: number,
  ) {
    this.name = cfg.name;
  }

  /** The live session, if there is one (the one the last operation used). */
  get current(): Session | undefined {
    return this.session;
  }

  private async pins(): Promise<{ accepted: Set<string>; revoked: Set<string>; preferredAlgorithms: ServerHostKeyAlgorithm[]; describe: string }> {
    const accepted = new Set<string>();
    const revoked = new Set<string>();
    const preferredAlgorithms: ServerHostKeyAlgorithm[] = [];
    const parts: string[] = [];
    if (this.cfg.hostKey) {
      const fp = this.cfg.hostKey.replace(/=+$/, '');
      accepted.add(fp);
      parts.push(`hostKey is ${fp}`);
    }
    if (this.cfg.knownHostsFile) {
      let text: string;
      try {
        text = await readFile(this.cfg.knownHostsFile, 'utf8');
      } catch (e) {
        throw new BackupError('store-unavailable', `store ${this.name}: cannot read knownHostsFile ${this.cfg.knownHostsFile}: ${errCode(e) ?? describe(e)}`, {
          cause: e,
          hint: 'the file pinning the SFTP server host key must exist and be readable',
        });
      }
      const m = parseKnownHosts(text, this.cfg.host, this.cfg.port);
      m.accepted.forEach((fp) => accepted.add(fp));
      m.revoked.forEach((fp) => revoked.add(fp));
      for (const t of m.keyTypes) preferredAlgorithms.push(...(HOST_KEY_ALGORITHMS[t] ?? []));
      const name = knownHostsName(this.cfg.host, this.cfg.port);
      parts.push(
        m.accepted.length
          ? `knownHostsFile ${this.cfg.knownHostsFile} lists ${m.accepted.join(', ')} for ${name}`
          : `knownHostsFile ${this.cfg.knownHostsFile} has no key for ${name}`,
      );
    }
    if (accepted.size === 0 && parts.length === 0) {
      throw new BackupError('config-invalid', `store ${this.name}: no pinned host key for ${this.where}`, {
        hint: 'set hostKey (SHA256:... from `ssh-keygen -lf HOSTKEY.pub -E sha256` on the server) or knownHostsFile',
      });
    }
    return { accepted, revoked, preferredAlgorithms, describe: parts.join('; ') };
  }

  private async credentials(): Promise<{ privateKey: Buffer; passphrase?: string }> {
    let privateKey: Buffer;
    try {
      privateKey = await readFile(this.cfg.privateKeyFile);
    } catch (e) {
      throw new BackupError('store-unavailable', `store ${this.name}: cannot read privateKeyFile ${this.cfg.privateKeyFile}: ${errCode(e) ?? describe(e)}`, { cause: e });
    }
    if (!this.cfg.passphraseFile) return { privateKey };
    try {
      const passphrase = (await readFile(this.cfg.passphraseFile, 'utf8')).replace(/\r?\n$/, '');
      return { privateKey, passphrase };
    } catch (e) {
      throw new BackupError('store-unavailable', `store ${this.name}: cannot read passphraseFile ${this.cfg.passphraseFile}: ${errCode(e) ?? describe(e)}`, { cause: e });
    }
  }

  private async connect(): Promise<Session> {
    const pins = await this.pins();
    const creds = await this.credentials();
    const client = new Client();
    let seenFingerprint: string | undefined;
    let seenType = 'unknown';
    let hostKeyRefused = false;
    const config: ConnectConfig = {
      host: this.cfg.host,
      port: this.cfg.port,
      username: this.cfg.username,
      privateKey: creds.privateKey,
      passphrase: creds.passphrase,
      readyTimeout: this.timeoutMs,
      // Offer first the key types known_hosts lists for this host, as OpenSSH's ssh does:
      // otherwise a server with several host keys may show one that is not pinned.
      ...(pins.preferredAlgorithms.length
        ? { algorithms: { serverHostKey: { remove: pins.preferredAlgorithms, prepend: pins.preferredAlgorithms, append: [] } } }
        : {}),
      // A silent server (frozen host, dropped route) is declared dead after about `timeout`.
      keepaliveInterval: Math.max(1000, Math.round(this.timeoutMs / 3)),
      keepaliveCountMax: 2,
      hostVerifier: (key: Buffer): boolean => {
        seenFingerprint = sshFingerprint(key);
        seenType = keyTypeOf(key);
        const ok = pins.accepted.has(seenFingerprint) && !pins.revoked.has(seenFingerprint);
        hostKeyRefused = !ok;
        return ok;
      },
    };

    return new Promise<Session>((resolve, reject) => {
      let settled = false;
      const session: Session = { client, sftp: undefined as unknown as SFTPWrapper, alive: false, uses: 0 };
      const fail = (e: unknown): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        client.removeAllListeners('ready');
        client.destroy();
        const pinned =
          (seenFingerprint && pins.revoked.has(seenFingerprint) ? `knownHostsFile ${this.cfg.knownHostsFile} marks it @revoked` : pins.describe) +
          `; the server showed its ${seenType} key`;
        reject(this.connectError(e, hostKeyRefused ? seenFingerprint : undefined, pinned));
      };
      // readyTimeout covers TCP + handshake + auth; this also covers opening the SFTP subsystem.
      const timer = setTimeout(() => fail(new Error(`no answer within ${this.timeoutMs / 1000}s`)), this.timeoutMs + 1000);
      const lost = (why: string): void => {
        if (session.alive) {
          session.alive = false;
          session.lostReason = why;
        }
        if (this.session === session) this.session = undefined;
      };
      client.on('error', (e: Error) => {
        lost(describe(e));
        fail(e);
      });
      client.on('close', () => {
        lost('connection closed');
        fail(new Error('connection closed'));
      });
      client.on('end', () => lost('connection ended'));
      client.on('ready', () => {
        // No Nagle: SFTP is small requests answered one by one (a directory, a stat, a write
        // window's acks); with it each waited for a delayed ACK, ~20-40 ms even on loopback.
        client.setNoDelay(true);
        client.sftp((err, sftp) => {
          if (err) return fail(err);
          if (settled) {
            client.end();
            return;
          }
          settled = true;
          clearTimeout(timer);
          sftp.on('error', (e: Error) => lost(`sftp: ${describe(e)}`));
          sftp.on('close', () => {
            lost('sftp channel closed');
            client.end();
          });
          session.sftp = sftp;
          session.alive = true;
          resolve(session);
        });
      });
      try {
        client.connect(config);
      } catch (e) {
        // ssh2 throws synchronously on an unusable private key. Its message names no key material.
        fail(e);
      }
    });
  }

  private connectError(e: unknown, refusedFingerprint: string | undefined, pinned: string): BackupError {
    if (e instanceof BackupError) return e;
    const msg = describe(e);
    if (refusedFingerprint) {
      return new BackupError(
        'store-unavailable',
        `store ${this.name}: host key of ${this.where} is ${refusedFingerprint}, which is not the pinned one (${pinned})`,
        {
          cause: e,
          hint:
            `if the server's key was changed on purpose, read its fingerprint on the server itself (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub -E sha256) ` +
            `and update hostKey or knownHostsFile; otherwise someone may be intercepting the connection: do not disable the check`,
        },
      );
    }
    const level = (e as { level?: string }).level;
    if (level === 'client-authentication') {
      return new BackupError('store-unavailable', `store ${this.name}: ${this.where} refused the key in ${this.cfg.privateKeyFile} for user ${this.cfg.username}`, {
        cause: e,
        hint: "add the public key to the user's authorized_keys on the server, and check username and passphraseFile",
      });
    }
    if (/privateKey|passphrase/i.test(msg)) {
      return new BackupError('store-unavailable', `store ${this.name}: cannot use private key ${this.cfg.privateKeyFile}: ${msg}`, {
        cause: e,
        hint: 'the key must be an OpenSSH or PEM private key; an encrypted key needs passphraseFile',
      });
    }
    const code = errCode(e);
    return new BackupError('store-unavailable', `store ${this.name}: cannot connect to ${this.where}: ${typeof code === 'string' ? `${code} ` : ''}${msg}`.trim(), {
      cause: e,
      hint: `check that sshd runs on ${this.where} and that this node can reach it (firewall, route); the timeout is ${this.cfg.timeout}`,
    });
  }

  /** The live session, connecting (once, shared by concurrent callers) when there is none. */
  async open(): Promise<Session> {
    if (this.session?.alive) return this.session;
    this.session = undefined;
    if (!this.connecting) {
      this.connecting = this.connect().then(
        (s) => {
          this.connecting = undefined;
          this.session = s;
          return s;
        },
        (e) => {
          this.connecting = undefined;
          throw e;
        },
      );
    }
    return this.connecting;
  }

  /**
   * Runs `fn` on the live session. A reused connection can have died since
   * its last use (server restarted, idle NAT entry dropped) without us having
   * noticed yet; then `fn` runs once more on a fresh connection, if
   * `canRetry` says nothing irreversible happened (no body bytes consumed).
   */
  async withSession<T>(fn: (s: Session) => Promise<T>, canRetry: () => boolean = () => true, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw signal.reason instanceof BackupError ? signal.reason : abortedByShutdown(this.name, 'operation');
    const s = await this.open();
    const reused = s.uses++ > 0;
    const unwatch = this.dropOnAbort(s, signal);
    try {
      return await fn(s);
    } catch (e) {
      if (!reused || s.alive || !canRetry() || signal?.aborted) throw e;
      const fresh = await this.open();
      fresh.uses++;
      const unwatchFresh = this.dropOnAbort(fresh, signal);
      try {
        return await fn(fresh);
      } finally {
        unwatchFresh();
      }
    } finally {
      unwatch();
    }
  }

  /**
   * An operation that passed its deadline (or a shutdown) ends its session:
   * ssh2 has no way to cancel one request, and a server that hangs or
   * trickles on one is not trusted with the next. Requests in flight fail at
   * once; the next operation connects afresh.
   */
  dropOnAbort(s: Session, signal: AbortSignal | undefined): () => void {
    if (!signal) return () => undefined;
    const drop = () => {
      if (s.alive) {
        s.alive = false;
        s.lostReason = signal.reason instanceof Error ? signal.reason.message : 'aborted';
      }
      if (this.session === s) this.session = undefined;
      s.client.destroy();
    };
    if (signal.aborted) drop();
    signal.addEventListener('abort', drop, { once: true });
    return () => signal.removeEventListener('abort', drop);
  }

  async close(): Promise<void> {
    const s = this.session ?? (await this.connecting?.catch(() => undefined));
    this.session = undefined;
    if (!s) return;
    s.alive = false;
    s.lostReason = 'store closed';
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        s.client.destroy();
        resolve();
      }, 2000);
      s.client.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      s.client.end();
    });
  }
}
