import { Readable } from 'node:stream';
import { ConnectionLost, type Session } from './session.js';

/**
 * Requests kept in flight per transfer. OpenSSH's sftp-server takes up to
 * 255 KiB per request and its channel window is 2 MiB: 4 requests (about
 * 1 MiB) keep the pipe full without ever waiting on the window, where ssh2
 * starts queueing and copying. Measured on 1 GiB (bench/results, experiments):
 * 4 took 5 s to write and 6 s to read where 8, 16, 32 or 64 took 6-9 s.
 */
const WRITE_WINDOW = 4;
const READ_WINDOW = 4;
/** Used when the server does not announce its limits (limits@openssh.com): the SFTP minimum. */
const FALLBACK_IO_LEN = 32 * 1024;

// ------------------------------------------------------------ ssh2 internals
//
// The only place that reads ssh2's private fields. ssh2 learns what we need
// (the server's request limits and extensions, its socket) but keeps it
// private; each read is guarded, so a release that renames a field costs
// speed (the SFTP minimum request size, no corking) or an extension, never
// correctness.

/** The largest request the server takes (limits@openssh.com), within what ssh2 sends in one go. */
export function ioLen(s: Session, kind: 'write' | 'read'): number {
  // ssh2 learns the server's limits (limits@openssh.com) but keeps them private.
  const v = (s.sftp as unknown as Record<string, unknown>)[kind === 'write' ? '_maxWriteLen' : '_maxReadLen'];
  // Never above what ssh2 itself sends in one request: past it ssh2 sends the rest later from the caller's (reused) buffer.
  return typeof v === 'number' && v > 0 ? Math.min(v, 1 << 20) : FALLBACK_IO_LEN;
}

/** Whether the server announced an SFTP extension; true when ssh2 does not say (the request then tells). */
export function hasExtension(s: Session, name: string): boolean {
  const ext = (s.sftp as unknown as { _extensions?: Record<string, string> })._extensions;
  return ext === undefined ? true : ext[name] === '1';
}

/**
 * ssh2 writes every 32 KiB channel packet to the socket on its own; corked until the end
 * of this tick, the packets of the requests sent together leave in one writev (measured:
 * 10-15 % less time and CPU for a 1 GiB upload). `_sock` is ssh2's, hence the guard.
 */
function corkForThisTick(s: Session): void {
  const sock = (s.client as unknown as { _sock?: NodeJS.WritableStream & { cork(): void; uncork(): void; writableCorked: number } })._sock;
  if (sock && typeof sock.cork === 'function' && !sock.writableCorked) {
    sock.cork();
    process.nextTick(() => sock.uncork());
  }
}

// ------------------------------------------------------------ transfers

/**
 * Writes the whole body at increasing offsets with up to WRITE_WINDOW
 * requests in flight (one-at-a-time writes are latency-bound). Returns the
 * number of bytes the server acknowledged.
 */
export async function writeBody(s: Session, where: string, handle: Buffer, body: Readable | AsyncIterable<Buffer>, onProgress?: (bytes: number) => void): Promise<number> {
  const piece = ioLen(s, 'write');
  let pos = 0;
  let acked = 0;
  let inflight = 0;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const settle = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const waitUntil = async (cond: () => boolean): Promise<void> => {
    while (!cond()) await new Promise<void>((r) => (wake = r));
  };
  const send = (buf: Buffer, off: number, len: number): void => {
    if (!s.alive) {
      failure ??= new ConnectionLost(`connection to ${where} lost: ${s.lostReason ?? 'closed'}`);
      return;
    }
    inflight++;
    const at = pos;
    pos += len;
    try {
      corkForThisTick(s);
      // ssh2 copies the bytes into its packet before returning: `buf` may be reused.
      s.sftp.write(handle, buf, off, len, at, (err) => {
        inflight--;
        if (err) failure ??= err;
        else {
          acked += len;
          onProgress?.(len);
        }
        settle();
      });
    } catch (e) {
      inflight--;
      failure ??= e;
    }
  };
  try {
    for await (const chunk of body) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
      for (let off = 0; off < buf.length; off += piece) {
        await waitUntil(() => inflight < WRITE_WINDOW || failure !== undefined);
        if (failure !== undefined) throw failure;
        send(buf, off, Math.min(piece, buf.length - off));
      }
      if (failure !== undefined) throw failure;
    }
    await waitUntil(() => inflight === 0);
    if (failure !== undefined) throw failure;
    return acked;
  } finally {
    // Never leave requests in flight behind a failed put (the handle is closed next).
    await waitUntil(() => inflight === 0 || !s.alive);
  }
}

export interface ReadStreamOptions {
  size: number;
  piece: number;
  read(buf: Buffer, at: number, cb: (err: Error | undefined, n: number) => void): void;
  close(): Promise<void>;
  wrapError(e: unknown): Error;
}

interface Slot {
  at: number;
  len: number;
  done: boolean;
  err?: Error;
  data?: Buffer;
}

/**
 * Reads a remote file of known size with up to READ_WINDOW requests in
 * flight, pushing pieces in order. A short read (allowed by the protocol)
 * is completed by a follow-up request for the rest of that piece.
 */
export class SftpReadStream extends Readable {
  private readonly slots: Slot[] = [];
  private next = 0;
  private wanting = false;
  private ended = false;

  constructor(private readonly o: ReadStreamOptions) {
    super({ highWaterMark: 1 << 20 });
  }

  private issue(slot: Slot): void {
    const buf = Buffer.allocUnsafe(slot.len);
    this.o.read(buf, slot.at, (err, n) => {
      slot.done = true;
      if (err) slot.err = err;
      else slot.data = buf.subarray(0, n);
      this.pump();
    });
  }

  private fill(): void {
    while (this.slots.length < READ_WINDOW && this.next < this.o.size) {
      const slot: Slot = { at: this.next, len: Math.min(this.o.piece, this.o.size - this.next), done: false };
      this.next += slot.len;
      this.slots.push(slot);
      this.issue(slot);
    }
  }

  private pump(): void {
    if (this.destroyed || this.ended) return;
    while (this.wanting && this.slots[0]?.done) {
      const slot = this.slots.shift()!;
      if (slot.err) {
        this.destroy(this.o.wrapError(slot.err));
        return;
      }
      const data = slot.data!;
      if (data.length === 0) {
        this.destroy(this.o.wrapError(new Error(`file ended at ${slot.at} bytes, ${this.o.size} expected (changed while reading?)`)));
        return;
      }
      if (data.length < slot.len) {
        const rest: Slot = { at: slot.at + data.length, len: slot.len - data.length, done: false };
        this.slots.unshift(rest);
        this.issue(rest);
      }
      this.wanting = this.push(data);
    }
    if (this.slots.length === 0 && this.next >= this.o.size) {
      this.ended = true;
      this.push(null);
      return;
    }
    this.fill();
  }

  override _read(): void {
    this.wanting = true;
    this.pump();
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.o.close().then(
      () => cb(err),
      () => cb(err),
    );
  }
}
