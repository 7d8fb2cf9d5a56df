import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { zstdDecompressSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { decryptStream } from '../../src/bundle/encrypt.js';
import { checkSignature, generateKeyPair, loadSigningKey, loadTrustedKeys } from '../../src/bundle/sign.js';
import { parseConfig } from '../../src/config/load.js';
import { SegmentOutbox } from '../../src/continuous/outbox.js';
import { OpenSegment, sealSegment } from '../../src/continuous/seal.js';
import { decodeRecord, segmentManifestSchema, type RevisionRecord } from '../../src/continuous/segment.js';
import { continuousOutboxDir, segmentKeys } from '../../src/layout.js';
import { createLogger } from '../../src/log.js';
import { createStores } from '../../src/storage/index.js';
import { tempDir } from '../support/cli.js';
import { ensureTool } from '../support/etcd.js';

/**
 * A sealed segment, encrypted and signed, through the segment outbox into
 * two real local stores, one of which fails: the good one commits (object,
 * then manifest), the failing one keeps the segment in the outbox, a new
 * outbox (a restart) finds it there and delivers it once the store works.
 */
describe('segment sealing and the segment outbox', () => {
  it('encrypts, signs, commits to the store that works, keeps the segment for the one that fails until it works', async () => {
    ensureTool('age-keygen');
    const root = tempDir('continuous-seal');
    const identityFile = join(root, 'age.key');
    execFileSync('age-keygen', ['-o', identityFile], { stdio: 'pipe' });
    const recipient = execFileSync('age-keygen', ['-y', identityFile]).toString().trim();
    const keys = await generateKeyPair(join(root, 'signing'));
    const script = join(root, 'cluster-backup.sh');
    writeFileSync(script, '#!/bin/sh\n', { mode: 0o755 });
    // The bad store's path runs through a regular file: every write fails (ENOTDIR), even for root.
    writeFileSync(join(root, 'blocker'), 'x');
    const cfg = parseConfig(
      {
        cluster: 'c1',
        node: 'master-0',
        workDir: join(root, 'work'),
        source: { type: 'cluster-backup', script },
        etcd: { endpoints: ['http://127.0.0.1:2379'] },
        stores: [
          { name: 'good', type: 'local', path: join(root, 'good') },
          { name: 'bad', type: 'local', path: join(root, 'blocker', 'bad') },
        ],
      },
      join(root, 'c.yaml'),
    );
    const stores = await createStores(cfg.stores);
    const log = createLogger({ level: 'silent' });
    const committed: string[] = [];
    const attempts: string[] = [];
    const events = { committed: (s: { manifest: { toRev: number } }) => committed.push(String(s.manifest.toRev)), attempt: (st: string, _s: unknown, o: { ok: boolean }) => attempts.push(`${st}:${o.ok}`), backlog: () => undefined };
    const records: RevisionRecord[] = [
      { rev: 11, time: '2026-11-26T23:00:00.000Z', ops: [{ put: Buffer.from('/registry/a'), value: Buffer.from([0, 255, 10]), lease: '0' }] },
      { rev: 12, time: '2026-11-26T23:00:00.100Z', ops: [{ put: Buffer.from('/registry/b'), value: Buffer.from('B'), lease: '7587' }, { del: Buffer.from('/registry/a') }] },
      { rev: 13, time: '2026-11-26T23:00:01.000Z', ops: [{ del: Buffer.from('/registry/b') }] },
    ];
    const base = '20261126T220000Z-master-1';

    const box = new SegmentOutbox(cfg.workDir, stores, log, events);
    const seg = await sealSegment(box.dirFor(base, 11, 13), records, {
      cluster: 'c1',
      node: 'master-0',
      baseId: base,
      codec: 'zstd',
      level: 3,
      recipients: [recipient],
      signingKey: await loadSigningKey(keys.privatePath),
    });
    await box.add(seg);
    const until = async (check: () => boolean, what: string) => {
      const end = Date.now() + 30_000;
      while (!check()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    await until(() => attempts.length >= 2, 'an attempt per store');
    expect(attempts).toEqual(['good:true', 'bad:false']);
    expect(committed).toEqual([]);
    // The good store holds it, committed: the manifest names the object, signed by our key.
    const k = segmentKeys('c1', base, 11, 13, { codec: 'zstd', encrypted: true });
    expect(k.object.endsWith('.seg.zst.age')).toBe(true);
    const m = segmentManifestSchema.parse(JSON.parse(readFileSync(join(root, 'good', k.manifest), 'utf8')));
    expect(m).toMatchObject({ base, node: 'master-0', fromRev: 11, toRev: 13, revisions: 3, firstTime: records[0]!.time, lastTime: records[2]!.time, object: { key: k.object, encrypted: true, recipients: [recipient], codec: 'zstd' } });
    expect(checkSignature(m, await loadTrustedKeys([keys.publicPath]))).toBe('trusted');
    const stored = readFileSync(join(root, 'good', k.object));
    expect(stored.length).toBe(m.object.size);
    const plain = await decryptStream(Readable.from([stored]), [readFileSync(identityFile, 'utf8').split('\n').find((l) => l.startsWith('AGE-SECRET-KEY-1'))!]);
    const chunks: Buffer[] = [];
    for await (const c of plain) chunks.push(c as Buffer);
    const text = zstdDecompressSync(Buffer.concat(chunks)).toString('utf8');
    expect(Buffer.byteLength(text)).toBe(m.object.rawSize);
    expect(text.split('\n').filter(Boolean).map(decodeRecord)).toEqual(records);
    // The outbox keeps it for the bad store (0600 files, 0700 dirs).
    const entry = join(continuousOutboxDir(cfg.workDir), base, '00000000000000000011-00000000000000000013');
    expect(JSON.parse(readFileSync(join(entry, 'status.json'), 'utf8'))).toEqual({ owed: ['bad'] });
    for (const f of readdirSync(entry)) expect(statSync(join(entry, f)).mode & 0o777).toBe(0o600);
    expect(statSync(entry).mode & 0o777).toBe(0o700);
    // The writer asks before sealing a range again: this one waits here.
    expect([box.holds(base, 11, 13), box.holds(base, 11, 12)]).toEqual([true, false]);
    await box.stop(0);

    // A restart: the new outbox finds the entry; once the store works, it delivers it and the entry goes.
    rmSync(join(root, 'blocker'));
    mkdirSync(join(root, 'blocker', 'bad'), { recursive: true });
    const box2 = new SegmentOutbox(cfg.workDir, stores, log, events);
    await box2.load();
    expect(box2.size).toBe(1);
    await until(() => committed.length === 1, 'the retry');
    expect(attempts.slice(2)).toEqual(['bad:true']);
    expect(existsSync(join(root, 'blocker', 'bad', k.manifest))).toBe(true);
    expect(existsSync(entry)).toBe(false);
    expect(box2.holds(base, 11, 13)).toBe(false);
    await box2.stop(0);
  }, 60_000);
});

describe('a segment streams while open (seal.ts OpenSegment)', () => {
  const opts = (codec: 'zstd' | 'none') => ({ cluster: 'c1', node: 'master-0', baseId: 'b1', codec, level: 3, recipients: [] as string[] });
  // Values from empty to past one 64 KiB slab, deletes and multi-op revisions: every slab boundary case.
  const records: RevisionRecord[] = Array.from({ length: 200 }, (_, i) => ({
    rev: 100 + i,
    time: new Date(Date.UTC(2026, 10, 27, 4, 0, 0, i)).toISOString(),
    ops:
      i % 7 === 3
        ? [{ del: Buffer.from(`/registry/k${i - 1}`) }, { put: Buffer.from(`/registry/k${i}`), value: Buffer.alloc(i * 37, i % 256), lease: '0' }]
        : [{ put: Buffer.from(`/registry/k${i}`), value: i % 50 === 0 ? Buffer.alloc(70_000 + i, 7) : Buffer.alloc((i * 997) % 9000, i % 256), lease: String(i % 3) }],
  }));

  it.each(['zstd', 'none'] as const)('%s: what was appended is what the sealed object holds, byte for byte, in one entry named by its range', async (codec) => {
    const root = tempDir('continuous-open');
    const entry = join(root, 'outbox', 'b1', '00000000000000000100-00000000000000000299');
    const seg = await sealSegment(entry, records, opts(codec));
    expect(seg.manifest).toMatchObject({ fromRev: 100, toRev: 299, revisions: 200, firstTime: records[0]!.time, lastTime: records[199]!.time });
    const stored = readFileSync(seg.objectPath);
    expect(stored.length).toBe(seg.manifest.object.size);
    const text = (codec === 'zstd' ? zstdDecompressSync(stored) : stored).toString('utf8');
    expect(Buffer.byteLength(text)).toBe(seg.manifest.object.rawSize);
    expect(text.split('\n').filter(Boolean).map(decodeRecord)).toEqual(records);
    // Only the entry is left: the open directory was renamed into it.
    expect(readdirSync(join(root, 'outbox', 'b1'))).toEqual(['00000000000000000100-00000000000000000299']);
  });

  it('a revision out of order is refused; a stream that cannot be written fails the seal and leaves no entry', async () => {
    const root = tempDir('continuous-open-bad');
    const s = new OpenSegment(join(root, 'outbox', 'b1', '.open-x'), opts('zstd'));
    s.append(records[0]!);
    expect(() => s.append(records[2]!)).toThrow(/revision 102 follows 100/);
    await s.discard();
    expect(existsSync(join(root, 'outbox', 'b1', '.open-x'))).toBe(false);

    writeFileSync(join(root, 'file'), 'x');
    const bad = new OpenSegment(join(root, 'file', 'open'), opts('zstd'));
    for (const r of records.slice(0, 50)) bad.append(r);
    await expect(bad.seal(join(root, 'outbox', 'b1', 'entry'))).rejects.toThrow(/ENOTDIR/);
    expect(bad.failed).toMatch(/ENOTDIR/);
    expect(existsSync(join(root, 'outbox', 'b1', 'entry'))).toBe(false);
  });
});
