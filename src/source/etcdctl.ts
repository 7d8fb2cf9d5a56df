import { join } from 'node:path';
import { BackupError } from '../errors.js';
import { mkdirPrivate } from '../fsutil.js';
import { findArtifacts } from './artifacts.js';
import { runCommand } from './exec.js';
import { archiveDirectory } from './static-archive.js';
import type { Source, SourceArtifacts, SourceContext } from './source.js';

export interface EtcdctlSourceOptions {
  etcdctl: string;
  staticPodDir: string;
  timeoutSeconds: number;
  /** No growth of the snapshot's .part for this long ends the run (source-stalled). */
  stallSeconds?: number;
  endpoint: string;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/** Same names as cluster-backup.sh uses (`date +%F_%H%M%S`), so restore tooling finds them. */
export function artifactStamp(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}_${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}`;
}

/** For kubeadm and other non-OpenShift clusters: `etcdctl snapshot save` plus the static pod manifests. */
export class EtcdctlSource implements Source {
  readonly type = 'etcdctl';
  constructor(private readonly o: EtcdctlSourceOptions) {}

  async produce(ctx: SourceContext): Promise<SourceArtifacts> {
    await mkdirPrivate(ctx.runDir);
    const stamp = artifactStamp(new Date());
    const snapshot = join(ctx.runDir, `snapshot_${stamp}.db`);
    const staticResources = join(ctx.runDir, `static_kuberesources_${stamp}.tar.gz`);
    // snapshot save talks to exactly one member: the local one, listed first.
    const args = ['snapshot', 'save', snapshot, `--endpoints=${this.o.endpoint}`, `--command-timeout=${Math.ceil(this.o.timeoutSeconds)}s`];
    if (this.o.caFile) args.push(`--cacert=${this.o.caFile}`);
    if (this.o.certFile) args.push(`--cert=${this.o.certFile}`);
    if (this.o.keyFile) args.push(`--key=${this.o.keyFile}`);
    const env: NodeJS.ProcessEnv = { ...process.env, ETCDCTL_API: '3' };
    for (const k of Object.keys(env)) if (k.startsWith('ETCDCTL_') && k !== 'ETCDCTL_API') delete env[k];
    const { code, tail } = await runCommand(this.o.etcdctl, args, {
      timeoutSeconds: this.o.timeoutSeconds,
      log: ctx.log,
      what: 'etcdctl snapshot save',
      env,
      signal: ctx.signal,
      ...(this.o.stallSeconds ? { stall: { dir: ctx.runDir, seconds: this.o.stallSeconds } } : {}),
    });
    if (code !== 0) {
      throw new BackupError('source-failed', `etcdctl snapshot save exited with code ${code}: ${tail.slice(-3).join(' | ') || 'no output'}`, {
        hint: `check that etcd answers at ${this.o.endpoint} and that the TLS files in etcd.* are the current ones`,
      });
    }
    try {
      await archiveDirectory(this.o.staticPodDir, staticResources);
    } catch (e) {
      throw new BackupError('source-failed', `cannot archive ${this.o.staticPodDir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    return findArtifacts(ctx.runDir, 'etcdctl source');
  }
}
