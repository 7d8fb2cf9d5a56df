import { chmod, rm } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { BackupError, messageOf, reasonOf } from '../errors.js';
import { mkdirPrivate } from '../fsutil.js';
import type { ControlEvent, ControlRequest } from './protocol.js';

export type ControlHandler = (req: ControlRequest, emit: (e: ControlEvent) => void) => Promise<{ data: unknown; exitCode: number }>;

function alive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/**
 * The daemon's control socket: root-only (0600 in a 0700 directory), never a
 * network port. A stale socket file from a crashed daemon is replaced; a live
 * one means another daemon runs here, and starting a second is refused.
 */
export async function startControlServer(path: string, handler: ControlHandler): Promise<{ close(): Promise<void> }> {
  await mkdirPrivate(dirname(path));
  if (await alive(path)) {
    throw new BackupError('lock-busy', `another etcd-backupd daemon already listens on ${path}`, { hint: 'run one daemon per node' });
  }
  await rm(path, { force: true });
  const sockets = new Set<Socket>();
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    const emit = (e: ControlEvent) => {
      if (!sock.destroyed) sock.write(JSON.stringify(e) + '\n');
    };
    const rl = createInterface({ input: sock });
    rl.once('line', (line) => {
      rl.close();
      let req: ControlRequest;
      try {
        req = JSON.parse(line) as ControlRequest;
        if (!req || typeof req.op !== 'string') throw new Error('missing op');
      } catch (e) {
        emit({ type: 'error', reason: 'usage', message: `bad control request: ${messageOf(e)}`, exitCode: 2 });
        sock.end();
        return;
      }
      handler(req, emit)
        .then((r) => emit({ type: 'result', data: r.data, exitCode: r.exitCode }))
        .catch((e) =>
          emit({
            type: 'error',
            reason: reasonOf(e),
            message: messageOf(e),
            hint: e instanceof BackupError ? e.hint : undefined,
            exitCode: reasonOf(e) === 'usage' || reasonOf(e) === 'config-invalid' ? 2 : 1,
          }),
        )
        .finally(() => sock.end());
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // umask keeps the socket private between bind and chmod.
    const old = process.umask(0o177);
    server.listen(path, () => {
      process.umask(old);
      resolve();
    });
  });
  await chmod(path, 0o600);
  return {
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.end();
      });
      await rm(path, { force: true });
    },
  };
}
