/**
 * packaging/grafana/etcd-backupd.json: it parses as a Grafana dashboard, every
 * etcd_backup_* series it queries is one that BackupMetrics exposes (rendered
 * after a recorded run, an inventory and an outbox scan, as a scrape sees it),
 * and every query is valid PromQL for the real promtool once Grafana's
 * variables are substituted.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { Manifest } from '../../src/bundle/manifest.js';
import { BackupMetrics } from '../../src/metrics/metrics.js';
import { ContinuousMetrics } from '../../src/continuous/metrics.js';
import type { RunResult } from '../../src/run/backup.js';
import { VERSION } from '../../src/version.js';
import { ROOT } from '../support/cli.js';

const FILE = join(ROOT, 'packaging', 'grafana', 'etcd-backupd.json');

interface Panel {
  id: number;
  type: string;
  title: string;
  fieldConfig?: { defaults: { unit?: string; thresholds?: { steps: { value: number | null }[] }; custom?: { thresholdsStyle?: { mode: string } } } };
  datasource?: { type: string; uid: string };
  targets?: { expr: string; refId: string; datasource?: { uid: string } }[];
  gridPos: { h: number; w: number; x: number; y: number };
}

const dashboard = JSON.parse(readFileSync(FILE, 'utf8')) as { title: string; uid: string; panels: Panel[]; templating: { list: { name: string; type: string; query: unknown; definition?: string }[] }; schemaVersion: number };
const queryPanels = dashboard.panels.filter((p) => p.type !== 'row');
const exprs = queryPanels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
const variableQueries = dashboard.templating.list.filter((v) => v.type === 'query').map((v) => (typeof v.query === 'string' ? v.query : (v.query as { query: string }).query));

/** A successful run with every phase, two stores and a preflight: what a scrape sees after a normal night. */
function sampleRun(): RunResult {
  const start = Date.parse('2026-11-25T02:00:00.000Z');
  const iso = (ms: number) => new Date(ms).toISOString();
  const id = '20261125T020000Z-master-0';
  const manifest: Manifest = {
    format: 1,
    id,
    cluster: 'prod-east',
    node: 'master-0',
    trigger: 'schedule',
    pinned: false,
    createdAt: iso(start),
    startedAt: iso(start),
    finishedAt: iso(start + 60_000),
    tool: { name: 'etcd-backupd', version: VERSION },
    source: { type: 'cluster-backup', possiblyDirty: false },
    preflight: { forced: false, failedChecks: [] },
    etcd: { version: '3.5.9', clusterId: '1', memberId: '2', leader: '2', revision: 987_654, totalKey: 12_345, hash: 3102514566, totalSize: 104_857_600 },
    artifacts: [
      { name: 'snapshot_2026-11-25_020000.db', size: 104_857_632, sha256: 'a'.repeat(64) },
      { name: 'static_kuberesources_2026-11-25_020000.tar.gz', size: 81_234, sha256: 'b'.repeat(64) },
    ],
    object: { key: `prod-east/${id}/backup.tar`, size: 104_960_000, sha256: 'c'.repeat(64), encrypted: false, recipients: [] },
  } as Manifest;
  return {
    id,
    result: 'success',
    trigger: 'schedule',
    startedAt: iso(start),
    finishedAt: iso(start + 75_000),
    phases: { preflight: 0.3, source: 41.5, 'verify-local': 2.25, bundle: 6, deliver: 24 },
    stores: {
      s3: { result: 'success', key: manifest.object!.key, size: manifest.object!.size, sha256: manifest.object!.sha256, uploadSeconds: 12.5, verifySeconds: 8 },
      nfs: { result: 'success', key: manifest.object!.key, size: manifest.object!.size, sha256: manifest.object!.sha256, uploadSeconds: 2, verifySeconds: 1.5 },
    },
    preflight: {
      forced: false,
      checks: [
        { name: 'endpoint-health', ok: true, detail: 'healthy' },
        { name: 'members-reachable', ok: true, detail: 'all 3 members answer' },
        { name: 'quorum', ok: true, detail: '3 of 3' },
      ],
    },
    manifest,
  } as RunResult;
}

/** Every sample name of the exposition (histograms as _bucket, _sum, _count). */
async function exposedNames(): Promise<Set<string>> {
  const m = new BackupMetrics({ cluster: 'prod-east', node: 'master-0' });
  m.initStores(['s3', 'nfs']);
  m.setScheduleInterval(86_400);
  m.restoreState({ stores: { s3: { lastFailure: '2026-11-24T02:00:00.000Z' } } });
  m.recordRun(sampleRun());
  m.setNextRun(new Date('2026-11-26T02:00:00.000Z'));
  m.setInventory('s3', { count: 7, pinned: 1, oldest: new Date('2026-11-01T02:00:00.000Z'), newest: new Date('2026-11-25T02:00:00.000Z') });
  m.setOutbox({ count: 1, bytes: 104_960_000, oldest: new Date('2026-11-25T02:00:00.000Z') });
  m.recordSkippedTick('busy');
  m.recordOutboxDropped();
  m.recordPrune('s3', 1);
  // The continuous-backup series, as the writer node shows them (the lag exists only there).
  const c = new ContinuousMetrics(m.registry);
  c.setWriter(true);
  c.setLag(4.5, 120);
  c.recordAttempt(true, 2048);
  c.recordCommitted(new Date('2026-11-25T02:00:10.000Z'));
  c.setOutbox(0);
  const names = new Set<string>();
  for (const line of (await m.render()).split('\n')) {
    const n = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line);
    if (n) names.add(n[1]!);
  }
  return names;
}

function promtool(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', (e) => reject(new Error(`promtool: ${e.message} (scripts/install-deps.sh installs it: Debian package prometheus)`)));
    child.on('close', (code) => resolve({ code, out }));
  });
}

describe('packaging/grafana/etcd-backupd.json', () => {
  it('is a dashboard with unique panel ids, queries on the selectable Prometheus data source, and the node variable', () => {
    expect(dashboard.title).toBe('etcd-backupd');
    expect(dashboard.uid).toBe('etcd-backupd');
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(['datasource', 'node']);
    for (const p of queryPanels) {
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
    }
  });

  it('covers what an operator asks first: last success per node, duration by phase, size, failures by reason, outbox backlog, next run', () => {
    const all = exprs.map((e) => e.expr).join('\n');
    for (const name of [
      'etcd_backup_last_run_success_timestamp_seconds',
      'etcd_backup_last_phase_duration_seconds',
      'etcd_backup_phase_duration_seconds_bucket',
      'etcd_backup_size_bytes',
      'etcd_backup_failures_total',
      'etcd_backup_outbox_backlog',
      'etcd_backup_next_run_timestamp_seconds',
    ]) {
      expect(all, name).toContain(name);
    }
  });

  it('shows the continuous-backup lag, seconds and revisions, with the alert threshold of the shipped rule', () => {
    const lag = queryPanels.filter((p) => (p.targets ?? []).some((t) => t.expr.includes('etcd_backup_continuous_lag_seconds')));
    expect(lag).toHaveLength(1);
    const panel = lag[0]!;
    expect(panel.targets!.map((t) => t.expr).join('\n')).toContain('etcd_backup_continuous_lag_revisions');
    expect(panel.fieldConfig?.defaults.unit).toBe('s');
    const rules = readFileSync(join(ROOT, 'packaging/prometheus/etcd-backupd-rules.yaml'), 'utf8');
    const threshold = Number(/expr: etcd_backup_continuous_lag_seconds > (\d+)/.exec(rules)?.[1]);
    expect(threshold).toBeGreaterThan(0);
    expect(panel.fieldConfig?.defaults.thresholds?.steps.map((st) => st.value)).toEqual([null, threshold]);
    expect(panel.fieldConfig?.defaults.custom?.thresholdsStyle?.mode).not.toBe('off');
  });

  it('every panel query names at least one etcd_backup_* series', () => {
    const bare = exprs.filter((e) => !/\betcd_backup_[a-zA-Z0-9_]+/.test(e.expr));
    expect(bare, JSON.stringify(bare)).toEqual([]);
  });

  it('queries only series that the daemon exposes (BackupMetrics and ContinuousMetrics)', async () => {
    const exposed = await exposedNames();
    const used = new Set([...exprs.map((e) => e.expr), ...variableQueries].flatMap((q) => q.match(/\betcd_backup_[a-zA-Z0-9_]+/g) ?? []));
    expect(used.size).toBeGreaterThan(20);
    const missing = [...used].filter((n) => !exposed.has(n));
    expect(missing, `not in the exposition of src/metrics/metrics.ts; exposed: ${[...exposed].sort().join(', ')}`).toEqual([]);
  });

  it('every query is valid PromQL (promtool check rules, Grafana variables substituted)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ebd-grafana-'));
    try {
      const rules = [...exprs.map((e) => e.expr), ...variableQueries.filter((q) => !q.startsWith('label_values('))].map((expr, i) => ({
        record: `etcd_backupd:dashboard_query_${i}`,
        expr: expr.replaceAll('$__range', '7d').replaceAll('$__rate_interval', '2m').replaceAll('$node', '.*'),
      }));
      const file = join(dir, 'dashboard-queries.yaml');
      writeFileSync(file, stringify({ groups: [{ name: 'dashboard', rules }] }));
      const r = await promtool(['check', 'rules', file]);
      expect(r.code, r.out).toBe(0);
      expect(r.out).toContain(`SUCCESS: ${rules.length} rules found`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
