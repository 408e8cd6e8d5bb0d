#!/usr/bin/env bash
# The shared cache tier's benchmark (docs/PERFORMANCE.md, issue 20): an ML
# epoch over an emulated network (2 ms round trip, 1 Gbit/s to every
# datanode; the cachenodes stand next to the clients), side by side in one
# `strata bench` run:
#   strata-cold   a fresh mount, L3 cold (its epoch 1 fills the cachenodes),
#   strata-l3     a second fresh mount reading the same dataset: epoch 1 from a warm L3,
#   strata-no-l3  a fresh mount without the tier (epoch 1 from the datanodes),
#   passthrough   libfuse's passthrough of a local directory (the FUSE ceiling).
# Every epoch drops the kernel's pages first. Then `strata warmup --level l3`
# of a second dataset and its rate.
#
#   bash scripts/bench-cache-tier.sh [WORK_DIR] [extra strata bench flags…]
#
# Results: WORK_DIR/tier.{txt,json,png} and WORK_DIR/warmup.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
work="$(realpath -m "${1:-/tmp/strata-bench-tier}")"
shift || true
cargo build --release -q -p strata-cli
strata="$CARGO_TARGET_DIR/release/strata"
mkdir -p "$work"
dev="$work/dev"

cleanup() {
  bash scripts/passthrough.sh umount "$work/pt-mnt" 2>/dev/null || true
  for m in "$work/l3-mnt" "$work/no-l3-mnt"; do "$strata" umount "$m" 2>/dev/null || true; done
  [ -f "$dev/cluster.json" ] && "$strata" dev stop --dir "$dev" >/dev/null 2>&1 || true
}
trap cleanup EXIT

rm -rf "$dev" "$work"/*-cache
"$strata" dev --dir "$dev" --base-port 0 --mount "$work/cold-mnt" --net-delay-ms 2 --net-mbit 1000 \
  --cachenodes 2 >"$dev.log" 2>&1 &
for _ in $(seq 600); do
  grep -q "mounted at" "$dev.log" 2>/dev/null && break
  sleep 0.5
done
grep -q "mounted at" "$dev.log" || { cat "$dev.log" >&2; exit 1; }
masters="$(python3 -c 'import json,sys; print(",".join(n["address"] for n in json.load(open(sys.argv[1]))["nodes"] if n["role"]=="master"))' "$dev/cluster.json")"
export STRATA_MASTER="$masters"
"$strata" mount default "$work/l3-mnt" --cache-dir "$work/l3-cache"
"$strata" mount default "$work/no-l3-mnt" --cache-dir "$work/no-l3-cache" --no-shared-cache
mkdir -p "$work/pt-src"
bash scripts/passthrough.sh mount "$work/pt-src" "$work/pt-mnt"

"$strata" bench --target "strata-cold=$work/cold-mnt" --target "strata-l3=$work/l3-mnt" \
  --target "strata-no-l3=$work/no-l3-mnt" --target "passthrough=$work/pt-mnt" --workloads epoch \
  --rounds 1 --epochs 3 --json-file "$work/tier.json" --plot "$work/tier.png" "$@" | tee "$work/tier.txt"
"$strata" cache stats | tee -a "$work/tier.txt"

# Warm-up throughput: a second dataset written without the tier, then
# pulled into the cachenodes by `strata warmup` (from the datanodes, over
# the emulated network).
mkdir -p "$work/no-l3-mnt/warm-set"
for i in $(seq 0 15); do
  head -c 64M /dev/urandom >"$work/no-l3-mnt/warm-set/part-$i"
done
"$strata" warmup "$work/no-l3-mnt/warm-set" --level l3 --threads 32 --json | tee "$work/warmup.json"
rm -rf "$work/no-l3-mnt/warm-set"
