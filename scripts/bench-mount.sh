#!/usr/bin/env bash
# The mount benchmarks of docs/PERFORMANCE.md, reproducibly: a release build,
# a local `strata dev` cluster with its volume mounted, a local directory on
# the same disk, and libfuse's passthrough of a local directory (the FUSE
# ceiling), all measured by `strata bench` side by side; then the epoch
# workload on a second cluster behind an emulated network. Cold passes
# empty the machine's page cache first (--drop-caches), so every target's
# cold read comes from the disk (a passthrough's source file was otherwise
# still cached from being written).
#
#   bash scripts/bench-mount.sh [WORK_DIR] [extra strata bench flags…]
#
# Results: WORK_DIR/mount.{txt,json,png} and WORK_DIR/epoch-net.{txt,json,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
work="$(realpath -m "${1:-/tmp/strata-bench}")"
shift || true
cargo build --release -q -p strata-cli
strata="$CARGO_TARGET_DIR/release/strata"
mkdir -p "$work"

cleanup() {
  bash scripts/passthrough.sh umount "$work/pt-mnt" 2>/dev/null || true
  for dev in "$work/dev" "$work/dev-net"; do
    [ -f "$dev/cluster.json" ] && "$strata" dev stop --dir "$dev" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

# Starts `strata dev` in the background and waits until its mount is live.
start_cluster() {
  local dir="$1" mnt="$2"; shift 2
  rm -rf "$dir"
  "$strata" dev --dir "$dir" --base-port 0 --mount "$mnt" "$@" >"$dir.log" 2>&1 &
  for _ in $(seq 600); do
    grep -q "mounted at" "$dir.log" 2>/dev/null && return 0
    sleep 0.5
  done
  echo "the cluster in $dir did not come up:" >&2
  cat "$dir.log" >&2
  exit 1
}

start_cluster "$work/dev" "$work/strata-mnt"
mkdir -p "$work/local" "$work/pt-src"
bash scripts/passthrough.sh mount "$work/pt-src" "$work/pt-mnt"
"$strata" bench --target "strata=$work/strata-mnt" --target "local=$work/local" \
  --target "passthrough=$work/pt-mnt" --drop-caches --json-file "$work/mount.json" --plot "$work/mount.png" "$@" \
  | tee "$work/mount.txt"
"$strata" cache stats "$work/strata-mnt" | tee -a "$work/mount.txt"
"$strata" dev stop --dir "$work/dev" >/dev/null
bash scripts/passthrough.sh umount "$work/pt-mnt"

# ML training over a network: 2 ms round trip, 1 Gbit/s to every datanode.
start_cluster "$work/dev-net" "$work/strata-net-mnt" --net-delay-ms 2 --net-mbit 1000
"$strata" bench --target "strata-net=$work/strata-net-mnt" --target "local=$work/local" --workloads epoch \
  --rounds 1 --epochs 3 --json-file "$work/epoch-net.json" --plot "$work/epoch-net.png" | tee "$work/epoch-net.txt"
"$strata" cache stats "$work/strata-net-mnt" | tee -a "$work/epoch-net.txt"
