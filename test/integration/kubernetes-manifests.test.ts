/**
 * packaging/kubernetes/ (README, "Install on OpenShift"):
 * - every manifest, in kustomization.yaml's resources and the Secret examples,
 *   validates against the Kubernetes OpenAPI schemas compiled into
 *   `kubernetes-models` (core, apps, rbac) and the prometheus-operator CRD
 *   schemas in `@kubernetes-models/prometheus-operator` (ServiceMonitor,
 *   PrometheusRule). Those schemas, like the API server without strict field
 *   validation, do not reject unknown fields: the fields that matter are
 *   asserted one by one below. There is no SecurityContextConstraints object
 *   to validate: the pods use the built-in `privileged` SCC through RBAC.
 * - the kustomization builds: with `kubectl kustomize` (or `kustomize build`)
 *   when one is on PATH, and always by reading its resources the way
 *   kustomize does (every file exists, parses, one namespace, no Namespace);
 * - the PrometheusRule (prometheusrule.yaml, the only copy: kustomize refuses
 *   files outside the kustomization directory) is one of its resources; its
 *   groups are checked against the plain rules file by alert-rules.test.ts;
 * - the ConfigMap's config.yaml passes the config schema (zod, without the
 *   file-existence checks of parseConfig), and every file path it names is
 *   where the DaemonSet mounts that file.
 * - packaging/Containerfile, read statically: UBI 9 minimal at a pinned tag,
 *   the single executable as the only file copied in, no Node.js installed or
 *   run, nsenter present, root, the entrypoint the DaemonSet relies on. The
 *   image is NOT built here: this machine has no container engine (no podman,
 *   no Docker daemon), and the build pulls its base image from the network.
 *   The RUN step that checks the image at build time (`etcd-backupd --version`
 *   and `nsenter --version` on the base, no `node`) runs only where it is built.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { ConfigMap, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { PrometheusRule, ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { configSchema } from '../../src/config/schema.js';
import { VERSION } from '../../src/version.js';
import { ROOT } from '../support/cli.js';

const execFileP = promisify(execFile);
const DIR = join(ROOT, 'packaging', 'kubernetes');
const CONTAINERFILE = join(ROOT, 'packaging', 'Containerfile');
const NAMESPACE = 'openshift-etcd';

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> } } & Record<string, any>;

/** Validators by apiVersion/kind: a kind that is not listed here fails the test (add its schema first). */
const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'apps/v1/DaemonSet': DaemonSet,
  'rbac.authorization.k8s.io/v1/Role': Role,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
  'monitoring.coreos.com/v1/PrometheusRule': PrometheusRule,
};

/** YAML 1.1, as the API server and kubectl read manifests (0444 is octal there). */
function parseManifests(text: string, file: string): Obj[] {
  const docs = parseAllDocuments(text, { version: '1.1', uniqueKeys: true });
  const out: Obj[] = [];
  for (const d of docs) {
    if (d.errors.length) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
    const v = d.toJS();
    if (v !== null) out.push(v as Obj);
  }
  return out;
}

function validate(o: Obj, where: string): void {
  const Model = MODELS[`${o.apiVersion}/${o.kind}`];
  if (!Model) throw new Error(`${where}: no schema for ${o.apiVersion} ${o.kind}`);
  try {
    new Model(o).validate();
  } catch (e) {
    throw new Error(`${where}: ${o.kind} ${o.metadata?.name} is invalid: ${(e as Error).message}`);
  }
}

interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

const INSTRUCTIONS = new Set(['FROM', 'RUN', 'CMD', 'LABEL', 'EXPOSE', 'ENV', 'ADD', 'COPY', 'ENTRYPOINT', 'VOLUME', 'USER', 'WORKDIR', 'ARG', 'ONBUILD', 'STOPSIGNAL', 'HEALTHCHECK', 'SHELL', 'MAINTAINER']);

/** A Containerfile's instructions, continuation lines joined and comments dropped, as buildah and BuildKit read it. */
function parseContainerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i + 1;
    let line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    while (line.endsWith('\\')) {
      if (++i >= lines.length) throw new Error(`Containerfile line ${start}: continued past the end of the file`);
      const next = lines[i]!.trim();
      if (next.startsWith('#')) continue;
      line = `${line.slice(0, -1).trimEnd()} ${next}`;
    }
    const m = /^([A-Za-z]+)\s+(\S.*)$/.exec(line);
    if (!m || !INSTRUCTIONS.has(m[1]!.toUpperCase())) throw new Error(`Containerfile line ${start}: not an instruction: ${line}`);
    out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!.trim(), line: start });
  }
  return out;
}

/** Every LABEL's key="value" pairs; a LABEL that does not parse completely throws. */
function labelsOf(cf: Instruction[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const i of cf.filter((x) => x.keyword === 'LABEL')) {
    const re = /([\w.-]+)=(?:"((?:[^"\\]|\\.)*)"|(\S+))\s*/gy;
    let m: RegExpExecArray | null;
    let end = 0;
    while ((m = re.exec(i.args))) {
      labels[m[1]!] = m[2] ?? m[3]!;
      end = re.lastIndex;
    }
    if (end !== i.args.length) throw new Error(`Containerfile line ${i.line}: LABEL does not parse after ${JSON.stringify(i.args.slice(end, end + 40))}`);
  }
  return labels;
}

/** The simple commands of a RUN (split at &&, ||, ;), each as words, a leading `!` dropped. */
function commandsOf(run: string): string[][] {
  return run
    .split(/&&|\|\||;/)
    .map((c) => c.trim().replace(/^!\s*/, '').split(/\s+/).filter(Boolean))
    .filter((w) => w.length > 0);
}

const UBI_MINIMAL = /^registry\.access\.redhat\.com\/ubi9\/ubi-minimal:9\.\d+(?:-\d+)?(?:@sha256:[0-9a-f]{64})?$/;
/** Commands that would put a Node.js runtime into the image, download at build time, or use another package manager. */
const FORBIDDEN_COMMANDS = new Set(['node', 'nodejs', 'npm', 'npx', 'corepack', 'curl', 'wget', 'dnf', 'yum', 'rpm', 'apt', 'apt-get', 'apk', 'pip', 'pip3']);

/** What is wrong with a Containerfile for this project (README, "Install on OpenShift"); empty when nothing is. */
function containerfileProblems(text: string): string[] {
  const problems: string[] = [];
  const cf = parseContainerfile(text);
  const all = (k: string) => cf.filter((i) => i.keyword === k);

  const froms = all('FROM');
  if (froms.length !== 1) problems.push(`${froms.length} FROM lines: one stage only, nothing copied from another image`);
  for (const f of froms) if (!UBI_MINIMAL.test(f.args)) problems.push(`base ${f.args} is not registry.access.redhat.com/ubi9/ubi-minimal at a pinned 9.x tag`);
  if (cf[0]?.keyword !== 'FROM') problems.push('the first instruction is not FROM');

  if (all('ADD').length) problems.push('ADD (it can fetch URLs and unpack archives): use COPY');
  const copies = all('COPY').map((i) => i.args.split(/\s+/).filter((w) => !w.startsWith('--chmod=') && !w.startsWith('--chown=')).join(' '));
  if (JSON.stringify(copies) !== JSON.stringify(['dist-bundle/etcd-backupd /usr/local/bin/etcd-backupd'])) {
    problems.push(`COPY ${JSON.stringify(copies)}: the single executable dist-bundle/etcd-backupd to /usr/local/bin/etcd-backupd must be the only file copied in`);
  }

  const runs = all('RUN');
  const commands = runs.flatMap((r) => commandsOf(r.args));
  for (const c of commands) if (FORBIDDEN_COMMANDS.has(c[0]!) || /^node(js)?$/.test(c[0]!.split('/').at(-1)!)) problems.push(`RUN ${c.join(' ')}: no Node.js, no download, microdnf only`);
  const installs = commands.filter((c) => c[0] === 'microdnf' && c.includes('install'));
  const packages = installs.flatMap((c) => c.slice(c.indexOf('install') + 1).filter((w) => !w.startsWith('-')));
  for (const p of ['util-linux', 'ca-certificates']) if (!packages.includes(p)) problems.push(`microdnf does not install ${p}`);
  for (const p of packages) if (/node|npm/i.test(p)) problems.push(`microdnf installs ${p}: the executable carries its own Node.js`);
  for (const c of installs) {
    if (!c.includes('--nodocs')) problems.push(`${c.join(' ')}: without --nodocs`);
    if (!c.includes('-y') && !c.includes('--assumeyes')) problems.push(`${c.join(' ')}: without -y it waits for an answer`);
  }
  for (const r of runs) {
    if (/\bmicrodnf\s[^&|;]*\binstall\b/.test(r.args) && !/\bmicrodnf clean all\b/.test(r.args)) problems.push(`line ${r.line}: microdnf install without microdnf clean all in the same layer`);
  }
  // The build itself checks the image: the executable runs on this base, nsenter is there, node is not.
  const copyLine = all('COPY')[0]?.line ?? Infinity;
  const checks = runs.filter((r) => r.line > copyLine).flatMap((r) => commandsOf(r.args).map((c) => c.join(' ')));
  for (const want of ['etcd-backupd --version', 'nsenter --version', 'command -v node']) if (!checks.includes(want)) problems.push(`no RUN ${want} after the COPY`);

  const user = all('USER').at(-1)?.args;
  if (user !== '0' && user !== 'root') problems.push(`USER ${user ?? '(none)'}: cluster-backup.sh needs root`);
  if (!all('EXPOSE').some((i) => i.args.split(/\s+/).includes('9979'))) problems.push('no EXPOSE 9979');
  const exec = (k: string) => all(k).map((i) => i.args);
  if (JSON.stringify(exec('ENTRYPOINT')) !== JSON.stringify(['["/usr/local/bin/etcd-backupd"]'])) problems.push(`ENTRYPOINT ${JSON.stringify(exec('ENTRYPOINT'))}`);
  if (JSON.stringify(exec('CMD')) !== JSON.stringify(['["run"]'])) problems.push(`CMD ${JSON.stringify(exec('CMD'))}`);
  const labels = labelsOf(cf);
  for (const k of ['org.opencontainers.image.version', 'version']) if (labels[k] !== VERSION) problems.push(`LABEL ${k}=${labels[k]}, not ${VERSION}`);
  return problems;
}

const kustomization = parseYaml(readFileSync(join(DIR, 'kustomization.yaml'), 'utf8'));
const resourceFiles: string[] = kustomization.resources;
/** The kustomization built by hand: its resources in order, with kustomize's namespace applied. */
const built: Obj[] = resourceFiles.flatMap((f) => parseManifests(readFileSync(join(DIR, f), 'utf8'), f).map((o) => ({ ...o, metadata: { ...o.metadata, namespace: kustomization.namespace } })));
const find = (kind: string, name?: string): Obj => {
  const hits = built.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (hits.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, got ${hits.length}`);
  return hits[0]!;
};
const ds = find('DaemonSet', 'etcd-backupd');
const pod = ds.spec.template.spec;
const container = pod.containers[0];
const configMap = find('ConfigMap', 'etcd-backupd-config');

describe('packaging/kubernetes kustomization', () => {
  it('lists resources that exist and parse, namespaced into openshift-etcd, which it does not create', () => {
    expect(kustomization.namespace).toBe(NAMESPACE);
    for (const f of resourceFiles) {
      expect(f, 'a resource outside the directory: kustomize refuses it').not.toMatch(/^\.\.|^\//);
      expect(existsSync(join(DIR, f)), f).toBe(true);
    }
    for (const f of resourceFiles) for (const o of parseManifests(readFileSync(join(DIR, f), 'utf8'), f)) expect([undefined, NAMESPACE], `${f} ${o.kind}`).toContain(o.metadata.namespace);
    expect(built.map((o) => o.kind)).not.toContain('Namespace');
    expect(built.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(
      [
        'ConfigMap/etcd-backupd-config',
        'DaemonSet/etcd-backupd',
        'PrometheusRule/etcd-backupd',
        'Role/etcd-backupd-prometheus',
        'Role/etcd-backupd-scc-privileged',
        'RoleBinding/etcd-backupd-prometheus',
        'RoleBinding/etcd-backupd-scc-privileged',
        'Service/etcd-backupd',
        'ServiceAccount/etcd-backupd',
        'ServiceMonitor/etcd-backupd',
      ].sort(),
    );
  });

  it('every manifest validates against the Kubernetes and prometheus-operator schemas', () => {
    for (const o of built) validate(o, 'kustomization');
    for (const f of ['secret-s3.example.yaml', 'secret-sftp.example.yaml']) {
      const docs = parseManifests(readFileSync(join(DIR, f), 'utf8'), f);
      expect(docs.map((o) => o.kind)).toEqual(['Secret']);
      for (const o of docs) validate(o, f);
      expect(resourceFiles, `${f} holds placeholder credentials and must stay out of the kustomization`).not.toContain(f);
    }
  });

  it('the schemas do catch a broken manifest (the validation is real)', () => {
    const broken = structuredClone(ds);
    broken.spec.template.spec.containers[0].ports[0].containerPort = 'nine';
    expect(() => validate(broken, 'broken')).toThrow(/containerPort/);
    const sm = structuredClone(find('ServiceMonitor'));
    sm.spec.endpoints[0].interval = 'half a minute';
    expect(() => validate(sm, 'broken')).toThrow(/interval/);
  });

  it('builds with kubectl kustomize / kustomize when one is installed, to the same objects', async () => {
    const tries: [string, string[]][] = [
      ['kustomize', ['build', DIR]],
      ['kubectl', ['kustomize', DIR]],
    ];
    let out: string | undefined;
    let tool = '';
    for (const [cmd, args] of tries) {
      try {
        out = (await execFileP(cmd, args, { maxBuffer: 16 * 1024 * 1024 })).stdout;
        tool = `${cmd} ${args[0]}`;
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    if (out === undefined) {
      // Neither is packaged for this machine's registries in a version that reads this
      // kustomization; the structural build above (resources read as kustomize does) stands.
      console.warn('kubernetes-manifests: no kustomize or kubectl on PATH; checked the kustomization by reading its resources only');
      return;
    }
    const rendered = parseManifests(out, tool);
    for (const o of rendered) validate(o, tool);
    const key = (o: Obj) => `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`;
    expect(rendered.map(key).sort(), tool).toEqual(built.map(key).sort());
    // The prometheus-k8s subject keeps its own namespace.
    const rb = rendered.find((o) => o.kind === 'RoleBinding' && o.metadata.name === 'etcd-backupd-prometheus')!;
    expect(rb.subjects).toEqual([{ kind: 'ServiceAccount', name: 'prometheus-k8s', namespace: 'openshift-monitoring' }]);
  });

  it('applies the one PrometheusRule, packaging/kubernetes/prometheusrule.yaml (no second copy elsewhere)', () => {
    expect(resourceFiles).toContain('prometheusrule.yaml');
    expect(built.filter((o) => o.kind === 'PrometheusRule').map((o) => o.metadata.name)).toEqual(['etcd-backupd']);
    expect(existsSync(join(ROOT, 'packaging', 'prometheus', 'prometheusrule.yaml')), 'packaging/prometheus/ holds the plain rules file only').toBe(false);
  });
});

describe('the DaemonSet', () => {
  it('runs one pod on every control-plane node, whatever its taint is called', () => {
    expect(pod.nodeSelector).toEqual({ 'node-role.kubernetes.io/master': '' });
    for (const key of ['node-role.kubernetes.io/master', 'node-role.kubernetes.io/control-plane']) {
      expect(pod.tolerations).toContainEqual({ key, operator: 'Exists', effect: 'NoSchedule' });
    }
    expect(ds.spec.selector.matchLabels).toEqual({ 'app.kubernetes.io/name': 'etcd-backupd' });
    expect(ds.spec.template.metadata.labels).toMatchObject(ds.spec.selector.matchLabels);
  });

  it('has the host access cluster-backup.sh needs, and says so', () => {
    expect(pod.hostNetwork).toBe(true);
    expect(pod.hostPID).toBe(true);
    expect(pod.dnsPolicy).toBe('ClusterFirstWithHostNet');
    expect(container.securityContext).toMatchObject({ privileged: true, runAsUser: 0 });
    expect(pod.serviceAccountName).toBe(find('ServiceAccount').metadata.name);
    const role = find('Role', 'etcd-backupd-scc-privileged');
    expect(role.rules).toEqual([{ apiGroups: ['security.openshift.io'], resources: ['securitycontextconstraints'], resourceNames: ['privileged'], verbs: ['use'] }]);
    const binding = find('RoleBinding', 'etcd-backupd-scc-privileged');
    expect(binding.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: role.metadata.name });
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'etcd-backupd', namespace: NAMESPACE }]);
  });

  it('probes /healthz and /readyz on the metrics port, limits memory to 256Mi, waits for a run on stop', () => {
    expect(container.ports).toEqual([{ name: 'metrics', containerPort: 9979, protocol: 'TCP' }]);
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    expect(container.resources.limits).toEqual({ memory: '256Mi' });
    expect(container.resources.requests).toEqual({ cpu: '20m', memory: '64Mi' });
    const cfg = parseYaml(configMap.data['config.yaml']);
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(Number.parseInt(cfg.shutdownTimeout, 10));
  });

  it('uses the placeholder image of this version, which packaging/Containerfile builds', () => {
    expect(container.image).toBe(`quay.io/etcd-backupd/etcd-backupd:${VERSION}`);
    expect(kustomization.images).toEqual([{ name: 'quay.io/etcd-backupd/etcd-backupd', newTag: VERSION }]);
    const cf = parseContainerfile(readFileSync(CONTAINERFILE, 'utf8'));
    expect(labelsOf(cf)['org.opencontainers.image.version']).toBe(VERSION);
    // No command: the image's ENTRYPOINT (the single executable) runs with these args.
    expect(container.command).toBeUndefined();
    expect(cf.filter((i) => i.keyword === 'ENTRYPOINT').map((i) => JSON.parse(i.args))).toEqual([['/usr/local/bin/etcd-backupd']]);
    expect(container.args.slice(0, 1)).toEqual(['run']);
    // Root in the image too (the pod asks for runAsUser 0; the image must not rely on the pod alone).
    expect(cf.filter((i) => i.keyword === 'USER').at(-1)?.args).toBe('0');
  });
});

describe('the ConfigMap config.yaml', () => {
  const cfgText: string = configMap.data['config.yaml'];
  const raw = parseYaml(cfgText);
  const parsed = configSchema.safeParse(raw);

  /** The file a path inside the pod resolves to: [volume, key in it], from the DaemonSet's mounts. */
  function mounted(path: string): { volume: any; key: string } {
    const m = container.volumeMounts.find((vm: { mountPath: string }) => path.startsWith(vm.mountPath + '/'));
    if (!m) throw new Error(`${path} is not under any volume mount of the DaemonSet`);
    const volume = pod.volumes.find((v: { name: string }) => v.name === m.name);
    return { volume, key: posix.relative(m.mountPath, path) };
  }

  it('is valid for the config schema, with the OpenShift defaults', () => {
    expect(parsed.success, JSON.stringify(parsed.error?.issues)).toBe(true);
    const cfg = parsed.data!;
    expect(cfg.source).toMatchObject({ type: 'cluster-backup' });
    expect(cfg.etcd.endpoints).toEqual(['https://127.0.0.1:2379']);
    expect(cfg.stores.map((s) => s.type)).toContain('s3');
    expect(cfg.node).toBeUndefined(); // the host name: one ConfigMap for every master
  });

  it('listens on 0.0.0.0:9979 (hostNetwork), the port the Service and ServiceMonitor use', () => {
    expect(raw.metrics.listen).toBe('0.0.0.0:9979');
    expect(cfgText).toMatch(/no authentication/); // the security note stays next to the setting
    const svc = find('Service');
    expect(svc.spec.clusterIP).toBe('None');
    expect(svc.spec.publishNotReadyAddresses).toBe(true);
    expect(svc.spec.ports).toEqual([{ name: 'metrics', port: 9979, targetPort: 'metrics', protocol: 'TCP' }]);
    expect(ds.spec.template.metadata.labels).toMatchObject(svc.spec.selector);
    const sm = find('ServiceMonitor');
    expect(svc.metadata.labels).toMatchObject(sm.spec.selector.matchLabels);
    expect(sm.spec.endpoints).toEqual([expect.objectContaining({ port: 'metrics', path: '/metrics', scheme: 'http' })]);
  });

  it('names only files that the DaemonSet mounts', () => {
    const cfg = parsed.data!;
    // The wrapper script is a key of this same ConfigMap, executable.
    const script = mounted((cfg.source as { script: string }).script);
    expect(script.volume.configMap.name).toBe(configMap.metadata.name);
    expect(Object.keys(configMap.data)).toContain(script.key);
    expect(script.volume.configMap.items).toContainEqual({ key: script.key, path: script.key, mode: 0o555 });
    expect(configMap.data[script.key]).toMatch(/^#!\/bin\/sh\n[\s\S]*nsenter --target 1 [^\n]*\/usr\/local\/bin\/cluster-backup\.sh "\$@"/);
    // The config itself is where the container's args and ETCD_BACKUPD_CONFIG say.
    const configPath = container.args[container.args.indexOf('--config') + 1];
    expect(container.env).toContainEqual({ name: 'ETCD_BACKUPD_CONFIG', value: configPath });
    expect(mounted(configPath).volume.configMap.name).toBe(configMap.metadata.name);
    // etcd TLS from the namespace's own etcd-client Secret and etcd-ca-bundle ConfigMap.
    expect(mounted(cfg.etcd.caFile!)).toMatchObject({ volume: { configMap: { name: 'etcd-ca-bundle' } }, key: 'ca-bundle.crt' });
    expect(mounted(cfg.etcd.certFile!)).toMatchObject({ volume: { secret: { secretName: 'etcd-client' } }, key: 'tls.crt' });
    expect(mounted(cfg.etcd.keyFile!)).toMatchObject({ volume: { secret: { secretName: 'etcd-client' } }, key: 'tls.key' });
    // S3 credentials: keys of the Secret whose shape secret-s3.example.yaml shows.
    const s3Secret = parseManifests(readFileSync(join(DIR, 'secret-s3.example.yaml'), 'utf8'), 's3')[0]!;
    for (const s of cfg.stores) {
      if (s.type !== 's3') continue;
      for (const f of [s.accessKeyIdFile!, s.secretAccessKeyFile!]) {
        const m = mounted(f);
        expect(m.volume.secret.secretName).toBe(s3Secret.metadata.name);
        expect(Object.keys(s3Secret.stringData)).toContain(m.key);
      }
    }
    // The commented SFTP store's files are keys of the optional SFTP Secret.
    const sftpSecret = parseManifests(readFileSync(join(DIR, 'secret-sftp.example.yaml'), 'utf8'), 'sftp')[0]!;
    for (const f of [...cfgText.matchAll(/#\s+(?:privateKeyFile|knownHostsFile): (\S+)/g)].map((x) => x[1]!)) {
      const m = mounted(f);
      expect(m.volume.secret).toMatchObject({ secretName: sftpSecret.metadata.name, optional: true });
      expect(Object.keys(sftpSecret.stringData)).toContain(m.key);
    }
    // workDir on the host at the same path (cluster-backup.sh writes there from the host side).
    const work = container.volumeMounts.find((vm: { mountPath: string }) => vm.mountPath === cfg.workDir);
    expect(pod.volumes.find((v: { name: string }) => v.name === work.name).hostPath).toEqual({ path: cfg.workDir, type: 'DirectoryOrCreate' });
    // The recovery kit on the host at the same path, inside workDir's hostPath: not a mount point
    // of its own (the kit is swapped in with renames, and a mount point cannot be renamed).
    expect(cfg.recovery.dir).toBe('/var/lib/etcd-backupd/recovery');
    const kit = mounted(cfg.recovery.dir);
    expect(kit.volume.hostPath).toEqual({ path: '/var/lib/etcd-backupd', type: 'DirectoryOrCreate' });
    expect(posix.join(kit.volume.hostPath.path, kit.key)).toBe(cfg.recovery.dir);
    expect(container.volumeMounts.map((vm: { mountPath: string }) => vm.mountPath)).not.toContain(cfg.recovery.dir);
    // The control socket on a volume of its own (the root filesystem is read-only).
    expect(container.securityContext.readOnlyRootFilesystem).toBe(true);
    expect(mounted(cfg.control.socket).volume.emptyDir).toEqual({ medium: 'Memory', sizeLimit: '1Mi' });
  });

  it('still passes the schema with the commented SFTP store and age recipients switched on', () => {
    const on = cfgText
      .replace(/^(\s*)# (- name: vault[\s\S]*?path: \/srv\/etcd-backups)$/m, (_m, ind: string, block: string) => ind + block.replace(/\n(\s*)# /g, '\n$1'))
      .replace(/^# encryption:\n#   recipients:\n#     - age1\.\.\.$/m, 'encryption:\n  recipients:\n    - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p');
    const cfg = configSchema.safeParse(parseYaml(on));
    expect(cfg.success, JSON.stringify(cfg.error?.issues)).toBe(true);
    expect(cfg.data!.stores.map((s) => s.name)).toEqual(['s3', 'vault']);
    expect(cfg.data!.encryption.recipients).toHaveLength(1);
  });
});

describe('packaging/Containerfile (read statically: no container engine on this machine)', () => {
  const text = readFileSync(CONTAINERFILE, 'utf8');

  it('is UBI 9 minimal at a pinned tag with the single executable, no Node.js, nsenter, root, the etcd-backupd entrypoint', () => {
    expect(containerfileProblems(text)).toEqual([]);
    const cf = parseContainerfile(text);
    expect(cf.filter((i) => i.keyword === 'FROM').map((i) => i.args)).toEqual([expect.stringMatching(/^registry\.access\.redhat\.com\/ubi9\/ubi-minimal:9\.\d+/)]);
    // Nowhere in what the build runs or sets: no node, no .mjs (comments and label texts aside).
    for (const i of cf.filter((x) => x.keyword !== 'LABEL')) expect(`${i.keyword} ${i.args}`.replace('command -v node', ''), `line ${i.line}`).not.toMatch(/\bnode(js)?\b|\.mjs\b|NODE_/i);
    expect(labelsOf(cf)).toMatchObject({ 'org.opencontainers.image.version': VERSION, version: VERSION, 'org.opencontainers.image.licenses': 'Apache-2.0' });
  });

  it('the check is real: it rejects a Node base image, a Node install, the .mjs, a floating tag, no nsenter, a non-root user', () => {
    const mutate = (from: RegExp | string, to: string) => {
      const t = text.replace(from, to);
      expect(t, `mutation ${from} no longer applies to the Containerfile`).not.toBe(text);
      return containerfileProblems(t);
    };
    const fromLine = /^FROM .*$/m;
    expect(mutate(fromLine, 'FROM docker.io/library/node:24-slim')).toEqual([expect.stringContaining('is not registry.access.redhat.com/ubi9/ubi-minimal')]);
    expect(mutate(fromLine, 'FROM registry.access.redhat.com/ubi9/nodejs-22-minimal:latest')).toEqual([expect.stringContaining('is not registry.access.redhat.com/ubi9/ubi-minimal')]);
    expect(mutate(fromLine, 'FROM registry.access.redhat.com/ubi9/ubi-minimal:latest')).toHaveLength(1);
    expect(mutate(fromLine, 'FROM registry.access.redhat.com/ubi9/ubi-minimal')).toHaveLength(1);
    // A Node.js runtime in any form: an extra stage, a package, a download.
    expect(mutate(fromLine, 'FROM docker.io/library/node:24-slim AS node\n$&\nCOPY --from=node /usr/local/bin/node /usr/local/bin/node').length).toBeGreaterThanOrEqual(2);
    expect(mutate(' util-linux ', ' nodejs util-linux ')).toEqual([expect.stringContaining('installs nodejs')]);
    expect(mutate(/^RUN nsenter/m, 'RUN curl -fsSLo /tmp/n.tgz https://nodejs.org/dist/v24.21.0/node-v24.21.0-linux-x64.tar.gz && nsenter')).toEqual([expect.stringContaining('RUN curl')]);
    expect(mutate('COPY dist-bundle/etcd-backupd /usr/local/bin/etcd-backupd', 'COPY dist-bundle/etcd-backupd.mjs /usr/local/bin/etcd-backupd')).toEqual([expect.stringContaining('COPY')]);
    expect(mutate(' util-linux ', ' ')).toEqual(['microdnf does not install util-linux']);
    expect(mutate(/^USER 0$/m, 'USER 1001')).toEqual([expect.stringContaining('USER 1001')]);
    expect(mutate('--nodocs', '')).toEqual([expect.stringContaining('without --nodocs')]);
    expect(mutate(/^ENTRYPOINT .*$/m, 'ENTRYPOINT ["node", "/usr/local/lib/etcd-backupd/etcd-backupd.mjs"]').length).toBeGreaterThanOrEqual(1);
  });
});
