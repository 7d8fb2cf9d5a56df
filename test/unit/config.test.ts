import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseConfig, redactConfig } from '../../src/config/load.js';
import { parseDurationSeconds } from '../../src/units/duration.js';
import { caBundleInstead } from '../../src/config/ca-paths.js';

const dir = mkdtempSync(join(tmpdir(), 'ebd-config-'));
const script = join(dir, 'cluster-backup.sh');
writeFileSync(script, '#!/bin/sh\n', { mode: 0o755 });
mkdirSync(join(dir, 'manifests'));
for (const f of ['ca.crt', 'client.crt', 'client.key']) writeFileSync(join(dir, f), 'x');

const minimal = () => ({
  cluster: 'prod-east',
  source: { type: 'cluster-backup', script },
  etcd: { endpoints: ['http://127.0.0.1:2379'] },
  stores: [{ name: 'nfs', type: 'local', path: '/mnt/backups' }],
});

function problems(doc: unknown): string[] {
  try {
    parseConfig(doc, join(dir, 'c.yaml'));
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).problems;
  }
  throw new Error('expected a ConfigError');
}

describe('parseConfig', () => {
  it('fills every default from DESIGN.md', () => {
    const c = parseConfig(minimal(), join(dir, 'c.yaml'));
    expect(c.workDir).toBe('/var/lib/etcd-backupd');
    expect(c.schedule).toBe('0 2 * * *');
    expect(c.timezone).toBe('UTC');
    expect(c.preflight).toEqual({ requireHealthy: true, freeSpaceFactor: 2 });
    expect(c.retention).toMatchObject({ keepLast: 3, hourly: 0, daily: 7, weekly: 4, monthly: 12, yearly: 0, keepWithin: '0s', keepWithinSeconds: 0 });
    expect(c.local.keep).toBe(1);
    expect(c.encryption.recipients).toEqual([]);
    expect(c.metrics.listen).toBe('127.0.0.1:9979');
    expect(c.control.socket).toBe('/run/etcd-backupd/control.sock');
    expect(c.source).toMatchObject({ type: 'cluster-backup', timeout: '30m', timeoutSeconds: 1800, stallTimeout: '2m', stallSeconds: 120 });
    expect(c.stores[0]).toMatchObject({ verify: 'readback' });
    expect(c.node).toMatch(/^[A-Za-z0-9]/);
  });

  it('resolves relative paths against the config file', () => {
    const c = parseConfig({ ...minimal(), workDir: 'work', stores: [{ name: 'a', type: 'local', path: 'out' }] }, join(dir, 'c.yaml'));
    expect(c.workDir).toBe(join(dir, 'work'));
    expect(c.stores[0]!.path).toBe(join(dir, 'out'));
  });

  it('names the key of an unknown key', () => {
    expect(problems({ ...minimal(), retenton: {} })).toEqual(['retenton: unknown key']);
    expect(problems({ ...minimal(), stores: [{ name: 'a', type: 'local', path: '/x', bucket: 'b' }] })).toEqual(['stores[0].bucket: unknown key']);
  });

  it('names the key and the expected type of a wrong value', () => {
    expect(problems({ ...minimal(), retention: { daily: 'seven' } })).toEqual(['retention.daily: expected number, got string']);
    expect(problems({ ...minimal(), retention: { daily: -1 } })[0]).toMatch(/^retention\.daily: /);
    expect(problems({ ...minimal(), source: { type: 'cluster-backup', script, timeout: '10 minutes' } })[0]).toMatch(/^source\.timeout: .*not a duration/);
    expect(problems({ ...minimal(), source: { type: 'cluster-backup', script, stallTimeout: '2 minutes' } })[0]).toMatch(/^source\.stallTimeout: .*not a duration/);
    expect(problems({ ...minimal(), source: { type: 'cluster-backup', script, stallTimeout: '0s' } })).toEqual(['source.stallTimeout: expected at least 1s']);
    expect(problems({ ...minimal(), source: { type: 'etcdctl', staticPodDir: join(dir, 'manifests'), stallTimeout: '500ms' } })[0]).toMatch(/^source\.stallTimeout: /);
    expect(problems({ ...minimal(), schedule: '0 25 * * *' })[0]).toMatch(/^schedule: .*not a valid cron expression/);
    expect(problems({ ...minimal(), retention: { keepWithin: '6m' } })[0]).toMatch(/^retention\.keepWithin: /);
    expect(problems({ ...minimal(), timezone: 'Mars/Olympus' })[0]).toMatch(/^timezone: expected an IANA time zone/);
    expect(problems({ ...minimal(), metrics: { listen: '9979' } })[0]).toMatch(/^metrics\.listen: expected HOST:PORT/);
    expect(problems({ ...minimal(), encryption: { recipients: ['age1nope'] } })[0]).toMatch(/^encryption\.recipients\[0\]: expected an age X25519 recipient/);
  });

  it('names missing required keys', () => {
    const { cluster: _c, ...rest } = minimal();
    expect(problems(rest)).toEqual(['cluster: required (expected string)']);
    expect(problems({ ...minimal(), stores: [] })).toEqual(['stores: expected at least one store']);
    expect(problems({ ...minimal(), source: { type: 'rsync' } })[0]).toMatch(/^source\.type: expected one of "cluster-backup", "etcdctl"/);
  });

  it('requires TLS files for https endpoints and checks that named files exist', () => {
    expect(problems({ ...minimal(), etcd: { endpoints: ['https://127.0.0.1:2379'] } })).toEqual([
      'etcd.caFile: required when an etcd endpoint uses https://',
      'etcd.certFile: required when an etcd endpoint uses https://',
      'etcd.keyFile: required when an etcd endpoint uses https://',
    ]);
    const p = problems({ ...minimal(), etcd: { endpoints: ['https://127.0.0.1:2379'], caFile: 'ca.crt', certFile: 'client.crt', keyFile: 'nope.key' } });
    expect(p).toEqual([`etcd.keyFile: file ${join(dir, 'nope.key')} does not exist`]);
    expect(problems({ ...minimal(), source: { type: 'cluster-backup', script: '/nonexistent/cb.sh' } })).toEqual(['source.script: file /nonexistent/cb.sh does not exist']);
    expect(problems({ ...minimal(), source: { type: 'etcdctl', staticPodDir: script } })).toEqual([`source.staticPodDir: ${script} is not a directory`]);
  });

  it('rejects duplicate store names', () => {
    const s = { name: 'a', type: 'local', path: '/x' };
    expect(problems({ ...minimal(), stores: [s, s] })).toEqual(['stores[1].name: duplicate store name "a"']);
  });

  it('redacts inline secrets when printing', () => {
    const c = parseConfig(minimal(), join(dir, 'c.yaml'));
    const r = redactConfig({ ...c, stores: [{ ...c.stores[0]!, secretAccessKey: 'AKIA-SECRET' } as never] }) as { stores: { secretAccessKey: string }[] };
    expect(r.stores[0]!.secretAccessKey).toBe('<redacted>');
    expect(JSON.stringify(r)).not.toContain('AKIA-SECRET');
  });
});

describe('loadConfig', () => {
  it('reports YAML syntax errors and non-mapping documents', () => {
    const f = join(dir, 'bad.yaml');
    writeFileSync(f, 'cluster: [unclosed\n');
    expect(() => loadConfig(f)).toThrow(/YAML syntax/);
    writeFileSync(f, '- just\n- a list\n');
    expect(() => loadConfig(f)).toThrow(/expected a mapping/);
    writeFileSync(f, 'cluster: a\ncluster: b\n');
    expect(() => loadConfig(f)).toThrow(/YAML syntax/);
  });
  it('reports an unreadable file', () => {
    expect(() => loadConfig(join(dir, 'missing.yaml'))).toThrow(/cannot read config file: ENOENT/);
  });
});

describe('parseDurationSeconds', () => {
  it('parses the forms people write', () => {
    expect(parseDurationSeconds('0')).toBe(0);
    expect(parseDurationSeconds('90s')).toBe(90);
    expect(parseDurationSeconds('30m')).toBe(1800);
    expect(parseDurationSeconds('1h30m')).toBe(5400);
    expect(parseDurationSeconds('7d')).toBe(604800);
    expect(parseDurationSeconds('2w')).toBe(1209600);
    expect(parseDurationSeconds('500ms')).toBe(0.5);
  });
  it('rejects anything else', () => {
    for (const bad of ['', 'm', '10', '1x', '1h 30m', '-5s', 'forever']) expect(() => parseDurationSeconds(bad)).toThrow(/not a duration/);
  });
});

describe('etcd.caFile missing: the CA bundle that exists is named', () => {
  const spr = join(dir, 'static-pod-resources');
  const newer = join(spr, 'etcd-certs/configmaps/etcd-all-bundles/server-ca-bundle.crt');
  const older = join(spr, 'etcd-certs/configmaps/etcd-serving-ca/ca-bundle.crt');
  mkdirSync(join(newer, '..'), { recursive: true });
  writeFileSync(newer, 'x');

  it('a 4.16 path on a 4.17+ node points at etcd-all-bundles/server-ca-bundle.crt', () => {
    expect(problems({ ...minimal(), etcd: { endpoints: ['https://127.0.0.1:2379'], caFile: older, certFile: join(dir, 'client.crt'), keyFile: join(dir, 'client.key') } })).toEqual([
      `etcd.caFile: file ${older} does not exist; this node has ${newer} (OpenShift 4.17+ moved the CA bundle): use it`,
    ]);
  });

  it('no advice when neither known path exists', () => {
    expect(caBundleInstead('/nowhere/ca.crt', () => false)).toBeUndefined();
    expect(caBundleInstead('/etc/kubernetes/static-pod-resources/etcd-certs/configmaps/etcd-all-bundles/server-ca-bundle.crt', (p) => p.endsWith('etcd-serving-ca/ca-bundle.crt'))).toBe(
      '/etc/kubernetes/static-pod-resources/etcd-certs/configmaps/etcd-serving-ca/ca-bundle.crt',
    );
  });
});
