import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/config/load.js';
import { policyFromConfig } from '../../src/coord/policy.js';

const dir = mkdtempSync(join(tmpdir(), 'ebd-coord-config-'));
const script = join(dir, 'cluster-backup.sh');
writeFileSync(script, '#!/bin/sh\n', { mode: 0o755 });
const doc = (coordination?: unknown) => ({
  cluster: 'c1',
  source: { type: 'cluster-backup', script },
  etcd: { endpoints: ['http://127.0.0.1:2379'] },
  stores: [{ name: 'nfs', type: 'local', path: '/mnt/backups' }],
  ...(coordination === undefined ? {} : { coordination }),
});

function problems(coordination: unknown): string[] {
  try {
    parseConfig(doc(coordination), join(dir, 'c.yaml'));
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).problems;
  }
  throw new Error('expected a ConfigError');
}

describe('coordination config', () => {
  it('defaults: etcd mode, back up alone without quorum, 5 s leader delay, 15 s lease, 3 attempts', () => {
    const c = parseConfig(doc(), join(dir, 'c.yaml'));
    expect(c.coordination).toEqual({ mode: 'etcd', onNoQuorum: 'backup', leaderDelay: '5s', leaseTtl: '15s', maxAttempts: 3 });
    expect(policyFromConfig(c.coordination)).toEqual({
      policy: { onNoQuorum: 'backup', leaderDelayMs: 5000, maxAttempts: 3, recheckMs: 5000 },
      leaseTtlSec: 15,
    });
  });

  it('mode none and the other settings are taken as given', () => {
    const c = parseConfig(doc({ mode: 'none', onNoQuorum: 'skip', leaderDelay: '0', leaseTtl: '1m', maxAttempts: 1 }), join(dir, 'c.yaml'));
    expect(policyFromConfig(c.coordination)).toMatchObject({ policy: { onNoQuorum: 'skip', leaderDelayMs: 0, maxAttempts: 1 }, leaseTtlSec: 60 });
  });

  it.each([
    [{ mode: 'raft' }, /^coordination\.mode: /],
    [{ onNoQuorum: 'panic' }, /^coordination\.onNoQuorum: /],
    [{ leaderDelay: 'soon' }, /^coordination\.leaderDelay: .*not a duration/],
    [{ leaseTtl: '1s' }, /^coordination\.leaseTtl: expected whole seconds between 2s and 5m/],
    [{ leaseTtl: '2500ms' }, /^coordination\.leaseTtl: expected whole seconds/],
    [{ leaseTtl: '10m' }, /^coordination\.leaseTtl: expected whole seconds/],
    [{ leaseTtl: 'x' }, /^coordination\.leaseTtl: .*not a duration/],
    [{ maxAttempts: 0 }, /^coordination\.maxAttempts: /],
    [{ maxAttempts: 2.5 }, /^coordination\.maxAttempts: /],
    [{ leader: true }, /^coordination\.leader: unknown key/],
  ])('%j is refused, naming the key', (coordination, re) => {
    const p = problems(coordination);
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(re);
  });
});
