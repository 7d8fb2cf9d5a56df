import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
// What no test of a feature would notice: a merge committed with its conflict markers (it happened to
// bench/run.mjs, which no test imports), or a bench script that no longer parses.
const ROOT = new URL('../..', import.meta.url).pathname;
const SKIP = new Set(['node_modules', 'dist', 'dist-bundle', '.git', 'tmp', 'coverage']);
/** The project's files: git's list, or a walk of the tree when the checkout is not a git work tree. */
function projectFiles(): string[] {
  try {
    return execFileSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\0').filter(Boolean);
  } catch {
    const walk = (dir: string): string[] =>
      readdirSync(`${ROOT}/${dir}`, { withFileTypes: true }).flatMap((e) => (SKIP.has(e.name) ? [] : e.isDirectory() ? walk(`${dir}${e.name}/`) : e.isFile() ? [`${dir}${e.name}`] : []));
    return walk('');
  }
}
const tracked = projectFiles();
const TEXT = /\.(ts|mjs|js|json|md|sh|ya?ml|txt|service)$|^\.ci\//;

describe('the repository', () => {
  it('holds no merge-conflict markers', () => {
    const marked = tracked.filter((f) => TEXT.test(f) && /^(<{7} |>{7} |={7}$)/m.test(readFileSync(`${ROOT}/${f}`, 'utf8')));
    expect(marked).toEqual([]);
  });
  it('every bench script parses', () => {
    const scripts = tracked.filter((f) => f.startsWith('bench/') && f.endsWith('.mjs'));
    expect(scripts.length).toBeGreaterThan(5);
    const broken = scripts.filter((f) => {
      try {
        execFileSync(process.execPath, ['--check', `${ROOT}/${f}`], { stdio: 'pipe' });
        return false;
      } catch {
        return true;
      }
    });
    expect(broken).toEqual([]);
  });
});
