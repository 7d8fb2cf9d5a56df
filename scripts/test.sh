#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the Debian tools the
# tests run for real (etcd, sshd, promtool, restic, age, rclone), the npm
# dependencies, builds, and runs every test. Extra args go to vitest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi
npm run build
exec npx vitest run "$@"
