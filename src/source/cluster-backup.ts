import { BackupError } from '../errors.js';
import { findArtifacts, removeLeftovers } from './artifacts.js';
import { runCommand } from './exec.js';
import { classifyScriptFailure } from './script-failure.js';
import type { Source, SourceArtifacts, SourceContext } from './source.js';

export interface ClusterBackupOptions {
  script: string;
  timeoutSeconds: number;
  /** No growth of the snapshot file for this long ends the run (source-stalled). */
  stallSeconds: number;
  /** Extra environment. KUBECONFIG has no effect: the real script forces the node's localhost.kubeconfig. */
  env?: Record<string, string>;
}

/** OpenShift's own backup script, run exactly as the documentation says to run it. */
export class ClusterBackupSource implements Source {
  readonly type = 'cluster-backup';
  constructor(private readonly o: ClusterBackupOptions) {}

  async produce(ctx: SourceContext): Promise<SourceArtifacts> {
    const args = ctx.force ? ['--force', ctx.runDir] : [ctx.runDir];
    let result;
    try {
      result = await runCommand(this.o.script, args, {
        timeoutSeconds: this.o.timeoutSeconds,
        log: ctx.log,
        what: 'cluster-backup.sh',
        env: { ...process.env, ...this.o.env },
        signal: ctx.signal,
        stall: { dir: ctx.runDir, seconds: this.o.stallSeconds },
      });
    } catch (e) {
      await this.tidy(ctx);
      throw e;
    }
    const { code, tail } = result;
    if (code !== 0) {
      await this.tidy(ctx);
      const { reason, hint } = classifyScriptFailure(code, tail);
      throw new BackupError(reason, `${this.o.script} exited with code ${code}: ${tail.slice(-3).join(' | ') || 'no output'}`, { hint });
    }
    return findArtifacts(ctx.runDir, this.o.script);
  }

  /** The script's ERR trap keeps the .part; a killed script keeps whatever it was writing. */
  private async tidy(ctx: SourceContext): Promise<void> {
    const left = await removeLeftovers(ctx.runDir);
    if (left.length > 0) ctx.log.info({ removed: left }, 'removed the files the failed source left behind');
  }
}
