/**
 * Support for the fault-injection tests (test/integration/faults-*.test.ts,
 * soak.test.ts): small filesystems, daemons in their own PID or network
 * namespace, process and /proc inspection, and a config builder. Real
 * kernels, real processes: nothing here mocks a component we can run.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI } from './cli.js';
import { followJsonLog } from './logs.js';

export const MiB = 1024 * 1024;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Retries `check` until it passes or `timeoutMs` is over (then rethrows its last error). */
export async function eventually<T>(check: () => Promise<T> | T, timeoutMs = 20_000, everyMs = 200): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > end) throw e;
      await sleep(everyMs);
    }
  }
}

// ---------------------------------------------------------------- filesystems

export interface SmallFs {
  dir: string;
  kind: 'tmpfs' | 'ext4-loop';
  /** Grows (or shrinks) the filesystem in place; tmpfs only. */
  resize(bytes: number): void;
  /** Makes it read-only / writable again (remount). */
  readOnly(ro: boolean): void;
  unmount(): void;
}

/**
 * A filesystem of `bytes` mounted at `dir` (created): tmpfs when the sandbox
 * lets us mount (we are root), else a loop-mounted ext4 image. Throws (never
 * skips) when neither works, so a test that needs a full disk says why.
 */
export function mountSmallFs(dir: string, bytes: number): SmallFs {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const size = Math.max(4096, Math.ceil(bytes / 4096) * 4096);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
    return {
      dir,
      kind: 'tmpfs',
      resize: (b) => execFileSync('mount', ['-o', `remount,size=${Math.ceil(b / 4096) * 4096}`, dir], { stdio: 'pipe' }),
      readOnly: (ro) => execFileSync('mount', ['-o', `remount,${ro ? 'ro' : 'rw'}`, dir], { stdio: 'pipe' }),
      unmount: () => umountQuiet(dir),
    };
  } catch (tmpfsError) {
    const img = `${dir}.img`;
    try {
      execFileSync('truncate', ['-s', String(Math.max(size, 2 * MiB)), img]);
      execFileSync('mkfs.ext4', ['-q', '-F', '-m', '0', img], { stdio: 'pipe' });
      execFileSync('mount', ['-o', 'loop', img, dir], { stdio: 'pipe' });
      return {
        dir,
        kind: 'ext4-loop',
        resize: () => {
          throw new Error('resize is only available on tmpfs');
        },
        readOnly: (ro) => execFileSync('mount', ['-o', `remount,${ro ? 'ro' : 'rw'}`, dir], { stdio: 'pipe' }),
        unmount: () => {
          umountQuiet(dir);
          rmSync(img, { force: true });
        },
      };
    } catch (loopError) {
      throw new Error(
        `cannot mount a small filesystem at ${dir}: tmpfs: ${(tmpfsError as Error).message}; loop ext4: ${(loopError as Error).message}. ` +
          'These tests need root with CAP_SYS_ADMIN (mount).',
      );
    }
  }
}

function umountQuiet(dir: string): void {
  for (let i = 0; i < 20; i++) {
    try {
      execFileSync('umount', [dir], { stdio: 'pipe' });
      return;
    } catch {
      // busy for a moment while a killed process lets go
      execFileSync('sleep', ['0.1']);
    }
  }
  execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
}

/** Every file and directory below `root` (root included) with its permission bits. Sockets and links are reported as such. */
export function walkModes(root: string): { path: string; type: 'dir' | 'file' | 'socket' | 'link' | 'other'; mode: number }[] {
  const out: { path: string; type: 'dir' | 'file' | 'socket' | 'link' | 'other'; mode: number }[] = [];
  const visit = (p: string) => {
    const st = lstatSync(p);
    const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSocket() ? 'socket' : st.isSymbolicLink() ? 'link' : 'other';
    out.push({ path: p, type, mode: st.mode & 0o7777 });
    if (type === 'dir') for (const n of readdirSync(p)) visit(join(p, n));
  };
  if (existsSync(root)) visit(root);
  return out;
}

/** Every file below `root` (recursively), relative paths, dot-files included. */
export function listFiles(root: string): string[] {
  return walkModes(root)
    .filter((e) => e.type === 'file')
    .map((e) => e.path.slice(root.length + 1))
    .sort();
}

// ---------------------------------------------------------------- /proc

/** Pids of live processes whose environment holds `NAME=value` (children inherit it, so this finds a whole tree). */
export function pidsWithEnv(name: string, value: string): number[] {
  const want = `${name}=${value}`;
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      const env = readFileSync(`/proc/${p}/environ`, 'latin1').split('\0');
      if (!env.includes(want)) continue;
      // a zombie has exited: it holds nothing and runs nothing
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      if (stat[stat.lastIndexOf(')') + 2] !== 'Z') out.push(Number(p));
    } catch {
      /* exited meanwhile, or a kernel thread */
    }
  }
  return out;
}

/** Whether `pid` runs the node binary (by /proc/PID/exe: the thread name differs between Node versions). */
export function isNode(pid: number): boolean {
  try {
    return readlinkSync(`/proc/${pid}/exe`) === process.execPath || /\/node$/.test(readlinkSync(`/proc/${pid}/exe`));
  } catch {
    return false;
  }
}

export function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

/** Resident set size in KiB (VmRSS) and the number of open file descriptors of `pid`. */
export function procSample(pid: number): { rssKiB: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  return { rssKiB: rss ? Number(rss[1]) : NaN, fds: readdirSync(`/proc/${pid}/fd`).length };
}

/** Where the fds of `pid` point (for a failure message when fds leak). */
export function fdTargets(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.push(readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      /* closed meanwhile */
    }
  }
  return out;
}

/** TCP sockets in LISTEN state of the network namespace `pid` lives in, as host:port (IPv4 and IPv6). */
export function listeningSockets(pid: number): string[] {
  const out: string[] = [];
  for (const [file, v6] of [
    [`/proc/${pid}/net/tcp`, false],
    [`/proc/${pid}/net/tcp6`, true],
  ] as const) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 4 || f[3] !== '0A') continue; // 0A = LISTEN
      const [hexAddr, hexPort] = f[1]!.split(':');
      const port = parseInt(hexPort!, 16);
      let host: string;
      if (!v6) {
        const b = Buffer.from(hexAddr!, 'hex');
        host = [b[3], b[2], b[1], b[0]].join('.');
      } else {
        host = hexAddr === '00000000000000000000000000000000' ? '::' : hexAddr === '00000000000000000000000001000000' ? '::1' : `v6:${hexAddr}`;
      }
      out.push(`${host}:${port}`);
    }
  }
  return out;
}

// ---------------------------------------------------------------- daemon

export interface DaemonProc {
  child: ChildProcess;
  /** Host pid of the etcd-backupd process itself (not a wrapper such as unshare). */
  pid(): number;
  lines: Record<string, unknown>[];
  /** Everything the process wrote to stderr, raw. */
  stderr(): string;
  metricsUrl?: string;
  waitFor(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number, what?: string): Promise<Record<string, unknown>>;
  count(pred: (l: Record<string, unknown>) => boolean): number;
  metrics(): Promise<string>;
  exited(): boolean;
  /** Sends `signal` (to the daemon, or SIGKILL to its wrapper) and waits for the exit (SIGKILL after timeoutMs). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
}

export interface DaemonOptions {
  env?: NodeJS.ProcessEnv;
  /** Command prefix, e.g. ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child=SIGKILL']. */
  wrapper?: string[];
  /** Wait for the "daemon started" line (default true). */
  waitStarted?: boolean;
}

/**
 * `etcd-backupd run` as a real process (optionally inside namespaces),
 * following its JSON log (./logs.ts): raw stderr, an optional wrapper
 * command, the real pid behind a wrapper, counting lines.
 * test/support/daemon.ts's startDaemonProcess is this without a wrapper.
 */
export async function spawnDaemon(configFile: string, opts: DaemonOptions = {}): Promise<DaemonProc> {
  const argv = [...(opts.wrapper ?? []), process.execPath, CLI, 'run', '--config', configFile];
  const child = spawn(argv[0]!, argv.slice(1), {
    env: { ...process.env, ETCD_BACKUPD_LOG_LEVEL: 'info', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let raw = '';
  let exited = false;
  const exit = new Promise<number | null>((resolve) =>
    child.on('exit', (code, sig) => {
      exited = true;
      resolve(code ?? (sig ? 128 : null));
    }),
  );
  child.stderr!.on('data', (d: Buffer) => (raw += d.toString()));
  const { lines, waitFor, count } = followJsonLog(child.stderr!);
  const d: DaemonProc = {
    child,
    pid: () => {
      if (!opts.wrapper?.length) return child.pid!;
      // the wrapper's (only) descendant running node (its comm is `node` up to Node 22, `MainThread` from 24)
      const kids = descendantsOf(child.pid!);
      const node = kids.find((p) => isNode(p));
      if (!node) throw new Error(`no node process under wrapper ${child.pid}`);
      return node;
    },
    lines,
    stderr: () => raw,
    waitFor,
    count,
    metrics: async () => {
      if (!d.metricsUrl) throw new Error('daemon has no metrics URL yet');
      return (await fetch(`${d.metricsUrl}/metrics`)).text();
    },
    exited: () => exited,
    stop: async (signal = 'SIGTERM', timeoutMs = 60_000) => {
      // A wrapper (unshare) does not forward signals: a graceful stop goes to the daemon itself,
      // SIGKILL to the wrapper (with --kill-child, that is a container being killed).
      if (!exited) {
        if (opts.wrapper?.length && signal !== 'SIGKILL') {
          try {
            process.kill(d.pid(), signal);
          } catch {
            child.kill(signal);
          }
        } else child.kill(signal);
      }
      const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exit;
      clearTimeout(t);
      return code;
    },
  };
  if (opts.waitStarted !== false) {
    const started = await Promise.race([
      waitFor((l) => l.msg === 'etcd-backupd daemon started', 30_000, 'daemon start'),
      exit.then((code) => {
        throw new Error(`daemon exited (${code}) before it started:\n${raw.slice(-3000)}`);
      }),
    ]);
    const m = String(started.metrics);
    d.metricsUrl = m.split(':').length > 2 ? `http://[${m.replace(/:\d+$/, '')}]:${m.split(':').pop()}` : `http://${m}`;
  }
  return d;
}

export function descendantsOf(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      parentOf.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      /* gone */
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [c, parent] of parentOf) if (parent === p) (out.push(c), walk(c));
  };
  walk(pid);
  return out;
}

/** Runs the CLI under libfaketime with the wall clock frozen at `at` (monotonic clocks stay real, so timers work). */
export function faketimeEnv(at: string): NodeJS.ProcessEnv {
  return { LD_PRELOAD: faketimeLib(), FAKETIME: at, FAKETIME_DONT_FAKE_MONOTONIC: '1', FAKETIME_NO_CACHE: '1' };
}

let libCache: string | undefined;
/** The libfaketime preload library; installs Debian's `faketime` package when missing (as the other test tools are). */
export function faketimeLib(): string {
  if (libCache) return libCache;
  const find = () => {
    for (const p of ['/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/faketime/libfaketime.so.1']) {
      if (existsSync(p)) return p;
    }
    return undefined;
  };
  let lib = find();
  if (!lib) {
    execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'faketime'], { stdio: 'pipe', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    lib = find();
  }
  if (!lib) throw new Error('libfaketime not found after `apt-get install faketime`');
  libCache = lib;
  return lib;
}

// ---------------------------------------------------------------- config

/** A minimal helper to drop a file with a given mode. */
export function writePrivate(path: string, text: string | Buffer): string {
  writeFileSync(path, text, { mode: 0o600 });
  return path;
}

/** Values of the etcd_backup_* samples as a flat map `name{labels}` -> value, for diffing in failure messages. */
export function metricSamples(text: string, prefix = 'etcd_backup_'): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith(prefix)) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}
