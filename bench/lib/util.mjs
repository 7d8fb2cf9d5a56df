import { spawn } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BENCH = join(ROOT, 'bench');
export const TMP = join(BENCH, 'tmp');
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

/** "256MiB", "1GiB", "4GiB", "512M", "1G", plain bytes. */
export function parseSize(s) {
  const m = /^(\d+(?:\.\d+)?)\s*(k|ki|kib|m|mi|mib|g|gi|gib|b)?$/i.exec(String(s).trim());
  if (!m) throw new Error(`cannot read size ${JSON.stringify(s)} (use e.g. 256MiB, 1GiB, 4GiB)`);
  const n = Number(m[1]);
  const u = (m[2] ?? 'b').toLowerCase()[0];
  return Math.round(n * (u === 'k' ? 1024 : u === 'm' ? MiB : u === 'g' ? GiB : 1));
}

export function sizeLabel(bytes) {
  if (bytes % GiB === 0) return `${bytes / GiB}GiB`;
  if (bytes % MiB === 0) return `${bytes / MiB}MiB`;
  return `${bytes}B`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

export function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i];
}

/**
 * Runs argv under /usr/bin/time and returns wall seconds (measured here),
 * user/sys CPU seconds, peak RSS (KiB) and minor page faults of the child and its waited-for
 * descendants, plus stdout/stderr. Throws on a non-zero exit unless allowFail.
 */
export async function timed(argv, { env, cwd, allowFail = false, input } = {}) {
  const out = join(TMP, `time-${process.pid}-${Math.random().toString(16).slice(2)}.txt`);
  const t0 = performance.now();
  const child = spawn('/usr/bin/time', ['-o', out, '-f', '%e %U %S %M %x %R', ...argv], {
    env: env ?? process.env,
    cwd,
    stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  if (input !== undefined) child.stdin.end(input);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => stdout.length < 4 * MiB && (stdout += d)); // bounded: a few results, never file contents
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-20000)));
  const code = await new Promise((r) => child.on('close', (c) => r(c)));
  const wall = (performance.now() - t0) / 1000;
  let text = '';
  try {
    text = (await readFile(out, 'utf8')).trim().split('\n').pop();
  } finally {
    await rm(out, { force: true });
  }
  const [, user, sys, rssKiB, , minorFaults] = text.split(/\s+/).map(Number);
  if (code !== 0 && !allowFail) {
    throw new Error(`${argv.join(' ')} exited ${code}: ${stderr.slice(-2000)}`);
  }
  return { wall, user, sys, cpu: user + sys, rssKiB, minorFaults, code, stdout, stderr };
}

/** Runs a command, resolves with stdout; throws with stderr on failure. */
export function run(cmd, args, { env, cwd, input } = {}) {
  return new Promise((resolveP, reject) => {
    const child = spawn(cmd, args, { env: env ?? process.env, cwd, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    if (input !== undefined) child.stdin.end(input);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => stdout.length < 4 * MiB && (stdout += d)); // bounded: a few results, never file contents
    child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-20000)));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolveP(stdout) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.slice(-2000)}`))));
  });
}

export function fmt(n, digits = 2) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  return n.toFixed(digits);
}
