#!/usr/bin/env bash
# Installs what building and testing Strata needs on Debian, if missing:
# e2fsprogs (chattr, used by a test to fail a disk), clang/libclang (RocksDB's bindgen), protoc (raft-rs and our protos),
# fuse3 (mounts), pkg-config, iproute2 (network namespaces in tests), a font for `strata bench --plot`,
# prometheus (scrapes a dev cluster in a test), chromium (renders the web console in a test), python3-venv (the S3 clients awscli and boto3 the tests drive, from PyPI into a venv), rclone and s3fs (more S3 clients).
# Sourced by dev-up.sh and test.sh; safe to run again.
set -euo pipefail

packages=(clang libclang-dev protobuf-compiler fuse3 libfuse3-dev pkg-config iproute2 build-essential e2fsprogs fonts-dejavu-core python3 python3-venv rclone s3fs prometheus chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component"
  fi
done

# One target directory outside the clone, kept across builds (RocksDB's C++ is slow to build).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"
mkdir -p "$CARGO_TARGET_DIR"

# Real S3 clients for the gateway's tests, and kubernetes-validate for the
# deployment manifests, in a venv of their own (Debian's Python refuses
# system-wide pip installs).
venv="$HOME/.cache/strata/py"
if ! "$venv/bin/python" -c "import boto3, awscli, kubernetes_validate" >/dev/null 2>&1; then
  echo "installing awscli, boto3 and kubernetes-validate into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q awscli boto3 kubernetes-validate
fi
export PATH="$venv/bin:$PATH"
