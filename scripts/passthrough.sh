#!/usr/bin/env bash
# The FUSE ceiling on this machine: builds libfuse's `passthrough_ll` example
# (shipped by Debian's libfuse3-dev in /usr/share/doc/libfuse3-dev/examples)
# and mounts a local directory through it, so benchmarks can compare a
# Strata mount with the best any FUSE file system could do here.
#
#   bash scripts/passthrough.sh mount SOURCE_DIR MOUNTPOINT   # in the background
#   bash scripts/passthrough.sh umount MOUNTPOINT
set -euo pipefail
examples=/usr/share/doc/libfuse3-dev/examples
tools="$HOME/.cache/strata/tools"
binary="$tools/passthrough_ll"

build() {
  if [ ! -x "$binary" ] || [ "$examples/passthrough_ll.c" -nt "$binary" ]; then
    mkdir -p "$tools"
    # The examples include their helpers by relative path: build in a copy.
    work="$(mktemp -d)"
    cp "$examples"/passthrough_ll.c "$examples"/passthrough_helpers.h "$work"/ 2>/dev/null || cp "$examples"/passthrough_ll.c "$work"/
    cc -O2 -Wall -o "$binary" "$work/passthrough_ll.c" $(pkg-config fuse3 --cflags --libs)
    rm -rf "$work"
  fi
}

case "${1:-}" in
  mount)
    [ $# -eq 3 ] || { echo "usage: $0 mount SOURCE_DIR MOUNTPOINT" >&2; exit 2; }
    build
    mkdir -p "$3"
    # cache=auto: the kernel keeps pages across opens while the file is unchanged, as Strata does.
    "$binary" -o source="$(realpath "$2")",cache=auto,allow_other "$3"
    # The same kernel read-ahead as a Strata mount sets for itself (4 MiB; the
    # kernel's default for FUSE is 128 KiB), so both are compared like for like.
    device="$(awk -v m="$(realpath "$3")" '$5 == m { d = $3 } END { print d }' /proc/self/mountinfo)"
    echo 4096 > "/sys/class/bdi/$device/read_ahead_kb" 2>/dev/null \
      || echo "could not set the read-ahead of $3 (needs root); left at the kernel's default" >&2
    echo "passthrough of $2 mounted at $3"
    ;;
  umount)
    [ $# -eq 2 ] || { echo "usage: $0 umount MOUNTPOINT" >&2; exit 2; }
    fusermount3 -u "$2" 2>/dev/null || umount "$2"
    ;;
  *)
    echo "usage: $0 mount SOURCE_DIR MOUNTPOINT | umount MOUNTPOINT" >&2
    exit 2
    ;;
esac
