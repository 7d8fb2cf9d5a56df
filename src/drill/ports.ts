/** Loopback ports for the drill etcd: free ones, never one the node's real etcd or its companions use. */
import { createServer } from 'node:net';
import { BackupError } from '../errors.js';

/**
 * Ports a drill never uses, even when the kernel hands them out: the node's
 * real etcd (2379 client, 2380 peer), the metrics port kubeadm gives etcd
 * (2381), OpenShift's etcd metrics/readiness ports (9978-9980) and
 * etcd-backupd's own default metrics port (9979). Ports below 1024 are
 * refused too.
 */
export const FORBIDDEN_DRILL_PORTS: ReadonlySet<number> = new Set([2379, 2380, 2381, 9978, 9979, 9980]);

/** A port the kernel considers free on 127.0.0.1 right now (bind to port 0). */
function ephemeralPort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const addr = srv.address();
      const port = addr && typeof addr === 'object' ? addr.port : 0;
      srv.close(() => resolvePromise(port));
    });
  });
}

/** Whether nothing listens on 127.0.0.1:port (we can bind it, then release it). */
export function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolvePromise(false));
    srv.listen({ host: '127.0.0.1', port, exclusive: true }, () => srv.close(() => resolvePromise(true)));
  });
}

/** Whether a drill may use this port at all (independent of whether it is free). */
export function isAllowedDrillPort(port: number): boolean {
  return Number.isInteger(port) && port >= 1024 && port <= 65535 && !FORBIDDEN_DRILL_PORTS.has(port);
}

/**
 * `count` distinct free loopback ports for a drill etcd. Candidates come from
 * binding 127.0.0.1:0 (injectable for tests); a candidate that is forbidden
 * (FORBIDDEN_DRILL_PORTS, < 1024), already picked, or not free when checked
 * again is skipped. Internal; exported for tests.
 */
export async function pickDrillPorts(
  count: number,
  deps: { candidate?: () => Promise<number>; isFree?: (port: number) => Promise<boolean>; maxAttempts?: number } = {},
): Promise<number[]> {
  const candidate = deps.candidate ?? ephemeralPort;
  const isFree = deps.isFree ?? isPortFree;
  const maxAttempts = deps.maxAttempts ?? 100;
  const out: number[] = [];
  for (let i = 0; i < maxAttempts && out.length < count; i++) {
    const p = await candidate();
    if (!isAllowedDrillPort(p) || out.includes(p)) continue;
    if (!(await isFree(p))) continue;
    out.push(p);
  }
  if (out.length < count) {
    throw new BackupError('drill-start-failed', `no free loopback port for the drill etcd after ${maxAttempts} attempts`);
  }
  return out;
}

/** A client and a peer port for the drill etcd. */
export interface DrillPorts {
  client: number;
  peer: number;
}

export async function pickClientAndPeerPorts(): Promise<DrillPorts> {
  const [client, peer] = await pickDrillPorts(2);
  return { client: client!, peer: peer! };
}
