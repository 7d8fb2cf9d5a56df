import { readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import type { ZodIssue } from 'zod';
import { BackupError } from '../errors.js';
import { parseDurationSeconds } from '../units/duration.js';
import { parseDuration as parseRetentionDuration } from '../retention/duration.js';
import { storeType } from '../storage/stores.js';
import { caBundleInstead } from './ca-paths.js';
import { configSchema, type RawConfig, type SourceConfig, type StoreConfig } from './schema.js';

export type { StoreConfig, SourceConfig };

/** The effective configuration: defaults filled, paths absolute, durations in seconds. */
export interface Config extends Omit<RawConfig, 'node' | 'source' | 'etcd' | 'retention' | 'stores' | 'continuous'> {
  node: string;
  stores: StoreConfig[];
  configPath?: string;
  source: SourceConfig & { timeoutSeconds: number; stallSeconds: number };
  etcd: RawConfig['etcd'] & { timeoutSeconds: number };
  retention: RawConfig['retention'] & { keepWithinSeconds: number };
  continuous: RawConfig['continuous'] & { keepWithinSeconds: number };
}

export class ConfigError extends BackupError {
  readonly problems: string[];
  constructor(file: string, problems: string[], hint = 'fix the keys named above; `etcd-backupd check-config --config FILE` validates without running anything') {
    super('config-invalid', `invalid config ${file}:\n  - ${problems.join('\n  - ')}`, { hint });
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** `stores[0].path` style, the way people read YAML paths. */
export function keyPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out || '(top level)';
}

function describeIssue(issue: ZodIssue): string {
  const at = keyPath(issue.path);
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys.map((k) => `${keyPath([...issue.path, k])}: unknown key`).join('; ');
    case 'invalid_type':
      return issue.received === 'undefined'
        ? `${at}: required (expected ${issue.expected})`
        : `${at}: expected ${issue.expected}, got ${issue.received}`;
    case 'invalid_union_discriminator':
      return `${at}: expected one of ${issue.options.map((o) => JSON.stringify(o)).join(', ')}`;
    case 'invalid_enum_value':
      return `${at}: expected one of ${issue.options.map((o) => JSON.stringify(o)).join(', ')}, got ${JSON.stringify(issue.received)}`;
    default:
      return `${at}: ${issue.message}`;
  }
}

/** Validates an already-parsed document; `file` only labels messages and anchors relative paths. */
export function parseConfig(doc: unknown, file = '<config>'): Config {
  const parsed = configSchema.safeParse(doc);
  if (!parsed.success) throw new ConfigError(file, parsed.error.issues.map(describeIssue));
  const raw = parsed.data;
  const base = file.startsWith('<') ? process.cwd() : dirname(resolve(file));
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const cfg: Config = {
    ...raw,
    node: raw.node ?? hostname().split('.')[0]!.replace(/[^A-Za-z0-9._-]/g, '-'),
    configPath: file.startsWith('<') ? undefined : resolve(file),
    workDir: abs(raw.workDir),
    source:
      raw.source.type === 'cluster-backup'
        ? { ...raw.source, script: abs(raw.source.script), timeoutSeconds: parseDurationSeconds(raw.source.timeout), stallSeconds: parseDurationSeconds(raw.source.stallTimeout) }
        : { ...raw.source, staticPodDir: abs(raw.source.staticPodDir), timeoutSeconds: parseDurationSeconds(raw.source.timeout), stallSeconds: parseDurationSeconds(raw.source.stallTimeout) },
    etcd: {
      ...raw.etcd,
      caFile: raw.etcd.caFile && abs(raw.etcd.caFile),
      certFile: raw.etcd.certFile && abs(raw.etcd.certFile),
      keyFile: raw.etcd.keyFile && abs(raw.etcd.keyFile),
      timeoutSeconds: parseDurationSeconds(raw.etcd.timeout),
    },
    retention: { ...raw.retention, keepWithinSeconds: parseRetentionDuration(raw.retention.keepWithin) },
    continuous: { ...raw.continuous, keepWithinSeconds: parseRetentionDuration(raw.continuous.keepWithin) },
    stores: raw.stores.map((s) => {
      // The keys its type names as local paths (the store's folder says which), made absolute.
      const out: Record<string, string | undefined> = { ...s } as never;
      for (const k of storeType(s.type).paths) out[k] = out[k] && abs(out[k]);
      return out as unknown as StoreConfig;
    }),
    control: { socket: abs(raw.control.socket) },
    drill: { ...raw.drill, identityFile: raw.drill.identityFile && abs(raw.drill.identityFile) },
    signing: { keyFile: raw.signing.keyFile && abs(raw.signing.keyFile), trustedKeys: raw.signing.trustedKeys.map(abs) },
  };
  const problems = missingFiles(cfg);
  if (problems.length) throw new ConfigError(file, problems);
  return cfg;
}

/** Files the config names must exist now: finding out at 2 a.m. on the first scheduled run is too late. */
function missingFiles(cfg: Config): string[] {
  const want: [string, string | undefined, 'file' | 'dir'][] = [
    ['etcd.caFile', cfg.etcd.caFile, 'file'],
    ['etcd.certFile', cfg.etcd.certFile, 'file'],
    ['etcd.keyFile', cfg.etcd.keyFile, 'file'],
  ];
  want.push(['drill.identityFile', cfg.drill.identityFile, 'file']);
  want.push(['signing.keyFile', cfg.signing.keyFile, 'file']);
  cfg.signing.trustedKeys.forEach((k, i) => want.push([`signing.trustedKeys[${i}]`, k, 'file']));
  cfg.stores.forEach((s, i) => {
    for (const k of storeType(s.type).requiredFiles) want.push([`stores[${i}].${k}`, (s as unknown as Record<string, string | undefined>)[k], 'file']);
  });
  if (cfg.source.type === 'cluster-backup') want.push(['source.script', cfg.source.script, 'file']);
  else want.push(['source.staticPodDir', cfg.source.staticPodDir, 'dir']);
  const problems: string[] = [];
  for (const [key, path, kind] of want) {
    if (!path) continue;
    try {
      const st = statSync(path);
      if (kind === 'file' && !st.isFile()) problems.push(`${key}: ${path} is not a file`);
      if (kind === 'dir' && !st.isDirectory()) problems.push(`${key}: ${path} is not a directory`);
    } catch {
      const instead = key === 'etcd.caFile' ? caBundleInstead(path) : undefined;
      problems.push(`${key}: ${kind} ${path} does not exist` + (instead ? `; this node has ${instead} (OpenShift 4.17+ moved the CA bundle): use it` : ''));
    }
  }
  return problems;
}

export function loadConfig(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(
      file,
      [`cannot read config file: ${code ?? (e as Error).message}`],
      code === 'ENOENT'
        ? 'check the path given with --config (or ETCD_BACKUPD_CONFIG); on the worst day the recovery kit has one: /var/lib/etcd-backupd/recovery/config.yaml'
        : 'check that the file exists and that this user can read it (configs hold credential paths: root-only is usual)',
    );
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => `YAML syntax: ${e.message.split('\n')[0]}`),
    );
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    // Alias bombs and dangling aliases surface here, not as parse errors.
    throw new ConfigError(file, [`YAML: ${(e as Error).message}`]);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError(file, ['(top level): expected a mapping of keys such as cluster, source, stores']);
  }
  return parseConfig(value, file);
}

const SECRET_KEY = /secret|password|passphrase|token|credential/i;

/** The effective config for printing: anything that looks like an inline secret is replaced. */
/**
 * The effective config as a config document again: every default filled in,
 * paths absolute, without the derived fields (configPath, *Seconds) a
 * strict schema refuses. Loading it gives the same Config (check-config's
 * output; the recovery kit's config starts from it).
 */
export function configDocument(cfg: Config): Record<string, unknown> {
  const doc = structuredClone(cfg) as unknown as Record<string, Record<string, unknown>>;
  delete (doc as Record<string, unknown>).configPath;
  delete doc.source!.timeoutSeconds;
  delete doc.source!.stallSeconds;
  delete doc.etcd!.timeoutSeconds;
  delete doc.retention!.keepWithinSeconds;
  delete doc.continuous!.keepWithinSeconds;
  return stripUndefined(doc);
}

/** YAML would write `key: null` for an unset optional key; the schema wants it absent. */
export function stripUndefined<T>(v: T): T {
  if (Array.isArray(v)) return v.map(stripUndefined) as T;
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined).map(([k, x]) => [k, stripUndefined(x)])) as T;
  }
  return v;
}

export function redactConfig(cfg: Config | Record<string, unknown>): unknown {
  const walk = (v: unknown, key = ''): unknown => {
    if (Array.isArray(v)) return v.map((x) => walk(x));
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, k)]));
    if (typeof v === 'string' && SECRET_KEY.test(key) && !/File$/.test(key)) return '<redacted>';
    return v;
  };
  return walk(cfg);
}
