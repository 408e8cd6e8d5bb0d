#!/usr/bin/env bash
# Quick start, command 2: the whole test suite — formatting, clippy with
# warnings denied, and every test (unit, in-process multi-node, and the
# multi-process cluster tests through `strata dev`, the CSI driver over its
# socket), the deployment manifests against the Kubernetes schemas, then
# pjdfstest on a real FUSE mount.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== deploy/: chart, manifests, Kubernetes schemas"
bash scripts/check-deploy.sh
echo "== cargo test"
cargo test --workspace
echo "== pjdfstest on a mount"
bash scripts/pjdfstest.sh
