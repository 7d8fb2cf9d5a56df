// Loopback servers for the benchmark: one etcd (or a cluster), one s3rver, one OpenSSH sshd.
// The start-up logic mirrors test/support/{etcd-single,s3,sshd}.ts (those are
// TypeScript for vitest; the bench runs plain Node on dist/ and keeps its own
// small copies so it needs no TS loader).
import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { request } from 'node:http';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { etcdClient } from './etcd-grpc.mjs';
import { ROOT } from './util.mjs';

const execFileP = promisify(execFile);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = srv.address().port;
      srv.close(() => resolve(port));
    });
  });
}

const live = new Set();
process.once('exit', () => {
  for (const pid of live) signalTree(pid, 'SIGKILL');
});

function descendants(pid) {
  const parentOf = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parentOf.set(Number(name), Number(rest[1]));
    } catch {
      /* gone */
    }
  }
  const out = [];
  const walk = (p) => {
    for (const [c, parent] of parentOf) if (parent === p) (out.push(c), walk(c));
  };
  walk(pid);
  return out;
}

function signalTree(pid, sig) {
  if (!pid) return;
  for (const p of [pid, ...descendants(pid)]) {
    try {
      process.kill(p, sig);
    } catch {
      /* gone */
    }
  }
}

async function stopChild(child, sig = 'SIGTERM') {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  signalTree(child.pid, sig);
  const t = setTimeout(() => signalTree(child.pid, 'SIGKILL'), 10_000);
  await done;
  clearTimeout(t);
  live.delete(child.pid);
}

// ------------------------------------------------------------------ etcd

/** Waits until the member's gRPC API answers as healthy (leader known, a linearizable read goes through). */
async function waitHealthy(client, child, stderrOf, exitedOf, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exitedOf()) throw new Error(exitedOf());
    if (await client.healthy(2000)) return;
    if (Date.now() > deadline) {
      signalTree(child.pid, 'SIGKILL');
      throw new Error(`etcd did not become healthy within ${timeoutMs / 1000}s: ${stderrOf()}`);
    }
    await sleep(100);
  }
}

/** Spawns one etcd with `args`; the handle's client talks gRPC to `endpoint` (lib/etcd-grpc.mjs). */
function spawnEtcd(args, endpoint, dataDir) {
  const child = spawn('etcd', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  live.add(child.pid);
  let stderr = '';
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-8192)));
  let exited;
  child.on('exit', (code, sig) => (exited = `etcd exited (code ${code}, signal ${sig}): ${stderr}`));
  const client = etcdClient(endpoint);
  return {
    endpoint,
    dataDir,
    pid: child.pid,
    client,
    put: client.put,
    txnPuts: client.txnPuts,
    status: client.status,
    ready: () => waitHealthy(client, child, () => stderr, () => exited),
    /** SIGTERM (a clean stop, the cached data dirs), or SIGKILL for a throw-away cluster. */
    stop: async (sig = 'SIGTERM') => {
      client.close();
      await stopChild(child, sig);
    },
  };
}

/**
 * One etcd member on `dataDir` (kept: the bench caches it by size).
 * quota 8 GiB (etcd's maximum), large requests allowed for fast filling.
 * Talked to over gRPC only (lib/etcd-grpc.mjs), as etcd-backupd does.
 */
export async function startEtcd(dataDir, { maxRequestBytes = 10 * 1024 * 1024 } = {}) {
  const clientPort = await freePort();
  let peerPort = await freePort();
  while (peerPort === clientPort) peerPort = await freePort();
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  // A data dir remembers its member's peer URL; force a new cluster view on a restart with new ports.
  const reuse = existsSync(join(dataDir, 'member'));
  const args = [
    '--name', 'bench',
    '--data-dir', dataDir,
    '--listen-client-urls', endpoint,
    '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peer,
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `bench=${peer}`,
    '--quota-backend-bytes', String(8 * 1024 ** 3),
    '--max-request-bytes', String(maxRequestBytes),
    '--max-txn-ops', '1024',
    '--log-level', 'error',
    ...(reuse ? ['--force-new-cluster'] : []),
  ];
  const etcd = spawnEtcd(args, endpoint, dataDir);
  await etcd.ready();
  return etcd;
}

/**
 * A new `members`-member etcd cluster (plain http, 127.0.0.1) under `dir`
 * (emptied first), the same flags as startEtcd plus the test suite's timing
 * (test/support/etcd.ts: heartbeat 100 ms, election 1000 ms). Resolves when
 * every member is healthy. `leader()` asks each member's Maintenance.Status
 * and returns the member the majority names as leader. stop() kills the
 * members outright (SIGTERM on all at once makes etcd 3.4 try leader
 * transfers to members that are going away, as test/support/etcd.ts notes).
 */
export async function startEtcdCluster(dir, { members = 3, maxRequestBytes = 10 * 1024 * 1024 } = {}) {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const specs = [];
  const used = new Set();
  const port = async () => {
    let p = await freePort();
    while (used.has(p)) p = await freePort();
    used.add(p);
    return p;
  };
  for (let i = 0; i < members; i++) {
    specs.push({ name: `m${i}`, endpoint: `http://127.0.0.1:${await port()}`, peer: `http://127.0.0.1:${await port()}`, dataDir: join(dir, `m${i}`) });
  }
  const initialCluster = specs.map((s) => `${s.name}=${s.peer}`).join(',');
  const nodes = specs.map((s) =>
    Object.assign(
      spawnEtcd(
        [
          '--name', s.name,
          '--data-dir', s.dataDir,
          '--listen-client-urls', s.endpoint,
          '--advertise-client-urls', s.endpoint,
          '--listen-peer-urls', s.peer,
          '--initial-advertise-peer-urls', s.peer,
          '--initial-cluster', initialCluster,
          '--initial-cluster-state', 'new',
          '--initial-cluster-token', `bench-${process.pid}`,
          '--heartbeat-interval', '100',
          '--election-timeout', '1000',
          '--quota-backend-bytes', String(8 * 1024 ** 3),
          '--max-request-bytes', String(maxRequestBytes),
          '--max-txn-ops', '1024',
          '--log-level', 'error',
        ],
        s.endpoint,
        s.dataDir,
      ),
      { name: s.name },
    ),
  );
  try {
    await Promise.all(nodes.map((n) => n.ready()));
  } catch (e) {
    await Promise.all(nodes.map((n) => n.stop('SIGKILL')));
    throw e;
  }
  const leader = async () => {
    const st = await Promise.all(nodes.map((n) => n.status(5000).then((s) => ({ n, s }), () => undefined)));
    const votes = new Map();
    for (const x of st) if (x && x.s.leader !== '0') votes.set(x.s.leader, (votes.get(x.s.leader) ?? 0) + 1);
    const [id, count] = [...votes.entries()].sort((a, b) => b[1] - a[1])[0] ?? [];
    const found = st.find((x) => x && x.s.memberId === id);
    if (!found || count <= nodes.length / 2) throw new Error(`no leader agreed on by a majority: ${JSON.stringify(st.map((x) => x && { member: x.n.name, id: x.s.memberId, leader: x.s.leader }))}`);
    return { node: found.n, id, statuses: st.map((x) => x && { name: x.n.name, memberId: x.s.memberId, leader: x.s.leader, dbSize: x.s.dbSize }) };
  };
  return { members: nodes, endpoints: nodes.map((n) => n.endpoint), dir, leader, stop: () => Promise.all(nodes.map((n) => n.stop('SIGKILL'))) };
}

// ------------------------------------------------------------------ s3rver

function answers(port) {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/', method: 'GET', timeout: 1000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

/** s3rver 3.7.1 on 127.0.0.1 (credentials S3RVER/S3RVER; --openssl-legacy-provider, see TESTING-NOTES). */
export async function startS3rver(dir, bucket = 'bench') {
  const bin = join(ROOT, 'node_modules', 's3rver', 'bin', 's3rver.js');
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run npm ci`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const child = spawn(process.execPath, ['--openssl-legacy-provider', bin, '-d', dir, '-a', '127.0.0.1', '-p', '0', '--configure-bucket', bucket, '--silent'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  live.add(child.pid);
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`s3rver exited: ${out}`);
    const m = /listening on [^\s:]+:(\d+)/.exec(out);
    if (m && (await answers(Number(m[1])))) {
      const port = Number(m[1]);
      return { endpoint: `http://127.0.0.1:${port}`, port, bucket, dir, pid: child.pid, stop: () => stopChild(child) };
    }
    if (Date.now() > deadline) throw new Error(`s3rver did not answer: ${out}`);
    await sleep(100);
  }
}

// ------------------------------------------------------------------ sshd

function bannerArrives(port, timeoutMs) {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (ok) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      if (buf.includes('SSH-2.0-')) done(true);
    });
    sock.on('error', () => done(false));
    sock.on('close', () => done(false));
  });
}

/**
 * OpenSSH sshd with fresh ed25519 keys; SFTP served by internal-sftp, or with
 * `sftpLogFile` by the sftp-server binary logging every open/opendir at INFO
 * into that file (internal-sftp logs only to syslog; the bench counts requests).
 */
export async function startSshd(dir, { sftpLogFile } = {}) {
  const SSHD = '/usr/sbin/sshd';
  if (!existsSync(SSHD)) throw new Error(`${SSHD} is missing: apt-get install -y openssh-server`);
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 }).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const hostKey = join(dir, 'ssh_host_ed25519_key');
  const userKey = join(dir, 'id_ed25519');
  await execFileP('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'bench-host', '-f', hostKey]);
  await execFileP('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'bench-user', '-f', userKey]);
  const authorizedKeys = join(dir, 'authorized_keys');
  await writeFile(authorizedKeys, await readFile(`${userKey}.pub`), { mode: 0o600 });
  const { stdout: fpOut } = await execFileP('ssh-keygen', ['-lf', `${hostKey}.pub`, '-E', 'sha256']);
  const hostKeyFingerprint = fpOut.split(/\s+/)[1];
  const hostPublicKey = (await readFile(`${hostKey}.pub`, 'utf8')).trim().split(/\s+/).slice(0, 2).join(' ');
  const root = join(dir, 'root');
  await mkdir(root, { mode: 0o700 });
  const port = await freePort();
  const knownHostsFile = join(dir, 'known_hosts');
  await writeFile(knownHostsFile, `[127.0.0.1]:${port} ${hostPublicKey}\n`, { mode: 0o600 });
  const config = join(dir, 'sshd_config');
  await writeFile(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${authorizedKeys}`,
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      `PidFile ${join(dir, 'sshd.pid')}`,
      sftpLogFile ? `Subsystem sftp /usr/lib/openssh/sftp-server -e -l INFO 2>>${sftpLogFile}` : 'Subsystem sftp internal-sftp',
      'StrictModes no',
      'UsePAM no',
      'PermitRootLogin yes',
      'MaxStartups 50',
      'LogLevel ERROR',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  await execFileP(SSHD, ['-t', '-f', config]);
  const child = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  live.add(child.pid);
  let stderr = '';
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-8192)));
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sshd exited: ${stderr}`);
    if (await bannerArrives(port, 1000)) break;
    if (Date.now() > deadline) throw new Error(`sshd sent no banner: ${stderr}`);
    await sleep(50);
  }
  return {
    host: '127.0.0.1',
    port,
    username: userInfo().username,
    privateKeyFile: userKey,
    hostKeyFingerprint,
    knownHostsFile,
    root,
    dir,
    pid: child.pid,
    stop: () => stopChild(child, 'SIGKILL'),
  };
}
