#!/usr/bin/env bash
# Runs pjdfstest (the crates.io `pjdfstest` suite, as it is) as root on a
# Strata mount of a fresh `strata dev` cluster, with the configuration in
# tests/pjdfstest/pjdfstest.toml. Fails if any test fails; known skips are
# listed in tests/pjdfstest/README.md. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"
tools="$HOME/.cache/strata/tools"
if [ ! -x "$tools/bin/pjdfstest" ]; then
  echo "== installing pjdfstest 0.2.2 into $tools"
  CARGO_TARGET_DIR="$HOME/.cache/strata/tools-target" cargo install --quiet --locked pjdfstest --version 0.2.2 --root "$tools"
fi
cargo build --quiet -p strata-cli
strata="$CARGO_TARGET_DIR/debug/strata"

work="$(mktemp -d)"
# The suite switches to unprivileged users, who must reach the mount.
chmod 755 "$work"
cleanup() {
  "$strata" umount "$work/mnt" 2>/dev/null || true
  [ -n "${dev_pid:-}" ] && kill "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null || true
  [ "${KEEP_WORK:-}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

(cd "$work" && exec "$strata" dev --base-port 0 > dev.log 2>&1) &
dev_pid=$!
for _ in $(seq 1 120); do
  grep -q "cluster is up" "$work/dev.log" 2>/dev/null && break
  sleep 1
done
grep -q "cluster is up" "$work/dev.log" || { cat "$work/dev.log"; exit 1; }
(cd "$work" && "$strata" mount default "$work/mnt" --log "$work/mount.log")
mkdir "$work/mnt/pjdfstest"
cd "$work/mnt/pjdfstest"
set +e
"$tools/bin/pjdfstest" -c "$OLDPWD/tests/pjdfstest/pjdfstest.toml" -p "$work/mnt/pjdfstest" > "$work/pjdfstest.out" 2>&1
status=$?
set -e
cd "$OLDPWD"
grep -E "failed|skipped" "$work/pjdfstest.out" | grep -v " ok$" | tail -60
summary="$(tail -1 "$work/pjdfstest.out")"
echo "pjdfstest: $summary"
case "$summary" in
  "Summary: 0 failed,"*) exit 0 ;;
  *) grep -i "failed" "$work/pjdfstest.out" | head -40; exit 1 ;;
esac
