#!/usr/bin/env bash
# Installs the Debian packages that the integration tests use (real etcd,
# openssl, sshd, promtool, restic, age, rclone, zstd and the aws CLI that read
# stored objects by hand). Idempotent: it only touches
# apt when a binary is missing. Run as root, non-interactively.
set -euo pipefail

log() { echo "install-deps: $*" >&2; }
die() { echo "install-deps: ERROR: $*" >&2; exit 1; }

# binary (command name or absolute path) -> Debian package
# `install-deps.sh --demo`: only what the demo runs (etcd and etcdctl), not the test-only tools.
if [[ "${1:-}" == "--demo" ]]; then
  declare -a CHECKS=("etcd:etcd-server" "etcdctl:etcd-client")
else
declare -a CHECKS=(
  "etcd:etcd-server"
  "etcdctl:etcd-client"
  "openssl:openssl"
  "/usr/sbin/sshd:openssh-server"
  "promtool:prometheus"
  "restic:restic"
  "age:age"
  "faketime:faketime"
  "rclone:rclone"
  "zstd:zstd"
  "aws:awscli"
)
fi

have() {
  local bin="$1"
  if [[ "$bin" == /* ]]; then
    [[ -x "$bin" ]]
  else
    command -v "$bin" >/dev/null 2>&1
  fi
}

missing_pkgs=()
missing_bins=()
for entry in "${CHECKS[@]}"; do
  bin="${entry%%:*}"
  pkg="${entry#*:}"
  if ! have "$bin"; then
    missing_bins+=("$bin")
    # de-duplicate packages
    dup=0
    for p in "${missing_pkgs[@]+"${missing_pkgs[@]}"}"; do
      [[ "$p" == "$pkg" ]] && dup=1
    done
    [[ $dup -eq 0 ]] && missing_pkgs+=("$pkg")
  fi
done

if [[ ${#missing_pkgs[@]} -gt 0 ]]; then
  if [[ "$(id -u)" != "0" ]]; then
    die "missing ${missing_bins[*]} (packages: ${missing_pkgs[*]}) and not running as root; rerun as root"
  fi
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; cannot install ${missing_pkgs[*]}"
  log "missing: ${missing_bins[*]}; installing: ${missing_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update || die "apt-get update failed"
  apt-get install -y --no-install-recommends "${missing_pkgs[@]}" \
    || die "apt-get install ${missing_pkgs[*]} failed"
  # Verify that every binary is now there.
  still=()
  for entry in "${CHECKS[@]}"; do
    bin="${entry%%:*}"
    have "$bin" || still+=("$bin")
  done
  if [[ ${#still[@]} -gt 0 ]]; then
    die "still missing after install: ${still[*]}"
  fi
else
  log "all test dependencies present"
fi

# sshd refuses to start without its privilege-separation directory.
mkdir -p /run/sshd || die "cannot create /run/sshd"
chmod 0755 /run/sshd 2>/dev/null || true
