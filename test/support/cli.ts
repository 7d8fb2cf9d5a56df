import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtempSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = join(ROOT, 'dist', 'cli.js');
export const FAKE_CLUSTER_BACKUP = join(ROOT, 'test', 'fixtures', 'cluster-backup.sh');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI as users do: a separate process, real exit code, stdout and stderr apart. */
export function runCli(args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` (scripts/test.sh does)`);
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, ETCD_BACKUPD_LOG_LEVEL: 'info', ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code: code ?? -1, stdout, stderr });
    });
  });
}

export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), `ebd-${prefix}-`));
  chmodSync(d, 0o700);
  return d;
}

/**
 * Writes a YAML config file and returns its path. A daemon config (one with
 * `cluster`) that says nothing about `coordination` gets `mode: none`: most
 * tests are about one node and its etcd endpoint may not exist; tests of
 * slot claims set `coordination` themselves.
 */
export function writeConfig(dir: string, cfg: Record<string, unknown>, name = 'config.yaml'): string {
  const p = join(dir, name);
  const withCoord = 'cluster' in cfg && !('coordination' in cfg) ? { ...cfg, coordination: { mode: 'none' } } : cfg;
  // The recovery kit defaults to a host path (/var/lib/etcd-backupd/recovery): tests that do not test it keep it off.
  const withKit = 'cluster' in withCoord && !('recovery' in withCoord) ? { ...withCoord, recovery: { dir: '' } } : withCoord;
  writeFileSync(p, stringify(withKit), { mode: 0o600 });
  return p;
}
