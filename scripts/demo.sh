#!/usr/bin/env bash
# The main job on an embedded default: starts a throwaway local etcd, takes a
# verified backup into a local-directory store, lists it, verifies it and
# fetches it for restore. Installs what it needs. Everything lands in
# .tmp/demo/ (kept afterwards so you can look at it); etcd is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash scripts/install-deps.sh --demo
# Node 24 from the npm registry, first on PATH (the system Node may be an older one).
source scripts/node-env.sh
npm run build --silent

DEMO="$ROOT/.tmp/demo"
rm -rf "$DEMO"
mkdir -p -m 0700 "$DEMO"/{etcd,manifests,work,store}
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
CLIENT_PORT=$(free_port)
PEER_PORT=$(free_port)
while [[ "$PEER_PORT" == "$CLIENT_PORT" ]]; do PEER_PORT=$(free_port); done
ENDPOINT="http://127.0.0.1:$CLIENT_PORT"

echo "== starting a throwaway etcd on $ENDPOINT"
etcd --name demo --data-dir "$DEMO/etcd/data" \
  --listen-client-urls "$ENDPOINT" --advertise-client-urls "$ENDPOINT" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "demo=http://127.0.0.1:$PEER_PORT" >"$DEMO/etcd/etcd.log" 2>&1 &
ETCD_PID=$!
trap 'kill $ETCD_PID 2>/dev/null || true; wait $ETCD_PID 2>/dev/null || true' EXIT
export ETCDCTL_API=3
for _ in $(seq 1 100); do
  etcdctl --endpoints "$ENDPOINT" endpoint health >/dev/null 2>&1 && break
  sleep 0.1
done
etcdctl --endpoints "$ENDPOINT" endpoint health
for i in $(seq 1 20); do etcdctl --endpoints "$ENDPOINT" put "/kubernetes.io/configmaps/demo/cm$i" "value $i" >/dev/null; done
printf 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n' >"$DEMO/manifests/etcd-pod.yaml"

# 0600 like every file the tool writes: a config names credential files.
(umask 077; cat >"$DEMO/config.yaml") <<YAML
cluster: demo
node: demo-master-0
workDir: work
source:
  type: etcdctl
  staticPodDir: manifests
etcd:
  endpoints: ["$ENDPOINT"]
stores:
  - name: local
    type: local
    path: store
YAML

CLI=("$ROOT/dist/cli.js")  # through its shebang: the node flags of the launcher
echo "== etcd-backupd check-config"
"${CLI[@]}" check-config --config "$DEMO/config.yaml"
echo "== etcd-backupd backup"
"${CLI[@]}" backup --config "$DEMO/config.yaml" --label demo --reason "quick start"
echo "== etcd-backupd list"
"${CLI[@]}" list --config "$DEMO/config.yaml"
echo "== etcd-backupd verify latest"
"${CLI[@]}" verify --config "$DEMO/config.yaml" latest
echo "== etcd-backupd fetch latest --to $DEMO/restore"
"${CLI[@]}" fetch --config "$DEMO/config.yaml" latest --to "$DEMO/restore"
echo "== etcd-backupd inspect (native) vs etcdctl snapshot status"
SNAP=$(ls "$DEMO"/restore/snapshot_*.db)
"${CLI[@]}" inspect "$SNAP" --json
etcdctl snapshot status "$SNAP" -w json; echo
echo "== done: config, store and fetched files are in $DEMO"
