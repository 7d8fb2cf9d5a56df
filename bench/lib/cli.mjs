// What every bench script's command line shares (bench/run.mjs and its subcommands): the options
// --no-build, --out and --help, the log line prefix, and the build of dist/ before measuring it.
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { ROOT } from './util.mjs';

const COMMON = {
  'no-build': { type: 'boolean', default: false },
  out: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

/**
 * The script's options (its own plus the common ones); --help prints `usage` and exits 0.
 * `subcommand`: the word `npm run bench -- <subcommand>` leaves first on the command line, dropped.
 */
export function benchArgs(usage, options, { subcommand } = {}) {
  const args = process.argv.slice(2).filter((a, i) => !(subcommand && i === 0 && a === subcommand));
  const { values } = parseArgs({ args, options: { ...options, ...COMMON } });
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  return values;
}

/** A log to stderr, each line prefixed with `[<name> HH:MM:SS]`. */
export function benchLog(name) {
  return (...a) => console.error(`[${name} ${new Date().toISOString().slice(11, 19)}]`, ...a);
}

/** `npm run build`: the benchmark measures dist/, which must match src/. */
export async function buildDist(log) {
  log('npm run build');
  const code = await new Promise((r) => spawn('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: ['ignore', 2, 2] }).on('close', r));
  if (code !== 0) throw new Error('npm run build failed: the benchmark measures dist/, which must match src/');
}
