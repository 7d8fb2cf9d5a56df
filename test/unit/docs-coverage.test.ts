/**
 * Issue 18: every config key and every metric the code defines is named in
 * the docs. The keys come from the config schema itself (every store type's
 * too), the metric families from the registries the daemon exposes; a key or
 * metric added without a word in docs/ or README.md fails here.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.js';
import { BackupMetrics } from '../../src/metrics/metrics.js';
import { DrillMetrics } from '../../src/drill/metrics.js';
import { RecoveryKitMetrics } from '../../src/recovery/metrics.js';
import { ContinuousMetrics } from '../../src/continuous/metrics.js';
import { storeTypes } from '../../src/storage/registry.js';
import '../../src/storage/index.js';
import { ROOT } from '../support/cli.js';

function docsText(): string {
  const docs = join(ROOT, 'docs');
  return [readFileSync(join(ROOT, 'README.md'), 'utf8'), ...readdirSync(docs).filter((f) => f.endsWith('.md')).map((f) => readFileSync(join(docs, f), 'utf8'))].join('\n');
}

/** Every object key of a zod schema, as dotted paths (arrays as `[]`). */
function keyPaths(schema: z.ZodTypeAny, prefix = ''): string[] {
  const def = schema._def as { typeName: string; [k: string]: unknown };
  switch (def.typeName) {
    case 'ZodObject': {
      const shape = (schema as z.ZodObject<z.ZodRawShape>).shape;
      return Object.entries(shape).flatMap(([k, v]) => [`${prefix}${k}`, ...keyPaths(v as z.ZodTypeAny, `${prefix}${k}.`)]);
    }
    case 'ZodDefault':
    case 'ZodOptional':
    case 'ZodNullable':
      return keyPaths(def.innerType as z.ZodTypeAny, prefix);
    case 'ZodEffects':
      return keyPaths(def.schema as z.ZodTypeAny, prefix);
    case 'ZodArray':
      return keyPaths(def.type as z.ZodTypeAny, prefix.replace(/\.$/, '[].'));
    case 'ZodUnion':
    case 'ZodDiscriminatedUnion':
      return (def.options as z.ZodTypeAny[]).flatMap((o) => keyPaths(o, prefix));
    default:
      return [];
  }
}

describe('the docs name', () => {
  const text = docsText();

  it('every config key (its name, in backquotes or as a YAML key)', () => {
    const paths = [...new Set([...keyPaths(configSchema), ...storeTypes().flatMap((t) => keyPaths(t.schema as z.ZodTypeAny, 'stores[].'))])];
    expect(paths.length).toBeGreaterThan(40);
    const missing = paths.filter((p) => {
      const leaf = p.split('.').pop()!.replace('[]', '');
      return !new RegExp(`(\`${leaf}\`|\\b${leaf}:|\`[^\`]*\\b${leaf}\\b[^\`]*\`)`).test(text);
    });
    expect(missing, `config keys no doc names: ${missing.join(', ')}`).toEqual([]);
  });

  it('a runbook section for every shipped alert (the runbook_url targets)', () => {
    const rules = readFileSync(join(ROOT, 'packaging/prometheus/etcd-backupd-rules.yaml'), 'utf8');
    const alerts = [...new Set([...rules.matchAll(/- alert: (\w+)/g)].map((m) => m[1]!))];
    expect(alerts.length).toBeGreaterThan(8);
    const runbooks = readFileSync(join(ROOT, 'docs/runbooks.md'), 'utf8');
    for (const a of alerts) expect(runbooks, a).toContain(`### runbook-${a.toLowerCase()}`);
    for (const m of rules.matchAll(/runbook_url: (\S+)/g)) expect(m[1]).toMatch(/\/docs\/runbooks\.md#runbook-[a-z]+$/);
  });

  it('every metric family the daemon exposes', async () => {
    const m = new BackupMetrics({ cluster: 'c', node: 'n' });
    new DrillMetrics(m.registry);
    new RecoveryKitMetrics(m.registry);
    new ContinuousMetrics(m.registry);
    const families = [...(await m.render()).matchAll(/^# TYPE (\S+) /gm)].map((x) => x[1]!);
    expect(families.length).toBeGreaterThan(30);
    const missing = families.filter((f) => !text.includes(f));
    expect(missing, `metrics no doc names: ${missing.join(', ')}`).toEqual([]);
  });
});
