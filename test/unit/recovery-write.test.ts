import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { KitPlan } from '../../src/recovery/plan.js';
import { writeKit } from '../../src/recovery/write.js';

const mode = (p: string) => statSync(p).mode & 0o777;

function setup() {
  const root = mkdtempSync(join(tmpdir(), 'ebd-kit-write-'));
  const secret = join(root, 'secret');
  writeFileSync(secret, 'key material\n', { mode: 0o644 });
  const plan: KitPlan = { files: [{ key: 'etcd.keyFile', from: secret, name: 'files/etcd-client.key' }], config: { cluster: 'c' }, dropped: [], ambient: [] };
  return { root, plan, kit: join(root, 'parent', 'recovery') };
}

describe('writeKit', () => {
  it('copies the executable it is given (this very node binary), 0700, byte for byte', async () => {
    const { plan, kit } = setup();
    await writeKit(kit, { plan, restoreText: 'text\n', executable: process.execPath });
    const bin = join(kit, 'etcd-backupd');
    expect(mode(bin)).toBe(0o700);
    expect(statSync(bin).size).toBe(statSync(process.execPath).size);
    expect(readFileSync(bin).equals(readFileSync(process.execPath))).toBe(true);
    expect(mode(join(kit, 'files', 'etcd-client.key'))).toBe(0o600);
    expect(readFileSync(join(kit, 'files', 'etcd-client.key'), 'utf8')).toBe('key material\n');
  });

  it('links an unchanged executable from the current kit instead of copying it again; a changed one is copied', async () => {
    const { root, plan, kit } = setup();
    const exe = join(root, 'exe');
    writeFileSync(exe, 'first build\n', { mode: 0o755 });
    await writeKit(kit, { plan, restoreText: '', executable: exe });
    const first = statSync(join(kit, 'etcd-backupd'));
    await writeKit(kit, { plan, restoreText: '', executable: exe });
    const second = statSync(join(kit, 'etcd-backupd'));
    expect(second.ino).toBe(first.ino);
    expect(second.mode & 0o777).toBe(0o700);
    const exe2 = join(root, 'exe2');
    writeFileSync(exe2, 'second build\n', { mode: 0o755 });
    await writeKit(kit, { plan, restoreText: '', executable: exe2 });
    expect(statSync(join(kit, 'etcd-backupd')).ino).not.toBe(first.ino);
    expect(readFileSync(join(kit, 'etcd-backupd'), 'utf8')).toBe('second build\n');
  });

  it('creates a missing parent 0700 and leaves an existing one as it is', async () => {
    const { root, plan, kit } = setup();
    await writeKit(kit, { plan, restoreText: '' });
    expect(mode(join(root, 'parent'))).toBe(0o700);
    const shared = join(root, 'shared');
    mkdirSync(shared, { mode: 0o755 });
    await writeKit(join(shared, 'recovery'), { plan, restoreText: '' });
    expect(mode(shared)).toBe(0o755);
    expect(mode(join(shared, 'recovery'))).toBe(0o700);
  });

  it('after a crash between the two renames the old kit comes back, then the new one replaces it; temp leftovers go', async () => {
    const { root, plan, kit } = setup();
    const parent = join(root, 'parent');
    mkdirSync(join(parent, 'recovery.old-abc'), { recursive: true });
    writeFileSync(join(parent, 'recovery.old-abc', 'RESTORE.txt'), 'old\n');
    mkdirSync(join(parent, 'recovery.tmp-def'));
    await writeKit(kit, { plan, restoreText: 'new\n' });
    expect(readdirSync(parent)).toEqual(['recovery']);
    expect(readFileSync(join(kit, 'RESTORE.txt'), 'utf8')).toBe('new\n');
  });

  it('a file it cannot read fails the refresh and leaves the previous kit whole', async () => {
    const { root, plan, kit } = setup();
    await writeKit(kit, { plan, restoreText: 'first\n' });
    const broken: KitPlan = { ...plan, files: [{ key: 'stores[0].privateKeyFile', from: join(root, 'gone'), name: 'files/x' }] };
    await expect(writeKit(kit, { plan: broken, restoreText: 'second\n' })).rejects.toMatchObject({ reason: 'recovery-kit-failed' });
    expect(readFileSync(join(kit, 'RESTORE.txt'), 'utf8')).toBe('first\n');
    expect(readdirSync(join(root, 'parent'))).toEqual(['recovery']);
    expect(existsSync(join(kit, 'files', 'x'))).toBe(false);
  });
});
