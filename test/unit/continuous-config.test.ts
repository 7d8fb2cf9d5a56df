import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, configDocument, parseConfig } from '../../src/config/load.js';

const dir = mkdtempSync(join(tmpdir(), 'ebd-continuous-config-'));
const script = join(dir, 'cluster-backup.sh');
writeFileSync(script, '#!/bin/sh\n', { mode: 0o755 });
const doc = (extra: Record<string, unknown>) => ({
  cluster: 'c1',
  source: { type: 'cluster-backup', script },
  etcd: { endpoints: ['http://127.0.0.1:2379'] },
  stores: [{ name: 'nfs', type: 'local', path: '/mnt/backups' }],
  ...extra,
});

function problems(extra: Record<string, unknown>): string[] {
  try {
    parseConfig(doc(extra), join(dir, 'c.yaml'));
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).problems;
  }
  throw new Error('expected a ConfigError');
}

describe('continuous config', () => {
  it('defaults: off, 10 s, 4 MiB, segments as long as their base', () => {
    expect(parseConfig(doc({}), join(dir, 'c.yaml')).continuous).toEqual({ enabled: false, interval: '10s', maxSegmentBytes: 4 * 1024 * 1024, keepWithin: '0s', keepWithinSeconds: 0 });
  });

  it('keepWithin in retention\'s duration syntax, and back through configDocument', () => {
    const cfg = parseConfig(doc({ continuous: { keepWithin: '2d12h' } }), join(dir, 'c.yaml'));
    expect(cfg.continuous).toMatchObject({ keepWithin: '2d12h', keepWithinSeconds: 2.5 * 86_400 });
    const again = parseConfig(configDocument(cfg), join(dir, 'c.yaml'));
    expect(again.continuous).toEqual(cfg.continuous);
  });

  it('on with coordination (the default mode)', () => {
    expect(parseConfig(doc({ continuous: { enabled: true, interval: '1s' } }), join(dir, 'c.yaml')).continuous).toMatchObject({ enabled: true, interval: '1s' });
  });

  it.each([
    [{ continuous: { enabled: true }, coordination: { mode: 'none' } }, /^continuous\.enabled: continuous backups need coordination\.mode: etcd/],
    [{ continuous: { interval: '0s' } }, /^continuous\.interval: expected between 1s and 1h/],
    [{ continuous: { interval: '2h' } }, /^continuous\.interval: expected between 1s and 1h/],
    [{ continuous: { interval: 'often' } }, /^continuous\.interval: .*not a duration/],
    [{ continuous: { maxSegmentBytes: 1000 } }, /^continuous\.maxSegmentBytes: /],
    [{ continuous: { every: '1s' } }, /^continuous\.every: unknown key/],
    [{ continuous: { keepWithin: '6m' } }, /^continuous\.keepWithin: .*\bm\b/],
    [{ continuous: { keepWithin: 'soon' } }, /^continuous\.keepWithin: /],
  ])('%j is refused, naming the key', (extra, re) => {
    const p = problems(extra);
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(re);
  });

  it('continuous off is fine without coordination', () => {
    expect(parseConfig(doc({ coordination: { mode: 'none' } }), join(dir, 'c.yaml')).continuous.enabled).toBe(false);
  });
});
