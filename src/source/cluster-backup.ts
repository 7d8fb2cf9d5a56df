import { BackupError } from '../errors.js';
import { findArtifacts } from './artifacts.js';
import { runCommand } from './exec.js';
import type { Source, SourceArtifacts, SourceContext } from './source.js';

/** OpenShift's own backup script, run exactly as the documentation says to run it. */
export class ClusterBackupSource implements Source {
  readonly type = 'cluster-backup';
  constructor(
    private readonly script: string,
    private readonly timeoutSeconds: number,
    private readonly env: Record<string, string> = {},
  ) {}

  async produce(ctx: SourceContext): Promise<SourceArtifacts> {
    const args = ctx.force ? ['--force', ctx.runDir] : [ctx.runDir];
    const { code, tail } = await runCommand(this.script, args, {
      timeoutSeconds: this.timeoutSeconds,
      log: ctx.log,
      what: 'cluster-backup.sh',
      env: { ...process.env, ...this.env },
      signal: ctx.signal,
    });
    if (code !== 0) {
      throw new BackupError('source-failed', `${this.script} exited with code ${code}: ${tail.slice(-3).join(' | ') || 'no output'}`, {
        hint: 'read the script output in the log; a failing etcdctl (code 5) usually means etcd is unhealthy or its certificates changed',
      });
    }
    return findArtifacts(ctx.runDir, this.script);
  }
}
