# Sourced by scripts/test.sh, scripts/demo.sh and .ci/run: the project brings its own
# runtime. `npm ci` (with whatever npm the machine has: Debian's, or a Node 20 one)
# installs the npm package node@24, whose binary then comes first on PATH, so the build,
# the tests, the CLI's `#!/usr/bin/env node` shebang and the single executable all use
# Node 24 whatever the system Node is.
NODE_MAJOR_WANTED=24

node_env_die() { echo "node-env: ERROR: $*" >&2; exit 1; }

if ! command -v npm >/dev/null 2>&1; then
  [[ "$(id -u)" == "0" ]] || node_env_die "npm is missing and this is not root: install Node.js and npm, or rerun as root"
  echo "node-env: npm is missing; installing Debian's nodejs and npm (only to fetch node@${NODE_MAJOR_WANTED})" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm >/dev/null \
    || node_env_die "apt-get install nodejs npm failed"
fi
if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]] || [[ ! -x node_modules/node/bin/node ]]; then
  npm ci --no-audit --no-fund
fi
export PATH="$PWD/node_modules/.bin:$PWD/node_modules/node/bin:$PATH"
hash -r
node_major=$(node -p 'process.versions.node.split(".")[0]')
[[ "$node_major" -ge "$NODE_MAJOR_WANTED" ]] || node_env_die "node on PATH is $(node --version), expected ${NODE_MAJOR_WANTED}+ from node_modules/node (npm ci installs it)"
