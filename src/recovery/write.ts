import { randomBytes } from 'node:crypto';
import { chmod, copyFile, link, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { BackupError, messageOf } from '../errors.js';
import { fsyncPath } from '../fsutil.js';
import { KIT_CONFIG, KIT_EXECUTABLE, KIT_FILES_DIR, KIT_RESTORE_TEXT, type KitPlan } from './plan.js';

export interface KitContent {
  plan: KitPlan;
  restoreText: string;
  /** The single executable to copy (process.execPath of a SEA); undefined when there is none. */
  executable?: string;
}

const TMP = '.tmp-';
/** Which executable the kit's copy came from (device, inode, size, mtime): an unchanged one is hard-linked, not copied again. */
const EXECUTABLE_STAMP = '.executable-stamp';
const OLD = '.old-';

/**
 * Refreshes the kit at `dir` so that a reader (or a crash) never sees half a kit.
 *
 * The new kit is built whole in a sibling `<dir>.tmp-<rand>` (0700, same
 * filesystem), every file fsynced. The swap is two renames: the old kit aside
 * to `<dir>.old-<rand>`, the new one into place; then the old one is removed.
 * Linux has no portable "exchange two directories" from Node, so between the
 * two renames `dir` is briefly absent; a crash there leaves the old kit whole
 * under `.old-`, and the next refresh (recoverLeftovers) moves it back before
 * anything else. A crash at any other point leaves the old kit (before the
 * first rename) or the new one (after the second) whole at `dir`. An operator
 * who looks at `dir` during that window on the worst day still finds the
 * `.old-` sibling beside it.
 *
 * `dir` must not be a mount point: a mount point cannot be renamed (mount its
 * parent instead; packaging/kubernetes/daemonset.yaml does).
 */
export async function writeKit(dir: string, content: KitContent): Promise<void> {
  const parent = dirname(dir);
  // Created 0700 only if it is ours; an existing parent (/var/lib/etcd-backupd) is left as it is.
  await mkdir(parent, { recursive: true, mode: 0o700 });
  await recoverLeftovers(dir);
  const tmp = `${dir}${TMP}${randomBytes(6).toString('hex')}`;
  try {
    await buildKit(tmp, content, dir);
    await swapIn(tmp, dir);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  }
}

async function buildKit(tmp: string, c: KitContent, oldKit: string): Promise<void> {
  await mkdir(tmp, { mode: 0o700 });
  await chmod(tmp, 0o700); // ours: a umask never widens it, but a narrower one would lock us out
  await mkdir(join(tmp, KIT_FILES_DIR), { mode: 0o700 });
  await writePrivate(join(tmp, KIT_CONFIG), `# etcd-backupd recovery kit: paths are relative to this file (${KIT_RESTORE_TEXT} says how to use it).\n# For list, fetch, verify and restore; \`source\` is a stand-in: backups are taken by the daemon, not from here.\n${stringify(c.plan.config)}`);
  await writePrivate(join(tmp, KIT_RESTORE_TEXT), c.restoreText);
  for (const f of c.plan.files) {
    let body: Buffer;
    try {
      body = await readFile(f.from);
    } catch (e) {
      throw new BackupError('recovery-kit-failed', `recovery kit: cannot read ${f.key} ${f.from}: ${messageOf(e)}`, { hint: 'the file the config names must be readable by the daemon' });
    }
    await writePrivate(join(tmp, f.name), body);
  }
  if (c.executable) await placeExecutable(c.executable, tmp, oldKit);
  await fsyncPath(join(tmp, KIT_FILES_DIR));
  await fsyncPath(tmp);
}

/**
 * The executable is ~125 MiB and a refresh follows every run: copying it each
 * time would write that much to a master's disk (etcd's disk) per run. When
 * the running executable is the one the current kit was made from, the new
 * kit hard-links the current kit's copy (same filesystem: siblings).
 */
async function placeExecutable(from: string, tmp: string, oldKit: string): Promise<void> {
  const to = join(tmp, KIT_EXECUTABLE);
  const st = await stat(from);
  const stamp = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}\n`;
  const before = await readFile(join(oldKit, EXECUTABLE_STAMP), 'utf8').catch(() => undefined);
  const linked = before === stamp && (await link(join(oldKit, KIT_EXECUTABLE), to).then(() => true, () => false));
  if (!linked) {
    await copyFile(from, to);
    // Owner only, like every file of the kit, but it must run.
    await chmod(to, 0o700);
    await fsyncPath(to);
  }
  await writePrivate(join(tmp, EXECUTABLE_STAMP), stamp);
}

async function writePrivate(path: string, body: string | Buffer): Promise<void> {
  const fh = await open(path, 'wx', 0o600);
  try {
    await fh.writeFile(body);
    await fh.chmod(0o600); // a umask can only narrow it, but be exact
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function swapIn(tmp: string, dir: string): Promise<void> {
  const old = `${dir}${OLD}${randomBytes(6).toString('hex')}`;
  const had = await stat(dir).then(
    () => true,
    () => false,
  );
  try {
    if (had) await rename(dir, old);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new BackupError('recovery-kit-failed', `recovery kit: cannot move the old kit ${dir} aside: ${messageOf(e)}`, {
      hint: code === 'EBUSY' || code === 'EXDEV' ? 'recovery.dir is a mount point: mount its parent directory instead' : 'check the permissions of recovery.dir and its parent',
    });
  }
  try {
    await rename(tmp, dir);
  } catch (e) {
    if (had) await rename(old, dir).catch(() => undefined);
    throw e;
  }
  await fsyncPath(dirname(dir));
  if (had) await rm(old, { recursive: true, force: true });
}

/** A crash between the two renames left no kit at `dir`: the old one comes back first; then stale siblings go. */
async function recoverLeftovers(dir: string): Promise<void> {
  const parent = dirname(dir);
  const base = basename(dir);
  const names = await readdir(parent);
  const exists = names.includes(base);
  const olds = names.filter((n) => n.startsWith(base + OLD));
  if (!exists && olds.length > 0) await rename(join(parent, olds[0]!), dir);
  for (const n of names) {
    if (n.startsWith(base + TMP) || (n.startsWith(base + OLD) && (exists || n !== olds[0]))) {
      await rm(join(parent, n), { recursive: true, force: true });
    }
  }
}
