import { configDocument, stripUndefined, type Config } from '../config/load.js';
import { storeType } from '../storage/stores.js';

/** One file the kit carries: copied from `from` (absolute) to `name` (relative to the kit). */
export interface KitFile {
  /** The config key it came from, e.g. `stores[1].privateKeyFile`. */
  key: string;
  from: string;
  name: string;
}

/** What the recovery kit holds, decided from the config alone (no I/O). */
export interface KitPlan {
  files: KitFile[];
  /** The kit's config.yaml: every file path relative to the kit (a config's relative paths resolve against its own directory). */
  config: Record<string, unknown>;
  /** Config keys the kit leaves out, each with why. */
  dropped: { key: string; why: string }[];
  /** Stores that take credentials from the environment: the operator must supply them on the recovery host. */
  ambient: { store: string; what: string }[];
}

/** Where the kit's own copies live, relative to the kit: `files/<name>`. */
export const KIT_FILES_DIR = 'files';
export const KIT_CONFIG = 'config.yaml';
export const KIT_RESTORE_TEXT = 'RESTORE.txt';
export const KIT_EXECUTABLE = 'etcd-backupd';
/** The kit config's workDir: scratch space for fetch/verify/restore on the recovery host. */
export const KIT_WORK_DIR = 'work';

/**
 * The kit from the running config. Copied: what reading the stores and a
 * restore need (store credentials, SFTP key and host keys, trusted public
 * keys, etcd TLS files). Never copied: the signing private key (whoever holds
 * it can make backups that count as good) and the drill's age identity (it
 * decrypts every backup; the kit sits on a master beside the encrypted
 * snapshots' producer, which is what encryption keeps it from).
 * Daemon-only parts are kept harmless: metrics on an ephemeral loopback port,
 * the control socket and workDir inside the kit, no drills, no kit of its own.
 * The source is replaced by a stand-in that names no outside path: backups
 * are not taken from a kit, and the source's paths are often the pod's (the
 * DaemonSet's script is in a ConfigMap volume), which would fail the kit
 * config's load on the host.
 */
export function planKit(cfg: Config): KitPlan {
  const files: KitFile[] = [];
  const take = (key: string, from: string | undefined, name: string): string | undefined => {
    if (!from) return undefined;
    files.push({ key, from, name: `${KIT_FILES_DIR}/${name}` });
    return `${KIT_FILES_DIR}/${name}`;
  };
  const doc = configDocument(cfg);
  const dropped: KitPlan['dropped'] = [];
  const ambient: KitPlan['ambient'] = [];

  doc.workDir = KIT_WORK_DIR;
  doc.etcd = {
    ...(doc.etcd as object),
    caFile: take('etcd.caFile', cfg.etcd.caFile, 'etcd-ca.crt'),
    certFile: take('etcd.certFile', cfg.etcd.certFile, 'etcd-client.crt'),
    keyFile: take('etcd.keyFile', cfg.etcd.keyFile, 'etcd-client.key'),
  };
  doc.stores = cfg.stores.map((s, i) => {
    const t = storeType(s.type);
    const out: Record<string, unknown> = { ...s };
    for (const k of t.requiredFiles) {
      const from = (s as unknown as Record<string, string | undefined>)[k];
      out[k] = take(`stores[${i}].${k}`, from, `store-${s.name}-${k}`);
    }
    const what = t.ambientCredentials?.(s);
    if (what) ambient.push({ store: s.name, what });
    return out;
  });
  if (cfg.signing.keyFile) dropped.push({ key: 'signing.keyFile', why: 'the signing private key stays on the masters: a restore only checks signatures' });
  doc.signing = { trustedKeys: cfg.signing.trustedKeys.map((k, i) => take(`signing.trustedKeys[${i}]`, k, `trusted-key-${i}.pub`)) };
  const { identityFile, schedule, ...drill } = cfg.drill;
  if (identityFile) dropped.push({ key: 'drill.identityFile', why: 'an age identity decrypts every backup: it never goes into the kit, bring it with --identity' });
  if (schedule) dropped.push({ key: 'drill.schedule', why: 'drills are the daemon\'s job, not a recovery host\'s' });
  doc.drill = drill;
  dropped.push({ key: 'source', why: 'backups are not taken from a kit; a stand-in (etcdctl, staticPodDir: the kit) keeps the config loadable anywhere' });
  doc.source = { type: 'etcdctl', staticPodDir: '.', etcdctl: 'etcdctl', timeout: cfg.source.timeout };
  doc.metrics = { listen: '127.0.0.1:0' };
  doc.control = { socket: 'control.sock' };
  doc.recovery = { dir: '' };
  return { files, config: stripUndefined(doc), dropped, ambient };
}
