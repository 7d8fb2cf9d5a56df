import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { describe, expect, it } from 'vitest';
import { FAKE_CLUSTER_BACKUP, runCli, tempDir } from '../support/cli.js';
import { Rng } from '../support/fuzz.js';

/**
 * The CLI on broken configs, as an operator meets them: exit code 2, one
 * readable message naming the key, never a stack trace (test/unit/fuzz-config
 * drives the loader itself through thousands of documents).
 */
const dir = tempDir('fuzz-config-cli');
const valid = {
  cluster: 'c1',
  node: 'm0',
  workDir: join(dir, 'work'),
  source: { type: 'cluster-backup', script: FAKE_CLUSTER_BACKUP },
  etcd: { endpoints: ['http://127.0.0.1:1'] },
  stores: [{ name: 'nfs', type: 'local', path: join(dir, 'store') }],
  metrics: { listen: '127.0.0.1:0' },
  control: { socket: join(dir, 'ctl', 'control.sock') },
};
const text = stringify(valid);
const bomb = ['a: &a [x,x,x,x,x,x,x,x,x]', 'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]', 'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]', 'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]', 'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]', 'f: [*e,*e,*e,*e,*e,*e,*e,*e,*e]'].join('\n');

const cases: [string, string | Buffer, RegExp][] = [
  ['a wrong type', text.replace('cluster: c1', 'cluster: [c1]'), /cluster: expected string, got array/],
  ['an unknown key', `${text}bogus: 1\n`, /bogus: unknown key/],
  ['truncated in the middle', text.slice(0, Math.floor(text.length / 2)), /config-invalid/],
  ['random bytes', new Rng(42).bytes(3000), /config-invalid/],
  ['deep nesting', `${text}x: ${'['.repeat(20000)}${']'.repeat(20000)}\n`, /config-invalid/],
  ['a huge number', text.replace('cluster: c1', `cluster: c1\nreadyFailureThreshold: 1${'0'.repeat(400)}`), /readyFailureThreshold: /],
  ['an alias bomb', `${bomb}\n${text}`, /config-invalid/],
  ['an unresolved alias', text.replace('node: m0', 'node: *m0'), /alias|node/],
  ['a metrics port above 65535', text.replace('127.0.0.1:0', '127.0.0.1:99999'), /metrics\.listen/],
];

describe('check-config on broken configs', () => {
  it.each(cases)('%s: exit 2, names the problem, no stack trace', async (_what, body, expected) => {
    const file = join(dir, `c-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(file, body);
    const r = await runCli(['check-config', '--config', file]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(expected);
    expect(r.stderr).toMatch(/reason: config-invalid/);
    expect(r.stderr).not.toMatch(/\n\s+at |"stack"/);
    expect(r.stdout).toBe('');
  });

  it('the daemon refuses the same configs the same way (exit 2, no stack trace)', async () => {
    for (const [what, body] of [cases[6]!, cases[8]!]) {
      const file = join(dir, `run-${Math.random().toString(36).slice(2)}.yaml`);
      writeFileSync(file, body);
      const r = await runCli(['run', '--config', file], { timeoutMs: 30_000 });
      expect(r.code, `${what}: ${r.stderr}`).toBe(2);
      expect(r.stderr, what).not.toMatch(/\n\s+at |"stack"/);
    }
  });
});
