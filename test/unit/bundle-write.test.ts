import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile, readdir, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { writeBundle } from '../../src/bundle/write.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function entries(tarFile: string): Promise<{ name: string; size: number; mode: number; body: Buffer }[]> {
  const ex = tar.extract();
  const out: { name: string; size: number; mode: number; body: Buffer }[] = [];
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (h, stream, next) => {
      const parts: Buffer[] = [];
      stream.on('data', (c: Buffer) => parts.push(c));
      stream.on('end', () => {
        out.push({ name: h.name, size: h.size ?? 0, mode: h.mode ?? 0, body: Buffer.concat(parts) });
        next();
      });
    });
    ex.on('finish', resolve);
    ex.on('error', reject);
  });
  Readable.from([await readFile(tarFile)]).pipe(ex);
  await done;
  return out;
}

describe('writeBundle', () => {
  const dirs: string[] = [];
  afterEach(() => {
    vi.useRealTimers();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  // Sizes around the 1 MiB read chunk and the 512-byte tar block, and an empty file.
  for (const sizes of [
    [3 * 1024 * 1024 + 513, 1000],
    [1024 * 1024, 512],
    [5 * 1024 * 1024 - 1, 0],
    [1, 1],
  ]) {
    it(`the plain (ring-buffer) path writes the same bytes as the stream path: ${sizes.join(' + ')} bytes`, async () => {
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(new Date('2026-11-25T12:00:00Z'));
      const dir = mkdtempSync(join(tmpdir(), 'ebd-bundle-'));
      dirs.push(dir);
      const files = await Promise.all(
        sizes.map(async (n, i) => {
          const f = join(dir, `artifact-${i}.bin`);
          await writeFile(f, randomBytes(n), { mode: 0o600 });
          await utimes(f, new Date('2026-11-25T11:00:00Z'), new Date('2026-11-25T11:00:00Z'));
          return f;
        }),
      );
      const manifestFor = (list: { name: string; sha256: string }[]) => Buffer.from(JSON.stringify({ artifacts: list }) + '\n');
      const plain = await writeBundle(join(dir, 'out', 'plain.tar'), files, manifestFor);
      const streamed = await writeBundle(join(dir, 'out', 'streamed.tar'), files, manifestFor, { viaStream: true });
      const [a, b] = [await readFile(join(dir, 'out', 'plain.tar')), await readFile(join(dir, 'out', 'streamed.tar'))];
      expect(a.equals(b)).toBe(true);
      expect(plain).toEqual(streamed);
      expect(plain).toMatchObject({ size: a.length, sha256: sha(a) });
      expect((await stat(join(dir, 'out', 'plain.tar'))).mode & 0o777).toBe(0o600);
      expect((await readdir(join(dir, 'out'))).sort()).toEqual(['plain.tar', 'streamed.tar']); // no temp file left
      const list = await entries(join(dir, 'out', 'plain.tar'));
      expect(list.map((e) => e.name)).toEqual([...files.map((f) => f.split('/').pop()), 'manifest.json']);
      for (const [i, f] of files.entries()) {
        const body = await readFile(f);
        expect(list[i]!.body.equals(body)).toBe(true);
        expect(plain.artifacts[i]).toEqual({ name: f.split('/').pop(), size: body.length, sha256: sha(body) });
      }
      expect(JSON.parse(list.at(-1)!.body.toString()).artifacts).toEqual(plain.artifacts);
    });
  }

  it('a missing artifact fails the bundle and leaves no file behind', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ebd-bundle-'));
    dirs.push(dir);
    await writeFile(join(dir, 'a.bin'), randomBytes(10));
    await expect(writeBundle(join(dir, 'out', 'b.tar'), [join(dir, 'a.bin'), join(dir, 'missing.bin')], () => Buffer.from('{}'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readdir(join(dir, 'out'))).toEqual([]);
  });
});
