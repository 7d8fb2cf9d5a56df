#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the Debian tools the
# tests run for real (etcd, sshd, promtool, restic, age, rclone), the npm
# dependencies, builds, and runs every test. Extra args go to vitest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Node 24 from the npm registry, first on PATH (the system Node may be an older one).
source scripts/node-env.sh
echo "test.sh: node $(node --version) from $(command -v node)" >&2
npm run build
exec npx vitest run "$@"
