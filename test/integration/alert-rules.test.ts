/**
 * The shipped Prometheus rules, checked and unit-tested by the real promtool
 * (Debian `prometheus`; scripts/install-deps.sh), the PrometheusRule object
 * kept equal to the plain rules file, and every metric the rules use checked
 * against what BackupMetrics really exposes.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { BackupMetrics } from '../../src/metrics/metrics.js';
import { DrillMetrics } from '../../src/drill/metrics.js';
import { RecoveryKitMetrics } from '../../src/recovery/metrics.js';
import { ContinuousMetrics } from '../../src/continuous/metrics.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const RULES = join(ROOT, 'packaging/prometheus/etcd-backupd-rules.yaml');
const PROMETHEUS_RULE = join(ROOT, 'packaging/kubernetes/prometheusrule.yaml');
const RULE_TESTS = join(ROOT, 'packaging/prometheus/tests/rules.test.yaml');

const ALERTS = ['EtcdBackupMissing', 'EtcdBackupDaemonDown', 'EtcdBackupSlotUnclaimed', 'EtcdBackupFailing', 'EtcdBackupOutboxBacklog', 'EtcdBackupRemoteVerificationFailed', 'EtcdBackupSizeAnomaly', 'EtcdBackupDrillMissing', 'EtcdBackupDrillFailing', 'EtcdBackupUntrustedBackups', 'EtcdBackupRecoveryKitStale', 'EtcdBackupContinuousLagging'];

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface Group {
  name: string;
  rules: Rule[];
}

function promtool(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn('promtool', args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code: code ?? -1, out }));
  });
}

let groups: Group[];

beforeAll(async () => {
  const r = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(`promtool is required for this test and was not found or does not run (${r.error?.message ?? r.stderr}); run \`bash scripts/install-deps.sh\``);
  }
  groups = (parse(await readFile(RULES, 'utf8')) as { groups: Group[] }).groups;
});

describe('promtool', () => {
  it('check rules: the plain rules file is valid and lint-clean', async () => {
    const r = await promtool(['check', 'rules', RULES]);
    expect(r.out).toContain('SUCCESS');
    expect(r.code, r.out).toBe(0);
  });

  it('test rules: every alert fires when it should and stays quiet when healthy', async () => {
    const r = await promtool(['test', 'rules', RULE_TESTS]);
    expect(r.out).toContain('SUCCESS');
    expect(r.code, r.out).toBe(0);
  });
});

describe('PrometheusRule object', () => {
  it('has the same groups as the plain rules file', async () => {
    const obj = parse(await readFile(PROMETHEUS_RULE, 'utf8')) as {
      apiVersion: string;
      kind: string;
      metadata: { name: string; namespace: string; labels: Record<string, string> };
      spec: { groups: Group[] };
    };
    expect(obj.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(obj.kind).toBe('PrometheusRule');
    expect(obj.metadata.namespace).toBe('openshift-etcd');
    expect(obj.metadata.labels).toMatchObject({ prometheus: 'k8s', role: 'alert-rules' });
    expect(obj.spec.groups).toEqual(groups);
  });
});

describe('the rules themselves', () => {
  it('define exactly the expected alerts, each with severity, summary, description and runbook', () => {
    const rules = groups.flatMap((g) => g.rules);
    expect([...new Set(rules.map((r) => r.alert))].sort()).toEqual([...ALERTS].sort());
    for (const r of rules) {
      expect(['critical', 'warning'], r.alert).toContain(r.labels?.severity);
      expect(r.annotations?.summary, r.alert).toEqual(expect.stringMatching(/\S/));
      expect(r.annotations?.description, r.alert).toEqual(expect.stringMatching(/\S/));
      expect(r.annotations?.runbook_url).toBe(`https://github.com/etcd-backupd/etcd-backupd/blob/main/docs/runbooks.md#runbook-${r.alert!.toLowerCase()}`);
    }
    const severity = (a: string): string[] => [...new Set(rules.filter((r) => r.alert === a).map((r) => r.labels!.severity!))];
    expect(severity('EtcdBackupMissing')).toEqual(['critical']);
    expect(severity('EtcdBackupRemoteVerificationFailed')).toEqual(['critical']);
    expect(severity('EtcdBackupFailing')).toEqual(['warning']);
    expect(severity('EtcdBackupDaemonDown')).toEqual(['warning']);
    expect(severity('EtcdBackupSlotUnclaimed')).toEqual(['warning']);
    expect(severity('EtcdBackupOutboxBacklog')).toEqual(['warning']);
    expect(severity('EtcdBackupSizeAnomaly')).toEqual(['warning']);
    expect(severity('EtcdBackupDrillMissing')).toEqual(['warning']);
    expect(severity('EtcdBackupRecoveryKitStale')).toEqual(['warning']);
    expect(severity('EtcdBackupContinuousLagging')).toEqual(['warning']);
    expect(severity('EtcdBackupDrillFailing').sort()).toEqual(['critical', 'warning']);
  });

  it('are all exercised by a firing case in the promtool tests', async () => {
    const tests = parse(await readFile(RULE_TESTS, 'utf8')) as { tests: { alert_rule_test?: { alertname: string; exp_alerts?: { exp_labels: Record<string, string> }[] }[] }[] };
    const fired = new Set<string>();
    for (const t of tests.tests) {
      for (const a of t.alert_rule_test ?? []) {
        for (const e of a.exp_alerts ?? []) fired.add(`${a.alertname}/${e.exp_labels.cause ?? ''}`);
      }
    }
    for (const r of groups.flatMap((g) => g.rules)) expect(fired, `${r.alert} ${r.labels?.cause ?? ''}`).toContain(`${r.alert}/${r.labels?.cause ?? ''}`);
  });

  it('only use metrics that BackupMetrics exposes', async () => {
    const m = new BackupMetrics({ cluster: 'c', node: 'n' });
    // The restore drill series live on the same registry (src/drill/metrics.ts).
    new DrillMetrics(m.registry);
    // And the recovery kit's (src/recovery/metrics.ts).
    new RecoveryKitMetrics(m.registry);
    // And the continuous writer's (src/continuous/metrics.ts).
    new ContinuousMetrics(m.registry);
    m.initStores(['s3']);
    const text = await m.render();
    const families = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((x) => x[1]!));
    const used = new Set(groups.flatMap((g) => g.rules).flatMap((r) => [...r.expr.matchAll(/\betcd_backup_[a-z0-9_]+/g)].map((x) => x[0])));
    expect(used.size).toBeGreaterThan(5);
    for (const name of used) expect(families, name).toContain(name);
    // The label the remote-verify alert selects on is a value the code counts from the start.
    expect(text).toContain('etcd_backup_store_failures_total{store="s3",reason="remote-verify-failed"} 0');
  });
});
