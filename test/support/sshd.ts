/**
 * A throwaway OpenSSH sshd (Debian's /usr/sbin/sshd) on 127.0.0.1 with a free
 * port, fresh ed25519 host and user keys in a 0700 temp dir, and the SFTP
 * subsystem served by internal-sftp. Fails loudly when sshd is missing
 * (`bash scripts/install-deps.sh` installs it): these tests never skip.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const SSHD = '/usr/sbin/sshd';

export interface Sshd {
  host: '127.0.0.1';
  port: number;
  /** The user running the tests (root here); sshd only lets this user in. */
  username: string;
  privateKeyFile: string;
  /** `SHA256:...` exactly as `ssh-keygen -lf host.pub -E sha256` prints it. */
  hostKeyFingerprint: string;
  /** A known_hosts file with one plain `[127.0.0.1]:PORT ssh-ed25519 ...` line. */
  knownHostsFile: string;
  /** The host public key line (`ssh-ed25519 AAAA...`), for tests that write their own known_hosts. */
  hostPublicKey: string;
  /** Every host key the server has, ed25519 first. */
  hostKeys: { type: string; fingerprint: string; publicKey: string }[];
  /** A directory the user can write; use it as the store path. */
  root: string;
  /** The temp dir holding keys, config and root. */
  dir: string;
  /** Kills sshd and every session it forked (open connections drop). */
  stop(): Promise<void>;
  /** stop(), then start again on the same port with the same keys. */
  restart(): Promise<void>;
  /** SIGSTOP sshd and its sessions: TCP still connects (kernel backlog), nothing answers. */
  freeze(): void;
  /** SIGCONT what freeze() stopped. */
  thaw(): void;
  /** What sshd wrote to stderr since it last started (up to 1 MiB). */
  log(): string;
}

/** Synchronous cleanups run once at process exit (one listener, however many servers). */
const atExit = new Set<() => void>();
process.once('exit', () => {
  for (const f of atExit) {
    try {
      f();
    } catch {
      /* best effort */
    }
  }
});

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Every live descendant of `pid` (sshd forks one process per connection, in its own session). */
function descendants(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // pid (comm) state ppid ... ; comm may contain spaces and parentheses
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parentOf.set(Number(name), Number(rest[1]));
    } catch {
      /* exited meanwhile */
    }
  }
  const out: number[] = [];
  const walk = (p: number): void => {
    for (const [child, parent] of parentOf) {
      if (parent === p) {
        out.push(child);
        walk(child);
      }
    }
  };
  walk(pid);
  return out;
}

function signalTree(pid: number | undefined, sig: NodeJS.Signals): void {
  if (!pid) return;
  for (const p of [pid, ...descendants(pid)]) {
    try {
      process.kill(p, sig);
    } catch {
      /* already gone */
    }
  }
}

/** Resolves when a TCP connection to the port gets an SSH banner. */
function bannerArrives(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      if (buf.includes('SSH-2.0-')) done(true);
    });
    sock.on('error', () => done(false));
    sock.on('close', () => done(false));
  });
}

export interface SshdOptions {
  /** Host keys besides ed25519 (which is always first), e.g. ['ecdsa', 'rsa']. */
  extraHostKeyTypes?: ('ecdsa' | 'rsa')[];
  /** More sshd_config lines, e.g. 'ForceCommand internal-sftp' for an SFTP-only account. */
  extraConfig?: string[];
}

export async function startSshd(opts: SshdOptions = {}): Promise<Sshd> {
  if (!existsSync(SSHD)) throw new Error(`${SSHD} is missing: run \`bash scripts/install-deps.sh\` (installs openssh-server)`);
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 }).catch(() => undefined);

  const dir = await mkdtemp(join(tmpdir(), 'ebd-sshd-'));
  await chmod(dir, 0o700);
  const hostKeyFiles: string[] = [];
  for (const t of ['ed25519', ...(opts.extraHostKeyTypes ?? [])]) {
    const f = join(dir, `ssh_host_${t}_key`);
    await execFileP('ssh-keygen', ['-q', '-t', t, '-N', '', '-C', 'etcd-backupd-test-host', '-f', f]);
    hostKeyFiles.push(f);
  }
  const userKey = join(dir, 'id_ed25519');
  await execFileP('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'etcd-backupd-test-user', '-f', userKey]);
  const authorizedKeys = join(dir, 'authorized_keys');
  await writeFile(authorizedKeys, await readFile(`${userKey}.pub`), { mode: 0o600 });
  const hostKeys: Sshd['hostKeys'] = [];
  for (const f of hostKeyFiles) {
    const { stdout: fpOut } = await execFileP('ssh-keygen', ['-lf', `${f}.pub`, '-E', 'sha256']);
    const fingerprint = fpOut.split(/\s+/)[1]!;
    if (!fingerprint.startsWith('SHA256:')) throw new Error(`unexpected ssh-keygen -lf output: ${fpOut}`);
    const publicKey = (await readFile(`${f}.pub`, 'utf8')).trim().split(/\s+/).slice(0, 2).join(' ');
    hostKeys.push({ type: publicKey.split(' ')[0]!, fingerprint, publicKey });
  }
  const hostKeyFingerprint = hostKeys[0]!.fingerprint;
  const hostPublicKey = hostKeys[0]!.publicKey;

  const root = join(dir, 'root');
  await mkdir(root, { mode: 0o700 });

  const port = await freePort();
  const knownHostsFile = join(dir, 'known_hosts');
  await writeFile(knownHostsFile, `[127.0.0.1]:${port} ${hostPublicKey}\n`, { mode: 0o600 });

  const config = join(dir, 'sshd_config');
  await writeFile(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      ...hostKeyFiles.map((f) => `HostKey ${f}`),
      `AuthorizedKeysFile ${authorizedKeys}`,
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      `PidFile ${join(dir, 'sshd.pid')}`,
      'Subsystem sftp internal-sftp',
      'StrictModes no',
      'UsePAM no',
      'PermitRootLogin yes',
      'MaxStartups 50',
      'LogLevel INFO',
      ...(opts.extraConfig ?? []),
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  // Fail early with sshd's own words if the config is wrong.
  await execFileP(SSHD, ['-t', '-f', config]).catch((e: { stderr?: string }) => {
    throw new Error(`sshd -t rejected ${config}: ${e.stderr ?? String(e)}`);
  });

  const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
  let child: ChildProcess | undefined;
  let stderr = '';
  let frozen = false;

  const start = async (): Promise<void> => {
    stderr = '';
    // setpriv --pdeathsig: sshd dies with the test process even when that is killed
    // without running exit handlers (a timed-out or interrupted vitest worker).
    const argv = ['-D', '-e', '-f', config];
    const c = setpriv ? spawn(setpriv, ['--pdeathsig', 'SIGKILL', '--', SSHD, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] }) : spawn(SSHD, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    child = c;
    let exited: string | undefined;
    c.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-(1 << 20));
    });
    c.on('exit', (code, sig) => {
      exited = `sshd exited (code ${code}, signal ${sig}): ${stderr.slice(-4096)}`;
    });
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (exited) throw new Error(exited);
      if (await bannerArrives(port, 1000)) return;
      if (Date.now() > deadline) {
        signalTree(c.pid, 'SIGKILL');
        throw new Error(`sshd on 127.0.0.1:${port} sent no banner within 15s: ${stderr.slice(-4096)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const stopNow = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const done = new Promise((r) => c.once('exit', r));
    if (frozen) signalTree(c.pid, 'SIGCONT');
    frozen = false;
    signalTree(c.pid, 'SIGKILL');
    await done;
  };

  // On exit: no sshd left running, and no throwaway keys left behind even if the test forgot removeSshdDir.
  atExit.add(() => {
    signalTree(child?.pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  await start();

  return {
    host: '127.0.0.1',
    port,
    username: userInfo().username,
    privateKeyFile: userKey,
    hostKeyFingerprint,
    knownHostsFile,
    hostPublicKey,
    hostKeys,
    root,
    dir,
    async stop() {
      await stopNow();
    },
    async restart() {
      await stopNow();
      await start();
    },
    freeze() {
      frozen = true;
      signalTree(child?.pid, 'SIGSTOP');
    },
    thaw() {
      frozen = false;
      signalTree(child?.pid, 'SIGCONT');
    },
    log: () => stderr,
  };
}

/** Removes the temp dir of a stopped sshd. */
export async function removeSshdDir(sshd: Sshd): Promise<void> {
  await rm(sshd.dir, { recursive: true, force: true });
}
