#!/usr/bin/env node
/**
 * Single-file build of etcd-backupd (docs/development.md, "Single-file build").
 *
 *   node scripts/package.mjs [--out DIR] [--no-sea]       (npm run package)
 *
 * 1. DIR/etcd-backupd.mjs — src/cli.ts and every runtime dependency in one ESM
 *    file for `node` >= 20: no node_modules, no package.json at run time
 *    (the version comes from src/version.ts). This is the deliverable.
 * 2. DIR/etcd-backupd — a Node single executable application (SEA): the same
 *    code as a CommonJS bundle, injected with postject into a copy of the
 *    `node` binary that runs this script. Skipped with --no-sea, or (with the
 *    reason printed) when this node cannot make one.
 *
 * etcd's protos: the etcd3 package reads node_modules/etcd3/proto/rpc.proto
 * (and the files it imports) when it loads. Both bundles carry them instead,
 * parsed here into protobufjs JSON and handed to @grpc/proto-loader's
 * fromJSON in place of that loadSync (the `etcd3-protos-embedded` plugin);
 * the build fails if etcd3's call is not where it expects it.
 *
 * DIR defaults to dist-bundle/, where a .gitignore keeps all of it out of git.
 *
 * Native code: ssh2 optionally loads two addons, `cpu-features` (picks the
 * fastest cipher) and its own `sshcrypto.node` (faster ciphers). Neither is
 * bundled: the .mjs leaves both `require`s external, they fail where no
 * node_modules holds them, and ssh2 catches that and uses its pure-JS and
 * node:crypto code paths (the SFTP store works unchanged, a little slower on
 * chacha20-poly1305). In the SEA they are replaced by a module that throws the
 * same way, since an SEA's `require` loads built-in modules only (and prints a
 * warning for anything else).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { builtinModules, createRequire, isBuiltin } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ENTRY = join(ROOT, 'src', 'cli.ts');
/** The fuse every SEA-capable node binary carries (Node's docs, "Single executable applications"). */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
/** Optional native addons of ssh2 (see the header). */
const NATIVE_EXTERNALS = ['cpu-features', '*.node'];
/** src/cli.ts's own first line, node flags included (its comment says why): one place to change them. */
const SHEBANG = `${readFileSync(ENTRY, 'utf8').split('\n', 1)[0]}\n`;
if (!SHEBANG.startsWith('#!')) throw new Error(`${ENTRY} does not start with a shebang line`);
/** The node flags of that line (`--initial-old-space-size=64`): the single executable carries them as its execArgv. */
const SHEBANG_WORDS = SHEBANG.slice(2).trim().split(/\s+/);
const NODE_FLAGS = SHEBANG_WORDS.slice(SHEBANG_WORDS.indexOf('node') + 1);

function usage(msg) {
  if (msg) console.error(`package: ${msg}`);
  console.error('usage: node scripts/package.mjs [--out DIR] [--no-sea]');
  process.exit(2);
}

const args = process.argv.slice(2);
let outDir = join(ROOT, 'dist-bundle');
let sea = true;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--no-sea') sea = false;
  else if (a === '--out') outDir = resolve(args[++i] ?? usage('--out needs a directory'));
  else if (a === '-h' || a === '--help') usage();
  else usage(`unknown argument ${a}`);
}

const VERSION = /export const VERSION = '([^']+)'/.exec(readFileSync(join(ROOT, 'src', 'version.ts'), 'utf8'))?.[1];
if (!VERSION) throw new Error('cannot read VERSION from src/version.ts');

const common = {
  entryPoints: [ENTRY],
  bundle: true,
  platform: 'node',
  target: 'node20',
  // Whitespace and syntax only: identifiers stay readable in stack traces,
  // and parsing 2.7 MB instead of 4 MB is most of the start-up gain.
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: 'none',
  metafile: true,
  logLevel: 'warning',
  plugins: [etcd3ProtosEmbedded()],
};

/**
 * etcd3's connection-pool.js loads its protos from disk when it loads:
 *   (0, proto_loader_1.loadSync)(`${__dirname}/../proto/rpc.proto`, { keepCase: true, ... })
 * A single file has no proto/ beside it, so the bundles get the same
 * definitions as JSON (parsed here with etcd3's own protobufjs and the
 * keepCase it asks for) and proto-loader's fromJSON with etcd3's options.
 */
function etcd3ProtosEmbedded() {
  const requireFromEtcd3 = createRequire(join(ROOT, 'node_modules', 'etcd3', 'package.json'));
  const protoLoaderMain = requireFromEtcd3.resolve('@grpc/proto-loader');
  const protobuf = createRequire(protoLoaderMain)('protobufjs');
  const rpcProto = join(dirname(requireFromEtcd3.resolve('etcd3')), '..', 'proto', 'rpc.proto');
  const root = new protobuf.Root().loadSync(rpcProto, { keepCase: true });
  root.resolveAll();
  const json = JSON.stringify(root.toJSON());
  const CALL = /\(0, proto_loader_1\.loadSync\)\(`\$\{__dirname\}\/\.\.\/proto\/rpc\.proto`,/;
  return {
    name: 'etcd3-protos-embedded',
    setup(b) {
      b.onLoad({ filter: /[\\/]etcd3[\\/]lib[\\/]connection-pool\.js$/ }, (a) => {
        const text = readFileSync(a.path, 'utf8');
        if (!CALL.test(text)) throw new Error(`${a.path}: etcd3 no longer loads its protos with loadSync(\`\${__dirname}/../proto/rpc.proto\`): update the etcd3-protos-embedded plugin`);
        return { contents: text.replace(CALL, `(0, proto_loader_1.fromJSON)(JSON.parse(${JSON.stringify(json)}),`), loader: 'js' };
      });
    },
  };
}

const kib = (n) => `${(n / 1024).toFixed(0)} KiB`;
const mib = (n) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

/** Every import that stayed outside the bundle must be a Node built-in or one of the optional native addons. */
function checkExternals(metafile, allowed) {
  const builtins = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);
  const bad = new Set();
  for (const out of Object.values(metafile.outputs)) {
    for (const imp of out.imports) {
      if (!imp.external || builtins.has(imp.path)) continue;
      if (!allowed(imp.path)) bad.add(imp.path);
    }
  }
  if (bad.size) throw new Error(`the bundle would need these at run time, which a single file cannot carry: ${[...bad].join(', ')}`);
}
const isNativeAddon = (p) => p === 'cpu-features' || p.endsWith('.node');

/** Runs the artefact from an empty directory: the quickest proof that nothing outside the file is needed. */
function smoke(cmd, argv) {
  const v = execFileSync(cmd, [...argv, '--version'], { cwd: tmpdir(), encoding: 'utf8', env: { ...process.env, NODE_PATH: '' } }).trim();
  const want = `etcd-backupd ${VERSION} (node ${process.version})`;
  if (v !== want) throw new Error(`${[cmd, ...argv].join(' ')} --version printed "${v}", expected "${want}"`);
}

async function buildMjs() {
  const outfile = join(outDir, 'etcd-backupd.mjs');
  const r = await esbuild.build({
    ...common,
    format: 'esm',
    outfile,
    external: NATIVE_EXTERNALS,
    // CommonJS packages bundled into ESM still call require(), __dirname and
    // __filename (ssh2, pino, the AWS SDK): give them real ones. src/cli.ts
    // carries the shebang, which esbuild keeps on line 1, above this banner.
    banner: {
      js: [
        'import { createRequire as __ebdCreateRequire } from "node:module";',
        'import { fileURLToPath as __ebdFileURLToPath } from "node:url";',
        'import { dirname as __ebdDirname } from "node:path";',
        'const require = __ebdCreateRequire(import.meta.url);',
        'const __filename = __ebdFileURLToPath(import.meta.url);',
        'const __dirname = __ebdDirname(__filename);',
      ].join('\n'),
    },
  });
  checkExternals(r.metafile, isNativeAddon);
  let text = readFileSync(outfile, 'utf8');
  if (!text.startsWith(SHEBANG)) text = SHEBANG + text;
  if (text.slice(SHEBANG.length).startsWith('#!')) throw new Error('two shebang lines in the bundle');
  writeFileSync(outfile, text);
  chmodSync(outfile, 0o755);
  smoke(process.execPath, [outfile]);
  return { outfile, size: statSync(outfile).size, metafile: r.metafile };
}

/** Why this node cannot build an SEA, or undefined when it can. */
function seaUnsupported() {
  const [major, minor] = process.versions.node.split('.').map(Number);
  // --experimental-sea-config exists since 20.0 (18.16); useCodeCache and disableExperimentalSEAWarning since 20.6.
  if (major < 20) return `node ${process.versions.node} has no --experimental-sea-config (20.0 or later needed)`;
  if (major === 20 && minor < 6) return `node ${process.versions.node} lacks the SEA code cache used here (20.6 or later needed)`;
  // execArgv in the SEA config: without it the executable would run without the launcher's V8 flags.
  if (major < 24) return `node ${process.versions.node} cannot give a single executable its node flags (${NODE_FLAGS.join(' ')}; SEA execArgv needs Node 24)`;
  if (process.platform !== 'linux') return `this script injects and runs Linux executables only (platform ${process.platform}; macOS and Windows need codesign/signtool steps)`;
  // Distribution builds of node may lack the fuse; postject would fail later with a less clear message.
  const bin = readFileSync(process.execPath);
  if (bin.indexOf(`${SEA_FUSE}:`) < 0) return `${process.execPath} was built without the SEA fuse (${SEA_FUSE})`;
  return undefined;
}

async function buildSea() {
  const why = seaUnsupported();
  if (why) {
    console.log(`package: no single executable: ${why}`);
    return undefined;
  }
  const seaDir = join(outDir, 'sea');
  mkdirSync(seaDir, { recursive: true });
  const main = join(seaDir, 'etcd-backupd.cjs');
  // An SEA's main script must be CommonJS, and its require() loads built-ins only.
  const r = await esbuild.build({
    ...common,
    format: 'cjs',
    outfile: main,
    // node-cron (ESM) computes a path from import.meta.url at load time.
    define: { 'import.meta.url': '__ebdImportMetaUrl' },
    banner: { js: 'var __ebdImportMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
    plugins: [
      ...common.plugins,
      {
        // With the code cache an SEA cannot run import() (Node's SEA docs); the AWS SDK's
        // instance-metadata credentials do `await import("node:http")`. Bundled as a
        // CommonJS module, a dynamic import of a built-in becomes a plain require.
        name: 'builtin-dynamic-import-as-require',
        setup(b) {
          b.onResolve({ filter: /.*/ }, (a) => (a.kind === 'dynamic-import' && isBuiltin(a.path) ? { path: a.path, namespace: 'builtin-require' } : undefined));
          b.onLoad({ filter: /.*/, namespace: 'builtin-require' }, (a) => ({ contents: `module.exports = require(${JSON.stringify(a.path)});`, loader: 'js' }));
        },
      },
      {
        name: 'native-addons-absent',
        setup(b) {
          b.onResolve({ filter: /^cpu-features$|\.node$/ }, (a) => ({ path: a.path, namespace: 'native-absent' }));
          b.onLoad({ filter: /.*/, namespace: 'native-absent' }, (a) => ({
            contents: `const e = new Error(${JSON.stringify(`Cannot find module '${a.path}' (native addons are not part of the etcd-backupd executable)`)}); e.code = 'MODULE_NOT_FOUND'; throw e;`,
            loader: 'js',
          }));
        },
      },
    ],
  });
  checkExternals(r.metafile, () => false);
  const dynamicImports = readFileSync(main, 'utf8').match(/\bimport\((?!\s*\))/g);
  if (dynamicImports) throw new Error(`${main}: ${dynamicImports.length} import() left, which an SEA with a code cache cannot run`);
  const blob = join(seaDir, 'sea-prep.blob');
  const config = join(seaDir, 'sea-config.json');
  writeFileSync(config, JSON.stringify({ main, output: blob, disableExperimentalSEAWarning: true, useCodeCache: true, execArgv: NODE_FLAGS }, null, 2));
  // The code cache is made under the same V8 flags the executable runs with: V8 rejects a cache made under others.
  execFileSync(process.execPath, [...NODE_FLAGS, '--experimental-sea-config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
  const exe = join(outDir, 'etcd-backupd');
  copyFileSync(process.execPath, exe);
  chmodSync(exe, 0o755);
  const { inject } = await import('postject');
  // postject's LIEF prints harmless "Can't find string offset for section name '.note...'" warnings for Debian's node.
  await inject(exe, 'NODE_SEA_BLOB', readFileSync(blob), { sentinelFuse: SEA_FUSE });
  smoke(exe, []);
  return { exe, size: statSync(exe).size, cjsSize: statSync(main).size };
}

const t0 = Date.now();
// Only what this script makes: --out may name a directory that holds other things.
for (const name of ['etcd-backupd.mjs', 'etcd-backupd', 'etcd-backupd.meta.json', 'sea']) rmSync(join(outDir, name), { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });
// Build output never belongs in git; the repository's .gitignore is not this script's to edit.
if (outDir === join(ROOT, 'dist-bundle')) writeFileSync(join(outDir, '.gitignore'), '*\n');

const mjs = await buildMjs();
writeFileSync(join(outDir, 'etcd-backupd.meta.json'), JSON.stringify(mjs.metafile));
console.log(`package: ${mjs.outfile} ${mib(mjs.size)} (${kib(mjs.size)}), etcd-backupd ${VERSION}, runs with: node ${mjs.outfile} --version`);
if (sea) {
  const s = await buildSea();
  if (s) console.log(`package: ${s.exe} ${mib(s.size)} single executable (node ${process.versions.node} + ${mib(s.cjsSize)} of code)`);
} else {
  console.log('package: single executable skipped (--no-sea)');
}
console.log(`package: done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
