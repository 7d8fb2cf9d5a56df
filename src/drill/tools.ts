/**
 * The etcd tools a drill runs (etcd, etcdctl, etcdutl), how it runs them
 * (low priority, a clean environment, a Go heap limit), and how it reads
 * their errors.
 */
import type { Manifest } from '../bundle/manifest.js';
import { BackupError } from '../errors.js';
import { commandSucceeds, findExecutable } from '../source/exec.js';

const MIB = 1024 * 1024;

/** The binaries a drill found, and what every child gets. */
export interface DrillTools {
  /** `nice -n 19 ionice -c 3` (or less, or nothing): put before every command. */
  prio: string[];
  etcd: string;
  etcdctl: string;
  /** Restores with etcdutl when set, else with etcdctl. */
  etcdutl?: string;
  /** Go runtime knobs for etcd and its tools. */
  goEnv: Record<string, string>;
}

/**
 * The environment of every child: ours without ETCD_* / ETCDCTL_* (which
 * etcd and etcdctl read as flags; on a master they can name the real member)
 * and without Go runtime knobs we set ourselves.
 */
export function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^ETCD(CTL)?_/.test(k) && k !== 'ETCD_UNSUPPORTED_ARCH') continue;
    if (k === 'GOMEMLIMIT' || k === 'GOMAXPROCS' || k === 'GOGC') continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

let ioniceOk: Promise<boolean> | undefined;

/** `ionice -c 3` can fail in some containers (no permission); probe once per process. */
function ioniceWorks(ionice: string): Promise<boolean> {
  const trueBin = findExecutable('true');
  if (!trueBin) return Promise.resolve(false);
  ioniceOk ??= commandSucceeds(ionice, ['-c', '3', trueBin]);
  return ioniceOk;
}

/** `nice -n 19 ionice -c 3` (each part only when present and working). Both exec the command: the pid stays etcd's. */
async function priorityPrefix(enabled: boolean): Promise<string[]> {
  if (!enabled) return [];
  const out: string[] = [];
  const nice = findExecutable('nice');
  if (nice) out.push(nice, '-n', '19');
  const ionice = findExecutable('ionice');
  if (ionice && (await ioniceWorks(ionice))) out.push(ionice, '-c', '3');
  return out;
}

/**
 * Finds the tools (names on PATH or paths) before anything is fetched: a
 * missing one fails the drill with a hint. Binaries default to 'etcd',
 * 'etcdctl' and, when it is on PATH, 'etcdutl'.
 */
export async function findDrillTools(
  opts: { etcdBinary?: string; etcdctlBinary?: string; etcdutlBinary?: string; lowPriority?: boolean },
  m: Manifest,
): Promise<DrillTools> {
  const prio = await priorityPrefix(opts.lowPriority ?? true);
  const etcdBin = findExecutable(opts.etcdBinary ?? 'etcd');
  if (!etcdBin) {
    throw new BackupError('drill-start-failed', `etcd binary ${JSON.stringify(opts.etcdBinary ?? 'etcd')} not found`, {
      hint: "install the cluster's etcd version on this node or set the path of its etcd binary",
    });
  }
  const etcdctlBin = findExecutable(opts.etcdctlBinary ?? 'etcdctl');
  const etcdutlBin = opts.etcdutlBinary !== undefined ? findExecutable(opts.etcdutlBinary) : findExecutable('etcdutl');
  if (opts.etcdutlBinary !== undefined && !etcdutlBin) {
    throw new BackupError('drill-restore-failed', `etcdutl binary ${JSON.stringify(opts.etcdutlBinary)} not found`, { hint: 'install etcdutl or leave it unset to restore with etcdctl' });
  }
  if (!etcdctlBin) {
    throw new BackupError('drill-restore-failed', `etcdctl binary ${JSON.stringify(opts.etcdctlBinary ?? 'etcdctl')} not found`, {
      hint: "install the cluster's etcdctl version on this node or set its path",
    });
  }
  // A soft heap limit for the Go tools: generous for the index of a big db, small next to a master's memory.
  const goEnv = {
    GOMEMLIMIT: `${Math.max(512, Math.min(4096, Math.ceil((m.etcd.totalSize * 1.5) / MIB)))}MiB`,
    GOMAXPROCS: '2',
  };
  return { prio, etcd: etcdBin, etcdctl: etcdctlBin, etcdutl: etcdutlBin, goEnv };
}

/** The error a Go tool printed: the last zap fatal/error entry ("msg: error"), else the last line. */
export function toolError(tail: string[]): string {
  for (let i = tail.length - 1; i >= 0; i--) {
    const l = tail[i]!.trim();
    if (!l.startsWith('{')) continue;
    try {
      const j = JSON.parse(l) as { level?: string; msg?: string; error?: string };
      if (j.level && ['fatal', 'panic', 'error'].includes(j.level)) return j.error ? `${j.msg}: ${j.error}` : String(j.msg);
    } catch {
      /* not JSON */
    }
  }
  const plain = tail.map((l) => l.trim()).filter((l) => l && !l.startsWith('{') && !/^(goroutine |\s)/.test(l));
  return (plain.find((l) => /^(Error|panic|fatal)/i.test(l)) ?? plain[plain.length - 1] ?? tail[tail.length - 1] ?? '(no output)').slice(0, 1000);
}
