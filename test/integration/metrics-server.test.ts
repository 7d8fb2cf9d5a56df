/**
 * The metrics HTTP server on a real socket, and its exposition linted by the
 * real `promtool check metrics` (Debian `prometheus`; scripts/install-deps.sh).
 */
import { spawn, spawnSync } from 'node:child_process';
import { Agent, request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupMetrics } from '../../src/metrics/metrics.js';
import { parseListen, startMetricsServer, type MetricsServer } from '../../src/metrics/server.js';
import type { RunResult } from '../../src/run/backup.js';
import { VERSION } from '../../src/version.js';

function requirePromtool(): void {
  const r = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(`promtool is required for this test and was not found or does not run (${r.error?.message ?? r.stderr}); run \`bash scripts/install-deps.sh\``);
  }
}

function promtoolCheckMetrics(text: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, out }));
    child.stdin.end(text);
  });
}

/** A raw request, so methods and paths are exactly what we send. */
function call(port: number, method: string, path: string, host = '127.0.0.1', agent: Agent | false = false): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, method, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const T0 = Date.parse('2026-11-25T02:00:00.000Z');

function runs(): RunResult[] {
  const ok: RunResult = {
    id: '20261125T020000Z-master-0',
    result: 'success',
    trigger: 'schedule',
    startedAt: new Date(T0).toISOString(),
    finishedAt: new Date(T0 + 60_000).toISOString(),
    phases: { preflight: 0.4, source: 30, 'verify-local': 1, bundle: 4, deliver: 20 },
    stores: { s3: { result: 'success', size: 1000, uploadSeconds: 15, verifySeconds: 5 }, nfs: { result: 'success', size: 1000, uploadSeconds: 1, verifySeconds: 0.5 } },
    preflight: {
      forced: false,
      checks: [
        { name: 'endpoint-health', ok: true, detail: 'healthy' },
        { name: 'members-reachable', ok: true, detail: 'all 3 members answer' },
        { name: 'quorum', ok: true, detail: '3 of 3' },
      ],
    },
    manifest: {
      format: 1,
      id: '20261125T020000Z-master-0',
      cluster: 'prod',
      node: 'master-0',
      trigger: 'schedule',
      pinned: false,
      createdAt: new Date(T0).toISOString(),
      startedAt: new Date(T0).toISOString(),
      finishedAt: new Date(T0 + 50_000).toISOString(),
      tool: { name: 'etcd-backupd', version: '0.1.0' },
      source: { type: 'etcdctl', possiblyDirty: false },
      preflight: { forced: false, failedChecks: [] },
      etcd: { revision: 42, totalKey: 7, hash: 1, totalSize: 968 },
      artifacts: [{ name: 'snapshot_2026-11-25_020000.db', size: 1000, sha256: 'a'.repeat(64) }],
      object: { key: 'prod/20261125T020000Z-master-0/backup.tar', size: 3072, sha256: 'b'.repeat(64), encrypted: false, recipients: [] },
    },
  };
  const bad: RunResult = {
    id: '20261125T030000Z-master-0',
    result: 'failed',
    reason: 'upload-failed',
    error: 'x',
    trigger: 'manual',
    startedAt: new Date(T0 + 3_600_000).toISOString(),
    finishedAt: new Date(T0 + 3_700_000).toISOString(),
    phases: { preflight: 0.2, source: 31, 'verify-local': 1, bundle: 4, deliver: 60 },
    stores: { s3: { result: 'failed', reason: 'upload-failed', error: 'x' }, nfs: { result: 'success', uploadSeconds: 1, verifySeconds: 0.4 } },
  };
  return [ok, bad];
}

let metrics: BackupMetrics;
let server: MetricsServer;
let readiness: { ready: boolean; reason?: string } = { ready: false, reason: 'waiting for the first schedule computation' };

beforeAll(async () => {
  requirePromtool();
  metrics = new BackupMetrics({ cluster: 'prod', node: 'master-0' });
  metrics.initStores(['s3', 'nfs']);
  metrics.setScheduleInterval(86_400);
  metrics.setNextRun(new Date(T0 + 86_400_000));
  for (const r of runs()) metrics.recordRun(r);
  metrics.recordSkippedTick('busy');
  metrics.setInventory('s3', { count: 3, pinned: 1, oldest: new Date(T0 - 86_400_000 * 2), newest: new Date(T0) });
  metrics.setInventory('nfs', { count: 4, pinned: 1, oldest: new Date(T0 - 86_400_000 * 3), newest: new Date(T0 + 3_600_000) });
  metrics.setOutbox({ count: 1, bytes: 3072, oldest: new Date(T0 + 3_600_000) });
  metrics.recordPrune('nfs', 2);
  server = await startMetricsServer({ listen: '127.0.0.1:0', metrics, readiness: () => readiness });
});

afterAll(async () => {
  await server?.close();
});

describe('metrics server', () => {
  it('listens where asked, on a free port for port 0', () => {
    expect(server.address).toBe('127.0.0.1');
    expect(server.port).toBeGreaterThan(0);
  });

  it('GET /metrics serves the exposition with the Prometheus content type', async () => {
    const r = await call(server.port, 'GET', '/metrics');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(r.body).toContain(`etcd_backup_info{cluster="prod",node="master-0",version="${VERSION}"} 1`);
    expect(r.body).toContain('etcd_backup_runs_total{result="failed",trigger="manual"} 1');
    expect(r.body).toContain('etcd_backup_store_failures_total{store="s3",reason="upload-failed"} 1');
    expect(r.body).toContain('etcd_backup_schedule_interval_seconds 86400');
    expect(r.body).not.toContain('20261125T');
    // A query string does not change the resource.
    expect((await call(server.port, 'GET', '/metrics?x=1')).status).toBe(200);
  });

  it('the exposition passes `promtool check metrics` with no problems', async () => {
    const r = await call(server.port, 'GET', '/metrics');
    const lint = await promtoolCheckMetrics(r.body);
    expect(lint.out.trim()).toBe('');
    expect(lint.code).toBe(0);
  });

  it('a fresh daemon (HELP/TYPE without samples) also passes promtool', async () => {
    const lint = await promtoolCheckMetrics(await new BackupMetrics({ cluster: 'c', node: 'n' }).render());
    expect(lint.out.trim()).toBe('');
    expect(lint.code).toBe(0);
  });

  it('promtool would catch a naming mistake (the lint is live)', async () => {
    const lint = await promtoolCheckMetrics('# HELP etcd_backup_bad Bad.\n# TYPE etcd_backup_bad counter\netcd_backup_bad 1\n');
    expect(lint.code).not.toBe(0);
    expect(lint.out).toMatch(/_total/);
  });

  it('GET /healthz answers ok while the process lives', async () => {
    const r = await call(server.port, 'GET', '/healthz');
    expect(r.status).toBe(200);
    expect(r.body.trim()).toBe('ok');
  });

  it('GET /readyz follows readiness(), with the reason when not ready', async () => {
    readiness = { ready: false, reason: 'state file not loaded yet' };
    let r = await call(server.port, 'GET', '/readyz');
    expect(r.status).toBe(503);
    expect(r.body).toContain('state file not loaded yet');

    readiness = { ready: true };
    r = await call(server.port, 'GET', '/readyz');
    expect(r.status).toBe(200);

    readiness = { ready: false };
    r = await call(server.port, 'GET', '/readyz');
    expect(r.status).toBe(503);
  });

  it('unknown paths are 404, other methods 405', async () => {
    expect((await call(server.port, 'GET', '/')).status).toBe(404);
    expect((await call(server.port, 'GET', '/metricsx')).status).toBe(404);
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const r = await call(server.port, method, '/metrics');
      expect(r.status, method).toBe(405);
      expect(r.headers['allow']).toContain('GET');
    }
    expect((await call(server.port, 'POST', '/readyz')).status).toBe(405);
  });

  it('HEAD is GET without a body', async () => {
    const r = await call(server.port, 'HEAD', '/healthz');
    expect(r.status).toBe(200);
    expect(r.body).toBe('');
  });
});

describe('listen addresses', () => {
  it('parses HOST:PORT and [IPv6]:PORT and rejects the rest', () => {
    expect(parseListen('127.0.0.1:9979')).toEqual({ host: '127.0.0.1', port: 9979 });
    expect(parseListen('localhost:0')).toEqual({ host: 'localhost', port: 0 });
    expect(parseListen('[::1]:9979')).toEqual({ host: '::1', port: 9979 });
    expect(parseListen('[::]:9979')).toEqual({ host: '::', port: 9979 });
    for (const bad of ['9979', '::1:9979', '127.0.0.1:', '127.0.0.1:99999', '[::1]', 'host:port']) expect(() => parseListen(bad), bad).toThrow(/HOST:PORT/);
  });

  it('serves on [::1]:0', async () => {
    const s6 = await startMetricsServer({ listen: '[::1]:0', metrics, readiness: () => ({ ready: true }) });
    try {
      expect(s6.address).toBe('::1');
      const r = await call(s6.port, 'GET', '/metrics', '::1');
      expect(r.status).toBe(200);
      expect(r.body).toContain('etcd_backup_info');
    } finally {
      await s6.close();
    }
  });

  it('reports a port in use with the listen address', async () => {
    await expect(startMetricsServer({ listen: `127.0.0.1:${server.port}`, metrics, readiness: () => ({ ready: true }) })).rejects.toThrow(`127.0.0.1:${server.port}`);
  });

  it('close() ends keep-alive connections and frees the port', async () => {
    const s = await startMetricsServer({ listen: '127.0.0.1:0', metrics, readiness: () => ({ ready: true }) });
    const port = s.port;
    const agent = new Agent({ keepAlive: true, keepAliveMsecs: 60_000 });
    expect((await call(port, 'GET', '/metrics', '127.0.0.1', agent)).status).toBe(200);
    const t0 = performance.now();
    await s.close();
    expect(performance.now() - t0).toBeLessThan(2_000);
    agent.destroy();
    await s.close();
    const again = await startMetricsServer({ listen: `127.0.0.1:${port}`, metrics, readiness: () => ({ ready: true }) });
    await again.close();
  });
});
