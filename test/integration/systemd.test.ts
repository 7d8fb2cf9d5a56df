/**
 * systemd/ (README, "Install with systemd"). The unit runs the single
 * executable (SEA), built here by `node scripts/package.mjs --out DIR` as
 * `npm run package` builds it (about 5 s more than the bundle alone; it needs
 * the Node 24 binary that runs this test, with the SEA fuse):
 * - `systemd-analyze verify` passes on the unit with no warning at all
 *   (systemd need not be PID 1 for verify; it does check that the ExecStart
 *   binary exists: /usr/local/bin/etcd-backupd, or this build's executable in
 *   a copy of the unit where none is installed);
 * - ExecStart is the executable, no `node` and no .mjs, and nothing in the
 *   unit stops V8's JIT (MemoryDenyWriteExecute=);
 * - the tmpfiles.d entry creates its directories 0700 (systemd-tmpfiles --root);
 * - the example config is valid as shipped (schema) and passes check-config
 *   (run by the executable) once its file paths point at files that exist;
 * - the README's install followed by hand, without systemd: the executable
 *   and the config put where the unit expects them (under a temporary root),
 *   the unit's ExecStart command line run as a process with the unit's
 *   Environment=, UMask= and systemd's default PATH, against a real TLS etcd
 *   and the stand-in cluster-backup.sh: the process is the installed
 *   executable on its own Node 24 with its V8 flags (whatever `node` the
 *   machine has), /readyz answers 200, the catch-up backup succeeds, and
 *   SIGTERM stops it with exit code 0. A bad config exits 2, which the unit
 *   does not restart (RestartPreventExitStatus=2).
 * What is NOT exercised here: the sandboxing settings themselves, which need
 * systemd as PID 1 (this machine has none).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { configSchema } from '../../src/config/schema.js';
import { VERSION } from '../../src/version.js';
import { FAKE_CLUSTER_BACKUP, ROOT, tempDir } from '../support/cli.js';
import { ensureTool, startEtcdCluster, type EtcdCluster } from '../support/etcd.js';
import { followJsonLog } from '../support/logs.js';
import { makeFakeMaster } from '../support/fake-master.js';

const execFileP = promisify(execFile);
const UNIT = join(ROOT, 'systemd', 'etcd-backupd.service');
const EXAMPLE = join(ROOT, 'systemd', 'config.yaml');
const TMPFILES = join(ROOT, 'systemd', 'etcd-backupd.tmpfiles.conf');
/** Where the README installs the single executable, and what ExecStart runs. */
const INSTALLED = '/usr/local/bin/etcd-backupd';
/** The PATH systemd gives a system service (`systemd-path search-binaries-default`): no node_modules/.bin in it. */
const SYSTEMD_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** The V8 flag the executable carries (src/cli.ts's shebang, SEA execArgv). */
const V8_FLAG = '--initial-old-space-size=64';

/** `[Service]` keys of a unit file, each with every value it was given (comments and continuations handled). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    while (line.endsWith('\\') && i + 1 < lines.length) line = line.slice(0, -1) + ' ' + lines[++i]!.trim();
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      current = new Map();
      sections.set(s[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    if (!current || eq < 0) throw new Error(`unit line outside a section or without "=": ${line}`);
    const key = line.slice(0, eq).trim();
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return sections;
}

/** systemd's command-line splitting (systemd.service, "Command lines"): words, "double" and 'single' quotes, no $VAR use here. */
function splitCommand(cmd: string): string[] {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  for (let m; (m = re.exec(cmd)); ) words.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? m[3]!));
  // Leading special prefixes (-, @, :, +, !) change how systemd runs it; none is expected here.
  if (/^[-@:+!]/.test(words[0] ?? '')) throw new Error(`unexpected ExecStart prefix in ${words[0]}`);
  return words;
}

const unit = parseUnit(readFileSync(UNIT, 'utf8'));
const service = unit.get('Service')!;
const one = (key: string): string => {
  const v = service.get(key);
  if (!v || v.length !== 1) throw new Error(`[Service] ${key}= expected once, got ${JSON.stringify(v)}`);
  return v[0]!;
};

async function ensureSystemdAnalyze(): Promise<void> {
  const have = async () => execFileP('systemd-analyze', ['--version']).then(() => true, () => false);
  if (await have()) return;
  // Debian's systemd package brings systemd-analyze and systemd-tmpfiles; as root, no PID 1 needed.
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => execFileP('apt-get', ['install', '-y', '--no-install-recommends', 'systemd'], { env, timeout: 600_000 });
  await install().catch(async () => {
    await execFileP('apt-get', ['update'], { env, timeout: 600_000 });
    await install();
  });
  if (!(await have())) throw new Error('systemd-analyze is still missing after apt-get install systemd');
}

let dir: string;
/** This build's single executable (what the README installs as /usr/local/bin/etcd-backupd). */
let sea: string;

beforeAll(async () => {
  dir = tempDir('systemd');
  // A build of its own (package.test.ts rebuilds dist-bundle/ meanwhile), single executable included.
  const [built] = await Promise.all([
    execFileP(process.execPath, [join(ROOT, 'scripts', 'package.mjs'), '--out', join(dir, 'build')], { cwd: ROOT, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 }),
    ensureSystemdAnalyze(),
  ]);
  sea = join(dir, 'build', 'etcd-backupd');
  // package.mjs skips the executable with the reason printed (e.g. a node older than 24 runs this test).
  if (!existsSync(sea)) throw new Error(`scripts/package.mjs made no single executable:\n${built.stdout}${built.stderr}`);
}, 900_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('systemd/etcd-backupd.service', () => {
  it('passes systemd-analyze verify without a single warning', async () => {
    // verify checks that the ExecStart binary exists; where none is installed at
    // /usr/local/bin/etcd-backupd, verify a copy whose ExecStart names this build's
    // executable instead (same unit otherwise).
    let file = UNIT;
    if (!existsSync(INSTALLED)) {
      file = join(dir, 'etcd-backupd.service');
      const text = readFileSync(UNIT, 'utf8');
      const copy = text.replace(`ExecStart=${INSTALLED} `, `ExecStart=${sea} `);
      expect(copy, `ExecStart no longer starts with ${INSTALLED}`).not.toBe(text);
      writeFileSync(file, copy);
    }
    const r = await execFileP('systemd-analyze', ['verify', '--man=no', file]).then(
      (x) => ({ code: 0, ...x }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    expect(r.stderr + r.stdout, 'systemd-analyze verify output').toBe('');
    expect(r.code).toBe(0);
  });

  it('says what the README says: simple, restarts on failure but not on a bad config, mixed kill, the documented paths', () => {
    expect(one('Type')).toBe('simple');
    expect(splitCommand(one('ExecStart'))).toEqual([INSTALLED, 'run', '--config', '/etc/etcd-backupd/config.yaml']);
    expect(one('Restart')).toBe('on-failure');
    expect(one('RestartPreventExitStatus')).toBe('2');
    expect(one('KillMode')).toBe('mixed');
    expect(one('UMask')).toBe('0077');
    expect(one('StateDirectory')).toBe('etcd-backupd');
    expect(one('StateDirectoryMode')).toBe('0700');
    expect(one('RuntimeDirectory')).toBe('etcd-backupd');
    expect(one('RuntimeDirectoryMode')).toBe('0700');
    expect(service.get('ReadWritePaths')).toContain('/var/lib/etcd-backupd /run/etcd-backupd');
    // The stop timeout leaves the daemon its shutdownTimeout to finish a run.
    const example = parseYaml(readFileSync(EXAMPLE, 'utf8'));
    expect(Number.parseInt(one('TimeoutStopSec'), 10)).toBeGreaterThan(Number.parseInt(example.shutdownTimeout, 10));
    // The example config matches the unit's directories.
    expect(example.workDir).toBe('/var/lib/etcd-backupd');
    expect(example.control.socket).toBe('/run/etcd-backupd/control.sock');
  });

  it('runs the single executable: no node, no .mjs anywhere in the unit, and nothing that stops V8 JIT', () => {
    const text = readFileSync(UNIT, 'utf8');
    // Comments included: a comment that still says /usr/bin/node or the .mjs misleads whoever edits the unit.
    expect(text).not.toMatch(/\/usr\/bin\/node|\/usr\/local\/lib\/etcd-backupd|\.mjs\b/);
    for (const key of ['ExecStart', 'ExecStartPre', 'ExecStartPost', 'ExecReload', 'ExecStop']) {
      for (const v of service.get(key) ?? []) expect(splitCommand(v).some((w) => /(^|\/)node(js)?$/.test(w)), `${key}=${v}`).toBe(false);
    }
    // V8 writes the machine code it generates, then executes it: W^X must stay off.
    expect(service.get('MemoryDenyWriteExecute') ?? ['no']).toEqual(['no']);
    expect(text).toMatch(/^# - MemoryDenyWriteExecute=yes: the executable is Node\.js/m); // under "Deliberately NOT set", with the reason
  });

  it('etcd-backupd.tmpfiles.conf creates its directories root-only', async () => {
    const root = join(dir, 'tmpfiles-root');
    mkdirSync(join(root, 'etc', 'tmpfiles.d'), { recursive: true });
    copyFileSync(TMPFILES, join(root, 'etc', 'tmpfiles.d', 'etcd-backupd.conf'));
    await execFileP('systemd-tmpfiles', ['--create', `--root=${root}`, 'etcd-backupd.conf']);
    for (const d of ['etc/etcd-backupd', 'etc/etcd-backupd/s3', 'var/lib/etcd-backupd']) {
      const st = statSync(join(root, d));
      expect(st.isDirectory(), d).toBe(true);
      expect(st.mode & 0o777, d).toBe(0o700);
    }
  });
});

describe('systemd/config.yaml', () => {
  it('is valid for the config schema as shipped', () => {
    const r = configSchema.safeParse(parseYaml(readFileSync(EXAMPLE, 'utf8')));
    expect(r.success, JSON.stringify(r.error?.issues)).toBe(true);
    expect(r.data).toMatchObject({ source: { type: 'cluster-backup', script: '/usr/local/bin/cluster-backup.sh' } });
  });

  it('passes check-config once the files it names exist', async () => {
    const d = join(dir, 'check');
    mkdirSync(d);
    const file = (name: string) => {
      const p = join(d, name);
      writeFileSync(p, `${name}\n`, { mode: 0o600 });
      return p;
    };
    const cfg = parseYaml(readFileSync(EXAMPLE, 'utf8'));
    cfg.workDir = join(d, 'work');
    cfg.source.script = file('cluster-backup.sh');
    cfg.etcd.caFile = file('ca-bundle.crt');
    cfg.etcd.certFile = file('etcd-peer.crt');
    cfg.etcd.keyFile = file('etcd-peer.key');
    for (const s of cfg.stores) {
      if (s.type === 'local') s.path = join(d, 'store');
      if (s.type === 's3') {
        s.accessKeyIdFile = file('access-key-id');
        s.secretAccessKeyFile = file('secret-access-key');
      }
    }
    cfg.control.socket = join(d, 'control.sock');
    const configFile = join(d, 'config.yaml');
    writeFileSync(configFile, stringifyYaml(cfg), { mode: 0o600 });
    const r = await execFileP(sea, ['check-config', '--config', configFile, '--json'], { env: { PATH: SYSTEMD_PATH, LANG: 'C.UTF-8' } });
    const eff = JSON.parse(r.stdout);
    expect(eff).toMatchObject({ cluster: 'prod-east', schedule: '0 2 * * *', jitter: '15m', source: { type: 'cluster-backup' } });
    expect(eff.stores.map((s: { name: string }) => s.name)).toEqual(['nfs', 's3']);
  });
});

describe('the README install followed by hand: the unit command line as a process', () => {
  let cluster: EtcdCluster;
  let root: string;
  let argv: string[];
  let env: NodeJS.ProcessEnv;
  let storeDir: string;
  let configFile: string;

  /** Maps the unit's absolute paths into the temporary root, as `install` would have put the files there. */
  const inRoot = (p: string) => join(root, p);

  beforeAll(async () => {
    cluster = await startEtcdCluster({ members: 1, tls: true });
    root = join(dir, 'root');
    // README: install -D -m 0755 /tmp/etcd-backupd /usr/local/bin/etcd-backupd
    mkdirSync(inRoot('/usr/local/bin'), { recursive: true });
    copyFileSync(sea, inRoot(INSTALLED));
    chmodSync(inRoot(INSTALLED), 0o755);
    // StateDirectory= / RuntimeDirectory= as systemd would create them.
    for (const d of ['/var/lib/etcd-backupd', '/run/etcd-backupd', '/etc/etcd-backupd']) mkdirSync(inRoot(d), { recursive: true, mode: 0o700 });
    storeDir = inRoot('/mnt/etcd-backups');

    // README: install -D -m 0600 systemd/config.yaml /etc/etcd-backupd/config.yaml, then edit it.
    const cfg = parseYaml(readFileSync(EXAMPLE, 'utf8'));
    cfg.workDir = inRoot(cfg.workDir);
    cfg.control.socket = inRoot(cfg.control.socket);
    cfg.source.script = FAKE_CLUSTER_BACKUP;
    cfg.source.timeout = '120s';
    // The temporary root is the master the stand-in sees (etcd.env, manifests, oc). ETCDCTL_BIN: the
    // stand-in's etcdctl wherever the test machine has it; PATH: systemd's (below) after the `oc` stand-in.
    const master = makeFakeMaster(root, cluster.endpoints[0]!, cluster.tls);
    cfg.source.env = { FAKE_ROOT: master.root, PATH: `${join(ROOT, 'test', 'fixtures')}:${SYSTEMD_PATH}`, ETCDCTL_BIN: ensureTool('etcdctl') };
    cfg.etcd = { endpoints: [cluster.endpoints[0]!], caFile: cluster.tls!.caFile, certFile: cluster.tls!.certFile, keyFile: cluster.tls!.keyFile };
    cfg.stores = [{ name: 'nfs', type: 'local', path: storeDir }];
    cfg.metrics.listen = '127.0.0.1:0';
    configFile = inRoot('/etc/etcd-backupd/config.yaml');
    writeFileSync(configFile, stringifyYaml(cfg), { mode: 0o600 });

    // Every absolute path into the temporary root, the executable (argv[0]) included.
    argv = splitCommand(one('ExecStart')).map((a) => (a.startsWith('/') ? inRoot(a) : a));
    expect(argv[0]).toBe(inRoot(INSTALLED));
    expect(argv).toContain(configFile);
    // systemd's PATH for a service, not this test's (which has node_modules/.bin and Node 24 first).
    env = { PATH: SYSTEMD_PATH, LANG: 'C.UTF-8' };
    for (const e of service.get('Environment') ?? []) {
      const [k, ...v] = e.split('=');
      env[k!] = v.join('=').replace(/^\/run\//, `${inRoot('/run')}/`);
    }
  }, 300_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  /** The command line under sh, so that UMask= applies as systemd applies it; cwd / as for a system service. */
  const start = (args: string[]): ChildProcess =>
    spawn('/bin/sh', ['-c', `umask ${one('UMask')} && exec "$@"`, 'sh', ...args], { cwd: '/', env, stdio: ['ignore', 'pipe', 'pipe'] });

  it('is the executable alone: its own Node 24 and V8 flags, whatever node the PATH holds', async () => {
    const r = await execFileP(argv[0]!, ['--version', '--json'], { cwd: '/', env });
    const v = JSON.parse(r.stdout) as { name: string; version: string; node: string; execArgv: string[] };
    // The Node that built it (scripts/package.mjs copies its own binary), not /usr/bin/node or any other on PATH.
    expect(v).toMatchObject({ name: 'etcd-backupd', version: VERSION, node: process.version });
    expect(Number(v.node.slice(1).split('.')[0])).toBeGreaterThanOrEqual(24);
    expect(v.execArgv).toContain(V8_FLAG);
    expect((await execFileP(argv[0]!, ['--version'], { cwd: '/', env })).stdout).toBe(`etcd-backupd ${VERSION} (node ${process.version})\n`);
  });

  it('serves /readyz, takes the catch-up backup, and exits 0 on SIGTERM', async () => {
    const child = start(argv);
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const { lines, waitFor } = followJsonLog(child.stderr!);
    try {
      const started = await waitFor((l) => l.msg === 'etcd-backupd daemon started', 30_000, 'daemon start');
      // The daemon process is the installed executable itself (sh exec'd it; no node in between).
      expect(readlinkSync(`/proc/${child.pid}/exe`)).toBe(inRoot(INSTALLED));
      // Its execArgv carries --expose-gc: the daemon can give memory back after work (src/daemon/reclaim.ts).
      expect(started.memoryReclaim).toBe(true);
      const url = `http://${String(started.metrics)}`;
      const ready = await fetch(`${url}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.text()).toBe('ready\n');
      expect((await fetch(`${url}/healthz`)).status).toBe(200);

      const run = await waitFor((l) => l.msg === 'backup run finished' || l.msg === 'backup run failed', 90_000, 'the catch-up backup');
      expect(run, JSON.stringify(run)).toMatchObject({ msg: 'backup run finished', trigger: 'catch-up', result: 'success' });
      const series = join(storeDir, 'prod-east');
      const ids = readdirSync(series);
      expect(ids).toHaveLength(1);
      // The bundle and its manifest: backup.tar, or backup.tar.zst with compression (the default since 0.2.0).
      const files = readdirSync(join(series, ids[0]!)).sort();
      expect(files).toEqual([expect.stringMatching(/^backup\.tar(\.zst)?$/), 'manifest.json']);
      expect(statSync(join(series, ids[0]!, files[0]!)).mode & 0o777).toBe(0o600);
      // The run is recorded in the metrics right after its log line (and its prune).
      const counted = /^etcd_backup_runs_total\{result="success",trigger="catch-up"\} 1$/m;
      let metrics = '';
      for (let i = 0; i < 100 && !counted.test(metrics); i++) {
        if (i) await new Promise((r) => setTimeout(r, 100));
        metrics = await (await fetch(`${url}/metrics`)).text();
      }
      expect(metrics).toMatch(counted);
      // The daemon's control socket lives in RuntimeDirectory=, root-only.
      expect(statSync(inRoot('/run/etcd-backupd/control.sock')).isSocket()).toBe(true);
      expect((await fetch(`${url}/readyz`)).status).toBe(200);
    } finally {
      child.kill('SIGTERM');
    }
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('no exit within TimeoutStopSec'), Number.parseInt(one('TimeoutStopSec'), 10) * 1000))]);
    expect(code).toBe(0);
    expect(lines.some((l) => l.msg === 'etcd-backupd daemon stopped')).toBe(true);
  }, 180_000);

  it('exits 2 on a bad config, which RestartPreventExitStatus=2 keeps systemd from restarting', async () => {
    const bad = inRoot('/etc/etcd-backupd/bad.yaml');
    writeFileSync(bad, readFileSync(configFile, 'utf8').replace(/^schedule: .*$/m, 'schedule: "every night"'), { mode: 0o600 });
    const child = start(argv.map((a) => (a === configFile ? bad : a)));
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code).toBe(Number(one('RestartPreventExitStatus')));
    expect(stderr).toContain('schedule');
  });
});
