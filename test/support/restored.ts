/**
 * A cluster restored by `etcd-backupd restore`, started and read as an
 * operator would: one etcd per restored data dir (the same --initial-cluster
 * and token as the restore), health through etcdctl, and every key with the
 * revision it was read at. Used by restore.test.ts and recovery-e2e.test.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync } from 'node:fs';
import { ensureTool, runEtcdctl } from './etcd.js';

export interface RestoredMember {
  name: string;
  dataDir: string;
  peer: string;
  client: string;
}

/** Starts etcd from a restored data dir; its output goes to `logFile`. The caller kills it. */
export function startRestoredMember(m: RestoredMember, initialCluster: string, token: string, logFile: string, env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '' }): ChildProcess {
  const log = openSync(logFile, 'a');
  return spawn(ensureTool('etcd'), [
    '--name', m.name, '--data-dir', m.dataDir,
    '--listen-client-urls', m.client, '--advertise-client-urls', m.client,
    '--listen-peer-urls', m.peer, '--initial-advertise-peer-urls', m.peer,
    '--initial-cluster', initialCluster, '--initial-cluster-token', token, '--initial-cluster-state', 'new',
  ], { stdio: ['ignore', log, log], env });
}

/** Waits (30 s at most) until `etcdctl endpoint health` passes for every endpoint. */
export async function waitEtcdHealthy(endpoints: string[]): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await runEtcdctl(['endpoint', 'health', '--command-timeout=2s'], { endpoints, timeoutMs: 5000 });
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

/** Every key and value (UTF-8) and the revision they were read at. */
export async function etcdKeys(endpoints: string[]): Promise<{ keys: Map<string, string>; revision: number }> {
  const r = await runEtcdctl(['get', '', '--prefix', '-w', 'json'], { endpoints });
  const doc = JSON.parse(r.stdout) as { header: { revision: number }; kvs?: { key: string; value: string }[] };
  const dec = (s: string) => Buffer.from(s, 'base64').toString();
  return { keys: new Map((doc.kvs ?? []).map((kv) => [dec(kv.key), dec(kv.value)])), revision: doc.header.revision };
}
